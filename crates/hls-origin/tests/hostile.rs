//! Hostile and broken peers against the real origin while real viewers (the hls-swarm binary)
//! play: connections that send half a request header, connections that send nothing,
//! keep-alive connections that go quiet, and clients that stop reading a response. Each must
//! be closed by its own timeout (within the timeout + 1 s), counted in /metrics, cost the
//! viewers nothing, and leave the origin's descriptor count where it started. And beyond
//! --max-connections new connections are refused with a 503, not by the process failing.
//!
//! The test tier runs a tenth of the load; the full tier (`-- --include-ignored`) the issue's
//! 2000 half-open + 2000 idle connections against 200 viewers.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short limits so the test takes seconds; the production defaults are 10/75/60 s.
const HEADER_TIMEOUT: f64 = 3.0;
const KEEPALIVE_TIMEOUT: f64 = 3.0;
const SEND_TIMEOUT: f64 = 3.0;
/// The bound: closed within the timeout plus one second.
const SLACK: f64 = 1.0;
/// A small rung: 1 s segments of about 70 KB, so 200 viewers are cheap on a shared machine.
const LADDER: &str = "360p:640x360:500k/550k/1000k:64k";

/// An origin started on a port it picks itself (--port 0), its stderr kept in a file for
/// failure messages; killed on drop.
struct Origin {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Origin {
    fn start(name: &str, extra: &[&str]) -> Origin {
        let dir =
            std::env::temp_dir().join(format!("hls-origin-hostile-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("stderr");
        let child = common::command()
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--segment-duration",
                "1",
            ])
            .args(["--variants", LADDER])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn hls-origin");
        let mut o = Origin {
            child,
            port: 0,
            log,
        };
        let t0 = Instant::now();
        // The listening line names the address the kernel gave: addr=127.0.0.1:PORT.
        while o.port == 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "hls-origin did not start:\n{}",
                o.stderr()
            );
            let text = o.stderr();
            if let Some(p) = text
                .lines()
                .filter(|l| l.contains("hls-origin listening"))
                .find_map(|l| l.split("addr=127.0.0.1:").nth(1))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|p| p.parse().ok())
            {
                o.port = p;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        o
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        let r = common::try_get(self.port, "/metrics")
            .unwrap_or_else(|e| panic!("GET /metrics: {e}\n{}", self.stderr()));
        assert_eq!(r.status, 200, "{}", self.stderr());
        r.text()
    }

    fn metric(&self, series: &str) -> u64 {
        let page = self.metrics();
        page.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing from /metrics:\n{page}"))
    }

    /// (all descriptors, socket descriptors) the origin holds now.
    fn fds(&self) -> (usize, usize) {
        let dir = format!("/proc/{}/fd", self.child.id());
        let mut all = 0;
        let mut sockets = 0;
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            all += 1;
            if std::fs::read_link(e.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
            {
                sockets += 1;
            }
        }
        (all, sockets)
    }

    /// Each origin thread's time spent waiting on a run queue so far (schedstat's second
    /// field, in ns), by thread id.
    fn run_delays(&self) -> std::collections::HashMap<String, u64> {
        let dir = format!("/proc/{}/task", self.child.id());
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter_map(|t| {
                let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
                let wait = stat.split_whitespace().nth(1)?.parse().ok()?;
                Some((t.file_name().to_string_lossy().into_owned(), wait))
            })
            .collect()
    }

