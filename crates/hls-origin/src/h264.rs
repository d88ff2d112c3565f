//! The test pattern as an H.264 bitstream written directly, without a pixel encoder.
//!
//! Design (see docs/stream.md): every segment opens with an IDR picture of colour bars, the
//! variant's name and resolution, a legend of glyphs (`0123456789:.-` and a solid block) and
//! three live lines: the UTC time of the frame to the millisecond, the media sequence and frame
//! numbers, and a block that moves one column every frame. The IDR is coded macroblock by
//! macroblock: `I_16x16` vertical or horizontal prediction without residual wherever the block
//! repeats its upper or left neighbour's edge (bars, background, most of a glyph), `I_PCM` raw
//! samples elsewhere. Every following picture is a P picture in which only the character cells
//! that changed since the previous frame are coded: `P_L0_16x16` macroblocks whose motion vector
//! points at the legend cell of the new glyph (a copy of pixels already in the reference
//! picture, no residual), every other macroblock is `P_Skip` (or an explicit zero vector where
//! skip prediction would not give zero). A frame costs a few bytes per changed macroblock.
//! Deblocking is off so copies and raw samples stay exact. The font is `font8x8`'s basic Latin.

use font8x8::legacy::BASIC_LEGACY;

use crate::config::Variant;

/// Bit writer for H.264 RBSPs.
pub struct Bits {
    buf: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    pub fn new() -> Self {
        Bits {
            buf: Vec::new(),
            acc: 0,
            n: 0,
        }
    }
    pub fn u(&mut self, bits: u32, v: u64) {
        debug_assert!(bits <= 32);
        let v = v & ((1u64 << bits) - 1);
        self.acc = (self.acc << bits) | v;
        self.n += bits;
        while self.n >= 8 {
            self.n -= 8;
            self.buf.push((self.acc >> self.n) as u8);
        }
        self.acc &= (1 << self.n) - 1;
    }
    pub fn ue(&mut self, v: u64) {
        let x = v + 1;
        let len = 64 - x.leading_zeros();
        if len > 1 {
            self.u(len - 1, 0);
        }
        if len > 32 {
            self.u(len - 32, x >> 32);
            self.u(32, x & 0xFFFF_FFFF);
        } else {
            self.u(len, x);
        }
    }
    pub fn se(&mut self, v: i64) {
        self.ue(if v > 0 {
            (2 * v - 1) as u64
        } else {
            (-2 * v) as u64
        });
    }
    fn align_zero(&mut self) {
        if self.n != 0 {
            self.u(8 - self.n, 0);
        }
    }
    /// Whole bytes; the writer must be byte-aligned.
    fn bytes(&mut self, b: &[u8]) {
        debug_assert_eq!(self.n, 0);
        self.buf.extend_from_slice(b);
    }
    pub fn trailing(mut self) -> Vec<u8> {
        self.u(1, 1);
        self.align_zero();
        self.buf
    }
}

/// A NAL unit with a 4-byte start code and emulation prevention.
pub fn nal(header: u8, rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + rbsp.len() / 64 + 8);
    out.extend_from_slice(&[0, 0, 0, 1, header]);
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

