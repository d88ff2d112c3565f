//! The uncompressed kernel inside a bzImage, for `imgbuild microvm --pvh`. QEMU boots an ELF
//! `vmlinux` that carries the Xen `PHYS32_ENTRY` note by entering it in 32-bit protected
//! mode at that entry: no real-mode setup code and no self-decompression of the kernel,
//! which under TCG costs about 0.3 s of a 2.4-second boot (docs/booting.md "The unpacked
//! kernel"). The price: without the real-mode setup the kernel learns nothing of the VGA
//! text screen, so it has the serial console only.
//!
//! Pure functions over bytes: [`pvh_kernel`] takes the bzImage and returns the ELF, or says
//! why this kernel cannot be booted that way.

use std::io::Read;

/// Why a bzImage does not give a PVH-bootable kernel.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VmlinuxError {
    #[error("not a bzImage (no HdrS header of boot protocol 2.08 or later)")]
    NotBzImage,
    #[error("the compressed kernel lies outside the file")]
    Truncated,
    #[error("the kernel is compressed with {0}, which imgbuild does not unpack (gzip, zstd and lz4 are)")]
    Compression(&'static str),
    #[error("unpacking the {method} kernel: {reason}")]
    Unpack {
        method: &'static str,
        reason: String,
    },
    #[error("the unpacked kernel is not a 64-bit ELF")]
    NotElf,
    #[error("the kernel has no PVH entry point (Xen note PHYS32_ENTRY; CONFIG_PVH)")]
    NoPvhEntry,
}

