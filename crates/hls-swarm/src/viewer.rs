//! One simulated live viewer: master playlist → variant → the live loop a player runs.
//!
//! Loop (RFC 8216 §6.3.4): reload the media playlist one target duration after the last load
//! began when it changed, half of it when it did not; fetch new segments in order, starting
//! three segments from the live edge; retry a failed segment `segment_retries` times, then skip
//! it; a failed playlist load ends the session and, with `reconnect`, a new one starts after a
//! jittered exponential backoff capped at `reconnect_delay_max`.
//!
//! Stalls: the viewer keeps a playback clock. The first segment starts playback; each
//! downloaded segment extends the buffer by its duration. A segment that finishes after the
//! buffer ran out (it was due and had not arrived) is a stall, and playback restarts from it.
//!
//! What the viewer feels (src/live.rs): each downloaded segment gives its latency behind live
//! (completion minus the end of its program date-time) and its throughput against the
//! variant's BANDWIDTH; the first one the time to first segment; each media playlist load the
//! staleness (time since the playlist last changed, in target durations). With
//! `--follow-redirects` the URL that answered a playlist is the base of the URIs in it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep, sleep_until, Instant};

use crate::config::VariantChoice;
use crate::http::{Client, Connector, HttpError, Sink, Timeouts, Url};
use crate::m3u8::{self, Media, Playlist, Variant};
use crate::metrics::{Kind, Metrics};

/// Segments behind the live edge a new viewer starts at (as players do).
pub const LIVE_EDGE_SEGMENTS: u64 = 3;
/// Largest playlist accepted (a larger one is a `too_large` error, not unbounded memory).
pub const MAX_PLAYLIST: usize = 1024 * 1024;
/// Largest segment accepted (bytes are counted, not kept, but an endless body is an error).
pub const MAX_SEGMENT: u64 = 64 * 1024 * 1024;
/// Most content a viewer downloads ahead of its playback clock (hls.js's default).
const MAX_BUFFER: Duration = Duration::from_secs(30);
/// First reconnect delay; doubles up to `reconnect_delay_max`.
const BACKOFF_START: Duration = Duration::from_millis(500);

/// What every viewer shares.
pub struct Shared {
    pub url: Url,
    pub variant: VariantChoice,
    pub timeouts: Timeouts,
    pub reconnect: bool,
    pub reconnect_delay_max: Duration,
    pub segment_retries: u32,
    pub metrics: Arc<Metrics>,
    /// TLS and redirect policy, shared by every viewer's client.
    pub connector: Arc<Connector>,
}

/// A small fast PRNG (SplitMix64) so viewers do not need a crate or a lock for jitter.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ t)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How a session ended without error.
enum End {
    /// The playlist had #EXT-X-ENDLIST and every segment was fetched.
    EndList,
}

/// Why a session failed.
enum Failure {
    Http(Kind, HttpError),
    Parse(Kind, String),
}

struct State {
    /// Next media sequence number to fetch (kept across reconnects, like a player resuming).
    next_msn: Option<u64>,
    /// When the downloaded content runs out (None: playback not started).
    buffered_until: Option<Instant>,
    /// Whether the session got a playlist (resets the backoff).
    healthy: bool,
    /// When this viewer started, until its first segment arrived (the time to first segment
    /// is recorded once).
    first_segment_pending: Option<Instant>,
    /// The variant this session watches, for the time series (None between sessions).
    watching: Option<crate::metrics::Watching>,
}

pub async fn run(id: u64, shared: Arc<Shared>) {
    let m = shared.metrics.clone();
    let _active = m.viewer_started();
    let mut rng = Rng::new(id + 1);
    let mut client = Client::new(shared.timeouts, shared.connector.clone()).spread_by(id);
    let mut state = State {
        next_msn: None,
        buffered_until: None,
        healthy: false,
        first_segment_pending: Some(Instant::now()),
        watching: None,
    };
    let mut backoff = BACKOFF_START;
    loop {
        state.healthy = false;
        match session(id, &shared, &mut client, &mut state, &mut rng).await {
            Ok(End::EndList) => {
                tracing::debug!(viewer = id, "stream ended (#EXT-X-ENDLIST)");
                return;
            }
            Err(f) => {
                let (kind, msg) = match &f {
                    Failure::Http(k, e) => (*k, e.to_string()),
                    Failure::Parse(k, e) => (*k, e.clone()),
                };
                tracing::debug!(viewer = id, ?kind, "playlist failed: {msg}");
                if let Some(w) = state.watching.take() {
                    w.error();
                }
            }
        }
        client.close();
        if !shared.reconnect {
            tracing::debug!(viewer = id, "giving up (reconnect off)");
            return;
        }
        if state.healthy {
            backoff = BACKOFF_START;
        }
        let cap = shared.reconnect_delay_max.max(Duration::from_millis(1));
        let d = backoff.min(cap);
        // Jitter: uniformly between half and all of the delay.
        let delay = d.mul_f64(0.5 + 0.5 * rng.unit());
        backoff = (backoff * 2).min(cap);
        m.reconnects
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if shared.reconnect_delay_max.is_zero() {
            continue;
        }
        sleep(delay).await;
    }
}

