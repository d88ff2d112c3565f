//! An independent demuxer/decoder (ffprobe) reads the segments.

mod common;

use std::process::Command;

use common::*;

fn ffprobe(args: &[&str], file: &std::path::Path) -> (String, String) {
    let out = Command::new("ffprobe")
        .args(args)
        .arg(file)
        .output()
        .expect("ffprobe must be installed (apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "full: needs ffprobe"]
fn ffprobe_reads_segments_as_h264_and_aac_continuous_across_segments() {
    let s = Server::start(&[
        "--segment-duration",
        "1",
        "--variants",
        "720p:1280x720:2000k/2200k/4000k:128k",
        "--fps",
        "25",
    ]);
    let dir = std::env::temp_dir().join(format!("hls-origin-ffprobe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ms = media_sequence(&s.get("/stream.m3u8").text());
    let a = s.get(&format!("/seg{:05}.ts", ms + 4));
    let b = s.get(&format!("/seg{:05}.ts", ms + 5));
    assert_eq!((a.status, b.status), (200, 200));
    let one = dir.join("one.ts");
    std::fs::write(&one, &a.body).unwrap();
    let two = dir.join("two.ts");
    std::fs::write(&two, [a.body.as_slice(), b.body.as_slice()].concat()).unwrap();

    let (json, _) = ffprobe(
        &[
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ],
        &one,
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let streams = v["streams"].as_array().unwrap();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("video stream");
    let audio = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .expect("audio stream");
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(1280), Some(720))
    );
    assert_eq!(video["r_frame_rate"], "25/1");
    assert_eq!(audio["codec_name"], "aac");
    assert_eq!(audio["sample_rate"], "48000");
    let dur: f64 = v["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((dur - 1.0).abs() < 0.1, "segment duration {dur}");

    // Two consecutive segments demux as one stream: no continuity errors, PTS strictly rising.
    let (_, log) = ffprobe(&["-v", "debug"], &two);
    assert!(!log.contains("Continuity check failed"), "{log}");
    let (csv, _) = ffprobe(
        &[
            "-v",
            "error",
            "-show_entries",
            "packet=pts_time,stream_index",
            "-of",
            "csv=p=0",
        ],
        &two,
    );
    let pts: Vec<f64> = csv
        .lines()
        .filter(|l| l.ends_with(",0") || l.starts_with("0,"))
        .filter_map(|l| {
            l.split(',')
                .find_map(|f| f.contains('.').then(|| f.parse::<f64>().ok()).flatten())
        })
        .collect();
    assert_eq!(pts.len(), 50, "25 fps × 2 s of video packets: {csv}");
    assert!(
        pts.windows(2).all(|w| w[1] > w[0]),
        "video PTS rising: {pts:?}"
    );
    assert!((pts[49] - pts[0] - 1.96).abs() < 0.01);
    let _ = std::fs::remove_dir_all(&dir);
}