/// The ELF kernel inside `bzimage`, when it can be booted through its PVH entry point.
pub fn pvh_kernel(bzimage: &[u8]) -> Result<Vec<u8>, VmlinuxError> {
    let payload = payload(bzimage)?;
    let elf = unpack(payload)?;
    if !has_pvh_entry(&elf)? {
        return Err(VmlinuxError::NoPvhEntry);
    }
    Ok(elf)
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The compressed kernel of a bzImage (boot protocol: `payload_offset`/`payload_length`,
/// counted from the start of the protected-mode code after the setup sectors).
fn payload(bz: &[u8]) -> Result<&[u8], VmlinuxError> {
    let magic = bz.get(0x202..0x206).ok_or(VmlinuxError::NotBzImage)?;
    let version = le_u16(bz, 0x206).ok_or(VmlinuxError::NotBzImage)?;
    if magic != b"HdrS" || version < 0x0208 {
        return Err(VmlinuxError::NotBzImage);
    }
    let setup_sects = match bz[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let offset = le_u32(bz, 0x248).ok_or(VmlinuxError::NotBzImage)? as usize;
    let length = le_u32(bz, 0x24c).ok_or(VmlinuxError::NotBzImage)? as usize;
    let start = (setup_sects + 1) * 512 + offset;
    bz.get(start..start + length).ok_or(VmlinuxError::Truncated)
}

/// Unpacks the payload by its magic number. The kernel build appends the unpacked size (4
/// bytes) after the compressed stream; every decoder here stops at the stream's own end.
fn unpack(payload: &[u8]) -> Result<Vec<u8>, VmlinuxError> {
    let fail = |method: &'static str| {
        move |e: std::io::Error| VmlinuxError::Unpack {
            method,
            reason: e.to_string(),
        }
    };
    let mut out = Vec::new();
    match payload {
        [0x1f, 0x8b, ..] => {
            flate2::read::GzDecoder::new(payload)
                .read_to_end(&mut out)
                .map_err(fail("gzip"))?;
        }
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            zstd::stream::read::Decoder::with_buffer(payload)
                .map_err(fail("zstd"))?
                .single_frame()
                .read_to_end(&mut out)
                .map_err(fail("zstd"))?;
        }
        [0x02, 0x21, 0x4c, 0x18, ..] => out = unpack_lz4_legacy(payload)?,
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => return Err(VmlinuxError::Compression("xz")),
        [b'B', b'Z', b'h', ..] => return Err(VmlinuxError::Compression("bzip2")),
        [0x5d, 0, 0, ..] => return Err(VmlinuxError::Compression("lzma")),
        [0x89, b'L', b'Z', b'O', ..] => return Err(VmlinuxError::Compression("lzo")),
        _ => return Err(VmlinuxError::Compression("an unknown method")),
    }
    Ok(out)
}

/// The magic number that starts an lz4 legacy frame (`lz4 -l`, what the kernel uses).
const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
/// An lz4 legacy block unpacks to at most 8 MiB.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// The lz4 legacy format: the magic, then blocks of (compressed size: u32 LE, lz4 block),
/// each unpacking to at most 8 MiB; a repeated magic starts a new frame. What follows the
/// last block (the kernel's appended size) reads as a block larger than what is left.
fn unpack_lz4_legacy(payload: &[u8]) -> Result<Vec<u8>, VmlinuxError> {
    let mut out = Vec::new();
    let mut at = 4;
    while let Some(size) = le_u32(payload, at) {
        at += 4;
        if size == LZ4_LEGACY_MAGIC {
            continue;
        }
        let Some(block) = payload.get(at..at + size as usize) else {
            break;
        };
        at += size as usize;
        let start = out.len();
        out.resize(start + LZ4_LEGACY_BLOCK, 0);
        let n = lz4_flex::block::decompress_into(block, &mut out[start..]).map_err(|e| {
            VmlinuxError::Unpack {
                method: "lz4",
                reason: e.to_string(),
            }
        })?;
        out.truncate(start + n);
    }
    if out.is_empty() {
        return Err(VmlinuxError::Unpack {
            method: "lz4",
            reason: "no block".into(),
        });
    }
    Ok(out)
}

/// ELF note type of the 32-bit PVH entry point, in notes named "Xen".
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const PT_NOTE: u32 = 4;

/// Whether the ELF carries the Xen `PHYS32_ENTRY` note QEMU's PVH loader looks for.
fn has_pvh_entry(elf: &[u8]) -> Result<bool, VmlinuxError> {
    // 64-bit little-endian ELF.
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err(VmlinuxError::NotElf);
    }
    let phoff = le_u64(elf, 0x20).ok_or(VmlinuxError::NotElf)? as usize;
    let phentsize = usize::from(le_u16(elf, 0x36).ok_or(VmlinuxError::NotElf)?);
    let phnum = usize::from(le_u16(elf, 0x38).ok_or(VmlinuxError::NotElf)?);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if le_u32(elf, ph) != Some(PT_NOTE) {
            continue;
        }
        let (Some(off), Some(size)) = (le_u64(elf, ph + 0x08), le_u64(elf, ph + 0x20)) else {
            return Err(VmlinuxError::NotElf);
        };
        let notes = elf
            .get(off as usize..(off + size) as usize)
            .ok_or(VmlinuxError::NotElf)?;
        if notes_hold(notes, b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether a PT_NOTE segment holds a note of this name and type (name and descriptor are
/// each padded to 4 bytes).
fn notes_hold(mut notes: &[u8], name: &[u8], kind: u32) -> bool {
    let pad = |n: usize| (n + 3) & !3;
    while let (Some(namesz), Some(descsz), Some(ty)) =
        (le_u32(notes, 0), le_u32(notes, 4), le_u32(notes, 8))
    {
        let (namesz, descsz) = (namesz as usize, descsz as usize);
        if notes.get(12..12 + namesz) == Some(name) && ty == kind {
            return true;
        }
        let next = 12 + pad(namesz) + pad(descsz);
        match notes.get(next..) {
            Some(rest) => notes = rest,
            None => break,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal 64-bit ELF with one PT_NOTE segment holding `notes`.
    fn elf_with_notes(notes: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; 0x40 + 0x38];
        e[..6].copy_from_slice(b"\x7fELF\x02\x01");
        e[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        e[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        e[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        e[0x40..0x44].copy_from_slice(&PT_NOTE.to_le_bytes());
        let off = e.len() as u64;
        e[0x48..0x50].copy_from_slice(&off.to_le_bytes());
        e[0x60..0x68].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        e.extend_from_slice(notes);
        e
    }

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend((name.len() as u32).to_le_bytes());
        n.extend((desc.len() as u32).to_le_bytes());
        n.extend(kind.to_le_bytes());
        n.extend(name);
        n.resize(n.len().next_multiple_of(4), 0);
        n.extend(desc);
        n.resize(n.len().next_multiple_of(4), 0);
        n
    }

    /// A bzImage-shaped file: setup sectors with the boot header, then `payload` followed, as
    /// the kernel build does, by the unpacked size (4 bytes, inside `payload_length`).
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut payload = payload.to_vec();
        payload.extend(1234u32.to_le_bytes());
        let mut bz = vec![0u8; 5 * 512];
        bz[0x1f1] = 4;
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        bz[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        bz[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        bz.extend([0xaa; 16]);
        bz.extend(&payload);
        bz
    }

    fn pvh_elf() -> Vec<u8> {
        let mut notes = note(b"Xen\0", 6, b"linux\0");
        notes.extend(note(
            b"Xen\0",
            XEN_ELFNOTE_PHYS32_ENTRY,
            &0x1000050u64.to_le_bytes(),
        ));
        let mut e = elf_with_notes(&notes);
        e.extend((0..100_000u32).map(|i| (i % 251) as u8));
        e
    }

    fn lz4_legacy(data: &[u8], block: usize) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        for chunk in data.chunks(block) {
            let c = lz4_flex::block::compress(chunk);
            out.extend((c.len() as u32).to_le_bytes());
            out.extend(c);
        }
        out
    }

    #[test]
    fn each_supported_compression_gives_back_the_elf() {
        let elf = pvh_elf();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&elf).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(elf.as_slice(), 3).unwrap();
        // Blocks of 30,000 bytes: several blocks, as a real kernel has.
        let lz4 = lz4_legacy(&elf, 30_000);
        for payload in [gz, zst, lz4] {
            assert_eq!(pvh_kernel(&bzimage(&payload)).unwrap(), elf);
        }
    }

    #[test]
    fn a_kernel_without_the_pvh_note_is_refused() {
        let mut elf = elf_with_notes(&note(b"Xen\0", 6, b"linux\0"));
        elf.extend([0u8; 64]);
        let bz = bzimage(&zstd::encode_all(elf.as_slice(), 3).unwrap());
        assert_eq!(pvh_kernel(&bz), Err(VmlinuxError::NoPvhEntry));
        // The same note type under another name does not count.
        let elf = elf_with_notes(&note(b"GNU\0", XEN_ELFNOTE_PHYS32_ENTRY, &[0; 8]));
        let bz = bzimage(&zstd::encode_all(elf.as_slice(), 3).unwrap());
        assert_eq!(pvh_kernel(&bz), Err(VmlinuxError::NoPvhEntry));
    }

    #[test]
    fn other_files_and_methods_are_named() {
        assert_eq!(pvh_kernel(b"not a kernel"), Err(VmlinuxError::NotBzImage));
        assert_eq!(pvh_kernel(&[0u8; 4096]), Err(VmlinuxError::NotBzImage));
        let xz = bzimage(b"\xfd7zXZ\0rest");
        assert_eq!(pvh_kernel(&xz), Err(VmlinuxError::Compression("xz")));
        let not_elf = bzimage(&zstd::encode_all(&b"plain bytes"[..], 3).unwrap());
        assert_eq!(pvh_kernel(&not_elf), Err(VmlinuxError::NotElf));
        let mut short = bzimage(b"\x1f\x8b");
        short.truncate(5 * 512 + 4);
        assert_eq!(pvh_kernel(&short), Err(VmlinuxError::Truncated));
    }
}
