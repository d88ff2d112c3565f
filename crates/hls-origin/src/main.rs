//! `hls-origin`: a live HLS origin server for load testing.
//!
//! It serves a never-ending live stream whose segments are synthetic but valid MPEG-TS (H.264
//! Constrained Baseline video + AAC-LC ADTS audio; see [`ts`]): a moving test pattern with the
//! time burned in ([`h264`]) and a ~1 kHz tone ([`tone`]), or with `--source DIR` the user's
//! own segments, looped ([`source`]). Segments are generated in memory, cached per sequence
//! number and sent from a memfd (no per-request copy), over a small hand-written HTTP/1.1
//! server ([`http`]). The design is in docs/stream.md.
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
//! Segments are numbered by the wall clock: segment `n` starts `n × segment-duration` after
//! 1970-01-01T00:00:00Z (its `EXT-X-PROGRAM-DATE-TIME`), so replicas with the same settings and
//! synchronised clocks agree on every playlist and segment byte. The playlist is always a full
//! window of complete segments and advances by one every segment duration; segments stay
//! servable `delete-threshold` segments after leaving the window and then answer 404, as do
//! segments not yet produced. Media playlist Cache-Control: `max-age` = half a segment rounded down (at least 1 s),
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
mod cpu_share;
mod h264;
mod healthcheck;
mod http;
mod metrics;
/// The one table of the payloads' setting names and defaults (crates/payload-settings),
/// compiled in as a module rather than linked as a crate: the program's dependency list, and
/// with it the SBOM imgbuild writes into every image, stays the program's own.
#[allow(dead_code)]
#[path = "../../payload-settings/src/lib.rs"]
mod payload_settings;
mod source;
mod stream;
mod tls;
/// The signature checks of a custom rustls verifier (hls-swarm's module, compiled in as the
/// payload settings are, so the dependency list stays the program's own).
#[path = "../../hls-swarm/src/tls_signatures.rs"]
mod tls_signatures;
mod tone;
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
    // A source directory is read whole before anything else: a bad one is one line, exit 2.
    let source = if cli.settings.source.is_empty() {
        None
    } else {
        match source::SourceLoop::load(std::path::Path::new(&cli.settings.source)) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("hls-origin: {e}");
                std::process::exit(2);
            }
        }
    };
    // So are the certificate and key: a bad one is one line, exit 2, before anything listens.
    let tls = if cli.settings.tls_cert.is_empty() != cli.settings.tls_key.is_empty() {
        eprintln!("hls-origin: --tls-cert and --tls-key go together: give both for HTTPS, or neither for HTTP");
        std::process::exit(2);
    } else if cli.settings.tls_cert.is_empty() {
        None
    } else {
        match tls::acceptor(
            std::path::Path::new(&cli.settings.tls_cert),
            std::path::Path::new(&cli.settings.tls_key),
        ) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("hls-origin: {e}");
                std::process::exit(2);
            }
        }
    };
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
    if let Err(e) = run(cli, source, tls) {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}

