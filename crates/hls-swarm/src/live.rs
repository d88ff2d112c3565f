//! What viewers feel: latency behind live, time to first segment, playlist staleness and
//! throughput against the variant's BANDWIDTH (recorded by src/viewer.rs), TLS failure
//! reasons and redirects; their lock-free histograms, their part of the summary (JSON and
//! terminal) and of `/metrics`. Definitions are in README.md ("The swarm summary").
//!
//! A figure that cannot be measured (no `#EXT-X-PROGRAM-DATE-TIME`, no BANDWIDTH) is `None`
//! (JSON `null`, "not measurable" on the terminal), never a made-up number.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

use crate::tls::TLS_REASONS;

/// A log-scale histogram of non-negative values, about 2 % per bucket from `min` up, with an
/// exact maximum. Values below `min` (zero included) fall in bucket 0 and read as 0.
pub struct LogHistogram {
    min: f64,
    counts: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Sum in millionths of the unit.
    sum_micro: AtomicU64,
    /// `f64::to_bits` of the largest value (bit order is numeric order for values ≥ 0).
    max_bits: AtomicU64,
}

const BASE: f64 = 1.02;

impl LogHistogram {
    /// Buckets from `min` to `min × 1.02^(n-1)`.
    pub fn new(min: f64, n: usize) -> LogHistogram {
        LogHistogram {
            min,
            counts: (0..n).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micro: AtomicU64::new(0),
            max_bits: AtomicU64::new(0),
        }
    }

    pub fn record(&self, v: f64) {
        let v = if v.is_finite() { v.max(0.0) } else { return };
        let idx = if v < self.min {
            0
        } else {
            1 + ((v / self.min).ln() / BASE.ln()) as usize
        };
        self.counts[idx.min(self.counts.len() - 1)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_micro.fetch_add((v * 1e6) as u64, Relaxed);
        self.max_bits.fetch_max(v.to_bits(), Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub fn sum(&self) -> f64 {
        self.sum_micro.load(Relaxed) as f64 / 1e6
    }

    pub fn max(&self) -> Option<f64> {
        (self.count() > 0).then(|| f64::from_bits(self.max_bits.load(Relaxed)))
    }

    /// Approximate quantile (q in 0..=1), never above the exact maximum.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Relaxed);
            if seen >= rank {
                if i == 0 {
                    return Some(0.0);
                }
                // Geometric middle of the bucket.
                let lo = self.min * BASE.powi(i as i32 - 1);
                return Some((lo * BASE.sqrt()).min(self.max().unwrap_or(f64::MAX)));
            }
        }
        self.max()
    }

    /// p50, p90, p99 and max, each times `scale` (for example s → ms), rounded to 0.001.
    pub fn percentiles(&self, scale: f64) -> Option<Percentiles> {
        let r = |v: f64| (v * scale * 1000.0).round() / 1000.0;
        Some(Percentiles {
            p50: r(self.quantile(0.5)?),
            p90: r(self.quantile(0.9)?),
            p99: r(self.quantile(0.99)?),
            max: r(self.max()?),
        })
    }

    /// The histogram as a document (non-empty buckets), for `/summary` and `report`.
    pub fn doc(&self) -> HistogramDoc {
        HistogramDoc {
            min: self.min,
            n: self.counts.len(),
            buckets: self
                .counts
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let c = c.load(Relaxed);
                    (c > 0).then_some([i as u64, c])
                })
                .collect(),
            sum: self.sum(),
            max: self.max(),
        }
    }

    /// Add another replica's histogram of the same shape; false (nothing added) when the
    /// shapes differ (another hls-swarm version).
    pub fn add_doc(&self, d: &HistogramDoc) -> bool {
        if d.min != self.min || d.n != self.counts.len() {
            return false;
        }
        for [i, c] in &d.buckets {
            if let Some(b) = self.counts.get(*i as usize) {
                b.fetch_add(*c, Relaxed);
                self.count.fetch_add(*c, Relaxed);
            }
        }
        self.sum_micro.fetch_add((d.sum * 1e6) as u64, Relaxed);
        if let Some(m) = d.max {
            self.max_bits.fetch_max(m.max(0.0).to_bits(), Relaxed);
        }
        true
    }

    /// Prometheus summary lines: quantiles 0.5/0.9/0.99, _sum, _count, and a _max gauge.
    fn render(&self, o: &mut String, name: &str, help: &str) {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} summary");
        for q in [0.5, 0.9, 0.99] {
            match self.quantile(q) {
                Some(v) => {
                    let _ = writeln!(o, "{name}{{quantile=\"{q}\"}} {v}");
                }
                None => {
                    let _ = writeln!(o, "{name}{{quantile=\"{q}\"}} NaN");
                }
            }
        }
        let _ = writeln!(o, "{name}_sum {}", self.sum());
        let _ = writeln!(o, "{name}_count {}", self.count());
        let _ = writeln!(
            o,
            "# HELP {name}_max Largest value.\n# TYPE {name}_max gauge\n{name}_max {}",
            self.max().map_or("NaN".to_string(), |v| v.to_string())
        );
    }
}