pub fn sps(v: &Variant, mbs_w: u32, mbs_h: u32, level_idc: u8, fps_milli: u64) -> Vec<u8> {
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

pub fn pps() -> Vec<u8> {
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
    b.u(1, 1); // deblocking_filter_control_present: slices turn the filter off
    b.u(1, 0); // constrained_intra_pred
    b.u(1, 0); // redundant_pic_cnt_present
    b.trailing()
}

/// BT.601 limited-range Y'CbCr.
#[derive(Clone, Copy)]
struct Yuv(u8, u8, u8);

/// 75 % colour bars: white, yellow, cyan, green, magenta, red, blue.
pub const BARS: [(u8, u8, u8); 7] = [
    (180, 128, 128),
    (162, 44, 142),
    (131, 156, 44),
    (112, 72, 58),
    (84, 184, 198),
    (65, 100, 212),
    (35, 212, 114),
];
const BLACK: Yuv = Yuv(16, 128, 128);
const INK: u8 = 235;
/// Glyph code of the solid block (the moving element).
const BLOCK: u8 = 0x7F;
/// The glyphs the live lines are drawn from, in the order they appear on the legend line.
const LEGEND: &[u8] = b"0123456789:.-\x7F";

/// Raw planes of one picture, macroblock-padded.
#[derive(Clone)]
struct Planes {
    y: Vec<u8>,
    cb: Vec<u8>,
    cr: Vec<u8>,
    /// Luma stride (chroma stride is half).
    w: usize,
}

impl Planes {
    fn fill(&mut self, x0: usize, y0: usize, w: usize, h: usize, c: Yuv) {
        for y in y0..y0 + h {
            self.y[y * self.w + x0..y * self.w + x0 + w].fill(c.0);
        }
        let cw = self.w / 2;
        for y in y0 / 2..(y0 + h) / 2 {
            self.cb[y * cw + x0 / 2..y * cw + (x0 + w) / 2].fill(c.1);
            self.cr[y * cw + x0 / 2..y * cw + (x0 + w) / 2].fill(c.2);
        }
    }
}

/// Where the text lines sit, in macroblock units.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Character cell: `s` macroblocks wide, `2s` high (8×8 font pixels of 2s×4s samples).
    s: u32,
    /// Text columns and the first column used.
    cols: u32,
    col0: u32,
    /// Macroblock rows of the lines.
    label: u32,
    time: u32,
    legend: u32,
    seq: u32,
    track: u32,
    /// Column of the first legend glyph, and of a cell that is always blank.
    legend_col: u32,
    blank_col: u32,
}

/// Everything about a variant's pictures that does not depend on time.
pub struct Pattern {
    mbs_w: u32,
    mbs_h: u32,
    fps_milli: u64,
    layout: Option<Layout>,
    /// Bars, label and legend: the picture before the live lines are drawn.
    background: Planes,
}

/// The three live lines of a frame.
type Live = [Vec<u8>; 3];

impl Pattern {
    pub fn new(v: &Variant, mbs_w: u32, mbs_h: u32, fps_milli: u64) -> Self {
        let w = mbs_w as usize * 16;
        let h = mbs_h as usize * 16;
        let mut bg = Planes {
            y: vec![BLACK.0; w * h],
            cb: vec![BLACK.1; w * h / 4],
            cr: vec![BLACK.2; w * h / 4],
            w,
        };
        let s = (v.width / 640).min(v.height / 360).max(1);
        let cols = mbs_w / s;
        // Five lines of 2s macroblock rows at the bottom, at least one row of bars above.
        let text_rows = 10 * s;
        let layout = (cols >= LEGEND.len() as u32 + 2 && mbs_h > text_rows).then(|| {
            let top = mbs_h - text_rows;
            let col0 = u32::from(cols > 32);
            let legend_col = (cols - LEGEND.len() as u32) / 2;
            Layout {
                s,
                cols,
                col0,
                label: top,
                time: top + 2 * s,
                legend: top + 4 * s,
                seq: top + 6 * s,
                track: top + 8 * s,
                legend_col,
                blank_col: legend_col + LEGEND.len() as u32,
            }
        });
        let bar_rows = layout.map_or(mbs_h, |l| l.label) as usize;
        for (i, c) in BARS.iter().enumerate() {
            // Bar edges on macroblock columns keep the bars cheap (one raw block per bar).
            let x0 = i * mbs_w as usize / 7 * 16;
            let x1 = (i + 1) * mbs_w as usize / 7 * 16;
            bg.fill(x0, 0, x1 - x0, bar_rows * 16, Yuv(c.0, c.1, c.2));
        }
        let p = Pattern {
            mbs_w,
            mbs_h,
            fps_milli,
            layout,
            background: bg,
        };
        let mut bg = p.background.clone();
        if let Some(l) = &p.layout {
            let label = format!("{} {}x{}", v.name, v.width, v.height);
            p.draw_line(&mut bg, l.label, l.col0, label.as_bytes());
            p.draw_line(&mut bg, l.legend, l.legend_col, LEGEND);
        }
        Pattern {
            background: bg,
            ..p
        }
    }

