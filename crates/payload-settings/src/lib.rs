//! The settings of the payload programs that a profile carries, in one table: for each, the
//! profile key (`[origin] port`), the environment variable the program reads and the image's
//! `Env` sets (`PORT`), and the program's built-in default as that variable would be written
//! (`"17080"`).
//!
//! Three places use it, so the names and defaults cannot drift apart (hls-origin and
//! hls-swarm compile this file in as a module, `#[path]`, instead of depending on the crate,
//! so their dependency lists — and the SBOM in every image — stay their own):
//! - imgbuild's profile code: the image environment ([`Setting::env`]) and the built-in
//!   defaults of `[origin]`/`[swarm]` ([`Setting::default`]);
//! - the clap definitions of hls-origin and hls-swarm
//!   (`#[arg(long, env = origin::PORT.env, default_value = origin::PORT.default)]`);
//! - docs/PROFILES.md, whose settings tables a test of this crate checks against [`origin::ALL`]
//!   and [`swarm::ALL`].
//!
//! Settings a program has but a profile does not carry (hls-swarm's `--duration`, …) stay in
//! the program's own clap definitions.

/// One setting of a payload program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The key under the profile's `[origin]` or `[swarm]` table.
    pub key: &'static str,
    /// The environment variable the program reads (and the image's `Env` sets).
    pub env: &'static str,
    /// The program's built-in default, written as the environment variable would be; empty
    /// for "not set".
    pub default: &'static str,
}

const fn s(key: &'static str, env: &'static str, default: &'static str) -> Setting {
    Setting { key, env, default }
}

/// hls-origin, the live HLS origin.
pub mod origin {
    use super::{s, Setting};

    pub const PORT: Setting = s("port", "PORT", "17080");
    pub const BIND: Setting = s("bind", "BIND", "0.0.0.0");
    pub const SEGMENT_DURATION: Setting = s("segment_duration", "SEGMENT_DURATION", "2");
    pub const LIST_SIZE: Setting = s("list_size", "LIST_SIZE", "10");
    pub const DELETE_THRESHOLD: Setting = s("delete_threshold", "DELETE_THRESHOLD", "5");
    pub const PLAYLIST: Setting = s("playlist", "PLAYLIST_NAME", "stream.m3u8");
    pub const MASTER: Setting = s("master", "MASTER_NAME", "master.m3u8");
    pub const SEGMENT_PATTERN: Setting = s("segment_pattern", "SEGMENT_PATTERN", "seg%05d.ts");
    pub const FPS: Setting = s("fps", "FPS", "30");
    /// `NAME:WxH:VIDEO/MAX/BUFFER:AUDIO,…` (the profile writes it as `variants` tables).
    pub const VARIANTS: Setting = s(
        "variants",
        "VARIANTS",
        "1080p:1920x1080:5000k/5500k/10000k:128k",
    );
    pub const ACCESS_LOG: Setting = s("access_log", "ACCESS_LOG", "off");
    pub const LOG_LEVEL: Setting = s("log_level", "LOG_LEVEL", "info");
    pub const SOURCE: Setting = s("source", "SOURCE_DIR", "");
    pub const HEADER_TIMEOUT: Setting = s("header_timeout", "HEADER_TIMEOUT", "10");
    pub const KEEPALIVE_TIMEOUT: Setting = s("keepalive_timeout", "KEEPALIVE_TIMEOUT", "75");
    pub const SEND_TIMEOUT: Setting = s("send_timeout", "SEND_TIMEOUT", "60");
    pub const MAX_CONNECTIONS: Setting = s("max_connections", "MAX_CONNECTIONS", "0");
    pub const TLS_CERT: Setting = s("tls_cert", "TLS_CERT", "");
    pub const TLS_KEY: Setting = s("tls_key", "TLS_KEY", "");

