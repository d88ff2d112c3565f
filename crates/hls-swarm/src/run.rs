//! A swarm run: wait for `--start-at`, ramp viewers up, serve metrics (and `/summary`,
//! src/summary.rs), show progress, stop on --duration or SIGINT/SIGTERM (also as PID 1), then
//! print the summary and decide the exit status; with `--linger`, keep serving `/metrics` and
//! the final `/summary` until SIGINT/SIGTERM before exiting with that status.

use std::io::IsTerminal;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};

use crate::config::Settings;
use crate::http::{Connector, Timeouts, Url};
use crate::metrics::{self, Metrics};
use crate::series;
use crate::summary::{human_bytes, render_summary, summarize};
use crate::viewer::{self, Rng, Shared};

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
