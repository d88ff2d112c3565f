//! The test tone: pre-encoded AAC-LC frames (48 kHz stereo), chosen per frame by its index on
//! the stream's timeline.
//!
//! A 984.375 Hz tone (the nearest frequency to 1 kHz with a whole number of cycles in a
//! 1024-sample frame, so every steady frame is the same frame) at −12 dBFS, and a beep
//! (1968.75 Hz added) for the five frames (≈107 ms) that start with the first frame beginning at
//! or after each full second of wall-clock time. The frames come from ffmpeg's AAC encoder,
//! once, offline (`scripts/tone-frames`); the origin only picks them. Each is smaller than the
//! 163 bytes that fit one TS packet with its PES and ADTS headers.

include!("tone_frames.rs");

const RATE: u64 = 48_000;
const FRAME: u64 = 1024;

/// Position of audio frame `b` (counted from the Unix epoch) after the first frame that starts
/// in the same second of wall-clock time.
fn into_second(b: u64) -> u64 {
    let s = b * FRAME / RATE;
    b - (s * RATE).div_ceil(FRAME)
}

/// The raw_data_block of audio frame `j`. Frame `j`'s transform window spans frames `j` and
/// `j + 1`, so the beep's first frame is announced one frame early.
pub fn frame(j: u64) -> &'static [u8] {
    if into_second(j + 1) == 0 {
        return RISE;
    }
    match into_second(j) {
        k @ 0..=3 => BEEP[k as usize],
        4 => FALL,
        _ => STEADY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_fit_one_ts_packet() {
        for f in [STEADY, RISE, FALL].iter().chain(BEEP.iter()) {
            assert!(f.len() <= 184 - 14 - 7, "{} bytes", f.len());
        }
    }

    #[test]
    fn one_beep_per_second() {
        // One minute of frames: four beep frames in every second, one rise before each second
        // but the first (its rise would be frame -1).
        let frames = 48_000 * 60 / 1024;
        let rises = (0..frames).filter(|&j| frame(j) == RISE).count() as u64;
        let beeps = (0..frames).filter(|&j| BEEP.contains(&frame(j))).count() as u64;
        assert_eq!(rises, 59);
        assert_eq!(beeps, 4 * 60);
        // The rise precedes the first frame starting at or after the second.
        assert_eq!(frame(0), BEEP[0]);
        assert_eq!(frame(46), RISE); // frame 47 starts at 48128 samples, after 1 s
        assert_eq!(frame(47), BEEP[0]);
    }
}
