//! A swarm run: wait for `--start-at`, ramp viewers up, serve metrics (and `/summary`,
//! src/summary.rs), show progress, stop on --duration or SIGINT/SIGTERM (also as PID 1), then
//! print the summary and decide the exit status; with `--linger`, keep serving `/metrics` and
//! the final `/summary` until SIGINT/SIGTERM before exiting with that status.

use std::io::IsTerminal;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};

use crate::config::Settings;
use crate::http::{Connector, Timeouts, Url};
use crate::metrics::{self, Metrics, ERROR_KINDS, KINDS};
use crate::series;
use crate::viewer::{self, Rng, Shared};

/// The final figures of a run (also the `--summary-json` document).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub url: String,
    pub duration_s: f64,
    pub stopped_by: String,
    pub viewers: Viewers,
    pub requests: ByKind,
    pub bytes: ByKind,
    pub errors: Errors,
    pub error_rate: f64,
    pub max_error_rate: f64,
    pub passed: bool,
    pub segment_latency_ms: Latency,
    pub stalls: u64,
    pub reconnects: u64,
    pub segment_retries: u64,
    pub segments_skipped: u64,
    /// Variant playlist URL → viewer sessions that chose it (empty for a media playlist URL).
    pub variants: std::collections::BTreeMap<String, u64>,
    /// What viewers felt: latency behind live, time to first segment, staleness, throughput,
    /// TLS failure reasons (src/live.rs).
    #[serde(flatten)]
    pub live: crate::live::LiveSummary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Viewers {
    pub target: u64,
    pub started: u64,
    pub peak_active: i64,
    pub active_at_end: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ByKind {
    pub total: u64,
    pub master: u64,
    pub playlist: u64,
    pub segment: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Errors {
    pub total: u64,
    /// Error kind → count, over all request kinds.
    pub by_kind: std::collections::BTreeMap<String, u64>,
    /// Request kind → count.
    pub by_request: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

/// Run the swarm; returns the process exit code.
pub async fn run(s: Settings, url: Url) -> anyhow::Result<i32> {
    let connector = connector(&s, &url)?;
    let metrics = Arc::new(Metrics::new(s.clients as u64));
    let metrics_task = if s.metrics_port != 0 {
        let listener = metrics::bind(s.metrics_port).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on metrics port {} ({e}); choose another with --metrics-port/METRICS_PORT, or 0 to turn it off",
                s.metrics_port
            )
        })?;
        Some(tokio::spawn(metrics::serve(listener, metrics.clone())))
    } else {
        None
    };
    let live = crate::summary::Live::new(&s, &url, &metrics);
    live.install(&metrics);
    let shared = Arc::new(Shared {
        url: url.clone(),
        variant: s.variant,
        timeouts: Timeouts {
            total: s.timeout,
            connect: s.connect_timeout,
            first_byte: s.first_byte_timeout,
            min_rate: s.min_rate,
        },
        reconnect: s.reconnect,
        reconnect_delay_max: s.reconnect_delay_max,
        segment_retries: s.segment_retries,
        metrics: metrics.clone(),
        connector: Arc::new(connector),
    });
    tracing::info!(
        url = %url,
        clients = s.clients,
        ramp_rate = s.ramp_rate,
        metrics_port = s.metrics_port,
        "starting swarm"
    );

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    if let Some(at) = s.start_at {
        let wait = at.wait_from(std::time::SystemTime::now());
        if wait.is_zero() && matches!(at, crate::schedule::StartAt::At(_)) {
            tracing::warn!(
                start_at = %at.to_text(),
                "--start-at has passed; starting now (this replica is late)"
            );
        } else if !wait.is_zero() {
            tracing::info!(start_at = %at.to_text(), wait_s = wait.as_secs_f64(), "waiting for --start-at");
        }
        tokio::select! {
            _ = sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => {
                eprintln!("hls-swarm: stopped by SIGINT before --start-at");
                return Ok(1);
            }
            _ = sigterm.recv() => {
                eprintln!("hls-swarm: stopped by SIGTERM before --start-at");
                return Ok(1);
            }
        }
    }
    let start = Instant::now();
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // Latency behind live is not measured yet: its slot in the series stays null.
    let sampler = series::Sampler::start(
        metrics.clone(),
        start,
        started_unix_ms,
        vec![series::Extra::live_latency(None)],
    );
    live.started(start);
    live.series_from(sampler.source());
    let handles: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
    let ramp = {
        let handles = handles.clone();
        let shared = shared.clone();
        let (clients, rate, jitter) = (s.clients as u64, s.ramp_rate, s.ramp_jitter);
        tokio::spawn(async move {
            let mut rng = Rng::new(0xC0FFEE);
            for i in 0..clients {
                sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
                let delay = jitter.mul_f64(rng.unit());
                let shared = shared.clone();
                let h = tokio::spawn(async move {
                    if !delay.is_zero() {
                        sleep(delay).await;
                    }
                    viewer::run(i, shared).await
                });
                handles.lock().expect("handles").push(h);
            }
        })
    };

    let progress = std::io::stderr().is_terminal();
    let deadline = (!s.duration.is_zero()).then(|| start + s.duration);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_log = Instant::now();
    let stopped_by = loop {
        tokio::select! {
            _ = async { sleep_until(deadline.expect("deadline")).await }, if deadline.is_some() => break "duration",
            _ = tokio::signal::ctrl_c() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            _ = tick.tick() => {
                let ramped = ramp.is_finished();
                if ramped && metrics.active.load(Relaxed) == 0 && metrics.started.load(Relaxed) == s.clients as u64 {
                    break "all viewers finished";
                }
                if progress {
                    eprint!("\r\x1b[K{}", progress_line(&metrics, start.elapsed()));
                } else if last_log.elapsed() >= Duration::from_secs(10) {
                    last_log = Instant::now();
                    tracing::info!("{}", progress_line(&metrics, start.elapsed()));
                }
            }
        }
    };
    let elapsed = start.elapsed();
    let active_at_end = metrics.active.load(Relaxed);
    let recorded = sampler.finish();
    ramp.abort();
    let hs: Vec<_> = std::mem::take(&mut *handles.lock().expect("handles"));
    for h in &hs {
        h.abort();
    }
    // Aborted tasks drop their guards when they next get polled; give them a moment.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        for h in hs {
            let _ = h.await;
        }
    })
    .await;
    if progress {
        eprint!("\r\x1b[K");
    }
    let mut summary = summarize(&s, &url, &metrics, elapsed, stopped_by);
    summary.viewers.active_at_end = active_at_end;
    live.finish(&summary, &metrics, &recorded);
    eprint!("{}", render_summary(&summary));
    if let Some(path) = &s.summary_json {
        let text = serde_json::to_string_pretty(&summary)? + "\n";
        std::fs::write(path, text)
            .map_err(|e| anyhow::anyhow!("cannot write summary JSON {}: {e}", path.display()))?;
    }
    crate::outputs::write(&s, &summary, recorded)?;
    let code = if summary.passed { 0 } else { 1 };
    // Lingering only makes sense after the duration ended: a signal already asked to stop.
    if s.linger && stopped_by == "duration" {
        if metrics_task.is_none() {
            tracing::warn!("--linger with --metrics-port 0: nothing to serve; exiting");
        } else {
            tracing::info!(
                exit_status = code,
                "lingering: serving /metrics and /summary until SIGINT/SIGTERM"
            );
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = sigterm.recv() => {}
            }
        }
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    Ok(code)
}

