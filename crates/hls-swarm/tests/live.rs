//! Real hls-swarm against the real hls-origin: request counts, the summary's figures, variant
//! choice over a 5-variant ladder, outage and recovery, clean stop on SIGTERM.

mod common;
use common::*;
use std::time::{Duration, Instant};

const ONE_720P: &str = "720p:1280x720:2000k/2200k/4000k:128k";
/// The 4k-abr ladder, listed out of order so that first, highest and lowest all differ.
const LADDER: &str = "720p:1280x720:2000k/2200k/4000k:128k,\
360p:640x360:500k/550k/1000k:64k,2160p:3840x2160:15000k/16500k/30000k:192k,\
480p:854x480:1000k/1100k/2000k:96k,1080p:1920x1080:5000k/5500k/10000k:128k";

fn num(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn request_counts_match_the_live_window_and_the_summary_holds_the_figures() {
    // 1 s segments, 8 s run, 4 viewers. Each viewer fetches the master once and loads the
    // media playlist at t0, t0+1 s, …, t0+7 s (8 loads: one per target duration). It downloads
    // the 3 segments at the live edge, then the segments completed by its last reload: one
    // per second for 7 s. So 3 + 8 - 1 segments per viewer, within one segment per viewer.
    let origin = Origin::start(1, 6, ONE_720P);
    let viewers = 4.0;
    let secs = 8.0;
    let conns = |port| {
        let (_, page) = http_get(port, "/metrics").unwrap();
        metric(&page, "hls_origin_connections_total").unwrap()
    };
    let conns_before = conns(origin.port);
    let (out, sum) = run_swarm(
        &[
            &origin.url("/master.m3u8"),
            "--clients=4",
            "--ramp-rate=1000",
            "--ramp-jitter=0",
            "--metrics-port=0",
            "--duration=8s",
        ],
        "counts",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    let r = &sum["requests"];
    assert_eq!(num(&r["master"]), viewers, "{sum}");
    let seg = num(&r["segment"]);
    let expected_seg = viewers * (3.0 + secs - 1.0);
    assert!(
        (seg - expected_seg).abs() <= viewers,
        "segment requests {seg}, expected {expected_seg} ± {viewers}"
    );
    let pl = num(&r["playlist"]);
    assert!(
        (pl - viewers * secs).abs() <= viewers,
        "playlist reloads {pl}, expected {} ± {viewers}",
        viewers * secs
    );
    assert_eq!(num(&r["total"]), num(&r["master"]) + pl + seg);

    // The origin saw exactly what the swarm says it asked for and got.
    let (_, page) = http_get(origin.port, "/metrics").unwrap();
    let served = metric(
        &page,
        "hls_origin_requests_total{kind=\"segment\",status=\"200\"}",
    )
    .unwrap();
    let served_bytes = metric(&page, "hls_origin_response_bytes_total{kind=\"segment\"}").unwrap();
    // Each viewer has at most one request in flight when the run ends.
    assert!(
        served <= seg && seg - served <= viewers,
        "origin served {served} segments, swarm asked for {seg}"
    );
    // The origin counts a response's whole body even when the run ended mid-download; the
    // swarm counts what arrived. At most one segment per viewer apart.
    let got_bytes = num(&sum["bytes"]["segment"]);
    let per_seg = served_bytes / seg;
    assert!(
        got_bytes <= served_bytes && served_bytes - got_bytes <= viewers * per_seg,
        "origin sent {served_bytes} segment bytes, swarm received {got_bytes}"
    );
    // Keep-alive: one connection per viewer for the whole run (+2: the two /metrics probes
    // after it).
    let opened = conns(origin.port) - conns_before;
    assert_eq!(opened, viewers + 2.0, "connections opened during the run");
    // About 2128 kbit/s × 1 s per segment.
    assert!(
        (200_000.0..400_000.0).contains(&per_seg),
        "{per_seg} bytes per segment"
    );

    assert_eq!(num(&sum["errors"]["total"]), 0.0);
    assert_eq!(num(&sum["error_rate"]), 0.0);
    assert_eq!(num(&sum["stalls"]), 0.0, "{err}");
    assert_eq!(num(&sum["viewers"]["started"]), viewers);
    assert_eq!(num(&sum["viewers"]["active_at_end"]), viewers);
    let lat = &sum["segment_latency_ms"];
    let done = num(&lat["count"]);
    assert!(
        done <= seg && seg - done <= viewers,
        "{done} of {seg} downloads timed"
    );
    let (p50, p90, p99) = (num(&lat["p50"]), num(&lat["p90"]), num(&lat["p99"]));
    assert!(
        0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 < 2000.0,
        "{lat}"
    );
    assert_eq!(sum["passed"], true);
    assert_eq!(sum["stopped_by"], "duration");
    for needle in ["requests:", "errors:", "p50", "p90", "p99", "stalls:"] {
        assert!(err.contains(needle), "human summary lacks {needle}: {err}");
    }
}

/// Run a swarm with `--variant choice` against its own 5-variant origin; return the number of
/// media playlist requests per variant name, from the origin's access log.
fn variant_requests(choice: &str, clients: u32) -> std::collections::BTreeMap<String, u64> {
    let log = testkit::ChildLog::new("hls-origin-ladder");
    let args: Vec<String> = ["--segment-duration", "1", "--list-size", "4"]
        .iter()
        .chain(&["--variants", LADDER, "--access-log", "all"])
        .map(|a| a.to_string())
        .collect();
    let (child, port) = spawn_origin(&args, 0, std::process::Stdio::piped(), &log);
    let (out, sum) = run_swarm(
        &[
            &format!("http://127.0.0.1:{port}/master.m3u8"),
            &format!("--clients={clients}"),
            "--ramp-rate=1000",
            "--ramp-jitter=0",
            "--metrics-port=0",
            "--duration=1.5",
            "--variant",
            choice,
        ],
        &format!("variant-{choice}"),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    signal(child.id(), "TERM");
    let access = child.wait_with_output().unwrap();
    let mut per = std::collections::BTreeMap::new();
    for line in String::from_utf8_lossy(&access.stdout).lines() {
        if let Some(name) = line
            .split_whitespace()
            .find(|w| w.ends_with("/stream.m3u8"))
            .and_then(|p| p.trim_start_matches('/').split('/').next())
        {
            *per.entry(name.to_string()).or_insert(0) += 1;
        }
    }
    // The swarm's own account agrees on which variants were chosen.
    let swarm_variants: Vec<String> = sum["variants"]
        .as_object()
        .unwrap()
        .keys()
        .map(|u| u.rsplit('/').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(
        swarm_variants,
        per.keys().cloned().collect::<Vec<_>>(),
        "{choice}"
    );
    per
}

#[test]
fn variant_choice_is_honoured_on_a_five_variant_ladder() {
    let choices = ["all", "first", "highest", "lowest", "random"];
    let handles: Vec<_> = choices
        .iter()
        .map(|c| {
            let c = c.to_string();
            std::thread::spawn(move || {
                let clients = if c == "random" { 20 } else { 10 };
                (c.clone(), variant_requests(&c, clients))
            })
        })
        .collect();
    for h in handles {
        let (choice, per) = h.join().unwrap();
        let names: Vec<&str> = per.keys().map(String::as_str).collect();
        match choice.as_str() {
            "all" => {
                assert_eq!(names, ["1080p", "2160p", "360p", "480p", "720p"], "{per:?}");
                // Round-robin: 10 viewers, two per variant, so equal playlist traffic ± 1 reload each.
                let (lo, hi) = (per.values().min().unwrap(), per.values().max().unwrap());
                assert!(hi - lo <= 2, "uneven spread {per:?}");
            }
            "first" => assert_eq!(names, ["720p"], "first in the master playlist"),
            "highest" => assert_eq!(names, ["2160p"]),
            "lowest" => assert_eq!(names, ["360p"]),
            "random" => assert!(names.len() >= 2, "20 random viewers all chose {names:?}"),
            _ => unreachable!(),
        }
    }
}

#[test]
fn a_killed_origin_causes_errors_and_reconnects_then_recovery() {
    let mut origin = Origin::start(1, 6, ONE_720P);
    let dir = scratch_dir("outage");
    let summary = dir.join("s.json");
    let swarm = swarm()
        .args([
            &origin.url("/master.m3u8"),
            "--clients=3",
            "--ramp-rate=1000",
            "--ramp-jitter=0",
            "--metrics-port=0",
            "--duration=10s",
            "--timeout=2",
            "--reconnect-delay-max=1",
            "--max-error-rate=100%",
            "--summary-json",
            s(&summary),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    origin.kill();
    std::thread::sleep(Duration::from_secs(3));
    origin.restart();
    let out = swarm.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    let sum: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(num(&sum["errors"]["total"]) >= 3.0, "{sum}");
    assert!(num(&sum["errors"]["by_kind"]["connect"]) >= 3.0, "{sum}");
    assert!(num(&sum["reconnects"]) >= 3.0, "{sum}");
    // Recovery: the restarted origin served segments to the viewers, and all are still there.
    let (_, page) = http_get(origin.port, "/metrics").unwrap();
    let after = metric(
        &page,
        "hls_origin_requests_total{kind=\"segment\",status=\"200\"}",
    )
    .unwrap();
    assert!(
        after >= 3.0 * 3.0,
        "restarted origin served only {after} segments: {err}"
    );
    assert_eq!(num(&sum["viewers"]["active_at_end"]), 3.0);
}

#[test]
fn sigterm_stops_the_swarm_within_two_seconds_with_a_summary() {
    let origin = Origin::start(1, 6, ONE_720P);
    let dir = scratch_dir("sigterm");
    let summary = dir.join("s.json");
    let child = swarm()
        .args([
            &origin.url("/master.m3u8"),
            "--clients=5",
            "--ramp-rate=50",
            "--metrics-port=0",
        ])
        .env("SUMMARY_JSON", &summary)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    signal(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?} to stop");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sum: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(sum["stopped_by"], "SIGTERM");
    assert!(num(&sum["requests"]["segment"]) >= 5.0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("hls-swarm summary"));
}
