//! The EFI system partition: a FAT image holding systemd-boot as the removable-media loader
//! (`EFI/BOOT/BOOTX64.EFI`), its `loader/` configuration, and the kernel and initramfs
//! (systemd-boot reads only its own partition). The ISO stores it once, as an appended
//! partition that both the GPT and the El Torito UEFI entry point at.

use std::path::Path;

use super::bootcfg;
use super::hadris;
use super::PartError;
use crate::tree::{Content, Entry, Group, Tree};

const MIB: u64 = 1 << 20;

/// FAT size for `content` bytes of files: content + 25% + 1 MiB, rounded up to a MiB.
pub fn size_for(content: u64) -> u64 {
    (content + content / 4 + MIB).div_ceil(MIB) * MIB
}

/// The ESP tree.
pub fn tree(
    systemd_boot: &Path,
    kernel: &Path,
    initrd: &[u8],
    title: &str,
    cmdline: &str,
) -> Result<Tree, PartError> {
    let host = |p: &Path| {
        crate::tree::host_content(p).map_err(|e| PartError::Read(p.display().to_string(), e))
    };
    let mut t = Tree::new();
    let f = |c, mode| Entry::file(c, mode, Group::Base);
    t.insert("EFI/BOOT/BOOTX64.EFI", f(host(systemd_boot)?, 0o644))?;
    t.insert(
        "loader/loader.conf",
        f(Content::bytes(bootcfg::loader_conf(title)), 0o644),
    )?;
    for (name, text) in bootcfg::loader_entries(title, cmdline) {
        t.insert(
            format!("loader/entries/{name}"),
            f(Content::bytes(text), 0o644),
        )?;
    }
    t.insert(bootcfg::ESP_KERNEL, f(host(kernel)?, 0o644))?;
    t.insert(
        bootcfg::ESP_INITRD,
        f(Content::bytes(initrd.to_vec()), 0o644),
    )?;
    Ok(t)
}

/// The FAT image bytes of `t`.
pub fn image(t: &Tree, epoch: i64, seed: u64) -> Result<Vec<u8>, PartError> {
    let time = hadris::time(epoch)?;
    let ht = hadris::convert(t, time)?;
    Ok(hadris::write_fat(
        &ht,
        size_for(t.content_size()),
        "IMGBUILDESP",
        time,
        seed,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_leaves_room_and_is_whole_mebibytes() {
        assert_eq!(size_for(0), MIB);
        assert_eq!(size_for(20 * MIB), 26 * MIB);
        assert_eq!(size_for(20 * MIB + 1) % MIB, 0);
    }
}
