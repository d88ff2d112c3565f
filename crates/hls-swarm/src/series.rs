//! The run's time course: one point per second, recorded while the swarm runs, for
//! `--series-json` and the HTML report (`report_html`).
//!
//! Once a second the sampler reads the cumulative counters of [`Metrics`] (and the per-variant
//! counters the viewers feed through [`metrics::Watching`]) and stores the difference to the
//! previous reading: requests, bytes and errors by kind, stalls, reconnects, skipped segments, the
//! segment download times of that second as a sparse histogram (so p50/p99 are of that second,
//! not of the run so far), active and watching viewers, the same per variant, and any extra
//! distributions registered as [`Extra`] (for example latency behind live, `null` while not
//! measured). Memory stays bounded: past [`MAX_POINTS`] points, neighbours merge pairwise
//! (counts add, histograms add, gauges keep the later value) and each point then covers twice
//! the time. No per-request records are kept.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metrics::{self, Metrics, VariantCum, VariantTable, ERROR_KINDS, KINDS};

/// Most points kept; past it neighbours merge.
pub const MAX_POINTS: usize = 3600;
/// `format` of the `--series-json` document.
pub const FORMAT: &str = "hls-swarm-series/1";
/// A last sample shorter than this is folded into the point before it.
const MIN_LAST_SAMPLE_S: f64 = 0.5;

// ---------------------------------------------------------------------------------------------
// Extra distributions (measured elsewhere, maybe not at all).

/// An extra per-second distribution in the series, reported as p50/p99 (`null` when it has
/// no samples in a point or is not measured in this run).
pub struct Extra {
    /// JSON key, e.g. `live_latency_ms`.
    pub key: String,
    /// Chart title, e.g. "Latency behind live".
    pub label: String,
    /// Unit of the values, e.g. "ms".
    pub unit: String,
    /// Where the samples come from; `None`: not measured in this run.
    pub source: Option<HistogramSource>,
}

/// A cumulative histogram read once a second.
pub struct HistogramSource {
    /// Upper bound of each bucket, in the extra's unit (the value a quantile reports).
    pub bounds: Vec<f64>,
    /// Samples per bucket so far (not cumulative over buckets), one per bound.
    pub read: Box<dyn Fn() -> Vec<u64> + Send + Sync>,
}

impl Extra {
    /// The slot for latency behind live (p50/p99 per second), `null` until it is measured.
    pub fn live_latency(source: Option<HistogramSource>) -> Extra {
        Extra {
            key: "live_latency_ms".into(),
            label: "Latency behind live".into(),
            unit: "ms".into(),
            source,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The recorded series as written (`--series-json`) and read (reports).

/// The `--series-json` document: what ran, and its series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesDoc {
    pub format: String,
    pub run: RunInfo,
    pub series: Series,
}

/// The settings and the verdict of a run, as the report shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub url: String,
    pub clients: u64,
    /// Viewers started per second.
    pub ramp_rate: f64,
    /// Random extra start delay per viewer, at most this many seconds.
    pub ramp_jitter_s: f64,
    pub duration_s: f64,
    pub stopped_by: String,
    /// Pass/fail threshold: errors / requests.
    pub max_error_rate: f64,
    pub error_rate: f64,
    pub requests: u64,
    pub errors: u64,
    pub passed: bool,
    /// Other settings, shown as given: name → value.
    pub settings: BTreeMap<String, String>,
}

/// One run's time course.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Wall-clock time of the swarm's start (point times are relative to it), ms since 1970.
    pub started_unix_ms: u64,
    /// Seconds of run time per point (1 until the run passed MAX_POINTS seconds; the last
    /// point may be shorter, see its `dur_s`).
    pub interval_s: u32,
    /// Variant playlist URLs, in the order of each point's `variants`.
    pub variants: Vec<String>,
    /// Extra distributions, in no particular order; each point's `extra` has every key.
    pub extras: Vec<ExtraInfo>,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtraInfo {
    pub key: String,
    pub label: String,
    pub unit: String,
}

/// What happened in `[t_s, t_s + dur_s)`; counts are totals over that time (divide by
/// `dur_s` for per-second rates), gauges are read at its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub t_s: f64,
    pub dur_s: f64,
    /// Viewer tasks running (including those waiting to reconnect).
    pub viewers: i64,
    /// Viewers in a session that loaded its master (or media) playlist.
    pub watching: i64,
    pub requests: KindCounts,
    pub bytes: KindCounts,
    /// Failed request attempts by request kind.
    pub errors: KindCounts,
    /// Failed request attempts by error kind (only kinds that occurred).
    pub error_kinds: BTreeMap<String, u64>,
    pub stalls: u64,
    pub reconnects: u64,
    pub segments_skipped: u64,
    /// Segment download time of the downloads that finished in this point.
    pub segment_latency_ms: Quantiles,
    /// Extra distributions by key (`null` quantiles: none measured).
    pub extra: BTreeMap<String, Quantiles>,
    /// Per variant, in the order of [`Series::variants`].
    pub variants: Vec<VariantPoint>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct KindCounts {
    pub master: u64,
    pub playlist: u64,
    pub segment: u64,
}

impl KindCounts {
    pub fn total(&self) -> u64 {
        self.master + self.playlist + self.segment
    }

