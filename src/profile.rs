//! Profiles: the single source of truth for every image. Reads `profiles/<kind>/*.toml`
//! from the [`Root`], lays each over its kind's `_base.toml` (the merge rule is stated in
//! profiles/README.md and implemented in [`merge_tables`]), validates it, and answers what
//! the writers and the CLI ask: image name, environment, ports, labels, healthcheck,
//! derived figures. Nothing else in imgbuild names a profile.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::root::Root;

/// The kinds of image imgbuild builds; each is a folder of `profiles/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Origin,
    Swarm,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Origin, Kind::Swarm];
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Origin => "origin",
            Kind::Swarm => "swarm",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors reading profiles. Each names the file (and line where there is one).
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{file}:{line}:{col}: {msg}")]
    Located {
        file: String,
        line: usize,
        col: usize,
        msg: String,
    },
    #[error("{file}: {msg}")]
    Invalid { file: String, msg: String },
    #[error("unknown profile {given:?}{suggestion}; valid profiles: {valid}")]
    Unknown {
        given: String,
        suggestion: String,
        valid: String,
    },
    #[error(transparent)]
    Root(#[from] crate::root::RootError),
}

// ---------------------------------------------------------------------------------------
// Schema (see profiles/README.md). Every struct has `default` so a single file can be
// checked alone (unknown keys and wrong types found with their line), and
// `deny_unknown_fields` so a typo is an error, never silently ignored.

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
    fn default() -> Self {
        OriginSettings {
            port: 17080,
            bind: "0.0.0.0".into(),
            segment_duration: 2.0,
            list_size: 10,
            delete_threshold: 5,
            playlist: "stream.m3u8".into(),
            master: "master.m3u8".into(),
            segment_pattern: "seg%05d.ts".into(),
            fps: 30,
            access_log: AccessLog::Off,
            log_level: "info".into(),
            variants: vec![Variant {
                name: "1080p".into(),
                resolution: "1920x1080".into(),
                video: "5000k".into(),
                maxrate: "5500k".into(),
                bufsize: "10000k".into(),
                audio: "128k".into(),
            }],
            source: String::new(),
            header_timeout: 10.0,
            keepalive_timeout: 75.0,
            send_timeout: 60.0,
            max_connections: 0,
            tls_cert: String::new(),
            tls_key: String::new(),
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
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLog::Off => "off",
            AccessLog::Segments => "segments",
            AccessLog::All => "all",
        }
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
    fn default() -> Self {
        SwarmSettings {
            stream_url: String::new(),
            clients: 50,
            ramp_rate: 5.0,
            ramp_jitter_ms: 100,
            metrics_port: 9090,
            log_level: "info".into(),
            variant: "all".into(),
            reconnect: true,
            reconnect_delay_max: 5,
            segment_retries: 3,
            timeout: 15,
            connect_timeout: 5,
            first_byte_timeout: 10,
            min_rate: 1000,
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

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum Network {
    #[default]
    Dhcp,
    Static {
        address: String,
        gateway: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dns: Option<String>,
    },
}

// ---------------------------------------------------------------------------------------

/// The program settings of a profile, by kind.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Settings {
    Origin(OriginSettings),
    Swarm(SwarmSettings),
}

/// A resolved, validated profile.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    pub kind: Kind,
    pub name: String,
    /// Where it came from, as shown in messages (`profiles/origin/default.toml`).
    pub file: String,
    pub description: String,
    pub image: ImageSpec,
    pub settings: Settings,
    pub iso: Option<IsoSpec>,
    pub kernel: KernelSpec,
}

/// A healthcheck with durations in nanoseconds, as Docker's image config wants them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    pub test: Vec<String>,
    pub interval_ns: u64,
    pub timeout_ns: u64,
    pub start_period_ns: u64,
    pub start_interval_ns: u64,
    pub retries: u32,
}

