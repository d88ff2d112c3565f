//! A run's summary: its final figures ([`Summary`], made from the counters by [`summarize`],
//! printed by [`render_summary`] at the end and written as `--summary-json`), the `/summary`
//! document a swarm serves on its metrics port (live while it runs, final once its
//! `--duration` ended) and the merge of several replicas' documents that `hls-swarm report`
//! prints.
//!
//! The document is a JSON object, versioned by `format`. Readers ignore fields they do not
//! know, so later versions may add fields (for example time series) without breaking
//! `report`; a field's meaning never changes within one `format`. Fields:
//! - `format`: `"hls-swarm-summary/1"`;
//! - `finished`: false while the run goes on, true once it stopped (with `--linger` the
//!   process keeps serving the final document until it is stopped);
//! - `started_at`: the wall-clock instant (RFC 3339 UTC) the ramp started, null before;
//! - `summary`: the same object `--summary-json` writes ([`Summary`]);
//! - `segment_latency_histogram`: the fine log-scale histogram of segment download times
//!   (`base`, `min_us`, non-empty `buckets` as `[index, count]`, `count`, `sum_us`), from which
//!   `report` merges percentiles exactly as one process would compute them, never by
//!   averaging replicas' percentiles;
//! - `live` (optional; absent from older swarms): the histograms of latency behind live, time
//!   to first segment, playlist staleness and throughput against BANDWIDTH, and the TLS and
//!   redirect counts (src/live.rs `LiveDoc`), merged by `report` the same way;
//! - `series` (optional; absent from older swarms): the replica's `--series-json` document
//!   (src/series.rs), the run so far while it runs, from which `report --report` draws one
//!   line per replica.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::http::Url;
use crate::metrics::{Metrics, ERROR_KINDS, FINE_BASE, FINE_MIN_US, KINDS};
use crate::series::{RunInfo, Series, SeriesDoc, SeriesSource};

