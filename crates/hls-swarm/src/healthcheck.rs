//! `hls-swarm healthcheck`: exit 0 only when the running swarm's `/health` answers 200.
//!
//! Container images have no shell or curl, and the swarm's metrics port may have been set by a
//! flag, by `METRICS_PORT` baked into the image, or left at its default. So the healthcheck
//! finds the running swarm in /proc (a process with the same executable that is not itself a
//! healthcheck), reads its command line and environment, and resolves the port with the very
//! same clap definition. When no swarm process is visible it falls back to its own flags, env
//! and default.
//!
//! Which swarm, when several run: PID 1 (a container), else one sharing our parent (a test or
//! a script that started both), else our parent, else the lowest PID.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::{self, Settings};

/// The environment variable names the settings read.
pub fn setting_env_names() -> Vec<String> {
    use clap::CommandFactory;
    let cmd = config::Cli::command();
    cmd.get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect()
}

struct Candidate {
    pid: u32,
    ppid: u32,
    cmdline: Vec<OsString>,
    /// None when /proc/PID/environ is not readable: then our own environment stands in (a
    /// `docker exec`ed healthcheck inherits the image's Env, as the swarm did).
    environ: Option<Vec<(OsString, OsString)>>,
}

fn read_nul_list(path: PathBuf) -> Option<Vec<OsString>> {
    let raw = std::fs::read(path).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| OsString::from_vec(s.to_vec()))
            .collect(),
    )
}

fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn is_healthcheck(cmdline: &[OsString]) -> bool {
    match config::parse_from(cmdline.iter().cloned()) {
        Ok((cli, _)) => cli.command.is_some(),
        Err(_) => cmdline.iter().any(|a| a == "healthcheck"),
    }
}

fn find_swarm() -> Option<Candidate> {
    let me = std::process::id();
    let my_exe = std::fs::read_link("/proc/self/exe").ok()?;
    let my_ppid = ppid_of(me).unwrap_or(0);
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        match std::fs::read_link(format!("/proc/{pid}/exe")) {
            Ok(exe) if exe == my_exe => {}
            _ => continue,
        }
        let Some(cmdline) = read_nul_list(PathBuf::from(format!("/proc/{pid}/cmdline"))) else {
            continue;
        };
        if cmdline.is_empty() || is_healthcheck(&cmdline) {
            continue;
        }
        let environ = read_nul_list(PathBuf::from(format!("/proc/{pid}/environ"))).map(|l| {
            l.into_iter()
                .filter_map(|kv| {
                    let b = kv.into_vec();
                    let i = b.iter().position(|c| *c == b'=')?;
                    Some((
                        OsString::from_vec(b[..i].to_vec()),
                        OsString::from_vec(b[i + 1..].to_vec()),
                    ))
                })
                .collect()
        });
        found.push(Candidate {
            pid,
            ppid: ppid_of(pid).unwrap_or(0),
            cmdline,
            environ,
        });
    }
    found.sort_by_key(|c| {
        let rank = if c.pid == 1 {
            0
        } else if c.ppid == my_ppid {
            1
        } else if c.pid == my_ppid {
            2
        } else {
            3
        };
        (rank, c.pid)
    });
    found.into_iter().next()
}

/// Resolve the running swarm's metrics port by parsing its command line with its environment
/// in place of ours. Runs before any thread is started (set_var is then sound).
fn port_of(c: &Candidate) -> Option<u16> {
    if let Some(environ) = &c.environ {
        let names = setting_env_names();
        for name in &names {
            std::env::remove_var(name);
        }
        for (k, v) in environ {
            if names.iter().any(|n| k == n.as_str()) {
                std::env::set_var(k, v);
            }
        }
    }
    let (cli, _) = config::parse_from(c.cmdline.iter().cloned()).ok()?;
    Some(cli.settings.metrics_port)
}

/// Exit code of the healthcheck.
pub fn run(own: &Settings, timeout: Duration) -> i32 {
    let (port, whose) = match find_swarm() {
        Some(c) => match port_of(&c) {
            Some(p) => (p, format!("swarm PID {}", c.pid)),
            None => (own.metrics_port, "own settings".to_string()),
        },
        None => (
            own.metrics_port,
            "own settings (no running swarm found)".to_string(),
        ),
    };
    if port == 0 {
        eprintln!("hls-swarm healthcheck: metrics endpoint is off (METRICS_PORT=0, {whose})");
        return 1;
    }
    match probe(port, timeout) {
        Ok(200) => 0,
        Ok(code) => {
            eprintln!("hls-swarm healthcheck: /health on port {port} ({whose}) answered {code}");
            1
        }
        Err(e) => {
            eprintln!("hls-swarm healthcheck: /health on port {port} ({whose}): {e}");
            1
        }
    }
}

fn probe(port: u16, timeout: Duration) -> std::io::Result<u16> {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(10));
    s.set_read_timeout(Some(left))?;
    s.set_write_timeout(Some(left))?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}
