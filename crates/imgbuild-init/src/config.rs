//! The init configuration, `/etc/imgbuild/init.json`, written by imgbuild.
//!
//! The schema is documented in the crate's top doc comment (`main.rs`); this module only
//! reads it and says clearly which file is wrong and why.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default location of the configuration inside an image.
pub const DEFAULT_CONFIG: &str = "/etc/imgbuild/init.json";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub service: Service,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub network: Option<Network>,
    #[serde(default)]
    pub modules: Vec<String>,
    #[serde(default = "default_prefix")]
    pub cmdline_prefix: String,
    /// Kernel tuning applied at boot (boot mode only).
    #[serde(default)]
    pub kernel: Kernel,
}

/// `kernel`: sysctls (name → value) and the service's open-file limit (0: unchanged).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    #[serde(default)]
    pub sysctl: BTreeMap<String, String>,
    #[serde(default)]
    pub nofile: u64,
}

fn default_prefix() -> String {
    "hls.".to_string()
}

/// The one program init starts and keeps running.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub path: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
}

/// How the first non-loopback interface is configured in boot mode.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum Network {
    /// DHCP, with a static fallback (QEMU user networking's 10.0.2.15/24 gw 10.0.2.2).
    Dhcp,
    /// A fixed address in CIDR form, optional default gateway and DNS server(s).
    Static {
        address: String,
        #[serde(default)]
        gateway: Option<String>,
        #[serde(default)]
        dns: Option<Dns>,
    },
    /// Loopback only.
    None,
}

/// One DNS server or a list of them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Dns {
    One(String),
    Many(Vec<String>),
}

impl Dns {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Dns::One(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            Dns::Many(v) => v.clone(),
        }
    }
}

/// Why the configuration could not be used. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("invalid config {path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

impl Config {
    /// Parse configuration text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = serde_json::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.validate().map_err(|what| ConfigError::Invalid {
            path: path.to_path_buf(),
            what,
        })?;
        Ok(cfg)
    }

    /// Read and parse the configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    fn validate(&self) -> Result<(), String> {
        if self.service.name.trim().is_empty() {
            return Err("service.name is empty".into());
        }
        if self.service.path.as_os_str().is_empty() {
            return Err("service.path is empty".into());
        }
        for key in self.service.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(format!("service.env has an invalid variable name {key:?}"));
            }
        }
        if let Some(Network::Static { address, .. }) = &self.network {
            crate::net::parse_cidr(address)
                .map_err(|e| format!("network.address {address:?}: {e}"))?;
        }
        Ok(())
    }

    /// The key of the NoCloud user-data map holding env overrides: the prefix without its dot.
    pub fn user_data_key(&self) -> &str {
        self.cmdline_prefix.trim_end_matches('.')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
      "service": {"name": "hls-origin", "path": "/bin/hls-origin", "args": [],
                  "env": {"PORT": "17080"}, "uid": 1000, "gid": 1000},
      "hostname": "hls-origin-default",
      "network": {"mode": "static", "address": "10.177.0.10/24", "gateway": "10.177.0.1", "dns": "10.0.2.3"},
      "modules": ["lib/modules/6.1.0-x-cloud-amd64/kernel/drivers/net/virtio_net.ko"],
      "cmdline_prefix": "hls."
    }"#;

    #[test]
    fn the_documented_example_parses() {
        let c = Config::parse(FULL, Path::new("x.json")).unwrap();
        assert_eq!(c.service.uid, Some(1000));
        assert_eq!(c.service.env["PORT"], "17080");
        assert_eq!(
            c.network,
            Some(Network::Static {
                address: "10.177.0.10/24".into(),
                gateway: Some("10.177.0.1".into()),
                dns: Some(Dns::One("10.0.2.3".into()))
            })
        );
        assert_eq!(c.user_data_key(), "hls");
    }

    #[test]
    fn network_variants_and_defaults() {
        let c = Config::parse(
            r#"{"service":{"name":"s","path":"/bin/s"},"network":{"mode":"dhcp"}}"#,
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.network, Some(Network::Dhcp));
        assert_eq!(c.cmdline_prefix, "hls.");
        assert!(c.modules.is_empty());
        let c = Config::parse(
            r#"{"service":{"name":"s","path":"/bin/s"},"network":null}"#,
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.network, None);
    }

    #[test]
    fn errors_name_the_file() {
        let e = Config::parse("{", Path::new("/etc/imgbuild/init.json")).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("malformed config /etc/imgbuild/init.json:"));
        let e = Config::parse(
            r#"{"service":{"name":"s","path":"/bin/s","typo":1}}"#,
            Path::new("c.json"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("typo"), "{e}");
        let e = Config::parse(
            r#"{"service":{"name":"s","path":"/bin/s"},"network":{"mode":"static","address":"10.0.0.1"}}"#,
            Path::new("c.json"),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid config c.json: network.address"),
            "{e}"
        );
    }
}
