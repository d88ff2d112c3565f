//! The image-wide ELF check: every ELF executable of an image finds its interpreter and
//! libraries inside the image, as the glibc loader would look for them.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read};

use crate::tree::{display_path, Content, Entry, Kind, Tree};

use super::ClosureError;

/// Library directories the dynamic loader searches when RUNPATH/RPATH do not find a
/// library: glibc's defaults and Debian's multiarch directories (from ld.so.conf).
const DEFAULT_LIB_DIRS: &[&str] = &[
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib64",
    "usr/lib64",
    "lib",
    "usr/lib",
];

/// What the loader needs to know about one ELF object beyond `elf::parse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct DynInfo {
    /// `e_type` (2 = ET_EXEC, 3 = ET_DYN).
    etype: u16,
    runpath: Option<String>,
    rpath: Option<String>,
}

/// Reads `e_type`, `DT_RUNPATH` and `DT_RPATH` of a 64-bit little-endian ELF.
fn dyn_info(b: &[u8]) -> Option<DynInfo> {
    let u16at = |o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?));
    let u32at = |o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
    let u64at = |o: usize| Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?));
    let mut info = DynInfo {
        etype: u16at(16)?,
        ..Default::default()
    };
    let phoff = u64at(32)? as usize;
    let phentsize = u16at(54)? as usize;
    let phnum = u16at(56)? as usize;
    let (mut loads, mut dynamic) = (Vec::new(), None);
    for i in 0..phnum {
        let o = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let ptype = u32at(o)?;
        let (offset, vaddr, filesz) = (u64at(o + 8)?, u64at(o + 16)?, u64at(o + 32)?);
        match ptype {
            1 => loads.push((vaddr, offset, filesz)),
            2 => dynamic = Some((offset as usize, filesz as usize)),
            _ => {}
        }
    }
    let Some((off, size)) = dynamic else {
        return Some(info);
    };
    let dynsec = b.get(off..off.checked_add(size)?)?;
    let (mut strtab, mut runpath, mut rpath) = (None, None, None);
    for e in dynsec.chunks_exact(16) {
        let tag = u64::from_le_bytes(e[..8].try_into().ok()?);
        let val = u64::from_le_bytes(e[8..].try_into().ok()?);
        match tag {
            0 => break,
            5 => strtab = Some(val),
            15 => rpath = Some(val),
            29 => runpath = Some(val),
            _ => {}
        }
    }
    let str_at = |off: u64| -> Option<String> {
        let addr = strtab?;
        let file_off = loads
            .iter()
            .find(|(va, _, sz)| addr >= *va && addr < va + sz)
            .map(|(va, fo, _)| (addr - va + fo + off) as usize)?;
        let s = b.get(file_off..)?;
        let s = s.split(|&c| c == 0).next().unwrap_or(&[]);
        Some(String::from_utf8_lossy(s).into_owned())
    };
    info.runpath = runpath.and_then(str_at);
    info.rpath = rpath.and_then(str_at);
    Some(info)
}

/// An entry with its own path in the tree (what its host content resolves against).
type Located<'t> = (&'t [u8], &'t Entry);

/// Follows symlinks (and hard links) inside the tree to the entry a path names, like the
/// kernel would inside the image. Returns the resolved image path and entry (a hard link's
/// target, with its path).
fn resolve<'t>(tree: &'t Tree, path: &[u8]) -> Option<(Vec<u8>, Located<'t>)> {
    let mut pending: Vec<Vec<u8>> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(<[u8]>::to_vec)
        .collect();
    let mut cur: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        match c.as_slice() {
            b"." => continue,
            b".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        cur.push(c);
        let joined = cur.join(&b'/');
        let entry = tree.get(&joined)?;
        match &entry.kind {
            Kind::Symlink(target) => {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                cur.pop();
                if target.starts_with(b"/") {
                    cur.clear();
                }
                pending.extend(
                    target
                        .split(|&b| b == b'/')
                        .filter(|c| !c.is_empty())
                        .rev()
                        .map(<[u8]>::to_vec),
                );
            }
            Kind::Dir => {}
            _ if !pending.is_empty() => return None, // a file used as a directory
            _ => {}
        }
    }
    let joined = cur.join(&b'/');
    let mut entry = tree.get_with_path(&joined)?;
    if let Kind::HardLink(t) = &entry.1.kind {
        entry = tree.get_with_path(t)?;
    }
    Some((joined, entry))
}

/// An ELF object read from the tree.
struct Object {
    interpreter: Option<String>,
    needed: Vec<String>,
    info: DynInfo,
}

