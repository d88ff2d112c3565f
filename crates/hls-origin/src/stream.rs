//! The live stream: a wall-clock timeline, playlists and the per-variant segment cache.
//!
//! Segment `n` of every variant covers `[n·D, (n+1)·D)` of wall-clock time since the Unix epoch
//! (UTC), and its `EXT-X-PROGRAM-DATE-TIME` is `n·D`. Numbering therefore depends on the clock
//! only, not on when the process started: two origins with the same settings and synchronised
//! clocks serve the same playlist and byte-identical segments, so the origin can run as
//! stateless replicas behind a load balancer. At any instant the live edge is the newest
//! *complete* segment `L = ⌊now/D⌋ - 1`; the playlist lists `L-list_size+1 ..= L`, and segments
//! stay servable `delete_threshold` segments longer; older ones and not-yet-complete ones answer
//! 404. If the system clock steps backwards the window holds still (it never moves backwards
//! within a process) until the clock catches up; a step forwards skips segments. Segment
//! bodies are built one segment duration before the window lists them (or on first request)
//! and cached (in a memfd, see [`crate::body`]; a response is a refcount clone, never a copy)
//! until they expire.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::body::Body;
use crate::config::{Settings, Variant};
use crate::source::SourceLoop;
use crate::ts::SegmentPlan;

/// Where a variant's segments come from.
pub enum Content {
    /// The generated test pattern and tone.
    Generated(SegmentPlan),
    /// The user's own segments, looped (`--source`).
    Source(Arc<SourceLoop>),
}

impl Content {
    pub fn segment(&self, seq: u64) -> Bytes {
        match self {
            Content::Generated(p) => p.segment(seq),
            Content::Source(s) => s.segment(seq),
        }
    }
}

/// Segment start times: a fixed duration, or the durations of a source loop.
enum Timing {
    Fixed(u128),
    Loop {
        /// Start of each file in the loop, and the loop's length, in ns.
        offsets: Vec<u128>,
        length: u128,
    },
}

impl Timing {
    /// Start of segment `n` in ns since the Unix epoch.
    fn start(&self, n: u64) -> u128 {
        match self {
            Timing::Fixed(d) => n as u128 * d,
            Timing::Loop { offsets, length } => {
                let c = offsets.len() as u64;
                (n / c) as u128 * length + offsets[(n % c) as usize]
            }
        }
    }

    /// The longest segment duration, in ns.
    fn longest(&self) -> u128 {
        match self {
            Timing::Fixed(d) => *d,
            Timing::Loop { offsets, length } => (0..offsets.len())
                .map(|i| offsets.get(i + 1).unwrap_or(length) - offsets[i])
                .max()
                .unwrap_or(*length),
        }
    }

    /// The segment under way at `t` ns since the Unix epoch.
    fn at(&self, t: u128) -> u64 {
        match self {
            Timing::Fixed(d) => (t / d) as u64,
            Timing::Loop { offsets, length } => {
                let k = (t / length) as u64;
                let r = t % length;
                let i = offsets.partition_point(|&o| o <= r).saturating_sub(1);
                k * offsets.len() as u64 + i as u64
            }
        }
    }
}

pub struct VariantStream {
    /// Unique in the process, so a thread's playlist copies cannot be taken for another
    /// stream's (tests run several in one process).
    id: u64,
    pub info: Variant,
    /// URL prefix: "/" for a single variant, "/<name>/" otherwise.
    pub prefix: String,
    pub content: Content,
    segments: RwLock<BTreeMap<u64, Body>>,
    playlist: RwLock<Option<(u64, Bytes)>>,
}

static NEXT_VARIANT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's copy of each variant's current playlist: (variant id, media sequence, body).
    static LOCAL_PLAYLISTS: RefCell<Vec<(u64, u64, Bytes)>> = const { RefCell::new(Vec::new()) };
}

pub struct Stream {
    pub settings: Settings,
    pub variants: Vec<VariantStream>,
    pub master: Bytes,
    timing: Timing,
    /// Highest media sequence handed out, so a backwards clock step cannot rewind the window.
    high_water: AtomicU64,
}

