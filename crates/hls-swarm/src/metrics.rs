//! Counters shared by every viewer (atomics, no locks) and how a viewer records into them,
//! the per-variant counters the time series (`series`) reads each second, their Prometheus
//! rendering and the tiny HTTP endpoint serving `/metrics` and `/health`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::http::{HttpError, Url};
use crate::m3u8::Segment;

/// What a request fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Master = 0,
    Playlist = 1,
    Segment = 2,
}

pub const KINDS: [(&str, Kind); 3] = [
    ("master", Kind::Master),
    ("playlist", Kind::Playlist),
    ("segment", Kind::Segment),
];

/// Error kinds, the labels of `HttpError::kind()` plus playlist parse failures (last: unknown
/// labels count there).
pub const ERROR_KINDS: [&str; 14] = [
    "connect",
    "connect_timeout",
    "first_byte_timeout",
    "slow",
    "too_large",
    "timeout",
    "io",
    "http_4xx",
    "http_5xx",
    "http_other",
    "protocol",
    "tls",
    "redirect",
    "parse",
];

/// Prometheus bucket bounds of the segment download histogram, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0,
];

/// Fine log-scale histogram (about 2 % wide buckets from 10 µs) for percentiles. Bucket `i`
/// holds durations from `FINE_MIN_US * FINE_BASE^i` µs; `/summary` ships the non-empty ones so
/// `hls-swarm report` can merge replicas' percentiles exactly (src/summary.rs).
pub const FINE_BASE: f64 = 1.02;
pub const FINE_MIN_US: f64 = 10.0;
/// Buckets of the fine histogram (also those of the per-second histograms in `series`).
pub const FINE_N: usize = 800;

/// Fine histogram bucket of a duration.
pub fn fine_index(d: Duration) -> usize {
    let us = (d.as_secs_f64() * 1e6).max(FINE_MIN_US);
    (((us / FINE_MIN_US).ln() / FINE_BASE.ln()) as usize).min(FINE_N - 1)
}

/// The duration a fine histogram bucket stands for (its geometric middle), in seconds.
pub fn fine_value(i: usize) -> f64 {
    FINE_MIN_US * FINE_BASE.powi(i as i32) * FINE_BASE.sqrt() / 1e6
}