    fn from(a: &[u64; 3]) -> KindCounts {
        KindCounts {
            master: a[0],
            playlist: a[1],
            segment: a[2],
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantPoint {
    pub watching: i64,
    /// Segments downloaded.
    pub segments: u64,
    /// Bytes of the segments downloaded.
    pub bytes: u64,
    /// Failed segment attempts and media playlist loads.
    pub errors: u64,
    pub stalls: u64,
    pub segment_latency_ms: Quantiles,
}

// ---------------------------------------------------------------------------------------------
// Recording.

/// A histogram of one point: (bucket, count) for the buckets with samples, by bucket.
type Sparse = Vec<(u16, u32)>;

/// The run's counters by request kind (and error kind), cumulative in a reading and per
/// interval in a point.
#[derive(Default, Clone, Debug, PartialEq)]
struct Counters {
    requests: [u64; 3],
    bytes: [u64; 3],
    errors: [[u64; ERROR_KINDS.len()]; 3],
    stalls: u64,
    reconnects: u64,
    skipped: u64,
}

impl Counters {
    /// Adds `b` to these counters.
    fn add(&mut self, b: &Counters) {
        for k in 0..3 {
            self.requests[k] += b.requests[k];
            self.bytes[k] += b.bytes[k];
            for e in 0..ERROR_KINDS.len() {
                self.errors[k][e] += b.errors[k][e];
            }
        }
        self.stalls += b.stalls;
        self.reconnects += b.reconnects;
        self.skipped += b.skipped;
    }

    /// What these (later) counters hold beyond `before`.
    fn since(&self, before: &Counters) -> Counters {
        let mut d = Counters {
            stalls: self.stalls - before.stalls,
            reconnects: self.reconnects - before.reconnects,
            skipped: self.skipped - before.skipped,
            ..Default::default()
        };
        for k in 0..3 {
            d.requests[k] = self.requests[k] - before.requests[k];
            d.bytes[k] = self.bytes[k] - before.bytes[k];
            for e in 0..ERROR_KINDS.len() {
                d.errors[k][e] = self.errors[k][e] - before.errors[k][e];
            }
        }
        d
    }
}

/// Cumulative readings, to diff the next ones against.
#[derive(Default, Clone)]
struct Cumulative {
    counters: Counters,
    latency: Vec<u64>,
    variants: Vec<(String, VariantCum)>,
    extras: Vec<Vec<u64>>,
}

#[derive(Default, Clone, Debug, PartialEq)]
struct RawPoint {
    t: f64,
    dur: f64,
    viewers: i64,
    watching: i64,
    counters: Counters,
    latency: Sparse,
    variants: Vec<RawVariant>,
    extras: Vec<Sparse>,
}

#[derive(Default, Clone, Debug, PartialEq)]
struct RawVariant {
    watching: i64,
    segments: u64,
    bytes: u64,
    errors: u64,
    stalls: u64,
    latency: Sparse,
}

fn diff_sparse(now: &[u64], before: &[u64]) -> Sparse {
    now.iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let d = n.saturating_sub(before.get(i).copied().unwrap_or(0));
            (d > 0).then_some((i as u16, d.min(u32::MAX as u64) as u32))
        })
        .collect()
}

fn merge_sparse(a: &Sparse, b: &Sparse) -> Sparse {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                out.push((x.0, x.1.saturating_add(y.1)));
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                out.push(*x);
                i += 1;
            }
            (Some(_), Some(y)) => {
                out.push(*y);
                j += 1;
            }
            (Some(x), None) => {
                out.push(*x);
                i += 1;
            }
            (None, Some(y)) => {
                out.push(*y);
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// The value at quantile `q` of a sparse histogram, each bucket standing for `value(bucket)`.
fn quantile(h: &Sparse, q: f64, value: impl Fn(usize) -> f64) -> Option<f64> {
    let total: u64 = h.iter().map(|(_, c)| *c as u64).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, c) in h {
        seen += *c as u64;
        if seen >= rank {
            return Some(value(*i as usize));
        }
    }
    None
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

impl RawPoint {
    /// Add the later point `b` to this one.
    fn absorb(&mut self, b: &RawPoint) {
        self.dur += b.dur;
        self.viewers = b.viewers;
        self.watching = b.watching;
        self.counters.add(&b.counters);
        self.latency = merge_sparse(&self.latency, &b.latency);
        if self.variants.len() < b.variants.len() {
            self.variants
                .resize(b.variants.len(), RawVariant::default());
        }
        for (a, v) in self.variants.iter_mut().zip(&b.variants) {
            a.watching = v.watching;
            a.segments += v.segments;
            a.bytes += v.bytes;
            a.errors += v.errors;
            a.stalls += v.stalls;
            a.latency = merge_sparse(&a.latency, &v.latency);
        }
        for (a, x) in self.extras.iter_mut().zip(&b.extras) {
            *a = merge_sparse(a, x);
        }
    }
}

/// The bounded series being recorded: feed it one reading a second with [`Recorder::sample`].
pub struct Recorder {
    started_unix_ms: u64,
    extras: Vec<Extra>,
    prev: Cumulative,
    /// Elapsed run time of the previous reading, seconds.
    prev_t: f64,
    points: Vec<RawPoint>,
    /// Readings not yet a whole point (after merging, a point spans `span` readings).
    pending: Option<(RawPoint, u32)>,
    span: u32,
    max_points: usize,
}

impl Recorder {
    pub fn new(started_unix_ms: u64, extras: Vec<Extra>) -> Recorder {
        Self::with_max_points(started_unix_ms, extras, MAX_POINTS)
    }

    /// As [`Recorder::new`] with another bound (tests).
    pub fn with_max_points(started_unix_ms: u64, extras: Vec<Extra>, max: usize) -> Recorder {
        Recorder {
            started_unix_ms,
            extras,
            prev: Cumulative::default(),
            prev_t: 0.0,
            points: Vec::new(),
            pending: None,
            span: 1,
            max_points: max.max(2),
        }
    }

    fn read(&self, m: &Metrics) -> Cumulative {
        let l = |a: &AtomicU64| a.load(Relaxed);
        let mut c = Cumulative {
            counters: Counters {
                requests: [l(&m.requests[0]), l(&m.requests[1]), l(&m.requests[2])],
                bytes: [l(&m.bytes[0]), l(&m.bytes[1]), l(&m.bytes[2])],
                errors: Default::default(),
                stalls: l(&m.stalls),
                reconnects: l(&m.reconnects),
                skipped: l(&m.segments_skipped),
            },
            latency: m.fine_counts(),
            variants: m.per_variant.read(),
            extras: self
                .extras
                .iter()
                .map(|e| e.source.as_ref().map(|s| (s.read)()).unwrap_or_default())
                .collect(),
        };
        for (_, k) in KINDS {
            for e in 0..ERROR_KINDS.len() {
                c.counters.errors[k as usize][e] = l(&m.errors[k as usize][e]);
            }
        }
        c
    }

    /// Record what happened since the previous reading; `elapsed` is the run time now.
    pub fn sample(&mut self, m: &Metrics, elapsed: Duration) {
        let raw = self.reading(m, elapsed);
        self.push(raw);
    }

    /// What happened since the previous reading, as one point (and remember this reading).
    fn reading(&mut self, m: &Metrics, elapsed: Duration) -> RawPoint {
        let now = self.read(m);
        let p = &self.prev;
        let t = elapsed.as_secs_f64();
        let mut raw = RawPoint {
            t: self.prev_t,
            dur: (t - self.prev_t).max(0.0),
            viewers: m.active.load(Relaxed),
            watching: now.variants.iter().map(|(_, v)| v.watching).sum(),
            counters: now.counters.since(&p.counters),
            latency: diff_sparse(&now.latency, &p.latency),
            ..Default::default()
        };
        let empty = VariantCum::default();
        raw.variants = now
            .variants
            .iter()
            .enumerate()
            .map(|(i, (_, v))| {
                let b = p.variants.get(i).map(|x| &x.1).unwrap_or(&empty);
                RawVariant {
                    watching: v.watching,
                    segments: v.segments - b.segments,
                    bytes: v.bytes - b.bytes,
                    errors: v.errors - b.errors,
                    stalls: v.stalls - b.stalls,
                    latency: diff_sparse(&v.latency, &b.latency),
                }
            })
            .collect();
        raw.extras = now
            .extras
            .iter()
            .enumerate()
            .map(|(i, x)| diff_sparse(x, p.extras.get(i).map(Vec::as_slice).unwrap_or(&[])))
            .collect();
        self.prev = now;
        self.prev_t = t;
        raw
    }

    fn push(&mut self, raw: RawPoint) {
        let (acc, n) = match self.pending.take() {
            Some((mut acc, n)) => {
                acc.absorb(&raw);
                (acc, n + 1)
            }
            None => (raw, 1),
        };
        if n < self.span {
            self.pending = Some((acc, n));
            return;
        }
        if self.points.len() >= self.max_points {
            let old = std::mem::take(&mut self.points);
            let mut it = old.into_iter();
            while let Some(mut a) = it.next() {
                if let Some(b) = it.next() {
                    a.absorb(&b);
                }
                self.points.push(a);
            }
            self.span *= 2;
            if n < self.span {
                self.pending = Some((acc, n));
                return;
            }
        }
        self.points.push(acc);
    }

    /// The last reading at the end of the run: a short remainder is folded into the point
    /// before it so no point stands for a few milliseconds.
    pub fn finish(mut self, m: &Metrics, elapsed: Duration) -> Series {
        let raw = self.reading(m, elapsed);
        let has_before = self.pending.is_some() || !self.points.is_empty();
        if raw.dur < MIN_LAST_SAMPLE_S && has_before {
            match (&mut self.pending, self.points.last_mut()) {
                (Some((acc, _)), _) => acc.absorb(&raw),
                (None, Some(last)) => last.absorb(&raw),
                (None, None) => unreachable!("has_before"),
            }
        } else {
            self.push(raw);
        }
        if let Some((acc, _)) = self.pending.take() {
            let full = self.points.len() >= self.max_points;
            match self.points.last_mut() {
                Some(last) if full => last.absorb(&acc),
                _ => self.points.push(acc),
            }
        }
        self.series_of(&self.points, &m.per_variant)
    }

    /// The series so far, without ending the recording (for a live view of a running swarm).
    pub fn snapshot(&self, m: &Metrics) -> Series {
        let mut points = self.points.clone();
        if let Some((p, _)) = &self.pending {
            points.push(p.clone());
        }
        self.series_of(&points, &m.per_variant)
    }

    fn series_of(&self, points: &[RawPoint], table: &VariantTable) -> Series {
        let variants: Vec<String> = table.read().into_iter().map(|(u, _)| u).collect();
        let ms = |h: &Sparse| Quantiles {
            p50: quantile(h, 0.5, |i| round3(metrics::fine_value(i) * 1e3)),
            p99: quantile(h, 0.99, |i| round3(metrics::fine_value(i) * 1e3)),
        };
        let points = points
            .iter()
            .map(|r| {
                let mut error_kinds = BTreeMap::new();
                for (e, name) in ERROR_KINDS.iter().enumerate() {
                    let n: u64 = (0..3).map(|k| r.counters.errors[k][e]).sum();
                    if n > 0 {
                        error_kinds.insert(name.to_string(), n);
                    }
                }
                let err_by_req: [u64; 3] =
                    std::array::from_fn(|k| r.counters.errors[k].iter().sum::<u64>());
                let mut vs: Vec<VariantPoint> = r
                    .variants
                    .iter()
                    .map(|v| VariantPoint {
                        watching: v.watching,
                        segments: v.segments,
                        bytes: v.bytes,
                        errors: v.errors,
                        stalls: v.stalls,
                        segment_latency_ms: ms(&v.latency),
                    })
                    .collect();
                vs.resize(variants.len(), VariantPoint::default());
                let extra = self
                    .extras
                    .iter()
                    .zip(r.extras.iter().chain(std::iter::repeat(&Vec::new())))
                    .map(|(e, h)| {
                        let q = match &e.source {
                            Some(s) => {
                                let v = |i: usize| s.bounds.get(i).copied().unwrap_or(f64::NAN);
                                Quantiles {
                                    p50: quantile(h, 0.5, v).filter(|x| x.is_finite()),
                                    p99: quantile(h, 0.99, v).filter(|x| x.is_finite()),
                                }
                            }
                            None => Quantiles::default(),
                        };
                        (e.key.clone(), q)
                    })
                    .collect();
                Point {
                    t_s: round3(r.t),
                    dur_s: round3(r.dur),
                    viewers: r.viewers,
                    watching: r.watching,
                    requests: KindCounts::from(&r.counters.requests),
                    bytes: KindCounts::from(&r.counters.bytes),
                    errors: KindCounts::from(&err_by_req),
                    error_kinds,
                    stalls: r.counters.stalls,
                    reconnects: r.counters.reconnects,
                    segments_skipped: r.counters.skipped,
                    segment_latency_ms: ms(&r.latency),
                    extra,
                    variants: vs,
                }
            })
            .collect();
        Series {
            started_unix_ms: self.started_unix_ms,
            interval_s: self.span,
            variants,
            extras: self
                .extras
                .iter()
                .map(|e| ExtraInfo {
                    key: e.key.clone(),
                    label: e.label.clone(),
                    unit: e.unit.clone(),
                })
                .collect(),
            points,
        }
    }
}

/// Reads the series recorded so far (None once the recording finished).
pub type SeriesSource = Box<dyn Fn(&Metrics) -> Option<Series> + Send + Sync>;

/// Records the series in the background, one reading a second from the run's start.
pub struct Sampler {
    recorder: Arc<Mutex<Option<Recorder>>>,
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
    start: tokio::time::Instant,
}

impl Sampler {
    pub fn start(
        metrics: Arc<Metrics>,
        start: tokio::time::Instant,
        started_unix_ms: u64,
        extras: Vec<Extra>,
    ) -> Sampler {
        let recorder = Arc::new(Mutex::new(Some(Recorder::new(started_unix_ms, extras))));
        let task = {
            let recorder = recorder.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let second = Duration::from_secs(1);
                let mut tick = tokio::time::interval_at(start + second, second);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Some(r) = recorder.lock().expect("recorder").as_mut() {
                        r.sample(&metrics, start.elapsed());
                    }
                }
            })
        };
        Sampler {
            recorder,
            task,
            metrics,
            start,
        }
    }