/// TLS (one shared rustls config) and the redirect policy. TLS is set up whenever it may be
/// needed: an https:// URL, or redirects that may lead to one.
fn connector(s: &Settings, url: &Url) -> anyhow::Result<Connector> {
    let mut c = Connector {
        tls: None,
        follow_redirects: s.follow_redirects,
    };
    if !(url.tls || s.follow_redirects || s.ca_file.is_some() || s.insecure) {
        return Ok(c);
    }
    let settings = crate::tls::TlsSettings {
        ca_file: s.ca_file.clone(),
        insecure: s.insecure,
    };
    let (config, system_roots) = crate::tls::client_config(&settings)?;
    if s.insecure {
        // Once, and whatever the log level.
        eprintln!(
            "hls-swarm: WARNING: --insecure: https:// certificates are NOT verified; any server can pose as the origin (use --ca-file for a private CA instead)"
        );
    } else if system_roots == 0 && s.ca_file.is_none() && url.tls {
        tracing::warn!("no system CA certificates found and no --ca-file: every https:// server will fail as unknown_issuer");
    }
    c.tls = Some(tokio_rustls::TlsConnector::from(config));
    Ok(c)
}

fn progress_line(m: &Metrics, elapsed: Duration) -> String {
    let ms = |q| {
        m.quantile(q)
            .map(|s| format!("{:.1}ms", s * 1e3))
            .unwrap_or("-".into())
    };
    format!(
        "{:>5.0}s viewers {}/{} | requests {} | {} | errors {} | seg p50 {} p99 {} | stalls {}",
        elapsed.as_secs_f64(),
        m.active.load(Relaxed),
        m.target_viewers,
        m.total_requests(),
        human_bytes(m.total_bytes()),
        m.total_errors(),
        ms(0.5),
        ms(0.99),
        m.stalls.load(Relaxed),
    )
}

/// A byte count for people: `512 B`, `1.5 KiB`, `2.0 GiB`.
pub(crate) fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

