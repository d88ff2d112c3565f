//! The time series (`--series-json`) and the HTML report (`--report`): a real swarm against a
//! real hls-origin that hangs for a few seconds mid-run, the report rendered byte-for-byte
//! from a recorded series, and the page as headless Chromium draws it.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hls_swarm::report_html::{self, Replica, ReportInput};
use hls_swarm::series::SeriesDoc;

const TWO_VARIANTS: &str = "720p:1280x720:2000k/2200k/4000k:128k,360p:640x360:500k/550k/1000k:64k";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The series recorded by `an_outage_shows_in_the_series_only_while_it_lasts…` (re-record
/// with RECORD_FIXTURE=1).
fn recorded() -> SeriesDoc {
    let text = std::fs::read_to_string(fixtures().join("series-outage.json")).unwrap();
    serde_json::from_str(&text).expect("the recorded series parses")
}

fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as f64
}

#[test]
fn the_report_of_a_recorded_series_is_the_same_bytes_every_time() {
    let doc = recorded();
    let html = report_html::render(&ReportInput::single(doc.clone()));
    let again = report_html::render(&ReportInput::single(recorded()));
    assert_eq!(html, again, "same series, different report");
    let golden = fixtures().join("report-outage.html");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &html).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert!(
        html == want,
        "the report of tests/fixtures/series-outage.json differs from {} (after an intended \
         change: UPDATE_GOLDEN=1 cargo test -p hls-swarm --test report)",
        golden.display()
    );
    // What the run recorded is on the page: verdict, the outage's error kind, both variants.
    assert!(html.contains("FAIL: error rate"), "verdict");
    assert!(
        html.contains(">first_byte_timeout</span>"),
        "error kind legend"
    );
    assert!(html.contains(">720p</span>") && html.contains(">360p</span>"));
    assert!(
        html.contains("class=\"threshold\""),
        "pass/fail limit marked"
    );
    assert!(html.contains("class=\"ramp\""), "ramp marked");
    assert!(
        html.contains("Latency behind live") && html.contains("not measured in this run"),
        "the slot for latency behind live says it was not measured"
    );
}

#[test]
fn the_report_needs_nothing_from_the_network() {
    let html = report_html::render(&ReportInput::single(recorded()));
    for needle in [
        "<script", "<link", "<img", "<iframe", "src=", "href=", "url(", "@import",
    ] {
        assert!(!html.contains(needle), "the report contains {needle}");
    }
    // The only URL on the page is the stream's (and its variants' in tooltips), as text.
    let doc = recorded();
    let stripped = html.replace(&doc.run.url, "");
    let stripped = doc
        .series
        .variants
        .iter()
        .fold(stripped, |h, v| h.replace(v.as_str(), ""));
    assert!(!stripped.contains("http://") && !stripped.contains("https://"));
}

#[test]
fn a_report_of_the_longest_series_stays_under_a_megabyte() {
    // 3600 points (the most a series keeps), cycled from the recorded run's points.
    let mut doc = recorded();
    let base = doc.series.points.clone();
    doc.series.points = (0..hls_swarm::series::MAX_POINTS)
        .map(|i| {
            let mut p = base[i % base.len()].clone();
            p.t_s = i as f64;
            p.dur_s = 1.0;
            p
        })
        .collect();
    doc.run.duration_s = hls_swarm::series::MAX_POINTS as f64;
    let html = report_html::render(&ReportInput::single(doc));
    eprintln!(
        "report of {} points: {} bytes",
        hls_swarm::series::MAX_POINTS,
        html.len()
    );
    assert!(html.len() < 1_000_000, "{} bytes", html.len());
}

#[test]
fn replicas_get_one_line_each() {
    let doc = recorded();
    let mut later = doc.series.clone();
    later.started_unix_ms += 2000;
    let input = ReportInput {
        run: doc.run.clone(),
        replicas: vec![
            Replica {
                name: "eu-1".into(),
                series: doc.series.clone(),
            },
            Replica {
                name: "us-2".into(),
                series: later,
            },
        ],
    };
    let html = report_html::render(&input);
    for label in [
        "eu-1 segment",
        "us-2 segment",
        "eu-1 720p",
        "us-2 360p",
        "eu-1 watching",
    ] {
        assert!(
            html.contains(&format!(">{label}</span>")),
            "no line for {label}"
        );
    }
    assert!(html.contains("<th>replicas</th><td>eu-1, us-2</td>"));
    // us-2 started 2 s later: its lines are drawn from further right than eu-1's.
    let first_x = |label: &str| -> f64 {
        let title = format!("<title>{label}</title>");
        let line = html
            .lines()
            .find(|l| l.contains(&title) && l.starts_with("<path"))
            .unwrap();
        let d = line.split("d=\"M").nth(1).unwrap();
        d.split(',').next().unwrap().parse().unwrap()
    };
    assert!(first_x("us-2 active") > first_x("eu-1 active") + 10.0);
}