    /// A handle that reads the series recorded so far, for `/summary` (which holds the
    /// metrics only weakly, so the handle takes them as an argument).
    pub fn source(&self) -> SeriesSource {
        let recorder = self.recorder.clone();
        Box::new(move |m: &Metrics| {
            let r = recorder.lock().expect("recorder");
            r.as_ref().map(|r| r.snapshot(m))
        })
    }

    /// The series recorded so far; the recording goes on.
    pub fn snapshot(&self) -> Option<Series> {
        let r = self.recorder.lock().expect("recorder");
        r.as_ref().map(|r| r.snapshot(&self.metrics))
    }

    /// Stop sampling and return the series, with a last reading taken now.
    pub fn finish(self) -> Series {
        self.task.abort();
        let r = self
            .recorder
            .lock()
            .expect("recorder")
            .take()
            .expect("finished once");
        r.finish(&self.metrics, self.start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(m: &Metrics, segs: u64, ms: u64) {
        for _ in 0..segs {
            m.request(metrics::Kind::Segment);
            m.add_bytes(metrics::Kind::Segment, 1000);
            m.segment_latency(Duration::from_millis(ms));
        }
    }

    #[test]
    fn each_point_holds_that_seconds_counts_and_percentiles() {
        let m = Metrics::new(2);
        let mut r = Recorder::new(5, vec![Extra::live_latency(None)]);
        let _a = m.viewer_started();
        let w = m.per_variant.watch("http://o/720p/stream.m3u8");
        second(&m, 10, 10);
        w.segment_done(1000, Duration::from_millis(10), false);
        r.sample(&m, Duration::from_secs(1));
        second(&m, 10, 200);
        m.error(metrics::Kind::Segment, "connect");
        m.error(metrics::Kind::Playlist, "http_5xx");
        r.sample(&m, Duration::from_secs(2));
        assert_eq!(
            r.snapshot(&m).points.len(),
            2,
            "a snapshot does not end the recording"
        );
        drop(w);
        let s = r.finish(&m, Duration::from_millis(2200));
        assert_eq!(s.points.len(), 2, "{s:#?}");
        let (a, b) = (&s.points[0], &s.points[1]);
        assert_eq!((a.t_s, a.dur_s, b.t_s, b.dur_s), (0.0, 1.0, 1.0, 1.2));
        assert_eq!(a.requests.segment, 10);
        assert_eq!(a.bytes.segment, 10_000);
        assert_eq!((a.viewers, a.watching), (1, 1));
        assert_eq!(b.watching, 0, "the watcher left before the end");
        let p50a = a.segment_latency_ms.p50.unwrap();
        let p50b = b.segment_latency_ms.p50.unwrap();
        assert!((p50a - 10.0).abs() < 0.2, "{p50a}");
        assert!(
            (p50b - 200.0).abs() < 4.0,
            "per second, not cumulative: {p50b}"
        );
        assert_eq!(b.errors.segment + b.errors.playlist, 2);
        assert_eq!(b.error_kinds.get("connect"), Some(&1));
        assert_eq!(b.error_kinds.get("http_5xx"), Some(&1));
        assert!(a.error_kinds.is_empty());
        assert_eq!(s.variants, ["http://o/720p/stream.m3u8"]);
        assert_eq!(a.variants[0].segments, 1);
        assert_eq!(b.variants[0].segments, 0);
        assert_eq!(a.extra["live_latency_ms"], Quantiles::default());
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["points"][0]["extra"]["live_latency_ms"]["p50"].is_null());
    }

    #[test]
    fn past_the_bound_neighbours_merge_and_totals_stay() {
        let m = Metrics::new(1);
        let mut r = Recorder::with_max_points(0, vec![], 8);
        for s in 1..=37u64 {
            second(&m, s, 5);
            r.sample(&m, Duration::from_secs(s));
        }
        let s = r.finish(&m, Duration::from_secs(37));
        assert!(s.points.len() <= 8, "{}", s.points.len());
        assert_eq!(s.interval_s, 8);
        let total: u64 = s.points.iter().map(|p| p.requests.segment).sum();
        assert_eq!(total, (1..=37).sum::<u64>());
        let dur: f64 = s.points.iter().map(|p| p.dur_s).sum();
        assert!((dur - 37.0).abs() < 1e-9, "{dur}");
        // Contiguous, and each whole point spans 8 readings.
        for w in s.points.windows(2) {
            assert!((w[0].t_s + w[0].dur_s - w[1].t_s).abs() < 1e-9);
        }
        assert_eq!(s.points[0].dur_s, 8.0);
        assert_eq!(s.points[0].requests.segment, (1..=8).sum::<u64>());
    }

    #[test]
    fn a_two_hour_run_stays_within_the_bound() {
        let m = Metrics::new(1);
        let mut r = Recorder::new(0, vec![]);
        let seconds = 2 * 3600 + 100;
        for s in 1..=seconds {
            m.request(metrics::Kind::Playlist);
            r.sample(&m, Duration::from_secs(s));
        }
        let s = r.finish(&m, Duration::from_secs(seconds));
        assert!(s.points.len() <= MAX_POINTS, "{}", s.points.len());
        assert!(s.points.len() >= MAX_POINTS / 2, "{}", s.points.len());
        assert_eq!(s.interval_s, 4);
        let total: u64 = s.points.iter().map(|p| p.requests.playlist).sum();
        assert_eq!(total, seconds);
        assert_eq!(
            s.points.last().unwrap().t_s + s.points.last().unwrap().dur_s,
            seconds as f64
        );
    }

    #[test]
    fn extras_report_quantiles_of_their_histogram() {
        let m = Metrics::new(1);
        let counts = Arc::new(Mutex::new(vec![0u64, 0, 0]));
        let c2 = counts.clone();
        let extra = Extra::live_latency(Some(HistogramSource {
            bounds: vec![1000.0, 2000.0, 4000.0],
            read: Box::new(move || c2.lock().unwrap().clone()),
        }));
        let mut r = Recorder::new(0, vec![extra]);
        *counts.lock().unwrap() = vec![5, 4, 1];
        r.sample(&m, Duration::from_secs(1));
        *counts.lock().unwrap() = vec![5, 4, 11];
        r.sample(&m, Duration::from_secs(2));
        r.sample(&m, Duration::from_secs(3));
        let s = r.finish(&m, Duration::from_secs(3));
        let q: Vec<Quantiles> = s
            .points
            .iter()
            .map(|p| p.extra["live_latency_ms"])
            .collect();
        assert_eq!(q[0].p50, Some(1000.0));
        assert_eq!(q[0].p99, Some(4000.0));
        assert_eq!(q[1].p50, Some(4000.0), "only that second's samples");
        assert_eq!(q[2], Quantiles::default());
    }
}
