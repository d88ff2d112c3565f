//! The part of M3U8 (RFC 8216) a live viewer needs: a master playlist's variants and a media
//! playlist's target duration, media sequence, segments (with their program date-time, for
//! latency behind live) and end marker.

/// One `#EXT-X-STREAM-INF` entry of a master playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub uri: String,
    pub bandwidth: u64,
    pub resolution: Option<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub uri: String,
    pub duration: f64,
    /// Wall-clock start of the segment in ms since the Unix epoch: its
    /// `#EXT-X-PROGRAM-DATE-TIME`, or the previous segment's plus that one's duration
    /// (RFC 8216 §4.3.2.6); None when the playlist has none before it.
    pub program_date_ms: Option<f64>,
}

impl Segment {
    /// The play time this segment adds to a viewer's buffer (its #EXTINF).
    pub fn play_time(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.duration.max(0.0))
    }

    /// Wall-clock end of the segment (program date-time + duration), ms since the epoch.
    pub fn end_ms(&self) -> Option<f64> {
        self.program_date_ms.map(|t| t + self.duration * 1000.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Media {
    pub target_duration: f64,
    pub media_sequence: u64,
    pub segments: Vec<Segment>,
    pub endlist: bool,
}

impl Media {
    /// When a player reloads this playlist (RFC 8216 §6.3.4): one target duration after the
    /// last load began when it changed, half of it when it did not (at least 0.1 s).
    pub fn reload_after(&self, changed: bool) -> std::time::Duration {
        let target = std::time::Duration::from_secs_f64(self.target_duration.max(0.1));
        if changed {
            target
        } else {
            target / 2
        }
    }

    /// Media sequence number of the last segment (None when empty).
    pub fn last_msn(&self) -> Option<u64> {
        (self.media_sequence + self.segments.len() as u64)
            .checked_sub(1)
            .filter(|_| !self.segments.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Playlist {
    Master(Vec<Variant>),
    Media(Media),
}

/// Longest target or segment duration accepted, in seconds (a day). Longer, infinite, NaN or
/// negative durations are errors: turned into a reload or play time they panicked
/// (fuzz/regressions/swarm_m3u8-extinf-duration-overflow).
pub const MAX_DURATION_SECS: f64 = 86_400.0;

fn duration(v: &str, tag: &str) -> Result<f64, String> {
    match v.trim().parse::<f64>() {
        Ok(d) if (0.0..=MAX_DURATION_SECS).contains(&d) => Ok(d),
        _ => Err(format!(
            "bad {tag} `{v}`: seconds from 0 to {MAX_DURATION_SECS}"
        )),
    }
}

pub fn parse(text: &str) -> Result<Playlist, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some("#EXTM3U") {
        return Err("not an M3U8 playlist (no #EXTM3U first line)".into());
    }
    let mut variants = Vec::new();
    let mut pending_variant: Option<Variant> = None;
    let mut pending_duration: Option<f64> = None;
    let mut pending_pdt: Option<f64> = None;
    let mut discontinuity = false;
    let mut media = Media {
        target_duration: 0.0,
        media_sequence: 0,
        segments: Vec::new(),
        endlist: false,
    };
    let mut is_media = false;
    for line in lines {
        if let Some(attrs) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            let mut v = Variant {
                uri: String::new(),
                bandwidth: 0,
                resolution: None,
            };
            for (k, val) in attributes(attrs) {
                match k {
                    "BANDWIDTH" => v.bandwidth = val.parse().unwrap_or(0),
                    "RESOLUTION" => {
                        v.resolution = val
                            .split_once(['x', 'X'])
                            .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
                    }
                    _ => {}
                }
            }
            pending_variant = Some(v);
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            is_media = true;
            media.target_duration = duration(v, "#EXT-X-TARGETDURATION")?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            is_media = true;
            media.media_sequence = v.trim().parse().map_err(|_| "bad #EXT-X-MEDIA-SEQUENCE")?;
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            is_media = true;
            let d = v.split(',').next().unwrap_or("");
            pending_duration = Some(duration(d, "#EXTINF")?);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            is_media = true;
            // An unreadable date is ignored, as players do: the figure becomes unmeasurable.
            pending_pdt = parse_rfc3339_ms(v.trim());
        } else if line == "#EXT-X-DISCONTINUITY" {
            // The timeline may jump: extrapolating across it would be wrong.
            pending_pdt = None;
            discontinuity = true;
        } else if line == "#EXT-X-ENDLIST" {
            is_media = true;
            media.endlist = true;
        } else if line.starts_with('#') {
            // Other tags and comments do not matter to a viewer.
        } else if let Some(mut v) = pending_variant.take() {
            v.uri = line.to_string();
            variants.push(v);
        } else if let Some(duration) = pending_duration.take() {
            let extrapolated = media.segments.last().and_then(Segment::end_ms);
            let program_date_ms = pending_pdt
                .take()
                .or(extrapolated.filter(|_| !discontinuity));
            discontinuity = false;
            media.segments.push(Segment {
                uri: line.to_string(),
                duration,
                program_date_ms,
            });
        }
    }
    if !variants.is_empty() {
        Ok(Playlist::Master(variants))
    } else if is_media {
        // The last segment's number must exist (last_msn, and a viewer's next one after it).
        if media
            .media_sequence
            .checked_add(media.segments.len() as u64)
            .is_none()
        {
            return Err(format!(
                "#EXT-X-MEDIA-SEQUENCE {} + {} segments is beyond the largest sequence number",
                media.media_sequence,
                media.segments.len()
            ));
        }
        if media.target_duration <= 0.0 {
            media.target_duration = media
                .segments
                .iter()
                .map(|s| s.duration)
                .fold(0.0, f64::max)
                .max(1.0);
        }
        Ok(Playlist::Media(media))
    } else {
        Err("playlist has neither variants nor segments".into())
    }
}

/// An RFC 3339 date-time (`2026-12-02T06:12:22.250Z`, `…+01:00`, fraction optional) as ms
/// since the Unix epoch; None when it is not one.
pub fn parse_rfc3339_ms(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())
            .flatten()
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac = 0.0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        frac = format!("0.{}", &s[start..i]).parse().ok()?;
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if b.len() == i + 6 && b[i + 3] == b':' => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' {
                m
            } else {
                -m
            }
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs as f64 * 1000.0 + frac * 1000.0)
}

