//! Cases that need an origin scripted to the request: a segment that answers 404 is retried
//! exactly as configured, then skipped; the exit status follows --max-error-rate; a new viewer
//! starts exactly three segments from the live edge; a finished stream is paced. (The real origin never 404s a listed
//! segment, and its clock is not ours.)

mod common;
use common::*;

fn origin_failing_101() -> TinyOrigin {
    TinyOrigin::start(TinyConfig {
        segment_secs: 1.0,
        list_size: 5,
        segment_bytes: 2000,
        fail: Box::new(|n| n == 101),
        vod: None,
    })
}

fn run(
    o: &TinyOrigin,
    retries: &str,
    max_rate: &str,
    name: &str,
) -> (std::process::Output, serde_json::Value) {
    run_swarm(
        &[
            &o.url("/stream.m3u8"),
            "--clients=1",
            "--ramp-jitter=0",
            "--metrics-port=0",
            "--duration=3.5s",
            "--segment-retries",
            retries,
            "--max-error-rate",
            max_rate,
        ],
        name,
    )
}

#[test]
fn a_404_segment_is_retried_as_configured_then_skipped() {
    let (o2, o0) = (origin_failing_101(), origin_failing_101());
    let t = std::thread::spawn(move || {
        let r = run(&o0, "0", "100%", "retries0");
        (o0, r)
    });
    let (out, sum) = run(&o2, "2", "100%", "retries2");
    let (o0, (out0, sum0)) = t.join().unwrap();

    // Retries 2: the failing segment is asked for 1 + 2 times, its neighbours once.
    assert_eq!(
        o2.count("/seg00101.ts"),
        3,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(o2.count("/seg00100.ts"), 1);
    assert_eq!(
        o2.count("/seg00102.ts"),
        1,
        "playback went on after the skipped segment"
    );
    assert_eq!(sum["errors"]["by_kind"]["http_4xx"], 3);
    assert_eq!(sum["errors"]["total"], 3);
    assert_eq!(sum["segment_retries"], 2);
    assert_eq!(sum["segments_skipped"], 1);
    assert_eq!(out.status.code(), Some(0), "100% allows every error");

    // Retries 0: asked for once.
    assert_eq!(o0.count("/seg00101.ts"), 1);
    assert_eq!(sum0["errors"]["total"], 1);
    assert_eq!(sum0["segment_retries"], 0);
    assert_eq!(out0.status.code(), Some(0));
}

#[test]
fn exit_status_follows_max_error_rate() {
    let (a, b) = (origin_failing_101(), origin_failing_101());
    // About 3 errors in about a dozen requests: 25 % or so.
    let t = std::thread::spawn(move || {
        let r = run(&b, "2", "0.9", "rate-high");
        (b, r)
    });
    let (out_strict, sum_strict) = run(&a, "2", "1%", "rate-strict");
    let (_b, (out_lax, sum_lax)) = t.join().unwrap();
    let rate = sum_strict["error_rate"].as_f64().unwrap();
    assert!(rate > 0.01 && rate < 0.9, "error rate {rate}");
    assert_eq!(sum_strict["passed"], false);
    assert_eq!(
        out_strict.status.code(),
        Some(1),
        "1% limit, {rate} error rate"
    );
    assert_eq!(sum_lax["passed"], true);
    assert_eq!(out_lax.status.code(), Some(0), "90% limit");
    let text = String::from_utf8_lossy(&out_strict.stderr);
    assert!(text.contains("FAIL"), "summary says why: {text}");
}

#[test]
fn a_new_viewer_starts_three_segments_from_the_live_edge() {
    // The playlist lists 96..=100 for the first second; a viewer that runs half a second
    // fetches 98, 99 and 100, once each, and nothing older.
    let o = TinyOrigin::start(TinyConfig {
        segment_secs: 1.0,
        list_size: 5,
        segment_bytes: 1000,
        fail: Box::new(|_| false),
        vod: None,
    });
    let (out, sum) = run_swarm(
        &[
            &o.url("/stream.m3u8"),
            "--clients=1",
            "--ramp-jitter=0",
            "--metrics-port=0",
            "--duration=0.5",
        ],
        "live-edge",
    );
    assert_eq!(out.status.code(), Some(0));
    for (n, want) in [(96, 0), (97, 0), (98, 1), (99, 1), (100, 1)] {
        assert_eq!(o.count(&format!("/seg{n:05}.ts")), want, "segment {n}");
    }
    assert_eq!(sum["requests"]["segment"], 3);
    assert_eq!(sum["bytes"]["segment"], 3000);
}

#[test]
fn a_finished_stream_is_played_from_the_start_at_most_30_s_ahead() {
    // Six 10 s segments with #EXT-X-ENDLIST: a viewer takes the first four (40 s, the 4th
    // fetched while less than 30 s was buffered) and then waits for its playback clock.
    let o = TinyOrigin::start(TinyConfig {
        segment_secs: 10.0,
        list_size: 6,
        segment_bytes: 1000,
        fail: Box::new(|_| false),
        vod: Some(6),
    });
    let (out, sum) = run_swarm(
        &[
            &o.url("/stream.m3u8"),
            "--clients=1",
            "--ramp-jitter=0",
            "--metrics-port=0",
            "--duration=1.5",
        ],
        "vod",
    );
    assert_eq!(out.status.code(), Some(0));
    for (n, want) in [(0, 1), (1, 1), (2, 1), (3, 1), (4, 0), (5, 0)] {
        assert_eq!(o.count(&format!("/seg{n:05}.ts")), want, "segment {n}");
    }
    assert_eq!(sum["stalls"], 0);
}

#[test]
fn the_progress_line_appears_on_a_terminal_only() {
    let o = TinyOrigin::start(TinyConfig {
        segment_secs: 1.0,
        list_size: 5,
        segment_bytes: 1000,
        fail: Box::new(|_| false),
        vod: None,
    });
    let url = o.url("/stream.m3u8");
    let args = [
        "--clients=2",
        "--ramp-jitter=0",
        "--metrics-port=0",
        "--duration=2.5",
    ];
    // Not a terminal (a pipe): no progress line, just the summary.
    let out = swarm().arg(&url).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("\x1b[K") && !err.contains('\r'), "{err:?}");
    assert!(err.contains("hls-swarm summary"));
    // A terminal, through util-linux `script`: the progress line is redrawn in place.
    let line = format!("{} {url} {}", swarm_bin().display(), args.join(" "));
    let mut c = std::process::Command::new("script");
    c.args(["-qec", &line, "/dev/null"]);
    for k in SWARM_ENV {
        c.env_remove(k);
    }
    let Ok(out) = c.output() else {
        eprintln!("no `script` program: terminal case not checked");
        return;
    };
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(tty.contains("\r\x1b[K"), "{tty:?}");
    assert!(tty.contains("viewers 2/2 | requests"), "{tty:?}");
    assert!(tty.contains("hls-swarm summary"), "{tty:?}");
}