/// What a request path names.
pub enum Resource<'a> {
    Master,
    Playlist(&'a VariantStream),
    Segment(&'a VariantStream, u64),
}

impl Stream {
    pub fn new(settings: Settings, source: Option<SourceLoop>) -> Self {
        let many = settings.variants.list.len() > 1 && source.is_none();
        let (variants, timing): (Vec<VariantStream>, Timing) = match source {
            None => (
                settings
                    .variants
                    .list
                    .iter()
                    .map(|v| VariantStream {
                        id: NEXT_VARIANT_ID.fetch_add(1, Ordering::Relaxed),
                        info: v.clone(),
                        prefix: if many {
                            format!("/{}/", v.name)
                        } else {
                            "/".into()
                        },
                        content: Content::Generated(SegmentPlan::new(
                            v,
                            settings.segment_duration,
                            settings.fps,
                        )),
                        segments: RwLock::new(BTreeMap::new()),
                        playlist: RwLock::new(None),
                    })
                    .collect(),
                Timing::Fixed(((settings.segment_duration * 1e9).round() as u128).max(1)),
            ),
            Some(src) => {
                let ns = |ticks: u64| ticks as u128 * 100_000 / 9;
                let timing = Timing::Loop {
                    offsets: src.offsets.iter().map(|&o| ns(o)).collect(),
                    length: ns(src.loop_ticks).max(1),
                };
                let info = Variant {
                    name: "source".into(),
                    width: 0,
                    height: 0,
                    video_kbps: src.avg_bps / 1000,
                    max_kbps: src.max_bps / 1000,
                    buffer_kbps: 0,
                    audio_kbps: 0,
                };
                let v = VariantStream {
                    id: NEXT_VARIANT_ID.fetch_add(1, Ordering::Relaxed),
                    info,
                    prefix: "/".into(),
                    content: Content::Source(Arc::new(src)),
                    segments: RwLock::new(BTreeMap::new()),
                    playlist: RwLock::new(None),
                };
                (vec![v], timing)
            }
        };
        let master = Bytes::from(master_playlist(&settings, &variants));
        Stream {
            settings,
            variants,
            master,
            timing,
            high_water: AtomicU64::new(0),
        }
    }

    /// Media sequence number (first segment of the window) now: the window ends with the newest
    /// segment that is complete by the wall clock.
    pub fn media_sequence(&self) -> u64 {
        let in_progress = self.timing.at(unix_ns());
        let ms = in_progress.saturating_sub(self.settings.list_size);
        // A plain load on every request: the read-modify-write (which takes the cache line
        // away from the other cores) only when the window has moved.
        let prev = self.high_water.load(Ordering::Relaxed);
        if ms <= prev {
            return prev;
        }
        self.high_water.fetch_max(ms, Ordering::Relaxed).max(ms)
    }

    /// Time until the window next moves.
    pub fn until_next(&self) -> Duration {
        let now = unix_ns();
        let next = self.timing.start(self.timing.at(now) + 1);
        Duration::from_nanos(next.saturating_sub(now) as u64)
    }

    /// Start of segment `seq` in ms since the Unix epoch (its EXT-X-PROGRAM-DATE-TIME).
    pub fn segment_start_ms(&self, seq: u64) -> i128 {
        (self.timing.start(seq) / 1_000_000) as i128
    }

    /// Servable segment range (inclusive) for a given media sequence.
    fn servable(&self, ms: u64) -> (u64, u64) {
        (
            ms.saturating_sub(self.settings.delete_threshold),
            ms + self.settings.list_size - 1,
        )
    }

    /// Resolve a URL path.
    pub fn route(&self, path: &str) -> Option<Resource<'_>> {
        let name = path.strip_prefix('/')?;
        if name == self.settings.master_name {
            return Some(Resource::Master);
        }
        for v in &self.variants {
            if let Some(file) = path.strip_prefix(v.prefix.as_str()) {
                if file == self.settings.playlist_name {
                    return Some(Resource::Playlist(v));
                }
                if let Some(seq) = self.settings.segment_pattern.parse(file) {
                    return Some(Resource::Segment(v, seq));
                }
            }
        }
        None
    }

    /// The media playlist of a variant, rendered once per media sequence.
    ///
    /// Each worker thread keeps its own copy of the current rendering, so a request touches
    /// no memory another core writes (no lock, no shared reference count): the shared copy is
    /// read once per thread per window move. See docs/origin-performance.md.
    pub fn playlist(&self, v: &VariantStream) -> Bytes {
        let ms = self.media_sequence();
        LOCAL_PLAYLISTS.with(|local| {
            let mut local = local.borrow_mut();
            if let Some((_, _, b)) = local.iter().find(|(id, s, _)| *id == v.id && *s == ms) {
                return b.clone();
            }
            let shared = self.shared_playlist(v, ms);
            // A private copy: clones of it count references on this thread's allocation only.
            let mine = Bytes::copy_from_slice(&shared);
            local.retain(|(id, _, _)| *id != v.id);
            local.push((v.id, ms, mine.clone()));
            mine
        })
    }

    /// The playlist for `ms` from the variant's shared cache, rendered by the first thread
    /// that needs it.
    fn shared_playlist(&self, v: &VariantStream, ms: u64) -> Bytes {
        if let Some((s, b)) = &*v.playlist.read().unwrap() {
            if *s == ms {
                return b.clone();
            }
        }
        let mut cached = v.playlist.write().unwrap();
        match &*cached {
            Some((s, b)) if *s == ms => b.clone(),
            _ => {
                let body = Bytes::from(self.media_playlist(ms));
                *cached = Some((ms, body.clone()));
                body
            }
        }
    }

    /// A segment body, or None when it is expired or not yet produced.
    pub fn segment(&self, v: &VariantStream, seq: u64) -> Option<Body> {
        let (lo, hi) = self.servable(self.media_sequence());
        if seq < lo || seq > hi {
            return None;
        }
        Some(self.cached_or_built(v, seq, lo))
    }

    /// Segment `seq` from the cache, built (and cached) if it is not there yet; whatever is
    /// older than `lo` leaves the cache.
    fn cached_or_built(&self, v: &VariantStream, seq: u64, lo: u64) -> Body {
        if let Some(b) = v.segments.read().unwrap().get(&seq) {
            return b.clone();
        }
        let body = Body::seal(v.content.segment(seq));
        let mut map = v.segments.write().unwrap();
        let body = map.entry(seq).or_insert(body).clone();
        // Drop what has expired.
        *map = map.split_off(&lo);
        body
    }

    /// Drop expired segments and build the next segment of each variant, one segment
    /// duration before the window lists it (called on every tick), so no request for the
    /// newest segment waits for it to be built, and render the new playlist.
    pub fn advance(&self) {
        let ms = self.media_sequence();
        let (lo, hi) = self.servable(ms);
        for v in &self.variants {
            {
                let mut map = v.segments.write().unwrap();
                *map = map.split_off(&lo);
            }
            let _ = self.cached_or_built(v, hi, lo);
            let _ = self.cached_or_built(v, hi + 1, lo);
            let _ = self.playlist(v);
        }
    }

    fn media_playlist(&self, ms: u64) -> String {
        let s = &self.settings;
        let dur = |seq: u64| (self.timing.start(seq + 1) - self.timing.start(seq)) as f64 / 1e9;
        // The longest segment there can ever be, so the value never changes.
        let d = self.timing.longest() as f64 / 1e9;
        let target = d.round().max(d.ceil()).max(1.0) as u64;
        let mut out = String::with_capacity(128 + 96 * s.list_size as usize);
        out.push_str("#EXTM3U\n#EXT-X-VERSION:3\n");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{ms}");
        out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        for seq in ms..ms + s.list_size {
            let start = rfc3339_ms(self.segment_start_ms(seq));
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{start}");
            let _ = writeln!(out, "#EXTINF:{:.3},", dur(seq));
            out.push_str(&s.segment_pattern.format(seq));
            out.push('\n');
        }
        out
    }
}

