//! Servers that misbehave, scripted here because the real origin cannot: one that trickles a
//! byte a second, one that never answers, one whose playlist never ends, one whose segment
//! never ends. The swarm must name each failure with its own error kind, stay within its
//! memory bound, and exit 1 (the error rate is above --max-error-rate).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// What the scripted server does with one request (by path).
#[derive(Clone, Copy)]
enum Act {
    /// A valid live media playlist of three 1-second segments.
    Playlist,
    /// The whole response, head included, one byte per second.
    Trickle,
    /// Read the request, then say nothing.
    Silent,
    /// `#EXTM3U` and then playlist lines for ever, no length (read until close).
    EndlessPlaylist,
    /// A 200 segment whose chunked body never ends.
    EndlessSegment,
}

/// A test-owned listener on 127.0.0.1:0 (it keeps its socket: no port handed around).
struct Scripted {
    port: u16,
}

impl Scripted {
    fn start(route: fn(&str) -> Act) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                std::thread::spawn(move || serve(conn, route));
            }
        });
        Scripted { port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn serve(conn: TcpStream, route: fn(&str) -> Act) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut w = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let ok = match route(&path) {
            Act::Playlist => {
                let msn = 100 + START.elapsed().as_secs();
                let mut p = format!(
                    "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{msn}\n"
                );
                for n in msn..msn + 3 {
                    p += &format!("#EXTINF:1.000,\nseg{n:05}.ts\n");
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.apple.mpegurl\r\nContent-Length: {}\r\n\r\n",
                    p.len()
                );
                w.write_all(head.as_bytes()).is_ok() && w.write_all(p.as_bytes()).is_ok()
            }
            Act::Trickle => {
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nContent-Length: 100000\r\n\r\n{}",
                    "G".repeat(100_000)
                );
                for b in resp.as_bytes() {
                    if w.write_all(std::slice::from_ref(b)).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                true
            }
            Act::Silent => {
                // Hold the connection open until the client gives up.
                let mut sink = [0u8; 1];
                let _ = std::io::Read::read(&mut reader, &mut sink);
                return;
            }
            Act::EndlessPlaylist => {
                let _ = w.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.apple.mpegurl\r\n\r\n#EXTM3U\n#EXT-X-TARGETDURATION:2\n",
                );
                let block = "#EXTINF:2.000,\nseg00001.ts\n".repeat(2048);
                while w.write_all(block.as_bytes()).is_ok() {}
                return;
            }
            Act::EndlessSegment => {
                let _ = w.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\r\n",
                );
                let mut chunk = format!("{:x}\r\n", 64 * 1024).into_bytes();
                chunk.extend(std::iter::repeat_n(0x47u8, 64 * 1024));
                chunk.extend_from_slice(b"\r\n");
                while w.write_all(&chunk).is_ok() {}
                return;
            }
        };
        if !ok {
            return;
        }
    }
}

static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

/// A finished swarm run: exit code, summary JSON, peak resident memory, stderr.
struct Run {
    code: Option<i32>,
    summary: serde_json::Value,
    peak_rss_kib: u64,
    stderr: String,
}

/// Run the swarm against `url`, sampling its peak RSS (VmHWM) while it runs.
fn run(url: &str, extra: &[&str], name: &str) -> Run {
    let dir = scratch_dir(name);
    let summary = dir.join("summary.json");
    let err_path: PathBuf = dir.join("stderr");
    let mut child = swarm()
        .arg(url)
        .args([
            "--clients=1",
            "--ramp-jitter=0",
            "--metrics-port=0",
            "--segment-retries=0",
            "--reconnect-delay-max=200ms",
        ])
        .args(extra)
        .arg("--summary-json")
        .arg(&summary)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn hls-swarm");
    let mut peak = 0;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()));
        if let Some(kib) = status.ok().as_deref().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            peak = peak.max(kib);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let text = std::fs::read_to_string(&summary)
        .unwrap_or_else(|e| panic!("{name}: no summary JSON ({e}); stderr:\n{stderr}"));
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        code: status.code(),
        summary: serde_json::from_str(&text).expect("summary JSON parses"),
        peak_rss_kib: peak,
        stderr,
    }
}

fn errors(r: &Run, kind: &str) -> u64 {
    r.summary["errors"]["by_kind"][kind].as_u64().unwrap_or(0)
}

