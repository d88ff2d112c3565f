//! Synthetic MPEG-TS segments: H.264 video + AAC (ADTS) audio, generated in memory.
//!
//! The video is the test pattern of [`crate::h264`]: every segment starts with AUD + SPS + PPS +
//! an IDR picture, followed by P pictures that code only what changed. Audio is the test tone of
//! [`crate::tone`], one ADTS frame of AAC-LC per PES, one TS packet each. Segment `n` covers `[n·D, (n+1)·D)` of a single
//! timeline (PTS and PCR are that time in 90 kHz ticks, modulo 2^33) and depends on nothing but
//! `n` and the variant, so segments can be generated independently, out of order and on several
//! replicas, and still join up: the video packets of every segment are padded (filler NAL units
//! spread over its frames) to the bitrate target rounded up to a multiple of 16 packets, so the
//! video continuity counter starts every segment at 0; the audio counter is the audio frame
//! index modulo 16 and the PSI counters are the segment number modulo 16.

use bytes::Bytes;

use crate::config::Variant;
use crate::h264::{nal, pps, sps, Pattern};

pub const TS_PACKET: usize = 188;
const PID_PMT: u16 = 0x1000;
const PID_VIDEO: u16 = 0x100;
const PID_AUDIO: u16 = 0x101;
/// 90 kHz ticks between the PCR and the PTS of the frame it travels with.
const PTS_LEAD: u64 = 9_000;
/// Timeline origin of the PCR (so PTS/PCR never start at zero).
const PCR_ORIGIN: u64 = 126_000;
const AUDIO_RATE: u64 = 48_000;
const AUDIO_FRAME_TICKS: u64 = 1024 * 90_000 / AUDIO_RATE; // 1920

/// Everything about a variant's segments that does not depend on the sequence number.
pub struct SegmentPlan {
    /// Segment duration in 90 kHz ticks.
    pub dur_ticks: u64,
    fps_milli: u64,
    /// Video packets per frame the bitrate target allows (fractional).
    packets_per_frame: f64,
    sps_pps: Vec<u8>,
    pattern: Pattern,
    /// H.264 `level_idc`, for the CODECS attribute.
    pub level_idc: u8,
}

impl SegmentPlan {
    pub fn new(v: &Variant, segment_duration: f64, fps: f64) -> Self {
        let dur_ticks = ((segment_duration * 90_000.0).round() as u64).max(1);
        let fps_milli = ((fps * 1000.0).round() as u64).max(1);
        let mbs_w = v.width.div_ceil(16);
        let mbs_h = v.height.div_ceil(16);
        let mbs = mbs_w * mbs_h;
        let level_idc = match mbs {
            0..=1620 => 31,
            1621..=8192 => 40,
            8193..=22080 => 50,
            _ => 51,
        };
        let mut sps_pps = Vec::new();
        sps_pps.extend_from_slice(&nal(0x67, &sps(v, mbs_w, mbs_h, level_idc, fps_milli)));
        sps_pps.extend_from_slice(&nal(0x68, &pps()));

        // Size: (video + audio) × duration / 8 bytes per segment, spread over the frames.
        let target_bytes = (v.video_kbps + v.audio_kbps) as f64 * 1000.0 * segment_duration / 8.0;
        let target_packets = target_bytes / TS_PACKET as f64;
        let frames = segment_duration * fps;
        let audio_frames = segment_duration * AUDIO_RATE as f64 / 1024.0;
        let packets_per_frame = ((target_packets - 2.0 - audio_frames) / frames).max(1.0);
        SegmentPlan {
            dur_ticks,
            fps_milli,
            packets_per_frame,
            sps_pps,
            pattern: Pattern::new(v, mbs_w, mbs_h, fps_milli),
            level_idc,
        }
    }

    fn first_video_frame(&self, seq: u64) -> u64 {
        let num = seq as u128 * self.dur_ticks as u128 * self.fps_milli as u128;
        num.div_ceil(90_000_000) as u64
    }

    fn video_ticks(&self, frame: u64) -> u64 {
        (frame as u128 * 90_000_000 / self.fps_milli as u128) as u64
    }

    fn first_audio_frame(&self, seq: u64) -> u64 {
        (seq * self.dur_ticks).div_ceil(AUDIO_FRAME_TICKS)
    }