fn read_content((at, entry): Located, limit: Option<usize>) -> io::Result<Option<Vec<u8>>> {
    match &entry.kind {
        Kind::File(Content::Bytes(b)) => Ok(Some(match limit {
            Some(n) => b[..b.len().min(n)].to_vec(),
            None => b.to_vec(),
        })),
        Kind::File(Content::Host { path, .. }) => match (path.resolve(at), limit) {
            (path, Some(n)) => {
                let mut buf = Vec::with_capacity(n);
                fs::File::open(path)?.take(n as u64).read_to_end(&mut buf)?;
                Ok(Some(buf))
            }
            (path, None) => fs::read(path).map(Some),
        },
        _ => Ok(None),
    }
}

/// Cheap test on the first 4 KiB: false for non-ELF files and for ELF files that are
/// neither `ET_EXEC` nor have a `PT_INTERP` (libraries), so those are not read whole.
/// True when unsure (program headers past the first 4 KiB).
fn may_be_executable(entry: Located) -> bool {
    const HEAD: usize = 4096;
    let Ok(Some(b)) = read_content(entry, Some(HEAD)) else {
        return true; // let the full read report the error
    };
    if !crate::elf::is_elf(&b) {
        return false;
    }
    let u16at = |o: usize| {
        b.get(o..o + 2)
            .map(|x| u16::from_le_bytes([x[0], x[1]]) as usize)
    };
    let u64at = |o: usize| {
        b.get(o..o + 8)
            .map(|x| u64::from_le_bytes(x.try_into().unwrap()) as usize)
    };
    let (Some(etype), Some(phoff), Some(phentsize), Some(phnum)) =
        (u16at(16), u64at(32), u16at(54), u16at(56))
    else {
        return true;
    };
    if etype == 2 {
        return true;
    }
    (0..phnum).any(|i| {
        let o = phoff.saturating_add(i.saturating_mul(phentsize));
        match o.checked_add(4).and_then(|end| b.get(o..end)) {
            Some(t) => u32::from_le_bytes(t.try_into().unwrap()) == 3, // PT_INTERP
            None => true,
        }
    })
}

fn read_object(binary: &str, entry: Located) -> Result<Option<Object>, ClosureError> {
    let bad = |what: String| ClosureError::BadExecutable {
        binary: binary.to_string(),
        what,
    };
    let head = read_content(entry, Some(4)).map_err(|e| bad(format!("cannot read: {e}")))?;
    if !head.is_some_and(|h| crate::elf::is_elf(&h)) {
        return Ok(None);
    }
    let bytes = read_content(entry, None)
        .map_err(|e| bad(format!("cannot read: {e}")))?
        .unwrap_or_default();
    let needs = crate::elf::parse(binary, &bytes).map_err(|e| bad(e.to_string()))?;
    let info = dyn_info(&bytes).ok_or_else(|| bad("malformed ELF header".into()))?;
    Ok(Some(Object {
        interpreter: needs.interpreter,
        needed: needs.needed,
        info,
    }))
}

