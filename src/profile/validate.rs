//! Validation: the values a writer relies on, checked after the merge. Each failure names
//! the key that holds the bad value ([`Invalid::key`]), so the loader can point at the line of
//! the profile (or `_base.toml`) that sets it.

use super::derive::is_reserved_label;
use super::{parse_bitrate, parse_duration_ns};
use super::{Network, Profile, Settings};

/// A value that failed validation: where it lives (`["origin", "variants", "2",
/// "resolution"]`, array positions as numbers) and what is wrong, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: Vec<String>,
    pub msg: String,
}

fn bad(key: &[&str], msg: impl Into<String>) -> Invalid {
    Invalid {
        key: key.iter().map(|k| k.to_string()).collect(),
        msg: msg.into(),
    }
}

fn valid_ref_part(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

/// Checks the values a writer relies on; the first failure names the key.
pub fn validate(p: &Profile) -> Result<(), Invalid> {
    let i = &p.image;
    if !valid_ref_part(&i.name) {
        return Err(bad(
            &["image", "name"],
            format!(
                "image.name {:?}: lowercase letters, digits, `.`, `_`, `-` only",
                i.name
            ),
        ));
    }
    if !valid_ref_part(p.tag()) || p.tag().len() > 128 {
        return Err(bad(
            &["image", "tag"],
            format!(
                "image tag {:?}: lowercase letters, digits, `.`, `_`, `-` only (at most 128)",
                p.tag()
            ),
        ));
    }
    if i.binary.is_empty() || i.binary.contains('/') {
        return Err(bad(
            &["image", "binary"],
            format!(
                "image.binary {:?}: a workspace program name such as hls-origin",
                i.binary
            ),
        ));
    }
    if i.user.uid == 0 || i.user.name.is_empty() || i.user.name == "root" {
        return Err(bad(
            &["image", "user"],
            "image.user: images run as a non-root user (uid > 0, a name other than root)",
        ));
    }
    if i.healthcheck.test.is_empty() {
        return Err(bad(
            &["image", "healthcheck", "test"],
            "image.healthcheck.test: empty; use [\"CMD\", \"/bin/<program>\", \"healthcheck\"]",
        ));
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
                return Err(bad(
                    &["image", "healthcheck", k],
                    format!("image.healthcheck.{k} {v:?}: a duration such as 10s or 500ms (0 or at least 1ms)"),
                ))
            }
        }
    }
    if !i.workdir.starts_with('/') {
        return Err(bad(
            &["image", "workdir"],
            format!("image.workdir {:?}: an absolute path", i.workdir),
        ));
    }
    if let Some(k) = i.labels.keys().find(|k| is_reserved_label(k)) {
        return Err(bad(
            &["image", "labels", k],
            format!(
                "image.labels {k:?}: a reserved label, imgbuild sets it itself (org.opencontainers.image.* and {}); choose another name",
                super::derive::HLS_LABELS.join(", ")
            ),
        ));
    }
    if i.layers.is_empty() {
        return Err(bad(
            &["image", "layers"],
            "image.layers: name at least one layer group (layers/<name>.toml)",
        ));
    }
    match &p.settings {
        Settings::Origin(o) => {
            if o.variants.is_empty() {
                return Err(bad(
                    &["origin", "variants"],
                    "origin.variants: at least one variant",
                ));
            }
            if !(o.segment_duration > 0.0 && o.segment_duration <= 60.0) {
                return Err(bad(
                    &["origin", "segment_duration"],
                    format!(
                        "origin.segment_duration {}: between 0 and 60 seconds",
                        o.segment_duration
                    ),
                ));
            }
            for (key, secs) in [
                ("header_timeout", o.header_timeout),
                ("keepalive_timeout", o.keepalive_timeout),
                ("send_timeout", o.send_timeout),
            ] {
                if !(secs > 0.0 && secs <= 86_400.0) {
                    return Err(bad(
                        &["origin", key],
                        format!("origin.{key} {secs}: seconds, above 0 and at most a day (86400)"),
                    ));
                }
            }
            if o.tls_cert.is_empty() != o.tls_key.is_empty() {
                let set = if o.tls_cert.is_empty() {
                    "tls_key"
                } else {
                    "tls_cert"
                };
                return Err(bad(
                    &["origin", set],
                    "origin.tls_cert and origin.tls_key go together: set both for HTTPS, or both to \"\" for HTTP",
                ));
            }
            let zero = [
                ("list_size", o.list_size == 0),
                ("fps", o.fps == 0),
                ("port", o.port == 0),
            ];
            if let Some((key, _)) = zero.iter().find(|(_, z)| *z) {
                return Err(bad(
                    &["origin", key],
                    "origin.list_size, origin.fps and origin.port must be above 0",
                ));
            }
            if o.segment_pattern.matches('%').count() != 1 || !o.segment_pattern.contains('d') {
                return Err(bad(
                    &["origin", "segment_pattern"],
                    format!(
                        "origin.segment_pattern {:?}: one printf number such as %05d",
                        o.segment_pattern
                    ),
                ));
            }
            let mut names = std::collections::BTreeSet::new();
            for (n, v) in o.variants.iter().enumerate() {
                let at = n.to_string();
                if !names.insert(&v.name) {
                    return Err(bad(
                        &["origin", "variants", &at, "name"],
                        format!("origin.variants: {} appears twice", v.name),
                    ));
                }
                let res_ok = v
                    .resolution
                    .split_once('x')
                    .is_some_and(|(w, h)| w.parse::<u32>().is_ok() && h.parse::<u32>().is_ok());
                if !res_ok {
                    return Err(bad(
                        &["origin", "variants", &at, "resolution"],
                        format!(
                            "origin.variants {}: resolution {:?} is not WxH",
                            v.name, v.resolution
                        ),
                    ));
                }
                for (k, r) in [
                    ("video", &v.video),
                    ("maxrate", &v.maxrate),
                    ("bufsize", &v.bufsize),
                    ("audio", &v.audio),
                ] {
                    if parse_bitrate(r).is_none() {
                        return Err(bad(
                            &["origin", "variants", &at, k],
                            format!(
                                "origin.variants {}: {k} {r:?} is not a bitrate such as 2000k",
                                v.name
                            ),
                        ));
                    }
                }
            }
        }
        Settings::Swarm(s) => {
            if s.clients == 0 || s.ramp_rate <= 0.0 {
                let key = if s.clients == 0 {
                    "clients"
                } else {
                    "ramp_rate"
                };
                return Err(bad(
                    &["swarm", key],
                    "swarm.clients and swarm.ramp_rate must be above 0",
                ));
            }
            let zero = [
                ("timeout", s.timeout),
                ("connect_timeout", s.connect_timeout),
                ("first_byte_timeout", s.first_byte_timeout),
            ];
            if let Some((key, _)) = zero.iter().find(|(_, v)| *v == 0) {
                return Err(bad(
                    &["swarm", key],
                    "swarm.timeout, swarm.connect_timeout and swarm.first_byte_timeout must be above 0 seconds",
                ));
            }
            if !["all", "first", "highest", "lowest", "random"].contains(&s.variant.as_str()) {
                return Err(bad(
                    &["swarm", "variant"],
                    format!(
                        "swarm.variant {:?}: all, first, highest, lowest or random",
                        s.variant
                    ),
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
            return Err(bad(
                &["kernel", "sysctl", k],
                format!(
                    "kernel.sysctl {k:?}: a sysctl name is dot-separated words (net.core.somaxconn)"
                ),
            ));
        }
        if v.trim().is_empty() || v.contains('\n') {
            return Err(bad(
                &["kernel", "sysctl", k],
                format!("kernel.sysctl {k:?}: the value {v:?} is empty or has a newline"),
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
                return Err(bad(
                    &["iso", "network"],
                    format!("iso.network: address {address:?} must be A.B.C.D/LEN and gateway {gateway:?} A.B.C.D"),
                ));
            }
        }
        let vid = p.volume_id();
        if vid.len() > 32
            || !vid
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(bad(
                &["iso", "volume_id"],
                format!("iso.volume_id {vid:?}: at most 32 of A-Z, 0-9, _"),
            ));
        }
    }
    Ok(())
}