/// Peak resident memory allowed to one viewer's swarm facing an endless body: the 1 MiB
/// playlist limit and the 256 KiB read buffer on top of the process itself, with room.
const MEMORY_BOUND_KIB: u64 = 32 * 1024;

#[test]
fn a_trickling_or_silent_server_is_a_timeout_of_its_own_kind_not_a_hang() {
    let _ = *START;
    let trickle = Scripted::start(|p| {
        if p.ends_with(".m3u8") {
            Act::Playlist
        } else {
            Act::Trickle
        }
    });
    let silent = Scripted::start(|p| {
        if p.ends_with(".m3u8") {
            Act::Playlist
        } else {
            Act::Silent
        }
    });
    let silent_url = silent.url("/stream.m3u8");
    // The whole-request --timeout is far beyond the run: only the new limits can fire.
    let t = std::thread::spawn(move || {
        run(
            &silent_url,
            &["--duration=6s", "--timeout=60", "--first-byte-timeout=1"],
            "silent",
        )
    });
    let r = run(
        &trickle.url("/stream.m3u8"),
        &["--duration=7s", "--timeout=60", "--min-rate=100"],
        "trickle",
    );
    let s = t.join().unwrap();
    eprintln!(
        "trickle: {} slow in 7 s; silent: {} first_byte_timeout in 6 s",
        errors(&r, "slow"),
        errors(&s, "first_byte_timeout")
    );

    // 1 byte/s against 100 B/s judged over 2 s windows: each segment fails about 2 s after
    // its first byte, so a 7 s run sees at least two.
    assert!(errors(&r, "slow") >= 2, "{}\n{}", r.summary, r.stderr);
    assert_eq!(errors(&r, "timeout"), 0, "{}", r.summary);
    assert_eq!(
        r.summary["errors"]["by_request"]["segment"],
        r.summary["errors"]["total"]
    );
    assert_eq!(
        r.code,
        Some(1),
        "errors above 1 % fail the run: {}",
        r.stderr
    );

    assert!(
        errors(&s, "first_byte_timeout") >= 3,
        "{}\n{}",
        s.summary,
        s.stderr
    );
    assert_eq!(errors(&s, "timeout"), 0, "{}", s.summary);
    assert_eq!(s.code, Some(1), "{}", s.stderr);
}

#[test]
fn an_endless_playlist_or_segment_is_too_large_within_the_memory_bound() {
    let playlist = Scripted::start(|_| Act::EndlessPlaylist);
    let segment = Scripted::start(|p| {
        if p.ends_with(".m3u8") {
            Act::Playlist
        } else {
            Act::EndlessSegment
        }
    });
    let segment_url = segment.url("/stream.m3u8");
    let t = std::thread::spawn(move || run(&segment_url, &["--duration=5s"], "endless-segment"));
    let p = run(
        &playlist.url("/stream.m3u8"),
        &["--duration=4s"],
        "endless-playlist",
    );
    let g = t.join().unwrap();
    eprintln!(
        "endless playlist: {} too_large, peak RSS {} KiB; endless segment: {} too_large, peak RSS {} KiB",
        errors(&p, "too_large"),
        p.peak_rss_kib,
        errors(&g, "too_large"),
        g.peak_rss_kib
    );

    // Every playlist load ends at the 1 MiB limit; the viewer reconnects and tries again.
    assert!(errors(&p, "too_large") >= 2, "{}\n{}", p.summary, p.stderr);
    assert_eq!(
        p.summary["errors"]["by_request"]["master"],
        p.summary["errors"]["total"]
    );
    assert!(
        p.peak_rss_kib > 0 && p.peak_rss_kib < MEMORY_BOUND_KIB,
        "peak RSS {} KiB (bound {MEMORY_BOUND_KIB} KiB)",
        p.peak_rss_kib
    );
    assert_eq!(p.code, Some(1), "{}", p.stderr);

    // A segment is counted, not kept, but an endless one still ends at 64 MiB.
    assert!(errors(&g, "too_large") >= 1, "{}\n{}", g.summary, g.stderr);
    assert_eq!(
        g.summary["errors"]["by_request"]["segment"],
        g.summary["errors"]["total"]
    );
    assert!(
        g.peak_rss_kib > 0 && g.peak_rss_kib < MEMORY_BOUND_KIB,
        "peak RSS {} KiB (bound {MEMORY_BOUND_KIB} KiB)",
        g.peak_rss_kib
    );
    assert_eq!(g.code, Some(1), "{}", g.stderr);
}
