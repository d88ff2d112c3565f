//! Network configuration in boot mode: what to configure (resolved from the config and the
//! kernel command line) and the ioctls that configure it (link up, address, netmask,
//! default route), plus `/etc/resolv.conf`.

use crate::cidr::{parse_cidr, prefix_to_mask};
use crate::cmdline::{Cmdline, IpSpec};
use crate::say::say;
use init_contract::Network;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// A fixed IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNet {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

impl StaticNet {
    pub fn netmask(&self) -> Ipv4Addr {
        prefix_to_mask(self.prefix)
    }
    /// Whether `ip` is inside this address's subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = u32::from(self.netmask());
        u32::from(ip) & m == u32::from(self.address) & m
    }
}

/// QEMU user-mode networking's answer, used when DHCP gets none.
pub fn qemu_fallback() -> StaticNet {
    StaticNet {
        address: Ipv4Addr::new(10, 0, 2, 15),
        prefix: 24,
        gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
        dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
    }
}

/// What boot mode does with the network, after config and command line are combined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetPlan {
    /// Loopback only.
    None,
    /// DHCP; `gateway`/`dns` from the command line replace what the lease says.
    Dhcp {
        device: Option<String>,
        gateway: Option<Ipv4Addr>,
        dns: Option<Vec<Ipv4Addr>>,
    },
    Static {
        device: Option<String>,
        net: StaticNet,
    },
}

fn parse_dns_list(v: &[String]) -> Result<Vec<Ipv4Addr>, String> {
    v.iter()
        .map(|s| {
            s.parse()
                .map_err(|_| format!("bad DNS server address {s:?}"))
        })
        .collect()
}

/// Combine the config's `network` with the kernel command line (the command line wins).
pub fn resolve(config: Option<&Network>, cmd: &Cmdline) -> Result<NetPlan, String> {
    let mut plan = match config {
        None | Some(Network::None) => NetPlan::None,
        Some(Network::Dhcp) => NetPlan::Dhcp {
            device: None,
            gateway: None,
            dns: None,
        },
        Some(Network::Static {
            address,
            gateway,
            dns,
        }) => {
            let (address, prefix) = parse_cidr(address)?;
            let gateway = match gateway.as_deref() {
                None | Some("") => None,
                Some(g) => Some(g.parse().map_err(|_| format!("bad gateway {g:?}"))?),
            };
            let dns = parse_dns_list(&dns.as_ref().map(|d| d.to_vec()).unwrap_or_default())?;
            NetPlan::Static {
                device: None,
                net: StaticNet {
                    address,
                    prefix,
                    gateway,
                    dns,
                },
            }
        }
    };
    if let Some(ip) = &cmd.ip {
        plan = match (ip, plan) {
            (IpSpec::Off, _) => NetPlan::None,
            (IpSpec::Dhcp, _) => NetPlan::Dhcp {
                device: None,
                gateway: None,
                dns: None,
            },
            (IpSpec::Static { address, prefix }, old) => {
                // Keep the config's gateway only when it is still on-link; keep its DNS.
                let mut net = StaticNet {
                    address: *address,
                    prefix: *prefix,
                    gateway: None,
                    dns: vec![],
                };
                if let NetPlan::Static { net: old, .. } = old {
                    net.gateway = old.gateway.filter(|g| net.contains(*g));
                    net.dns = old.dns;
                }
                NetPlan::Static { device: None, net }
            }
        };
    }
    match &mut plan {
        NetPlan::None => {}
        NetPlan::Dhcp {
            device,
            gateway,
            dns,
        } => {
            *device = cmd.device.clone();
            if cmd.gateway.is_some() {
                *gateway = cmd.gateway;
            }
            if cmd.dns.is_some() {
                *dns = cmd.dns.clone();
            }
        }
        NetPlan::Static { device, net } => {
            *device = cmd.device.clone();
            if cmd.gateway.is_some() {
                net.gateway = cmd.gateway;
            }
            if let Some(d) = &cmd.dns {
                net.dns = d.clone();
            }
        }
    }
    Ok(plan)
}

