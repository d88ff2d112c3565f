//! The init contract (crates/init-contract, docs/INIT.md) a profile gives: what imgbuild-init
//! starts and how the machine around it is set up. The ISO and MicroVM initramfs and the
//! `--init` container image carry it as `/etc/imgbuild/init.json`; the writers take the
//! [`Config`] made here and never see the profile.

use init_contract::{Config, Kernel, Service, DEFAULT_CMDLINE_PREFIX};

use crate::profile::Profile;

/// The service of a profile: its program at `/bin/<binary>`, its environment and user.
fn service(p: &Profile) -> Service {
    let bin = &p.image.binary;
    Service {
        name: bin.clone(),
        path: format!("/bin/{bin}").into(),
        args: vec![],
        env: p.env().into_iter().collect(),
        uid: Some(p.image.user.uid),
        gid: Some(p.image.user.gid),
    }
}

fn hostname(p: &Profile) -> String {
    format!("{}-{}", p.image.name, p.name)
}

/// For a booted machine: the service, the profile's network and kernel tuning, and the
/// module files (relative to `/`, dependencies first).
pub fn boot(p: &Profile, modules: Vec<String>) -> Config {
    Config {
        service: service(p),
        hostname: Some(hostname(p)),
        network: Some(crate::vm::network(p)),
        modules,
        cmdline_prefix: DEFAULT_CMDLINE_PREFIX.into(),
        kernel: Kernel {
            sysctl: p.kernel.sysctl.clone(),
            nofile: p.kernel.nofile,
        },
    }
}

/// For the `--init` container image: the service only (no network, modules or tuning:
/// container mode leaves those to the engine).
pub fn container(p: &Profile) -> Config {
    Config {
        service: service(p),
        hostname: Some(hostname(p)),
        network: None,
        modules: vec![],
        cmdline_prefix: DEFAULT_CMDLINE_PREFIX.into(),
        kernel: Kernel::default(),
    }
}

/// The file's bytes: pretty JSON.
pub fn to_bytes(c: &Config) -> Vec<u8> {
    serde_json::to_vec_pretty(c).expect("the init contract serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{load, Kind};
    use crate::root::Root;

    #[test]
    fn a_boot_config_follows_the_contract() {
        let p = load(&Root::Embedded, Kind::Origin, "tap").unwrap();
        let c = boot(
            &p,
            vec!["lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/net/virtio_net.ko".into()],
        );
        let v: serde_json::Value = serde_json::from_slice(&to_bytes(&c)).unwrap();
        assert_eq!(v["service"]["name"], "hls-origin");
        assert_eq!(v["service"]["path"], "/bin/hls-origin");
        assert_eq!(v["service"]["env"]["PORT"], "17080");
        assert_eq!(v["service"]["uid"], 1000);
        assert_eq!(v["hostname"], "hls-origin-tap");
        assert_eq!(v["network"]["mode"], "static");
        assert_eq!(v["network"]["address"], "10.177.0.10/24");
        assert_eq!(v["network"]["gateway"], "10.177.0.1");
        assert_eq!(
            v["modules"][0],
            "lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/net/virtio_net.ko"
        );
        assert_eq!(v["cmdline_prefix"], "hls.");
        let d = load(&Root::Embedded, Kind::Origin, "default").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&to_bytes(&boot(&d, vec![]))).unwrap();
        assert_eq!(v["network"], serde_json::json!({"mode": "dhcp"}));
        let v: serde_json::Value = serde_json::from_slice(&to_bytes(&container(&d))).unwrap();
        assert_eq!(v["network"], serde_json::Value::Null);
        assert_eq!(v["service"]["gid"], 1000);
    }
}
