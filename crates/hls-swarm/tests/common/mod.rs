//! Shared test helpers: run the real hls-swarm binary, run the real hls-origin, and a tiny
//! scripted live HLS server for the cases the real origin cannot produce (a 404 segment).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Environment variables the swarm reads; removed from every child so the test environment
/// cannot leak in.
pub const SWARM_ENV: [&str; 25] = [
    "STREAM_URL",
    "CLIENTS",
    "RAMP_RATE",
    "RAMP_JITTER",
    "METRICS_PORT",
    "LOG_LEVEL",
    "VARIANT",
    "TIMEOUT",
    "CONNECT_TIMEOUT",
    "FIRST_BYTE_TIMEOUT",
    "MIN_RATE",
    "RECONNECT",
    "RECONNECT_DELAY_MAX",
    "SEGMENT_RETRIES",
    "DURATION",
    "MAX_ERROR_RATE",
    "SUMMARY_JSON",
    "MAX_LATENCY",
    "CA_FILE",
    "INSECURE",
    "FOLLOW_REDIRECTS",
    "REPORT_HTML",
    "SERIES_JSON",
    "LINGER",
    "START_AT",
];

pub fn swarm_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hls-swarm"))
}

/// A swarm command with a clean environment (only PATH kept from ours).
pub fn swarm() -> Command {
    let mut c = Command::new(swarm_bin());
    for k in SWARM_ENV {
        c.env_remove(k);
    }
    c.stdin(Stdio::null());
    c
}

/// A port for a server that must be told its port up front, like the swarm's metrics port
/// that its healthcheck reads from the command line (see testkit::reserved_port).
pub fn reserved_port() -> u16 {
    testkit::reserved_port()
}

pub fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hls-swarm-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run the swarm to completion and return its output and the parsed summary JSON.
pub fn run_swarm(args: &[&str], summary_name: &str) -> (Output, serde_json::Value) {
    let dir = scratch_dir(summary_name);
    let summary = dir.join("summary.json");
    let out = swarm()
        .args(args)
        .arg("--summary-json")
        .arg(&summary)
        .output()
        .expect("run hls-swarm");
    let text = std::fs::read_to_string(&summary).unwrap_or_else(|e| {
        panic!(
            "no summary JSON ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
    (
        out,
        serde_json::from_str(&text).expect("summary JSON parses"),
    )
}

// ---------------------------------------------------------------------------------------------
// The real hls-origin.

static ORIGIN_BIN: OnceLock<PathBuf> = OnceLock::new();

/// target/<triple>/debug/hls-origin next to this test executable; built once if missing.
pub fn origin_bin() -> PathBuf {
    ORIGIN_BIN
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let dir = exe.parent().unwrap().parent().unwrap().to_path_buf(); // .../debug
            let bin = dir.join("hls-origin");
            if !bin.exists() {
                let status = Command::new(env!("CARGO"))
                    .args(["build", "-p", "hls-origin"])
                    .current_dir(env!("CARGO_MANIFEST_DIR"))
                    .status()
                    .expect("cargo build -p hls-origin");
                assert!(status.success(), "cargo build -p hls-origin failed");
            }
            assert!(bin.exists(), "{} missing after build", bin.display());
            bin
        })
        .clone()
}

/// A running hls-origin, killed on drop; its stderr is kept for failure messages.
pub struct Origin {
    pub port: u16,
    pub child: Child,
    pub log: testkit::ChildLog,
    args: Vec<String>,
}

/// Starts hls-origin with `args` on `port` (0: it picks one and says which in its
/// "hls-origin listening addr=HOST:PORT" line) and waits until /health answers. Returns the
/// child and its port; on failure panics with the origin's stderr.
pub fn spawn_origin(
    args: &[String],
    port: u16,
    stdout: Stdio,
    log: &testkit::ChildLog,
) -> (Child, u16) {
    let mut child = Command::new(origin_bin())
        .args(["--port", &port.to_string(), "--log-level", "info"])
        .args(args)
        .env_remove("PORT")
        .env_remove("LOG_LEVEL")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log.stdio())
        .spawn()
        .expect("start hls-origin");
    let line = log.wait_for_line("hls-origin listening", Duration::from_secs(20), || {
        matches!(child.try_wait(), Ok(None))
    });
    let bound = line.as_deref().and_then(|l| {
        let addr = l.split_whitespace().find_map(|w| w.strip_prefix("addr="))?;
        addr.rsplit(':').next()?.parse::<u16>().ok()
    });
    let Some(bound) = bound else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "hls-origin {args:?} did not start; its stderr:\n{}",
            log.text()
        );
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(bound, "/health").map(|(c, _)| c) != Some(200) {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "hls-origin {args:?} on port {bound} did not become healthy; its stderr:\n{}",
                log.text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, bound)
}