    fn draw_line(&self, pl: &mut Planes, row: u32, col0: u32, text: &[u8]) {
        let Some(l) = &self.layout else { return };
        for (i, &ch) in text.iter().enumerate() {
            let col = col0 + i as u32;
            if col >= l.cols {
                break;
            }
            self.draw_glyph(pl, row, col, ch);
        }
    }

    fn draw_glyph(&self, pl: &mut Planes, row: u32, col: u32, ch: u8) {
        let Some(l) = &self.layout else { return };
        let (px, py) = (2 * l.s as usize, 4 * l.s as usize);
        let x0 = (col * l.s) as usize * 16;
        let y0 = row as usize * 16;
        let glyph = if ch == BLOCK {
            [0xFF; 8]
        } else {
            BASIC_LEGACY[(ch & 0x7F) as usize]
        };
        for (fy, bits) in glyph.iter().enumerate() {
            for fx in 0..8 {
                let on = bits >> fx & 1 == 1;
                let v = if on { INK } else { BLACK.0 };
                for y in y0 + fy * py..y0 + (fy + 1) * py {
                    let r = y * pl.w + x0 + fx * px;
                    pl.y[r..r + px].fill(v);
                }
            }
        }
    }

    /// The live lines of frame `frame` (counted from the Unix epoch) in segment `seq`.
    pub(crate) fn live(&self, seq: u64, frame: u64) -> Live {
        let Some(l) = &self.layout else {
            return Default::default();
        };
        let ms = (frame as u128 * 1_000_000 / self.fps_milli as u128) as u64;
        let sod = ms / 1000 % 86_400;
        // At the smallest cell size every raw glyph block in the IDR counts against a tight
        // bitrate (360p at 500 kbit/s): shorter captions there.
        let compact = l.s == 1;
        let time = format!(
            "{}{:02}:{:02}:{:02}.{:03}",
            if compact { "" } else { "UTC " },
            sod / 3600,
            sod / 60 % 60,
            sod % 60,
            ms % 1000
        );
        let numbers = if compact {
            format!("S{seq} F{frame}")
        } else {
            format!("SEQ {seq} FRM {frame}")
        };
        let mut track = vec![b' '; l.cols as usize];
        track[(frame % l.cols as u64) as usize] = BLOCK;
        [time.into_bytes(), numbers.into_bytes(), track]
    }

    fn live_rows(&self) -> [(u32, u32); 3] {
        let l = self.layout.expect("layout");
        [(l.time, l.col0), (l.seq, l.col0), (l.track, 0)]
    }

    /// IDR picture (slice NAL unit) of frame `frame`.
    pub fn idr(&self, seq: u64, frame: u64) -> Vec<u8> {
        let mut pl = self.background.clone();
        if self.layout.is_some() {
            let live = self.live(seq, frame);
            for ((row, col0), text) in self.live_rows().into_iter().zip(&live) {
                self.draw_line(&mut pl, row, col0, text);
            }
        }
        nal(0x65, &self.idr_slice(&pl, seq % 2))
    }

