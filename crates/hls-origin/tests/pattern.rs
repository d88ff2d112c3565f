//! The stream is worth watching: ffmpeg decodes the test pattern and the tone of every rung of
//! the 4k-abr ladder without a complaint, the pictures move, the bars are where they belong and
//! the audio is a loud ~1 kHz tone.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// The ladder of profiles/origin/4k-abr.toml (checked against the file below).
const LADDER: &str = "2160p:3840x2160:15000k/16500k/30000k:192k,\
1080p:1920x1080:5000k/5500k/10000k:128k,\
720p:1280x720:2000k/2200k/4000k:128k,\
480p:854x480:1000k/1100k/2000k:96k,\
360p:640x360:500k/550k/1000k:64k";

/// Decoded pictures are scaled to this size for the checks.
const W: usize = 320;
const H: usize = 180;

fn ffmpeg(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error"])
        .args(args)
        .output()
        .expect("ffmpeg must be installed (apt-get install ffmpeg)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffmpeg {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Frames `picks` of a segment as RGB24 at W×H.
fn frames(file: &Path, picks: &[u32]) -> Vec<Vec<u8>> {
    let select: Vec<String> = picks.iter().map(|n| format!("eq(n\\,{n})")).collect();
    let vf = format!("select='{}',scale={W}:{H}", select.join("+"));
    let raw = ffmpeg(&[
        "-i",
        file.to_str().unwrap(),
        "-vf",
        &vf,
        "-fps_mode",
        "passthrough",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]);
    assert_eq!(raw.len(), picks.len() * W * H * 3, "{}", file.display());
    raw.chunks(W * H * 3).map(<[u8]>::to_vec).collect()
}

/// Magnitude of the component at `f` Hz (amplitude in sample units).
fn tone_amplitude(x: &[f64], f: f64) -> f64 {
    let (mut c, mut s) = (0.0, 0.0);
    for (i, v) in x.iter().enumerate() {
        let ph = 2.0 * std::f64::consts::PI * f * i as f64 / 48_000.0;
        c += v * ph.cos();
        s += v * ph.sin();
    }
    2.0 * (c * c + s * s).sqrt() / x.len() as f64
}

#[test]
#[ignore = "full: needs ffmpeg"]
fn ffmpeg_decodes_a_moving_pattern_and_a_1khz_tone_on_every_4k_abr_rung() {
    let profile = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../profiles/origin/4k-abr.toml"),
    )
    .unwrap();
    for rung in LADDER.split(',') {
        let f: Vec<&str> = rung.split(':').collect();
        assert!(
            profile.contains(&format!("name = \"{}\", resolution = \"{}\"", f[0], f[1])),
            "4k-abr profile has no rung {rung}"
        );
    }
    let s = Server::start(&["--variants", LADDER]);
    let dir = std::env::temp_dir().join(format!("hls-origin-pattern-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    for rung in LADDER.split(',') {
        let name = rung.split(':').next().unwrap();
        let ms = media_sequence(&s.get(&format!("/{name}/stream.m3u8")).text());
        let mut segs = Vec::new();
        for seq in [ms + 8, ms + 9] {
            let r = s.get(&format!("/{name}/seg{seq:05}.ts"));
            assert_eq!(r.status, 200, "{name} segment {seq}");
            let file = dir.join(format!("{name}-{seq}.ts"));
            std::fs::write(&file, &r.body).unwrap();
            // A full decode of video and audio: `-v error` must print nothing.
            ffmpeg(&["-i", file.to_str().unwrap(), "-f", "null", "-"]);
            segs.push(file);
        }

        // 2 s at 30 fps: frames 0 (IDR), 1, 2 and 59 of each segment.
        let a = frames(&segs[0], &[0, 1, 2, 59]);
        let b = frames(&segs[1], &[0, 1, 2, 59]);
        for (i, j) in [(0, 1), (1, 2), (2, 3), (0, 3)] {
            assert_ne!(
                a[i], a[j],
                "{name}: frames {i} and {j} of a segment are the same"
            );
        }
        for (i, pa) in a.iter().enumerate() {
            for (j, pb) in b.iter().enumerate() {
                assert_ne!(
                    pa, pb,
                    "{name}: frame {i} of one segment is frame {j} of the next"
                );
            }
        }
        // The top half is 75 % colour bars: sample the middle of each bar.
        let want = [
            [191, 191, 191],
            [191, 191, 0],
            [0, 191, 191],
            [0, 191, 0],
            [191, 0, 191],
            [191, 0, 0],
            [0, 0, 191],
        ];
        for pic in a.iter().chain(&b) {
            for (k, rgb) in want.iter().enumerate() {
                let x = (2 * k + 1) * W / 14;
                let y = H / 5;
                let px = &pic[(y * W + x) * 3..(y * W + x) * 3 + 3];
                for c in 0..3 {
                    assert!(
                        (px[c] as i32 - rgb[c]).abs() <= 24,
                        "{name}: bar {k} at ({x},{y}) is {px:?}, want about {rgb:?}"
                    );
                }
            }
            // Not flat: the bottom half holds white text on black.
            let bottom = &pic[W * H / 2 * 3..];
            let white = bottom.chunks(3).filter(|p| p.iter().all(|&v| v > 200));
            let black = bottom.chunks(3).filter(|p| p.iter().all(|&v| v < 40));
            assert!(white.count() > W * H / 100, "{name}: no text");
            assert!(black.count() > W * H / 10, "{name}: no black background");
        }

        // Audio: loud, and its energy at the ~1 kHz tone.
        let pcm = ffmpeg(&[
            "-i",
            segs[0].to_str().unwrap(),
            "-vn",
            "-ac",
            "1",
            "-f",
            "s16le",
            "-",
        ]);
        let x: Vec<f64> = pcm
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]) as f64 / 32768.0)
            .collect();
        assert!(x.len() > 90_000, "{name}: {} samples in 2 s", x.len());
        let rms = (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64).sqrt();
        let mean_db = 20.0 * rms.log10();
        assert!(mean_db > -30.0, "{name}: mean volume {mean_db:.1} dB");
        let tone = tone_amplitude(&x, 984.375);
        // A pure sine of amplitude A has RMS A/√2: nearly all the energy is the tone.
        assert!(
            tone / (rms * 2f64.sqrt()) > 0.8,
            "{name}: 1 kHz amplitude {tone:.3} vs RMS {rms:.3}"
        );
        for off in [250.0, 500.0, 1500.0, 3000.0, 6000.0] {
            let o = tone_amplitude(&x, off);
            assert!(o < tone / 20.0, "{name}: {o:.4} at {off} Hz vs {tone:.4}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