    /// The access units of segment `seq` (AUD, parameter sets, slice; no filler yet).
    fn access_units(&self, seq: u64, v0: u64, n: u64) -> Vec<Vec<u8>> {
        let mut aus = Vec::with_capacity(n as usize);
        let mut idr = AUD.to_vec();
        idr.extend_from_slice(&self.sps_pps);
        idr.extend_from_slice(&self.pattern.idr(seq, v0));
        aus.push(idr);
        for p in self.pattern.p_frames(seq, v0, n - 1) {
            let mut au = AUD.to_vec();
            au.extend_from_slice(&p);
            aus.push(au);
        }
        aus
    }

    /// Build segment `seq`.
    pub fn segment(&self, seq: u64) -> Bytes {
        let v0 = self.first_video_frame(seq);
        let v1 = self.first_video_frame(seq + 1);
        let a0 = self.first_audio_frame(seq);
        let a1 = self.first_audio_frame(seq + 1);
        let n = v1 - v0;
        let mut aus = self.access_units(seq, v0, n);
        // Packets per frame: what each needs, plus the padding up to the target spread evenly.
        let need: Vec<u64> = aus.iter().map(|au| packets_for(au.len())).collect();
        let needed: u64 = need.iter().sum();
        let target = ((n as f64 * self.packets_per_frame / 16.0).round() as u64).max(1) * 16;
        let total = target.max(needed.next_multiple_of(16));
        if needed > target {
            tracing::debug!(seq, needed, target, "pictures exceed the bitrate target");
        }
        let extra = total - needed;
        for (i, au) in aus.iter_mut().enumerate() {
            let i = i as u64;
            let k = need[i as usize] + extra * (i + 1) / n - extra * i / n;
            let fill = au_capacity(k) - au.len(); // ≥ 6 by construction
            au.extend_from_slice(&[0, 0, 0, 1, 0x0C]);
            au.resize(au.len() + fill - 6, 0xFF);
            au.push(0x80);
        }
        let packets = 2 + total + (a1 - a0);
        let mut out = Vec::with_capacity(packets as usize * TS_PACKET);
        let cc = (seq % 16) as u8;
        psi_packet(&mut out, 0, cc, &pat());
        psi_packet(&mut out, PID_PMT, cc, &pmt());

        let mut vcc = 0u8;
        let mut acc = (a0 % 16) as u8;
        let (mut vf, mut af) = (v0, a0);
        let mut pes = Vec::new();
        while vf < v1 || af < a1 {
            let vt = self.video_ticks(vf);
            let at = af * AUDIO_FRAME_TICKS;
            if vf < v1 && (af >= a1 || vt <= at) {
                pes.clear();
                pes_header(&mut pes, 0xE0, None, PCR_ORIGIN + PTS_LEAD + vt);
                pes.extend_from_slice(&aus[(vf - v0) as usize]);
                write_pes(
                    &mut out,
                    PID_VIDEO,
                    &mut vcc,
                    &pes,
                    Some(PCR_ORIGIN + vt),
                    vf == v0,
                );
                vf += 1;
            } else {
                pes.clear();
                let aac = crate::tone::frame(af);
                let len = 7 + aac.len();
                pes_header(&mut pes, 0xC0, Some(len), PCR_ORIGIN + PTS_LEAD + at);
                adts_header(&mut pes, len);
                pes.extend_from_slice(aac);
                write_pes(&mut out, PID_AUDIO, &mut acc, &pes, None, false);
                af += 1;
            }
        }
        debug_assert_eq!(vcc, 0);
        debug_assert_eq!(out.len(), packets as usize * TS_PACKET);
        Bytes::from(out)
    }
}

/// Access unit bytes that fit exactly in `n` packets (first packet carries an 8-byte PCR AF,
/// the PES header is 14 bytes).
fn au_capacity(n: u64) -> usize {
    176 + (n as usize - 1) * 184 - 14
}

/// Packets an access unit of `len` bytes needs, with room for a filler NAL unit (6 bytes).
fn packets_for(len: usize) -> u64 {
    1 + (len + 6).saturating_sub(au_capacity(1)).div_ceil(184) as u64
}

const AUD: [u8; 6] = [0, 0, 0, 1, 0x09, 0xF0];

fn adts_header(out: &mut Vec<u8>, len: usize) {
    // AAC-LC (profile 1), 48 kHz (index 3), 2 channels, no CRC.
    out.extend_from_slice(&[
        0xFF,
        0xF1,
        (1 << 6) | (3 << 2),
        (2 << 6) | ((len >> 11) as u8 & 0x03),
        (len >> 3) as u8,
        (((len & 7) as u8) << 5) | 0x1F,
        0xFC,
    ]);
}

