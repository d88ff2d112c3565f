//! `imgbuild boot --net tap`: the guest on a tap device enslaved to a bridge that carries the
//! profile's gateway address, so the host reaches the guest's static address directly (the
//! `tap` profiles: 10.177.0.10/24 behind 10.177.0.1).
//!
//! What it creates (a bridge `ibr<pid>` and a multi-queue tap `itap<pid>`, or only what
//! `--bridge`/`--tap` do not name) is removed when the [`TapNet`] is dropped, which
//! `imgbuild boot` reaches on every exit path (QEMU quits, fails, or imgbuild gets SIGINT,
//! SIGTERM or SIGHUP). The links are made with iproute2's `ip`, as an administrator would:
//! it is on every Debian machine, and its errors name what is missing.

use std::process::Command;

/// Failures of the tap set-up: the environment, not the user's input (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("--net tap: {what} failed: {why}; creating tap devices and bridges needs CAP_NET_ADMIN (run as root), or create them beforehand and name them with --tap and --bridge")]
    NotPermitted { what: String, why: String },
    #[error("--net tap: {what} failed: {why}")]
    Ip { what: String, why: String },
    #[error(
        "--net tap: cannot run ip (iproute2): {0}; install it (Debian: apt-get install iproute2)"
    )]
    NoIp(std::io::Error),
    #[error("--net tap: the image's network is {0}; tap networking needs a static address and gateway (a tap profile), or name an existing --bridge")]
    NoGateway(String),
}

/// The tap device and bridge of one boot.
#[derive(Debug)]
pub struct TapNet {
    pub tap: String,
    pub bridge: String,
    created: Vec<String>,
    /// QEMU queue pairs on the tap (multi-queue).
    pub queues: u32,
    /// Whether /dev/vhost-net is there to use.
    pub vhost: bool,
}

fn ip(args: &[&str]) -> Result<(), TapError> {
    // Announced like every external command `boot` and `up` run.
    eprintln!("Executing: ip {}", args.join(" "));
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(TapError::NoIp)?;
    if o.status.success() {
        return Ok(());
    }
    let why = String::from_utf8_lossy(&o.stderr).trim().to_string();
    let what = format!("ip {}", args.join(" "));
    if why.contains("Operation not permitted") || why.contains("Permission denied") {
        Err(TapError::NotPermitted { what, why })
    } else {
        Err(TapError::Ip { what, why })
    }
}

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

impl TapNet {
    /// Sets up the tap and the bridge. `gateway` is `A.B.C.D/LEN` for a bridge made here.
    pub fn setup(
        tap: Option<&str>,
        bridge: Option<&str>,
        gateway: Option<&str>,
    ) -> Result<TapNet, TapError> {
        let pid = std::process::id();
        let queues = 2;
        let mut net = TapNet {
            tap: tap.map_or_else(|| format!("itap{pid}"), str::to_string),
            bridge: bridge.map_or_else(|| format!("ibr{pid}"), str::to_string),
            created: vec![],
            queues,
            vhost: std::path::Path::new("/dev/vhost-net").exists(),
        };
        if bridge.is_none() {
            let Some(gw) = gateway else {
                return Err(TapError::NoGateway("DHCP".into()));
            };
            ip(&["link", "add", "name", &net.bridge, "type", "bridge"])?;
            net.created.push(net.bridge.clone());
            ip(&["addr", "add", gw, "dev", &net.bridge])?;
            ip(&["link", "set", &net.bridge, "up"])?;
        } else if !link_exists(&net.bridge) {
            return Err(TapError::Ip {
                what: format!("--bridge {}", net.bridge),
                why: "no such link".into(),
            });
        }
        if tap.is_none() {
            ip(&[
                "tuntap",
                "add",
                "dev",
                &net.tap,
                "mode",
                "tap",
                "multi_queue",
            ])?;
            net.created.push(net.tap.clone());
        }
        ip(&["link", "set", &net.tap, "master", &net.bridge])?;
        ip(&["link", "set", &net.tap, "up"])?;
        Ok(net)
    }

    /// QEMU's `-netdev` value.
    pub fn netdev(&self) -> String {
        format!(
            "tap,id=net0,ifname={},script=no,downscript=no,queues={}{}",
            self.tap,
            self.queues,
            if self.vhost { ",vhost=on" } else { "" }
        )
    }

    /// QEMU's `-device` value: virtio-net with one MSI-X vector per queue plus two.
    pub fn device(&self) -> String {
        format!(
            "virtio-net-pci,netdev=net0,mq=on,vectors={},romfile=",
            2 * self.queues + 2
        )
    }
}

impl Drop for TapNet {
    fn drop(&mut self) {
        // The tap first (it is enslaved to the bridge), then the bridge.
        for name in self.created.iter().rev() {
            let _ = Command::new("ip").args(["link", "del", name]).output();
        }
    }
}