    /// The longest any origin thread has waited for a core since `before`, in seconds.
    fn longest_run_delay_since(&self, before: &std::collections::HashMap<String, u64>) -> f64 {
        self.run_delays()
            .iter()
            .map(|(tid, now)| now.saturating_sub(before.get(tid).copied().unwrap_or(0)))
            .max()
            .unwrap_or(0) as f64
            / 1e9
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The stderr file has served the failure messages by now; nothing stays in /tmp.
        if let Some(dir) = self.log.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Raise this test process's soft open-file limit to its hard limit (thousands of sockets).
fn raise_nofile(need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    assert!(
        lim.rlim_cur >= need,
        "the hard open-file limit {} is below the {need} descriptors this test needs (ulimit -Hn)",
        lim.rlim_cur
    );
}

/// The hls-swarm binary of this workspace, built (or brought up to date) first.
fn swarm_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap(); // .../debug
    let st = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "hls-swarm"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo build -p hls-swarm");
    assert!(st.success(), "cargo build -p hls-swarm failed");
    let bin = dir.join("hls-swarm");
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

/// What one hostile connection saw of the server's clock, which starts at its accept
/// (or its last response): the close came at least `min_after` and at most `max_after`
/// after it. (`min_after` counts from before the connect, so client scheduling delays can
/// only make it longer; `max_after` from when the connect was seen done.)
struct Closed {
    min_after: Duration,
    max_after: Duration,
}

/// Connect and send `send` (maybe nothing, maybe half a header), then wait for the close.
async fn hold(port: u16, send: &'static [u8]) -> Closed {
    let before = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let connected = Instant::now();
    if !send.is_empty() {
        s.write_all(send).await.unwrap();
    }
    let c = wait_closed(&mut s, connected).await;
    Closed {
        min_after: c.min_after + (connected - before),
        max_after: c.max_after,
    }
}

/// One complete request, its whole answer read, then silence on a kept-alive connection.
async fn keep_alive_then_idle(port: u16) -> Closed {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // The server's idle clock starts after its answer: after this, before it is read.
    let before = Instant::now();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"\r\n\r\nOK\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before the answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let answered = Instant::now();
    let c = wait_closed(&mut s, answered).await;
    Closed {
        min_after: c.min_after + (answered - before),
        max_after: c.max_after,
    }
}

/// Ask for many segments at once and never read: the server's writes stall.
async fn stop_reading(port: u16, path: String) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").repeat(400);
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

async fn wait_closed(s: &mut TcpStream, t0: Instant) -> Closed {
    let mut buf = [0u8; 4096];
    let limit = Duration::from_secs_f64(HEADER_TIMEOUT.max(KEEPALIVE_TIMEOUT) + 20.0);
    loop {
        match tokio::time::timeout(limit.saturating_sub(t0.elapsed()), s.read(&mut buf)).await {
            Err(_) => panic!("still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Closed {
                    min_after: t0.elapsed(),
                    max_after: t0.elapsed(),
                }
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// `lag`: the longest the test's own runtime was late waking a task meanwhile (measured by a
/// probe task). A close is observed at best that late, so it widens the upper bound: what
/// remains is the origin's own lateness, held to the issue's +1 s.
fn check_closed_in_time(
    what: &str,
    closed: &[Closed],
    timeout: f64,
    lag: f64,
    log: &dyn Fn() -> String,
) {
    let (min, max) = closed.iter().fold((f64::MAX, 0f64), |(lo, hi), c| {
        (
            lo.min(c.min_after.as_secs_f64()),
            hi.max(c.max_after.as_secs_f64()),
        )
    });
    eprintln!(
        "{what}: {} connections closed after {min:.3}..{max:.3} s (timeout {timeout} s; client lag up to {lag:.3} s)",
        closed.len()
    );
    // Not early either (timer granularity aside).
    assert!(
        min >= timeout - 0.01,
        "{what}: one was closed after {min:.3} s, before its {timeout} s timeout\n{}",
        log()
    );
    assert!(
        max <= timeout + SLACK + lag,
        "{what}: one was closed only after {max:.3} s (timeout {timeout} s + {SLACK} s + lag {lag:.3} s: the client's and the origin's waits for a core)\n{}",
        log()
    );
}

fn segment_path(o: &Origin) -> String {
    let r = common::get(o.port, "/stream.m3u8");
    let seg = r
        .text()
        .lines()
        .rfind(|l| l.ends_with(".ts"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no segment in the playlist:\n{}", r.text()));
    format!("/{seg}")
}

fn hostile_while_viewers_play(half_open: usize, idle: usize, viewers: u32) {
    let keepalive = (half_open / 20).max(5);
    let stalled = 4;
    raise_nofile((half_open + idle + keepalive + stalled) as u64 + 256);
    let swarm = swarm_bin();
    let t = |v: f64| v.to_string();
    let o = Origin::start(
        &format!("load-{half_open}"),
        &[
            "--header-timeout",
            &t(HEADER_TIMEOUT),
            "--keepalive-timeout",
            &t(KEEPALIVE_TIMEOUT),
            "--send-timeout",
            &t(SEND_TIMEOUT),
        ],
    );
    let log = || o.stderr();
    // The origin raised its own soft limit to the hard one.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", o.child.id())).unwrap();
    let files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(files[3], files[4], "soft nofile = hard: {limits}");
    let baseline = o.fds();

    // Viewers play for the whole test.
    let dir = std::env::temp_dir().join(format!(
        "hls-origin-hostile-{}-swarm{half_open}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let summary = dir.join("summary.json");
    let swarm_err = dir.join("swarm-stderr");
    let run_secs = 16;
    let mut viewers_proc = Command::new(&swarm)
        .arg(format!("http://127.0.0.1:{}/master.m3u8", o.port))
        .args([
            &format!("--clients={viewers}"),
            "--ramp-rate=200",
            "--ramp-jitter=0",
            "--metrics-port=0",
            "--max-error-rate=0",
            &format!("--duration={run_secs}s"),
        ])
        .arg("--summary-json")
        .arg(&summary)
        .env_remove("STREAM_URL")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&swarm_err).unwrap())
        .spawn()
        .expect("spawn hls-swarm");
    std::thread::sleep(Duration::from_secs(2));

    let seg = segment_path(&o);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let port = o.port;
    let waits_before = o.run_delays();
    let (half, silent, ka, (_stalled_socks, send_start), held, lag) = rt.block_on(async move {
        // How late this runtime wakes a task (thousands of tasks, the origin, the viewers and
        // whatever else shares the machine): every observed close is that late at worst.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let probe = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut worst = Duration::ZERO;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = Instant::now();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    worst = worst.max(t.elapsed().saturating_sub(Duration::from_millis(11)));
                }
                worst
            })
        };
        // Opened 100 every 20 ms (4000 in under a second, all held at once since each
        // lives seconds): one burst of thousands would mostly measure how the client's own
        // tasks get scheduled on a loaded machine.
        let mut half = Vec::new();
        let mut silent = Vec::new();
        for i in 0..half_open.max(idle) {
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if i < half_open {
                half.push(tokio::spawn(hold(
                    port,
                    b"GET /stream.m3u8 HTTP/1.1\r\nHost: t\r\nUser-Ag",
                )));
            }
            if i < idle {
                silent.push(tokio::spawn(hold(port, b"")));
            }
        }
        // All of them held at the same time, as the origin counts them.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let held = tokio::task::spawn_blocking(move || {
            common::try_get(port, "/metrics").map(|r| r.text())
        })
        .await
        .unwrap();
        let ka: Vec<_> = (0..keepalive)
            .map(|_| tokio::spawn(keep_alive_then_idle(port)))
            .collect();
        let send_start = Instant::now();
        let mut socks = Vec::new();
        for _ in 0..stalled {
            socks.push(stop_reading(port, seg.clone()).await);
        }
        let mut out = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            (socks, send_start),
            held,
            0.0,
        );
        for h in half {
            out.0.push(h.await.unwrap());
        }
        for h in silent {
            out.1.push(h.await.unwrap());
        }
        for h in ka {
            out.2.push(h.await.unwrap());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        out.5 = probe.await.unwrap().as_secs_f64();
        out
    });
    let held = held.unwrap_or_else(|e| panic!("GET /metrics while flooded: {e}\n{}", log()));
    let open_then: u64 = held
        .lines()
        .find_map(|l| l.strip_prefix("hls_origin_connections_open "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no open count:\n{held}"));
    eprintln!("connections open at the height of the flood: {open_then}");
    assert!(
        open_then >= (half_open + idle) as u64,
        "the hostile connections were not all held at once: {open_then} open"
    );
    // A loaded machine (a CI run beside builds, load 15-20) leaves the origin's threads
    // waiting for a core for seconds: a close that late is the machine's, not the origin's.
    // The longest any origin thread waited on a run queue meanwhile (its schedstat
    // run_delay) widens the bound as the client's own lag does; a quiet machine adds ~0.
    let origin_wait = o.longest_run_delay_since(&waits_before);
    eprintln!("origin threads waited for a core up to {origin_wait:.3} s meanwhile");
    let lag = lag + origin_wait;
    check_closed_in_time("half a header", &half, HEADER_TIMEOUT, lag, &log);
    check_closed_in_time("nothing sent", &silent, HEADER_TIMEOUT, lag, &log);
    check_closed_in_time("idle keep-alive", &ka, KEEPALIVE_TIMEOUT, lag, &log);
    // The stalled readers cannot see the close without reading: /metrics counts them.
    let deadline = send_start + Duration::from_secs_f64(SEND_TIMEOUT + SLACK + 0.5 + origin_wait);
    while o.metric("hls_origin_connections_closed_total{reason=\"send_timeout\"}") < stalled as u64
    {
        assert!(
            Instant::now() < deadline,
            "stalled readers not closed by --send-timeout in time:\n{}\n{}",
            o.metrics(),
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(rt);

    let st = viewers_proc.wait().unwrap();
    let swarm_log = std::fs::read_to_string(&swarm_err).unwrap_or_default();
    let text = std::fs::read_to_string(&summary)
        .unwrap_or_else(|e| panic!("no swarm summary ({e}):\n{swarm_log}\n{}", log()));
    let sum: serde_json::Value = serde_json::from_str(&text).unwrap();
    eprintln!(
        "viewers: {} started, {} requests, {} errors, {} stalls",
        sum["viewers"]["started"], sum["requests"]["total"], sum["errors"]["total"], sum["stalls"]
    );
    assert_eq!(sum["viewers"]["started"], viewers, "{sum}");
    assert_eq!(
        sum["errors"]["total"],
        0,
        "viewers saw errors: {sum}\n{swarm_log}\n{}",
        log()
    );
    assert!(
        sum["requests"]["segment"].as_u64().unwrap() >= viewers as u64 * (run_secs - 4),
        "viewers kept playing: {sum}"
    );
    assert_eq!(st.code(), Some(0), "{swarm_log}");

    let page = o.metrics();
    let m = |s: &str| o.metric(s);
    assert_eq!(
        m("hls_origin_connections_closed_total{reason=\"header_timeout\"}"),
        (half_open + idle) as u64,
        "{page}"
    );
    assert_eq!(
        m("hls_origin_connections_closed_total{reason=\"keepalive_timeout\"}"),
        keepalive as u64,
        "{page}"
    );
    assert_eq!(
        m("hls_origin_connections_closed_total{reason=\"send_timeout\"}"),
        stalled as u64,
        "{page}"
    );
    assert_eq!(m("hls_origin_connections_refused_total"), 0, "{page}");
    assert_eq!(m("hls_origin_accept_errors_total"), 0, "{page}");

    // Every descriptor a client cost is given back: sockets exactly (only the scrape's own
    // connection may still be open), the rest within the segment cache (one memfd each).
    let cache = (10 + 5 + 2) as usize;
    let t0 = Instant::now();
    loop {
        let now = o.fds();
        if now.1 <= baseline.1 + 1 && now.0 <= baseline.0 + cache + 1 {
            eprintln!("descriptors: baseline {baseline:?} (all, sockets), now {now:?}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "descriptors not back to the baseline {baseline:?}: {now:?}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Each scrape is a connection of its own, and the origin counts the previous one closed
    // only when it reads that close: poll until the gauge holds the scrape itself alone.
    let t0 = Instant::now();
    loop {
        let open = m("hls_origin_connections_open");
        if open == 1 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "connections still counted open besides the scrape itself: {open}\n{}\n{}",
            o.metrics(),
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hostile_connections_are_closed_counted_and_cost_viewers_nothing() {
    hostile_while_viewers_play(200, 200, 20);
}

#[test]
#[ignore = "full: 4000 hostile connections against 200 viewers"]
fn hostile_connections_at_scale_2000_half_open_2000_idle_200_viewers() {
    hostile_while_viewers_play(2000, 2000, 200);
}

#[test]
fn connections_beyond_the_limit_get_503_and_the_origin_keeps_serving() {
    raise_nofile(512);
    let o = Origin::start(
        "limit",
        &["--max-connections", "20", "--header-timeout", "2"],
    );
    let log = || o.stderr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let port = o.port;
    let refused = rt.block_on(async move {
        let mut held = Vec::new();
        for _ in 0..20 {
            held.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        }
        // Let the origin accept all twenty before the next ones come.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut answers = Vec::new();
        for _ in 0..10 {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let mut got = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
            answers.push(String::from_utf8_lossy(&got).into_owned());
        }
        drop(held);
        answers
    });
    for a in &refused {
        assert!(a.starts_with("HTTP/1.1 503 "), "{a:?}\n{}", log());
        assert!(a.contains("Retry-After: 1\r\n"), "{a:?}");
    }
    // The held ones are gone: the origin serves again and counted what it refused.
    // (A scrape that comes before the origin saw the held ones close is refused too: its
    // 503 may arrive, or be lost to a reset since the origin does not read the request.)
    let t0 = Instant::now();
    let mut scrapes_failed = 0;
    let page = loop {
        match common::try_get(o.port, "/metrics") {
            Ok(r) if r.status == 200 => break r.text(),
            _ => scrapes_failed += 1,
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "origin does not serve after the flood\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let refused_total = page
        .lines()
        .find_map(|l| l.strip_prefix("hls_origin_connections_refused_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no refused count in:\n{page}"));
    assert!(
        (10..=10 + scrapes_failed).contains(&refused_total),
        "refused {refused_total}, want 10 (+ up to {scrapes_failed} early scrapes):\n{page}"
    );
    assert!(page.contains("hls_origin_connections_max 20\n"), "{page}");
}
