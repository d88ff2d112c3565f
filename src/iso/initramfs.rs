//! The initramfs: the whole running system of an imgbuild ISO. `/init` is imgbuild-init,
//! `/etc/imgbuild/init.json` tells it what to start (the init contract, crates/init-contract,
//! docs/INIT.md), the base tree gives accounts and the filesystem skeleton, the service
//! binary sits at `/bin/<name>`,
//! and the kernel modules the boot needs sit under `/lib/modules/<kver>/`. Written as a newc
//! cpio with fixed times, zstd- (default) or gzip-compressed, so rebuilds are identical.

use std::io::Write;
use std::path::Path;

use init_contract::{Config, CONFIG_PATH};

use super::hadris;
use super::modules::Module;
use super::PartError;
use crate::tree::{Content, Entry, Group, Kind, Tree};

/// The initramfs tree: base tree + /init + service + config + modules + device nodes.
pub fn tree(
    mut t: Tree,
    init: &Path,
    service_name: &str,
    service: &Path,
    config: &Config,
    kver: &str,
    modules: &[Module],
) -> Result<Tree, PartError> {
    let host = |p: &Path| {
        crate::tree::host_content(p).map_err(|e| PartError::Read(p.display().to_string(), e))
    };
    let payload = |n: &str| Group::Payload(n.into());
    t.replace(
        "init",
        Entry::file(program(init)?, 0o755, payload("imgbuild-init")),
    )?;
    t.replace(
        format!("bin/{service_name}"),
        Entry::file(program(service)?, 0o755, payload(service_name)),
    )?;
    let json = serde_json::to_vec_pretty(config).expect("init config serialises");
    t.replace(
        CONFIG_PATH,
        Entry::file(Content::bytes(json), 0o644, Group::Config),
    )?;
    for m in modules {
        t.replace(
            format!("lib/modules/{kver}/{}", m.rel),
            Entry::file(host(&m.host)?, 0o644, Group::Base),
        )?;
    }
    // The kernel opens /dev/console for init's stdio before anything is mounted.
    for d in ["dev", "proc", "sys", "run", "tmp"] {
        if t.get(d).is_none() {
            let mode = if d == "tmp" { 0o1777 } else { 0o755 };
            t.insert(d, Entry::dir(mode, Group::Base))?;
        }
    }
    t.replace(
        "dev/console",
        Entry {
            kind: Kind::CharDevice { major: 5, minor: 1 },
            mode: 0o600,
            uid: 0,
            gid: 0,
            group: Group::Base,
        },
    )?;
    Ok(t)
}

/// A payload program as it goes into the initramfs: only the part the kernel loads (every
/// segment of the program headers), without section headers, symbols and debug info. The
/// initramfs lives in RAM and is read by the boot loader through the firmware, so a debug
/// build's 40 MB of DWARF would cost memory and seconds of boot for nothing.
fn program(path: &Path) -> Result<Content, PartError> {
    let bytes = std::fs::read(path).map_err(|e| PartError::Read(path.display().to_string(), e))?;
    Ok(match loaded_part(&bytes) {
        Some(stripped) => Content::bytes(stripped),
        None => Content::bytes(bytes),
    })
}

/// The bytes of a 64-bit little-endian ELF file up to the end of its last segment, with
/// the section header table dropped; `None` when that saves nothing or the file is not
/// such an ELF.
pub fn loaded_part(b: &[u8]) -> Option<Vec<u8>> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?) as usize);
    let u64_at = |o: usize| Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?) as usize);
    if !b.starts_with(b"\x7fELF") || b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        return None;
    }
    let phoff = u64_at(0x20)?;
    let phentsize = u16_at(0x36)?;
    let phnum = u16_at(0x38)?;
    let mut end = phoff.checked_add(phentsize.checked_mul(phnum)?)?;
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let offset = u64_at(o + 8)?;
        let filesz = u64_at(o + 32)?;
        end = end.max(offset.checked_add(filesz)?);
    }
    if end >= b.len() {
        return None;
    }
    let mut out = b[..end].to_vec();
    out[0x28..0x30].fill(0); // e_shoff
    out[0x3c..0x40].fill(0); // e_shnum, e_shstrndx
    Some(out)
}

/// How the initramfs is compressed (the Debian kernel has RD_GZIP and RD_ZSTD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compression {
    Gzip,
    /// zstd level 3: smaller than gzip -6 and ten times faster to write; the kernel unpacks
    /// it faster too.
    #[default]
    Zstd,
}

/// The compressed initramfs bytes.
pub fn write(t: &Tree, epoch: i64, compression: Compression) -> Result<Vec<u8>, PartError> {
    let time = hadris::time(epoch)?;
    let ht = hadris::convert(t, time)?;
    let cap = t.content_size() as usize / 2;
    match compression {
        Compression::Gzip => {
            // Header mtime 0 and no file name: the bytes depend only on the content.
            let gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::with_capacity(cap), flate2::Compression::new(6));
            let gz = finish_buf(hadris::write_cpio(buffered(gz), &ht, time)?)?;
            gz.finish().map_err(PartError::Compress)
        }
        Compression::Zstd => {
            let mut z = zstd::stream::Encoder::new(Vec::with_capacity(cap), 3)
                .map_err(PartError::Compress)?;
            // A checksum lets the kernel notice a damaged image.
            z.include_checksum(true).map_err(PartError::Compress)?;
            let z = finish_buf(hadris::write_cpio(buffered(z), &ht, time)?)?;
            z.finish().map_err(PartError::Compress)
        }
    }
}

fn buffered<W: Write>(w: W) -> std::io::BufWriter<W> {
    std::io::BufWriter::with_capacity(1 << 20, w)
}

fn finish_buf<W: Write>(b: std::io::BufWriter<W>) -> Result<W, PartError> {
    let mut w = b
        .into_inner()
        .map_err(|e| PartError::Compress(e.into_error()))?;
    w.flush().map_err(PartError::Compress)?;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stripped_program_still_runs() {
        use std::os::unix::fs::PermissionsExt;
        let exe = std::env::current_exe().unwrap();
        let full = std::fs::read(&exe).unwrap();
        let Some(small) = loaded_part(&full) else {
            return; // nothing past the segments to drop
        };
        assert!(small.len() < full.len());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stripped");
        std::fs::write(&p, &small).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = std::process::Command::new(&p)
            .args(["--list", "a_stripped_program_still_runs"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("a_stripped_program_still_runs"));
        assert!(loaded_part(b"#!/bin/sh\n").is_none());
    }
}