impl Profile {
    /// `kind/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
    pub fn tag(&self) -> &str {
        self.image.tag.as_deref().unwrap_or(&self.name)
    }
    /// `name:tag`, the reference `docker load` gives the image.
    pub fn image_ref(&self) -> String {
        format!("{}:{}", self.image.name, self.tag())
    }

    /// The program's settings as environment variables (baked into the image as `Env`, so
    /// a `-e` or a command-line flag at run time overrides them).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        let mut put = |k: &str, v: String| env.push((k.to_string(), v));
        match &self.settings {
            Settings::Origin(o) => {
                put("PORT", o.port.to_string());
                put("BIND", o.bind.clone());
                put("SEGMENT_DURATION", fmt_num(o.segment_duration));
                put("LIST_SIZE", o.list_size.to_string());
                put("DELETE_THRESHOLD", o.delete_threshold.to_string());
                put("PLAYLIST_NAME", o.playlist.clone());
                put("MASTER_NAME", o.master.clone());
                put("SEGMENT_PATTERN", o.segment_pattern.clone());
                put("FPS", o.fps.to_string());
                put("VARIANTS", variants_spec(&o.variants));
                put("ACCESS_LOG", o.access_log.as_str().into());
                put("LOG_LEVEL", o.log_level.clone());
                put("SOURCE_DIR", o.source.clone());
                put("HEADER_TIMEOUT", fmt_num(o.header_timeout));
                put("KEEPALIVE_TIMEOUT", fmt_num(o.keepalive_timeout));
                put("SEND_TIMEOUT", fmt_num(o.send_timeout));
                put("MAX_CONNECTIONS", o.max_connections.to_string());
                put("TLS_CERT", o.tls_cert.clone());
                put("TLS_KEY", o.tls_key.clone());
            }
            Settings::Swarm(s) => {
                if !s.stream_url.is_empty() {
                    put("STREAM_URL", s.stream_url.clone());
                }
                put("CLIENTS", s.clients.to_string());
                put("RAMP_RATE", fmt_num(s.ramp_rate));
                put("RAMP_JITTER", s.ramp_jitter_ms.to_string());
                put("METRICS_PORT", s.metrics_port.to_string());
                put("LOG_LEVEL", s.log_level.clone());
                put("VARIANT", s.variant.clone());
                put("RECONNECT", s.reconnect.to_string());
                put("RECONNECT_DELAY_MAX", s.reconnect_delay_max.to_string());
                put("SEGMENT_RETRIES", s.segment_retries.to_string());
                put("TIMEOUT", s.timeout.to_string());
                put("CONNECT_TIMEOUT", s.connect_timeout.to_string());
                put("FIRST_BYTE_TIMEOUT", s.first_byte_timeout.to_string());
                put("MIN_RATE", s.min_rate.to_string());
            }
        }
        env
    }

    /// TCP ports the image exposes.
    pub fn ports(&self) -> Vec<u16> {
        match &self.settings {
            Settings::Origin(o) => vec![o.port],
            Settings::Swarm(s) if s.metrics_port != 0 => vec![s.metrics_port],
            Settings::Swarm(_) => vec![],
        }
    }

    pub fn origin(&self) -> Option<&OriginSettings> {
        match &self.settings {
            Settings::Origin(o) => Some(o),
            Settings::Swarm(_) => None,
        }
    }

    pub fn healthcheck(&self) -> Healthcheck {
        let h = &self.image.healthcheck;
        // Validated at load time, so these parse.
        let d = |s: &str| parse_duration_ns(s).unwrap_or(0);
        Healthcheck {
            test: h.test.clone(),
            interval_ns: d(&h.interval),
            timeout_ns: d(&h.timeout),
            start_period_ns: d(&h.start_period),
            start_interval_ns: d(&h.start_interval),
            retries: h.retries,
        }
    }

    /// The image labels (docs/CLI.md "Image names and labels"); they are also the manifest
    /// annotations.
    pub fn labels(
        &self,
        version: &str,
        revision: Option<&str>,
        created: &str,
    ) -> BTreeMap<String, String> {
        let mut l = BTreeMap::new();
        let oci = |k: &str| format!("org.opencontainers.image.{k}");
        l.insert(oci("title"), self.image.name.clone());
        l.insert(oci("description"), self.description.clone());
        l.insert(oci("source"), self.image.source.clone());
        l.insert(oci("documentation"), self.image.documentation.clone());
        l.insert(oci("version"), version.to_string());
        l.insert(oci("vendor"), self.image.vendor.clone());
        l.insert(oci("licenses"), self.image.licenses.clone());
        l.insert(oci("revision"), revision.unwrap_or("unknown").to_string());
        l.insert(oci("created"), created.to_string());
        l.insert("hls.profile".into(), self.name.clone());
        if let Some(o) = self.origin() {
            l.insert("hls.segment-duration".into(), fmt_num(o.segment_duration));
            l.insert("hls.list-size".into(), o.list_size.to_string());
        }
        for (k, v) in &self.image.labels {
            l.insert(k.clone(), v.clone());
        }
        l
    }

    /// The ISO volume id: `iso.volume_id`, else `HLS_<PROFILE>` (upper case, `-` → `_`).
    pub fn volume_id(&self) -> String {
        self.iso
            .as_ref()
            .and_then(|i| i.volume_id.clone())
            .unwrap_or_else(|| format!("HLS_{}", self.name.to_uppercase().replace('-', "_")))
    }

    /// Figures derived from the settings, shown by `profiles show`.
    pub fn derived(&self) -> Derived {
        match &self.settings {
            Settings::Origin(o) => {
                let dur = o.segment_duration;
                let live = (o.list_size + o.delete_threshold + 1) as u64;
                let variants: Vec<DerivedVariant> = o
                    .variants
                    .iter()
                    .map(|v| {
                        let video = parse_bitrate(&v.video).unwrap_or(0);
                        let audio = parse_bitrate(&v.audio).unwrap_or(0);
                        DerivedVariant {
                            name: v.name.clone(),
                            bandwidth_bps: video + audio,
                            segment_bytes: ((video + audio) as f64 * dur / 8.0).round() as u64,
                        }
                    })
                    .collect();
                let stored: u64 = variants.iter().map(|v| v.segment_bytes * live).sum();
                Derived::Origin {
                    gop_frames: (o.fps as f64 * dur).round() as u64,
                    window_seconds: o.list_size as f64 * dur,
                    segment_lifetime_seconds: (o.list_size + o.delete_threshold) as f64 * dur,
                    segments_held_per_variant: live,
                    tmpfs_bytes: stored,
                    variants,
                }
            }
            Settings::Swarm(s) => Derived::Swarm {
                ramp_duration_seconds: if s.ramp_rate > 0.0 {
                    s.clients as f64 / s.ramp_rate
                } else {
                    0.0
                },
                memory_bytes: SWARM_BASE_MEMORY + s.clients as u64 * SWARM_MEMORY_PER_VIEWER,
                file_descriptors: s.clients as u64 + SWARM_BASE_FDS,
                ephemeral_ports: s.clients as u64,
            },
        }
    }
}

