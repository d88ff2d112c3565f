//! Settings: the command line and environment contract, and its resolution.
//!
//! Every setting has a flag and an environment variable (clap `env`); clap resolves them with
//! the precedence flag > env > built-in default, whichever way the flag is written. The same
//! parsing code is reused by `healthcheck` to resolve another process's settings from its
//! `/proc/PID/cmdline` and `/proc/PID/environ`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::payload_settings::origin;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};

/// Long help shown after the options.
const AFTER_HELP: &str = "\
URL layout:
  /master.m3u8                 master (multi-variant) playlist, always present
  one variant:   /stream.m3u8, /seg00042.ts
  several:       /<variant>/stream.m3u8, /<variant>/seg00042.ts
  /health  -> 200 OK (text/plain, no-store);  /metrics -> Prometheus text

Precedence: flag > environment variable > built-in default.

healthcheck: `hls-origin healthcheck` exits 0 when GET /health on the running server answers
200 within --timeout. It finds the server process via /proc (same executable, not a
healthcheck; a sibling process first, then PID 1, then the only one) and resolves its port and
bind address from its command line and environment with this same parser. Explicit flags
before the subcommand win (`hls-origin --port 18080 healthcheck`); without a server process
found it uses its own flags/env/defaults. It writes nothing, so it works with --read-only.

Hostile peers (docs/hardening.md): a connection is closed when its request header is not
complete --header-timeout seconds after the accept (or after the first byte of a later
request), when it idles --keepalive-timeout seconds between requests, or when a response makes
no progress for --send-timeout seconds. Beyond --max-connections open connections a new one
gets 503 and is closed. /metrics counts each (hls_origin_connections_closed_total{reason},
hls_origin_connections_refused_total).

HTTPS: --tls-cert FILE --tls-key FILE (PEM) serve HTTPS instead of HTTP on --port; the
healthcheck then speaks TLS too, trusting exactly the server's own certificate (docs/tls.md).

Segments: 404 once older than list-size + delete-threshold, or not yet produced.
Cache-Control: segments max-age=60 immutable; media playlists max-age = half a segment (whole
seconds, at least 1), stale-while-revalidate = a segment rounded up; master max-age=5.
Stops within a second on SIGTERM/SIGINT, closing the listener first.";

#[derive(Debug, Parser)]
#[command(name = "hls-origin", version, about = "Live HLS origin server (synthetic H.264/AAC MPEG-TS, rolling window)", after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,

    /// Print the resolved settings as JSON ({"value":…, "source":"flag"|"env"|"default"}) and exit.
    #[arg(long, global = false)]
    pub print_config: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Exit 0 when the running server's GET /health answers 200 in time, else 1 with a reason.
    Healthcheck {
        /// Seconds to wait for the answer (connect + response).
        #[arg(long, default_value_t = 2.0)]
        timeout: f64,
    },
}

/// Access-log modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccessLog {
    Off,
    Segments,
    All,
}

