//! `hls-swarm healthcheck` follows the running swarm's metrics port however it was given
//! (flag, `--x=v`, env, default), and fails when the swarm is gone or its endpoint is off.
//! One test function: the healthcheck picks the swarm among running processes, so the cases
//! run one after another.

mod common;
use common::*;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn start_swarm(url: &str, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut c = swarm();
    c.arg(url)
        .args(["--clients=2", "--ramp-jitter=0", "--duration=30"])
        .args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.stderr(Stdio::null()).spawn().unwrap()
}

fn wait_up(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(port, "/health").map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "swarm metrics port {port} never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn healthcheck(args: &[&str], env: &[(&str, &str)]) -> i32 {
    let mut c = swarm();
    c.arg("healthcheck").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap().status.code().unwrap()
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn healthcheck_follows_the_running_swarms_metrics_port() {
    let origin = Origin::start(1, 6, "720p:1280x720:2000k/2200k/4000k:128k");
    let url = origin.url("/master.m3u8");

    // No swarm, nothing listening: own settings are used and the check fails.
    let idle = reserved_port().to_string();
    assert_eq!(
        healthcheck(&["--timeout", "1"], &[("METRICS_PORT", &idle)]),
        1
    );

    // Port from the environment only.
    let p = reserved_port();
    let sw = start_swarm(&url, &[], &[("METRICS_PORT", &p.to_string())]);
    wait_up(p);
    assert_eq!(healthcheck(&[], &[]), 0, "env METRICS_PORT={p}");
    // /metrics is Prometheus text with the viewers' traffic.
    std::thread::sleep(Duration::from_millis(1500));
    let (code, page) = http_get(p, "/metrics").unwrap();
    assert_eq!(code, 200);
    for name in [
        "hls_swarm_active_viewers 2",
        "hls_swarm_requests_total{kind=\"master\"} 2",
        "hls_swarm_segment_download_seconds_bucket{le=\"+Inf\"}",
        "hls_swarm_stalls_total 0",
        "hls_swarm_errors_total{request=\"segment\",kind=\"http_4xx\"} 0",
    ] {
        assert!(page.contains(name), "/metrics lacks {name}:\n{page}");
    }
    assert!(metric(&page, "hls_swarm_requests_total{kind=\"segment\"}").unwrap() >= 6.0);
    stop(sw);
    // The swarm is gone: the check fails.
    assert_eq!(
        healthcheck(&["--timeout=1"], &[("METRICS_PORT", &p.to_string())]),
        1
    );

    // Flag beats env in the swarm; the healthcheck follows the flag (nothing on the env port).
    let (pf, pe) = (reserved_port(), reserved_port());
    let sw = start_swarm(
        &url,
        &[&format!("--metrics-port={pf}")],
        &[("METRICS_PORT", &pe.to_string())],
    );
    wait_up(pf);
    assert_eq!(
        healthcheck(&[], &[]),
        0,
        "--metrics-port={pf} over env {pe}"
    );
    // The healthcheck's own METRICS_PORT does not mislead it either.
    assert_eq!(healthcheck(&[], &[("METRICS_PORT", &pe.to_string())]), 0);
    stop(sw);

    // `--metrics-port P`, last on the line.
    let p = reserved_port();
    let mut c = swarm();
    c.args(["--clients=1", &url, "--metrics-port", &p.to_string()]);
    let sw = c.stderr(Stdio::null()).spawn().unwrap();
    wait_up(p);
    assert_eq!(healthcheck(&[], &[]), 0, "--metrics-port {p}");
    stop(sw);

    // Metrics off in the running swarm: unhealthy by definition.
    let sw = start_swarm(&url, &[], &[("METRICS_PORT", "0")]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(healthcheck(&["--timeout", "1"], &[]), 1, "METRICS_PORT=0");
    stop(sw);
}