fn pts_bytes(pts: u64) -> [u8; 5] {
    let p = pts & ((1 << 33) - 1);
    [
        0x21 | (((p >> 30) as u8 & 7) << 1),
        (p >> 22) as u8,
        (((p >> 15) as u8 & 0x7F) << 1) | 1,
        (p >> 7) as u8,
        ((p as u8 & 0x7F) << 1) | 1,
    ]
}

fn pes_header(out: &mut Vec<u8>, stream_id: u8, payload_len: Option<usize>, pts: u64) {
    out.extend_from_slice(&[0, 0, 1, stream_id]);
    let len = payload_len
        .map(|l| l + 8)
        .filter(|&l| l <= 0xFFFF)
        .unwrap_or(0);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&[0x80, 0x80, 5]);
    out.extend_from_slice(&pts_bytes(pts));
}

/// Packetize one PES; the first packet carries `pcr` (and the random-access flag) if given.
fn write_pes(out: &mut Vec<u8>, pid: u16, cc: &mut u8, pes: &[u8], pcr: Option<u64>, rai: bool) {
    let mut rest = pes;
    let mut first = true;
    while !rest.is_empty() {
        let mut af: Vec<u8> = Vec::new();
        if first {
            if let Some(pcr) = pcr {
                let base = pcr & ((1 << 33) - 1);
                af.extend_from_slice(&[0, 0x10 | if rai { 0x40 } else { 0 }]);
                af.extend_from_slice(&[
                    (base >> 25) as u8,
                    (base >> 17) as u8,
                    (base >> 9) as u8,
                    (base >> 1) as u8,
                    ((base as u8 & 1) << 7) | 0x7E,
                    0,
                ]);
            }
        }
        let room = 184 - af.len();
        if rest.len() < room {
            let stuff = room - rest.len();
            if af.is_empty() {
                af.push(0);
                if stuff > 1 {
                    af.push(0);
                    af.resize(stuff, 0xFF);
                }
            } else {
                af.resize(af.len() + stuff, 0xFF);
            }
        }
        if !af.is_empty() {
            af[0] = (af.len() - 1) as u8;
        }
        let take = 184 - af.len();
        let afc = if af.is_empty() { 0x10 } else { 0x30 };
        out.extend_from_slice(&[
            0x47,
            (if first { 0x40 } else { 0 }) | (pid >> 8) as u8,
            pid as u8,
            afc | *cc,
        ]);
        out.extend_from_slice(&af);
        out.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        *cc = (*cc + 1) & 0x0F;
        first = false;
    }
}

fn psi_packet(out: &mut Vec<u8>, pid: u16, cc: u8, section: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10 | cc, 0]);
    out.extend_from_slice(section);
    out.resize(start + TS_PACKET, 0xFF);
}