/// The final figures of a run (also the `--summary-json` document).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub url: String,
    pub duration_s: f64,
    pub stopped_by: String,
    pub viewers: Viewers,
    pub requests: ByKind,
    pub bytes: ByKind,
    pub errors: Errors,
    pub error_rate: f64,
    pub max_error_rate: f64,
    pub passed: bool,
    pub segment_latency_ms: Latency,
    pub stalls: u64,
    pub reconnects: u64,
    pub segment_retries: u64,
    pub segments_skipped: u64,
    /// Variant playlist URL → viewer sessions that chose it (empty for a media playlist URL).
    pub variants: std::collections::BTreeMap<String, u64>,
    /// What viewers felt: latency behind live, time to first segment, staleness, throughput,
    /// TLS failure reasons (src/live.rs).
    #[serde(flatten)]
    pub live: crate::live::LiveSummary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Viewers {
    pub target: u64,
    pub started: u64,
    pub peak_active: i64,
    pub active_at_end: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ByKind {
    pub total: u64,
    pub master: u64,
    pub playlist: u64,
    pub segment: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Errors {
    pub total: u64,
    /// Error kind → count, over all request kinds.
    pub by_kind: std::collections::BTreeMap<String, u64>,
    /// Request kind → count.
    pub by_request: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

pub fn summarize(
    s: &Settings,
    url: &Url,
    m: &Metrics,
    elapsed: Duration,
    stopped_by: &str,
) -> Summary {
    let by_kind = |arr: &[std::sync::atomic::AtomicU64; 3]| ByKind {
        total: arr.iter().map(|a| a.load(Relaxed)).sum(),
        master: arr[0].load(Relaxed),
        playlist: arr[1].load(Relaxed),
        segment: arr[2].load(Relaxed),
    };
    let mut errs = Errors {
        total: m.total_errors(),
        by_kind: Default::default(),
        by_request: Default::default(),
    };
    for (name, k) in KINDS {
        let n: u64 = m.errors[k as usize].iter().map(|a| a.load(Relaxed)).sum();
        errs.by_request.insert(name.to_string(), n);
        for (i, ek) in ERROR_KINDS.iter().enumerate() {
            let c = m.errors[k as usize][i].load(Relaxed);
            if c > 0 {
                *errs.by_kind.entry(ek.to_string()).or_default() += c;
            }
        }
    }
    let requests = m.total_requests();
    let error_rate = error_rate(errs.total, requests);
    let ms = |q: f64| m.quantile(q).map(|s| (s * 1e6).round() / 1e3);
    let live = m.live.summary(s.max_latency.map(|d| d.as_secs_f64()));
    Summary {
        url: url.to_string(),
        duration_s: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        stopped_by: stopped_by.to_string(),
        viewers: Viewers {
            target: m.target_viewers,
            started: m.started.load(Relaxed),
            peak_active: m.peak_active.load(Relaxed),
            active_at_end: m.active.load(Relaxed),
        },
        requests: by_kind(&m.requests),
        bytes: by_kind(&m.bytes),
        errors: errs,
        error_rate,
        max_error_rate: s.max_error_rate,
        passed: error_rate <= s.max_error_rate && live.latency_passed(),
        segment_latency_ms: Latency {
            count: m.latency_count(),
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
        },
        stalls: m.stalls.load(Relaxed),
        reconnects: m.reconnects.load(Relaxed),
        segment_retries: m.segment_retries.load(Relaxed),
        segments_skipped: m.segments_skipped.load(Relaxed),
        variants: m.variants(),
        live,
    }
}

/// Errors per request; 1 when there were errors but no request completed its count.
pub fn error_rate(errors: u64, requests: u64) -> f64 {
    if requests == 0 {
        if errors == 0 {
            0.0
        } else {
            1.0
        }
    } else {
        errors as f64 / requests as f64
    }
}

pub fn render_summary(s: &Summary) -> String {
    let ms = |v: Option<f64>| v.map(|v| format!("{v:.1} ms")).unwrap_or("-".into());
    let kinds: Vec<String> = s
        .errors
        .by_kind
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    format!(
        "hls-swarm summary ({url}, {d:.1} s, stopped by {by})\n\
         \x20 viewers:   {started} started of {target}, peak {peak} active, {end} active at the end\n\
         \x20 requests:  {rt} (master {rm}, playlist {rp}, segment {rs})\n\
         \x20 bytes:     {bt} (segments {bs})\n\
         \x20 errors:    {et} ({rate:.3}% of requests, limit {lim:.3}%){kinds}\n\
         \x20 segments:  p50 {p50}, p90 {p90}, p99 {p99} over {n} downloads\n\
         \x20 stalls:    {stalls}; reconnects {rc}; segment retries {sr}; skipped {sk}\n\
         {live}\
         \x20 result:    {res}\n",
        url = s.url,
        d = s.duration_s,
        by = s.stopped_by,
        started = s.viewers.started,
        target = s.viewers.target,
        peak = s.viewers.peak_active,
        end = s.viewers.active_at_end,
        rt = s.requests.total,
        rm = s.requests.master,
        rp = s.requests.playlist,
        rs = s.requests.segment,
        bt = human_bytes(s.bytes.total),
        bs = human_bytes(s.bytes.segment),
        et = s.errors.total,
        rate = s.error_rate * 100.0,
        lim = s.max_error_rate * 100.0,
        kinds = if kinds.is_empty() {
            String::new()
        } else {
            format!(": {}", kinds.join(", "))
        },
        p50 = ms(s.segment_latency_ms.p50),
        p90 = ms(s.segment_latency_ms.p90),
        p99 = ms(s.segment_latency_ms.p99),
        n = s.segment_latency_ms.count,
        stalls = s.stalls,
        rc = s.reconnects,
        sr = s.segment_retries,
        sk = s.segments_skipped,
        live = s.live.render(),
        res = if s.passed {
            match s.live.max_latency_s {
                Some(_) => "PASS (error rate within --max-error-rate, latency within --max-latency)".to_string(),
                None => "PASS (error rate within --max-error-rate)".to_string(),
            }
        } else if s.error_rate > s.max_error_rate {
            "FAIL (error rate above --max-error-rate)".to_string()
        } else {
            format!("FAIL ({})", s.live.latency_failure().unwrap_or_default())
        },
    )
}

/// A byte count for people: `512 B`, `1.5 KiB`, `2.0 GiB`.
pub(crate) fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// The settings and verdict the report and the series document carry.
pub fn run_info(s: &Settings, summary: &Summary) -> RunInfo {
    let mut settings = std::collections::BTreeMap::new();
    let secs = |d: Duration| format!("{} s", d.as_secs_f64());
    settings.insert("variant".to_string(), s.variant.as_str().to_string());
    settings.insert("timeout".to_string(), secs(s.timeout));
    settings.insert("connect_timeout".to_string(), secs(s.connect_timeout));
    settings.insert("first_byte_timeout".to_string(), secs(s.first_byte_timeout));
    settings.insert("min_rate".to_string(), format!("{} bytes/s", s.min_rate));
    settings.insert("reconnect".to_string(), s.reconnect.to_string());
    settings.insert(
        "reconnect_delay_max".to_string(),
        secs(s.reconnect_delay_max),
    );
    settings.insert("segment_retries".to_string(), s.segment_retries.to_string());
    settings.insert(
        "duration".to_string(),
        if s.duration.is_zero() {
            "until stopped".to_string()
        } else {
            secs(s.duration)
        },
    );
    RunInfo {
        url: summary.url.clone(),
        clients: s.clients as u64,
        ramp_rate: s.ramp_rate,
        ramp_jitter_s: s.ramp_jitter.as_secs_f64(),
        duration_s: summary.duration_s,
        stopped_by: summary.stopped_by.to_string(),
        max_error_rate: summary.max_error_rate,
        error_rate: summary.error_rate,
        requests: summary.requests.total,
        errors: summary.errors.total,
        passed: summary.passed,
        settings,
    }
}

/// `format` of the `/summary` document.
pub const FORMAT: &str = "hls-swarm-summary/1";

/// The `/summary` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SummaryDoc {
    pub format: String,
    pub finished: bool,
    pub started_at: Option<String>,
    pub summary: Summary,
    pub segment_latency_histogram: LatencyHistogram,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<crate::live::LiveDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<SeriesDoc>,
}

/// A fine log-scale histogram: bucket `i` holds times from `min_us * base^i` µs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatencyHistogram {
    pub base: f64,
    pub min_us: f64,
    /// Non-empty buckets as `[index, count]`, by index.
    pub buckets: Vec<[u64; 2]>,
    pub count: u64,
    pub sum_us: u64,
}

/// Histograms of different shapes cannot be merged.
#[derive(Debug, thiserror::Error)]
#[error("latency histograms differ in shape (base {0} vs {1}, min {2} µs vs {3} µs): replicas run different hls-swarm versions")]
pub struct ShapeMismatch(f64, f64, f64, f64);

impl LatencyHistogram {
    pub fn empty() -> LatencyHistogram {
        LatencyHistogram {
            base: FINE_BASE,
            min_us: FINE_MIN_US,
            buckets: vec![],
            count: 0,
            sum_us: 0,
        }
    }

    pub fn from_metrics(m: &Metrics) -> LatencyHistogram {
        LatencyHistogram {
            buckets: m
                .fine_buckets()
                .into_iter()
                .map(|(i, c)| [i as u64, c])
                .collect(),
            count: m.latency_count(),
            sum_us: m.latency_sum_us(),
            ..LatencyHistogram::empty()
        }
    }

    /// Add `other`'s counts to these.
    pub fn merge(&mut self, other: &LatencyHistogram) -> Result<(), ShapeMismatch> {
        if self.base != other.base || self.min_us != other.min_us {
            return Err(ShapeMismatch(
                self.base,
                other.base,
                self.min_us,
                other.min_us,
            ));
        }
        let mut all: BTreeMap<u64, u64> = self.buckets.iter().map(|[i, c]| (*i, *c)).collect();
        for [i, c] in &other.buckets {
            *all.entry(*i).or_default() += c;
        }
        self.buckets = all.into_iter().map(|(i, c)| [i, c]).collect();
        self.count += other.count;
        self.sum_us += other.sum_us;
        Ok(())
    }

    /// Quantile `q` (0..1) in seconds: the geometric middle of the bucket holding the rank,
    /// the same rule as `Metrics::quantile`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().map(|[_, c]| c).sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for [i, c] in &self.buckets {
            seen += c;
            if seen >= rank {
                let lo = self.min_us * self.base.powi(*i as i32);
                return Some(lo * self.base.sqrt() / 1e6);
            }
        }
        None
    }

    /// Percentiles in milliseconds, rounded to µs as in the single-run summary.
    pub fn latency_ms(&self) -> Latency {
        let ms = |q: f64| self.quantile(q).map(|s| (s * 1e6).round() / 1e3);
        Latency {
            count: self.count,
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
        }
    }
}