/// A [`LogHistogram`] as JSON: its shape (`min`, `n` buckets of 2 %) and its non-empty
/// buckets as `[index, count]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HistogramDoc {
    pub min: f64,
    pub n: usize,
    pub buckets: Vec<[u64; 2]>,
    pub sum: f64,
    pub max: Option<f64>,
}

/// The viewer-experience histograms and counters of one swarm, in its `/summary` document,
/// so `report` merges percentiles from buckets as for the download times.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LiveDoc {
    pub live_latency_s: HistogramDoc,
    pub first_segment_s: HistogramDoc,
    pub playlist_stale_targets: HistogramDoc,
    pub throughput_vs_bandwidth: HistogramDoc,
    pub segments_without_program_date_time: u64,
    pub segments_without_bandwidth: u64,
    pub tls_errors: std::collections::BTreeMap<String, u64>,
    pub redirects_followed: u64,
}

/// `{"p50":…,"p90":…,"p99":…,"max":…}`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The low tail of a throughput ratio (low is bad): `{"min":…,"p1":…,"p10":…,"p50":…}`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct LowTail {
    pub min: f64,
    pub p1: f64,
    pub p10: f64,
    pub p50: f64,
}

/// The viewer-experience figures every viewer records into.
pub struct Live {
    /// Seconds between a segment's wall-clock end (program date-time + duration) and the
    /// moment its download completed.
    pub latency: LogHistogram,
    /// Seconds from a viewer's start to its first complete segment.
    pub first_segment: LogHistogram,
    /// At each media playlist load: time since the playlist last changed for this viewer, in
    /// target durations (0 when this load brought a change).
    pub stale: LogHistogram,
    /// Per segment download: (bytes × 8 / download time) / the variant's BANDWIDTH.
    pub throughput: LogHistogram,
    /// Segments downloaded whose playlist gave no program date-time.
    pub segments_without_pdt: AtomicU64,
    /// Segments downloaded with no BANDWIDTH known (a media playlist URL).
    pub segments_without_bandwidth: AtomicU64,
    /// TLS handshake failures by reason (indexed like `TLS_REASONS`).
    pub tls_errors: [AtomicU64; TLS_REASONS.len()],
    /// Redirects followed (`--follow-redirects`).
    pub redirects: AtomicU64,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            latency: LogHistogram::new(0.001, 1100),
            first_segment: LogHistogram::new(0.001, 1100),
            stale: LogHistogram::new(0.01, 800),
            throughput: LogHistogram::new(0.001, 1500),
            segments_without_pdt: AtomicU64::new(0),
            segments_without_bandwidth: AtomicU64::new(0),
            tls_errors: Default::default(),
            redirects: AtomicU64::new(0),
        }
    }
}

