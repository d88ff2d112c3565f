//! Which kernel modules the initramfs carries and in what order the init loads them.
//!
//! The Debian kernel package ships no `modules.dep`, and running `depmod` is not ours to
//! do: each module's own `.modinfo` ELF section says `depends=a,b`. This module reads it,
//! resolves the requested modules' dependencies against the modules tree (and
//! `modules.builtin`, whose entries need no loading) and orders them dependencies first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules an imgbuild ISO needs when the kernel has them as modules: virtio networking
/// (QEMU `-nic …,model=virtio-net-pci`), the CD and disk stack for a NoCloud/CIDATA volume
/// and the boot medium, virtio disks. Their dependencies come from `.modinfo`.
pub const BOOT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "ata_piix",
    "sr_mod",
    "sd_mod",
    "isofs",
    "virtio_blk",
    "virtio_scsi",
];

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("module {module} ({path}) depends on {dep}, which is neither a module under {dir} nor listed in modules.builtin")]
    UnknownDependency {
        module: String,
        path: String,
        dep: String,
        dir: String,
    },
    #[error("kernel module {module} is neither under {dir} nor listed in modules.builtin")]
    Missing { module: String, dir: String },
    #[error("module {0}: compressed modules ({1}) are not supported; use a kernel with uncompressed .ko files")]
    Compressed(String, String),
    #[error("modules depend on each other in a cycle: {0}")]
    Cycle(String),
    #[error("{0}: cannot read: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: not a kernel module: {1}")]
    NotModule(String, &'static str),
}

/// One module to load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// Canonical name (`-` written as `_`).
    pub name: String,
    /// Path relative to the modules directory of the kernel version (`kernel/…/x.ko`).
    pub rel: String,
    /// The file on the host.
    pub host: PathBuf,
}

/// Module names treat `-` and `_` alike; the canonical form uses `_`.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// The `key=value` strings of a module's `.modinfo` section.
pub fn modinfo(elf: &[u8]) -> Result<Vec<(String, String)>, &'static str> {
    let sec = section(elf, b".modinfo")?.ok_or("no .modinfo section")?;
    Ok(sec
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let s = String::from_utf8_lossy(s);
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect())
}

/// The `depends=` list of a module (empty names dropped, canonical form).
pub fn depends(elf: &[u8]) -> Result<Vec<String>, &'static str> {
    Ok(modinfo(elf)?
        .into_iter()
        .filter(|(k, _)| k == "depends")
        .flat_map(|(_, v)| {
            v.split(',')
                .filter(|d| !d.is_empty())
                .map(canonical)
                .collect::<Vec<_>>()
        })
        .collect())
}

fn rd<const N: usize>(b: &[u8], o: usize) -> Result<[u8; N], &'static str> {
    b.get(o..o + N)
        .and_then(|s| s.try_into().ok())
        .ok_or("truncated ELF")
}

/// The bytes of the named section of a 64-bit little-endian ELF file.
fn section<'a>(b: &'a [u8], name: &[u8]) -> Result<Option<&'a [u8]>, &'static str> {
    if !b.starts_with(b"\x7fELF") {
        return Err("not an ELF file");
    }
    if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file");
    }
    let shoff = u64::from_le_bytes(rd(b, 0x28)?) as usize;
    let shentsize = u16::from_le_bytes(rd(b, 0x3a)?) as usize;
    let shnum = u16::from_le_bytes(rd(b, 0x3c)?) as usize;
    let shstrndx = u16::from_le_bytes(rd(b, 0x3e)?) as usize;
    let sh = |i: usize| -> Result<(usize, usize, usize), &'static str> {
        let o = shoff + i * shentsize;
        Ok((
            u32::from_le_bytes(rd(b, o)?) as usize,
            u64::from_le_bytes(rd(b, o + 24)?) as usize,
            u64::from_le_bytes(rd(b, o + 32)?) as usize,
        ))
    };
    if shstrndx >= shnum {
        return Err("no section name table");
    }
    let (_, stroff, strsize) = sh(shstrndx)?;
    let strtab = b
        .get(stroff..stroff + strsize)
        .ok_or("section names past the end")?;
    for i in 0..shnum {
        let (n, off, size) = sh(i)?;
        let sname = strtab.get(n..).ok_or("bad section name")?;
        let sname = sname.split(|&c| c == 0).next().unwrap_or(&[]);
        if sname == name {
            return b
                .get(off..off + size)
                .map(Some)
                .ok_or("section past the end of the file");
        }
    }
    Ok(None)
}

/// The modules of one kernel version: `name → relative path`, and the built-in names.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    pub dir: PathBuf,
    pub files: BTreeMap<String, String>,
    pub builtin: BTreeSet<String>,
}

