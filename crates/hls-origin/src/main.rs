//! `hls-origin`: a live HLS origin server for load testing.
//!
//! It serves a never-ending live stream whose segments are synthetic but valid MPEG-TS (H.264
//! Constrained Baseline video + AAC-LC ADTS audio; see [`ts`]), generated in memory, cached per
//! sequence number as `Bytes` and written with `writev` (no per-request copy), over a small
//! hand-written HTTP/1.1 server ([`http`]).
//!
//! # URL layout
//! * `/master.m3u8` (`--master-name`): the master playlist, always present, one
//!   `EXT-X-STREAM-INF` per variant (BANDWIDTH = (max video + audio) rate, AVERAGE-BANDWIDTH =
//!   (video + audio) rate, RESOLUTION, CODECS, FRAME-RATE).
//! * One variant: `/stream.m3u8` and `/seg00042.ts` at the root.
//! * Several variants: `/<variant>/stream.m3u8` and `/<variant>/seg00042.ts`.
//! * `/health` → 200 `OK\n` (text/plain, no-store); `/metrics` → Prometheus text.
//!
//! # Timeline
//! The stream is taken to have started `list-size` segments before the server, so the first
//! playlist is a full window with media sequence 0. The media sequence then advances by one
//! every segment duration (monotonic clock); segments stay servable `delete-threshold` segments
//! after leaving the window and then answer 404, as do segments not yet produced. Media playlist
//! Cache-Control: `max-age` = half a segment rounded down (at least 1 s),
//! `stale-while-revalidate` = a segment rounded up (delta-seconds are integers).
//!
//! # Settings
//! Every setting is a flag and an environment variable; precedence flag > env > default (see
//! [`config`]); `--print-config` prints the resolved values and their sources as JSON.
//! `hls-origin healthcheck [--timeout SECS]` probes the running server (see [`healthcheck`]).
//!
//! # Process
//! Logs go to stderr (tracing); the optional access log (`--access-log segments|all`) goes to
//! stdout through a bounded channel and a writer task, dropping (and counting) lines rather
//! than ever blocking a response. On SIGTERM or SIGINT the listener is closed first and the
//! process exits within a second, as PID 1 in a container must.

mod body;
mod config;
mod healthcheck;
mod http;
mod metrics;
mod stream;
mod ts;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use config::{AccessLog, Cli, Command, LogLevel};

fn main() {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    if let Some(Command::Healthcheck { timeout }) = cli.command {
        std::process::exit(healthcheck::run(&cli.settings, &matches, timeout));
    }
    if let Err(e) = cli.settings.validate() {
        eprintln!("hls-origin: invalid settings: {e}");
        std::process::exit(2);
    }
    if cli.print_config {
        let json = serde_json::to_string_pretty(&cli.settings.to_json(&matches)).expect("JSON");
        println!("{json}");
        return;
    }
    let level = match cli.settings.log_level {
        LogLevel::Error => tracing::Level::ERROR,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Trace => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    if let Err(e) = run(cli) {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(serve(cli))?;
    // Connections still open must not delay exit: leave them to the kernel.
    std::process::exit(0);
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let s = cli.settings;
    let addr = SocketAddr::new(s.bind, s.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;

    let (log_tx, log_task) = if s.access_log != AccessLog::Off {
        let (tx, rx) = mpsc::channel::<String>(16_384);
        (Some(tx), Some(tokio::spawn(access_log_writer(rx))))
    } else {
        (None, None)
    };
    let stream = stream::Stream::new(s.clone());
    let app = Arc::new(http::App::new(stream, log_tx));
    for v in &app.stream.variants {
        tracing::info!(
            variant = %v.info.name,
            playlist = %format!("{}{}", v.prefix, s.playlist_name),
            segment_bytes = v.plan.segment(0).len(),
            "variant ready"
        );
    }
    tracing::info!(%addr, master = %format!("/{}", s.master_name), segment_duration = s.segment_duration, list_size = s.list_size, "hls-origin listening");

    let ticker = {
        let app = app.clone();
        tokio::spawn(async move {
            loop {
                app.stream.advance();
                tracing::debug!(
                    media_sequence = app.stream.media_sequence(),
                    "window advanced"
                );
                tokio::time::sleep(app.stream.until_next() + Duration::from_millis(1)).await;
            }
        })
    };
    let server = tokio::spawn(http::serve(listener, app.clone()));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let sig = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    // Close the listener first: no new connections from here on.
    server.abort();
    let _ = server.await;
    ticker.abort();
    tracing::info!("{sig}: listener closed, exiting");
    drop(app);
    if let Some(task) = log_task {
        // Give the access log a moment to drain; never more than a fraction of the stop budget.
        let _ = tokio::time::timeout(Duration::from_millis(300), task).await;
    }
    let _ = std::io::stderr().flush();
    Ok(())
}

/// Writes access-log lines to stdout, batching while lines are queued.
async fn access_log_writer(mut rx: mpsc::Receiver<String>) {
    let mut out = tokio::io::stdout();
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(line) = rx.recv().await {
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        while buf.len() < 60 * 1024 {
            match rx.try_recv() {
                Ok(l) => {
                    buf.extend_from_slice(l.as_bytes());
                    buf.push(b'\n');
                }
                Err(_) => break,
            }
        }
        if out.write_all(&buf).await.is_err() {
            return;
        }
        let _ = out.flush().await;
        buf.clear();
    }
}
