//! A minimal DHCPv4 client (RFC 2131): DISCOVER → OFFER → REQUEST → ACK over a UDP socket
//! bound to port 68 on one interface. No renewal: QEMU user networking leases for a day and
//! never takes an address back; a boot that outlives the lease keeps its address.

use crate::cidr::mask_to_prefix;
use crate::net::StaticNet;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

const MAGIC: [u8; 4] = [99, 130, 83, 99];
pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;

/// A BOOTP/DHCP message, just the fields this client uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub op: u8,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub msg_type: u8,
    pub subnet_mask: Option<Ipv4Addr>,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub requested_ip: Option<Ipv4Addr>,
    pub lease_secs: Option<u32>,
    pub hostname: Option<String>,
}

impl Packet {
    /// A client message (DISCOVER or REQUEST) with the broadcast flag set.
    pub fn client(msg_type: u8, xid: u32, mac: [u8; 6]) -> Packet {
        Packet {
            op: 1,
            xid,
            flags: 0x8000,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: mac,
            msg_type,
            subnet_mask: None,
            routers: vec![],
            dns: vec![],
            server_id: None,
            requested_ip: None,
            lease_secs: None,
            hostname: None,
        }
    }

    /// Wire bytes, padded to the classic 548-byte BOOTP size some servers expect.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 236];
        b[0] = self.op;
        b[1] = 1; // ethernet
        b[2] = 6;
        b[4..8].copy_from_slice(&self.xid.to_be_bytes());
        b[10..12].copy_from_slice(&self.flags.to_be_bytes());
        b[12..16].copy_from_slice(&self.ciaddr.octets());
        b[16..20].copy_from_slice(&self.yiaddr.octets());
        b[20..24].copy_from_slice(&self.siaddr.octets());
        b[28..34].copy_from_slice(&self.chaddr);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&[53, 1, self.msg_type]);
        let mut addr_opt = |code: u8, ips: &[Ipv4Addr]| {
            if !ips.is_empty() {
                b.push(code);
                b.push((ips.len() * 4) as u8);
                for ip in ips {
                    b.extend_from_slice(&ip.octets());
                }
            }
        };
        addr_opt(1, self.subnet_mask.as_slice());
        addr_opt(3, &self.routers);
        addr_opt(6, &self.dns);
        addr_opt(50, self.requested_ip.as_slice());
        addr_opt(54, self.server_id.as_slice());
        if let Some(l) = self.lease_secs {
            b.extend_from_slice(&[51, 4]);
            b.extend_from_slice(&l.to_be_bytes());
        }
        if let Some(h) = &self.hostname {
            let h = &h.as_bytes()[..h.len().min(255)];
            b.extend_from_slice(&[12, h.len() as u8]);
            b.extend_from_slice(h);
        }
        if self.op == 1 {
            // Parameter request list: mask, router, DNS, hostname, domain, lease, server id.
            b.extend_from_slice(&[55, 7, 1, 3, 6, 12, 15, 51, 54]);
        }
        b.push(255);
        if b.len() < 548 {
            b.resize(548, 0);
        }
        b
    }

    /// Parse wire bytes; `None` for anything that is not a DHCP message.
    pub fn decode(b: &[u8]) -> Option<Packet> {
        if b.len() < 240 || b[236..240] != MAGIC || b[1] != 1 || b[2] != 6 {
            return None;
        }
        let ip = |o: usize| Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]);
        // The header's fields over a message without options, which the loop below reads.
        let mut p = Packet {
            op: b[0],
            flags: u16::from_be_bytes([b[10], b[11]]),
            ciaddr: ip(12),
            yiaddr: ip(16),
            siaddr: ip(20),
            ..Packet::client(
                0,
                u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                b[28..34].try_into().ok()?,
            )
        };
        let mut i = 240;
        while i < b.len() {
            let code = b[i];
            if code == 0 {
                i += 1;
                continue;
            }
            if code == 255 || i + 1 >= b.len() {
                break;
            }
            let len = b[i + 1] as usize;
            let v = b.get(i + 2..i + 2 + len)?;
            let ips = || {
                v.chunks_exact(4)
                    .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
            };
            match code {
                53 if len == 1 => p.msg_type = v[0],
                1 if len == 4 => p.subnet_mask = ips().next(),
                3 => p.routers = ips().collect(),
                6 => p.dns = ips().collect(),
                50 if len == 4 => p.requested_ip = ips().next(),
                54 if len == 4 => p.server_id = ips().next(),
                51 if len == 4 => p.lease_secs = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
                12 => p.hostname = Some(String::from_utf8_lossy(v).into_owned()),
                _ => {}
            }
            i += 2 + len;
        }
        (p.msg_type != 0).then_some(p)
    }

    /// The configuration an ACK grants.
    pub fn lease(&self) -> StaticNet {
        StaticNet {
            address: self.yiaddr,
            prefix: self.subnet_mask.and_then(mask_to_prefix).unwrap_or(24),
            gateway: self.routers.first().copied(),
            dns: self.dns.clone(),
        }
    }
}

/// Why no lease was obtained.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("socket on {dev}: {source}")]
    Socket { dev: String, source: std::io::Error },
    #[error("no {0} within {1:?}")]
    Timeout(&'static str, Duration),
    #[error("server refused the request (NAK)")]
    Nak,
}

fn xid_from(mac: [u8; 6]) -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]) ^ t ^ std::process::id()
}