/// What `/summary` answers for one running swarm: a live snapshot until [`Live::finish`].
pub struct Live {
    settings: Settings,
    url: Url,
    metrics: Weak<Metrics>,
    started: OnceLock<(tokio::time::Instant, SystemTime)>,
    series: OnceLock<SeriesSource>,
    final_doc: OnceLock<String>,
}

impl Live {
    pub fn new(settings: &Settings, url: &Url, metrics: &Arc<Metrics>) -> Arc<Live> {
        Arc::new(Live {
            settings: settings.clone(),
            url: url.clone(),
            metrics: Arc::downgrade(metrics),
            started: OnceLock::new(),
            series: OnceLock::new(),
            final_doc: OnceLock::new(),
        })
    }

    /// Serve this document as `/summary` on the metrics endpoint.
    pub fn install(self: &Arc<Live>, metrics: &Metrics) {
        let live = self.clone();
        metrics.add_route(
            "/summary",
            Box::new(move || ("application/json", live.document())),
        );
    }

    /// The ramp started now.
    pub fn started(&self, at: tokio::time::Instant) {
        let _ = self.started.set((at, SystemTime::now()));
    }

    /// Where the live document reads the time series from while the run goes on.
    pub fn series_from(&self, source: SeriesSource) {
        let _ = self.series.set(source);
    }