fn with_crc(mut s: Vec<u8>) -> Vec<u8> {
    let crc = crc32_mpeg2(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    s
}

fn pat() -> Vec<u8> {
    with_crc(vec![
        0x00,
        0xB0,
        13,
        0x00,
        0x01,
        0xC1,
        0,
        0,
        0x00,
        0x01,
        0xE0 | (PID_PMT >> 8) as u8,
        PID_PMT as u8,
    ])
}

fn pmt() -> Vec<u8> {
    let mut s = vec![
        0x02,
        0xB0,
        23,
        0x00,
        0x01,
        0xC1,
        0,
        0,
        0xE0 | (PID_VIDEO >> 8) as u8,
        PID_VIDEO as u8,
        0xF0,
        0,
    ];
    for (ty, pid) in [(0x1B, PID_VIDEO), (0x0F, PID_AUDIO)] {
        s.extend_from_slice(&[ty, 0xE0 | (pid >> 8) as u8, pid as u8, 0xF0, 0]);
    }
    with_crc(s)
}

pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= (b as u32) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_variants;

    fn plan(spec: &str, d: f64, fps: f64) -> SegmentPlan {
        SegmentPlan::new(&parse_variants(spec).unwrap().list[0], d, fps)
    }

    /// Continuity counters and PTS must continue across segment boundaries.
    #[test]
    fn continuity_across_segments() {
        let p = plan("v:640x360:500k/550k/1000k:64k", 0.5, 25.0);
        let mut last_cc = std::collections::HashMap::new();
        let mut last_pts = 0u64;
        for seq in 0..6 {
            let seg = p.segment(seq);
            assert_eq!(seg.len() % TS_PACKET, 0);
            for pkt in seg.chunks(TS_PACKET) {
                assert_eq!(pkt[0], 0x47);
                let pid = (((pkt[1] & 0x1F) as u16) << 8) | pkt[2] as u16;
                let cc = pkt[3] & 0x0F;
                if let Some(prev) = last_cc.insert(pid, cc) {
                    assert_eq!(cc, (prev + 1) & 0x0F, "pid {pid:#x} seq {seq}");
                }
                if pid == PID_VIDEO && pkt[1] & 0x40 != 0 {
                    let off = 4 + 1 + pkt[4] as usize;
                    let h = &pkt[off + 9..off + 14];
                    let pts = (((h[0] >> 1) & 7) as u64) << 30
                        | (h[1] as u64) << 22
                        | ((h[2] >> 1) as u64) << 15
                        | (h[3] as u64) << 7
                        | (h[4] >> 1) as u64;
                    assert!(pts > last_pts);
                    last_pts = pts;
                }
            }
        }
    }

    #[test]
    fn size_follows_bitrate() {
        let p = plan("v:1920x1080:5000k/5500k/10000k:128k", 2.0, 30.0);
        let want = (5000 + 128) * 1000 * 2 / 8;
        let got = p.segment(3).len();
        assert!(
            (got as f64 - want as f64).abs() / (want as f64) < 0.01,
            "{got} vs {want}"
        );
    }

    /// The time burned into a segment's first picture is its EXT-X-PROGRAM-DATE-TIME.
    #[test]
    fn burned_in_time_is_the_program_date_time() {
        for (spec, d, fps) in [
            ("v:1920x1080:5000k/5500k/10000k:128k", 2.0, 30.0),
            ("v:640x360:500k/550k/1000k:64k", 0.5, 25.0),
        ] {
            let p = plan(spec, d, fps);
            for seq in [0u64, 898_085_083, 3_599_999_999] {
                let pdt = crate::stream::rfc3339_ms((seq as f64 * d * 1000.0) as i128);
                let first = p.pattern.live(seq, p.first_video_frame(seq));
                let time = String::from_utf8(first[0].clone()).unwrap();
                let ms = |t: &str| {
                    let f: Vec<u64> = t.split([':', '.']).map(|x| x.parse().unwrap()).collect();
                    ((f[0] * 60 + f[1]) * 60 + f[2]) * 1000 + f[3]
                };
                // The first frame starts at the segment's start, or within one frame after it
                // when the segment is not a whole number of frames (0.5 s at 25 fps).
                let late = ms(&time[time.len() - 12..]) - ms(&pdt[11..23]);
                let exact = (d * fps).fract() == 0.0;
                assert!(
                    late == 0 || (!exact && late < (1000.0 / fps) as u64),
                    "{time} vs {pdt}"
                );
                let numbers = String::from_utf8(first[1].clone()).unwrap();
                assert!(numbers.contains(&seq.to_string()), "{numbers}");
            }
        }
    }

    /// Sizes with no room for text, odd crops, tall pictures and fractional rates still give
    /// whole, continuous segments.
    #[test]
    fn odd_sizes_and_rates() {
        for (spec, d, fps) in [
            ("t:16x16:100k/100k/100k:32k", 2.0, 30.0),
            ("w:2000x40:800k/800k/800k:64k", 1.5, 29.97),
            ("n:250x170:300k/300k/300k:64k", 2.0, 25.0),
            ("r:1080x1920:4000k/4000k/4000k:128k", 0.5, 60.0),
        ] {
            let p = plan(spec, d, fps);
            for seq in [7u64, 1_196_170_241] {
                let seg = p.segment(seq);
                assert_eq!(seg.len() % TS_PACKET, 0, "{spec}");
                let video = seg
                    .chunks(TS_PACKET)
                    .filter(|k| (((k[1] & 0x1F) as u16) << 8 | k[2] as u16) == PID_VIDEO)
                    .count();
                assert_eq!(video % 16, 0, "{spec}: video packets {video}");
            }
        }
    }

    #[test]
    fn crc_known_value() {
        // PAT of program 1 → PMT PID 0x1000, as ffmpeg writes it.
        assert_eq!(&pat()[12..], &[0x2A, 0xB1, 0x04, 0xB2]);
    }
}