/// One single-threaded runtime per core, each accepting on its own descriptor of the one
/// listening socket and handing a connection to the least-loaded worker when it holds more
/// (see [`http::serve`]); no work stealing between threads on the request path. The main thread runs the clock, signals and the
/// access-log writer.
fn run(
    cli: Cli,
    source: Option<source::SourceLoop>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let s = cli.settings;
    let fd_limit = raise_fd_limit();
    let max_connections = connection_limit(&s, fd_limit);
    let addr = SocketAddr::new(s.bind, s.port);
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    // The address really bound: with --port 0 the kernel picks the port, and the
    // "hls-origin listening" line below tells it (tests start the origin that way).
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    // std listens with a backlog of 128: a burst of connections (a flood of idle peers, or
    // a thousand viewers arriving at once) would overflow it and make every client behind
    // it wait a second for its SYN to be retransmitted. Listening again raises the backlog
    // (Linux caps it at net.core.somaxconn), as nginx's `backlog` does.
    // SAFETY: the descriptor is the listener's own, open for the call.
    if unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), LISTEN_BACKLOG) } != 0 {
        tracing::warn!(
            "cannot raise the listen backlog: {}",
            std::io::Error::last_os_error()
        );
    }
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let (log_tx, log_task) = if s.access_log != AccessLog::Off {
        let (tx, rx) = mpsc::channel::<String>(16_384);
        (Some(tx), Some(control.spawn(access_log_writer(rx))))
    } else {
        (None, None)
    };
    let stream = stream::Stream::new(s.clone(), source);
    let mut app = http::App::new(stream, log_tx, max_connections);
    app.tls = tls;
    let scheme = if app.tls.is_some() { "https" } else { "http" };
    let app = Arc::new(app);
    for v in &app.stream.variants {
        tracing::info!(
            variant = %v.info.name,
            playlist = %format!("{}{}", v.prefix, s.playlist_name),
            segment_bytes = v.content.segment(app.stream.media_sequence()).len(),
            "variant ready"
        );
    }

    // Signal handlers are in place before the first connection can be accepted.
    let (mut term, mut int) = {
        let _rt = control.enter();
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel::<()>();
    let (workers, inboxes) = http::Workers::new(threads);
    for (i, inbox) in inboxes.into_iter().enumerate() {
        let fd = listener.try_clone()?;
        let app = app.clone();
        let mut stop = stop_rx.clone();
        let closed = closed_tx.clone();
        let workers = workers.clone();
        std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("worker runtime");
                rt.block_on(async move {
                    match tokio::net::TcpListener::from_std(fd) {
                        Ok(l) => {
                            tokio::select! {
                                _ = http::serve(l, app, i, workers, inbox) => {}
                                _ = stop.changed() => {}
                            }
                        }
                        Err(e) => tracing::error!("worker {i}: {e}"),
                    }
                    // The listener is dropped; open connections keep being served until exit.
                    let _ = closed.send(());
                    std::future::pending::<()>().await
                })
            })?;
    }
    drop(closed_tx);
    // The workers hold the only descriptors of the socket from here on.
    drop(listener);
    tracing::info!(%addr, scheme, threads, master = %format!("/{}", s.master_name), segment_duration = s.segment_duration, list_size = s.list_size, max_connections, fd_limit, header_timeout = s.header_timeout, keepalive_timeout = s.keepalive_timeout, send_timeout = s.send_timeout, "hls-origin listening");

    control.block_on(async move {
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
        let sig = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        // Close the listeners first: no new connections from here on.
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_millis(300), async {
            for _ in 0..threads {
                closed_rx.recv().await;
            }
        })
        .await;
        ticker.abort();
        tracing::info!("{sig}: listener closed, exiting");
        drop(app);
        if let Some(task) = log_task {
            // Let the access log drain; never more than a fraction of the stop budget.
            let _ = tokio::time::timeout(Duration::from_millis(300), task).await;
        }
        let _ = std::io::stderr().flush();
        anyhow::Ok(())
    })?;
    // Connections still open must not delay exit: leave them to the kernel.
    std::process::exit(0);
}

/// Pending connections the kernel may queue before the accept loop takes them.
const LISTEN_BACKLOG: libc::c_int = 4096;

/// Raise the soft open-file limit to the hard one (every connection is a descriptor); returns
/// the soft limit in force afterwards.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid rlimit to fill / read.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            tracing::debug!(
                from = lim.rlim_cur,
                to = lim.rlim_max,
                "raised the open-file limit"
            );
            lim.rlim_cur = lim.rlim_max;
        }
    }
    lim.rlim_cur
}

/// Descriptors kept back from client connections: stdio, the listener and its per-worker
/// copies, epoll and wakeup descriptors, and the cached segment bodies (one memfd each).
fn fd_reserve(s: &config::Settings) -> u64 {
    let variants = s.variants.list.len() as u64;
    let cached_segments = (s.list_size + s.delete_threshold + 2) * variants;
    64 + 2 * cached_segments
}

/// The connection limit: --max-connections, or (0) the open-file limit minus the reserve.
/// An explicit limit the descriptors cannot hold is lowered to what they can, with a warning.
fn connection_limit(s: &config::Settings, fd_limit: u64) -> u64 {
    let reserve = fd_reserve(s);
    let room = fd_limit.saturating_sub(reserve).max(1);
    match s.max_connections {
        0 => room,
        n if n > room => {
            tracing::warn!(
                max_connections = n,
                fd_limit,
                using = room,
                "--max-connections is above what the open-file limit holds; raise `ulimit -n` (hard) or lower MAX_CONNECTIONS"
            );
            room
        }
        n => n,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> config::Settings {
        // Explicit window and ladder, so the environment cannot change the reserve.
        let mut argv: Vec<String> = [
            "hls-origin",
            "--list-size=10",
            "--delete-threshold=5",
            "--variants=360p:640x360:500k/550k/1000k:64k",
        ]
        .map(String::from)
        .to_vec();
        argv.extend(args.iter().map(|a| a.to_string()));
        config::parse_from(&argv).unwrap().0.settings
    }

    #[test]
    fn the_connection_limit_follows_the_fd_limit_and_never_exceeds_it() {
        // One variant, 10 + 5 + 2 cached segments → reserve 64 + 2 × 17 = 98.
        let s = settings(&["--max-connections", "0"]);
        assert_eq!(fd_reserve(&s), 98);
        assert_eq!(connection_limit(&s, 20_000), 20_000 - 98);
        // An explicit limit the descriptors can hold is kept; one they cannot is lowered.
        let s = settings(&["--max-connections", "500"]);
        assert_eq!(connection_limit(&s, 20_000), 500);
        assert_eq!(connection_limit(&s, 400), 400 - 98);
        // Even a tiny fd limit leaves room for one connection rather than none.
        assert_eq!(connection_limit(&s, 10), 1);
    }
}