    /// Every setting, in the order the image environment lists them.
    pub const ALL: &[Setting] = &[
        PORT,
        BIND,
        SEGMENT_DURATION,
        LIST_SIZE,
        DELETE_THRESHOLD,
        PLAYLIST,
        MASTER,
        SEGMENT_PATTERN,
        FPS,
        VARIANTS,
        ACCESS_LOG,
        LOG_LEVEL,
        SOURCE,
        HEADER_TIMEOUT,
        KEEPALIVE_TIMEOUT,
        SEND_TIMEOUT,
        MAX_CONNECTIONS,
        TLS_CERT,
        TLS_KEY,
    ];
}

/// hls-swarm, the HLS load generator.
pub mod swarm {
    use super::{s, Setting};

    /// Empty: the image sets no `STREAM_URL` (the URL is given at run time).
    pub const STREAM_URL: Setting = s("stream_url", "STREAM_URL", "");
    pub const CLIENTS: Setting = s("clients", "CLIENTS", "50");
    pub const RAMP_RATE: Setting = s("ramp_rate", "RAMP_RATE", "5");
    pub const RAMP_JITTER_MS: Setting = s("ramp_jitter_ms", "RAMP_JITTER", "100");
    pub const METRICS_PORT: Setting = s("metrics_port", "METRICS_PORT", "9090");
    pub const LOG_LEVEL: Setting = s("log_level", "LOG_LEVEL", "info");
    pub const VARIANT: Setting = s("variant", "VARIANT", "all");
    pub const RECONNECT: Setting = s("reconnect", "RECONNECT", "true");
    pub const RECONNECT_DELAY_MAX: Setting = s("reconnect_delay_max", "RECONNECT_DELAY_MAX", "5");
    pub const SEGMENT_RETRIES: Setting = s("segment_retries", "SEGMENT_RETRIES", "3");
    pub const TIMEOUT: Setting = s("timeout", "TIMEOUT", "15");
    pub const CONNECT_TIMEOUT: Setting = s("connect_timeout", "CONNECT_TIMEOUT", "5");
    pub const FIRST_BYTE_TIMEOUT: Setting = s("first_byte_timeout", "FIRST_BYTE_TIMEOUT", "10");
    pub const MIN_RATE: Setting = s("min_rate", "MIN_RATE", "1000");

    /// Every setting, in the order the image environment lists them.
    pub const ALL: &[Setting] = &[
        STREAM_URL,
        CLIENTS,
        RAMP_RATE,
        RAMP_JITTER_MS,
        METRICS_PORT,
        LOG_LEVEL,
        VARIANT,
        RECONNECT,
        RECONNECT_DELAY_MAX,
        SEGMENT_RETRIES,
        TIMEOUT,
        CONNECT_TIMEOUT,
        FIRST_BYTE_TIMEOUT,
        MIN_RATE,
    ];
}

/// The built-in default of `setting` as a typed value (for imgbuild's `[origin]`/`[swarm]`
/// defaults). Panics when the table's text does not parse as `T`: a unit test parses them all.
pub fn default_of<T: std::str::FromStr>(setting: Setting) -> T {
    match setting.default.parse() {
        Ok(v) => v,
        Err(_) => panic!(
            "payload-settings: the default {:?} of {} does not parse as {}",
            setting.default,
            setting.env,
            std::any::type_name::<T>()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_variables_are_unique_per_program() {
        for all in [origin::ALL, swarm::ALL] {
            let mut keys: Vec<_> = all.iter().map(|s| s.key).collect();
            let mut envs: Vec<_> = all.iter().map(|s| s.env).collect();
            keys.sort();
            envs.sort();
            let n = all.len();
            keys.dedup();
            envs.dedup();
            assert_eq!((keys.len(), envs.len()), (n, n));
        }
    }

    #[test]
    fn numeric_defaults_parse() {
        let _: u16 = default_of(origin::PORT);
        let _: f64 = default_of(origin::SEGMENT_DURATION);
        let _: u32 = default_of(origin::FPS);
        let _: bool = default_of(swarm::RECONNECT);
        let _: u64 = default_of(swarm::MIN_RATE);
    }
}
