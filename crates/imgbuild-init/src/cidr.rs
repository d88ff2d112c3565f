//! IPv4 prefixes: prefix length ↔ netmask, and `ADDRESS/PREFIX` text, for the kernel command
//! line (`cmdline`), the config (`config`), DHCP leases (`dhcp`) and the interface set-up
//! (`net`).

use std::net::Ipv4Addr;

/// Prefix length → netmask.
pub fn prefix_to_mask(prefix: u8) -> Ipv4Addr {
    if prefix == 0 {
        Ipv4Addr::UNSPECIFIED
    } else {
        Ipv4Addr::from(u32::MAX << (32 - u32::from(prefix.min(32))))
    }
}

/// Netmask → prefix length, if the mask is contiguous.
pub fn mask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let p = m.leading_ones();
    (m.checked_shl(p).unwrap_or(0) == 0).then_some(p as u8)
}

/// `10.1.2.3/24` → (address, prefix).
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| "expected ADDRESS/PREFIX, e.g. 10.0.2.15/24".to_string())?;
    let addr: Ipv4Addr = a.parse().map_err(|_| format!("bad IPv4 address {a:?}"))?;
    let prefix: u8 = p
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("bad prefix length {p:?}"))?;
    Ok((addr, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(prefix_to_mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(prefix_to_mask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(prefix_to_mask(32), Ipv4Addr::BROADCAST);
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 240, 0)), Some(20));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(mask_to_prefix(Ipv4Addr::UNSPECIFIED), Some(0));
        assert_eq!(
            parse_cidr("10.0.2.15/24"),
            Ok((Ipv4Addr::new(10, 0, 2, 15), 24))
        );
        assert!(parse_cidr("10.0.2.15").is_err());
        assert!(parse_cidr("10.0.2.15/33").is_err());
    }
}
