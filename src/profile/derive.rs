//! What a profile means for an image, derived from its values: the environment the payload
//! program reads, the image labels, and the figures `profiles show` prints (segment sizes,
//! memory, descriptors).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Profile, Settings, Variant};

impl Profile {
    /// The program's settings as environment variables (baked into the image as `Env`, so
    /// a `-e` or a command-line flag at run time overrides them). The names are the
    /// payloads' own ([`payload_settings`]).
    pub fn env(&self) -> Vec<(String, String)> {
        use payload_settings::{origin as o, swarm as s, Setting};
        let mut env: Vec<(String, String)> = Vec::new();
        let mut put = |k: Setting, v: String| env.push((k.env.to_string(), v));
        match &self.settings {
            Settings::Origin(x) => {
                put(o::PORT, x.port.to_string());
                put(o::BIND, x.bind.clone());
                put(o::SEGMENT_DURATION, fmt_num(x.segment_duration));
                put(o::LIST_SIZE, x.list_size.to_string());
                put(o::DELETE_THRESHOLD, x.delete_threshold.to_string());
                put(o::PLAYLIST, x.playlist.clone());
                put(o::MASTER, x.master.clone());
                put(o::SEGMENT_PATTERN, x.segment_pattern.clone());
                put(o::FPS, x.fps.to_string());
                put(o::VARIANTS, variants_spec(&x.variants));
                put(o::ACCESS_LOG, x.access_log.as_str().into());
                put(o::LOG_LEVEL, x.log_level.clone());
                put(o::SOURCE, x.source.clone());
                put(o::HEADER_TIMEOUT, fmt_num(x.header_timeout));
                put(o::KEEPALIVE_TIMEOUT, fmt_num(x.keepalive_timeout));
                put(o::SEND_TIMEOUT, fmt_num(x.send_timeout));
                put(o::MAX_CONNECTIONS, x.max_connections.to_string());
                put(o::TLS_CERT, x.tls_cert.clone());
                put(o::TLS_KEY, x.tls_key.clone());
            }
            Settings::Swarm(x) => {
                if !x.stream_url.is_empty() {
                    put(s::STREAM_URL, x.stream_url.clone());
                }
                put(s::CLIENTS, x.clients.to_string());
                put(s::RAMP_RATE, fmt_num(x.ramp_rate));
                put(s::RAMP_JITTER_MS, x.ramp_jitter_ms.to_string());
                put(s::METRICS_PORT, x.metrics_port.to_string());
                put(s::LOG_LEVEL, x.log_level.clone());
                put(s::VARIANT, x.variant.clone());
                put(s::RECONNECT, x.reconnect.to_string());
                put(s::RECONNECT_DELAY_MAX, x.reconnect_delay_max.to_string());
                put(s::SEGMENT_RETRIES, x.segment_retries.to_string());
                put(s::TIMEOUT, x.timeout.to_string());
                put(s::CONNECT_TIMEOUT, x.connect_timeout.to_string());
                put(s::FIRST_BYTE_TIMEOUT, x.first_byte_timeout.to_string());
                put(s::MIN_RATE, x.min_rate.to_string());
            }
        }
        env
    }

    /// The image labels (docs/PROFILES.md "Labels"); they are also the manifest annotations.
    /// A profile's own `image.labels` come last and may not name a label set here
    /// ([`is_reserved_label`], enforced by validation).
    pub fn labels(
        &self,
        version: &str,
        revision: Option<&str>,
        created: &str,
    ) -> BTreeMap<String, String> {
        let mut l = BTreeMap::new();
        let oci = |k: &str| format!("{OCI_LABEL_PREFIX}{k}");
        l.insert(oci("title"), self.image.name.clone());
        l.insert(oci("description"), self.description.clone());
        l.insert(oci("source"), self.image.source.clone());
        l.insert(oci("documentation"), self.image.documentation.clone());
        l.insert(oci("version"), version.to_string());
        l.insert(oci("vendor"), self.image.vendor.clone());
        l.insert(oci("licenses"), self.image.licenses.clone());
        l.insert(oci("revision"), revision.unwrap_or("unknown").to_string());
        l.insert(oci("created"), created.to_string());
        let [profile, segment_duration, list_size] = HLS_LABELS;
        l.insert(profile.into(), self.name.clone());
        if let Some(o) = self.origin() {
            l.insert(segment_duration.into(), fmt_num(o.segment_duration));
            l.insert(list_size.into(), o.list_size.to_string());
        }
        for (k, v) in &self.image.labels {
            l.insert(k.clone(), v.clone());
        }
        l
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

/// The OCI annotation namespace: imgbuild sets most of its keys (title, version, revision,
/// created, …) and `ref.name` in the index, so a profile may set none of them.
pub const OCI_LABEL_PREFIX: &str = "org.opencontainers.image.";

/// The `hls.*` labels imgbuild sets: the profile name, and for origin profiles the segment
/// duration and playlist window.
pub const HLS_LABELS: [&str; 3] = ["hls.profile", "hls.segment-duration", "hls.list-size"];

/// Whether a profile's `image.labels` may not use this key, because imgbuild sets it.
pub fn is_reserved_label(key: &str) -> bool {
    key.starts_with(OCI_LABEL_PREFIX) || HLS_LABELS.contains(&key)
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
