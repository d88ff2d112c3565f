//! What a booted image (ISO or MicroVM) gets from its profile, with the defaults in one
//! place: the guest memory and the guest network when the profile has no `[iso]` table.

use crate::profile::{self, Profile};

/// Guest memory when neither the profile (`iso.memory`) nor `imgbuild boot --memory` says.
pub const DEFAULT_MEMORY: &str = "512M";

/// The profile's guest memory (QEMU's `-m`).
pub fn memory(p: &Profile) -> String {
    p.iso
        .as_ref()
        .map_or_else(|| DEFAULT_MEMORY.into(), |i| i.memory.clone())
}

/// The profile's guest network, as the init contract (and `imgbuild.json`) carry it.
pub fn network(p: &Profile) -> init_contract::Network {
    match p.iso.as_ref().map(|i| &i.network) {
        Some(profile::Network::Static {
            address,
            gateway,
            dns,
        }) => init_contract::Network::Static {
            address: address.clone(),
            gateway: Some(gateway.clone()),
            dns: dns.clone().map(init_contract::Dns::One),
        },
        _ => init_contract::Network::Dhcp,
    }
}
