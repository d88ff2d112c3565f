//! The profile schema: the TOML documents `profiles/<kind>/*.toml` hold (docs/PROFILES.md
//! lists every key with its default). Every struct has `default` so a single file can be
//! checked alone (unknown keys and wrong types found with their line), and
//! `deny_unknown_fields` so a typo is an error, never silently ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileDoc {
    pub description: String,
    pub image: ImageSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<OriginSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swarm: Option<SwarmSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iso: Option<IsoSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelSpec>,
}

/// `[kernel]`: the tuning a machine running the profile gets. imgbuild-init applies it when
/// it boots an ISO or a MicroVM (one line for each value it could not set).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct KernelSpec {
    /// sysctl name (`net.core.somaxconn`) → value, as `sysctl -w` takes it.
    pub sysctl: BTreeMap<String, String>,
    /// The open-file limit (RLIMIT_NOFILE, soft and hard) of the service; 0 leaves the
    /// kernel's.
    pub nofile: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ImageSpec {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub binary: String,
    pub user: UserSpec,
    pub workdir: String,
    pub stop_signal: String,
    pub layers: Vec<String>,
    pub healthcheck: HealthcheckSpec,
    pub vendor: String,
    pub source: String,
    pub documentation: String,
    pub licenses: String,
    pub labels: BTreeMap<String, String>,
    pub shell: bool,
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            name: String::new(),
            tag: None,
            binary: String::new(),
            user: UserSpec::default(),
            workdir: "/".into(),
            stop_signal: "SIGTERM".into(),
            layers: vec!["base".into()],
            healthcheck: HealthcheckSpec::default(),
            vendor: String::new(),
            source: String::new(),
            documentation: String::new(),
            licenses: String::new(),
            labels: BTreeMap::new(),
            shell: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UserSpec {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl Default for UserSpec {
    fn default() -> Self {
        UserSpec {
            name: "hls".into(),
            uid: 1000,
            gid: 1000,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthcheckSpec {
    pub test: Vec<String>,
    pub interval: String,
    pub timeout: String,
    pub start_period: String,
    pub start_interval: String,
    pub retries: u32,
}

impl Default for HealthcheckSpec {
    fn default() -> Self {
        HealthcheckSpec {
            test: vec![],
            interval: "10s".into(),
            timeout: "3s".into(),
            start_period: "5s".into(),
            start_interval: "1s".into(),
            retries: 3,
        }
    }
}

/// Settings of `hls-origin` (built-in defaults = the program's own).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OriginSettings {
    pub port: u16,
    pub bind: String,
    pub segment_duration: f64,
    pub list_size: u32,
    pub delete_threshold: u32,
    pub playlist: String,
    pub master: String,
    pub segment_pattern: String,
    pub fps: u32,
    pub access_log: AccessLog,
    pub log_level: String,
    pub variants: Vec<Variant>,
    /// Directory of the user's own MPEG-TS segments to loop (`SOURCE_DIR`); empty: the test
    /// pattern.
    pub source: String,
    /// Seconds a connection has to send a complete request header (docs/hardening.md).
    pub header_timeout: f64,
    /// Seconds a keep-alive connection may idle between requests.
    pub keepalive_timeout: f64,
    /// Seconds a response may make no progress before the connection is closed.
    pub send_timeout: f64,
    /// Most open client connections; 0 = from the open-file limit.
    pub max_connections: u64,
    /// PEM certificate (then chain) to serve HTTPS on `port` (`TLS_CERT`, a path where the
    /// server runs, e.g. a mounted file); empty: plain HTTP. Goes with `tls_key`.
    pub tls_cert: String,
    /// PEM private key of `tls_cert` (`TLS_KEY`); empty: plain HTTP.
    pub tls_key: String,
}

impl Default for OriginSettings {
    /// hls-origin's own defaults, from the one table of the payloads' settings.
    fn default() -> Self {
        use payload_settings::{default_of as d, origin as o};
        OriginSettings {
            port: d(o::PORT),
            bind: d(o::BIND),
            segment_duration: d(o::SEGMENT_DURATION),
            list_size: d(o::LIST_SIZE),
            delete_threshold: d(o::DELETE_THRESHOLD),
            playlist: d(o::PLAYLIST),
            master: d(o::MASTER),
            segment_pattern: d(o::SEGMENT_PATTERN),
            fps: d(o::FPS),
            access_log: d(o::ACCESS_LOG),
            log_level: d(o::LOG_LEVEL),
            variants: vec![Variant {
                name: "1080p".into(),
                resolution: "1920x1080".into(),
                video: "5000k".into(),
                maxrate: "5500k".into(),
                bufsize: "10000k".into(),
                audio: "128k".into(),
            }],
            source: d(o::SOURCE),
            header_timeout: d(o::HEADER_TIMEOUT),
            keepalive_timeout: d(o::KEEPALIVE_TIMEOUT),
            send_timeout: d(o::SEND_TIMEOUT),
            max_connections: d(o::MAX_CONNECTIONS),
            tls_cert: d(o::TLS_CERT),
            tls_key: d(o::TLS_KEY),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AccessLog {
    Off,
    Segments,
    All,
}

impl AccessLog {
    pub const ALL: [AccessLog; 3] = [AccessLog::Off, AccessLog::Segments, AccessLog::All];
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLog::Off => "off",
            AccessLog::Segments => "segments",
            AccessLog::All => "all",
        }
    }
}

impl std::str::FromStr for AccessLog {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AccessLog::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("access log {s:?}: off, segments or all"))
    }
}

/// One rung of the video ladder.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    pub resolution: String,
    pub video: String,
    pub maxrate: String,
    pub bufsize: String,
    pub audio: String,
}

/// Settings of `hls-swarm` (built-in defaults = the program's own).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SwarmSettings {
    pub stream_url: String,
    pub clients: u32,
    pub ramp_rate: f64,
    pub ramp_jitter_ms: u32,
    pub metrics_port: u16,
    pub log_level: String,
    pub variant: String,
    pub reconnect: bool,
    pub reconnect_delay_max: u32,
    pub segment_retries: u32,
    pub timeout: u32,
    /// Seconds (docs/hardening.md).
    pub connect_timeout: u32,
    pub first_byte_timeout: u32,
    /// Bytes per second a response must keep up; 0 = off.
    pub min_rate: u64,
}

impl Default for SwarmSettings {
    /// hls-swarm's own defaults, from the one table of the payloads' settings.
    fn default() -> Self {
        use payload_settings::{default_of as d, swarm as s};
        SwarmSettings {
            stream_url: d(s::STREAM_URL),
            clients: d(s::CLIENTS),
            ramp_rate: d(s::RAMP_RATE),
            ramp_jitter_ms: d(s::RAMP_JITTER_MS),
            metrics_port: d(s::METRICS_PORT),
            log_level: d(s::LOG_LEVEL),
            variant: d(s::VARIANT),
            reconnect: d(s::RECONNECT),
            reconnect_delay_max: d(s::RECONNECT_DELAY_MAX),
            segment_retries: d(s::SEGMENT_RETRIES),
            timeout: d(s::TIMEOUT),
            connect_timeout: d(s::CONNECT_TIMEOUT),
            first_byte_timeout: d(s::FIRST_BYTE_TIMEOUT),
            min_rate: d(s::MIN_RATE),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct IsoSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<String>,
    pub cmdline: String,
    pub memory: String,
    pub network: Network,
}

/// `[iso.network]` of a profile. Stricter than the boot contract's `init_contract::Network`
/// that imgbuild-init reads (its gateway is optional, its DNS may be a list): a profile must
/// name a gateway for a static address, and gives its DNS servers as one string.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum Network {
    /// DHCP (`mode = "dhcp"`), the default.
    #[default]
    Dhcp,
    /// `mode = "static"`: `address` in CIDR form, `gateway` required, `dns` optional
    /// (comma-separated).
    Static {
        address: String,
        gateway: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dns: Option<String>,
    },
}