/// Load a playlist; returns it and the URL that answered (another one after a redirect).
async fn fetch_playlist(
    client: &mut Client,
    m: &Metrics,
    url: &Url,
    kind: Kind,
    buf: &mut Vec<u8>,
) -> Result<(Playlist, Option<Url>), Failure> {
    buf.clear();
    m.request(kind);
    let res = client.get(url, Sink::Collect(buf, MAX_PLAYLIST)).await;
    let answered = m.redirects_followed(kind, client.take_redirect());
    match res {
        Ok(n) => {
            m.add_bytes(kind, n);
            let text = String::from_utf8_lossy(buf);
            match m3u8::parse(&text) {
                Ok(p) => Ok((p, answered)),
                Err(e) => {
                    m.error(kind, "parse");
                    Err(Failure::Parse(kind, format!("{url}: {e}")))
                }
            }
        }
        Err(e) => {
            m.http_error(kind, &e);
            Err(Failure::Http(kind, e))
        }
    }
}

fn choose<'a>(
    variants: &'a [Variant],
    choice: VariantChoice,
    id: u64,
    rng: &mut Rng,
) -> &'a Variant {
    match choice {
        VariantChoice::All => &variants[(id % variants.len() as u64) as usize],
        VariantChoice::First => &variants[0],
        VariantChoice::Highest => variants
            .iter()
            .max_by_key(|v| v.bandwidth)
            .expect("non-empty"),
        VariantChoice::Lowest => variants
            .iter()
            .min_by_key(|v| v.bandwidth)
            .expect("non-empty"),
        VariantChoice::Random => &variants[(rng.next_u64() % variants.len() as u64) as usize],
    }
}

async fn session(
    id: u64,
    shared: &Shared,
    client: &mut Client,
    state: &mut State,
    rng: &mut Rng,
) -> Result<End, Failure> {
    let m = &*shared.metrics;
    let mut buf = Vec::new();
    let mut load_started = Instant::now();
    let (first, answered) = fetch_playlist(client, m, &shared.url, Kind::Master, &mut buf).await?;
    let (media_url, mut media, bandwidth) = match first {
        Playlist::Media(media) => {
            state.watching = Some(m.per_variant.watch(&shared.url.to_string()));
            (shared.url.clone(), Some(media), None)
        }
        Playlist::Master(variants) => {
            let v = choose(&variants, shared.variant, id, rng);
            let url = answered
                .as_ref()
                .unwrap_or(&shared.url)
                .join(&v.uri)
                .map_err(|e| Failure::Parse(Kind::Master, e))?;
            tracing::debug!(viewer = id, variant = %url, "variant chosen");
            m.variant_chosen(&url.to_string());
            state.watching = Some(m.per_variant.watch(&url.to_string()));
            (url, None, Some(v.bandwidth).filter(|b| *b > 0))
        }
    };
    // Segment URIs are relative to the URL that answered the playlist: another one than
    // `media_url` only after a redirect.
    let mut redirected_to = if media.is_some() {
        answered.map(Box::new)
    } else {
        None
    };
    let mut last_seen: Option<(u64, usize)> = None;
    let mut last_change = Instant::now();
    loop {
        let media_pl = match media.take() {
            Some(p) => p,
            None => {
                load_started = Instant::now();
                let (pl, answered) =
                    fetch_playlist(client, m, &media_url, Kind::Playlist, &mut buf).await?;
                redirected_to = answered.map(Box::new);
                match pl {
                    Playlist::Media(p) => p,
                    Playlist::Master(_) => {
                        m.error(Kind::Playlist, "parse");
                        return Err(Failure::Parse(
                            Kind::Playlist,
                            format!("{media_url}: a master playlist where a media playlist was expected"),
                        ));
                    }
                }
            }
        };
        state.healthy = true;
        if buf.capacity() > 64 * 1024 {
            buf = Vec::new();
        }
        let seen = (media_pl.media_sequence, media_pl.segments.len());
        let changed = last_seen != Some(seen);
        last_seen = Some(seen);
        let now = Instant::now();
        if changed {
            last_change = now;
        }
        m.live
            .stale
            .record((now - last_change).as_secs_f64() / media_pl.target_duration.max(0.001));
        let base_url = redirected_to.as_deref().unwrap_or(&media_url);
        fetch_new_segments(shared, client, state, base_url, &media_pl, bandwidth).await;
        if media_pl.endlist && state.next_msn > media_pl.last_msn() {
            return Ok(End::EndList);
        }
        sleep_until(load_started + media_pl.reload_after(changed)).await;
    }
}

