//! Settings: the command line and environment contract of hls-swarm.
//!
//! Every setting has a flag and an environment variable (clap `env`); the precedence is
//! flag > env > built-in default, however the flag is spelled (`--x v`, `--x=v`, anywhere on
//! the line, the last occurrence winning). Container images bake profile values as `Env`, so
//! they sit between the flag and the built-in default. `--print-config` shows the resolved
//! values with their source. The healthcheck re-runs this same parser over another process's
//! command line and environment (see `healthcheck.rs`).

use std::path::PathBuf;
use std::time::Duration;

use crate::payload_settings::swarm;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};

/// The whole command line.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "hls-swarm",
    version,
    about = "HLS load generator: many simulated live viewers against one HLS origin (http:// or https://)",
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Cmd>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Cmd {
    /// Exit 0 only when the running swarm's /health answers 200 (for container healthchecks).
    Healthcheck {
        /// Seconds to wait for the answer.
        #[arg(long, default_value = "3", value_parser = parse_seconds)]
        timeout: Duration,
    },
    /// Merge the `/summary` of every replica of a distributed swarm into one verdict: the
    /// summary of a single run, one line per replica, exit 0 only when the merged error rate
    /// is within the limit.
    Report(ReportArgs),
}

// `hls-swarm report` (src/report.rs): its whole command line; the subcommand's own help is
// the doc comment of `Cmd::Report`.
#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// Replicas' metrics endpoints (http://HOST:PORT, or the full /summary URL).
    #[arg(
        value_name = "URL",
        required_unless_present = "dns",
        conflicts_with = "dns"
    )]
    pub urls: Vec<String>,
    /// A DNS name whose every address is a replica (`tasks.<service>` on Docker Swarm, a
    /// headless Service on Kubernetes).
    #[arg(long, value_name = "NAME")]
    pub dns: Option<String>,
    /// The replicas' metrics port, with --dns.
    #[arg(long, default_value = "9090", requires = "dns")]
    pub port: u16,
    /// Wait until at least this many replicas answer (with --dns: the name may resolve to
    /// fewer while tasks start).
    #[arg(long, value_name = "N")]
    pub expect: Option<usize>,
    /// How long to wait for every replica to finish its run (20s, 5m); 0 = do not wait.
    #[arg(long, default_value = "10m", value_parser = parse_seconds)]
    pub wait: Duration,
    /// The error-rate limit of the verdict (default: the strictest of the replicas').
    #[arg(long, value_parser = parse_rate_fraction)]
    pub max_error_rate: Option<f64>,
    /// Also write the merged summary as JSON (the single-run format plus `replicas`).
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Also write the run's HTML report (src/report_html.rs), one line per replica, from the
    /// time series each replica serves in its `/summary`.
    #[arg(long = "report", value_name = "FILE.html")]
    pub report_html: Option<PathBuf>,
}