/// The viewer-experience part of the summary (flattened into the summary JSON; absent fields,
/// from a swarm before these figures, read as not measured).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LiveSummary {
    /// Latency behind live, ms; null when no segment had a program date-time.
    pub live_latency_ms: Option<Percentiles>,
    /// Time to first segment, ms; null when no viewer got a segment.
    pub first_segment_ms: Option<Percentiles>,
    /// Playlist staleness in target durations; null when no media playlist was loaded.
    pub playlist_stale_targets: Option<Percentiles>,
    /// Download throughput as a multiple of the variant's BANDWIDTH; null without BANDWIDTH.
    pub throughput_vs_bandwidth: Option<LowTail>,
    /// Segments downloaded that could not give a latency (no program date-time).
    pub segments_without_program_date_time: u64,
    /// Segments downloaded with no BANDWIDTH to compare with (terminal wording only).
    #[serde(skip)]
    pub segments_without_bandwidth: u64,
    /// TLS handshake failures by reason (only reasons that occurred).
    pub tls_errors: std::collections::BTreeMap<String, u64>,
    pub redirects_followed: u64,
    /// `--max-latency` in seconds (null: no latency gate).
    pub max_latency_s: Option<f64>,
}

impl Live {
    /// These figures as a document (for `/summary`).
    pub fn doc(&self) -> LiveDoc {
        let mut tls_errors = std::collections::BTreeMap::new();
        for (r, c) in TLS_REASONS.iter().zip(&self.tls_errors) {
            let n = c.load(Relaxed);
            if n > 0 {
                tls_errors.insert(r.label().to_string(), n);
            }
        }
        LiveDoc {
            live_latency_s: self.latency.doc(),
            first_segment_s: self.first_segment.doc(),
            playlist_stale_targets: self.stale.doc(),
            throughput_vs_bandwidth: self.throughput.doc(),
            segments_without_program_date_time: self.segments_without_pdt.load(Relaxed),
            segments_without_bandwidth: self.segments_without_bandwidth.load(Relaxed),
            tls_errors,
            redirects_followed: self.redirects.load(Relaxed),
        }
    }

    /// Replicas' figures merged as if one swarm had recorded them all (buckets added, so the
    /// percentiles are those of the whole swarm). None when a document has another shape.
    pub fn merged<'a>(docs: impl IntoIterator<Item = &'a LiveDoc>) -> Option<Live> {
        let live = Live::default();
        for d in docs {
            let same = live.latency.add_doc(&d.live_latency_s)
                && live.first_segment.add_doc(&d.first_segment_s)
                && live.stale.add_doc(&d.playlist_stale_targets)
                && live.throughput.add_doc(&d.throughput_vs_bandwidth);
            if !same {
                return None;
            }
            live.segments_without_pdt
                .fetch_add(d.segments_without_program_date_time, Relaxed);
            live.segments_without_bandwidth
                .fetch_add(d.segments_without_bandwidth, Relaxed);
            live.redirects.fetch_add(d.redirects_followed, Relaxed);
            for (k, n) in &d.tls_errors {
                if let Some(r) = TLS_REASONS.iter().find(|r| r.label() == k) {
                    live.tls_errors[r.index()].fetch_add(*n, Relaxed);
                }
            }
        }
        Some(live)
    }

    pub fn summary(&self, max_latency_s: Option<f64>) -> LiveSummary {
        let mut tls_errors = std::collections::BTreeMap::new();
        for (r, c) in TLS_REASONS.iter().zip(&self.tls_errors) {
            let n = c.load(Relaxed);
            if n > 0 {
                tls_errors.insert(r.label().to_string(), n);
            }
        }
        let low = |h: &LogHistogram| {
            let r = |v: f64| (v * 1000.0).round() / 1000.0;
            Some(LowTail {
                min: r(h.quantile(0.0)?),
                p1: r(h.quantile(0.01)?),
                p10: r(h.quantile(0.1)?),
                p50: r(h.quantile(0.5)?),
            })
        };
        LiveSummary {
            live_latency_ms: self.latency.percentiles(1000.0),
            first_segment_ms: self.first_segment.percentiles(1000.0),
            playlist_stale_targets: self.stale.percentiles(1.0),
            throughput_vs_bandwidth: low(&self.throughput),
            segments_without_program_date_time: self.segments_without_pdt.load(Relaxed),
            segments_without_bandwidth: self.segments_without_bandwidth.load(Relaxed),
            tls_errors,
            redirects_followed: self.redirects.load(Relaxed),
            max_latency_s,
        }
    }

    /// The `/metrics` lines of these figures.
    pub fn render(&self, o: &mut String) {
        self.latency.render(
            o,
            "hls_swarm_live_latency_seconds",
            "Latency behind live: segment download completed minus the segment's program date-time end.",
        );
        self.first_segment.render(
            o,
            "hls_swarm_first_segment_seconds",
            "Time from a viewer's start to its first complete segment.",
        );
        self.stale.render(
            o,
            "hls_swarm_playlist_stale_targets",
            "At each media playlist load, time since it last changed, in target durations.",
        );
        self.throughput.render(
            o,
            "hls_swarm_throughput_bandwidth_ratio",
            "Segment download throughput divided by the variant's BANDWIDTH.",
        );
        let _ = writeln!(
            o,
            "# HELP hls_swarm_tls_errors_total TLS handshake failures by reason.\n# TYPE hls_swarm_tls_errors_total counter"
        );
        for (r, c) in TLS_REASONS.iter().zip(&self.tls_errors) {
            let _ = writeln!(
                o,
                "hls_swarm_tls_errors_total{{reason=\"{}\"}} {}",
                r.label(),
                c.load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP hls_swarm_redirects_followed_total Redirects followed (--follow-redirects).\n# TYPE hls_swarm_redirects_followed_total counter\nhls_swarm_redirects_followed_total {}",
            self.redirects.load(Relaxed)
        );
    }
}

