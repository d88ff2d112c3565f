//! `--source DIR`: the user's own segments (made by ffmpeg here) as a looping live stream.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .expect("ffmpeg must be installed (apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hls-origin-source-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Three 2 s segments of ffmpeg's testsrc2 (H.264, 25 fps) with a 440 Hz tone (AAC) unless
/// `audio` is false.
fn make_segments(dir: &Path, audio: bool) {
    let mut c = Command::new("ffmpeg");
    c.args(["-nostdin", "-v", "error", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x180:rate=25");
    if audio {
        c.args(["-f", "lavfi", "-i", "sine=f=440:sample_rate=48000"]);
    }
    c.args([
        "-t",
        "6",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "25",
    ]);
    if audio {
        c.args(["-c:a", "aac"]);
    }
    c.args(["-f", "hls", "-hls_time", "2", "-hls_list_size", "0"])
        .arg("-hls_segment_filename")
        .arg(dir.join("part%03d.ts"))
        .arg(dir.join("index.m3u8"));
    run(&mut c);
}

/// PTS (seconds) of one stream of a file, in packet order.
fn pts(file: &Path, stream: u32) -> Vec<f64> {
    let out = run(Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", &stream.to_string()])
        .args(["-show_entries", "packet=pts_time", "-of", "csv=p=0"])
        .arg(file));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect()
}

#[test]
#[ignore = "full: needs ffmpeg"]
fn a_directory_of_ffmpeg_segments_loops_with_continuous_timestamps() {
    let dir = tmp("good");
    make_segments(&dir, true);
    let s = Server::start(&["--source", dir.to_str().unwrap(), "--list-size", "6"]);

    let m = s.get("/master.m3u8");
    assert_eq!(m.status, 200);
    assert!(
        m.text().contains("CODECS=\"avc1.") && m.text().contains("mp4a.40.2"),
        "{}",
        m.text()
    );
    let p = s.get("/stream.m3u8");
    assert_eq!(p.status, 200);
    let text = p.text();
    let segs: Vec<&str> = text.lines().filter(|l| l.ends_with(".ts")).collect();
    assert_eq!(segs.len(), 6, "{text}");
    // Six segments of a three-file loop: the window crosses the loop point at least once.
    let mut all = Vec::new();
    for seg in &segs {
        let r = s.get(&format!("/{seg}"));
        assert_eq!(r.status, 200, "{seg}");
        assert_eq!(r.header("content-type"), Some("video/mp2t"));
        assert_eq!(
            r.header("cache-control"),
            Some("public, max-age=60, immutable, no-transform")
        );
        all.extend_from_slice(&r.body);
    }
    let joined = dir.join("joined.ts");
    std::fs::write(&joined, &all).unwrap();

    // Decodes without a message, no continuity-counter errors anywhere.
    let out = run(Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(&joined)
        .args(["-f", "null", "-"]));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(Command::new("ffprobe").args(["-v", "debug"]).arg(&joined));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("Continuity check failed"), "{log}");

    // Video: one frame every 40 ms across all twelve seconds, loop points included.
    let v = pts(&joined, 0);
    assert_eq!(v.len(), 6 * 50, "{v:?}");
    for w in v.windows(2) {
        assert!(
            (w[1] - w[0] - 0.04).abs() < 0.002,
            "video PTS {} -> {}",
            w[0],
            w[1]
        );
    }
    // Audio: always moving forwards, never a gap longer than one PES (≤ 0.5 s).
    let a = pts(&joined, 1);
    assert!(a.len() > 20);
    for w in a.windows(2) {
        assert!(
            w[1] > w[0] && w[1] - w[0] < 0.5,
            "audio PTS {} -> {}",
            w[0],
            w[1]
        );
    }
    // The window moves with the clock, with the source's segment durations.
    assert!(text.contains("#EXTINF:2.000,"), "{text}");
    let metrics = s.get("/metrics").text();
    assert!(
        metrics.contains("hls_origin_media_sequence{variant=\"source\"}"),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starting with `--source dir` fails with exit 2 and exactly one line on stderr.
fn one_line_error(dir: &Path) -> String {
    let out = command()
        .args(["--port", "0", "--source"])
        .arg(dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
#[ignore = "full: needs ffmpeg"]
fn bad_source_directories_are_one_line_and_exit_2() {
    let empty = tmp("empty");
    std::fs::write(empty.join("notes.txt"), "no segments here").unwrap();
    let e = one_line_error(&empty);
    assert!(e.contains("no usable segments"), "{e}");

    let missing = empty.join("nope");
    let e = one_line_error(&missing);
    assert!(e.contains("cannot read the directory"), "{e}");

    let junk = tmp("junk");
    std::fs::write(junk.join("a.ts"), vec![0u8; 188 * 3]).unwrap();
    let e = one_line_error(&junk);
    assert!(
        e.contains("a.ts") && e.contains("not a usable MPEG-TS"),
        "{e}"
    );

    // H.264 + AAC next to H.264 alone.
    let mixed = tmp("mixed");
    let with_audio = tmp("with-audio");
    make_segments(&with_audio, true);
    make_segments(&mixed, false);
    std::fs::copy(with_audio.join("part001.ts"), mixed.join("part001.ts")).unwrap();
    let e = one_line_error(&mixed);
    assert!(e.contains("mixed codecs") && e.contains("AAC"), "{e}");

    // A segment over 64 MiB (sparse: it costs no disk).
    let big = tmp("big");
    std::fs::copy(with_audio.join("part000.ts"), big.join("part000.ts")).unwrap();
    let f = std::fs::File::create(big.join("part001.ts")).unwrap();
    f.set_len((64 << 20) + 188).unwrap();
    let e = one_line_error(&big);
    assert!(e.contains("part001.ts") && e.contains("64 MiB"), "{e}");

    for d in [empty, junk, mixed, with_audio, big] {
        let _ = std::fs::remove_dir_all(d);
    }
}
