//! A minimal DHCPv4 client (RFC 2131): DISCOVER → OFFER → REQUEST → ACK over a UDP socket
//! bound to port 68 on one interface. No renewal: QEMU user networking leases for a day and
//! never takes an address back; a boot that outlives the lease keeps its address. The
//! messages are encoded and decoded by `dhcproto`; the exchange, socket and timeouts are here.

use crate::net::{mask_to_prefix, StaticNet};
use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

/// The options cookie that opens the options field of every DHCP message.
const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// The classic BOOTP message size; some servers drop anything shorter.
const BOOTP_SIZE: usize = 548;

/// An all-zero BOOTP header followed by the magic cookie: a message with no fields set.
fn blank_message() -> Message {
    let mut b = [0u8; 240];
    b[236..].copy_from_slice(&MAGIC);
    // 236 header bytes, the cookie and no options: decoding cannot fail (tests run it).
    Message::decode(&mut Decoder::new(&b)).expect("a blank BOOTP header decodes")
}

/// A client message (DISCOVER or REQUEST) from `mac` with the broadcast flag set, asking for
/// mask, router, DNS, hostname, domain, lease time and server id.
///
/// Built from [`blank_message`], not `Message::new`/`default`: those draw a random xid from
/// the kernel's RNG, and `getrandom` blocks PID 1 of a fresh VM until the RNG is seeded
/// (minutes under QEMU TCG without virtio-rng). The xid comes from [`xid_from`] instead.
pub fn client_message(kind: MessageType, xid: u32, mac: [u8; 6]) -> Message {
    let mut m = blank_message();
    m.set_opcode(Opcode::BootRequest)
        .set_htype(HType::Eth)
        .set_xid(xid)
        .set_chaddr(&mac);
    m.set_flags(Flags::default().set_broadcast());
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::Hostname,
        OptionCode::DomainName,
        OptionCode::AddressLeaseTime,
        OptionCode::ServerIdentifier,
    ]));
    m
}

/// Wire bytes, padded to the classic 548-byte BOOTP size some servers expect.
pub fn encode(m: &Message) -> Vec<u8> {
    let mut b = Vec::with_capacity(BOOTP_SIZE);
    // Encoding into a Vec only fails for values that do not fit their length byte, which the
    // messages built here never hold; an empty datagram is then simply not answered.
    if m.encode(&mut Encoder::new(&mut b)).is_err() {
        return Vec::new();
    }
    if b.len() < BOOTP_SIZE {
        b.resize(BOOTP_SIZE, 0);
    }
    b
}

/// Parse wire bytes; `None` for anything that is not an Ethernet DHCP message (no magic
/// cookie, or no message type). Options after one that does not parse are dropped.
pub fn decode(b: &[u8]) -> Option<Message> {
    if b.get(236..240) != Some(&MAGIC[..]) {
        return None;
    }
    let m = Message::decode(&mut Decoder::new(b)).ok()?;
    (m.htype() == HType::Eth && m.hlen() == 6 && m.opts().msg_type().is_some()).then_some(m)
}

/// What an ACK grants: the address configuration and the server that granted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub net: StaticNet,
    pub server: Ipv4Addr,
}

/// The server a reply came from: its server-id option, else the BOOTP `siaddr`.
pub fn server_of(m: &Message) -> Ipv4Addr {
    match m.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => *ip,
        _ => m.siaddr(),
    }
}