    fn idr_slice(&self, pl: &Planes, idr_pic_id: u64) -> Vec<u8> {
        let (mw, mh) = (self.mbs_w as usize, self.mbs_h as usize);
        let mut b = Bits::new();
        b.buf.reserve(pl.y.len() / 4);
        b.ue(0); // first_mb_in_slice
        b.ue(7); // slice_type I (all slices)
        b.ue(0); // pps id
        b.u(16, 0); // frame_num
        b.ue(idr_pic_id);
        b.u(1, 0); // no_output_of_prior_pics
        b.u(1, 0); // long_term_reference
        b.se(0); // slice_qp_delta
        b.ue(1); // disable_deblocking_filter_idc: off
        let mut pcm = vec![false; mw * mh];
        let mut raw = [0u8; 384];
        for my in 0..mh {
            for mx in 0..mw {
                let mode = if my > 0 && predicts(pl, mx, my, true) {
                    Some(0) // vertical
                } else if mx > 0 && predicts(pl, mx, my, false) {
                    Some(1) // horizontal
                } else {
                    None
                };
                match mode {
                    Some(m) => {
                        b.ue(1 + m); // I_16x16_<m>_0_0: no residual
                        b.ue(if m == 0 { 2 } else { 1 }); // chroma: same direction
                        b.se(0); // mb_qp_delta
                                 // Intra16x16DCLevel coeff_token for TotalCoeff 0; nC from the neighbours
                                 // (a raw I_PCM neighbour counts 16 coefficients).
                        let na = (mx > 0).then(|| if pcm[my * mw + mx - 1] { 16 } else { 0 });
                        let nb = (my > 0).then(|| if pcm[(my - 1) * mw + mx] { 16 } else { 0 });
                        let nc = match (na, nb) {
                            (Some(a), Some(b)) => (a + b + 1) >> 1,
                            (Some(a), None) => a,
                            (None, Some(b)) => b,
                            (None, None) => 0,
                        };
                        match nc {
                            0..=1 => b.u(1, 1),
                            2..=3 => b.u(2, 3),
                            4..=7 => b.u(4, 15),
                            _ => b.u(6, 3),
                        }
                    }
                    None => {
                        b.ue(25); // I_PCM
                        b.align_zero();
                        let (x0, y0) = (mx * 16, my * 16);
                        for y in 0..16 {
                            let r = (y0 + y) * pl.w + x0;
                            raw[y * 16..y * 16 + 16].copy_from_slice(&pl.y[r..r + 16]);
                        }
                        let cw = pl.w / 2;
                        for y in 0..8 {
                            let r = (my * 8 + y) * cw + mx * 8;
                            raw[256 + y * 8..256 + y * 8 + 8].copy_from_slice(&pl.cb[r..r + 8]);
                            raw[320 + y * 8..320 + y * 8 + 8].copy_from_slice(&pl.cr[r..r + 8]);
                        }
                        b.bytes(&raw);
                        pcm[my * mw + mx] = true;
                    }
                }
            }
        }
        b.trailing()
    }

    /// P pictures for frames `frame0+1 ..= frame0+count` of segment `seq`, each as a slice NAL
    /// unit, given that frame `frame0` was the segment's IDR.
    pub fn p_frames(&self, seq: u64, frame0: u64, count: u64) -> Vec<Vec<u8>> {
        let mbs = (self.mbs_w * self.mbs_h) as usize;
        let mut want = vec![(0i32, 0i32); mbs];
        let mut fin = vec![(0i32, 0i32); mbs];
        let mut prev = self.live(seq, frame0);
        let mut out = Vec::with_capacity(count as usize);
        for i in 1..=count {
            let live = self.live(seq, frame0 + i);
            want.fill((0, 0));
            if let Some(l) = &self.layout {
                for (((row, col0), new), old) in self.live_rows().into_iter().zip(&live).zip(&prev)
                {
                    for c in 0..new.len().max(old.len()) {
                        let ch = new.get(c).copied().unwrap_or(b' ');
                        if old.get(c).copied().unwrap_or(b' ') == ch {
                            continue;
                        }
                        let col = col0 + c as u32;
                        if col >= l.cols {
                            break;
                        }
                        let src = match LEGEND.iter().position(|&g| g == ch) {
                            Some(k) => l.legend_col + k as u32,
                            None if ch == b' ' => l.blank_col,
                            None => {
                                debug_assert!(false, "glyph {ch} not on the legend");
                                continue;
                            }
                        };
                        let dx = (src as i32 - col as i32) * l.s as i32 * 16 * 4;
                        let dy = (l.legend as i32 - row as i32) * 16 * 4;
                        for my in row..row + 2 * l.s {
                            for mx in col * l.s..(col + 1) * l.s {
                                want[(my * self.mbs_w + mx) as usize] = (dx, dy);
                            }
                        }
                    }
                }
            }
            out.push(nal(
                0x41,
                &self.p_slice(&want, &mut fin, (i % 65536) as u16),
            ));
            prev = live;
        }
        out
    }