impl ModuleIndex {
    /// Scans `dir` (a `lib/modules/<kver>` directory) for `*.ko` files and reads
    /// `modules.builtin` if present.
    pub fn scan(dir: &Path) -> Result<Self, ModuleError> {
        let mut idx = ModuleIndex {
            dir: dir.to_path_buf(),
            ..Default::default()
        };
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let abs = dir.join(&rel);
            let rd = std::fs::read_dir(&abs)
                .map_err(|e| ModuleError::Read(abs.display().to_string(), e))?;
            for e in rd {
                let e = e.map_err(|e| ModuleError::Read(abs.display().to_string(), e))?;
                let name = e.file_name().to_string_lossy().into_owned();
                let r = rel.join(&name);
                let ft = e
                    .file_type()
                    .map_err(|e| ModuleError::Read(abs.display().to_string(), e))?;
                if ft.is_dir() {
                    stack.push(r);
                } else if let Some((stem, ext)) = split_ko(&name) {
                    let key = canonical(stem);
                    let rel = r.to_string_lossy().into_owned();
                    if ext != "ko" {
                        // Remember compressed ones to explain the failure if one is needed.
                        idx.files.entry(key).or_insert(rel);
                    } else {
                        // An uncompressed module wins over a compressed twin.
                        idx.files.insert(key, rel);
                    }
                }
            }
        }
        let builtin = dir.join("modules.builtin");
        if let Ok(text) = std::fs::read_to_string(&builtin) {
            for line in text.lines() {
                let base = line.rsplit('/').next().unwrap_or(line);
                if let Some((stem, _)) = split_ko(base) {
                    idx.builtin.insert(canonical(stem));
                }
            }
        }
        Ok(idx)
    }
}

/// `name.ko` / `name.ko.xz` / `name.ko.zst` / `name.ko.gz` → (name, extension after the stem).
fn split_ko(file: &str) -> Option<(&str, &str)> {
    for ext in [".ko", ".ko.xz", ".ko.zst", ".ko.gz"] {
        if let Some(stem) = file.strip_suffix(ext) {
            return Some((stem, &ext[1..]));
        }
    }
    None
}

/// Resolves `wanted` (in that order) and their dependencies into a load order, dependencies
/// first. Built-in modules are skipped. `read` returns a module file's bytes (the host file
/// in production; tests pass their own).
pub fn resolve_with(
    idx: &ModuleIndex,
    wanted: &[&str],
    read: &mut dyn FnMut(&Path) -> Result<Vec<u8>, ModuleError>,
) -> Result<Vec<Module>, ModuleError> {
    #[derive(PartialEq)]
    enum State {
        Visiting,
        Done,
    }
    let mut state: BTreeMap<String, State> = BTreeMap::new();
    let mut order = Vec::new();
    // Iterative DFS keeps the error path for cycles simple to report.
    fn visit(
        name: &str,
        from: Option<(&str, &str)>,
        idx: &ModuleIndex,
        state: &mut BTreeMap<String, State>,
        order: &mut Vec<Module>,
        stack: &mut Vec<String>,
        read: &mut dyn FnMut(&Path) -> Result<Vec<u8>, ModuleError>,
    ) -> Result<(), ModuleError> {
        match state.get(name) {
            Some(State::Done) => return Ok(()),
            Some(State::Visiting) => {
                let mut cyc = stack.clone();
                cyc.push(name.to_string());
                return Err(ModuleError::Cycle(cyc.join(" → ")));
            }
            None => {}
        }
        let Some(rel) = idx.files.get(name) else {
            if idx.builtin.contains(name) {
                state.insert(name.to_string(), State::Done);
                return Ok(());
            }
            return Err(match from {
                Some((module, path)) => ModuleError::UnknownDependency {
                    module: module.to_string(),
                    path: path.to_string(),
                    dep: name.to_string(),
                    dir: idx.dir.display().to_string(),
                },
                None => ModuleError::Missing {
                    module: name.to_string(),
                    dir: idx.dir.display().to_string(),
                },
            });
        };
        if !rel.ends_with(".ko") {
            return Err(ModuleError::Compressed(name.to_string(), rel.clone()));
        }
        let host = idx.dir.join(rel);
        let bytes = read(&host)?;
        let deps = depends(&bytes)
            .map_err(|why| ModuleError::NotModule(host.display().to_string(), why))?;
        state.insert(name.to_string(), State::Visiting);
        stack.push(name.to_string());
        let shown = host.display().to_string();
        for d in &deps {
            visit(d, Some((name, &shown)), idx, state, order, stack, read)?;
        }
        stack.pop();
        state.insert(name.to_string(), State::Done);
        order.push(Module {
            name: name.to_string(),
            rel: rel.clone(),
            host,
        });
        Ok(())
    }
    let mut stack = Vec::new();
    for w in wanted {
        visit(
            &canonical(w),
            None,
            idx,
            &mut state,
            &mut order,
            &mut stack,
            read,
        )?;
    }
    Ok(order)
}

