//! Reads just enough of an ELF file to say what it needs at run time: its program
//! interpreter (`PT_INTERP`) and the libraries it links (`DT_NEEDED`). imgbuild refuses to
//! package an executable whose interpreter or libraries are not in the image, and `check`
//! uses it to prove payload binaries are static.

use std::path::Path;

/// What an ELF file needs from the image it runs in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElfNeeds {
    /// `PT_INTERP`, e.g. `/lib64/ld-linux-x86-64.so.2`; `None` for a static executable.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` entries, e.g. `libc.so.6`.
    pub needed: Vec<String>,
}

impl ElfNeeds {
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("{0}: cannot read: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: not an ELF file")]
    NotElf(String),
    #[error("{0}: malformed ELF ({1})")]
    Malformed(String, &'static str),
}

/// True when the bytes start with the ELF magic.
pub fn is_elf(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
}

fn u16le(b: &[u8], o: usize) -> Option<u64> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?) as u64)
}
fn u32le(b: &[u8], o: usize) -> Option<u64> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?) as u64)
}
fn u64le(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// Parses a 64-bit little-endian ELF (the only kind imgbuild packages for x86_64).
pub fn parse(name: &str, b: &[u8]) -> Result<ElfNeeds, ElfError> {
    let bad = |what| ElfError::Malformed(name.to_string(), what);
    if !is_elf(b) {
        return Err(ElfError::NotElf(name.to_string()));
    }
    if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        return Err(bad("not 64-bit little-endian"));
    }
    let phoff = u64le(b, 32).ok_or(bad("header"))? as usize;
    let phentsize = u16le(b, 54).ok_or(bad("header"))? as usize;
    let phnum = u16le(b, 56).ok_or(bad("header"))? as usize;
    let mut needs = ElfNeeds::default();
    let mut dynamic = None;
    let mut loads = Vec::new();
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let ptype = u32le(b, o).ok_or(bad("program header"))?;
        let offset = u64le(b, o + 8).ok_or(bad("program header"))? as usize;
        let vaddr = u64le(b, o + 16).ok_or(bad("program header"))?;
        let filesz = u64le(b, o + 32).ok_or(bad("program header"))? as usize;
        match ptype {
            1 => loads.push((vaddr, offset as u64, filesz as u64)),
            2 => dynamic = Some((offset, filesz)),
            3 => {
                let s = b.get(offset..offset + filesz).ok_or(bad("PT_INTERP"))?;
                let s = s.split(|&c| c == 0).next().unwrap_or(&[]);
                needs.interpreter = Some(String::from_utf8_lossy(s).into_owned());
            }
            _ => {}
        }
    }
    if let Some((off, size)) = dynamic {
        let dynsec = b.get(off..off + size).ok_or(bad("PT_DYNAMIC"))?;
        let (mut strtab, mut needed_offs) = (None, Vec::new());
        for e in dynsec.chunks_exact(16) {
            let tag = u64le(e, 0).unwrap_or(0);
            let val = u64le(e, 8).unwrap_or(0);
            match tag {
                0 => break,
                1 => needed_offs.push(val),
                5 => strtab = Some(val),
                _ => {}
            }
        }
        if !needed_offs.is_empty() {
            // DT_STRTAB is a virtual address: map it through the PT_LOAD segments.
            let addr = strtab.ok_or(bad("DT_NEEDED without DT_STRTAB"))?;
            let file_off = loads
                .iter()
                .find(|(va, _, sz)| addr >= *va && addr < va + sz)
                .map(|(va, off, _)| (addr - va + off) as usize)
                .ok_or(bad("DT_STRTAB outside the file"))?;
            for n in needed_offs {
                let start = file_off + n as usize;
                let s = b.get(start..).ok_or(bad("DT_NEEDED name"))?;
                let s = s.split(|&c| c == 0).next().unwrap_or(&[]);
                needs.needed.push(String::from_utf8_lossy(s).into_owned());
            }
        }
    }
    Ok(needs)
}

/// Reads and parses an ELF file from the host.
pub fn read(path: &Path) -> Result<ElfNeeds, ElfError> {
    let name = path.display().to_string();
    let b = std::fs::read(path).map_err(|e| ElfError::Read(name.clone(), e))?;
    parse(&name, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_host_binary_has_an_interpreter_and_libc() {
        let n = read(Path::new("/bin/ls")).unwrap();
        assert!(n.interpreter.unwrap().contains("ld-linux"));
        assert!(n.needed.iter().any(|l| l.starts_with("libc.so")));
    }

    #[test]
    fn our_own_test_binary_is_static() {
        // The workspace links statically (.cargo/config.toml); this test executable too.
        let n = read(&std::env::current_exe().unwrap()).unwrap();
        assert!(n.is_static(), "{n:?}");
    }

    #[test]
    fn text_is_not_elf() {
        assert!(matches!(
            parse("x", b"#!/bin/sh\n"),
            Err(ElfError::NotElf(_))
        ));
    }
}