/// Swarm resource estimates. One keep-alive connection (one fd, one ephemeral port) per
/// viewer plus the metrics listener, stdio and the runtime's own descriptors. Memory from
/// `bench/swarm-1000` (1000 viewers, 60 s): one viewer peaks at 2.9 MiB RSS, each further
/// viewer adds 8.2 KiB; the estimate doubles both for headroom.
pub const SWARM_BASE_MEMORY: u64 = 6 << 20;
pub const SWARM_MEMORY_PER_VIEWER: u64 = 16 << 10;
pub const SWARM_BASE_FDS: u64 = 32;

#[derive(Clone, Debug, Serialize)]
pub struct DerivedVariant {
    pub name: String,
    pub bandwidth_bps: u64,
    pub segment_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Derived {
    Origin {
        gop_frames: u64,
        window_seconds: f64,
        segment_lifetime_seconds: f64,
        segments_held_per_variant: u64,
        /// Bytes of segments held at once (all variants): the tmpfs (or RAM) need.
        tmpfs_bytes: u64,
        variants: Vec<DerivedVariant>,
    },
    Swarm {
        ramp_duration_seconds: f64,
        memory_bytes: u64,
        file_descriptors: u64,
        ephemeral_ports: u64,
    },
}

/// `2` for 2.0, `0.5` for 0.5.
pub fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The `VARIANTS` value hls-origin reads: `NAME:WxH:VIDEO/MAX/BUFFER:AUDIO,…`.
pub fn variants_spec(variants: &[Variant]) -> String {
    variants
        .iter()
        .map(|v| {
            format!(
                "{}:{}:{}/{}/{}:{}",
                v.name, v.resolution, v.video, v.maxrate, v.bufsize, v.audio
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `2000k` → 2 000 000 bits/s; `5M` → 5 000 000; plain numbers are bits/s.
pub fn parse_bitrate(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1_000),
        (i, 'm' | 'M') => (&s[..i], 1_000_000),
        _ => (s, 1),
    };
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| (v * mult as f64).round() as u64)
}

/// `10s`, `500ms`, `1m`, `1.5s`, `250us` → nanoseconds.
pub fn parse_duration_ns(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let mult = match unit {
        "ns" => 1.0,
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return None,
    };
    Some((v * mult).round() as u64)
}

// ---------------------------------------------------------------------------------------
// Loading

/// Line and column (1-based) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

/// Turns a toml error into `file:line:col: message`.
pub fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> ProfileError {
    let (line, col) = e.span().map_or((1, 1), |s| line_col(text, s.start));
    ProfileError::Located {
        file: file.to_string(),
        line,
        col,
        msg: e.message().trim().to_string(),
    }
}

/// Parses one profile file alone: syntax, unknown keys and wrong types, with locations.
fn parse_file(root: &Root, rel: &str) -> Result<toml::Table, ProfileError> {
    parse_table(&root.display(rel), &root.read_text(rel)?)
}

/// Checks one file's text alone (syntax, unknown keys, wrong types, each with its
/// location) and returns its table for merging.
fn parse_table(file: &str, text: &str) -> Result<toml::Table, ProfileError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
    let _: ProfileDoc = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
    Ok(table)
}

/// The merge rule of profiles/README.md: top-level tables merge key by key; every other
/// value (scalars, arrays, tables below the top level) from the overlay replaces the base's.
pub fn merge_tables(base: &toml::Table, overlay: &toml::Table) -> toml::Table {
    let mut out = base.clone();
    for (k, v) in overlay {
        match (out.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => {
                for (k2, v2) in o {
                    b.insert(k2.clone(), v2.clone());
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// Names of the profile files of a kind (file stems, sorted), skipping `_`-prefixed bases.
pub fn profile_names(root: &Root, kind: Kind) -> Result<Vec<String>, ProfileError> {
    let dir = format!("profiles/{kind}");
    let mut names: Vec<String> = root
        .files_under(&dir)?
        .into_iter()
        .filter_map(|f| {
            let name = f.rel.strip_prefix(&dir)?.strip_prefix('/')?;
            let stem = name.strip_suffix(".toml")?;
            (!stem.contains('/') && !stem.starts_with('_')).then(|| stem.to_string())
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Every `kind/name` in the root, sorted.
pub fn all_ids(root: &Root) -> Result<Vec<String>, ProfileError> {
    let mut ids = Vec::new();
    for kind in Kind::ALL {
        for n in profile_names(root, kind)? {
            ids.push(format!("{kind}/{n}"));
        }
    }
    Ok(ids)
}

fn base_rel(kind: Kind) -> String {
    format!("profiles/{kind}/_base.toml")
}

/// Loads and validates one profile.
pub fn load(root: &Root, kind: Kind, name: &str) -> Result<Profile, ProfileError> {
    let rel = format!("profiles/{kind}/{name}.toml");
    if !profile_names(root, kind)?.iter().any(|n| n == name) {
        return Err(unknown(root, &format!("{kind}/{name}")));
    }
    let base_text = if root.exists(&base_rel(kind)) {
        Some(root.read_text(&base_rel(kind))?)
    } else {
        None
    };
    let base = base_text
        .as_deref()
        .map(|t| (root.display(&base_rel(kind)), t));
    let base = base.as_ref().map(|(f, t)| (f.as_str(), *t));
    from_texts(kind, name, root.display(&rel), base, &root.read_text(&rel)?)
}

/// The one way a profile is made: each file checked alone, laid over the base by the merge
/// rule, then resolved and validated. `base` is (shown name, text) of `_base.toml`.
fn from_texts(
    kind: Kind,
    name: &str,
    file: String,
    base: Option<(&str, &str)>,
    text: &str,
) -> Result<Profile, ProfileError> {
    let base = match base {
        Some((bfile, btext)) => parse_table(bfile, btext)?,
        None => toml::Table::new(),
    };
    let table = parse_table(&file, text)?;
    let doc: ProfileDoc = toml::Value::Table(merge_tables(&base, &table))
        .try_into()
        .map_err(|e: toml::de::Error| ProfileError::Invalid {
            file: file.clone(),
            msg: format!(
                "after merging with {}: {}",
                base_rel(kind),
                e.message().trim()
            ),
        })?;
    resolve(kind, name, file, doc)
}

/// Parses and validates one profile from text, as [`load`] does from the root tree: `base`
/// is the text of its kind's `_base.toml` (if any), `text` the profile file's. Errors name
/// `profiles/KIND/NAME.toml` (or the base) and the line. For tests and fuzzing.
pub fn parse_text(
    kind: Kind,
    name: &str,
    base: Option<&str>,
    text: &str,
) -> Result<Profile, ProfileError> {
    let base_file = base_rel(kind);
    from_texts(
        kind,
        name,
        format!("profiles/{kind}/{name}.toml"),
        base.map(|b| (base_file.as_str(), b)),
        text,
    )
}

/// Resolves `KIND/PROFILE` (or a bare profile name that only one kind has).
pub fn load_id(root: &Root, id: &str) -> Result<Profile, ProfileError> {
    if let Some((k, n)) = id.split_once('/') {
        if let Some(kind) = Kind::parse(k) {
            return load(root, kind, n);
        }
    } else {
        let kinds: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| {
                profile_names(root, *k)
                    .map(|n| n.iter().any(|x| x == id))
                    .unwrap_or(false)
            })
            .collect();
        if kinds.len() == 1 {
            return load(root, kinds[0], id);
        }
    }
    Err(unknown(root, id))
}

/// Loads every profile of every kind.
pub fn load_all(root: &Root) -> Result<Vec<Profile>, ProfileError> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        for n in profile_names(root, kind)? {
            out.push(load(root, kind, &n)?);
        }
    }
    Ok(out)
}

fn unknown(root: &Root, given: &str) -> ProfileError {
    let valid = all_ids(root).unwrap_or_default();
    let best = valid
        .iter()
        .map(|v| {
            let bare = v.split_once('/').map_or(v.as_str(), |(_, n)| n);
            (edit_distance(given, v).min(edit_distance(given, bare)), v)
        })
        .min();
    let suggestion = match best {
        Some((d, v)) if d <= given.len().max(3) / 2 + 1 => format!(" (did you mean {v}?)"),
        _ => String::new(),
    };
    ProfileError::Unknown {
        given: given.to_string(),
        suggestion,
        valid: valid.join(", "),
    }
}

/// Levenshtein distance, for did-you-mean suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn resolve(kind: Kind, name: &str, file: String, doc: ProfileDoc) -> Result<Profile, ProfileError> {
    let invalid = |msg: String| ProfileError::Invalid {
        file: file.clone(),
        msg,
    };
    let settings = match (kind, doc.origin, doc.swarm) {
        (Kind::Origin, Some(o), None) => Settings::Origin(o),
        (Kind::Swarm, None, Some(s)) => Settings::Swarm(s),
        (Kind::Origin, _, Some(_)) => {
            return Err(invalid("an origin profile has no [swarm] section".into()))
        }
        (Kind::Swarm, Some(_), _) => {
            return Err(invalid("a swarm profile has no [origin] section".into()))
        }
        (Kind::Origin, None, _) => {
            return Err(invalid(
                "missing [origin] (in the profile or _base.toml)".into(),
            ))
        }
        (Kind::Swarm, _, None) => {
            return Err(invalid(
                "missing [swarm] (in the profile or _base.toml)".into(),
            ))
        }
    };
    if kind == Kind::Swarm && doc.iso.is_some() {
        return Err(invalid("[iso] is for origin profiles only".into()));
    }
    let p = Profile {
        kind,
        name: name.to_string(),
        file: file.clone(),
        description: doc.description,
        image: doc.image,
        settings,
        iso: doc.iso,
        kernel: doc.kernel.unwrap_or_default(),
    };
    validate(&p).map_err(invalid)?;
    Ok(p)
}

fn valid_ref_part(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

/// Checks the values a writer relies on; the message names the key.
fn validate(p: &Profile) -> Result<(), String> {
    let i = &p.image;
    if !valid_ref_part(&i.name) {
        return Err(format!(
            "image.name {:?}: lowercase letters, digits, `.`, `_`, `-` only",
            i.name
        ));
    }
    if !valid_ref_part(p.tag()) || p.tag().len() > 128 {
        return Err(format!(
            "image tag {:?}: lowercase letters, digits, `.`, `_`, `-` only (at most 128)",
            p.tag()
        ));
    }
    if i.binary.is_empty() || i.binary.contains('/') {
        return Err(format!(
            "image.binary {:?}: a workspace program name such as hls-origin",
            i.binary
        ));
    }
    if i.user.uid == 0 || i.user.name.is_empty() || i.user.name == "root" {
        return Err(
            "image.user: images run as a non-root user (uid > 0, a name other than root)".into(),
        );
    }
    if i.healthcheck.test.is_empty() {
        return Err(
            "image.healthcheck.test: empty; use [\"CMD\", \"/bin/<program>\", \"healthcheck\"]"
                .into(),
        );
    }
    for (k, v) in [
        ("interval", &i.healthcheck.interval),
        ("timeout", &i.healthcheck.timeout),
        ("start_period", &i.healthcheck.start_period),
        ("start_interval", &i.healthcheck.start_interval),
    ] {
        match parse_duration_ns(v) {
            Some(ns) if ns == 0 || ns >= 1_000_000 => {}
            _ => {
                return Err(format!(
                "image.healthcheck.{k} {v:?}: a duration such as 10s or 500ms (0 or at least 1ms)"
            ))
            }
        }
    }
    if !i.workdir.starts_with('/') {
        return Err(format!("image.workdir {:?}: an absolute path", i.workdir));
    }
    if i.layers.is_empty() {
        return Err("image.layers: name at least one layer group (layers/<name>.toml)".into());
    }
    match &p.settings {
        Settings::Origin(o) => {
            if o.variants.is_empty() {
                return Err("origin.variants: at least one variant".into());
            }
            if !(o.segment_duration > 0.0 && o.segment_duration <= 60.0) {
                return Err(format!(
                    "origin.segment_duration {}: between 0 and 60 seconds",
                    o.segment_duration
                ));
            }
            for (key, secs) in [
                ("header_timeout", o.header_timeout),
                ("keepalive_timeout", o.keepalive_timeout),
                ("send_timeout", o.send_timeout),
            ] {
                if !(secs > 0.0 && secs <= 86_400.0) {
                    return Err(format!(
                        "origin.{key} {secs}: seconds, above 0 and at most a day (86400)"
                    ));
                }
            }
            if o.tls_cert.is_empty() != o.tls_key.is_empty() {
                return Err(
                    "origin.tls_cert and origin.tls_key go together: set both for HTTPS, or both to \"\" for HTTP"
                        .into(),
                );
            }
            if o.list_size == 0 || o.fps == 0 || o.port == 0 {
                return Err("origin.list_size, origin.fps and origin.port must be above 0".into());
            }
            if o.segment_pattern.matches('%').count() != 1 || !o.segment_pattern.contains('d') {
                return Err(format!(
                    "origin.segment_pattern {:?}: one printf number such as %05d",
                    o.segment_pattern
                ));
            }
            let mut names = std::collections::BTreeSet::new();
            for v in &o.variants {
                if !names.insert(&v.name) {
                    return Err(format!("origin.variants: {} appears twice", v.name));
                }
                let res_ok = v
                    .resolution
                    .split_once('x')
                    .is_some_and(|(w, h)| w.parse::<u32>().is_ok() && h.parse::<u32>().is_ok());
                if !res_ok {
                    return Err(format!(
                        "origin.variants {}: resolution {:?} is not WxH",
                        v.name, v.resolution
                    ));
                }
                for (k, r) in [
                    ("video", &v.video),
                    ("maxrate", &v.maxrate),
                    ("bufsize", &v.bufsize),
                    ("audio", &v.audio),
                ] {
                    if parse_bitrate(r).is_none() {
                        return Err(format!(
                            "origin.variants {}: {k} {r:?} is not a bitrate such as 2000k",
                            v.name
                        ));
                    }
                }
            }
        }
        Settings::Swarm(s) => {
            if s.clients == 0 || s.ramp_rate <= 0.0 {
                return Err("swarm.clients and swarm.ramp_rate must be above 0".into());
            }
            if s.timeout == 0 || s.connect_timeout == 0 || s.first_byte_timeout == 0 {
                return Err(
                    "swarm.timeout, swarm.connect_timeout and swarm.first_byte_timeout must be above 0 seconds"
                        .into(),
                );
            }
            if !["all", "first", "highest", "lowest", "random"].contains(&s.variant.as_str()) {
                return Err(format!(
                    "swarm.variant {:?}: all, first, highest, lowest or random",
                    s.variant
                ));
            }
        }
    }
    for (k, v) in &p.kernel.sysctl {
        let ok = !k.is_empty()
            && k.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        if !ok {
            return Err(format!(
                "kernel.sysctl {k:?}: a sysctl name is dot-separated words (net.core.somaxconn)"
            ));
        }
        if v.trim().is_empty() || v.contains('\n') {
            return Err(format!(
                "kernel.sysctl {k:?}: the value {v:?} is empty or has a newline"
            ));
        }
    }
    if let Some(iso) = &p.iso {
        if let Network::Static {
            address, gateway, ..
        } = &iso.network
        {
            let ok = address.split_once('/').is_some_and(|(a, l)| {
                a.parse::<std::net::Ipv4Addr>().is_ok() && l.parse::<u8>().is_ok_and(|l| l <= 32)
            });
            if !ok || gateway.parse::<std::net::Ipv4Addr>().is_err() {
                return Err(format!("iso.network: address {address:?} must be A.B.C.D/LEN and gateway {gateway:?} A.B.C.D"));
            }
        }
        let vid = p.volume_id();
        if vid.len() > 32
            || !vid
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!("iso.volume_id {vid:?}: at most 32 of A-Z, 0-9, _"));
        }
    }
    Ok(())
}

/// Keys of `[section]` that a kind's `_base.toml` leaves to a built-in default. `check`
/// requires this to be empty so every profile is complete and explicit.
pub fn base_gaps(root: &Root, kind: Kind) -> Result<Vec<String>, ProfileError> {
    let rel = base_rel(kind);
    if !root.exists(&rel) {
        return Ok(vec![format!("{rel} is missing")]);
    }
    let base = parse_file(root, &rel)?;
    let section = kind.as_str();
    let full = match kind {
        Kind::Origin => toml::Table::try_from(OriginSettings::default()),
        Kind::Swarm => toml::Table::try_from(SwarmSettings::default()),
    }
    .expect("settings serialise");
    let have = base.get(section).and_then(|v| v.as_table());
    Ok(full
        .keys()
        .filter(|k| !have.is_some_and(|t| t.contains_key(*k)))
        .map(|k| format!("{section}.{k}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirteen_profiles_in_the_repository() {
        let all = load_all(&Root::Embedded).unwrap();
        assert_eq!(all.iter().filter(|p| p.kind == Kind::Origin).count(), 8);
        assert_eq!(all.iter().filter(|p| p.kind == Kind::Swarm).count(), 5);
    }

    #[test]
    fn four_k_ladder_sizes_each_rung_from_its_own_rate() {
        let p = load(&Root::Embedded, Kind::Origin, "4k-abr").unwrap();
        let Derived::Origin { variants, .. } = p.derived() else {
            panic!()
        };
        let sizes: Vec<u64> = variants.iter().map(|v| v.segment_bytes).collect();
        // (15000k + 192k) * 2 s / 8 = 3 798 000 bytes for 2160p; 360p: (500k+64k)*2/8.
        assert_eq!(sizes, vec![3_798_000, 1_282_000, 532_000, 274_000, 141_000]);
    }

    #[test]
    fn a_profile_overriding_variants_replaces_them_whole() {
        let p = load(&Root::Embedded, Kind::Origin, "low-latency").unwrap();
        let o = p.origin().unwrap();
        assert_eq!(o.variants.len(), 1);
        assert_eq!(o.variants[0].maxrate, "2500k");
        assert_eq!(o.segment_duration, 1.0);
        assert_eq!(o.port, 17080, "inherited from _base.toml");
    }

    #[test]
    fn env_carries_profile_defaults() {
        let p = load(&Root::Embedded, Kind::Swarm, "burst").unwrap();
        let env: BTreeMap<_, _> = p.env().into_iter().collect();
        assert_eq!(env["CLIENTS"], "100");
        assert_eq!(env["RECONNECT"], "false");
        assert!(!env.contains_key("STREAM_URL"));
    }

    #[test]
    fn unknown_profile_suggests_the_closest() {
        let e = load_id(&Root::Embedded, "origin/low-latncy")
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean origin/low-latency"), "{e}");
        assert!(e.contains("swarm/extreme"), "{e}");
    }

    #[test]
    fn durations_and_bitrates_parse() {
        assert_eq!(parse_duration_ns("10s"), Some(10_000_000_000));
        assert_eq!(parse_duration_ns("500ms"), Some(500_000_000));
        assert_eq!(parse_duration_ns("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration_ns("10"), None);
        assert_eq!(parse_bitrate("2000k"), Some(2_000_000));
        assert_eq!(parse_bitrate("x"), None);
    }

    #[test]
    fn bases_leave_nothing_to_builtin_defaults() {
        for k in Kind::ALL {
            assert_eq!(base_gaps(&Root::Embedded, k).unwrap(), Vec::<String>::new());
        }
    }

    #[test]
    fn merge_rule_is_one_level_deep() {
        let base: toml::Table = toml::from_str("[a]\nx = 1\ny = { p = 1, q = 2 }").unwrap();
        let over: toml::Table = toml::from_str("[a]\ny = { p = 3 }").unwrap();
        let m = merge_tables(&base, &over);
        assert_eq!(m["a"]["x"].as_integer(), Some(1));
        assert_eq!(
            m["a"]["y"].as_table().unwrap().len(),
            1,
            "nested tables replace whole"
        );
    }
}
