//! Helpers shared by the workspace's integration tests (a dev-dependency only).
//!
//! - [`reserved_port`]: a port for a server that must be told its port before it starts
//!   (QEMU's `hostfwd`, a healthcheck that reads the server's command line). Servers that can
//!   bind port 0 and report the port they got (hls-origin's "hls-origin listening" line) are
//!   started that way instead; see each crate's `tests/common`.
//! - [`port_is_free`]: whether a server could bind a port now, asked in a way that a child
//!   forked by another thread at that moment cannot turn into a busy port.
//! - [`ChildLog`]: a file that takes a child's stderr, so a test that fails can say why the
//!   server did not come up.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How many ports below the kernel's ephemeral range [`reserved_port`] takes from.
const SPAN: u32 = 8000;

/// A free loopback port that no other test can be handed while this test uses it.
///
/// Why this is not "bind port 0, release, hand the number on": a port from the kernel's
/// ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`) that is released can be taken
/// at once as the *source* port of any outgoing connection, e.g. by a load test running on
/// another thread, and the server then fails to bind it. This helper takes ports from the
/// `SPAN` ports just below that range, which the kernel never hands out on its own, and
/// from a counter shared by every thread of the test process (starting at an offset taken
/// from the process id), so no two tests of one run get the same port. What remains is a
/// process outside the test run binding that exact port in between; the bind check skips
/// ports already in use.
pub fn reserved_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let low = ephemeral_low();
    let base = low.saturating_sub(SPAN).max(1024);
    let span = low - base;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let port = (base + n) as u16;
        // Free on every address (servers here bind 0.0.0.0 or 127.0.0.1).
        if port_is_free(port) {
            return port;
        }
    }
    panic!("no free port in {base}..{low}");
}

/// Whether a server could bind TCP `port` now, on every address (servers here bind 0.0.0.0
/// or 127.0.0.1), probed without listening (see [`bindable`]).
pub fn port_is_free(port: u16) -> bool {
    bindable([0, 0, 0, 0], port) && bindable([127, 0, 0, 1], port)
}

/// Whether a TCP socket can be bound to `ip:port` now; the probe socket is closed on return.
///
/// The probe binds with `SO_REUSEADDR` and never listens. A *listening* probe (what
/// `TcpListener::bind` makes) can outlive its close: a child that another thread of the test
/// process forks at that moment holds a copy of the socket until it execs, and for that
/// while the port refuses the very server it was reserved for (a CI run failed on it; a
/// thread spawning `true` in a loop beside check-then-bind made 114 of 20,000 binds fail with
/// a listening probe and none with this one). A bound, non-listening socket with
/// `SO_REUSEADDR` does not stop a server that sets `SO_REUSEADDR` itself (tokio, std, Go,
/// QEMU's `hostfwd` all do) from binding and listening.
fn bindable(ip: [u8; 4], port: u16) -> bool {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    use std::os::fd::AsRawFd;
    let Ok(fd) = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return false;
    };
    let [a, b, c, d] = ip;
    setsockopt(&fd, sockopt::ReuseAddr, &true).is_ok()
        && bind(fd.as_raw_fd(), &SockaddrIn::new(a, b, c, d, port)).is_ok()
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .filter(|&l: &u32| l > 1024 + 1000)
        .unwrap_or(32768)
}

/// A temporary file that takes a child's stderr (or stdout); removed on drop.
pub struct ChildLog {
    path: PathBuf,
}

impl ChildLog {
    /// A new empty log named after `what` (a server's name, for the reader).
    pub fn new(what: &str) -> ChildLog {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "testkit-{}-{}-{what}.log",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, b"").unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        ChildLog { path }
    }

    /// A `Stdio` that appends to the log (give it to `Command::stderr`).
    pub fn stdio(&self) -> Stdio {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .unwrap_or_else(|e| panic!("{}: {e}", self.path.display()))
            .into()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the child has written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.path).unwrap_or_default()).into_owned()
    }

    /// Waits until a line of the log contains `needle` and returns that line, or `None` when
    /// `timeout` passes or `alive` says the child is gone (then the log says why).
    pub fn wait_for_line(
        &self,
        needle: &str,
        timeout: Duration,
        mut alive: impl FnMut() -> bool,
    ) -> Option<String> {
        let t0 = Instant::now();
        loop {
            if let Some(l) = self.text().lines().find(|l| l.contains(needle)) {
                return Some(l.to_string());
            }
            if t0.elapsed() > timeout || !alive() {
                // One last look: the line may have come with the exit.
                return self
                    .text()
                    .lines()
                    .find(|l| l.contains(needle))
                    .map(str::to_string);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn reserved_ports_are_distinct_free_and_below_the_ephemeral_range() {
        let low = ephemeral_low();
        // Each port is bound the moment it is handed out and held to the end, as a test's
        // server would: a later bind would race whatever else runs on the machine (a loaded
        // CI run once saw one of 50 ports taken in the milliseconds between).
        let mut held = Vec::new();
        let ports: Vec<u16> = (0..50)
            .map(|_| {
                let p = reserved_port();
                match TcpListener::bind(("127.0.0.1", p)) {
                    Ok(l) => held.push(l),
                    Err(e) => {
                        let who = std::process::Command::new("ss")
                            .args(["-ltnp", &format!("sport = :{p}")])
                            .output()
                            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                            .unwrap_or_default();
                        panic!("port {p} was handed out but cannot be bound: {e}\n{who}");
                    }
                }
                p
            })
            .collect();
        let mut sorted = ports.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len(), "{ports:?}");
        for p in ports {
            assert!(
                u32::from(p) < low,
                "{p} is in the ephemeral range from {low}"
            );
        }
    }

    #[test]
    fn a_reserved_port_binds_while_another_thread_spawns_children() {
        // A child forked between the probe and the server's bind holds a copy of every socket
        // the process has open; with a listening probe about one bind in 200 failed here.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spawner = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let _ = std::process::Command::new("true").status();
                }
            })
        };
        let failed: Vec<String> = (0..3000)
            .filter_map(|_| {
                let p = reserved_port();
                TcpListener::bind(("127.0.0.1", p))
                    .err()
                    .map(|e| format!("{p}: {e}"))
            })
            .collect();
        stop.store(true, Ordering::SeqCst);
        spawner.join().unwrap();
        assert!(
            failed.is_empty(),
            "reserved ports that could not be bound: {failed:?}"
        );
    }

    #[test]
    fn child_log_waits_for_a_line_and_stops_early_when_the_child_is_gone() {
        let log = ChildLog::new("echo");
        let mut child = std::process::Command::new("sh")
            .args(["-c", "echo one >&2; echo 'ready on 4242' >&2"])
            .stderr(log.stdio())
            .spawn()
            .unwrap();
        let line = log.wait_for_line("ready on", Duration::from_secs(10), || true);
        assert_eq!(line.as_deref(), Some("ready on 4242"));
        child.wait().unwrap();
        let t0 = Instant::now();
        assert!(log
            .wait_for_line("never", Duration::from_secs(10), || false)
            .is_none());
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert!(log.text().contains("one"));
    }
}