/// Contents of `/etc/resolv.conf` for these servers.
pub fn resolv_conf(dns: &[Ipv4Addr]) -> String {
    let mut s = String::from("# written by imgbuild-init\n");
    for d in dns {
        s.push_str(&format!("nameserver {d}\n"));
    }
    s
}

// ---- the system side: interfaces and ioctls ----

const SIOCADDRT: libc::c_ulong = 0x890B;
const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
const SIOCSIFADDR: libc::c_ulong = 0x8916;
const SIOCSIFNETMASK: libc::c_ulong = 0x891C;
const RTF_UP: libc::c_ushort = 0x0001;
const RTF_GATEWAY: libc::c_ushort = 0x0002;

/// `struct ifreq` with the `sockaddr` member of the union (40 bytes on Linux).
#[repr(C)]
struct IfreqAddr {
    name: [libc::c_char; 16],
    addr: libc::sockaddr_in,
    _pad: [u8; 8],
}

/// `struct ifreq` with the `short ifr_flags` member of the union.
#[repr(C)]
struct IfreqFlags {
    name: [libc::c_char; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// `struct rtentry` as in `<net/route.h>`.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr_in,
    rt_gateway: libc::sockaddr_in,
    rt_genmask: libc::sockaddr_in,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn ifname(name: &str) -> std::io::Result<[libc::c_char; 16]> {
    let mut out = [0 as libc::c_char; 16];
    if name.len() >= 16 || name.contains('\0') {
        return Err(std::io::Error::other(format!(
            "bad interface name {name:?}"
        )));
    }
    for (o, b) in out.iter_mut().zip(name.bytes()) {
        *o = b as libc::c_char;
    }
    Ok(out)
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn ctl_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl<T>(fd: &OwnedFd, req: libc::c_ulong, arg: &mut T) -> std::io::Result<()> {
    // SAFETY: `arg` is a properly laid out struct for `req`, valid for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg as *mut T) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Bring an interface up (IFF_UP).
pub fn link_up(name: &str) -> std::io::Result<()> {
    let fd = ctl_socket()?;
    let mut req = IfreqFlags {
        name: ifname(name)?,
        flags: 0,
        _pad: [0; 22],
    };
    ioctl(&fd, SIOCGIFFLAGS, &mut req)?;
    req.flags |= libc::IFF_UP as libc::c_short;
    ioctl(&fd, SIOCSIFFLAGS, &mut req)
}

/// Set an interface's IPv4 address and netmask (which also adds the on-link route).
pub fn set_address(name: &str, addr: Ipv4Addr, prefix: u8) -> std::io::Result<()> {
    let fd = ctl_socket()?;
    let mut req = IfreqAddr {
        name: ifname(name)?,
        addr: sockaddr(addr),
        _pad: [0; 8],
    };
    ioctl(&fd, SIOCSIFADDR, &mut req)?;
    req.addr = sockaddr(prefix_to_mask(prefix));
    ioctl(&fd, SIOCSIFNETMASK, &mut req)
}

/// Add `default via gw dev name`; an existing identical route is fine.
pub fn add_default_route(name: &str, gw: Ipv4Addr) -> std::io::Result<()> {
    let fd = ctl_socket()?;
    let mut dev = ifname(name)?;
    let mut rt = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr(gw),
        rt_genmask: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_flags: RTF_UP | RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: dev.as_mut_ptr(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    match ioctl(&fd, SIOCADDRT, &mut rt) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

/// Names of the Ethernet interfaces in /sys/class/net (type 1: no lo, sit0, tunl0…), sorted.
pub fn interfaces() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("type")).is_ok_and(|t| t.trim() == "1")
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    // eth0 before eth1 before other names; plain sort otherwise.
    v.sort_by(|a, b| (!a.starts_with("eth"), a.len(), a).cmp(&(!b.starts_with("eth"), b.len(), b)));
    v
}

/// Wait up to `timeout` for `wanted` (or any non-loopback interface) to appear.
pub fn wait_for_interface(wanted: Option<&str>, timeout: Duration) -> Option<String> {
    let start = Instant::now();
    loop {
        let list = interfaces();
        let found = match wanted {
            Some(w) => list.into_iter().find(|n| n == w),
            None => list.into_iter().next(),
        };
        if found.is_some() || start.elapsed() >= timeout {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The interface's MAC address from sysfs.
pub fn mac_address(name: &str) -> Option<[u8; 6]> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{name}/address")).ok()?;
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in mac.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    Some(mac)
}

/// Apply a static configuration to `dev` and print what was done.
pub fn apply(dev: &str, net: &StaticNet, how: &str) {
    match set_address(dev, net.address, net.prefix) {
        Ok(()) => say!("address {}/{} on {dev} ({how})", net.address, net.prefix),
        Err(e) => say!(
            "cannot set address {}/{} on {dev}: {e}",
            net.address,
            net.prefix
        ),
    }
    if let Some(gw) = net.gateway {
        match add_default_route(dev, gw) {
            Ok(()) => say!("default route via {gw} dev {dev}"),
            Err(e) => say!("cannot add default route via {gw}: {e}"),
        }
    }
    if !net.dns.is_empty() {
        write_resolv_conf(&net.dns);
    }
}

pub fn write_resolv_conf(dns: &[Ipv4Addr]) {
    let path = Path::new("/etc/resolv.conf");
    let _ = std::fs::create_dir_all("/etc");
    // A dangling symlink (e.g. to /run/systemd/...) would make the write fail.
    if path.is_symlink() {
        let _ = std::fs::remove_file(path);
    }
    match std::fs::write(path, resolv_conf(dns)) {
        Ok(()) => say!(
            "DNS {}",
            dns.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) => say!("cannot write /etc/resolv.conf: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::Cmdline;
    use init_contract::Dns;

    #[test]
    fn struct_layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<IfreqAddr>(), 40);
        assert_eq!(std::mem::size_of::<IfreqFlags>(), 40);
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
    }

    fn static_cfg() -> Network {
        Network::Static {
            address: "10.177.0.10/24".into(),
            gateway: Some("10.177.0.1".into()),
            dns: Some(Dns::One("10.0.2.3".into())),
        }
    }

    #[test]
    fn config_alone() {
        let plan = resolve(Some(&static_cfg()), &Cmdline::default()).unwrap();
        assert_eq!(
            plan,
            NetPlan::Static {
                device: None,
                net: StaticNet {
                    address: Ipv4Addr::new(10, 177, 0, 10),
                    prefix: 24,
                    gateway: Some(Ipv4Addr::new(10, 177, 0, 1)),
                    dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
                }
            }
        );
        assert_eq!(resolve(None, &Cmdline::default()).unwrap(), NetPlan::None);
    }

    #[test]
    fn command_line_overrides_config() {
        let cmd = Cmdline::parse("ip=dhcp", "hls.");
        assert!(matches!(
            resolve(Some(&static_cfg()), &cmd).unwrap(),
            NetPlan::Dhcp { .. }
        ));
        // New address on another subnet: the config's gateway is dropped, DNS kept.
        let cmd = Cmdline::parse("hls.ip=10.1.2.3/24", "hls.");
        let NetPlan::Static { net, .. } = resolve(Some(&static_cfg()), &cmd).unwrap() else {
            panic!()
        };
        assert_eq!(net.gateway, None);
        assert_eq!(net.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
        let cmd = Cmdline::parse("hls.ip=10.1.2.3/24 hls.gw=10.1.2.1", "hls.");
        let NetPlan::Static { net, .. } = resolve(Some(&Network::Dhcp), &cmd).unwrap() else {
            panic!()
        };
        assert_eq!(net.gateway, Some(Ipv4Addr::new(10, 1, 2, 1)));
        let cmd = Cmdline::parse("ip=off", "hls.");
        assert_eq!(resolve(Some(&Network::Dhcp), &cmd).unwrap(), NetPlan::None);
    }

    #[test]
    fn resolv_conf_text() {
        assert_eq!(
            resolv_conf(&[Ipv4Addr::new(10, 0, 2, 3)]),
            "# written by imgbuild-init\nnameserver 10.0.2.3\n"
        );
    }
}
