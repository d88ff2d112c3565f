//! The kernel command line (`/proc/cmdline`) in boot mode.
//!
//! Syntax (documented for users in the crate doc comment):
//! - `hostname=NAME` sets the hostname.
//! - `ip=dhcp` | `ip=off` | `ip=CLIENT[:SERVER[:GW[:NETMASK[:HOSTNAME[:DEVICE[:AUTOCONF[:DNS0[:DNS1]]]]]]]]`,
//!   the kernel's own `ip=` layout, where CLIENT may carry a prefix (`ip=10.1.2.3/24::10.1.2.1`).
//! - `PREFIXip=ADDR/LEN|dhcp|off`, `PREFIXgw=ADDR`, `PREFIXdns=ADDR[,ADDR]` (PREFIX is the
//!   config's `cmdline_prefix`, `hls.` by default): the same, one field at a time; they win
//!   over `ip=`.
//! - `PREFIXKEY=VALUE` for any other KEY: the service environment variable KEY (case kept).
//! - `imgbuild.test=kill-service-after=SECS[,poweroff-after=SECS]`: test aids.
//! - `imgbuild.poweroff=SECS`: power off SECS seconds after supervision began (the boot
//!   steps done); `imgbuild.poweroff` alone (or `=on-exit`): power off when the service
//!   exits instead of restarting it.
//! - `imgbuild.modules=NAME[,NAME…]`: of the config's modules, load only these (`-` and `_`
//!   alike). The MicroVM's command line names the modules its machine needs (virtio-net on
//!   PCI, with their dependencies), so it skips the ISO's CD, disk and SCSI drivers while
//!   booting the very same initramfs.
//! - Double quotes group words: `hls.GREETING="hello world"`; the quotes are removed.

use std::net::Ipv4Addr;
use std::time::Duration;

/// What `ip=` / `PREFIXip=` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpSpec {
    Dhcp,
    Off,
    Static { address: Ipv4Addr, prefix: u8 },
}

/// Everything init takes from the kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    pub hostname: Option<String>,
    pub ip: Option<IpSpec>,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Option<Vec<Ipv4Addr>>,
    pub device: Option<String>,
    /// Service environment overrides, in command-line order (a later one wins).
    pub env: Vec<(String, String)>,
    pub kill_service_after: Option<Duration>,
    pub poweroff_after: Option<Duration>,
    /// Power off when the service exits instead of restarting it.
    pub poweroff_on_exit: bool,
    /// `imgbuild.modules=`: load only these of the config's modules (canonical names).
    pub modules: Option<Vec<String>>,
    /// Entries that were recognised but could not be used, one line each.
    pub warnings: Vec<String>,
}

/// Split a command line into words the way the kernel does: whitespace separates, double
/// quotes group and are dropped.
pub fn split(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                in_quote = !in_quote;
                any = true;
            }
            c if c.is_whitespace() && !in_quote => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

