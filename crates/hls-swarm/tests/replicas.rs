//! A swarm as several replicas: two real hls-swarm processes with `--linger` and a shared
//! `--start-at` against one real hls-origin, then `hls-swarm report` merging their `/summary`
//! documents into one verdict whose totals are the sums of the replicas' own summaries.

mod common;
use common::*;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

fn num(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn report_merges_lingering_replicas_into_one_verdict() {
    let origin = Origin::start(1, 6, "360p:640x360:500k/550k/1000k:64k");
    let dir = scratch_dir("replicas");
    // Both replicas start their ramp at the same wall-clock instant, 2 s from now.
    let start_at = SystemTime::now() + Duration::from_secs(2);
    let start_text = hls_swarm::schedule::format_rfc3339(start_at);
    let ports = [reserved_port(), reserved_port()];
    let mut replicas: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let child = swarm()
                .args([
                    &origin.url("/master.m3u8"),
                    "--clients=3",
                    "--ramp-rate=100",
                    "--duration=4s",
                    "--linger",
                ])
                .arg(format!("--metrics-port={port}"))
                .arg(format!("--start-at={start_text}"))
                .arg("--summary-json")
                .arg(dir.join(format!("r{i}.json")))
                .stderr(Stdio::piped())
                .spawn()
                .expect("start hls-swarm");
            child
        })
        .collect();
    // Started while the replicas still run: report waits for both to finish.
    let merged_path = dir.join("merged.json");
    let report = swarm()
        .arg("report")
        .args(ports.iter().map(|p| format!("http://127.0.0.1:{p}")))
        .args(["--wait", "60s", "--summary-json"])
        .arg(&merged_path)
        .arg("--report")
        .arg(dir.join("report.html"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&report.stdout);
    let stderr = String::from_utf8_lossy(&report.stderr);
    assert_eq!(report.status.code(), Some(0), "{stdout}\n{stderr}");

    // Lingering: still serving /metrics after the run; SIGTERM ends them with the verdict.
    for p in ports {
        let (status, page) = http_get(p, "/metrics").expect("lingering /metrics");
        assert_eq!(status, 200);
        assert!(metric(&page, "hls_swarm_viewers_target").is_some());
    }
    let mut own = vec![];
    for (i, child) in replicas.drain(..).enumerate() {
        signal(child.id(), "TERM");
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(err.contains("hls-swarm summary"), "{err}");
        let text = std::fs::read_to_string(dir.join(format!("r{i}.json"))).unwrap();
        own.push(serde_json::from_str::<serde_json::Value>(&text).unwrap());
    }
    let merged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&merged_path).unwrap()).unwrap();
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    // The merged HTML report: the merged verdict, and each replica as its own line.
    assert!(html.contains("PASS"), "{html}");
    for p in ports {
        assert!(
            html.contains(&format!("127.0.0.1:{p}")),
            "no line for replica {p} in the report"
        );
    }
    assert!(html.matches("<svg").count() >= 10, "charts missing");

    // Totals are the sums of the replicas' own summaries.
    for path in [
        &["viewers", "target"][..],
        &["viewers", "started"],
        &["requests", "total"],
        &["requests", "segment"],
        &["requests", "playlist"],
        &["bytes", "total"],
        &["errors", "total"],
        &["segment_latency_ms", "count"],
    ] {
        let get =
            |v: &serde_json::Value| num(path.iter().fold(v, |v: &serde_json::Value, k| &v[*k]));
        assert_eq!(
            get(&merged),
            own.iter().map(get).sum::<u64>(),
            "{path:?} in {merged}"
        );
    }
    assert_eq!(num(&merged["viewers"]["started"]), 6);
    assert_eq!(num(&merged["errors"]["total"]), 0);
    assert!(num(&merged["requests"]["segment"]) > 0);
    assert_eq!(merged["passed"], true);
    assert_eq!(merged["stopped_by"], "duration");
    assert_eq!(merged["replicas"].as_array().unwrap().len(), 2);
    // The merged percentiles lie within the replicas' own.
    let p = |v: &serde_json::Value, q: &str| v["segment_latency_ms"][q].as_f64().unwrap();
    for q in ["p50", "p99"] {
        let lo = own.iter().map(|v| p(v, q)).fold(f64::MAX, f64::min);
        let hi = own.iter().map(|v| p(v, q)).fold(0.0, f64::max);
        assert!(lo <= p(&merged, q) && p(&merged, q) <= hi, "{q}: {merged}");
    }
    // No replica started its ramp before the shared instant.
    for r in merged["replicas"].as_array().unwrap() {
        let at = hls_swarm::schedule::parse_rfc3339_utc(r["started_at"].as_str().unwrap()).unwrap();
        assert!(
            at + Duration::from_millis(1) >= start_at,
            "{r} before {start_text}"
        );
    }
    for needle in [
        "hls-swarm summary",
        "6 started of 6",
        "replicas:  2",
        "PASS",
    ] {
        assert!(
            stdout.contains(needle),
            "report lacks {needle:?}:\n{stdout}"
        );
    }
    assert_eq!(stdout.matches("viewers 3/3").count(), 2, "{stdout}");
}

#[test]
fn report_names_a_replica_it_cannot_read_and_fails() {
    let port = reserved_port();
    let out = swarm()
        .args(["report", &format!("http://127.0.0.1:{port}"), "--wait", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    let out = swarm().args(["report"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = swarm()
        .args(["--start-at", "yesterday", "http://x/"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
}

#[test]
fn a_failing_replica_fails_the_merged_verdict() {
    // Nothing listens on this port: every request of the replica fails.
    let dead = reserved_port();
    let port = reserved_port();
    let child = swarm()
        .args([
            &format!("http://127.0.0.1:{dead}/master.m3u8"),
            "--clients=2",
            "--duration=2s",
            "--linger",
            "--reconnect-delay-max=100ms",
        ])
        .arg(format!("--metrics-port={port}"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let report = swarm()
        .args([
            "report",
            &format!("http://127.0.0.1:{port}/summary"),
            "--wait",
            "60s",
        ])
        .output()
        .unwrap();
    signal(child.id(), "TERM");
    let own = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&report.stdout);
    // The exit status of a single run: 1 above the error-rate limit, for the replica and for
    // the report.
    assert_eq!(own.status.code(), Some(1));
    assert_eq!(
        report.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(
        stdout.contains("FAIL (error rate above --max-error-rate)"),
        "{stdout}"
    );
    assert!(stdout.contains("connect"), "{stdout}");
}