/// Answers a GET of an extra path of the metrics endpoint (for example `/summary`): the
/// content type and the body.
pub type Route = Box<dyn Fn() -> (&'static str, String) + Send + Sync>;

pub struct Metrics {
    pub target_viewers: u64,
    pub active: AtomicI64,
    pub peak_active: AtomicI64,
    pub started: AtomicU64,
    pub requests: [AtomicU64; 3],
    pub bytes: [AtomicU64; 3],
    /// errors[request kind][error kind]
    pub errors: [[AtomicU64; ERROR_KINDS.len()]; 3],
    pub stalls: AtomicU64,
    pub reconnects: AtomicU64,
    pub segment_retries: AtomicU64,
    pub segments_skipped: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    fine: Box<[AtomicU64]>,
    /// Variant playlist URL → sessions that chose it.
    variants: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    lat_count: AtomicU64,
    lat_sum_us: AtomicU64,
    /// What viewers feel: latency behind live, start-up, staleness, TLS (src/live.rs).
    pub live: crate::live::Live,
    /// Per-variant counters for the time series (fed by the viewers, read each second).
    pub per_variant: VariantTable,
    /// Extra paths served next to `/metrics` and `/health` (see [`Metrics::add_route`]).
    routes: std::sync::RwLock<Vec<(&'static str, Route)>>,
}

impl Metrics {
    pub fn new(target_viewers: u64) -> Metrics {
        Metrics {
            target_viewers,
            active: AtomicI64::new(0),
            peak_active: AtomicI64::new(0),
            started: AtomicU64::new(0),
            requests: Default::default(),
            bytes: Default::default(),
            errors: Default::default(),
            stalls: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            segment_retries: AtomicU64::new(0),
            segments_skipped: AtomicU64::new(0),
            buckets: Default::default(),
            fine: (0..FINE_N).map(|_| AtomicU64::new(0)).collect(),
            variants: Default::default(),
            lat_count: AtomicU64::new(0),
            lat_sum_us: AtomicU64::new(0),
            live: Default::default(),
            per_variant: Default::default(),
            routes: Default::default(),
        }
    }

    pub fn request(&self, kind: Kind) {
        self.requests[kind as usize].fetch_add(1, Relaxed);
    }

    pub fn add_bytes(&self, kind: Kind, n: u64) {
        self.bytes[kind as usize].fetch_add(n, Relaxed);
    }

    pub fn error(&self, kind: Kind, error_kind: &str) {
        let i = ERROR_KINDS
            .iter()
            .position(|k| *k == error_kind)
            .unwrap_or(ERROR_KINDS.len() - 1);
        self.errors[kind as usize][i].fetch_add(1, Relaxed);
    }

    pub fn viewer_started(&self) -> ActiveGuard<'_> {
        self.started.fetch_add(1, Relaxed);
        let now = self.active.fetch_add(1, Relaxed) + 1;
        self.peak_active.fetch_max(now, Relaxed);
        ActiveGuard(self)
    }

    /// A viewer session chose this variant (once per session, so a lock is fine).
    pub fn variant_chosen(&self, url: &str) {
        let mut v = self.variants.lock().expect("variants");
        match v.get_mut(url) {
            Some(n) => *n += 1,
            None => {
                v.insert(url.to_string(), 1);
            }
        }
    }

    pub fn variants(&self) -> std::collections::BTreeMap<String, u64> {
        self.variants.lock().expect("variants").clone()
    }

    /// Record one successful segment download.
    pub fn segment_latency(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.buckets[i].fetch_add(1, Relaxed);
                break;
            }
        }
        self.fine[fine_index(d)].fetch_add(1, Relaxed);
        self.lat_count.fetch_add(1, Relaxed);
        self.lat_sum_us.fetch_add((s * 1e6) as u64, Relaxed);
    }

    /// Segment downloads per fine histogram bucket so far (the time series diffs these).
    pub fn fine_counts(&self) -> Vec<u64> {
        self.fine.iter().map(|a| a.load(Relaxed)).collect()
    }

    pub fn total_requests(&self) -> u64 {
        self.requests.iter().map(|a| a.load(Relaxed)).sum()
    }

    pub fn total_bytes(&self) -> u64 {
        self.bytes.iter().map(|a| a.load(Relaxed)).sum()
    }

    pub fn total_errors(&self) -> u64 {
        self.errors.iter().flatten().map(|a| a.load(Relaxed)).sum()
    }

    pub fn latency_count(&self) -> u64 {
        self.lat_count.load(Relaxed)
    }

    /// Sum of the recorded segment download times, in microseconds.
    pub fn latency_sum_us(&self) -> u64 {
        self.lat_sum_us.load(Relaxed)
    }

    /// The non-empty buckets of the fine latency histogram as `(index, count)`.
    pub fn fine_buckets(&self) -> Vec<(usize, u64)> {
        self.fine
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.load(Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect()
    }

    /// Serve `path` (exact match, GET or HEAD) on the metrics endpoint with what `route`
    /// returns at each request. A later route for the same path wins.
    pub fn add_route(&self, path: &'static str, route: Route) {
        let mut r = self.routes.write().expect("routes");
        r.retain(|(p, _)| *p != path);
        r.push((path, route));
    }

    fn answer_route(&self, path: &str) -> Option<(&'static str, String)> {
        let r = self.routes.read().expect("routes");
        r.iter().find(|(p, _)| *p == path).map(|(_, f)| f())
    }

    /// Approximate quantile (q in 0..1) of segment download time, in seconds.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.lat_count.load(Relaxed);
        if count == 0 {
            return None;
        }
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (i, c) in self.fine.iter().enumerate() {
            seen += c.load(Relaxed);
            if seen >= rank {
                return Some(fine_value(i));
            }
        }
        None
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        let g = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        g(
            &mut o,
            "hls_swarm_viewers_target",
            "gauge",
            "Viewers this run starts.",
        );
        let _ = writeln!(o, "hls_swarm_viewers_target {}", self.target_viewers);
        g(
            &mut o,
            "hls_swarm_active_viewers",
            "gauge",
            "Viewers running now.",
        );
        let _ = writeln!(o, "hls_swarm_active_viewers {}", self.active.load(Relaxed));
        g(
            &mut o,
            "hls_swarm_viewers_started_total",
            "counter",
            "Viewers started.",
        );
        let _ = writeln!(
            o,
            "hls_swarm_viewers_started_total {}",
            self.started.load(Relaxed)
        );
        g(
            &mut o,
            "hls_swarm_requests_total",
            "counter",
            "HTTP requests by what they fetched.",
        );
        for (name, k) in KINDS {
            let _ = writeln!(
                o,
                "hls_swarm_requests_total{{kind=\"{name}\"}} {}",
                self.requests[k as usize].load(Relaxed)
            );
        }
        g(
            &mut o,
            "hls_swarm_bytes_total",
            "counter",
            "Body bytes received by what they fetched.",
        );
        for (name, k) in KINDS {
            let _ = writeln!(
                o,
                "hls_swarm_bytes_total{{kind=\"{name}\"}} {}",
                self.bytes[k as usize].load(Relaxed)
            );
        }
        g(
            &mut o,
            "hls_swarm_errors_total",
            "counter",
            "Failed requests by request and error kind.",
        );
        for (name, k) in KINDS {
            for (i, ek) in ERROR_KINDS.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "hls_swarm_errors_total{{request=\"{name}\",kind=\"{ek}\"}} {}",
                    self.errors[k as usize][i].load(Relaxed)
                );
            }
        }
        for (name, help, v) in [
            (
                "hls_swarm_stalls_total",
                "Segments not downloaded before they were due to play.",
                &self.stalls,
            ),
            (
                "hls_swarm_reconnects_total",
                "Viewer reconnects after a failed playlist load.",
                &self.reconnects,
            ),
            (
                "hls_swarm_segment_retries_total",
                "Segment download retries.",
                &self.segment_retries,
            ),
            (
                "hls_swarm_segments_skipped_total",
                "Segments given up after all retries or fallen out of the window.",
                &self.segments_skipped,
            ),
        ] {
            g(&mut o, name, "counter", help);
            let _ = writeln!(o, "{name} {}", v.load(Relaxed));
        }
        let name = "hls_swarm_segment_download_seconds";
        g(
            &mut o,
            name,
            "histogram",
            "Segment download time, request to last body byte.",
        );
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.buckets[i].load(Relaxed);
            let _ = writeln!(o, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let count = self.lat_count.load(Relaxed);
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            o,
            "{name}_sum {}",
            self.lat_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(o, "{name}_count {count}");
        self.live.render(&mut o);
        o
    }
}