pub fn summarize(
    s: &Settings,
    url: &Url,
    m: &Metrics,
    elapsed: Duration,
    stopped_by: &str,
) -> Summary {
    let by_kind = |arr: &[std::sync::atomic::AtomicU64; 3]| ByKind {
        total: arr.iter().map(|a| a.load(Relaxed)).sum(),
        master: arr[0].load(Relaxed),
        playlist: arr[1].load(Relaxed),
        segment: arr[2].load(Relaxed),
    };
    let mut errs = Errors {
        total: m.total_errors(),
        by_kind: Default::default(),
        by_request: Default::default(),
    };
    for (name, k) in KINDS {
        let n: u64 = m.errors[k as usize].iter().map(|a| a.load(Relaxed)).sum();
        errs.by_request.insert(name.to_string(), n);
        for (i, ek) in ERROR_KINDS.iter().enumerate() {
            let c = m.errors[k as usize][i].load(Relaxed);
            if c > 0 {
                *errs.by_kind.entry(ek.to_string()).or_default() += c;
            }
        }
    }
    let requests = m.total_requests();
    let error_rate = error_rate(errs.total, requests);
    let ms = |q: f64| m.quantile(q).map(|s| (s * 1e6).round() / 1e3);
    let live = m.live.summary(s.max_latency.map(|d| d.as_secs_f64()));
    Summary {
        url: url.to_string(),
        duration_s: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        stopped_by: stopped_by.to_string(),
        viewers: Viewers {
            target: m.target_viewers,
            started: m.started.load(Relaxed),
            peak_active: m.peak_active.load(Relaxed),
            active_at_end: m.active.load(Relaxed),
        },
        requests: by_kind(&m.requests),
        bytes: by_kind(&m.bytes),
        errors: errs,
        error_rate,
        max_error_rate: s.max_error_rate,
        passed: error_rate <= s.max_error_rate && live.latency_passed(),
        segment_latency_ms: Latency {
            count: m.latency_count(),
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
        },
        stalls: m.stalls.load(Relaxed),
        reconnects: m.reconnects.load(Relaxed),
        segment_retries: m.segment_retries.load(Relaxed),
        segments_skipped: m.segments_skipped.load(Relaxed),
        variants: m.variants(),
        live,
    }
}

/// Errors per request; 1 when there were errors but no request completed its count.
pub fn error_rate(errors: u64, requests: u64) -> f64 {
    if requests == 0 {
        if errors == 0 {
            0.0
        } else {
            1.0
        }
    } else {
        errors as f64 / requests as f64
    }
}

pub fn render_summary(s: &Summary) -> String {
    let ms = |v: Option<f64>| v.map(|v| format!("{v:.1} ms")).unwrap_or("-".into());
    let kinds: Vec<String> = s
        .errors
        .by_kind
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    format!(
        "hls-swarm summary ({url}, {d:.1} s, stopped by {by})\n\
         \x20 viewers:   {started} started of {target}, peak {peak} active, {end} active at the end\n\
         \x20 requests:  {rt} (master {rm}, playlist {rp}, segment {rs})\n\
         \x20 bytes:     {bt} (segments {bs})\n\
         \x20 errors:    {et} ({rate:.3}% of requests, limit {lim:.3}%){kinds}\n\
         \x20 segments:  p50 {p50}, p90 {p90}, p99 {p99} over {n} downloads\n\
         \x20 stalls:    {stalls}; reconnects {rc}; segment retries {sr}; skipped {sk}\n\
         {live}\
         \x20 result:    {res}\n",
        url = s.url,
        d = s.duration_s,
        by = s.stopped_by,
        started = s.viewers.started,
        target = s.viewers.target,
        peak = s.viewers.peak_active,
        end = s.viewers.active_at_end,
        rt = s.requests.total,
        rm = s.requests.master,
        rp = s.requests.playlist,
        rs = s.requests.segment,
        bt = human_bytes(s.bytes.total),
        bs = human_bytes(s.bytes.segment),
        et = s.errors.total,
        rate = s.error_rate * 100.0,
        lim = s.max_error_rate * 100.0,
        kinds = if kinds.is_empty() {
            String::new()
        } else {
            format!(": {}", kinds.join(", "))
        },
        p50 = ms(s.segment_latency_ms.p50),
        p90 = ms(s.segment_latency_ms.p90),
        p99 = ms(s.segment_latency_ms.p99),
        n = s.segment_latency_ms.count,
        stalls = s.stalls,
        rc = s.reconnects,
        sr = s.segment_retries,
        sk = s.segments_skipped,
        live = s.live.render(),
        res = if s.passed {
            match s.live.max_latency_s {
                Some(_) => "PASS (error rate within --max-error-rate, latency within --max-latency)".to_string(),
                None => "PASS (error rate within --max-error-rate)".to_string(),
            }
        } else if s.error_rate > s.max_error_rate {
            "FAIL (error rate above --max-error-rate)".to_string()
        } else {
            format!("FAIL ({})", s.live.latency_failure().unwrap_or_default())
        },
    )
}
