//! Synthetic MPEG-TS segments: H.264 video + AAC (ADTS) audio, generated in memory.
//!
//! The video is a real, decodable H.264 Constrained Baseline stream: every segment starts with
//! AUD + SPS + PPS + an IDR picture (all macroblocks I_16x16 DC prediction with no residual, so a
//! flat grey frame costs one byte per macroblock), followed by P pictures that skip every
//! macroblock. Each access unit is padded with a filler-data NAL unit so that every video frame
//! occupies the same number of TS packets; audio is one ADTS frame of AAC-LC stereo silence per
//! PES, one TS packet each. Because every frame has a fixed packet count, the continuity counter
//! at the start of any segment is a closed-form function of its first frame index, so segments
//! can be generated independently (and out of order) and still be continuous across segment
//! boundaries, as are PTS and PCR, which follow a single timeline: segment `n` covers
//! `[n·D, (n+1)·D)`.

use bytes::Bytes;

use crate::config::Variant;

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
/// One AAC-LC stereo raw_data_block of digital silence (a CPE with zero spectra).
const AAC_SILENCE: [u8; 6] = [0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c];

/// Everything about a variant's segments that does not depend on the sequence number.
#[derive(Debug)]
pub struct SegmentPlan {
    /// Segment duration in 90 kHz ticks.
    pub dur_ticks: u64,
    fps_milli: u64,
    packets_per_frame: u64,
    au_size: usize,
    sps_pps: Vec<u8>,
    /// IDR slices for idr_pic_id 0 and 1 (alternated so neighbouring IDRs differ).
    idr: [Vec<u8>; 2],
    mbs: u32,
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
        let idr = [nal(0x65, &idr_slice(mbs, 0)), nal(0x65, &idr_slice(mbs, 1))];