/// Every setting of a swarm run.
#[derive(Args, Debug, Clone)]
pub struct Settings {
    /// Master (or media) playlist URL, http:// or https://.
    #[arg(value_name = "URL")]
    pub url_arg: Option<String>,
    /// Master (or media) playlist URL, the same as the positional argument (which wins when
    /// both are given).
    #[arg(long = "url", env = swarm::STREAM_URL.env, value_name = "URL")]
    pub url_flag: Option<String>,
    /// Number of simulated viewers.
    #[arg(long, env = swarm::CLIENTS.env, default_value = swarm::CLIENTS.default, value_parser = clap::value_parser!(u32).range(1..))]
    pub clients: u32,
    /// Viewers started per second.
    #[arg(long, env = swarm::RAMP_RATE.env, default_value = swarm::RAMP_RATE.default, value_parser = parse_rate)]
    pub ramp_rate: f64,
    /// Random extra delay before each viewer starts: milliseconds, or with a unit (100ms, 1s).
    #[arg(long, env = swarm::RAMP_JITTER_MS.env, default_value = swarm::RAMP_JITTER_MS.default, value_parser = parse_millis)]
    pub ramp_jitter: Duration,
    /// Port of /metrics and /health (0 = off).
    #[arg(long, env = swarm::METRICS_PORT.env, default_value = swarm::METRICS_PORT.default)]
    pub metrics_port: u16,
    /// Log level: error, warning (warn), info, debug.
    #[arg(long, env = swarm::LOG_LEVEL.env, default_value = swarm::LOG_LEVEL.default, value_parser = parse_log_level)]
    pub log_level: LogLevel,
    /// Variant choice: all (round-robin over every variant), first, highest, lowest, random.
    #[arg(long, env = swarm::VARIANT.env, default_value = swarm::VARIANT.default, ignore_case = true)]
    pub variant: VariantChoice,
    /// Per-request timeout, connect to last byte: seconds, or with a unit (500ms, 1m).
    #[arg(long, env = swarm::TIMEOUT.env, default_value = swarm::TIMEOUT.default, value_parser = parse_positive_seconds)]
    pub timeout: Duration,
    /// TCP connect timeout: seconds, or with a unit.
    #[arg(long, env = swarm::CONNECT_TIMEOUT.env, default_value = swarm::CONNECT_TIMEOUT.default, value_parser = parse_positive_seconds)]
    pub connect_timeout: Duration,
    /// Time from request sent to the first response byte: seconds, or with a unit.
    #[arg(long, env = swarm::FIRST_BYTE_TIMEOUT.env, default_value = swarm::FIRST_BYTE_TIMEOUT.default, value_parser = parse_positive_seconds)]
    pub first_byte_timeout: Duration,
    /// Least bytes per second a response must keep up once it started, judged over 2 s
    /// windows (a trickling server is a `slow` error); 0 = off. Suffixes k and M (×1000).
    #[arg(long, env = swarm::MIN_RATE.env, default_value = swarm::MIN_RATE.default, value_name = "BYTES/S", value_parser = parse_byte_rate)]
    pub min_rate: u64,
    /// Reconnect after a failed playlist load: true/false/yes/no/1/0.
    #[arg(long, env = swarm::RECONNECT.env, default_value = swarm::RECONNECT.default, value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub reconnect: bool,
    /// Upper bound of the jittered exponential reconnect backoff: seconds, or with a unit.
    #[arg(long, env = swarm::RECONNECT_DELAY_MAX.env, default_value = swarm::RECONNECT_DELAY_MAX.default, value_parser = parse_seconds)]
    pub reconnect_delay_max: Duration,
    /// Retries of a failed segment download before it is skipped.
    #[arg(long, env = swarm::SEGMENT_RETRIES.env, default_value = swarm::SEGMENT_RETRIES.default)]
    pub segment_retries: u32,
    /// Run time (20s, 2m, plain seconds); 0 = until SIGINT/SIGTERM.
    #[arg(long, env = "DURATION", default_value = "0", value_parser = parse_seconds)]
    pub duration: Duration,
    /// Highest acceptable error rate (errors / requests) for exit status 0: 0.01 or 1%.
    #[arg(long, env = "MAX_ERROR_RATE", default_value = "1%", value_parser = parse_rate_fraction)]
    pub max_error_rate: f64,
    /// Highest acceptable p99 latency behind live (seconds, or with a unit) for exit status 0;
    /// a run whose latency cannot be measured (no EXT-X-PROGRAM-DATE-TIME) then fails too.
    #[arg(long, env = "MAX_LATENCY", value_name = "SECONDS", value_parser = parse_positive_seconds)]
    pub max_latency: Option<Duration>,
    /// PEM file of CA certificates trusted for https:// in addition to the system's roots.
    #[arg(long, env = "CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Do not verify https:// certificates at all (said loudly at start; for tests only).
    #[arg(long, env = "INSECURE", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
    /// Follow HTTP redirects (301, 302, 303, 307, 308; same- and cross-origin, at most 5 per
    /// request) as players do; without it a redirect is a `redirect` error.
    #[arg(long, env = "FOLLOW_REDIRECTS", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub follow_redirects: bool,
    /// After --duration ends: print the summary, then keep serving /metrics and /summary
    /// until SIGINT/SIGTERM, and exit with the run's verdict (for replicas whose summary
    /// `hls-swarm report` collects): true/false.
    #[arg(long, env = "LINGER", default_value = "false", value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub linger: bool,
    /// Start the ramp at this instant, so replicas ramp as one swarm: an RFC 3339 UTC time
    /// (2026-12-02T07:00:00Z) or +SECONDS after start-up; empty = at once.
    #[arg(long, env = "START_AT", value_name = "TIME|+SECONDS", value_parser = crate::schedule::parse_start_at)]
    pub start_at: Option<crate::schedule::StartAt>,
    /// Also write the final summary as JSON to this file.
    #[arg(long, env = "SUMMARY_JSON", value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Also write a self-contained HTML report to this file at the end: settings, verdict and
    /// charts of the run over time (no network needed to open it).
    #[arg(long = "report", env = "REPORT_HTML", value_name = "FILE.html")]
    pub report_html: Option<PathBuf>,
    /// Also write the run's time series (one point per second) as JSON to this file.
    #[arg(long, env = "SERIES_JSON", value_name = "FILE")]
    pub series_json: Option<PathBuf>,
    /// Print the resolved settings as JSON (value and source of each) and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl Settings {
    /// The stream URL from the positional argument, `--url` or `STREAM_URL`, in that order.
    pub fn url(&self) -> Option<&str> {
        self.url_arg
            .as_deref()
            .or(self.url_flag.as_deref())
            .filter(|u| !u.trim().is_empty())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VariantChoice {
    All,
    First,
    Highest,
    Lowest,
    Random,
}

impl VariantChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            VariantChoice::All => "all",
            VariantChoice::First => "first",
            VariantChoice::Highest => "highest",
            VariantChoice::Lowest => "lowest",
            VariantChoice::Random => "random",
        }
    }
}