/// [`resolve_with`] reading module files from the host.
pub fn resolve(dir: &Path, wanted: &[&str]) -> Result<Vec<Module>, ModuleError> {
    let idx = ModuleIndex::scan(dir)?;
    resolve_with(&idx, wanted, &mut |p| {
        std::fs::read(p).map_err(|e| ModuleError::Read(p.display().to_string(), e))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF64 LE file with a `.modinfo` section holding `info`.
    pub fn fake_module(info: &[&str]) -> Vec<u8> {
        let mut modinfo = Vec::new();
        for s in info {
            modinfo.extend_from_slice(s.as_bytes());
            modinfo.push(0);
        }
        let shstr = b"\0.modinfo\0.shstrtab\0".to_vec();
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        let modinfo_off = b.len();
        b.extend_from_slice(&modinfo);
        let shstr_off = b.len();
        b.extend_from_slice(&shstr);
        let shoff = b.len();
        let sh = |name: u32, off: usize, size: usize| {
            let mut e = vec![0u8; 64];
            e[0..4].copy_from_slice(&name.to_le_bytes());
            e[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            e[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            e
        };
        let s0 = sh(0, 0, 0);
        let s1 = sh(1, modinfo_off, modinfo.len());
        let s2 = sh(10, shstr_off, shstr.len());
        b.extend(s0);
        b.extend(s1);
        b.extend(s2);
        b[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        b[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        b[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        b[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        b
    }

    fn index(mods: &[(&str, &str)], builtin: &[&str]) -> (ModuleIndex, BTreeMap<PathBuf, Vec<u8>>) {
        let mut idx = ModuleIndex {
            dir: PathBuf::from("/m"),
            ..Default::default()
        };
        let mut files = BTreeMap::new();
        for (name, deps) in mods {
            let rel = format!("kernel/x/{}.ko", name.replace('_', "-"));
            let dep = format!("depends={deps}");
            files.insert(
                idx.dir.join(&rel),
                fake_module(&["license=GPL", &dep, "intree=Y"]),
            );
            idx.files.insert(canonical(name), rel);
        }
        idx.builtin = builtin.iter().map(|s| s.to_string()).collect();
        (idx, files)
    }

    fn names(v: &[Module]) -> Vec<&str> {
        v.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn modinfo_depends_is_parsed_from_the_elf_section() {
        let m = fake_module(&[
            "license=GPL",
            "depends=virtio_ring,virtio,net-failover",
            "name=virtio_net",
        ]);
        assert_eq!(
            depends(&m).unwrap(),
            ["virtio_ring", "virtio", "net_failover"]
        );
        assert!(depends(&fake_module(&["depends="])).unwrap().is_empty());
        assert_eq!(depends(b"#!/bin/sh"), Err("not an ELF file"));
    }

    #[test]
    fn dependencies_load_first_in_a_stable_order() {
        let (idx, files) = index(
            &[
                ("virtio_net", "virtio_ring,virtio,net_failover"),
                ("net_failover", "failover"),
                ("failover", ""),
                ("virtio_ring", ""),
                ("virtio", ""),
                (
                    "virtio_pci",
                    "virtio_ring,virtio_pci_modern_dev,virtio_pci_legacy_dev,virtio",
                ),
                ("virtio_pci_modern_dev", ""),
                ("virtio_pci_legacy_dev", ""),
                ("isofs", "cdrom"),
            ],
            &["cdrom"],
        );
        let order = resolve_with(&idx, &["virtio_net", "virtio_pci", "isofs"], &mut |p| {
            Ok(files[p].clone())
        })
        .unwrap();
        assert_eq!(
            names(&order),
            [
                "virtio_ring",
                "virtio",
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_pci",
                "isofs"
            ]
        );
        // Every module comes after all of its dependencies.
        for (i, m) in order.iter().enumerate() {
            for d in depends(&files[&m.host]).unwrap() {
                if let Some(j) = order.iter().position(|x| x.name == d) {
                    assert!(j < i, "{d} after {}", m.name);
                }
            }
        }
    }

    #[test]
    fn an_unknown_dependency_names_the_module_and_the_dependency() {
        let (idx, files) = index(&[("net_failover", "failover")], &[]);
        let err = resolve_with(&idx, &["net_failover"], &mut |p| Ok(files[p].clone())).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ModuleError::UnknownDependency { .. }),
            "{msg}"
        );
        assert!(
            msg.contains("net_failover") && msg.contains("depends on failover"),
            "{msg}"
        );
    }

    #[test]
    fn cycles_and_missing_modules_are_errors() {
        let (idx, files) = index(&[("a", "b"), ("b", "a")], &[]);
        let err = resolve_with(&idx, &["a"], &mut |p| Ok(files[p].clone())).unwrap_err();
        assert!(matches!(err, ModuleError::Cycle(_)), "{err}");
        let err = resolve_with(&idx, &["zzz"], &mut |p| Ok(files[p].clone())).unwrap_err();
        assert!(matches!(err, ModuleError::Missing { .. }), "{err}");
    }

    #[test]
    fn builtin_modules_need_no_loading() {
        let (idx, files) = index(&[("sr_mod", "cdrom")], &["cdrom", "virtio_net"]);
        let order = resolve_with(&idx, &["virtio_net", "sr_mod"], &mut |p| {
            Ok(files[p].clone())
        })
        .unwrap();
        assert_eq!(names(&order), ["sr_mod"]);
    }
}