/// `KEY=value,KEY="quoted, value"` pairs.
fn attributes(s: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.push((key, value));
        rest = next.trim_start_matches(',');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_playlists_list_their_variants() {
        let text = "#EXTM3U\n#EXT-X-VERSION:3\n\
            #EXT-X-STREAM-INF:BANDWIDTH=2128000,RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\"\n720p/stream.m3u8\n\
            #EXT-X-STREAM-INF:BANDWIDTH=564000,RESOLUTION=640x360\n360p/stream.m3u8\n";
        let Playlist::Master(v) = parse(text).unwrap() else {
            panic!("not master")
        };
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].bandwidth, 2128000);
        assert_eq!(v[0].resolution, Some((1280, 720)));
        assert_eq!(v[1].uri, "360p/stream.m3u8");
    }

    #[test]
    fn media_playlists_give_sequence_and_segments() {
        let text = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:41\n\
            #EXTINF:2.000,\nseg00041.ts\n#EXTINF:2.000,\nseg00042.ts\n";
        let Playlist::Media(m) = parse(text).unwrap() else {
            panic!("not media")
        };
        assert_eq!(m.target_duration, 2.0);
        assert_eq!(m.media_sequence, 41);
        assert_eq!(m.segments.len(), 2);
        assert_eq!(m.last_msn(), Some(42));
        assert!(!m.endlist);
        assert!(parse("hello").is_err());
    }

    #[test]
    fn program_date_times_are_read_and_carried_forward() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:02.500Z"), Some(2500.0));
        assert_eq!(
            parse_rfc3339_ms("2000-03-01T01:00:00+01:00"),
            Some(951_868_800_000.0)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-12-02T06:12:22.000Z"),
            Some(1_796_191_942_000.0)
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-12-02T06:12:22",
            "2026-12-02T06:12:22.Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n\
            #EXTINF:2,\na.ts\n\
            #EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:14.000Z\n#EXTINF:2,\nb.ts\n\
            #EXTINF:1.5,\nc.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:2,\nd.ts\n";
        let Playlist::Media(m) = parse(text).unwrap() else {
            panic!("not media")
        };
        let pdt: Vec<_> = m.segments.iter().map(|s| s.program_date_ms).collect();
        assert_eq!(pdt, [None, Some(14000.0), Some(16000.0), None]);
        assert_eq!(m.segments[2].end_ms(), Some(17500.0));
    }

    #[test]
    fn durations_and_sequence_numbers_out_of_range_are_errors() {
        for bad in [
            "#EXTM3U\n#EXTINF:1e300,\ns.ts\n",
            "#EXTM3U\n#EXTINF:inf,\ns.ts\n",
            "#EXTM3U\n#EXTINF:NaN,\ns.ts\n",
            "#EXTM3U\n#EXTINF:-2,\ns.ts\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:99999999999999999999\n",
            "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:18446744073709551615\n#EXTINF:2,\ns.ts\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let Playlist::Media(m) =
            parse("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:18446744073709551614\n#EXTINF:2,\ns.ts\n")
                .unwrap()
        else {
            panic!("not media")
        };
        assert_eq!(m.last_msn(), Some(u64::MAX - 1));
    }
}