    fn p_slice(&self, want: &[(i32, i32)], fin: &mut [(i32, i32)], frame_num: u16) -> Vec<u8> {
        let w = self.mbs_w as usize;
        let mut b = Bits::new();
        b.ue(0); // first_mb_in_slice
        b.ue(5); // slice_type P (all slices)
        b.ue(0); // pps id
        b.u(16, frame_num as u64);
        b.u(1, 0); // num_ref_idx_active_override
        b.u(1, 0); // ref_pic_list_modification_flag_l0
        b.u(1, 0); // adaptive_ref_pic_marking_mode
        b.se(0); // slice_qp_delta
        b.ue(1); // disable_deblocking_filter_idc: off
        let mut run = 0u64;
        for i in 0..want.len() {
            let (x, y) = (i % w, i / w);
            let a = (x > 0).then(|| fin[i - 1]);
            let up = (y > 0).then(|| fin[i - w]);
            // P_Skip's vector: zero if A or B is missing or has a zero vector, else predicted.
            let skip = match (a, up) {
                (Some(a), Some(u)) if a != (0, 0) && u != (0, 0) => mv_pred(fin, w, x, y),
                _ => (0, 0),
            };
            if skip == want[i] {
                fin[i] = skip;
                run += 1;
                continue;
            }
            let p = mv_pred(fin, w, x, y);
            b.ue(run);
            run = 0;
            b.ue(0); // P_L0_16x16
            b.se((want[i].0 - p.0) as i64);
            b.se((want[i].1 - p.1) as i64);
            b.ue(0); // coded_block_pattern 0: no residual
            fin[i] = want[i];
        }
        if run > 0 {
            b.ue(run);
        }
        b.trailing()
    }
}

/// Does the macroblock equal the prediction from its upper (`vertical`) or left neighbour's edge?
fn predicts(pl: &Planes, mx: usize, my: usize, vertical: bool) -> bool {
    let check = |plane: &[u8], stride: usize, n: usize| {
        let (x0, y0) = (mx * n, my * n);
        if vertical {
            let edge = &plane[(y0 - 1) * stride + x0..(y0 - 1) * stride + x0 + n];
            (y0..y0 + n).all(|y| &plane[y * stride + x0..y * stride + x0 + n] == edge)
        } else {
            (y0..y0 + n).all(|y| {
                let e = plane[y * stride + x0 - 1];
                plane[y * stride + x0..y * stride + x0 + n]
                    .iter()
                    .all(|&v| v == e)
            })
        }
    };
    check(&pl.y, pl.w, 16) && check(&pl.cb, pl.w / 2, 8) && check(&pl.cr, pl.w / 2, 8)
}

/// Motion vector prediction for a 16×16 partition with reference index 0 (8.4.1.3), where every
/// available neighbour is inter-coded with reference index 0.
fn mv_pred(fin: &[(i32, i32)], w: usize, x: usize, y: usize) -> (i32, i32) {
    let i = y * w + x;
    let a = (x > 0).then(|| fin[i - 1]);
    let b = (y > 0).then(|| fin[i - w]);
    let c = if y > 0 && x + 1 < w {
        Some(fin[i - w + 1])
    } else if y > 0 && x > 0 {
        Some(fin[i - w - 1])
    } else {
        None
    };
    if b.is_none() && c.is_none() {
        if let Some(a) = a {
            return a;
        }
    }
    let avail = [a, b, c];
    let n = avail.iter().filter(|v| v.is_some()).count();
    if n == 1 {
        return avail.into_iter().flatten().next().unwrap_or((0, 0));
    }
    let [a, b, c] = avail.map(|v| v.unwrap_or((0, 0)));
    (median(a.0, b.0, c.0), median(a.1, b.1, c.1))
}

fn median(a: i32, b: i32, c: i32) -> i32 {
    a.max(b).min(a.min(b).max(c))
}