/// Log levels (`warning` is accepted for `warn`, as the bench spelled it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    #[value(alias = "warning")]
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Listen port.
    #[arg(long, env = origin::PORT.env, default_value = origin::PORT.default)]
    pub port: u16,
    /// Listen address.
    #[arg(long, env = origin::BIND.env, default_value = origin::BIND.default)]
    pub bind: IpAddr,
    /// Segment duration in seconds (may be fractional, e.g. 0.5).
    #[arg(long, env = origin::SEGMENT_DURATION.env, default_value = origin::SEGMENT_DURATION.default, value_parser = positive_f64)]
    pub segment_duration: f64,
    /// Playlist window, in segments.
    #[arg(long, env = origin::LIST_SIZE.env, default_value = origin::LIST_SIZE.default, value_parser = clap::value_parser!(u64).range(1..))]
    pub list_size: u64,
    /// Segments kept after leaving the window before they answer 404.
    #[arg(long, env = origin::DELETE_THRESHOLD.env, default_value = origin::DELETE_THRESHOLD.default)]
    pub delete_threshold: u64,
    /// Media playlist name.
    #[arg(long, env = origin::PLAYLIST.env, default_value = origin::PLAYLIST.default, value_parser = file_name)]
    pub playlist_name: String,
    /// Master playlist name.
    #[arg(long, env = origin::MASTER.env, default_value = origin::MASTER.default, value_parser = file_name)]
    pub master_name: String,
    /// Segment file name, printf-style with one %0Nd (or %d).
    #[arg(long, env = origin::SEGMENT_PATTERN.env, default_value = origin::SEGMENT_PATTERN.default, value_parser = SegmentPattern::from_str)]
    pub segment_pattern: SegmentPattern,
    /// Frames per second (GOP = fps × segment duration: every segment starts with an IDR).
    #[arg(long, env = origin::FPS.env, default_value = origin::FPS.default, value_parser = positive_f64)]
    pub fps: f64,
    /// Variant ladder, comma-separated NAME:WxH:VIDEO/MAX/BUFFER:AUDIO (rates in k).
    #[arg(long, env = origin::VARIANTS.env, default_value = origin::VARIANTS.default, value_parser = parse_variants)]
    pub variants: Variants,
    /// Access log on stdout: off, segments, all (never blocks serving; drops and counts when full).
    #[arg(long, env = origin::ACCESS_LOG.env, value_enum, default_value = origin::ACCESS_LOG.default)]
    pub access_log: AccessLog,
    /// Log level (stderr): error, warn(ing), info, debug, trace.
    #[arg(long, env = origin::LOG_LEVEL.env, value_enum, default_value = origin::LOG_LEVEL.default)]
    pub log_level: LogLevel,
    /// Serve the MPEG-TS segments (*.ts, in name order) of this directory as a looping live
    /// stream instead of the test pattern; empty: the test pattern.
    #[arg(long, env = origin::SOURCE.env, default_value = origin::SOURCE.default)]
    pub source: String,
    /// Seconds a connection has to send a complete request header, counted from the accept
    /// (or from the first byte of a later request); one that sends nothing is closed too.
    #[arg(long, env = origin::HEADER_TIMEOUT.env, default_value = origin::HEADER_TIMEOUT.default, value_parser = positive_f64)]
    pub header_timeout: f64,
    /// Seconds a keep-alive connection may stay idle between requests.
    #[arg(long, env = origin::KEEPALIVE_TIMEOUT.env, default_value = origin::KEEPALIVE_TIMEOUT.default, value_parser = positive_f64)]
    pub keepalive_timeout: f64,
    /// Seconds without progress writing a response (a client that stops reading) before closing.
    #[arg(long, env = origin::SEND_TIMEOUT.env, default_value = origin::SEND_TIMEOUT.default, value_parser = positive_f64)]
    pub send_timeout: f64,
    /// Most open client connections; further ones get a 503 and are closed. 0 = from the
    /// open-file limit (raised to its hard limit at start) minus a reserve.
    #[arg(long, env = origin::MAX_CONNECTIONS.env, default_value = origin::MAX_CONNECTIONS.default)]
    pub max_connections: u64,
    /// PEM certificate (then its chain) to serve HTTPS instead of HTTP on --port; needs
    /// --tls-key. Empty: plain HTTP.
    #[arg(long, env = origin::TLS_CERT.env, default_value = origin::TLS_CERT.default, value_name = "FILE")]
    pub tls_cert: String,
    /// PEM private key of --tls-cert. Empty: plain HTTP.
    #[arg(long, env = origin::TLS_KEY.env, default_value = origin::TLS_KEY.default, value_name = "FILE")]
    pub tls_key: String,
}

/// Longest accepted connection timeout (a day): longer is a typo, not a policy.
const MAX_TIMEOUT_SECS: f64 = 86_400.0;

fn positive_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a number: {e}"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{s:?} must be a positive number"))
    }
}

fn file_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains('/') || s.bytes().any(|b| b <= b' ' || b == b'?' || b == b'%') {
        Err(format!(
            "{s:?} must be a plain file name (no '/', '?', '%', spaces)"
        ))
    } else {
        Ok(s.to_string())
    }
}

/// A printf-style segment name with exactly one `%0Nd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentPattern {
    pub prefix: String,
    pub width: usize,
    pub suffix: String,
    raw: String,
}

impl SegmentPattern {
    pub fn format(&self, seq: u64) -> String {
        format!("{}{:0w$}{}", self.prefix, seq, self.suffix, w = self.width)
    }