impl Origin {
    pub fn start(segment_duration: u32, list_size: u32, variants: &str) -> Origin {
        Self::start_on(0, segment_duration, list_size, variants)
    }

    /// On `port` (0: the origin picks a free one itself).
    pub fn start_on(port: u16, segment_duration: u32, list_size: u32, variants: &str) -> Origin {
        let args: Vec<String> = vec![
            "--segment-duration".into(),
            segment_duration.to_string(),
            "--list-size".into(),
            list_size.to_string(),
            "--variants".into(),
            variants.into(),
        ];
        let log = testkit::ChildLog::new("hls-origin");
        let (child, port) = spawn_origin(&args, port, Stdio::null(), &log);
        Origin {
            port,
            child,
            log,
            args,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start again on the same port with the same settings (the viewers know only that
    /// port). The port was the origin's own until the kill; should something take it in
    /// between, the start fails with the origin's "cannot listen" in the panic message.
    pub fn restart(&mut self) {
        self.kill();
        let (child, _) = spawn_origin(&self.args, self.port, Stdio::null(), &self.log);
        self.child = child;
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One blocking GET; returns status and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
    Some((code, body))
}

// ---------------------------------------------------------------------------------------------
// A tiny scripted live origin.

/// A live single-variant HLS stream whose segment `fail_msn` always answers 404; counts every
/// request by path.
pub struct TinyOrigin {
    pub port: u16,
    pub counts: Arc<Mutex<HashMap<String, u64>>>,
    stop: Arc<AtomicBool>,
}

pub struct TinyConfig {
    pub segment_secs: f64,
    pub list_size: u64,
    pub segment_bytes: usize,
    /// Media sequence numbers answered with 404.
    pub fail: Box<dyn Fn(u64) -> bool + Send + Sync>,
    /// Some(n): a finished (VOD) stream of segments 0..n with #EXT-X-ENDLIST instead of live.
    pub vod: Option<u64>,
}

impl TinyOrigin {
    pub fn start(cfg: TinyConfig) -> TinyOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let cfg = Arc::new(cfg);
        let t0 = Instant::now();
        {
            let counts = counts.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let counts = counts.clone();
                    let cfg = cfg.clone();
                    std::thread::spawn(move || serve_conn(conn, &cfg, t0, &counts));
                }
            });
        }
        TinyOrigin { port, counts, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn count(&self, path: &str) -> u64 {
        *self.counts.lock().unwrap().get(path).unwrap_or(&0)
    }

    /// Last media sequence number in the playlist now (100 at start, then one more per
    /// segment duration).
    pub fn live_msn(cfg_segment_secs: f64, t0: Instant) -> u64 {
        100 + (t0.elapsed().as_secs_f64() / cfg_segment_secs) as u64
    }
}

impl Drop for TinyOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve_conn(
    conn: TcpStream,
    cfg: &TinyConfig,
    t0: Instant,
    counts: &Mutex<HashMap<String, u64>>,
) {
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
        *counts.lock().unwrap().entry(path.clone()).or_default() += 1;
        let (first, last) = match cfg.vod {
            Some(n) => (0, n - 1),
            None => {
                let last = TinyOrigin::live_msn(cfg.segment_secs, t0);
                (last + 1 - cfg.list_size, last)
            }
        };
        let (code, ctype, body): (u16, &str, Vec<u8>) = if path == "/stream.m3u8" {
            let mut p = format!(
                "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{first}\n",
                cfg.segment_secs.ceil() as u64
            );
            for n in first..=last {
                p += &format!("#EXTINF:{:.3},\nseg{n:05}.ts\n", cfg.segment_secs);
            }
            if cfg.vod.is_some() {
                p += "#EXT-X-ENDLIST\n";
            }
            (200, "application/vnd.apple.mpegurl", p.into_bytes())
        } else if let Some(n) = path
            .strip_prefix("/seg")
            .and_then(|s| s.strip_suffix(".ts"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            if (cfg.fail)(n) || n > last {
                (404, "text/plain", b"gone\n".to_vec())
            } else {
                (200, "video/mp2t", vec![0x47; cfg.segment_bytes])
            }
        } else {
            (404, "text/plain", b"not found\n".to_vec())
        };
        let head = format!(
            "HTTP/1.1 {code} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if w.write_all(head.as_bytes()).is_err() || w.write_all(&body).is_err() {
            return;
        }
    }
}

/// Path of a file in a scratch dir as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Value of one Prometheus sample line (`name{labels}` exactly as written) on a /metrics page.
pub fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Send a signal by PID with the system `kill` program.
pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}
