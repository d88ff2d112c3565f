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
//! within a process) until the clock catches up; a step forwards skips segments. Segment bodies are built on first request and cached (in a memfd, see
//! [`crate::body`]; a response is a refcount clone, never a copy) until they expire.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::body::Body;
use crate::config::{Settings, Variant};
use crate::ts::SegmentPlan;

pub struct VariantStream {
    pub info: Variant,
    /// URL prefix: "/" for a single variant, "/<name>/" otherwise.
    pub prefix: String,
    pub plan: SegmentPlan,
    segments: RwLock<BTreeMap<u64, Body>>,
    playlist: RwLock<Option<(u64, Bytes)>>,
}

pub struct Stream {
    pub settings: Settings,
    pub variants: Vec<VariantStream>,
    pub master: Bytes,
    seg_ns: u128,
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
    pub fn new(settings: Settings) -> Self {
        let many = settings.variants.list.len() > 1;
        let variants: Vec<VariantStream> = settings
            .variants
            .list
            .iter()
            .map(|v| VariantStream {
                info: v.clone(),
                prefix: if many {
                    format!("/{}/", v.name)
                } else {
                    "/".into()
                },
                plan: SegmentPlan::new(v, settings.segment_duration, settings.fps),
                segments: RwLock::new(BTreeMap::new()),
                playlist: RwLock::new(None),
            })
            .collect();
        let seg_ns = ((settings.segment_duration * 1e9).round() as u128).max(1);
        let master = Bytes::from(master_playlist(&settings, &variants));
        Stream {
            settings,
            variants,
            master,
            seg_ns,
            high_water: AtomicU64::new(0),
        }
    }

    /// Media sequence number (first segment of the window) now: the window ends with the newest
    /// segment that is complete by the wall clock.
    pub fn media_sequence(&self) -> u64 {
        let in_progress = (unix_ns() / self.seg_ns) as u64;
        let ms = in_progress.saturating_sub(self.settings.list_size);
        let prev = self.high_water.fetch_max(ms, Ordering::Relaxed);
        ms.max(prev)
    }

    /// Time until the window next moves.
    pub fn until_next(&self) -> Duration {
        Duration::from_nanos((self.seg_ns - unix_ns() % self.seg_ns) as u64)
    }

    /// Start of segment `seq` in ms since the Unix epoch (its EXT-X-PROGRAM-DATE-TIME).
    pub fn segment_start_ms(&self, seq: u64) -> i128 {
        (seq as u128 * self.seg_ns / 1_000_000) as i128
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

    /// The media playlist of a variant, cached until the window moves.
    pub fn playlist(&self, v: &VariantStream) -> Bytes {
        let ms = self.media_sequence();
        if let Some((s, b)) = &*v.playlist.read().unwrap() {
            if *s == ms {
                return b.clone();
            }
        }
        let body = Bytes::from(self.media_playlist(ms));
        *v.playlist.write().unwrap() = Some((ms, body.clone()));
        body
    }

    /// A segment body, or None when it is expired or not yet produced.
    pub fn segment(&self, v: &VariantStream, seq: u64) -> Option<Body> {
        let (lo, hi) = self.servable(self.media_sequence());
        if seq < lo || seq > hi {
            return None;
        }
        if let Some(b) = v.segments.read().unwrap().get(&seq) {
            return Some(b.clone());
        }
        let body = Body::seal(v.plan.segment(seq));
        let mut map = v.segments.write().unwrap();
        let body = map.entry(seq).or_insert(body).clone();
        // Drop what has expired.
        *map = map.split_off(&lo);
        Some(body)
    }

    /// Drop expired segments and pre-build the newest one of each variant (called on every tick).
    pub fn advance(&self) {
        let ms = self.media_sequence();
        let (lo, hi) = self.servable(ms);
        for v in &self.variants {
            {
                let mut map = v.segments.write().unwrap();
                *map = map.split_off(&lo);
            }
            let _ = self.segment(v, hi);
            let _ = self.playlist(v);
        }
    }

    fn media_playlist(&self, ms: u64) -> String {
        let s = &self.settings;
        let d = s.segment_duration;
        let target = d.round().max(d.ceil()).max(1.0) as u64;
        let mut out = String::with_capacity(128 + 96 * s.list_size as usize);
        out.push_str("#EXTM3U\n#EXT-X-VERSION:3\n");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{ms}");
        out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        for seq in ms..ms + s.list_size {
            let start = rfc3339_ms(self.segment_start_ms(seq));
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{start}");
            let _ = writeln!(out, "#EXTINF:{d:.3},");
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

/// CODECS attribute value for a variant.
pub fn codecs(v: &VariantStream) -> String {
    format!("avc1.42c0{:02x},mp4a.40.2", v.plan.level_idc)
}

fn master_playlist(s: &Settings, variants: &[VariantStream]) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for v in variants {
        let i = &v.info;
        let _ = writeln!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},RESOLUTION={}x{},CODECS=\"{}\",FRAME-RATE={:.3}",
            (i.max_kbps + i.audio_kbps) * 1000,
            (i.video_kbps + i.audio_kbps) * 1000,
            i.width,
            i.height,
            codecs(v),
            s.fps
        );
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
    fn dates() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_709_210_096_123), "2024-02-29T12:34:56.123Z");
    }
}