/// Wall-clock time in ns since the Unix epoch (0 before 1970).
fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// CODECS attribute value for a variant, when known.
pub fn codecs(v: &VariantStream) -> Option<String> {
    match &v.content {
        Content::Generated(p) => Some(format!("avc1.42c0{:02x},mp4a.40.2", p.level_idc)),
        Content::Source(s) => s.codecs.clone(),
    }
}

fn master_playlist(s: &Settings, variants: &[VariantStream]) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for v in variants {
        let i = &v.info;
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={}",
            (i.max_kbps + i.audio_kbps) * 1000,
            (i.video_kbps + i.audio_kbps) * 1000,
        );
        // A source's resolution and frame rate are not read from its bitstream: left out.
        if matches!(v.content, Content::Generated(_)) {
            let _ = write!(out, ",RESOLUTION={}x{}", i.width, i.height);
        }
        if let Some(c) = codecs(v) {
            let _ = write!(out, ",CODECS=\"{c}\"");
        }
        if matches!(v.content, Content::Generated(_)) {
            let _ = write!(out, ",FRAME-RATE={:.3}", s.fps);
        }
        out.push('\n');
        let _ = writeln!(out, "{}{}", &v.prefix[1..], s.playlist_name);
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from milliseconds since the Unix epoch.
pub fn rfc3339_ms(ms: i128) -> String {
    let secs = ms.div_euclid(1000) as i64;
    let milli = ms.rem_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_segment_is_built_before_the_window_lists_it() {
        let argv: Vec<String> = [
            "hls-origin",
            "--list-size=3",
            "--delete-threshold=2",
            "--variants=360p:640x360:500k/550k/1000k:64k",
        ]
        .map(String::from)
        .to_vec();
        let settings = crate::config::parse_from(&argv).unwrap().0.settings;
        let stream = Stream::new(settings, None);
        // advance() builds for the window it sees: retry if the window moved meanwhile.
        let ms = loop {
            let before = stream.media_sequence();
            stream.advance();
            if stream.media_sequence() == before {
                break before;
            }
        };
        let (lo, hi) = stream.servable(ms);
        let v = &stream.variants[0];
        let cached: Vec<u64> = v.segments.read().unwrap().keys().copied().collect();
        // The newest listed one and the next; nothing expired, nothing further ahead.
        assert!(
            cached.contains(&hi) && cached.contains(&(hi + 1)),
            "{cached:?}"
        );
        assert!(cached.iter().all(|&s| s >= lo && s <= hi + 1), "{cached:?}");
        // Not servable before its time, though it is built (unless the window just moved).
        let early = stream.segment(v, hi + 1);
        if stream.media_sequence() == ms {
            assert!(early.is_none());
        }
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_709_210_096_123), "2024-02-29T12:34:56.123Z");
    }
}