#[test]
fn an_unwritable_report_path_is_one_line_and_exit_2_before_the_run() {
    for (flag, path) in [
        ("--report", "/nonexistent-dir-i20/r.html"),
        ("--series-json", "/nonexistent-dir-i20/s.json"),
        ("--report", "/tmp"),
    ] {
        let out = swarm()
            .args([
                "http://127.0.0.1:1/master.m3u8",
                "--metrics-port=0",
                flag,
                path,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {path}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(flag) && err.contains(path), "{err}");
        assert!(!err.contains("starting swarm"), "it ran anyway: {err}");
    }
}

/// A real swarm against the real origin, which hangs (SIGSTOP: the kernel still accepts
/// connections, nothing answers, as a wedged server behaves) for 3 s mid-run. The series has
/// errors only in that window (± 2 s), the watching viewers drop in it and all come back.
#[test]
fn an_outage_shows_in_the_series_only_while_it_lasts_and_viewers_recover() {
    let origin = Origin::start(1, 6, TWO_VARIANTS);
    let dir = scratch_dir("series-outage");
    let series_path = dir.join("series.json");
    let summary_path = dir.join("summary.json");
    let report_path = dir.join("report.html");
    let clients = 6;
    let swarm = swarm()
        .args([
            &origin.url("/master.m3u8"),
            &format!("--clients={clients}"),
            "--ramp-rate=1000",
            "--ramp-jitter=0",
            "--metrics-port=0",
            "--duration=13s",
            "--timeout=2",
            "--first-byte-timeout=1",
            "--reconnect-delay-max=1",
            "--max-error-rate=1%",
            "--series-json",
            s(&series_path),
            "--summary-json",
            s(&summary_path),
            "--report",
            s(&report_path),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let stopped = SystemTime::now();
    signal(origin.child.id(), "STOP");
    std::thread::sleep(Duration::from_secs(3));
    signal(origin.child.id(), "CONT");
    let resumed = SystemTime::now();
    let out = swarm.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert_eq!(out.status.code(), Some(1), "errors above 1 %: FAIL; {err}");
    let text = std::fs::read_to_string(&series_path).unwrap();
    let doc: SeriesDoc = serde_json::from_str(&text).expect("series JSON parses");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    assert!(std::fs::metadata(&report_path).unwrap().len() > 10_000);
    if std::env::var_os("RECORD_FIXTURE").is_some() {
        std::fs::write(fixtures().join("series-outage.json"), &text).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);

    let series = &doc.series;
    assert_eq!(doc.format, "hls-swarm-series/1");
    assert_eq!(series.interval_s, 1);
    assert_eq!(series.variants.len(), 2, "{:?}", series.variants);
    let t0 = series.started_unix_ms as f64;
    let window = (
        (unix_ms(stopped) - t0) / 1000.0 - 2.0,
        (unix_ms(resumed) - t0) / 1000.0 + 2.0,
    );
    let pts = &series.points;
    assert!((12..=14).contains(&pts.len()), "{} points", pts.len());
    for w in pts.windows(2) {
        assert!(
            (w[0].t_s + w[0].dur_s - w[1].t_s).abs() < 0.002,
            "gap at {}",
            w[1].t_s
        );
    }
    // Errors only in the window.
    let mut in_window = 0;
    for p in pts {
        let overlaps = p.t_s < window.1 && p.t_s + p.dur_s > window.0;
        let e = p.errors.master + p.errors.playlist + p.errors.segment;
        assert!(
            e == 0 || overlaps,
            "{e} errors at {}..{} s, outside the outage {window:?}",
            p.t_s,
            p.t_s + p.dur_s
        );
        in_window += e;
    }
    assert!(
        in_window >= clients,
        "only {in_window} errors in the outage"
    );
    // The series adds up to the summary (the summary may hold the last few microseconds).
    let sum_req: u64 = pts.iter().map(|p| p.requests.total()).sum();
    let sum_err: u64 = pts.iter().map(|p| p.errors.total()).sum();
    let summary_req = summary["requests"]["total"].as_u64().unwrap();
    assert!(
        sum_req <= summary_req && summary_req - sum_req <= clients,
        "{sum_req} {summary_req}"
    );
    assert_eq!(sum_err, summary["errors"]["total"].as_u64().unwrap());
    // Viewers: all watching before, fewer in the outage, all again after it.
    let watching_at = |t: f64| {
        pts.iter()
            .find(|p| p.t_s <= t && t < p.t_s + p.dur_s)
            .unwrap()
    };
    let before = watching_at(window.0 + 1.0);
    assert_eq!(before.watching, clients as i64, "{before:?}");
    let low = pts.iter().map(|p| p.watching).min().unwrap();
    assert!(
        low < clients as i64,
        "the outage did not show in watching viewers"
    );
    let tail = &pts[pts.len() - 3..];
    for p in tail {
        assert!(
            p.t_s >= window.1 - 2.0,
            "the run ended too soon after the outage"
        );
        assert_eq!(p.viewers, clients as i64);
        assert_eq!(p.watching, clients as i64, "not recovered at {} s", p.t_s);
        assert!(p.segment_latency_ms.p50.is_some());
        for (i, v) in p.variants.iter().enumerate() {
            assert!(v.segments > 0, "variant {i} got no segments at {} s", p.t_s);
            assert_eq!(v.watching, clients as i64 / 2);
        }
    }
    // Latency behind live has its slot, null in this run.
    assert!(pts.iter().all(|p| p.extra["live_latency_ms"].p50.is_none()));
}

// ---------------------------------------------------------------------------------------------
// Headless Chromium.

struct Browser {
    profile: PathBuf,
}

impl Browser {
    fn new(dir: &Path) -> Browser {
        Browser {
            profile: dir.join("chromium-profile"),
        }
    }

    /// Run Chromium headless on a local file with `extra` arguments; returns stdout and the
    /// console messages it logged (Chromium logs a page's console as `…:CONSOLE:…` lines).
    fn run(&self, page: &Path, extra: &[String]) -> (String, Vec<String>) {
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                "--enable-logging=stderr",
                "--v=0",
                // Nothing on the page may need a network: make every lookup fail.
                "--host-resolver-rules=MAP * ~NOTFOUND",
            ])
            .arg(format!("--user-data-dir={}", self.profile.display()))
            .args(extra)
            .arg(format!("file://{}", page.display()))
            .stdin(Stdio::null())
            .output()
            .expect("run chromium (Debian: apt-get install chromium)");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "chromium failed: {err}");
        let console = err
            .lines()
            .filter(|l| l.contains(":CONSOLE") || l.contains("net::ERR"))
            .map(str::to_string)
            .collect();
        (String::from_utf8_lossy(&out.stdout).into_owned(), console)
    }
}