/// Checks that every ELF executable in the tree can be started inside the image.
///
/// An executable is a file with an x bit, the ELF magic, and a `PT_INTERP` or type
/// `ET_EXEC` (shared libraries are checked as dependencies of executables, not alone).
/// Its `PT_INTERP` must resolve (following symlinks inside the tree) to a file. Each
/// `DT_NEEDED` library, and transitively each library those need, must be found like the
/// glibc loader finds it, inside the tree:
/// 1. a name with `/` is a path;
/// 2. the `DT_RUNPATH` directories of the object needing it, or, when it has none, its
///    `DT_RPATH` and the executable's `DT_RPATH` (`$ORIGIN` = the object's directory);
/// 3. the interpreter's directory (Nix's glibc loader searches its own lib directory);
/// 4. the default directories: `/lib/x86_64-linux-gnu`, `/usr/lib/x86_64-linux-gnu`,
///    `/lib64`, `/usr/lib64`, `/lib`, `/usr/lib`.
///
/// Every failure is returned, in image path order, each naming the executable and the
/// missing interpreter or library (and the library that needs it, when it is not the
/// executable); an empty list when every executable can start.
pub fn unresolved(tree: &Tree) -> Vec<ClosureError> {
    let mut problems: Vec<ClosureError> = Vec::new();
    let mut objects: HashMap<Vec<u8>, Option<Object>> = HashMap::new();
    fn load(
        objects: &mut HashMap<Vec<u8>, Option<Object>>,
        path: &[u8],
        entry: Located,
    ) -> Result<bool, ClosureError> {
        if !objects.contains_key(path) {
            let o = read_object(&display_path(path), entry)?;
            objects.insert(path.to_vec(), o);
        }
        Ok(objects[path].is_some())
    }
    let candidates: Vec<(Vec<u8>, Vec<u8>)> = tree
        .iter()
        .filter(|(_, e)| e.mode & 0o111 != 0 && matches!(e.kind, Kind::File(_) | Kind::HardLink(_)))
        .map(|(p, e)| {
            let real = match &e.kind {
                Kind::HardLink(t) => t.clone(),
                _ => p.to_vec(),
            };
            (p.to_vec(), real)
        })
        .collect();
    for (path, real) in candidates {
        let Some(entry) = tree.get_with_path(&real) else {
            continue;
        };
        if !objects.contains_key(&real) && !may_be_executable(entry) {
            continue;
        }
        match load(&mut objects, &real, entry) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                problems.push(e);
                continue;
            }
        }
        let binary = display_path(&path);
        let exe = objects[&real].as_ref().expect("loaded");
        if exe.interpreter.is_none() && exe.info.etype != 2 {
            continue; // a shared library or static PIE without needs
        }
        let interp_dir = match &exe.interpreter {
            Some(i) => {
                let ok = resolve(tree, i.as_bytes())
                    .is_some_and(|(_, (_, e))| matches!(e.kind, Kind::File(_)));
                if !ok {
                    problems.push(ClosureError::MissingInterpreter {
                        binary,
                        interpreter: i.clone(),
                    });
                    continue;
                }
                let (dir, _) = resolve(tree, i.as_bytes()).expect("resolved above");
                Some(parent(&dir).to_vec())
            }
            None => None,
        };
        let exe_rpath = if exe.info.runpath.is_none() {
            exe.info.rpath.clone()
        } else {
            None
        };
        // Breadth-first over the libraries: (object path, name it needs).
        let mut queue: Vec<(Vec<u8>, String)> = exe
            .needed
            .iter()
            .map(|n| (real.clone(), n.clone()))
            .collect();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        while let Some((by, lib)) = queue.pop() {
            if !seen.insert(lib.clone()) {
                continue;
            }
            let by_obj = objects[&by].as_ref().expect("loaded");
            let mut dirs: Vec<Vec<u8>> = Vec::new();
            let origin = parent(&by).to_vec();
            let expand = |list: &str| -> Vec<Vec<u8>> {
                list.split(':')
                    .filter(|d| !d.is_empty())
                    .map(|d| {
                        let d = d
                            .replace(
                                "${ORIGIN}",
                                &format!("/{}", String::from_utf8_lossy(&origin)),
                            )
                            .replace("$ORIGIN", &format!("/{}", String::from_utf8_lossy(&origin)));
                        d.into_bytes()
                    })
                    .collect()
            };
            match (&by_obj.info.runpath, &by_obj.info.rpath) {
                (Some(rp), _) => dirs.extend(expand(rp)),
                (None, rp) => {
                    if let Some(rp) = rp {
                        dirs.extend(expand(rp));
                    }
                    if let Some(rp) = &exe_rpath {
                        dirs.extend(expand(rp));
                    }
                }
            }
            if let Some(d) = &interp_dir {
                dirs.push([b"/".as_slice(), d].concat());
            }
            dirs.extend(
                DEFAULT_LIB_DIRS
                    .iter()
                    .map(|d| format!("/{d}").into_bytes()),
            );
            let candidates: Vec<Vec<u8>> = if lib.contains('/') {
                vec![lib.clone().into_bytes()]
            } else {
                dirs.iter()
                    .map(|d| [d.as_slice(), b"/", lib.as_bytes()].concat())
                    .collect()
            };
            let mut found = None;
            let mut unreadable = false;
            for c in &candidates {
                if let Some((p, e)) = resolve(tree, c) {
                    if !matches!(e.1.kind, Kind::File(_)) {
                        continue;
                    }
                    match load(&mut objects, &p, e) {
                        Ok(true) => {
                            found = Some(p);
                            break;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            problems.push(e);
                            unreadable = true;
                            break;
                        }
                    }
                }
            }
            if unreadable {
                continue;
            }
            let Some(p) = found else {
                let via = if by == real {
                    String::new()
                } else {
                    format!(" (needed by {})", display_path(&by))
                };
                let mut searched: Vec<String> = Vec::new();
                for d in &dirs {
                    let s = String::from_utf8_lossy(d).into_owned();
                    if !searched.contains(&s) {
                        searched.push(s);
                    }
                }
                let searched = if lib.contains('/') {
                    "the path itself".into()
                } else {
                    searched.join(":")
                };
                problems.push(ClosureError::MissingLibrary {
                    binary: binary.clone(),
                    library: lib,
                    via,
                    searched,
                });
                continue;
            };
            let needs = objects[&p].as_ref().expect("loaded").needed.clone();
            queue.extend(needs.into_iter().map(|n| (p.clone(), n)));
        }
    }
    // A library that cannot be read is met once per executable that needs it: name it once.
    let mut seen = BTreeSet::new();
    problems.retain(|p| seen.insert(p.to_string()));
    problems
}

