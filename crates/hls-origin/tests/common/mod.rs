//! Shared helpers: start the real binary on a free port and talk raw HTTP/1.1 to it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_hls-origin");

/// Env vars of the settings contract, removed from every child so the caller's shell cannot leak in.
pub const SETTING_ENVS: [&str; 16] = [
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
    "HEADER_TIMEOUT",
    "KEEPALIVE_TIMEOUT",
    "SEND_TIMEOUT",
    "MAX_CONNECTIONS",
];

pub fn command() -> Command {
    let mut c = Command::new(BIN);
    for k in SETTING_ENVS {
        c.env_remove(k);
    }
    c
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running server, killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Start with extra args (the port is chosen here) and wait until /health answers.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with(command(), args)
    }

    pub fn start_with(mut cmd: Command, args: &[&str]) -> Server {
        let port = free_port();
        cmd.arg("--port")
            .arg(port.to_string())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("spawn hls-origin");
        let s = Server { child, port };
        s.wait_ready();
        s
    }

    pub fn wait_ready(&self) {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(r) = try_get(self.port, "/health") {
                if r.status == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server on port {} never became ready", self.port);
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