#[test]
#[ignore = "full: needs chromium (Debian package)"]
fn chromium_draws_the_reports_charts_without_console_errors() {
    let origin = Origin::start(1, 6, TWO_VARIANTS);
    let dir = scratch_dir("chromium");
    let report = dir.join("report.html");
    let (out, _) = run_swarm(
        &[
            &origin.url("/master.m3u8"),
            "--clients=4",
            "--ramp-rate=2",
            "--ramp-jitter=0",
            "--metrics-port=0",
            "--duration=6s",
            "--report",
            s(&report),
        ],
        "chromium-run",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("report written to"), "{err}");
    let browser = Browser::new(&dir);

    // The detector sees console errors (so its silence below means something).
    let bad = dir.join("bad.html");
    std::fs::write(
        &bad,
        "<!DOCTYPE html><p>x</p><script>console.error('deliberate'); nosuchfn();</script>",
    )
    .unwrap();
    let (_, console) = browser.run(&bad, &["--dump-dom".into()]);
    assert!(
        console.iter().any(|l| l.contains("deliberate"))
            && console.iter().any(|l| l.contains("nosuchfn")),
        "chromium's console lines not found: {console:?}"
    );

    // The DOM as Chromium built it: every chart is an SVG with lines of many points.
    let (dom, console) = browser.run(&report, &["--dump-dom".into()]);
    assert!(console.is_empty(), "console: {console:?}");
    let svgs = dom.matches("<svg").count();
    assert!(svgs >= 10, "{svgs} charts");
    let lines: Vec<&str> = dom
        .split("<path class=\"line\" d=\"")
        .skip(1)
        .map(|p| p.split('"').next().unwrap())
        .collect();
    let long = lines.iter().filter(|d| d.matches('L').count() >= 4).count();
    assert!(
        long >= 10,
        "{long} of {} lines have 5 or more points",
        lines.len()
    );
    assert!(dom.contains("id=\"verdict\"") && dom.contains("PASS"));

    // The picture.
    let shot = dir.join("report.png");
    let (_, console) = browser.run(
        &report,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1040,1400".into(),
        ],
    );
    assert!(console.is_empty(), "console: {console:?}");
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // A blank page of this size compresses to a few KiB; charts and text do not.
    assert!(png.len() > 40_000, "screenshot only {} bytes", png.len());
    if let Some(to) = std::env::var_os("SAVE_SCREENSHOT") {
        std::fs::copy(&shot, to).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