/// Parse a command line (args[0] is the program name) into the typed settings and the raw
/// matches (which know each value's source).
pub fn parse_from<I, T>(args: I) -> Result<(Cli, ArgMatches), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok((cli, matches))
}

fn source_name(m: &ArgMatches, id: &str) -> &'static str {
    match m.value_source(id) {
        Some(ValueSource::CommandLine) => "flag",
        Some(ValueSource::EnvVariable) => "env",
        _ => "default",
    }
}

/// The resolved settings as JSON: `{"clients": {"value": 50, "source": "default", ...}, ...}`.
pub fn resolved_json(s: &Settings, m: &ArgMatches) -> Value {
    let mut out = Map::new();
    let mut put = |key: &str, id: &str, env: Option<&str>, value: Value| {
        let mut o = Map::new();
        o.insert("value".into(), value);
        o.insert("source".into(), Value::from(source_name(m, id)));
        o.insert(
            "flag".into(),
            Value::from(format!("--{}", key.replace('_', "-"))),
        );
        if let Some(env) = env {
            o.insert("env".into(), Value::from(env));
        }
        out.insert(key.to_string(), Value::Object(o));
    };
    let url_source = if s.url_arg.is_some() {
        "flag"
    } else {
        source_name(m, "url_flag")
    };
    put("clients", "clients", Some("CLIENTS"), json!(s.clients));
    put(
        "ramp_rate",
        "ramp_rate",
        Some("RAMP_RATE"),
        json!(s.ramp_rate),
    );
    put(
        "ramp_jitter",
        "ramp_jitter",
        Some("RAMP_JITTER"),
        json!(s.ramp_jitter.as_millis() as u64),
    );
    put(
        "metrics_port",
        "metrics_port",
        Some("METRICS_PORT"),
        json!(s.metrics_port),
    );
    put(
        "log_level",
        "log_level",
        Some("LOG_LEVEL"),
        json!(s.log_level.as_str()),
    );
    put(
        "variant",
        "variant",
        Some("VARIANT"),
        json!(s.variant.as_str()),
    );
    put(
        "timeout",
        "timeout",
        Some("TIMEOUT"),
        json!(s.timeout.as_secs_f64()),
    );
    put(
        "connect_timeout",
        "connect_timeout",
        Some("CONNECT_TIMEOUT"),
        json!(s.connect_timeout.as_secs_f64()),
    );
    put(
        "first_byte_timeout",
        "first_byte_timeout",
        Some("FIRST_BYTE_TIMEOUT"),
        json!(s.first_byte_timeout.as_secs_f64()),
    );
    put("min_rate", "min_rate", Some("MIN_RATE"), json!(s.min_rate));
    put(
        "reconnect",
        "reconnect",
        Some("RECONNECT"),
        json!(s.reconnect),
    );
    put(
        "reconnect_delay_max",
        "reconnect_delay_max",
        Some("RECONNECT_DELAY_MAX"),
        json!(s.reconnect_delay_max.as_secs_f64()),
    );
    put(
        "segment_retries",
        "segment_retries",
        Some("SEGMENT_RETRIES"),
        json!(s.segment_retries),
    );
    put(
        "duration",
        "duration",
        Some("DURATION"),
        json!(s.duration.as_secs_f64()),
    );
    put(
        "max_error_rate",
        "max_error_rate",
        Some("MAX_ERROR_RATE"),
        json!(s.max_error_rate),
    );
    put(
        "max_latency",
        "max_latency",
        Some("MAX_LATENCY"),
        json!(s.max_latency.map(|d| d.as_secs_f64())),
    );
    put(
        "ca_file",
        "ca_file",
        Some("CA_FILE"),
        json!(s.ca_file.as_ref().map(|p| p.display().to_string())),
    );
    put("insecure", "insecure", Some("INSECURE"), json!(s.insecure));
    put(
        "follow_redirects",
        "follow_redirects",
        Some("FOLLOW_REDIRECTS"),
        json!(s.follow_redirects),
    );
    put(
        "summary_json",
        "summary_json",
        Some("SUMMARY_JSON"),
        json!(s.summary_json.as_ref().map(|p| p.display().to_string())),
    );
    put(
        "report",
        "report_html",
        Some("REPORT_HTML"),
        json!(s.report_html.as_ref().map(|p| p.display().to_string())),
    );
    put(
        "series_json",
        "series_json",
        Some("SERIES_JSON"),
        json!(s.series_json.as_ref().map(|p| p.display().to_string())),
    );
    put("linger", "linger", Some("LINGER"), json!(s.linger));
    put(
        "start_at",
        "start_at",
        Some("START_AT"),
        json!(s.start_at.map(|a| a.to_text())),
    );
    let mut url = Map::new();
    url.insert("value".into(), json!(s.url()));
    url.insert("source".into(), json!(url_source));
    url.insert("flag".into(), json!("URL | --url"));
    url.insert("env".into(), json!("STREAM_URL"));
    out.insert("url".into(), Value::Object(url));
    // Units of the numbers above, so a reader does not have to guess.
    out.insert(
        "units".into(),
        json!({"ramp_jitter": "ms", "timeout": "s", "connect_timeout": "s", "first_byte_timeout": "s", "min_rate": "bytes/s", "reconnect_delay_max": "s", "duration": "s", "ramp_rate": "viewers/s", "max_error_rate": "fraction", "max_latency": "s"}),
    );
    Value::Object(out)
}

