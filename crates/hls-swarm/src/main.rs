//! hls-swarm: an HLS load generator that behaves like many live HLS viewers (http:// or
//! https://).
//!
//! Stages: parse settings (config) → `--print-config` / `healthcheck` / missing-URL exits →
//! run the swarm on one tokio runtime (run, viewer, http, m3u8, metrics) → summary and exit
//! status (1 when the error rate passes `--max-error-rate` or the p99 latency behind live
//! passes `--max-latency`). `report` merges replicas' summaries (src/report.rs).

use hls_swarm::config::{self, Cmd, LogLevel};
use hls_swarm::{healthcheck, http, outputs, report, run};

fn main() {
    std::process::exit(real_main());
}

fn real_main() -> i32 {
    let (cli, matches) = match config::parse_from(std::env::args_os()) {
        Ok(v) => v,
        Err(e) => e.exit(),
    };
    match &cli.command {
        Some(Cmd::Healthcheck { timeout }) => return healthcheck::run(&cli.settings, *timeout),
        Some(Cmd::Report(args)) => {
            init_logging(cli.settings.log_level);
            return report::run(args);
        }
        None => {}
    }
    let s = cli.settings;
    if s.print_config {
        let v = config::resolved_json(&s, &matches);
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return 0;
    }
    let Some(url) = s.url() else {
        eprintln!(
            "hls-swarm: no stream URL: give it as the first argument, with --url, or in STREAM_URL"
        );
        return 2;
    };
    let url = match http::Url::parse(url) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("hls-swarm: bad stream URL {e}");
            return 2;
        }
    };
    if let Err(msg) = outputs::check_paths(&s) {
        eprintln!("hls-swarm: {msg}");
        return 2;
    }
    init_logging(s.log_level);
    raise_fd_limit(s.clients as u64);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hls-swarm: cannot start the runtime: {e}");
            return 1;
        }
    };
    let code = match rt.block_on(run::run(s, url)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hls-swarm: {e:#}");
            1
        }
    };
    // Do not wait for stray tasks (for example blocked DNS lookups) at exit.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}

fn init_logging(level: LogLevel) {
    let filter = tracing_subscriber::EnvFilter::new(format!("hls_swarm={}", level.as_str()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// One socket per viewer: raise the soft open-file limit to the hard one, and say so when even
/// that is too low for the number of viewers.
fn raise_fd_limit(clients: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        tracing::debug!(from = soft, to = hard, "raised the open-file limit");
    }
    let now = getrlimit(Resource::RLIMIT_NOFILE)
        .map(|l| l.0)
        .unwrap_or(soft);
    if now < clients + 64 {
        tracing::warn!(
            limit = now,
            clients,
            "open-file limit is below one socket per viewer; expect connect errors (raise ulimit -n)"
        );
    }
}