async fn fetch_new_segments(
    shared: &Shared,
    client: &mut Client,
    state: &mut State,
    media_url: &Url,
    pl: &Media,
    bandwidth: Option<u64>,
) {
    let m = &*shared.metrics;
    let Some(last) = pl.last_msn() else { return };
    let first = pl.media_sequence;
    let mut next = match state.next_msn {
        // A new viewer starts near the live edge (or at the start of a finished stream).
        None if pl.endlist => first,
        None => (last + 1).saturating_sub(LIVE_EDGE_SEGMENTS).max(first),
        Some(n) if n < first => {
            // Fell out of the window (for example while the origin was down).
            m.segments_skipped
                .fetch_add(first - n, std::sync::atomic::Ordering::Relaxed);
            first
        }
        // The sequence went backwards: the origin restarted. Rejoin at the live edge.
        Some(n) if n > last + 1 => {
            tracing::debug!(
                from = n,
                to = last,
                "media sequence went backwards; rejoining live edge"
            );
            (last + 1).saturating_sub(LIVE_EDGE_SEGMENTS).max(first)
        }
        Some(n) => n,
    };
    while next <= last {
        // Like a player, do not buffer more than MAX_BUFFER ahead (only a finished stream or
        // a very long window gets there; a live edge start holds three segments).
        if let Some(b) = state.buffered_until {
            if b > Instant::now() + MAX_BUFFER {
                sleep_until(b - MAX_BUFFER).await;
            }
        }
        let seg = &pl.segments[(next - first) as usize];
        let url = match media_url.join(&seg.uri) {
            Ok(u) => u,
            Err(_) => {
                m.error(Kind::Segment, "parse");
                next += 1;
                continue;
            }
        };
        let mut attempt = 0u32;
        loop {
            m.request(Kind::Segment);
            let started = Instant::now();
            let res = client
                .get(
                    &url,
                    Sink::Count(&m.bytes[Kind::Segment as usize], MAX_SEGMENT),
                )
                .await;
            m.redirects_followed(Kind::Segment, client.take_redirect());
            match res {
                Ok(bytes) => {
                    let done = Instant::now();
                    m.segment_latency(done - started);
                    m.segment_done(seg, bytes, done - started, bandwidth);
                    if let Some(started) = state.first_segment_pending.take() {
                        m.live.first_segment.record((done - started).as_secs_f64());
                    }
                    let dur = seg.play_time();
                    if let Some(w) = &state.watching {
                        let stalled = matches!(state.buffered_until, Some(b) if done > b);
                        w.segment_done(bytes, done - started, stalled);
                    }
                    state.buffered_until = Some(match state.buffered_until {
                        Some(b) if done > b => {
                            m.stalls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            done + dur
                        }
                        Some(b) => b + dur,
                        None => done + dur,
                    });
                    break;
                }
                Err(e) => {
                    m.http_error(Kind::Segment, &e);
                    if let Some(w) = &state.watching {
                        w.error();
                    }
                    tracing::debug!(segment = %url, "segment failed: {e}");
                    if attempt >= shared.segment_retries {
                        m.segments_skipped
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        break;
                    }
                    attempt += 1;
                    m.segment_retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    sleep(Duration::from_millis(100 << (attempt - 1).min(4))).await;
                }
            }
        }
        next += 1;
        state.next_msn = Some(next);
    }
    state.next_msn = Some(next);
}