/// A duration given as a number in `default_unit` or with a unit suffix (ms, s, m, h).
pub fn parse_duration(s: &str, default_unit: Duration) -> Result<Duration, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (examples: 100ms, 20s, 2m, 15)"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("`{s}` must not be negative"));
    }
    let unit = match unit.trim() {
        "" => default_unit,
        "ms" => Duration::from_millis(1),
        "s" | "sec" | "secs" => Duration::from_secs(1),
        "m" | "min" | "mins" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}` (use ms, s, m or h)"
            ))
        }
    };
    Ok(unit.mul_f64(n))
}

pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    parse_duration(s, Duration::from_secs(1))
}

/// A duration above zero (a zero timeout would fail every request).
pub fn parse_positive_seconds(s: &str) -> Result<Duration, String> {
    let d = parse_seconds(s)?;
    if d.is_zero() {
        return Err(format!("`{s}` must be above 0 (examples: 500ms, 5s)"));
    }
    Ok(d)
}

/// Bytes per second: a whole number, optionally with k or M (×1000); 0 = off.
pub fn parse_byte_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.strip_suffix(['k', 'K']) {
        Some(n) => (n, 1000),
        None => match t.strip_suffix('M') {
            Some(n) => (n, 1_000_000),
            None => (t, 1),
        },
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| {
            format!("`{s}` is not a rate in bytes per second (examples: 1000, 8k, 0 = off)")
        })
}

pub fn parse_millis(s: &str) -> Result<Duration, String> {
    parse_duration(s, Duration::from_millis(1))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "`{s}` must be a positive number of viewers per second"
        )),
    }
}

/// `0.01` or `1%`.
pub fn parse_rate_fraction(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, scale) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), 0.01),
        None => (t, 1.0),
    };
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale <= 1.0 => Ok(v * scale),
        _ => Err(format!(
            "`{s}` must be a fraction 0..1 (0.01) or a percentage (1%)"
        )),
    }
}

pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" | "y" => Ok(true),
        "false" | "no" | "0" | "off" | "n" => Ok(false),
        _ => Err(format!("`{s}` is not a boolean (true/false/yes/no/1/0)")),
    }
}

fn parse_log_level(s: &str) -> Result<LogLevel, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "error" => Ok(LogLevel::Error),
        "warning" | "warn" => Ok(LogLevel::Warn),
        "info" => Ok(LogLevel::Info),
        "debug" => Ok(LogLevel::Debug),
        "trace" => Ok(LogLevel::Trace),
        _ => Err(format!(
            "`{s}` is not a log level (error, warning, info, debug)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_plain_numbers() {
        assert_eq!(parse_seconds("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_seconds("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_seconds("15").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_seconds("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_millis("100").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_millis("1s").unwrap(), Duration::from_secs(1));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("3 fortnights").is_err());
    }

    #[test]
    fn byte_rates_and_positive_timeouts() {
        assert_eq!(parse_byte_rate("1000").unwrap(), 1000);
        assert_eq!(parse_byte_rate("8k").unwrap(), 8000);
        assert_eq!(parse_byte_rate("2M").unwrap(), 2_000_000);
        assert_eq!(parse_byte_rate("0").unwrap(), 0);
        assert!(parse_byte_rate("fast").is_err());
        assert!(parse_byte_rate("-1").is_err());
        assert!(parse_positive_seconds("0").is_err());
        assert_eq!(
            parse_positive_seconds("250ms").unwrap(),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn error_rates_accept_fraction_and_percent() {
        assert_eq!(parse_rate_fraction("0.01").unwrap(), 0.01);
        assert!((parse_rate_fraction("1%").unwrap() - 0.01).abs() < 1e-12);
        assert!(parse_rate_fraction("150%").is_err());
    }

    #[test]
    fn last_occurrence_wins_and_env_loses_to_flag() {
        let (cli, m) = parse_from(["hls-swarm", "--clients", "3", "u", "--clients=7"]).unwrap();
        assert_eq!(cli.settings.clients, 7);
        assert_eq!(source_name(&m, "clients"), "flag");
    }
}
