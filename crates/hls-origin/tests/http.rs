//! The origin as a player, a CDN and an operator see it: real binary, real HTTP.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use m3u8_rs::Playlist;

fn media(body: &[u8]) -> m3u8_rs::MediaPlaylist {
    match m3u8_rs::parse_playlist_res(body) {
        Ok(Playlist::MediaPlaylist(p)) => p,
        other => panic!(
            "not a media playlist: {other:?}\n{}",
            String::from_utf8_lossy(body)
        ),
    }
}

/// Live-window rules of RFC 8216 as an independent parser reads them.
fn check_live_window(
    p: &m3u8_rs::MediaPlaylist,
    list_size: usize,
    seg_dur: f32,
    pattern: impl Fn(u64) -> String,
) {
    assert!(!p.end_list, "a live playlist has no EXT-X-ENDLIST");
    assert_eq!(p.segments.len(), list_size);
    for (i, s) in p.segments.iter().enumerate() {
        assert!(
            (s.duration - seg_dur).abs() < 0.001,
            "EXTINF {}",
            s.duration
        );
        assert!(
            s.duration.round() as u64 <= p.target_duration,
            "EXTINF above TARGETDURATION"
        );
        assert_eq!(s.uri, pattern(p.media_sequence + i as u64));
        assert!(
            s.program_date_time.is_some(),
            "PROGRAM-DATE-TIME on every segment"
        );
    }
    let t: Vec<i64> = p
        .segments
        .iter()
        .map(|s| s.program_date_time.unwrap().timestamp_millis())
        .collect();
    for w in t.windows(2) {
        assert!(
            (w[1] - w[0] - (seg_dur * 1000.0) as i64).abs() <= 1,
            "PDT steps by the segment duration: {t:?}"
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let newest_end = t.last().unwrap() + (seg_dur * 1000.0) as i64;
    assert!(
        (now - newest_end).abs() < 2000 + (seg_dur * 1000.0) as i64,
        "live edge is now-ish: {newest_end} vs {now}"
    );
}

#[test]
fn playlists_are_valid_live_hls_with_the_right_headers() {
    let s = Server::start(&[]);
    let m = s.get("/master.m3u8");
    assert_eq!(m.status, 200);
    assert_eq!(
        m.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(
        m.header("cache-control"),
        Some("public, max-age=5, stale-while-revalidate=10, no-transform")
    );
    assert_eq!(m.header("access-control-allow-origin"), Some("*"));
    assert!(m
        .header("access-control-expose-headers")
        .unwrap()
        .contains("Content-Range"));
    let Ok(Playlist::MasterPlaylist(master)) = m3u8_rs::parse_playlist_res(&m.body) else {
        panic!("{}", m.text())
    };
    assert_eq!(master.variants.len(), 1);
    let v = &master.variants[0];
    assert_eq!(v.uri, "stream.m3u8");
    assert_eq!(v.bandwidth, (5500 + 128) * 1000);
    assert_eq!(v.average_bandwidth, Some((5000 + 128) * 1000));
    let r = v.resolution.unwrap();
    assert_eq!((r.width, r.height), (1920, 1080));
    assert!(v.codecs.as_deref().unwrap().starts_with("avc1.42"));
    assert!(v.codecs.as_deref().unwrap().contains("mp4a.40.2"));
    assert_eq!(v.frame_rate, Some(30.0));

    let p = s.get("/stream.m3u8");
    assert_eq!(p.status, 200);
    assert_eq!(
        p.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(
        p.header("cache-control"),
        Some("public, max-age=1, stale-while-revalidate=2, no-transform")
    );
    let pl = media(&p.body);
    assert_eq!(pl.target_duration, 2);
    assert!(p.text().contains("#EXT-X-VERSION:3"));
    check_live_window(&pl, 10, 2.0, |n| format!("seg{n:05}.ts"));

    // Every listed segment is served, as MPEG-TS of the configured size.
    let first = &pl.segments[0].uri;
    let seg = s.get(&format!("/{first}"));
    assert_eq!(seg.status, 200);
    assert_eq!(seg.header("content-type"), Some("video/mp2t"));
    assert_eq!(
        seg.header("cache-control"),
        Some("public, max-age=60, immutable, no-transform")
    );
    assert_eq!(seg.header("accept-ranges"), Some("bytes"));
    let want = (5000 + 128) * 1000 * 2 / 8;
    let got = seg.body.len();
    assert!(
        (got as f64 / want as f64 - 1.0).abs() < 0.02,
        "segment {got} bytes, want ~{want}"
    );
    assert_eq!(got % 188, 0);
    assert!(
        seg.body.chunks(188).all(|p| p[0] == 0x47),
        "188-byte packets with sync bytes"
    );
}

#[test]
fn several_variants_get_a_master_and_one_directory_each() {
    let ladder = "2160p:3840x2160:15000k/16500k/30000k:192k,360p:640x360:500k/550k/1000k:64k";
    let s = Server::start(&[
        "--variants",
        ladder,
        "--segment-duration",
        "1",
        "--list-size",
        "4",
    ]);
    let m = s.get("/master.m3u8");
    let Ok(Playlist::MasterPlaylist(master)) = m3u8_rs::parse_playlist_res(&m.body) else {
        panic!("{}", m.text())
    };
    let uris: Vec<&str> = master.variants.iter().map(|v| v.uri.as_str()).collect();
    assert_eq!(uris, ["2160p/stream.m3u8", "360p/stream.m3u8"]);
    assert_eq!(master.variants[0].bandwidth, (16500 + 192) * 1000);
    assert_eq!(master.variants[1].resolution.unwrap().width, 640);
    assert_eq!(
        s.get("/stream.m3u8").status,
        404,
        "no root media playlist with several variants"
    );
    for (name, kbps) in [("2160p", 15000 + 192), ("360p", 500 + 64)] {
        let p = s.get(&format!("/{name}/stream.m3u8"));
        assert_eq!(p.status, 200);
        let pl = media(&p.body);
        check_live_window(&pl, 4, 1.0, |n| format!("seg{n:05}.ts"));
        let seg = s.get(&format!("/{name}/{}", pl.segments[3].uri));
        assert_eq!(seg.status, 200);
        let want = kbps * 1000 / 8; // one second
        let got = seg.body.len();
        assert!(
            (got as f64 / want as f64 - 1.0).abs() < 0.03,
            "{name}: {got} vs {want}"
        );
    }
}

/// Status of segment `ms + offset`, where `ms` is the media sequence of a playlist fetched just
/// before; retried until the window did not move during the check (the machine may be loaded).
fn status_relative_to_window(s: &Server, offset: i64) -> (u64, u16) {
    for _ in 0..10 {
        let ms = media_sequence(&s.get("/stream.m3u8").text());
        let seq = ms as i64 + offset;
        if seq < 0 {
            return (ms, 404);
        }
        let st = s.get(&format!("/seg{seq:05}.ts")).status;
        if media_sequence(&s.get("/stream.m3u8").text()) == ms {
            return (ms, st);
        }
    }
    panic!("the window moved during every attempt");
}

#[test]
fn window_advances_with_the_clock_and_old_segments_expire() {
    let s = Server::start(&[
        "--segment-duration",
        "0.5",
        "--list-size",
        "3",
        "--delete-threshold",
        "2",
    ]);
    let t0 = Instant::now();
    let p0 = s.get("/stream.m3u8");
    let t0_done = Instant::now();
    let ms0 = media_sequence(&p0.text());
    assert_eq!(
        p0.header("cache-control"),
        Some("public, max-age=1, stale-while-revalidate=1, no-transform")
    );
    check_live_window(&media(&p0.body), 3, 0.5, |n| format!("seg{n:05}.ts"));
    // In the window: served. The next segment does not exist yet.
    assert_eq!(status_relative_to_window(&s, 0).1, 200);
    assert_eq!(status_relative_to_window(&s, 2).1, 200);
    assert_eq!(status_relative_to_window(&s, 3).1, 404, "future segment");

    std::thread::sleep(Duration::from_millis(1800));
    let t1 = Instant::now();
    let p1 = s.get("/stream.m3u8");
    let t1_done = Instant::now();
    let ms1 = media_sequence(&p1.text());
    // The sequence moved by elapsed / 0.5 s, give or take the request times.
    let lo = ((t1 - t0_done).as_secs_f64() / 0.5).floor() as u64;
    let hi = ((t1_done - t0).as_secs_f64() / 0.5).ceil() as u64;
    assert!(lo >= 3, "slept 1.8 s");
    assert!(
        (ms0 + lo - 1..=ms0 + hi).contains(&ms1),
        "media sequence {ms0} -> {ms1}, expected +{lo}..+{hi}"
    );
    check_live_window(&media(&p1.body), 3, 0.5, |n| format!("seg{n:05}.ts"));
    // Out of the window but within the delete threshold (2): still served; beyond: gone.
    assert_eq!(
        status_relative_to_window(&s, -1).1,
        200,
        "kept for delete-threshold"
    );
    assert_eq!(
        status_relative_to_window(&s, -2).1,
        200,
        "kept for delete-threshold"
    );
    let (ms, st) = status_relative_to_window(&s, -3);
    assert_eq!(st, 404, "segment {} expired at media sequence {ms}", ms - 3);
    assert_eq!(s.get("/seg00000.ts").status, 404);
}

#[test]
fn byte_ranges_on_segments() {
    let s = Server::start(&["--segment-duration", "1"]);
    // Numbers follow the wall clock: take one from the middle of the current window.
    let seg = format!(
        "/seg{:05}.ts",
        media_sequence(&s.get("/stream.m3u8").text()) + 5
    );
    let full = s.get(&seg).body;
    let len = full.len();
    let r = s.req(&format!(
        "GET {seg} HTTP/1.1\r\nHost: t\r\nRange: bytes=188-375\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 188-375/{len}").as_str())
    );
    assert_eq!(r.header("content-length"), Some("188"));
    assert_eq!(r.body, &full[188..376]);
    let r = s.req(&format!(
        "GET {seg} HTTP/1.1\r\nHost: t\r\nRange: bytes=-100\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &full[len - 100..]);
    let r = s.req(&format!(
        "GET {seg} HTTP/1.1\r\nHost: t\r\nRange: bytes={len}-\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    // HEAD: same headers, no body.
    let r = s.req(&format!(
        "HEAD {seg} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(len.to_string().as_str()));
    assert!(r.body.is_empty());
}

#[test]
fn options_preflight_and_other_methods() {
    let s = Server::start(&[]);
    let r = s.req("OPTIONS /stream.m3u8 HTTP/1.1\r\nHost: t\r\nOrigin: http://x\r\nAccess-Control-Request-Headers: range\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, HEAD, OPTIONS")
    );
    assert_eq!(r.header("access-control-allow-headers"), Some("Range"));
    assert_eq!(r.header("access-control-max-age"), Some("86400"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    for m in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = s.req(&format!("{m} /stream.m3u8 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"));
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
    }
    assert_eq!(s.get("/nope.m3u8").status, 404);
}

#[test]
fn health_and_keep_alive() {
    let s = Server::start(&[]);
    let h = s.get("/health");
    assert_eq!((h.status, h.body.as_slice()), (200, &b"OK\n"[..]));
    assert!(h.header("content-type").unwrap().starts_with("text/plain"));
    assert_eq!(h.header("cache-control"), Some("no-store"));
    // Three requests on one connection, pipelined.
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\nGET /master.m3u8 HTTP/1.1\r\nHost: t\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).unwrap();
    let rs = read_responses(&buf, true);
    assert_eq!(
        rs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200, 200]
    );
    assert_eq!(rs[0].header("connection"), Some("keep-alive"));
    assert!(rs[1].text().starts_with("#EXTM3U"));
    assert_eq!(rs[2].header("connection"), Some("close"));
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_counters_move() {
    let s = Server::start(&["--segment-duration", "0.5"]);
    let m0 = s.get("/metrics");
    assert_eq!(m0.status, 200);
    assert!(m0
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let t0 = m0.text();
    let seg = "hls_origin_requests_total{kind=\"segment\",status=\"200\"}";
    let bytes = "hls_origin_response_bytes_total{kind=\"segment\"}";
    let before = metric(&t0, seg);
    let b0 = metric(&t0, bytes);
    let ms = media_sequence(&s.get("/stream.m3u8").text());
    // Two segments (their sizes may differ: the pictures in them do).
    let len = (s.get(&format!("/seg{:05}.ts", ms + 1)).body.len()
        + s.get(&format!("/seg{:05}.ts", ms + 2)).body.len()) as f64;
    s.get("/seg99999.ts");
    std::thread::sleep(Duration::from_millis(600));
    let t1 = s.get("/metrics").text();
    assert_eq!(metric(&t1, seg), before + 2.0);
    assert_eq!(
        metric(
            &t1,
            "hls_origin_requests_total{kind=\"segment\",status=\"404\"}"
        ),
        1.0
    );
    assert!(metric(&t1, bytes) >= b0 + len - 1.0);
    assert!(
        metric(&t1, "hls_origin_request_duration_seconds_count")
            > metric(&t0, "hls_origin_request_duration_seconds_count")
    );
    assert!(
        metric(&t1, "hls_origin_requests_in_flight") >= 1.0,
        "the scrape itself is in flight"
    );
    let ms0 = metric(&t0, "hls_origin_media_sequence{variant=\"1080p\"}");
    let ms1 = metric(&t1, "hls_origin_media_sequence{variant=\"1080p\"}");
    assert!(ms1 > ms0, "media sequence gauge advances: {ms0} -> {ms1}");
    assert!(t1.contains("hls_origin_request_duration_seconds_bucket{le=\"+Inf\"}"));
}

#[test]
fn access_log_lines_for_segments_only() {
    let port = reserved_port();
    let log = testkit::ChildLog::new("hls-origin-access-log");
    let mut child = command()
        .args(["--port", &port.to_string(), "--access-log", "segments"])
        .stdout(Stdio::piped())
        .stderr(log.stdio())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while try_get(port, "/health").is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "server never came up; its stderr:\n{}",
            log.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let seg = format!(
        "seg{:05}.ts",
        media_sequence(&get(port, "/stream.m3u8").text()) + 3
    );
    get(port, &format!("/{seg}"));
    std::thread::sleep(Duration::from_millis(100));
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = child.wait();
    assert!(
        out.contains(&format!("\"GET /{seg} HTTP/1.1\" 200")),
        "access log: {out:?}"
    );
    assert!(
        !out.contains("stream.m3u8") && !out.contains("/health"),
        "segments only: {out:?}"
    );
}

#[test]
fn sigterm_stops_within_a_second() {
    for sig in ["TERM", "INT"] {
        let mut s = Server::start(&[]);
        // A keep-alive client connection is open while the signal arrives.
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let t0 = Instant::now();
        let st = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &s.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        loop {
            if let Some(status) = s.child.try_wait().unwrap() {
                assert!(status.success(), "SIG{sig} exit status {status:?}");
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(1),
                "still running 1 s after SIG{sig}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            TcpStream::connect(("127.0.0.1", s.port)).is_err(),
            "listener closed"
        );
    }
}