    /// The sequence number a file name stands for, if it matches the pattern.
    pub fn parse(&self, name: &str) -> Option<u64> {
        let digits = name
            .strip_prefix(&self.prefix)?
            .strip_suffix(&self.suffix)?;
        if digits.len() < self.width.max(1) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Only the canonical spelling is a segment (seg0001.ts is not seg00001.ts).
        let n: u64 = digits.parse().ok()?;
        (self.format(n) == name).then_some(n)
    }
}

impl fmt::Display for SegmentPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl FromStr for SegmentPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} must contain exactly one %d or %0Nd and no other '%'");
        let start = s.find('%').ok_or_else(bad)?;
        let rest = &s[start + 1..];
        let spec_len = rest.find('d').ok_or_else(bad)?;
        let spec = &rest[..spec_len];
        let width = if spec.is_empty() {
            0
        } else if spec.starts_with('0')
            && spec.len() > 1
            && spec.bytes().all(|b| b.is_ascii_digit())
        {
            spec[1..].parse().map_err(|_| bad())?
        } else {
            return Err(bad());
        };
        if width > 20 {
            return Err(bad());
        }
        let prefix = s[..start].to_string();
        let suffix = rest[spec_len + 1..].to_string();
        if suffix.contains('%') {
            return Err(bad());
        }
        file_name(&format!("{prefix}0{suffix}"))?;
        Ok(Self {
            prefix,
            width,
            suffix,
            raw: s.to_string(),
        })
    }
}

/// One rung of the ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// kbit/s
    pub video_kbps: u64,
    pub max_kbps: u64,
    pub buffer_kbps: u64,
    pub audio_kbps: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variants {
    pub list: Vec<Variant>,
    raw: String,
}

impl fmt::Display for Variants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn kbps(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix(['k', 'K']) {
        (n, 1)
    } else if let Some(n) = t.strip_suffix(['m', 'M']) {
        (n, 1000)
    } else {
        (t, 1)
    };
    let v: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a rate like 5000k"))?;
    Ok(v * mult)
}

pub fn parse_variants(s: &str) -> Result<Variants, String> {
    let mut list = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = |why: &str| {
            format!("variant {item:?}: {why}; expected NAME:WxH:VIDEO/MAX/BUFFER:AUDIO, e.g. 720p:1280x720:2000k/2200k/4000k:128k")
        };
        let parts: Vec<&str> = item.split(':').collect();
        if parts.len() != 4 {
            return Err(bad("needs 4 ':'-separated fields"));
        }
        let name = file_name(parts[0]).map_err(|e| bad(&e))?;
        let (w, h) = parts[1]
            .split_once(['x', 'X'])
            .ok_or_else(|| bad("size must be WxH"))?;
        let width: u32 = w.parse().map_err(|_| bad("bad width"))?;
        let height: u32 = h.parse().map_err(|_| bad("bad height"))?;
        if !(16..=8192).contains(&width) || !(16..=8192).contains(&height) {
            return Err(bad("width and height must be 16..=8192"));
        }
        let rates: Vec<&str> = parts[2].split('/').collect();
        if rates.len() != 3 {
            return Err(bad("video rates must be VIDEO/MAX/BUFFER"));
        }
        let video_kbps = kbps(rates[0]).map_err(|e| bad(&e))?;
        let max_kbps = kbps(rates[1]).map_err(|e| bad(&e))?;
        let buffer_kbps = kbps(rates[2]).map_err(|e| bad(&e))?;
        let audio_kbps = kbps(parts[3]).map_err(|e| bad(&e))?;
        if video_kbps == 0 {
            return Err(bad("video rate must be > 0"));
        }
        if list.iter().any(|v: &Variant| v.name == name) {
            return Err(bad("duplicate variant name"));
        }
        list.push(Variant {
            name,
            width,
            height,
            video_kbps,
            max_kbps: max_kbps.max(video_kbps),
            buffer_kbps,
            audio_kbps,
        });
    }
    if list.is_empty() {
        return Err("at least one variant is required".into());
    }
    Ok(Variants {
        list,
        raw: s.to_string(),
    })
}

/// Parse a full command line (argv[0] first) with the process environment, exactly as the server does.
pub fn parse_from(args: &[String]) -> Result<(Cli, ArgMatches), clap::Error> {
    let matches = Cli::command().try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok((cli, matches))
}

/// Where a setting's value came from.
pub fn source(matches: &ArgMatches, id: &str) -> &'static str {
    match matches.value_source(id) {
        Some(ValueSource::CommandLine) => "flag",
        Some(ValueSource::EnvVariable) => "env",
        _ => "default",
    }
}