fn open(dev: &str) -> std::io::Result<UdpSocket> {
    use nix::sys::socket::{setsockopt, sockopt};
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68))?;
    sock.set_broadcast(true)?;
    setsockopt(&sock, sockopt::BindToDevice, &std::ffi::OsString::from(dev))
        .map_err(std::io::Error::from)?;
    Ok(sock)
}

/// Wait until `deadline` for a reply of one of `types` to `xid`.
fn receive(sock: &UdpSocket, xid: u32, types: &[u8], deadline: Instant) -> Option<Packet> {
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                if let Some(p) = Packet::decode(&buf[..n]) {
                    if p.op == 2 && p.xid == xid && types.contains(&p.msg_type) {
                        return Some(p);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Run DISCOVER/OFFER/REQUEST/ACK on `dev`; gives up after about `timeout`.
pub fn obtain(dev: &str, mac: [u8; 6], timeout: Duration) -> Result<Packet, DhcpError> {
    let sock = open(dev).map_err(|source| DhcpError::Socket {
        dev: dev.to_string(),
        source,
    })?;
    let dest = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let start = Instant::now();
    let xid = xid_from(mac);
    let per_try = Duration::from_millis(1500);
    while start.elapsed() < timeout {
        let discover = Packet::client(DISCOVER, xid, mac);
        let _ = sock.send_to(&discover.encode(), dest);
        let deadline = (Instant::now() + per_try).min(start + timeout);
        let Some(offer) = receive(&sock, xid, &[OFFER], deadline) else {
            continue;
        };
        let mut req = Packet::client(REQUEST, xid, mac);
        req.requested_ip = Some(offer.yiaddr);
        req.server_id = offer.server_id.or(Some(offer.siaddr));
        let _ = sock.send_to(&req.encode(), dest);
        let deadline = (Instant::now() + per_try * 2).min(start + timeout + per_try);
        match receive(&sock, xid, &[ACK, NAK], deadline) {
            Some(p) if p.msg_type == ACK => return Ok(p),
            Some(_) => return Err(DhcpError::Nak),
            None => return Err(DhcpError::Timeout("ACK", per_try * 2)),
        }
    }
    Err(DhcpError::Timeout("OFFER", timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    #[test]
    fn discover_layout() {
        let b = Packet::client(DISCOVER, 0xdeadbeef, MAC).encode();
        assert_eq!(b.len(), 548);
        assert_eq!(&b[0..4], &[1, 1, 6, 0]);
        assert_eq!(&b[4..8], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&b[10..12], &[0x80, 0]);
        assert_eq!(&b[28..34], &MAC);
        assert_eq!(&b[236..243], &[99, 130, 83, 99, 53, 1, 1]);
    }

    #[test]
    fn round_trip() {
        let mut p = Packet::client(REQUEST, 42, MAC);
        p.requested_ip = Some(Ipv4Addr::new(10, 0, 2, 15));
        p.server_id = Some(Ipv4Addr::new(10, 0, 2, 2));
        let q = Packet::decode(&p.encode()).unwrap();
        assert_eq!(p, q);

        let mut ack = Packet::client(ACK, 42, MAC);
        ack.op = 2;
        ack.yiaddr = Ipv4Addr::new(10, 0, 2, 15);
        ack.subnet_mask = Some(Ipv4Addr::new(255, 255, 255, 0));
        ack.routers = vec![Ipv4Addr::new(10, 0, 2, 2)];
        ack.dns = vec![Ipv4Addr::new(10, 0, 2, 3)];
        ack.lease_secs = Some(86400);
        ack.hostname = Some("guest".into());
        let back = Packet::decode(&ack.encode()).unwrap();
        assert_eq!(back, ack);
        assert_eq!(back.lease(), crate::net::qemu_fallback());
    }

    /// An OFFER captured from QEMU 7.2 user-mode networking (`-object filter-dump`) while
    /// imgbuild-init booted: the BOOTP header and options up to the end option; the rest of
    /// the 548 bytes is zeros.
    const CAPTURED_OFFER: &str = concat!(
        "02010600208c0dbc00000000000000000a00020f0a000202000000005254001234560000",
        "0000000000000000"
    );
    const CAPTURED_OPTIONS: &str =
        "6382536335010236040a0002020104ffffff0003040a00020206040a000203330400015180ff";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn slirp_offer() -> Vec<u8> {
        let mut b = hex(CAPTURED_OFFER);
        b.resize(236, 0);
        b.extend(hex(CAPTURED_OPTIONS));
        b.resize(548, 0);
        b
    }

    #[test]
    fn qemu_offer_parses() {
        let p = Packet::decode(&slirp_offer()).unwrap();
        assert_eq!(p.op, 2);
        assert_eq!(p.msg_type, OFFER);
        assert_eq!(p.xid, 0x208c0dbc);
        assert_eq!(p.chaddr, MAC);
        assert_eq!(p.yiaddr, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(p.server_id, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(p.lease_secs, Some(86400));
        assert_eq!(p.lease(), crate::net::qemu_fallback());
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(Packet::decode(&[0u8; 100]).is_none());
        let mut b = slirp_offer();
        b[236] = 0;
        assert!(Packet::decode(&b).is_none());
        // An option running past the end.
        let mut b = slirp_offer();
        b.truncate(243);
        b.extend_from_slice(&[6, 8, 10, 0]);
        assert!(Packet::decode(&b).is_none());
    }
}