fn secs(v: &str) -> Option<Duration> {
    let v = v.trim().trim_end_matches('s');
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

fn parse_ip_value(v: &str) -> Result<IpSpec, String> {
    match v {
        "dhcp" | "on" | "any" | "both" | "bootp" | "auto" => Ok(IpSpec::Dhcp),
        "off" | "none" => Ok(IpSpec::Off),
        _ => {
            let (address, prefix) = crate::cidr::parse_cidr(v)?;
            Ok(IpSpec::Static { address, prefix })
        }
    }
}

impl Cmdline {
    /// Read `/proc/cmdline` (empty when unreadable).
    pub fn from_proc(prefix: &str) -> Cmdline {
        let text = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        Cmdline::parse(&text, prefix)
    }

    pub fn parse(line: &str, prefix: &str) -> Cmdline {
        let mut c = Cmdline::default();
        let mut prefixed_ip = None;
        for word in split(line) {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word.as_str(), None),
            };
            match (key, value) {
                ("hostname", Some(v)) if !v.is_empty() => c.hostname = Some(v.to_string()),
                ("ip", Some(v)) => c.parse_kernel_ip(v),
                ("imgbuild.test", Some(v)) => {
                    for item in v.split(',').filter(|s| !s.is_empty()) {
                        match item.split_once('=') {
                            Some(("kill-service-after", s)) if secs(s).is_some() => {
                                c.kill_service_after = secs(s)
                            }
                            Some(("poweroff-after", s)) if secs(s).is_some() => {
                                c.poweroff_after = secs(s)
                            }
                            _ => c
                                .warnings
                                .push(format!("unknown imgbuild.test item {item:?}")),
                        }
                    }
                }
                ("imgbuild.modules", Some(v)) => {
                    c.modules = Some(
                        v.split(',')
                            .map(|n| n.trim().replace('-', "_"))
                            .filter(|n| !n.is_empty())
                            .collect(),
                    )
                }
                ("imgbuild.poweroff", None | Some("on-exit")) => c.poweroff_on_exit = true,
                ("imgbuild.poweroff", Some(v)) => match secs(v) {
                    Some(d) => c.poweroff_after = Some(d),
                    None => c
                        .warnings
                        .push(format!("imgbuild.poweroff={v}: expected seconds")),
                },
                (k, v) if !prefix.is_empty() && k.starts_with(prefix) => {
                    let name = &k[prefix.len()..];
                    let Some(v) = v else {
                        c.warnings
                            .push(format!("{k} has no value (write {k}=VALUE)"));
                        continue;
                    };
                    match name {
                        "ip" => match parse_ip_value(v) {
                            Ok(spec) => prefixed_ip = Some(spec),
                            Err(e) => c.warnings.push(format!("{k}={v}: {e}")),
                        },
                        "gw" => match v.parse() {
                            Ok(gw) => c.gateway = Some(gw),
                            Err(_) => c.warnings.push(format!("{k}={v}: bad IPv4 address")),
                        },
                        "dns" => {
                            let list: Result<Vec<Ipv4Addr>, _> = v
                                .split(',')
                                .filter(|s| !s.is_empty())
                                .map(|s| s.parse())
                                .collect();
                            match list {
                                Ok(l) => c.dns = Some(l),
                                Err(_) => c.warnings.push(format!("{k}={v}: bad IPv4 address")),
                            }
                        }
                        "" => c.warnings.push(format!("{k}={v}: empty variable name")),
                        _ => c.env.push((name.to_string(), v.to_string())),
                    }
                }
                _ => {}
            }
        }
        if prefixed_ip.is_some() {
            c.ip = prefixed_ip;
        }
        c
    }

    /// The kernel's `ip=` layout; CLIENT may be `ADDR/LEN`.
    fn parse_kernel_ip(&mut self, v: &str) {
        if !v.contains(':') {
            match parse_ip_value(v) {
                Ok(spec) => self.ip = Some(spec),
                Err(_) => match v.parse::<Ipv4Addr>() {
                    Ok(address) => {
                        self.ip = Some(IpSpec::Static {
                            address,
                            prefix: 24,
                        })
                    }
                    Err(_) => self.warnings.push(format!("ip={v}: not understood")),
                },
            }
            return;
        }
        let f: Vec<&str> = v.split(':').collect();
        let field = |i: usize| f.get(i).copied().unwrap_or("");
        let mut bad = |what: &str, s: &str| {
            self.warnings.push(format!("ip={v}: bad {what} {s:?}"));
        };
        let netmask = match field(3) {
            "" => None,
            m => match m.parse().ok().and_then(crate::cidr::mask_to_prefix) {
                Some(p) => Some(p),
                None => {
                    bad("netmask", m);
                    None
                }
            },
        };
        let client = field(0);
        let autoconf = field(6);
        let spec = if client.is_empty() {
            match autoconf {
                "" | "dhcp" | "on" | "any" | "both" | "bootp" => Some(IpSpec::Dhcp),
                "off" | "none" => Some(IpSpec::Off),
                a => {
                    bad("autoconf", a);
                    None
                }
            }
        } else if let Ok((address, prefix)) = crate::cidr::parse_cidr(client) {
            Some(IpSpec::Static { address, prefix })
        } else if let Ok(address) = client.parse::<Ipv4Addr>() {
            Some(IpSpec::Static {
                address,
                prefix: netmask.unwrap_or(24),
            })
        } else {
            bad("client address", client);
            None
        };
        let gateway = match field(2) {
            "" => None,
            g => match g.parse() {
                Ok(g) => Some(g),
                Err(_) => {
                    bad("gateway", g);
                    None
                }
            },
        };
        let mut dns = Vec::new();
        for d in [field(7), field(8)].into_iter().filter(|s| !s.is_empty()) {
            match d.parse() {
                Ok(d) => dns.push(d),
                Err(_) => bad("DNS server", d),
            }
        }
        if spec.is_some() {
            self.ip = spec;
        }
        if gateway.is_some() {
            self.gateway = gateway;
        }
        if !dns.is_empty() {
            self.dns = Some(dns);
        }
        if !field(4).is_empty() && self.hostname.is_none() {
            self.hostname = Some(field(4).to_string());
        }
        if !field(5).is_empty() {
            self.device = Some(field(5).to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting_follows_kernel_quoting() {
        assert_eq!(
            split("console=ttyS0,115200  hls.MSG=\"hello  world\" quiet\n"),
            vec!["console=ttyS0,115200", "hls.MSG=hello  world", "quiet"]
        );
        assert_eq!(split("\"hls.A=b c\" x"), vec!["hls.A=b c", "x"]);
        assert_eq!(split("hls.EMPTY=\"\""), vec!["hls.EMPTY="]);
        assert!(split("   ").is_empty());
    }

    #[test]
    fn env_overrides_and_hostname() {
        let c = Cmdline::parse(
            "BOOT_IMAGE=/vmlinuz console=ttyS0 hls.PORT=18080 hls.LOG_LEVEL=debug hls.PORT=19090 hostname=box hls.NOVALUE",
            "hls.",
        );
        assert_eq!(
            c.env,
            vec![
                ("PORT".to_string(), "18080".to_string()),
                ("LOG_LEVEL".to_string(), "debug".to_string()),
                ("PORT".to_string(), "19090".to_string())
            ]
        );
        assert_eq!(c.hostname.as_deref(), Some("box"));
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.ip, None);
        // Another prefix.
        let c = Cmdline::parse("app.X=1 hls.Y=2", "app.");
        assert_eq!(c.env, vec![("X".to_string(), "1".to_string())]);
    }

    #[test]
    fn modules_list_names_canonically() {
        let c = Cmdline::parse("quiet imgbuild.modules=virtio-pci,virtio_net,,", "hls.");
        assert_eq!(
            c.modules,
            Some(vec!["virtio_pci".to_string(), "virtio_net".to_string()])
        );
        assert_eq!(Cmdline::parse("quiet", "hls.").modules, None);
    }

    #[test]
    fn kernel_style_ip() {
        let c = Cmdline::parse("ip=10.1.2.3/24::10.1.2.1", "hls.");
        assert_eq!(
            c.ip,
            Some(IpSpec::Static {
                address: Ipv4Addr::new(10, 1, 2, 3),
                prefix: 24
            })
        );
        assert_eq!(c.gateway, Some(Ipv4Addr::new(10, 1, 2, 1)));
        let c = Cmdline::parse(
            "ip=192.168.1.5::192.168.1.1:255.255.0.0:myhost:eth1:off:1.1.1.1:8.8.8.8",
            "hls.",
        );
        assert_eq!(
            c.ip,
            Some(IpSpec::Static {
                address: Ipv4Addr::new(192, 168, 1, 5),
                prefix: 16
            })
        );
        assert_eq!(c.hostname.as_deref(), Some("myhost"));
        assert_eq!(c.device.as_deref(), Some("eth1"));
        assert_eq!(
            c.dns,
            Some(vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(8, 8, 8, 8)])
        );
        assert_eq!(Cmdline::parse("ip=dhcp", "hls.").ip, Some(IpSpec::Dhcp));
        assert_eq!(
            Cmdline::parse("ip=:::::eth0:dhcp", "hls.").ip,
            Some(IpSpec::Dhcp)
        );
        assert_eq!(Cmdline::parse("ip=off", "hls.").ip, Some(IpSpec::Off));
        assert_eq!(Cmdline::parse("ip=banana", "hls.").warnings.len(), 1);
    }

    #[test]
    fn prefixed_network_keys_win_over_ip() {
        let c = Cmdline::parse(
            "ip=dhcp hls.ip=10.1.2.3/24 hls.gw=10.1.2.1 hls.dns=10.0.2.3,9.9.9.9",
            "hls.",
        );
        assert_eq!(
            c.ip,
            Some(IpSpec::Static {
                address: Ipv4Addr::new(10, 1, 2, 3),
                prefix: 24
            })
        );
        assert_eq!(c.gateway, Some(Ipv4Addr::new(10, 1, 2, 1)));
        assert_eq!(c.dns.as_ref().map(|d| d.len()), Some(2));
        assert!(c.env.is_empty());
        let c = Cmdline::parse("hls.ip=10.1.2.3 hls.gw=nope", "hls.");
        assert_eq!(c.warnings.len(), 2);
        assert_eq!(c.ip, None);
    }

    #[test]
    fn test_and_poweroff_switches() {
        let c = Cmdline::parse("imgbuild.test=kill-service-after=5", "hls.");
        assert_eq!(c.kill_service_after, Some(Duration::from_secs(5)));
        let c = Cmdline::parse(
            "imgbuild.test=kill-service-after=0.5s,poweroff-after=30 imgbuild.test=bogus",
            "hls.",
        );
        assert_eq!(c.kill_service_after, Some(Duration::from_millis(500)));
        assert_eq!(c.poweroff_after, Some(Duration::from_secs(30)));
        assert_eq!(c.warnings.len(), 1);
        let c = Cmdline::parse("imgbuild.poweroff=12", "hls.");
        assert_eq!(c.poweroff_after, Some(Duration::from_secs(12)));
        assert!(!c.poweroff_on_exit);
        assert!(Cmdline::parse("quiet imgbuild.poweroff", "hls.").poweroff_on_exit);
        assert!(Cmdline::parse("imgbuild.poweroff=on-exit", "hls.").poweroff_on_exit);
    }
}
