//! `--source DIR`: the user's own pre-encoded MPEG-TS segments as a looping live stream.
//!
//! The `*.ts` files of the directory, in name order, are one loop of length `L` (the sum of
//! their durations, from their timestamps). Segment `n` of the live stream is file `n mod N` of
//! loop `k = n div N`, and starts `k·L + offset(file)` after the Unix epoch, so numbering follows
//! the wall clock as for the generated stream and replicas agree. Each served copy is rewritten:
//! PTS, DTS and PCR are shifted by `k·L − start(file 0)` (modulo 2^33), so timestamps run on
//! across the loop point, and every PID's continuity counter continues from the packets of that
//! PID before it (`k × per-loop count + count in the files before`), so a player sees one
//! continuous stream.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use thiserror::Error;

const TS: usize = 188;
const MAX_SEGMENT: u64 = 64 << 20;
const MASK33: u64 = (1 << 33) - 1;

#[derive(Debug, Error)]
pub enum SourceError {
    #[error("--source {0}: cannot read the directory: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("--source {0}: no usable segments (no *.ts file in it)")]
    Empty(PathBuf),
    #[error("--source {0}: cannot read it: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("--source {0}: {1} bytes; a segment may be at most 64 MiB")]
    TooLarge(PathBuf, u64),
    #[error("--source {0}: not a usable MPEG-TS segment: {1}")]
    Unusable(PathBuf, &'static str),
    #[error("--source {dir}: mixed codecs: {first} has {a}, {other} has {b}; every segment must carry the same streams")]
    Mixed {
        dir: PathBuf,
        first: String,
        a: String,
        other: String,
        b: String,
    },
}

/// One source file, parsed.
struct File {
    data: Bytes,
    /// Earliest PTS of the reference stream (the video, else the first stream) in the file.
    start: u64,
    /// Where the reference stream ends: its latest PTS plus one frame interval.
    end: u64,
    /// Payload-carrying packets per PID.
    packets: BTreeMap<u16, u64>,
    /// Where each other stream ends (latest PTS plus its interval), relative to `start`.
    ends: BTreeMap<u16, i64>,
}

/// A signed distance `t - from` on the 33-bit clock.
fn rel(t: u64, from: u64) -> i64 {
    let d = t.wrapping_sub(from) & MASK33;
    if d >= 1 << 32 {
        d as i64 - (1 << 33)
    } else {
        d as i64
    }
}

fn count_packets(data: &[u8]) -> BTreeMap<u16, u64> {
    let mut packets = BTreeMap::new();
    for p in data.chunks(TS) {
        if pid(p) != 0x1FFF && p[3] & 0x10 != 0 {
            *packets.entry(pid(p)).or_insert(0) += 1;
        }
    }
    packets
}

/// Turn the PES packets of `id` whose PTS is before `until` (relative to `start`) into null
/// packets.
fn drop_before(data: &mut [u8], id: u16, start: u64, until: i64) {
    let mut dropping = false;
    for p in data.chunks_mut(TS) {
        if pid(p) != id {
            continue;
        }
        if p[1] & 0x40 != 0 {
            if let Some(pl) = payload(p) {
                if let (Some(at), _) = pes_timestamps(pl) {
                    dropping = rel(read_ts(&pl[at..at + 5]), start) < until;
                }
            }
        }
        if dropping {
            p.copy_from_slice(&NULL_PACKET);
        }
    }
}

const NULL_PACKET: [u8; TS] = {
    let mut p = [0xFF; TS];
    p[0] = 0x47;
    p[1] = 0x1F;
    p[2] = 0xFF;
    p[3] = 0x10;
    p
};

/// The loop.
pub struct SourceLoop {
    files: Vec<File>,
    /// Offset of each file from the loop start, and the loop length, in 90 kHz ticks.
    pub offsets: Vec<u64>,
    pub loop_ticks: u64,
    /// Payload packets per PID in one whole loop.
    per_loop: BTreeMap<u16, u64>,
    /// Average and peak bit rate, bit/s.
    pub avg_bps: u64,
    pub max_bps: u64,
    /// CODECS attribute, when every stream's codec is known.
    pub codecs: Option<String>,
}

/// Stream types by name, for messages and CODECS.
fn type_name(t: u8) -> String {
    match t {
        0x1B => "H.264".into(),
        0x24 => "HEVC".into(),
        0x0F => "AAC".into(),
        0x03 | 0x04 => "MPEG audio".into(),
        0x81 => "AC-3".into(),
        0x02 => "MPEG-2 video".into(),
        t => format!("stream type 0x{t:02x}"),
    }
}

fn pid(p: &[u8]) -> u16 {
    (((p[1] & 0x1F) as u16) << 8) | p[2] as u16
}

/// Payload of a packet (after any adaptation field), if it has one.
fn payload(p: &[u8]) -> Option<&[u8]> {
    let afc = (p[3] >> 4) & 3;
    match afc {
        1 => Some(&p[4..]),
        3 => {
            let start = 5 + p[4] as usize;
            (start <= TS).then(|| &p[start..])
        }
        _ => None,
    }
}

fn read_ts(b: &[u8]) -> u64 {
    (((b[0] >> 1) & 7) as u64) << 30
        | (b[1] as u64) << 22
        | ((b[2] >> 1) as u64) << 15
        | (b[3] as u64) << 7
        | (b[4] >> 1) as u64
}

fn write_ts(b: &mut [u8], v: u64) {
    let v = v & MASK33;
    b[0] = (b[0] & 0xF1) | (((v >> 30) as u8 & 7) << 1);
    b[1] = (v >> 22) as u8;
    b[2] = (((v >> 15) as u8 & 0x7F) << 1) | 1;
    b[3] = (v >> 7) as u8;
    b[4] = ((v as u8 & 0x7F) << 1) | 1;
}

/// Offsets of PTS and DTS in a PES header at the start of `pl`.
fn pes_timestamps(pl: &[u8]) -> (Option<usize>, Option<usize>) {
    if pl.len() < 14 || pl[..3] != [0, 0, 1] {
        return (None, None);
    }
    let sid = pl[3];
    // Stream ids without the optional PES header (padding, private 2, ECM, …).
    if matches!(sid, 0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF) || pl[6] >> 6 != 2 {
        return (None, None);
    }
    match pl[7] >> 6 {
        2 => (Some(9), None),
        3 if pl.len() >= 19 => (Some(9), Some(14)),
        _ => (None, None),
    }
}

impl SourceLoop {
    pub fn load(dir: &Path) -> Result<Self, SourceError> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| SourceError::Dir(dir.to_path_buf(), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "ts") && p.is_file())
            .collect();
        names.sort();
        if names.is_empty() {
            return Err(SourceError::Empty(dir.to_path_buf()));
        }
        let mut files = Vec::new();
        let mut first_types: Option<(String, Vec<u8>)> = None;
        let mut codecs = None;
        for path in &names {
            let size = std::fs::metadata(path)
                .map_err(|e| SourceError::Read(path.clone(), e))?
                .len();
            if size > MAX_SEGMENT {
                return Err(SourceError::TooLarge(path.clone(), size));
            }
            let data = std::fs::read(path).map_err(|e| SourceError::Read(path.clone(), e))?;
            let bad = |why| SourceError::Unusable(path.clone(), why);
            if data.is_empty() || data.len() % TS != 0 || data.chunks(TS).any(|p| p[0] != 0x47) {
                return Err(bad("not whole 188-byte packets starting with 0x47"));
            }
            let (types, file, c) = parse(&data).map_err(bad)?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match &first_types {
                None => {
                    first_types = Some((name, types));
                    codecs = c;
                }
                Some((first, t)) if *t != types => {
                    let show = |t: &[u8]| {
                        t.iter()
                            .map(|&x| type_name(x))
                            .collect::<Vec<_>>()
                            .join(" + ")
                    };
                    return Err(SourceError::Mixed {
                        dir: dir.to_path_buf(),
                        first: first.clone(),
                        a: show(t),
                        other: name,
                        b: show(&types),
                    });
                }
                _ => {}
            }
            files.push(file);
        }
        // Offsets from the first file's start; the loop ends where the last file's reference
        // stream ends, so that stream runs on across the loop point without a gap.
        let s0 = files[0].start;
        let mut offsets: Vec<u64> = files
            .iter()
            .map(|f| (f.start.wrapping_sub(s0)) & MASK33)
            .collect();
        for i in 1..offsets.len() {
            if offsets[i] <= offsets[i - 1] {
                return Err(SourceError::Unusable(
                    names[i].clone(),
                    "its timestamps do not follow the previous segment's (files are taken in name order)",
                ));
            }
        }
        let n = offsets.len();
        let last = &files[n - 1];
        let loop_ticks = offsets[n - 1] + (last.end.wrapping_sub(last.start) & MASK33).max(1);
        // Another stream (audio) that runs on past the reference stream's end would overlap
        // the next loop's start: that loop leaves out its first PES packets up to there.
        let overlaps: Vec<(u16, i64)> = last
            .ends
            .iter()
            .map(|(&id, &end)| (id, offsets[n - 1] as i64 + end - loop_ticks as i64))
            .filter(|&(_, o)| o > 0)
            .collect();
        if !overlaps.is_empty() {
            let mut data = files[0].data.to_vec();
            for (id, until) in overlaps {
                drop_before(&mut data, id, files[0].start, until);
            }
            files[0].packets = count_packets(&data);
            files[0].data = Bytes::from(data);
        }
        let mut per_loop = BTreeMap::new();
        for f in &files {
            for (&p, &c) in &f.packets {
                *per_loop.entry(p).or_insert(0) += c;
            }
        }
        let total: u64 = files.iter().map(|f| f.data.len() as u64).sum();
        let avg_bps = total * 8 * 90_000 / loop_ticks.max(1);
        let max_bps = files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let d = offsets.get(i + 1).copied().unwrap_or(loop_ticks) - offsets[i];
                f.data.len() as u64 * 8 * 90_000 / d.max(1)
            })
            .max()
            .unwrap_or(avg_bps);
        offsets.shrink_to_fit();
        Ok(SourceLoop {
            files,
            offsets,
            loop_ticks,
            per_loop,
            avg_bps,
            max_bps,
            codecs,
        })
    }

    pub fn len(&self) -> u64 {
        self.files.len() as u64
    }

    /// Segment `n` of the live stream: file `n mod N` with its timestamps and counters moved to
    /// where that segment sits on the timeline.
    pub fn segment(&self, n: u64) -> Bytes {
        let count = self.len();
        let (k, i) = (n / count, (n % count) as usize);
        let f = &self.files[i];
        let shift = (k as u128 * self.loop_ticks as u128) as u64;
        let shift = shift.wrapping_sub(self.files[0].start) & MASK33;
        let mut cc: BTreeMap<u16, u64> = self
            .per_loop
            .iter()
            .map(|(&p, &c)| {
                let before: u64 = self.files[..i]
                    .iter()
                    .map(|g| g.packets.get(&p).copied().unwrap_or(0))
                    .sum();
                (p, k.wrapping_mul(c).wrapping_add(before))
            })
            .collect();
        let mut out = f.data.to_vec();
        for p in out.chunks_mut(TS) {
            let id = pid(p);
            if id == 0x1FFF {
                continue;
            }
            let has_payload = p[3] & 0x10 != 0;
            let c = cc.entry(id).or_insert(0);
            if has_payload {
                p[3] = (p[3] & 0xF0) | (*c & 0x0F) as u8;
                *c += 1;
            } else {
                p[3] = (p[3] & 0xF0) | (c.wrapping_sub(1) & 0x0F) as u8;
            }
            // PCR in the adaptation field.
            if p[3] & 0x20 != 0 && p[4] >= 7 && p[5] & 0x10 != 0 {
                let b = &mut p[6..12];
                let base = (b[0] as u64) << 25
                    | (b[1] as u64) << 17
                    | (b[2] as u64) << 9
                    | (b[3] as u64) << 1
                    | (b[4] >> 7) as u64;
                let v = (base + shift) & MASK33;
                b[0] = (v >> 25) as u8;
                b[1] = (v >> 17) as u8;
                b[2] = (v >> 9) as u8;
                b[3] = (v >> 1) as u8;
                b[4] = ((v as u8 & 1) << 7) | (b[4] & 0x7F);
            }
            if p[1] & 0x40 != 0 {
                let start = match (p[3] >> 4) & 3 {
                    1 => 4,
                    3 => 5 + p[4] as usize,
                    _ => continue,
                };
                if start >= TS {
                    continue;
                }
                let (pts, dts) = pes_timestamps(&p[start..]);
                for off in [pts, dts].into_iter().flatten() {
                    let at = start + off;
                    let v = read_ts(&p[at..at + 5]);
                    write_ts(&mut p[at..at + 5], v + shift);
                }
            }
        }
        Bytes::from(out)
    }
}