/// The configuration an ACK (or OFFER) grants; a /24 when it names no mask.
pub fn lease(m: &Message) -> Lease {
    let opts = m.opts();
    let ips = |code| match opts.get(code) {
        Some(DhcpOption::Router(v) | DhcpOption::DomainNameServer(v)) => v.clone(),
        _ => vec![],
    };
    let prefix = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => mask_to_prefix(*mask),
        _ => None,
    };
    Lease {
        net: StaticNet {
            address: m.yiaddr(),
            prefix: prefix.unwrap_or(24),
            gateway: ips(OptionCode::Router).first().copied(),
            dns: ips(OptionCode::DomainNameServer),
        },
        server: server_of(m),
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
fn receive(
    sock: &UdpSocket,
    xid: u32,
    types: &[MessageType],
    deadline: Instant,
) -> Option<Message> {
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                if let Some(m) = decode(&buf[..n]) {
                    let kind = m.opts().msg_type();
                    if m.opcode() == Opcode::BootReply
                        && m.xid() == xid
                        && kind.is_some_and(|k| types.contains(&k))
                    {
                        return Some(m);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Run DISCOVER/OFFER/REQUEST/ACK on `dev`; gives up after about `timeout`.
pub fn obtain(dev: &str, mac: [u8; 6], timeout: Duration) -> Result<Lease, DhcpError> {
    let sock = open(dev).map_err(|source| DhcpError::Socket {
        dev: dev.to_string(),
        source,
    })?;
    let dest = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let start = Instant::now();
    let xid = xid_from(mac);
    let per_try = Duration::from_millis(1500);
    while start.elapsed() < timeout {
        let discover = client_message(MessageType::Discover, xid, mac);
        let _ = sock.send_to(&encode(&discover), dest);
        let deadline = (Instant::now() + per_try).min(start + timeout);
        let Some(offer) = receive(&sock, xid, &[MessageType::Offer], deadline) else {
            continue;
        };
        let mut req = client_message(MessageType::Request, xid, mac);
        let opts = req.opts_mut();
        opts.insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
        opts.insert(DhcpOption::ServerIdentifier(server_of(&offer)));
        let _ = sock.send_to(&encode(&req), dest);
        let deadline = (Instant::now() + per_try * 2).min(start + timeout + per_try);
        let answers = [MessageType::Ack, MessageType::Nak];
        match receive(&sock, xid, &answers, deadline) {
            Some(m) if m.opts().has_msg_type(MessageType::Ack) => return Ok(lease(&m)),
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

    /// What imgbuild-init broadcasts first, byte for byte: a regression in how the message is
    /// built or encoded shows here, not only against a live server.
    #[test]
    fn discover_bytes() {
        let b = encode(&client_message(MessageType::Discover, 0xdeadbeef, MAC));
        assert_eq!(b.len(), 548);
        let mut want = vec![1, 1, 6, 0, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0x80, 0];
        want.resize(28, 0); // ciaddr, yiaddr, siaddr, giaddr
        want.extend_from_slice(&MAC);
        want.resize(236, 0); // rest of chaddr, sname, file
        want.extend_from_slice(&MAGIC);
        want.extend_from_slice(&[53, 1, 1]); // DHCPDISCOVER
        want.extend_from_slice(&[55, 7, 1, 3, 6, 12, 15, 51, 54]); // parameter request list
        want.push(255);
        want.resize(548, 0);
        assert_eq!(b, want);
    }

    #[test]
    fn round_trip() {
        let mut req = client_message(MessageType::Request, 42, MAC);
        req.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 2, 15)));
        req.opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
        let b = encode(&req);
        assert_eq!(&b[240..252], &[50, 4, 10, 0, 2, 15, 53, 1, 3, 54, 4, 10]);
        assert_eq!(decode(&b), Some(req));

        let mut ack = client_message(MessageType::Ack, 42, MAC);
        ack.set_opcode(Opcode::BootReply)
            .set_yiaddr(Ipv4Addr::new(10, 0, 2, 15));
        let opts = ack.opts_mut();
        opts.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        opts.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        opts.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        opts.insert(DhcpOption::AddressLeaseTime(86400));
        opts.insert(DhcpOption::Hostname("guest".into()));
        let back = decode(&encode(&ack)).unwrap();
        assert_eq!(back, ack);
        // No server-id option: the server is the BOOTP siaddr.
        assert_eq!(lease(&back).net, crate::net::qemu_fallback());
        assert_eq!(lease(&back).server, Ipv4Addr::UNSPECIFIED);
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
        let m = decode(&slirp_offer()).unwrap();
        assert_eq!(m.opcode(), Opcode::BootReply);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(m.xid(), 0x208c0dbc);
        assert_eq!(m.chaddr(), &MAC);
        assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(
            m.opts().get(OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(86400))
        );
        let l = lease(&m);
        assert_eq!(l.server, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(l.net, crate::net::qemu_fallback());
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(decode(&[0u8; 100]).is_none());
        assert!(decode(&[0u8; 548]).is_none());
        let mut b = slirp_offer();
        b[236] = 0; // magic cookie
        assert!(decode(&b).is_none());
        let mut b = slirp_offer();
        b[1] = 6; // IEEE 802 hardware type
        assert!(decode(&b).is_none());
        // No message type option: BOOTP, not DHCP.
        let mut b = slirp_offer();
        b[240] = 0; // option 53 becomes pad bytes and a stray length
        b[241] = 0;
        b[242] = 0;
        assert!(decode(&b).is_none());
    }

    /// An option running past the end of the datagram: what came before it is kept, it and
    /// anything after are dropped (dhcproto stops there), so no half-read address is taken.
    #[test]
    fn truncated_option_is_dropped() {
        let mut b = slirp_offer();
        b.truncate(243);
        b.extend_from_slice(&[6, 8, 10, 0]);
        let m = decode(&b).unwrap();
        assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(lease(&m).net.dns, Vec::<Ipv4Addr>::new());
    }
}
