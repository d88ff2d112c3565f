//! `imgbuild inspect IMAGE.iso`: the El Torito boot catalog (BIOS/UEFI entries), the
//! partition tables a USB stick boots from (MBR, GPT), imgbuild's metadata and every file
//! with its mode, owner and size (read back with hadris).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::hadris;

/// One MBR partition entry.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MbrPart {
    pub index: usize,
    pub bootable: bool,
    pub kind: u8,
    pub start: u32,
    pub sectors: u32,
}

/// One GPT partition entry.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GptPart {
    pub index: usize,
    pub type_guid: String,
    pub kind: String,
    pub guid: String,
    pub first: u64,
    pub last: u64,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Partitions {
    pub mbr: Vec<MbrPart>,
    /// The MBR boot code starts like syslinux's isohybrid code.
    pub mbr_boot_code: bool,
    pub gpt_disk_guid: Option<String>,
    pub gpt: Vec<GptPart>,
}

pub fn guid(b: &[u8]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{}",
        u32::from_le_bytes(b[0..4].try_into().unwrap()),
        u16::from_le_bytes(b[4..6].try_into().unwrap()),
        u16::from_le_bytes(b[6..8].try_into().unwrap()),
        b[8],
        b[9],
        b[10..16]
            .iter()
            .map(|x| format!("{x:02X}"))
            .collect::<String>()
    )
}

fn gpt_kind(type_guid: &str) -> &'static str {
    match type_guid {
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "EFI system partition",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "basic data (ISO9660)",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "Linux data",
        _ => "other",
    }
}

/// Parses the MBR (first 512 bytes) and the GPT (header at byte 512, entries after).
pub fn partitions(head: &[u8]) -> Partitions {
    let mut p = Partitions::default();
    if head.len() >= 512 && head[510] == 0x55 && head[511] == 0xAA {
        p.mbr_boot_code = head[..432].iter().any(|&b| b != 0);
        for i in 0..4 {
            let e = &head[446 + i * 16..446 + (i + 1) * 16];
            let kind = e[4];
            if kind == 0 {
                continue;
            }
            p.mbr.push(MbrPart {
                index: i + 1,
                bootable: e[0] == 0x80,
                kind,
                start: u32::from_le_bytes(e[8..12].try_into().unwrap()),
                sectors: u32::from_le_bytes(e[12..16].try_into().unwrap()),
            });
        }
    }
    if head.len() >= 1024 && &head[512..520] == b"EFI PART" {
        let h = &head[512..1024];
        p.gpt_disk_guid = Some(guid(&h[56..72]));
        let lba = u64::from_le_bytes(h[72..80].try_into().unwrap()) as usize;
        let n = u32::from_le_bytes(h[80..84].try_into().unwrap()) as usize;
        let size = u32::from_le_bytes(h[84..88].try_into().unwrap()) as usize;
        for i in 0..n.min(128) {
            // Fields from the image: a corrupt header must not overflow (found by fuzzing).
            let Some(off) = i
                .checked_mul(size)
                .and_then(|o| lba.checked_mul(512)?.checked_add(o))
            else {
                break;
            };
            let Some(e) = off
                .checked_add(size.max(128))
                .and_then(|end| head.get(off..end))
            else {
                break;
            };
            if e[..16].iter().all(|&b| b == 0) {
                continue;
            }
            let type_guid = guid(&e[..16]);
            let name: Vec<u16> = e[56..128]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&c| c != 0)
                .collect();
            p.gpt.push(GptPart {
                index: i + 1,
                kind: gpt_kind(&type_guid).into(),
                type_guid,
                guid: guid(&e[16..32]),
                first: u64::from_le_bytes(e[32..40].try_into().unwrap()),
                last: u64::from_le_bytes(e[40..48].try_into().unwrap()),
                name: String::from_utf16_lossy(&name),
            });
        }
    }
    p
}

#[derive(Debug, Serialize)]
struct Report {
    file: String,
    size: u64,
    #[serde(flatten)]
    listing: hadris::IsoListing,
    partitions: Partitions,
    meta: Option<super::IsoMeta>,
}