type Parsed = (Vec<u8>, File, Option<String>);

/// Stream types (sorted), timestamps, packet counts and CODECS of one file.
fn parse(data: &[u8]) -> Result<Parsed, &'static str> {
    let mut pmt_pid = None;
    let mut streams: Vec<(u8, u16)> = Vec::new();
    for p in data.chunks(TS) {
        if p[1] & 0x40 == 0 {
            continue;
        }
        let Some(pl) = payload(p) else { continue };
        let Some(sec) = pl.get(1 + *pl.first().unwrap_or(&0) as usize..) else {
            continue;
        };
        if pid(p) == 0 && pmt_pid.is_none() && sec.len() >= 12 && sec[0] == 0 {
            let len = (((sec[1] & 0x0F) as usize) << 8 | sec[2] as usize).min(sec.len() - 3);
            let body = &sec[8..(3 + len).saturating_sub(4).max(8)];
            pmt_pid = body
                .chunks_exact(4)
                .find(|e| u16::from_be_bytes([e[0], e[1]]) != 0)
                .map(|e| (((e[2] & 0x1F) as u16) << 8) | e[3] as u16);
        } else if Some(pid(p)) == pmt_pid && streams.is_empty() && sec.len() >= 12 && sec[0] == 2 {
            let len = (((sec[1] & 0x0F) as usize) << 8 | sec[2] as usize).min(sec.len() - 3);
            let end = (3 + len).saturating_sub(4);
            let info = (((sec[10] & 0x0F) as usize) << 8) | sec[11] as usize;
            let mut at = 12 + info;
            while at + 5 <= end {
                let es = (((sec[at + 1] & 0x1F) as u16) << 8) | sec[at + 2] as u16;
                streams.push((sec[at], es));
                let es_info = (((sec[at + 3] & 0x0F) as usize) << 8) | sec[at + 4] as usize;
                at += 5 + es_info;
            }
        }
    }
    if pmt_pid.is_none() {
        return Err("no PAT");
    }
    if streams.is_empty() {
        return Err("no PMT with streams");
    }
    let video = |t: u8| matches!(t, 0x01 | 0x02 | 0x10 | 0x1B | 0x24);
    let reference = streams.iter().find(|s| video(s.0)).unwrap_or(&streams[0]).1;
    let mut times: BTreeMap<u16, Vec<u64>> = BTreeMap::new();
    let mut video_codec = None;
    let mut audio_codec = None;
    for p in data.chunks(TS) {
        let id = pid(p);
        let Some(&(ty, _)) = streams.iter().find(|s| s.1 == id) else {
            continue;
        };
        let Some(pl) = payload(p) else { continue };
        if p[1] & 0x40 != 0 {
            if let (Some(at), _) = pes_timestamps(pl) {
                times.entry(id).or_default().push(read_ts(&pl[at..at + 5]));
            }
        }
        if ty == 0x1B && video_codec.is_none() {
            // The SPS: profile, constraint flags and level give avc1.PPCCLL.
            video_codec = pl
                .windows(7)
                .find(|w| w[..3] == [0, 0, 1] && w[3] & 0x1F == 7)
                .map(|w| format!("avc1.{:02x}{:02x}{:02x}", w[4], w[5], w[6]));
        }
        if ty == 0x0F && audio_codec.is_none() {
            audio_codec = pl
                .windows(3)
                .find(|w| w[0] == 0xFF && w[1] & 0xF6 == 0xF0)
                .map(|w| format!("mp4a.40.{}", (w[2] >> 6) + 1));
        }
    }
    // Earliest and latest PTS relative to the first (allowing a wrap of the 33-bit clock
    // inside the file), and the frame interval: the smallest step between sorted PTS.
    // (first, last + interval) relative to `from`, the interval being the smallest step between
    // sorted PTS (a lone PES: one frame at 25 fps).
    let span = |ts: &[u64], from: u64| {
        let mut r: Vec<i64> = ts.iter().map(|&t| rel(t, from)).collect();
        r.sort_unstable();
        let step = r.windows(2).map(|w| w[1] - w[0]).filter(|&d| d > 0).min();
        (r[0], r[r.len() - 1] + step.unwrap_or(3_600))
    };
    let ref_times = times.get(&reference).ok_or("no PES timestamps")?;
    let t0 = ref_times[0];
    let (first, last) = span(ref_times, t0);
    let start = t0.wrapping_add_signed(first) & MASK33;
    let end = t0.wrapping_add_signed(last) & MASK33;
    let ends = times
        .iter()
        .filter(|(&id, _)| id != reference)
        .map(|(&id, ts)| (id, span(ts, start).1))
        .collect();
    let codecs = streams
        .iter()
        .map(|&(ty, _)| match ty {
            0x1B => video_codec.clone(),
            0x0F => audio_codec.clone(),
            _ => None,
        })
        .collect::<Option<Vec<String>>>()
        .map(|v| v.join(","));
    let mut types: Vec<u8> = streams.iter().map(|s| s.0).collect();
    types.sort_unstable();
    Ok((
        types,
        File {
            data: Bytes::copy_from_slice(data),
            start,
            end,
            packets: count_packets(data),
            ends,
        },
        codecs,
    ))
}