impl LiveSummary {
    /// Whether the latency gate passes: no gate, or a measured p99 within it.
    pub fn latency_passed(&self) -> bool {
        match (self.max_latency_s, &self.live_latency_ms) {
            (None, _) => true,
            (Some(max), Some(p)) => p.p99 <= max * 1000.0,
            (Some(_), None) => false,
        }
    }

    /// Why the latency gate failed (None: it passed).
    pub fn latency_failure(&self) -> Option<String> {
        if self.latency_passed() {
            return None;
        }
        let max = self.max_latency_s?;
        Some(match &self.live_latency_ms {
            Some(p) => format!(
                "p99 latency behind live {:.1} s above --max-latency {max} s",
                p.p99 / 1000.0
            ),
            None => format!(
                "latency behind live not measurable, --max-latency {max} s cannot be checked"
            ),
        })
    }

    /// The terminal lines of these figures (each starts with two spaces, ends with \n).
    pub fn render(&self) -> String {
        const NM: &str = "not measurable";
        // Milliseconds below a second, seconds above.
        let t = |ms: f64| {
            if ms < 1000.0 {
                format!("{ms:.1} ms")
            } else {
                format!("{:.2} s", ms / 1e3)
            }
        };
        let secs = |p: &Percentiles| {
            format!(
                "p50 {}, p90 {}, p99 {}, max {}",
                t(p.p50),
                t(p.p90),
                t(p.p99),
                t(p.max)
            )
        };
        let mut o = String::new();
        let _ = writeln!(
            o,
            "  behind live: {}",
            match &self.live_latency_ms {
                Some(p) => secs(p),
                None if self.segments_without_program_date_time > 0 => {
                    format!("{NM} (the playlists carry no EXT-X-PROGRAM-DATE-TIME)")
                }
                None => format!("{NM} (no segment downloaded)"),
            }
        );
        let _ = writeln!(
            o,
            "  first seg:  {}",
            match &self.first_segment_ms {
                Some(p) => secs(p),
                None => format!("{NM} (no viewer got a segment)"),
            }
        );
        let _ = writeln!(
            o,
            "  staleness:  {}",
            match &self.playlist_stale_targets {
                Some(p) => format!(
                    "p50 {:.2}, p90 {:.2}, p99 {:.2}, max {:.2} target durations without a playlist change",
                    p.p50, p.p90, p.p99, p.max
                ),
                None => format!("{NM} (no media playlist loaded)"),
            }
        );
        let _ = writeln!(
            o,
            "  throughput: {}",
            match &self.throughput_vs_bandwidth {
                Some(t) => format!(
                    "min {:.2}x, p1 {:.2}x, p10 {:.2}x, p50 {:.2}x the variant's BANDWIDTH",
                    t.min, t.p1, t.p10, t.p50
                ),
                None if self.segments_without_bandwidth > 0 => {
                    format!("{NM} (no BANDWIDTH: the URL is a media playlist)")
                }
                None => format!("{NM} (no segment downloaded)"),
            }
        );
        if !self.tls_errors.is_empty() || self.redirects_followed > 0 {
            let tls: Vec<String> = self
                .tls_errors
                .iter()
                .map(|(k, v)| format!("{} {v}", k.replace('_', " ")))
                .collect();
            let _ = writeln!(
                o,
                "  tls:        {}; redirects followed {}",
                if tls.is_empty() {
                    "no handshake failures".to_string()
                } else {
                    format!("handshake failures: {}", tls.join(", "))
                },
                self.redirects_followed
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsReason;

    #[test]
    fn percentiles_follow_the_recorded_values_and_never_pass_the_max() {
        let h = LogHistogram::new(0.001, 1100);
        assert!(h.percentiles(1000.0).is_none());
        for ms in 1..=100u64 {
            h.record(ms as f64 / 1000.0);
        }
        let p = h.percentiles(1000.0).unwrap();
        assert!((p.p50 - 50.0).abs() < 1.5, "{p:?}");
        assert!((p.p99 - 99.0).abs() < 2.0, "{p:?}");
        assert_eq!(p.max, 100.0);
        assert!(p.p99 <= p.max);
        // Zero stays zero (a playlist that changed at every load is 0 targets stale).
        let z = LogHistogram::new(0.01, 800);
        z.record(0.0);
        z.record(0.0);
        z.record(3.0);
        let p = z.percentiles(1.0).unwrap();
        assert_eq!((p.p50, p.max), (0.0, 3.0));
        assert!((p.p99 - 3.0).abs() < 0.04, "{p:?}");
    }

    #[test]
    fn unmeasurable_figures_are_null_and_said_so() {
        let live = Live::default();
        live.first_segment.record(0.2);
        let s = live.summary(Some(5.0));
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["live_latency_ms"].is_null());
        assert_eq!(json["first_segment_ms"]["max"], 200.0);
        assert!(s
            .render()
            .contains("behind live: not measurable (no segment downloaded)"));
        live.segments_without_pdt.fetch_add(1, Relaxed);
        assert!(live
            .summary(None)
            .render()
            .contains("not measurable (the playlists carry no EXT-X-PROGRAM-DATE-TIME)"));
        assert!(!s.latency_passed(), "a gate that cannot be checked fails");
        assert!(live.summary(None).latency_passed());
        live.latency.record(6.0);
        let s = live.summary(Some(5.0));
        // Two replicas' documents merge into the figures of one swarm.
        let other = Live::default();
        other.latency.record(1.0);
        other.tls_errors[TlsReason::UnknownIssuer.index()].fetch_add(2, Relaxed);
        let (a, b) = (live.doc(), other.doc());
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<LiveDoc>(&json).unwrap(), a);
        let merged = Live::merged([&a, &b]).unwrap().summary(None);
        let lat = merged.live_latency_ms.unwrap();
        assert_eq!((lat.max, merged.tls_errors["unknown_issuer"]), (6000.0, 2));
        assert!((lat.p50 - 1000.0).abs() < 15.0, "{lat:?}");
        assert!(s
            .latency_failure()
            .unwrap()
            .contains("above --max-latency 5 s"));
        let mut page = String::new();
        live.render(&mut page);
        assert!(page.contains("hls_swarm_live_latency_seconds_count 1"));
        assert!(page.contains("hls_swarm_live_latency_seconds_max 6"));
        assert!(page.contains("hls_swarm_tls_errors_total{reason=\"unknown_issuer\"} 0"));
    }
}