/// Recording from a viewer.
impl Metrics {
    /// A failed request: its error kind, and for a TLS failure its reason.
    pub fn http_error(&self, kind: Kind, e: &HttpError) {
        self.error(kind, e.kind());
        if let HttpError::Tls { reason, .. } = e {
            self.live.tls_errors[reason.index()].fetch_add(1, Relaxed);
        }
    }

    /// Redirects a request followed: each hop was a request of its own. Returns where the
    /// request ended up.
    pub fn redirects_followed(&self, kind: Kind, r: Option<(u32, Url)>) -> Option<Url> {
        let (hops, url) = r?;
        self.requests[kind as usize].fetch_add(hops as u64, Relaxed);
        self.live.redirects.fetch_add(hops as u64, Relaxed);
        Some(url)
    }

    /// A segment downloaded: latency behind live (when it has a program date-time) and
    /// throughput against BANDWIDTH (when known).
    pub fn segment_done(
        &self,
        seg: &Segment,
        bytes: u64,
        took: std::time::Duration,
        bandwidth: Option<u64>,
    ) {
        match seg.end_ms() {
            Some(end) => {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64() * 1000.0)
                    .unwrap_or(0.0);
                self.live.latency.record((now_ms - end) / 1000.0);
            }
            None => {
                self.live.segments_without_pdt.fetch_add(1, Relaxed);
            }
        }
        match bandwidth {
            Some(bw) if !took.is_zero() => {
                let bps = bytes as f64 * 8.0 / took.as_secs_f64();
                self.live.throughput.record(bps / bw as f64);
            }
            _ => {
                self.live.segments_without_bandwidth.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Keeps the active-viewer gauge right however a viewer task ends (including abort).
pub struct ActiveGuard<'a>(&'a Metrics);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

/// Counters of the viewers watching one variant (or the one media playlist given as URL).
pub struct VariantCounters {
    watching: AtomicI64,
    segments: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    stalls: AtomicU64,
    latency: Box<[AtomicU64]>,
}

impl VariantCounters {
    fn new() -> VariantCounters {
        VariantCounters {
            watching: AtomicI64::new(0),
            segments: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            latency: (0..FINE_N).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// Variant playlist URL → its counters, in the order variants were first chosen.
#[derive(Default)]
pub struct VariantTable {
    inner: Mutex<Vec<(String, Arc<VariantCounters>)>>,
}

impl VariantTable {
    /// A viewer session starts watching `url` (once per session, so a lock is fine); the
    /// returned guard counts it as watching until dropped.
    pub fn watch(&self, url: &str) -> Watching {
        let mut t = self.inner.lock().expect("variant table");
        let c = match t.iter().find(|(u, _)| u == url) {
            Some((_, c)) => c.clone(),
            None => {
                let c = Arc::new(VariantCounters::new());
                t.push((url.to_string(), c.clone()));
                c
            }
        };
        c.watching.fetch_add(1, Relaxed);
        Watching(c)
    }

    pub(crate) fn read(&self) -> Vec<(String, VariantCum)> {
        let t = self.inner.lock().expect("variant table");
        t.iter()
            .map(|(u, c)| {
                (
                    u.clone(),
                    VariantCum {
                        watching: c.watching.load(Relaxed),
                        segments: c.segments.load(Relaxed),
                        bytes: c.bytes.load(Relaxed),
                        errors: c.errors.load(Relaxed),
                        stalls: c.stalls.load(Relaxed),
                        latency: c.latency.iter().map(|a| a.load(Relaxed)).collect(),
                    },
                )
            })
            .collect()
    }
}

/// A viewer session watching one variant: what it downloads is counted for that variant.
pub struct Watching(Arc<VariantCounters>);

impl Watching {
    /// One segment downloaded: its size, download time and whether it arrived after the
    /// buffer ran out (a stall).
    pub fn segment_done(&self, bytes: u64, took: Duration, stalled: bool) {
        let c = &self.0;
        c.segments.fetch_add(1, Relaxed);
        c.bytes.fetch_add(bytes, Relaxed);
        c.latency[fine_index(took)].fetch_add(1, Relaxed);
        if stalled {
            c.stalls.fetch_add(1, Relaxed);
        }
    }

    /// One failed request of this variant (a segment attempt or a media playlist load).
    pub fn error(&self) {
        self.0.errors.fetch_add(1, Relaxed);
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.watching.fetch_sub(1, Relaxed);
    }
}

/// One reading of a variant's cumulative counters (the time series diffs these).
#[derive(Default, Clone)]
pub(crate) struct VariantCum {
    pub(crate) watching: i64,
    pub(crate) segments: u64,
    pub(crate) bytes: u64,
    pub(crate) errors: u64,
    pub(crate) stalls: u64,
    pub(crate) latency: Vec<u64>,
}

/// Bind the metrics port (all interfaces) now, so a busy port is reported at start.
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(("0.0.0.0", port)).await
}

/// Serve `/metrics` and `/health` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
                    let n = sock.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let line = String::from_utf8_lossy(&buf);
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("");
            let path = parts.next().unwrap_or("").split('?').next().unwrap_or("");
            let mut routed = match method {
                "GET" | "HEAD" => metrics.answer_route(path),
                _ => None,
            };
            let (status, ctype, body) = match (method, path) {
                ("GET" | "HEAD", "/metrics") => (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    metrics.render(),
                ),
                ("GET" | "HEAD", "/health") => ("200 OK", "text/plain", "OK\n".to_string()),
                ("GET" | "HEAD", _) if routed.is_some() => {
                    let (ctype, body) = routed.take().expect("route");
                    ("200 OK", ctype, body)
                }
                ("GET" | "HEAD", _) => ("404 Not Found", "text/plain", "not found\n".into()),
                _ => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "method not allowed\n".into(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            if method != "HEAD" {
                let _ = sock.write_all(body.as_bytes()).await;
            }
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_recorded_latencies() {
        let m = Metrics::new(1);
        for ms in 1..=100u64 {
            m.segment_latency(Duration::from_millis(ms));
        }
        let p50 = m.quantile(0.5).unwrap();
        let p99 = m.quantile(0.99).unwrap();
        assert!((p50 - 0.050).abs() < 0.002, "{p50}");
        assert!((p99 - 0.099).abs() < 0.003, "{p99}");
        let text = m.render();
        assert!(text.contains("hls_swarm_segment_download_seconds_count 100"));
        assert!(text.contains("hls_swarm_segment_download_seconds_bucket{le=\"0.05\"} 50"));
    }
}
