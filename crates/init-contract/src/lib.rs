//! The contract between imgbuild and imgbuild-init: `/etc/imgbuild/init.json`, the file
//! imgbuild writes into an ISO's initramfs, a MicroVM's initramfs and the `--init` container
//! image, and imgbuild-init reads at start. docs/INIT.md describes every field; this crate is
//! its one definition, so the writer and the reader cannot drift apart.
//!
//! Serialising a [`Config`] gives the bytes imgbuild writes: fields in declaration order,
//! `None` values of the optional fields skipped where marked. Reading is strict: unknown
//! fields are errors, so a typo is never silently ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where imgbuild-init reads its configuration inside an image (without the leading `/`).
pub const CONFIG_PATH: &str = "etc/imgbuild/init.json";

/// The kernel command-line prefix whose `KEY=VALUE` words override the service environment
/// (the default of [`Config::cmdline_prefix`]).
pub const DEFAULT_CMDLINE_PREFIX: &str = "hls.";

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub service: Service,
    #[serde(default)]
    pub hostname: Option<String>,
    /// How the first non-loopback interface is configured (boot mode); `null` or absent:
    /// loopback only.
    #[serde(default)]
    pub network: Option<Network>,
    /// Module files relative to `/` (or absolute), in load order (dependencies first).
    #[serde(default)]
    pub modules: Vec<String>,
    #[serde(default = "default_prefix")]
    pub cmdline_prefix: String,
    /// Kernel tuning applied at boot (boot mode only).
    #[serde(default)]
    pub kernel: Kernel,
}

fn default_prefix() -> String {
    DEFAULT_CMDLINE_PREFIX.to_string()
}

impl Config {
    /// The key of the NoCloud user-data map holding env overrides: the prefix without its dot.
    pub fn user_data_key(&self) -> &str {
        self.cmdline_prefix.trim_end_matches('.')
    }
}

/// `kernel`: sysctls (name → value) and the service's open-file limit (0: unchanged).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    #[serde(default)]
    pub sysctl: BTreeMap<String, String>,
    #[serde(default)]
    pub nofile: u64,
}

/// The one program init starts and keeps running.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub path: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Applied only when init runs as root.
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
}

/// How the first non-loopback interface is configured in boot mode.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum Network {
    /// DHCP, with a static fallback (QEMU user networking's 10.0.2.15/24 gw 10.0.2.2).
    #[default]
    Dhcp,
    /// A fixed address in CIDR form, optional default gateway and DNS server(s).
    Static {
        address: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gateway: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dns: Option<Dns>,
    },
    /// Loopback only.
    None,
}

/// One DNS server (or a comma-separated list in one string), or a list of them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Dns {
    One(String),
    Many(Vec<String>),
}

impl Dns {
    /// The servers, one address each.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_in_declaration_order_and_reads_back() {
        let c = Config {
            service: Service {
                name: "hls-origin".into(),
                path: "/bin/hls-origin".into(),
                args: vec![],
                env: [("PORT".to_string(), "17080".to_string())].into(),
                uid: Some(1000),
                gid: Some(1000),
            },
            hostname: Some("hls-origin-tap".into()),
            network: Some(Network::Static {
                address: "10.177.0.10/24".into(),
                gateway: Some("10.177.0.1".into()),
                dns: None,
            }),
            modules: vec!["lib/modules/k/virtio_net.ko".into()],
            cmdline_prefix: DEFAULT_CMDLINE_PREFIX.into(),
            kernel: Kernel::default(),
        };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(
            text,
            r#"{"service":{"name":"hls-origin","path":"/bin/hls-origin","args":[],"env":{"PORT":"17080"},"uid":1000,"gid":1000},"hostname":"hls-origin-tap","network":{"mode":"static","address":"10.177.0.10/24","gateway":"10.177.0.1"},"modules":["lib/modules/k/virtio_net.ko"],"cmdline_prefix":"hls.","kernel":{"sysctl":{},"nofile":0}}"#
        );
        let back: Config = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.user_data_key(), "hls");
    }

    #[test]
    fn dns_lists() {
        assert_eq!(Dns::One("a, b,".into()).to_vec(), ["a", "b"]);
        assert_eq!(Dns::Many(vec!["c".into()]).to_vec(), ["c"]);
    }
}