fn mode_string(kind: &str, mode: Option<u32>) -> String {
    let t = match kind {
        "dir" => 'd',
        "symlink" => 'l',
        "char" => 'c',
        "block" => 'b',
        "fifo" => 'p',
        "socket" => 's',
        _ => '-',
    };
    let Some(m) = mode else {
        return format!("{t}?????????");
    };
    let mut s = String::from(t);
    for (i, c) in ['r', 'w', 'x', 'r', 'w', 'x', 'r', 'w', 'x']
        .iter()
        .enumerate()
    {
        let bit = 0o400 >> i;
        s.push(if m & bit != 0 { *c } else { '-' });
    }
    s
}

/// Prints what an ISO holds.
pub fn run(path: &Path, json: bool) -> Result<()> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let size = f.metadata()?.len();
    let mut head = vec![0u8; 64 * 1024];
    let n = f.read(&mut head)?;
    head.truncate(n);
    f.seek(SeekFrom::Start(0))?;
    let listing = hadris::read_iso(path).map_err(super::IsoError::from)?;
    let meta = super::read_meta(path).ok().flatten();
    let r = Report {
        file: path.display().to_string(),
        size,
        partitions: partitions(&head),
        listing,
        meta,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let l = &r.listing;
    println!("{}: ISO9660 image, {} bytes", r.file, r.size);
    println!("  volume id   {}", l.volume_id);
    println!("  trees       {}", l.trees.join(", "));
    if let Some(m) = &r.meta {
        println!(
            "  profile     {} ({}), ports {:?}, memory {}, kernel {}",
            m.profile, m.image, m.ports, m.memory, m.kernel
        );
        println!("  cmdline     {}", m.cmdline);
    }
    println!("boot catalog:");
    if l.boot.is_empty() {
        println!("  (none: not bootable from CD)");
    }
    for b in &l.boot {
        println!(
            "  {:4} {} {}, {} sectors loaded from block {} (image {} bytes at byte {})",
            b.platform,
            b.emulation,
            if b.bootable {
                "bootable"
            } else {
                "not bootable"
            },
            b.sectors,
            b.load_block,
            b.len,
            b.offset
        );
    }
    let p = &r.partitions;
    println!("partitions:");
    if p.mbr.is_empty() && p.gpt.is_empty() {
        println!("  (none: not bootable from a disk)");
    }
    for m in &p.mbr {
        println!(
            "  MBR {}: type 0x{:02x}{}, sectors {}..{} ({} bytes)",
            m.index,
            m.kind,
            if m.bootable { " bootable" } else { "" },
            m.start,
            m.start as u64 + m.sectors as u64,
            m.sectors as u64 * 512
        );
    }
    if !p.mbr.is_empty() {
        println!(
            "  MBR boot code: {}",
            if p.mbr_boot_code {
                "present (isohybrid)"
            } else {
                "none"
            }
        );
    }
    if let Some(g) = &p.gpt_disk_guid {
        println!("  GPT disk {g}");
    }
    for g in &p.gpt {
        println!(
            "  GPT {}: {} ({}), sectors {}..{}, {:?}, {}",
            g.index, g.kind, g.type_guid, g.first, g.last, g.name, g.guid
        );
    }
    println!("files ({}):", l.files.len());
    for fe in &l.files {
        let owner = match (fe.uid, fe.gid) {
            (Some(u), Some(g)) => format!("{u}:{g}"),
            _ => "-".into(),
        };
        let target = fe
            .target
            .as_ref()
            .map(|t| format!(" -> {t}"))
            .unwrap_or_default();
        println!(
            "  {} {:>9} {:>10} {}{}",
            mode_string(&fe.kind, fe.mode),
            owner,
            fe.size,
            fe.path,
            target
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_print_in_mixed_endian_form() {
        // The EFI system partition type GUID as stored on disk.
        let b = [
            0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
            0xC9, 0x3B,
        ];
        assert_eq!(guid(&b), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(gpt_kind(&guid(&b)), "EFI system partition");
    }

    #[test]
    fn mbr_entries_are_read() {
        let mut h = vec![0u8; 512];
        h[510] = 0x55;
        h[511] = 0xAA;
        h[446] = 0x80;
        h[446 + 4] = 0x17;
        h[446 + 12..446 + 16].copy_from_slice(&100u32.to_le_bytes());
        let p = partitions(&h);
        assert_eq!(
            p.mbr,
            [MbrPart {
                index: 1,
                bootable: true,
                kind: 0x17,
                start: 0,
                sectors: 100
            }]
        );
        assert!(p.gpt.is_empty());
        assert_eq!(mode_string("dir", Some(0o755)), "drwxr-xr-x");
    }
}
