//! The init configuration, `/etc/imgbuild/init.json`, written by imgbuild.
//!
//! The types are the shared contract (crates/init-contract, described in docs/INIT.md);
//! this module reads the file, checks what the types cannot, and says clearly which file is
//! wrong and why.

use std::path::{Path, PathBuf};

pub use init_contract::{Config, Kernel, Network};

/// Default location of the configuration inside an image.
pub const DEFAULT_CONFIG: &str = "/etc/imgbuild/init.json";

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

/// Reading and checking a configuration file.
pub trait Load: Sized {
    /// Parse configuration text; `path` is only used in error messages.
    fn parse(text: &str, path: &Path) -> Result<Self, ConfigError>;
    /// Read and parse the configuration file.
    fn load(path: &Path) -> Result<Self, ConfigError>;
}

impl Load for Config {
    fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = serde_json::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        validate(&cfg).map_err(|what| ConfigError::Invalid {
            path: path.to_path_buf(),
            what,
        })?;
        Ok(cfg)
    }

    fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }
}

/// What the types do not say: names and addresses that must be usable.
fn validate(c: &Config) -> Result<(), String> {
    if c.service.name.trim().is_empty() {
        return Err("service.name is empty".into());
    }
    if c.service.path.as_os_str().is_empty() {
        return Err("service.path is empty".into());
    }
    for key in c.service.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(format!("service.env has an invalid variable name {key:?}"));
        }
    }
    if let Some(Network::Static { address, .. }) = &c.network {
        crate::cidr::parse_cidr(address)
            .map_err(|e| format!("network.address {address:?}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use init_contract::Dns;

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
