//! Request metrics in Prometheus text format.
//!
//! Counters are sharded per worker thread (cache-line aligned shards, summed on scrape) so the
//! hot path never bounces a shared cache line between cores.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use crate::stream::Stream;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Master,
    Playlist,
    Segment,
    Health,
    Metrics,
    Other,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Master,
        Kind::Playlist,
        Kind::Segment,
        Kind::Health,
        Kind::Metrics,
        Kind::Other,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Kind::Master => "master",
            Kind::Playlist => "playlist",
            Kind::Segment => "segment",
            Kind::Health => "health",
            Kind::Metrics => "metrics",
            Kind::Other => "other",
        }
    }
}

const STATUSES: [u16; 8] = [200, 204, 206, 400, 404, 405, 416, 431];
const BUCKETS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0,
];
const SHARDS: usize = 16;

#[repr(align(128))]
#[derive(Default)]
struct Shard {
    requests: [[AtomicU64; STATUSES.len()]; 6],
    bytes: [AtomicU64; 6],
    in_flight: AtomicI64,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_sum_ns: AtomicU64,
    latency_count: AtomicU64,
}

/// Why the server closed a connection on its own (see `docs/hardening.md`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CloseReason {
    /// No complete request header within --header-timeout (including nothing sent at all).
    Header,
    /// Idle between requests for --keepalive-timeout.
    Keepalive,
    /// A response made no progress for --send-timeout (the client stopped reading).
    Send,
}

impl CloseReason {
    pub const ALL: [CloseReason; 3] = [
        CloseReason::Header,
        CloseReason::Keepalive,
        CloseReason::Send,
    ];
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::Header => "header_timeout",
            CloseReason::Keepalive => "keepalive_timeout",
            CloseReason::Send => "send_timeout",
        }
    }
}

pub struct Metrics {
    shards: Box<[Shard]>,
    pub access_log_dropped: AtomicU64,
    pub connections: AtomicU64,
    /// Connections closed by the server, by `CloseReason`.
    pub closed: [AtomicU64; 3],
    /// Connections refused because --max-connections were open.
    pub refused: AtomicU64,
    /// accept(2) failures (EMFILE and friends).
    pub accept_errors: AtomicU64,
    /// TLS handshakes that failed (with --tls-cert; a timeout counts as header_timeout).
    pub tls_handshake_errors: AtomicU64,
    /// Client connections open now.
    pub open: AtomicU64,
    /// The --max-connections in force.
    pub max_connections: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            access_log_dropped: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            closed: Default::default(),
            refused: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            tls_handshake_errors: AtomicU64::new(0),
            open: AtomicU64::new(0),
            max_connections: AtomicU64::new(0),
        }
    }
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn shard_index() -> usize {
    SHARD.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS);
        }
        s.get()
    })
}

impl Metrics {
    fn shard(&self) -> &Shard {
        &self.shards[shard_index()]
    }

    pub fn begin(&self) {
        self.shard().in_flight.fetch_add(1, Relaxed);
    }

