//! Shared helpers: start the real binary on a port it picks itself and talk raw HTTP/1.1 to it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_hls-origin");

/// Env vars of the settings contract, removed from every child so the caller's shell cannot leak in.
pub const SETTING_ENVS: [&str; 19] = [
    "PORT",
    "BIND",
    "SEGMENT_DURATION",
    "LIST_SIZE",
    "DELETE_THRESHOLD",
    "PLAYLIST_NAME",
    "MASTER_NAME",
    "SEGMENT_PATTERN",
    "FPS",
    "VARIANTS",
    "ACCESS_LOG",
    "LOG_LEVEL",
    "SOURCE_DIR",
    "HEADER_TIMEOUT",
    "KEEPALIVE_TIMEOUT",
    "SEND_TIMEOUT",
    "MAX_CONNECTIONS",
    "TLS_CERT",
    "TLS_KEY",
];

pub fn command() -> Command {
    let mut c = Command::new(BIN);
    for k in SETTING_ENVS {
        c.env_remove(k);
    }
    c
}

/// A port for a server that must be told its port up front (see testkit::reserved_port).
pub fn reserved_port() -> u16 {
    testkit::reserved_port()
}

/// The port in hls-origin's "hls-origin listening addr=HOST:PORT" log line.
pub fn listening_port(line: &str) -> Option<u16> {
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))?;
    addr.rsplit(':').next()?.parse().ok()
}

/// A running server, killed on drop; its stderr is kept for failure messages.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub log: testkit::ChildLog,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Start with extra args on a port the server picks itself (`--port 0`, read back from
    /// its log) and wait until /health answers.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with(command(), args)
    }

    pub fn start_with(cmd: Command, args: &[&str]) -> Server {
        Self::start_on(cmd, 0, args)
    }

    /// Start on `port` (0: the server picks; a test that needs the port on the server's
    /// command line, like the healthcheck's, passes a [`reserved_port`]).
    pub fn start_on(mut cmd: Command, port: u16, args: &[&str]) -> Server {
        let log = testkit::ChildLog::new("hls-origin");
        // The "listening" line is an info line: keep info on whatever the caller's env says.
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--log-level")
            .arg("info")
            .args(args)
            .stdout(Stdio::null())
            .stderr(log.stdio());
        let mut child = cmd.spawn().expect("spawn hls-origin");
        let line = log.wait_for_line("hls-origin listening", Duration::from_secs(20), || {
            matches!(child.try_wait(), Ok(None))
        });
        let Some(port) = line.as_deref().and_then(listening_port) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "hls-origin {args:?} did not report its port; its stderr:\n{}",
                log.text()
            );
        };
        let s = Server { child, port, log };
        s.wait_ready();
        s
    }

    pub fn wait_ready(&self) {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if let Ok(r) = try_get(self.port, "/health") {
                if r.status == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "server on port {} never became ready; its stderr:\n{}",
            self.port,
            self.log.text()
        );
    }

    pub fn get(&self, path: &str) -> Resp {
        get(self.port, path)
    }

    pub fn req(&self, raw: &str) -> Resp {
        request(self.port, raw).unwrap()
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn get(port: u16, path: &str) -> Resp {
    try_get(port, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

pub fn try_get(port: u16, path: &str) -> std::io::Result<Resp> {
    request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
}

/// Send one raw request on a fresh connection; read until the server closes.
pub fn request(port: u16, raw: &str) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(raw.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let mut rs = read_responses(&buf, !raw.starts_with("HEAD"));
    Ok(rs.remove(0))
}

/// Parse one or more responses (Content-Length framed) from a buffer.
pub fn read_responses(mut buf: &[u8], with_body: bool) -> Vec<Resp> {
    let mut out = Vec::new();
    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let len = if with_body && status != 204 {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse::<usize>().unwrap())
                .unwrap_or(0)
        } else {
            0
        };
        let body = buf[end + 4..end + 4 + len].to_vec();
        buf = &buf[end + 4 + len..];
        out.push(Resp {
            status,
            headers,
            body,
        });
    }
    out
}

/// Media sequence number of a media playlist.
pub fn media_sequence(playlist: &str) -> u64 {
    playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .expect("MEDIA-SEQUENCE")
        .parse()
        .unwrap()
}