    /// The run ended with this summary and series: from now on `/summary` answers them,
    /// finished.
    pub fn finish(&self, summary: &Summary, metrics: &Metrics, series: &Series) {
        let mut doc = self.doc(summary.clone(), metrics, true);
        doc.series = Some(self.series_doc(summary, series.clone()));
        let _ = self
            .final_doc
            .set(serde_json::to_string_pretty(&doc).expect("json") + "\n");
    }

    fn doc(&self, summary: Summary, metrics: &Metrics, finished: bool) -> SummaryDoc {
        SummaryDoc {
            format: FORMAT.into(),
            finished,
            started_at: self
                .started
                .get()
                .map(|(_, wall)| crate::schedule::format_rfc3339(*wall)),
            summary,
            segment_latency_histogram: LatencyHistogram::from_metrics(metrics),
            live: Some(metrics.live.doc()),
            series: None,
        }
    }

    fn series_doc(&self, summary: &Summary, series: Series) -> SeriesDoc {
        SeriesDoc {
            format: crate::series::FORMAT.to_string(),
            run: run_info(&self.settings, summary),
            series,
        }
    }

    /// The final document once finished, else a snapshot of the run so far.
    pub fn document(&self) -> String {
        if let Some(d) = self.final_doc.get() {
            return d.clone();
        }
        let Some(m) = self.metrics.upgrade() else {
            return "{}\n".into();
        };
        let elapsed = self
            .started
            .get()
            .map(|(i, _)| i.elapsed())
            .unwrap_or(Duration::ZERO);
        let s = summarize(&self.settings, &self.url, &m, elapsed, "running");
        let mut doc = self.doc(s.clone(), &m, false);
        doc.series = self
            .series
            .get()
            .and_then(|read| read(&m))
            .map(|series| self.series_doc(&s, series));
        serde_json::to_string_pretty(&doc).expect("json") + "\n"
    }
}