/// Checks that every ELF executable in the tree can be started inside the image (see
/// [`unresolved`]): one failure is returned as it is, several as one
/// [`ClosureError::Executables`] listing each.
pub fn check_executables(tree: &Tree) -> Result<(), ClosureError> {
    let mut problems = unresolved(tree);
    match problems.len() {
        0 => Ok(()),
        1 => Err(problems.remove(0)),
        _ => Err(ClosureError::Executables(problems)),
    }
}

/// What the image's ELF check does with executables that cannot start (`--elf-check`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ElfCheck {
    /// Refuse to build, naming every executable and what it misses (exit 2).
    #[default]
    Error,
    /// Build, and warn naming each (for images whose optional programs miss a library).
    Warn,
    /// Do not check.
    Off,
}

/// The `--elf-check` option of the commands that package executables.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct ElfCheckArgs {
    /// What to do when an ELF executable of the image cannot find its interpreter or a
    /// library inside the image: error (refuse, naming every one), warn (build, naming every
    /// one on stderr), off (do not check).
    #[arg(long, value_enum, value_name = "MODE", default_value = "error")]
    pub elf_check: ElfCheck,
}

impl ElfCheckArgs {
    /// Runs the check on an image's tree as the mode says: `Err` only in `error` mode;
    /// in `warn` mode each executable that cannot start is a `tracing` warning and one
    /// stderr line names them all.
    pub fn apply(&self, tree: &Tree) -> Result<(), ClosureError> {
        match self.elf_check {
            ElfCheck::Off => Ok(()),
            ElfCheck::Error => check_executables(tree),
            ElfCheck::Warn => {
                let problems = unresolved(tree);
                if problems.is_empty() {
                    return Ok(());
                }
                for p in &problems {
                    tracing::warn!("{p}");
                }
                let binaries: BTreeSet<&str> = problems.iter().filter_map(|p| p.binary()).collect();
                eprintln!(
                    "imgbuild: warning: --elf-check warn: the image holds {} executable(s) that cannot start: {}",
                    binaries.len(),
                    binaries.into_iter().collect::<Vec<_>>().join(", ")
                );
                Ok(())
            }
        }
    }
}

fn parent(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => &p[..i],
        None => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Group;

    #[test]
    fn resolve_follows_symlinks_inside_the_tree() {
        let mut t = Tree::new();
        let f = Entry::file(Content::bytes(b"x".to_vec()), 0o644, Group::Base);
        t.insert("usr/lib/libz.so.1.3", f).unwrap();
        t.insert(
            "usr/lib/libz.so.1",
            Entry::symlink("libz.so.1.3", Group::Base),
        )
        .unwrap();
        t.insert("lib", Entry::symlink("usr/lib", Group::Base))
            .unwrap();
        t.insert("loop", Entry::symlink("/loop", Group::Base))
            .unwrap();
        let (p, _) = resolve(&t, b"/lib/libz.so.1").unwrap();
        assert_eq!(p, b"usr/lib/libz.so.1.3");
        let (p, _) = resolve(&t, b"/lib/../lib/./libz.so.1").unwrap();
        assert_eq!(p, b"usr/lib/libz.so.1.3");
        assert!(resolve(&t, b"/loop").is_none());
        assert!(resolve(&t, b"/lib/libz.so.1/x").is_none());
        assert!(resolve(&t, b"/lib/missing").is_none());
    }

    #[test]
    fn dyn_info_reads_a_host_binary() {
        let b = fs::read("/bin/ls").unwrap();
        let i = dyn_info(&b).unwrap();
        assert!(i.etype == 2 || i.etype == 3, "{i:?}");
        assert!(dyn_info(b"\x7fELF").is_none());
    }
}