        // Size: (video + audio) × duration / 8 bytes per segment, spread over the frames.
        let target_bytes = (v.video_kbps + v.audio_kbps) as f64 * 1000.0 * segment_duration / 8.0;
        let target_packets = target_bytes / TS_PACKET as f64;
        let frames = segment_duration * fps;
        let audio_frames = segment_duration * AUDIO_RATE as f64 / 1024.0;
        let want = ((target_packets - 2.0 - audio_frames) / frames)
            .round()
            .max(1.0) as u64;
        let min_au = AUD.len() + sps_pps.len() + idr[0].len().max(idr[1].len()) + 6;
        let mut packets_per_frame = want;
        while au_capacity(packets_per_frame) < min_au {
            packets_per_frame += 1;
        }
        SegmentPlan {
            dur_ticks,
            fps_milli,
            packets_per_frame,
            au_size: au_capacity(packets_per_frame),
            sps_pps,
            idr,
            mbs,
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

    /// Build segment `seq`.
    pub fn segment(&self, seq: u64) -> Bytes {
        let v0 = self.first_video_frame(seq);
        let v1 = self.first_video_frame(seq + 1);
        let a0 = self.first_audio_frame(seq);
        let a1 = self.first_audio_frame(seq + 1);
        let packets = 2 + (v1 - v0) * self.packets_per_frame + (a1 - a0);
        let mut out = Vec::with_capacity(packets as usize * TS_PACKET);
        let cc = (seq % 16) as u8;
        psi_packet(&mut out, 0, cc, &pat());
        psi_packet(&mut out, PID_PMT, cc, &pmt());

        let mut vcc = ((v0 * self.packets_per_frame) % 16) as u8;
        let mut acc = (a0 % 16) as u8;
        let (mut vf, mut af) = (v0, a0);
        let mut pes = Vec::with_capacity(self.au_size + 32);
        while vf < v1 || af < a1 {
            let vt = self.video_ticks(vf);
            let at = af * AUDIO_FRAME_TICKS;
            if vf < v1 && (af >= a1 || vt <= at) {
                pes.clear();
                pes_header(&mut pes, 0xE0, None, PCR_ORIGIN + PTS_LEAD + vt);
                self.access_unit(&mut pes, seq, vf - v0);
                let before = out.len();
                write_pes(
                    &mut out,
                    PID_VIDEO,
                    &mut vcc,
                    &pes,
                    Some(PCR_ORIGIN + vt),
                    vf == v0,
                );
                debug_assert_eq!(
                    (out.len() - before) as u64,
                    self.packets_per_frame * TS_PACKET as u64
                );
                vf += 1;
            } else {
                pes.clear();
                let len = 7 + AAC_SILENCE.len();
                pes_header(&mut pes, 0xC0, Some(len), PCR_ORIGIN + PTS_LEAD + at);
                adts_header(&mut pes, len);
                pes.extend_from_slice(&AAC_SILENCE);
                write_pes(&mut out, PID_AUDIO, &mut acc, &pes, None, false);
                af += 1;
            }
        }
        debug_assert_eq!(out.len(), packets as usize * TS_PACKET);
        Bytes::from(out)
    }

    /// Append one access unit of exactly `au_size` bytes: frame `index` of the GOP.
    fn access_unit(&self, out: &mut Vec<u8>, seq: u64, index: u64) {
        let start = out.len();
        out.extend_from_slice(&AUD);
        if index == 0 {
            out.extend_from_slice(&self.sps_pps);
            out.extend_from_slice(&self.idr[(seq % 2) as usize]);
        } else {
            out.extend_from_slice(&nal(0x41, &p_slice(self.mbs, (index % 65536) as u16)));
        }
        let used = out.len() - start;
        let fill = self.au_size - used; // ≥ 6 by construction
        out.extend_from_slice(&[0, 0, 0, 1, 0x0C]);
        out.resize(out.len() + fill - 6, 0xFF);
        out.push(0x80);
    }
}

/// Access unit bytes that fit exactly in `n` packets (first packet carries an 8-byte PCR AF,
/// the PES header is 14 bytes).
fn au_capacity(n: u64) -> usize {
    176 + (n as usize - 1) * 184 - 14
}

const AUD: [u8; 6] = [0, 0, 0, 1, 0x09, 0xF0];

/// Bit writer for H.264 RBSPs.
struct Bits {
    buf: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn new() -> Self {
        Bits {
            buf: Vec::new(),
            acc: 0,
            n: 0,
        }
    }
    fn u(&mut self, bits: u32, v: u64) {
        for i in (0..bits).rev() {
            self.acc = (self.acc << 1) | ((v >> i) & 1);
            self.n += 1;
            if self.n == 8 {
                self.buf.push(self.acc as u8);
                self.acc = 0;
                self.n = 0;
            }
        }
    }
    fn ue(&mut self, v: u64) {
        let x = v + 1;
        let len = 64 - x.leading_zeros();
        self.u(len - 1, 0);
        self.u(len, x);
    }
    fn se(&mut self, v: i64) {
        self.ue(if v > 0 {
            (2 * v - 1) as u64
        } else {
            (-2 * v) as u64
        });
    }
    fn trailing(mut self) -> Vec<u8> {
        self.u(1, 1);
        while self.n != 0 {
            self.u(1, 0);
        }
        self.buf
    }
}

/// A NAL unit with a 4-byte start code and emulation prevention.
fn nal(header: u8, rbsp: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 1, header];
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

fn sps(v: &Variant, mbs_w: u32, mbs_h: u32, level_idc: u8, fps_milli: u64) -> Vec<u8> {
    let mut b = Bits::new();
    b.u(8, 66); // Baseline
    b.u(8, 0xC0); // constraint_set0 + set1: Constrained Baseline
    b.u(8, level_idc as u64);
    b.ue(0); // sps id
    b.ue(12); // log2_max_frame_num - 4 → 16 bits
    b.ue(2); // pic_order_cnt_type 2: output order = decode order
    b.ue(1); // max_num_ref_frames
    b.u(1, 0); // gaps
    b.ue(mbs_w as u64 - 1);
    b.ue(mbs_h as u64 - 1);
    b.u(1, 1); // frame_mbs_only
    b.u(1, 1); // direct_8x8_inference
    let crop_r = (mbs_w * 16 - v.width) / 2;
    let crop_b = (mbs_h * 16 - v.height) / 2;
    if crop_r > 0 || crop_b > 0 {
        b.u(1, 1);
        b.ue(0);
        b.ue(crop_r as u64);
        b.ue(0);
        b.ue(crop_b as u64);
    } else {
        b.u(1, 0);
    }
    b.u(1, 1); // vui present
    b.u(1, 0); // aspect ratio
    b.u(1, 0); // overscan
    b.u(1, 0); // video signal type
    b.u(1, 0); // chroma loc
    b.u(1, 1); // timing info
    b.u(32, 1000); // num_units_in_tick
    b.u(32, fps_milli * 2); // time_scale (two ticks per frame)
    b.u(1, 1); // fixed_frame_rate
    b.u(1, 0); // nal hrd
    b.u(1, 0); // vcl hrd
    b.u(1, 0); // pic_struct_present
    b.u(1, 0); // bitstream_restriction
    b.trailing()
}

fn pps() -> Vec<u8> {
    let mut b = Bits::new();
    b.ue(0); // pps id
    b.ue(0); // sps id
    b.u(1, 0); // CAVLC
    b.u(1, 0); // bottom_field_pic_order
    b.ue(0); // slice groups - 1
    b.ue(0); // num_ref_idx_l0_default - 1
    b.ue(0); // l1
    b.u(1, 0); // weighted_pred
    b.u(2, 0); // weighted_bipred_idc
    b.se(0); // pic_init_qp - 26
    b.se(0); // pic_init_qs - 26
    b.se(0); // chroma_qp_index_offset
    b.u(1, 0); // deblocking_filter_control_present
    b.u(1, 0); // constrained_intra_pred
    b.u(1, 0); // redundant_pic_cnt_present
    b.trailing()
}

fn idr_slice(mbs: u32, idr_pic_id: u64) -> Vec<u8> {
    let mut b = Bits::new();
    b.ue(0); // first_mb_in_slice
    b.ue(7); // slice_type I (all slices)
    b.ue(0); // pps id
    b.u(16, 0); // frame_num
    b.ue(idr_pic_id);
    b.u(1, 0); // no_output_of_prior_pics
    b.u(1, 0); // long_term_reference
    b.se(0); // slice_qp_delta
    for _ in 0..mbs {
        b.ue(3); // mb_type I_16x16_2_0_0: DC prediction, no coded residual
        b.ue(0); // intra_chroma_pred_mode DC
        b.se(0); // mb_qp_delta
        b.u(1, 1); // Intra16x16DC coeff_token: TotalCoeff 0 (nC 0..2)
    }
    b.trailing()
}

fn p_slice(mbs: u32, frame_num: u16) -> Vec<u8> {
    let mut b = Bits::new();
    b.ue(0); // first_mb_in_slice
    b.ue(5); // slice_type P (all slices)
    b.ue(0); // pps id
    b.u(16, frame_num as u64);
    b.u(1, 0); // num_ref_idx_active_override
    b.u(1, 0); // ref_pic_list_modification_flag_l0
    b.u(1, 0); // adaptive_ref_pic_marking_mode
    b.se(0); // slice_qp_delta
    b.ue(mbs as u64); // mb_skip_run: every macroblock skipped
    b.trailing()
}

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

    #[test]
    fn crc_known_value() {
        // PAT of program 1 → PMT PID 0x1000, as ffmpeg writes it.
        assert_eq!(&pat()[12..], &[0x2A, 0xB1, 0x04, 0xB2]);
    }
}