/// One replica's document and where it came from.
#[derive(Debug, Clone)]
pub struct Replica {
    pub source: String,
    pub doc: SummaryDoc,
}

/// Replicas' summaries merged into one, as if one swarm had run them all: counters summed,
/// percentiles from the merged histogram, the strictest error-rate limit (or `max_error_rate`
/// when given), the longest duration. `peak_active` is the sum of the replicas' peaks (an
/// upper bound of the swarm's peak: replicas peak at about the same time when they start
/// together).
pub fn merge(replicas: &[Replica], max_error_rate: Option<f64>) -> Result<Summary, ShapeMismatch> {
    let mut hist = LatencyHistogram::empty();
    let zero = || ByKind {
        total: 0,
        master: 0,
        playlist: 0,
        segment: 0,
    };
    let add = |a: &mut ByKind, b: &ByKind| {
        a.total += b.total;
        a.master += b.master;
        a.playlist += b.playlist;
        a.segment += b.segment;
    };
    let mut requests = zero();
    let mut bytes = zero();
    let mut errors = Errors {
        total: 0,
        by_kind: BTreeMap::new(),
        by_request: BTreeMap::new(),
    };
    let mut viewers = Viewers {
        target: 0,
        started: 0,
        peak_active: 0,
        active_at_end: 0,
    };
    let (mut stalls, mut reconnects, mut retries, mut skipped) = (0, 0, 0, 0);
    let mut variants: BTreeMap<String, u64> = BTreeMap::new();
    let mut duration_s: f64 = 0.0;
    let mut limit = f64::INFINITY;
    let mut stopped: Vec<&str> = vec![];
    let mut urls: Vec<&str> = vec![];
    for r in replicas {
        let s = &r.doc.summary;
        hist.merge(&r.doc.segment_latency_histogram)?;
        add(&mut requests, &s.requests);
        add(&mut bytes, &s.bytes);
        errors.total += s.errors.total;
        for (k, v) in &s.errors.by_kind {
            *errors.by_kind.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &s.errors.by_request {
            *errors.by_request.entry(k.clone()).or_default() += v;
        }
        viewers.target += s.viewers.target;
        viewers.started += s.viewers.started;
        viewers.peak_active += s.viewers.peak_active;
        viewers.active_at_end += s.viewers.active_at_end;
        stalls += s.stalls;
        reconnects += s.reconnects;
        retries += s.segment_retries;
        skipped += s.segments_skipped;
        for (k, v) in &s.variants {
            *variants.entry(k.clone()).or_default() += v;
        }
        duration_s = duration_s.max(s.duration_s);
        limit = limit.min(s.max_error_rate);
        if !stopped.contains(&s.stopped_by.as_str()) {
            stopped.push(&s.stopped_by);
        }
        if !urls.contains(&s.url.as_str()) {
            urls.push(&s.url);
        }
    }
    let limit = max_error_rate.unwrap_or(if limit.is_finite() { limit } else { 0.0 });
    let error_rate = error_rate(errors.total, requests.total);
    // What viewers felt, from the merged buckets; the strictest latency gate of the replicas.
    // A replica without these figures (an older swarm) leaves them not measured.
    let max_latency_s = replicas
        .iter()
        .filter_map(|r| r.doc.summary.live.max_latency_s)
        .reduce(f64::min);
    let docs: Option<Vec<&crate::live::LiveDoc>> =
        replicas.iter().map(|r| r.doc.live.as_ref()).collect();
    let live = match docs.and_then(crate::live::Live::merged) {
        Some(l) => l.summary(max_latency_s),
        None => crate::live::LiveSummary {
            max_latency_s,
            ..Default::default()
        },
    };
    Ok(Summary {
        url: urls.join(", "),
        duration_s,
        stopped_by: stopped.join(", "),
        viewers,
        requests,
        bytes,
        errors,
        error_rate,
        max_error_rate: limit,
        passed: error_rate <= limit && live.latency_passed(),
        segment_latency_ms: hist.latency_ms(),
        stalls,
        reconnects,
        segment_retries: retries,
        segments_skipped: skipped,
        variants,
        live,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_match_the_process_own() {
        let m = Metrics::new(1);
        for ms in [
            1u64, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987,
        ] {
            for _ in 0..ms % 7 + 1 {
                m.segment_latency(Duration::from_millis(ms));
            }
        }
        let h = LatencyHistogram::from_metrics(&m);
        for q in [0.01, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(h.quantile(q), m.quantile(q), "q={q}");
        }
        assert_eq!(h.count, m.latency_count());
    }

    #[test]
    fn merged_percentiles_come_from_merged_buckets_not_averages() {
        // Replica a: 99 fast downloads; replica b: 1 slow one. Averaging p99s would give
        // about half a second; the merged p99 is the fast bucket.
        let (a, b, both) = (Metrics::new(1), Metrics::new(1), Metrics::new(2));
        for _ in 0..99 {
            a.segment_latency(Duration::from_millis(10));
            both.segment_latency(Duration::from_millis(10));
        }
        b.segment_latency(Duration::from_secs(1));
        both.segment_latency(Duration::from_secs(1));
        let mut h = LatencyHistogram::from_metrics(&a);
        h.merge(&LatencyHistogram::from_metrics(&b)).unwrap();
        assert_eq!(h, LatencyHistogram::from_metrics(&both));
        assert_eq!(h.quantile(0.99), both.quantile(0.99));
        assert!(h.quantile(0.99).unwrap() < 0.011);
        let mut odd = LatencyHistogram::empty();
        odd.base = 1.05;
        assert!(h.merge(&odd).is_err());
    }

    #[test]
    fn documents_round_trip_and_tolerate_new_fields() {
        let (cli, _) = crate::config::parse_from(["hls-swarm", "--clients", "3"]).unwrap();
        let url = Url::parse("http://origin:17080/master.m3u8").unwrap();
        let m = Arc::new(Metrics::new(3));
        m.request(crate::metrics::Kind::Segment);
        m.segment_latency(Duration::from_millis(12));
        let live = Live::new(&cli.settings, &url, &m);
        let running: serde_json::Value = serde_json::from_str(&live.document()).unwrap();
        assert_eq!(running["finished"], false);
        assert_eq!(running["summary"]["stopped_by"], "running");
        let s = summarize(&cli.settings, &url, &m, Duration::from_secs(2), "duration");
        let series = crate::series::Recorder::new(0, vec![]).finish(&m, Duration::from_secs(2));
        live.finish(&s, &m, &series);
        let mut v: serde_json::Value = serde_json::from_str(&live.document()).unwrap();
        assert_eq!(v["finished"], true);
        assert_eq!(v["segment_latency_histogram"]["count"], 1);
        assert_eq!(v["series"]["run"]["clients"], 3, "the series document: {v}");
        v["a_later_field"] = serde_json::json!([[0, 1]]);
        let doc: SummaryDoc = serde_json::from_value(v).unwrap();
        assert_eq!(doc.series.as_ref().map(|d| &d.series), Some(&series));
        let r = Replica {
            source: "a".into(),
            doc,
        };
        let merged = merge(&[r.clone(), r], None).unwrap();
        assert_eq!(merged.requests.segment, 2);
        assert_eq!(merged.viewers.target, 6);
        assert_eq!(merged.segment_latency_ms.count, 2);
        assert_eq!(merged.stopped_by, "duration");
        assert!(merged.passed);
    }
}