impl Settings {
    /// The resolved settings with the source of each, keyed by flag name.
    pub fn to_json(&self, matches: &ArgMatches) -> Value {
        let mut m = Map::new();
        let mut put = |flag: &str, id: &str, v: Value| {
            m.insert(
                flag.to_string(),
                json!({"value": v, "source": source(matches, id)}),
            );
        };
        put("port", "port", json!(self.port));
        put("bind", "bind", json!(self.bind.to_string()));
        put(
            "segment-duration",
            "segment_duration",
            json!(self.segment_duration),
        );
        put("list-size", "list_size", json!(self.list_size));
        put(
            "delete-threshold",
            "delete_threshold",
            json!(self.delete_threshold),
        );
        put("playlist-name", "playlist_name", json!(self.playlist_name));
        put("master-name", "master_name", json!(self.master_name));
        put(
            "segment-pattern",
            "segment_pattern",
            json!(self.segment_pattern.to_string()),
        );
        put("fps", "fps", json!(self.fps));
        put("variants", "variants", json!(self.variants.to_string()));
        let al = self
            .access_log
            .to_possible_value()
            .map(|p| p.get_name().to_string());
        put("access-log", "access_log", json!(al));
        let ll = self
            .log_level
            .to_possible_value()
            .map(|p| p.get_name().to_string());
        put("log-level", "log_level", json!(ll));
        put("source", "source", json!(self.source));
        put(
            "header-timeout",
            "header_timeout",
            json!(self.header_timeout),
        );
        put(
            "keepalive-timeout",
            "keepalive_timeout",
            json!(self.keepalive_timeout),
        );
        put("send-timeout", "send_timeout", json!(self.send_timeout));
        put(
            "max-connections",
            "max_connections",
            json!(self.max_connections),
        );
        put("tls-cert", "tls_cert", json!(self.tls_cert));
        put("tls-key", "tls_key", json!(self.tls_key));
        Value::Object(m)
    }

    /// Check combinations clap cannot check one value at a time.
    pub fn validate(&self) -> Result<(), String> {
        if self.playlist_name == self.master_name {
            return Err("--playlist-name and --master-name must differ".into());
        }
        if self
            .segment_pattern
            .parse(&self.segment_pattern.format(0))
            .is_none()
        {
            return Err("--segment-pattern cannot be parsed back".into());
        }
        for name in [&self.playlist_name, &self.master_name] {
            if self.segment_pattern.parse(name).is_some() {
                return Err(format!("{name:?} collides with --segment-pattern"));
            }
        }
        for (flag, secs) in [
            ("--header-timeout", self.header_timeout),
            ("--keepalive-timeout", self.keepalive_timeout),
            ("--send-timeout", self.send_timeout),
        ] {
            if secs > MAX_TIMEOUT_SECS {
                return Err(format!(
                    "{flag} {secs} is more than a day ({MAX_TIMEOUT_SECS} s); give seconds, e.g. 60"
                ));
            }
        }
        if self.segment_duration * self.fps < 1.0 {
            return Err("segment duration × fps must be at least one frame".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_round_trips() {
        let p: SegmentPattern = "seg%05d.ts".parse().unwrap();
        assert_eq!(p.format(42), "seg00042.ts");
        assert_eq!(p.parse("seg00042.ts"), Some(42));
        assert_eq!(p.parse("seg0042.ts"), None);
        assert_eq!(p.parse("seg1234567.ts"), Some(1234567));
        assert!("seg.ts".parse::<SegmentPattern>().is_err());
        assert!("s%5d.ts".parse::<SegmentPattern>().is_err());
        let q: SegmentPattern = "chunk-%d.ts".parse().unwrap();
        assert_eq!(q.parse("chunk-7.ts"), Some(7));
    }

    #[test]
    fn ladder_parses() {
        let v = parse_variants(
            "2160p:3840x2160:15000k/16500k/30000k:192k, 360p:640x360:500k/550k/1000k:64k",
        )
        .unwrap();
        assert_eq!(v.list.len(), 2);
        assert_eq!(v.list[0].width, 3840);
        assert_eq!(v.list[1].audio_kbps, 64);
        assert!(parse_variants("x:1x1:1/1/1:1").is_err());
        assert!(parse_variants("a:640x360:500k:64k").is_err());
    }
}