    pub fn closed_by(&self, reason: CloseReason) {
        self.closed[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn end(&self, kind: Kind, status: u16, bytes: u64, took: Duration) {
        let s = self.shard();
        s.in_flight.fetch_sub(1, Relaxed);
        let k = kind as usize;
        let si = STATUSES.iter().position(|&x| x == status).unwrap_or(3);
        s.requests[k][si].fetch_add(1, Relaxed);
        s.bytes[k].fetch_add(bytes, Relaxed);
        let secs = took.as_secs_f64();
        if let Some(b) = BUCKETS.iter().position(|&le| secs <= le) {
            s.buckets[b].fetch_add(1, Relaxed);
        }
        s.latency_sum_ns.fetch_add(took.as_nanos() as u64, Relaxed);
        s.latency_count.fetch_add(1, Relaxed);
    }

    fn sum<F: Fn(&Shard) -> u64>(&self, f: F) -> u64 {
        self.shards.iter().map(f).sum()
    }

    pub fn render(&self, stream: &Stream) -> String {
        let mut o = String::with_capacity(4096);
        o.push_str("# HELP hls_origin_requests_total HTTP requests by kind and status.\n# TYPE hls_origin_requests_total counter\n");
        for kind in Kind::ALL {
            for (si, st) in STATUSES.iter().enumerate() {
                let n = self.sum(|s| s.requests[kind as usize][si].load(Relaxed));
                if n > 0 || (*st == 200 && kind != Kind::Other) {
                    let _ = writeln!(
                        o,
                        "hls_origin_requests_total{{kind=\"{}\",status=\"{st}\"}} {n}",
                        kind.name()
                    );
                }
            }
        }
        o.push_str("# HELP hls_origin_response_bytes_total Body bytes sent by kind.\n# TYPE hls_origin_response_bytes_total counter\n");
        for kind in Kind::ALL {
            let n = self.sum(|s| s.bytes[kind as usize].load(Relaxed));
            let _ = writeln!(
                o,
                "hls_origin_response_bytes_total{{kind=\"{}\"}} {n}",
                kind.name()
            );
        }
        let inflight: i64 = self.shards.iter().map(|s| s.in_flight.load(Relaxed)).sum();
        let _ = writeln!(o, "# HELP hls_origin_requests_in_flight Requests being served.\n# TYPE hls_origin_requests_in_flight gauge\nhls_origin_requests_in_flight {inflight}");
        o.push_str("# HELP hls_origin_request_duration_seconds Time from request parsed to response written.\n# TYPE hls_origin_request_duration_seconds histogram\n");
        let mut cum = 0;
        for (b, le) in BUCKETS.iter().enumerate() {
            cum += self.sum(|s| s.buckets[b].load(Relaxed));
            let _ = writeln!(
                o,
                "hls_origin_request_duration_seconds_bucket{{le=\"{le}\"}} {cum}"
            );
        }
        let count = self.sum(|s| s.latency_count.load(Relaxed));
        let sum_ns = self.sum(|s| s.latency_sum_ns.load(Relaxed));
        let _ = writeln!(
            o,
            "hls_origin_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            o,
            "hls_origin_request_duration_seconds_sum {}",
            sum_ns as f64 / 1e9
        );
        let _ = writeln!(o, "hls_origin_request_duration_seconds_count {count}");
        let _ = writeln!(o, "# HELP hls_origin_connections_total Accepted TCP connections.\n# TYPE hls_origin_connections_total counter\nhls_origin_connections_total {}", self.connections.load(Relaxed));
        o.push_str("# HELP hls_origin_connections_closed_total Connections the server closed, by the timeout that closed them.\n# TYPE hls_origin_connections_closed_total counter\n");
        for r in CloseReason::ALL {
            let _ = writeln!(
                o,
                "hls_origin_connections_closed_total{{reason=\"{}\"}} {}",
                r.name(),
                self.closed[r as usize].load(Relaxed)
            );
        }
        let _ = writeln!(o, "# HELP hls_origin_connections_refused_total Connections refused (503) because --max-connections were open.\n# TYPE hls_origin_connections_refused_total counter\nhls_origin_connections_refused_total {}", self.refused.load(Relaxed));
        let _ = writeln!(o, "# HELP hls_origin_accept_errors_total Failed accept(2) calls (for example EMFILE).\n# TYPE hls_origin_accept_errors_total counter\nhls_origin_accept_errors_total {}", self.accept_errors.load(Relaxed));
        let _ = writeln!(o, "# HELP hls_origin_tls_handshake_errors_total TLS handshakes that failed (--tls-cert; wrong CA, plain http on the TLS port, ...).\n# TYPE hls_origin_tls_handshake_errors_total counter\nhls_origin_tls_handshake_errors_total {}", self.tls_handshake_errors.load(Relaxed));
        let _ = writeln!(o, "# HELP hls_origin_connections_open Client connections open now.\n# TYPE hls_origin_connections_open gauge\nhls_origin_connections_open {}", self.open.load(Relaxed));
        let _ = writeln!(o, "# HELP hls_origin_connections_max The connection limit in force (--max-connections).\n# TYPE hls_origin_connections_max gauge\nhls_origin_connections_max {}", self.max_connections.load(Relaxed));
        let _ = writeln!(o, "# HELP hls_origin_access_log_dropped_total Access-log lines dropped because the writer was behind.\n# TYPE hls_origin_access_log_dropped_total counter\nhls_origin_access_log_dropped_total {}", self.access_log_dropped.load(Relaxed));
        o.push_str("# HELP hls_origin_media_sequence Current media sequence number per variant.\n# TYPE hls_origin_media_sequence gauge\n");
        let ms = stream.media_sequence();
        for v in &stream.variants {
            let _ = writeln!(
                o,
                "hls_origin_media_sequence{{variant=\"{}\"}} {ms}",
                v.info.name
            );
        }
        o
    }
}
