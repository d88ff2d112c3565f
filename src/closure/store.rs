//! Reading the store: merging the inputs into one closed closure, NAR sizes and reference
//! scanning (as Nix does: the 32-character hash of each path in names, contents and link
//! targets), and the image entries of every store path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::tree::{Batch, Content, Entry, Group, HostPath, Kind, Tree};

use super::input::{parse_input, Parsed};
use super::walk_record::{Recorded, Walk, WalkRecords};
use super::{
    hash_part, malformed, Closure, ClosureError, StorePath, BASE32_TABLE, HASH_LEN, STORE_DIR,
};

/// Where the files of store path `path` (`/nix/store/…`) are on the host.
fn host_path(store_root: Option<&Path>, path: &str) -> PathBuf {
    match store_root {
        Some(r) => r.join(path.trim_start_matches('/')),
        None => PathBuf::from(path),
    }
}

struct Merged {
    nar_size: Option<u64>,
    nar_hash: Option<String>,
    references: BTreeSet<String>,
    /// Input that named the path first (for error messages).
    input: String,
    /// References must be found by scanning (plain list only).
    scan: bool,
}

/// Reads closure inputs (format auto-detected per input, see the module doc) and merges
/// them into one closed, sorted closure. `store_root`: read store files (for scanning and
/// sizes) from `DIR/nix/store` instead of `/nix/store`.
pub fn load(inputs: &[PathBuf], store_root: Option<&Path>) -> Result<Closure, ClosureError> {
    let mut merged: BTreeMap<String, Merged> = BTreeMap::new();
    let mut add = |input: &str,
                   path: String,
                   size: Option<u64>,
                   hash: Option<String>,
                   refs: Vec<String>,
                   scan| {
        let m = merged.entry(path).or_insert_with(|| Merged {
            nar_size: None,
            nar_hash: None,
            references: BTreeSet::new(),
            input: input.to_string(),
            scan,
        });
        m.nar_size = m.nar_size.or(size);
        m.nar_hash = m.nar_hash.take().or(hash);
        m.references.extend(refs);
        m.scan &= scan;
    };
    for input in inputs {
        let name = input.display().to_string();
        let read = |p: &Path| {
            fs::read(p).map_err(|err| ClosureError::ReadInput {
                input: p.display().to_string(),
                err,
            })
        };
        let meta = fs::metadata(input).map_err(|err| ClosureError::ReadInput {
            input: name.clone(),
            err,
        })?;
        let (name, parsed) = if meta.is_dir() {
            // closureInfo: registration (with the graph) or at least store-paths.
            let reg = input.join("registration");
            let list = input.join("store-paths");
            let file = if reg.exists() {
                reg
            } else if list.exists() {
                list
            } else {
                return Err(malformed(&name, "is a directory without registration or store-paths; expected a closureInfo directory"));
            };
            let fname = file.display().to_string();
            let p = parse_input(&fname, &read(&file)?)?;
            (fname, p)
        } else {
            let p = parse_input(&name, &read(input)?)?;
            (name, p)
        };
        match parsed {
            Parsed::Records(recs) => {
                for r in recs {
                    add(&name, r.path, r.nar_size, r.nar_hash, r.references, false);
                }
            }
            Parsed::List(paths) => {
                for p in paths {
                    add(&name, p, None, None, Vec::new(), true);
                }
            }
        }
    }

    // Scan (plain lists) and size (inputs without narSize) from the store.
    let known: Vec<String> = merged.keys().cloned().collect();
    let hashes: HashMap<[u8; HASH_LEN], usize> = known
        .iter()
        .enumerate()
        .map(|(i, p)| (hash_part(p), i))
        .collect();
    let todo: Vec<(usize, bool)> = merged
        .values()
        .enumerate()
        .filter(|(_, m)| m.scan || m.nar_size.is_none())
        .map(|(i, m)| (i, m.scan))
        .collect();
    let results = crate::pool::map(&todo, threads(), |&(i, scan)| {
        let host = host_path(store_root, &known[i]);
        let mut found = BTreeSet::new();
        let scanner = scan.then_some(Scanner {
            hashes: &hashes,
            found: &mut found,
        });
        let size = nar_walk(&host, scanner).map_err(|err| {
            match err.get_ref().and_then(|e| e.downcast_ref::<SpecialFile>()) {
                Some(SpecialFile(file, what)) => ClosureError::UnsupportedFile {
                    path: known[i].clone(),
                    host: file.display().to_string(),
                    what,
                },
                None => ClosureError::StoreRead {
                    path: known[i].clone(),
                    host: host.display().to_string(),
                    err,
                },
            }
        })?;
        Ok((i, size, found))
    })?;
    let mut values: Vec<&mut Merged> = merged.values_mut().collect();
    for (i, size, found) in results {
        let m = &mut values[i];
        m.nar_size = m.nar_size.or(Some(size));
        m.references
            .extend(found.into_iter().map(|j| known[j].clone()));
    }

    let mut paths = Vec::with_capacity(merged.len());
    for (path, m) in &merged {
        if let Some(missing) = m.references.iter().find(|r| !merged.contains_key(*r)) {
            return Err(ClosureError::MissingReference {
                input: m.input.clone(),
                path: path.clone(),
                reference: missing.clone(),
            });
        }
        paths.push(StorePath {
            path: PathBuf::from(path),
            nar_size: m.nar_size,
            nar_hash: m.nar_hash.clone(),
            references: m.references.iter().map(PathBuf::from).collect(),
        });
    }
    Ok(Closure { paths })
}

/// The threads the store walks and scans use: all cores.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How many store paths the walk may run ahead of the Tree (see `Closure::add_to_tree`).
/// Store paths differ wildly in size (a few hold most of a closure's files), so a small
/// window stalls the walkers behind one big path: on the benchmark closure the tree stage
/// took 0.24 s with 4, 0.16 s with 32 or more, and peak memory did not change.
fn look_ahead(threads: usize) -> usize {
    64.max(16 * threads)
}

// ---------------------------------------------------------------------------------------
// NAR size and reference scanning

/// Finds the hash parts of known store paths in bytes (as Nix's reference scanner does:
/// the NAR of a path — file names, contents, symlink targets — is searched for each
/// 32-character hash).
struct Scanner<'a> {
    hashes: &'a HashMap<[u8; HASH_LEN], usize>,
    found: &'a mut BTreeSet<usize>,
}

impl Scanner<'_> {
    /// Searches like Nix's `RefScanSink`: test a window from its end backwards and, at the
    /// first byte that cannot be in a hash, skip past it (most windows cost one byte).
    fn scan(&mut self, data: &[u8]) {
        let mut i = 0;
        while i + HASH_LEN <= data.len() {
            let w = &data[i..i + HASH_LEN];
            match w.iter().rposition(|&c| !BASE32_TABLE[c as usize]) {
                Some(j) => i += j + 1,
                None => {
                    if let Some(&idx) = self.hashes.get(w) {
                        self.found.insert(idx);
                    }
                    i += 1;
                }
            }
        }
    }

    /// Scans a file in chunks, keeping the last 31 bytes so hashes across chunks are found.
    fn scan_file(&mut self, path: &Path) -> io::Result<()> {
        const CHUNK: usize = 1 << 20;
        let mut f = fs::File::open(path)?;
        let mut buf = vec![0u8; HASH_LEN - 1 + CHUNK];
        let mut keep = 0;
        loop {
            let n = f.read(&mut buf[keep..])?;
            if n == 0 {
                return Ok(());
            }
            let len = keep + n;
            self.scan(&buf[..len]);
            let k = (HASH_LEN - 1).min(len);
            buf.copy_within(len - k..len, 0);
            keep = k;
        }
    }
}

/// A file a store cannot hold (FIFO, socket, device), found while walking a store path.
#[derive(Debug)]
struct SpecialFile(PathBuf, &'static str);

impl std::fmt::Display for SpecialFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is a {}", self.0.display(), self.1)
    }
}

impl std::error::Error for SpecialFile {}

/// Length of a NAR string field: 8-byte length + bytes padded to 8.
fn nar_str(len: u64) -> u64 {
    8 + len.div_ceil(8) * 8
}

/// The walk of one store path on the host: depth first, each directory's entries in byte
/// order (`OsStr` compares bytes on Unix), symlinks never followed — not even the store path
/// itself when it is one. `each(host, depth, lstat)` is called for every entry, the root at
/// depth 0, a directory before its entries; `failed` names a read that failed.
///
/// Each entry's `lstat` is taken relative to its open directory (std's `DirEntry::metadata`
/// is a `statx` on the directory's descriptor), not by its full path: on the benchmark
/// closure the kernel's path lookup from `/` was half of every `lstat` (docs/DEPENDENCIES.md
/// says why this replaced walkdir).
fn walk_sorted<E>(
    root: &Path,
    each: &mut dyn FnMut(&Path, usize, &fs::Metadata) -> Result<(), E>,
    failed: &dyn Fn(&Path, io::Error) -> E,
) -> Result<(), E> {
    let meta = fs::symlink_metadata(root).map_err(|e| failed(root, e))?;
    each(root, 0, &meta)?;
    if meta.is_dir() {
        walk_dir(&mut root.to_path_buf(), 1, each, failed)?;
    }
    Ok(())
}

/// The entries of directory `host` (and below), for [`walk_sorted`]; `host` is the
/// directory's path, grown and shrunk again by each entry's name.
fn walk_dir<E>(
    host: &mut PathBuf,
    depth: usize,
    each: &mut dyn FnMut(&Path, usize, &fs::Metadata) -> Result<(), E>,
    failed: &dyn Fn(&Path, io::Error) -> E,
) -> Result<(), E> {
    let mut entries: Vec<(std::ffi::OsString, fs::DirEntry)> = Vec::new();
    for dent in fs::read_dir(&*host).map_err(|e| failed(host, e))? {
        let dent = dent.map_err(|e| failed(host, e))?;
        entries.push((dent.file_name(), dent));
    }
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (name, dent) in entries {
        host.push(&name);
        let meta = dent.metadata().map_err(|e| failed(host, e))?;
        each(host, depth, &meta)?;
        if meta.is_dir() {
            walk_dir(host, depth + 1, each, failed)?;
        }
        host.pop();
    }
    Ok(())
}

/// Walks a store path on the host without following symlinks, returning its exact NAR
/// size; with a scanner, also scans names, contents and symlink targets for hashes.
fn nar_walk(host: &Path, mut scanner: Option<Scanner<'_>>) -> io::Result<u64> {
    let mut size = nar_str(13); // "nix-archive-1"
                                // Name the file inside the store path in every error.
    let named =
        |path: &Path, e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut each = |path: &Path, depth, meta: &fs::Metadata| {
        let failed = |e| named(path, e);
        if depth > 0 {
            // Inside its directory: "entry" "(" "name" <name> "node" <node> ")"
            let n = path.file_name().map_or(&[][..], |n| n.as_bytes());
            if let Some(s) = &mut scanner {
                s.scan(n);
            }
            size += nar_str(5) + nar_str(1) + nar_str(4) + nar_str(n.len() as u64);
            size += nar_str(4) + nar_str(1);
        }
        // "(" "type" <type> … ")"
        size += nar_str(1) + nar_str(4) + nar_str(1);
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(path).map_err(failed)?;
            let t = target.as_os_str().as_bytes();
            if let Some(s) = &mut scanner {
                s.scan(t);
            }
            size += nar_str(7) + nar_str(6) + nar_str(t.len() as u64);
        } else if ft.is_dir() {
            size += nar_str(9);
        } else if ft.is_file() {
            size += nar_str(7); // "regular"
            if meta.mode() & 0o100 != 0 {
                size += nar_str(10) + nar_str(0); // "executable" ""
            }
            size += nar_str(8) + nar_str(meta.len()); // "contents" <bytes>
            if let Some(s) = &mut scanner {
                s.scan_file(path).map_err(failed)?;
            }
        } else {
            let special = SpecialFile(path.to_path_buf(), file_type_name(ft));
            return Err(io::Error::other(special));
        }
        Ok(())
    };
    walk_sorted(host, &mut each, &named)?;
    Ok(size)
}

// ---------------------------------------------------------------------------------------
// Into the image tree

fn file_type_name(ft: fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "named pipe"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

/// Normalises `/nix/store/` + a symlink target (absolute or relative) and says whether it
/// stays inside the store.
fn link_stays_in_store(target: &[u8]) -> bool {
    let mut parts: Vec<&[u8]> = Vec::new();
    let full: Vec<u8> = if target.starts_with(b"/") {
        target.to_vec()
    } else {
        [STORE_DIR.as_bytes(), b"/", target].concat()
    };
    for c in full.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.len() >= 3 && parts[0] == b"nix" && parts[1] == b"store"
}

impl Closure {
    /// Adds every store path to `tree` under `nix/store/<hash>-<name>`: directories, files
    /// (`Content::Host`, read at write time), symlinks (kept as symlinks, never followed)
    /// and hard links (files sharing an inode within the closure: the byte-first image path
    /// stays a file, the others become `Kind::HardLink` to it). Modes are the store's
    /// permission bits; owners are left at 0. Every entry's group is
    /// `Group::StorePath(basename)`; `nix` and `nix/store` are added (0755, `Group::Base`)
    /// when the tree lacks them. Reads from `DIR/nix/store` with `store_root`. With `records`
    /// (the layer cache's), an immutable store path walked by an earlier build and unchanged
    /// since is taken from its record ([`WalkRecords`]).
    pub fn add_to_tree(
        &self,
        tree: &mut Tree,
        store_root: Option<&Path>,
        records: Option<&WalkRecords>,
    ) -> Result<(), ClosureError> {
        // Store files are at `<root>/<image path>` (see `host_path`): their HostPath shares
        // the root and names no path of its own.
        let root: Arc<PathBuf> = Arc::new(store_root.unwrap_or(Path::new("/")).to_path_buf());
        for dir in ["nix", "nix/store"] {
            if tree.get(dir).is_none() {
                tree.insert(dir, Entry::dir(0o755, Group::Base))
                    .map_err(|err| ClosureError::Tree {
                        path: STORE_DIR.to_string(),
                        err,
                    })?;
            }
        }
        // Each store path's entries go into the tree as soon as it and the paths before it
        // are walked, and are freed there: never the whole closure twice in memory. The map's
        // nodes, half full after inserts in byte order, are packed again whenever an eighth
        // as many entries as it holds were added (at least COMPACT_EVERY), so what is left
        // half full stays small; packing is linear, so this costs a handful of passes.
        const COMPACT_EVERY: usize = 4096;
        let mut since_compact = 0;
        let threads = threads();
        crate::pool::stream_in_order(
            &self.paths,
            threads,
            look_ahead(threads),
            |sp| walk_store_path(sp, store_root, &root, records),
            |walked| {
                since_compact += walked.len();
                tree.insert_batch(walked)
                    .map_err(|err| ClosureError::Tree {
                        path: err.path(),
                        err,
                    })?;
                if since_compact >= COMPACT_EVERY.max(tree.len() / 8) {
                    tree.compact();
                    since_compact = 0;
                }
                Ok(())
            },
        )?;
        tree.compact();

        self.link_shared_inodes(tree)
    }

    /// Hard links: of the closure's files that share an inode, the byte-smallest image path
    /// stays the file, the others become links to it. Files sharing an inode share its stamp
    /// (`StampPrint`: size, device, inode, times), so only files whose print is not unique
    /// are looked at again (`lstat`: more than one link, the same device and inode). Nothing
    /// is kept per file while the closure is walked (in an optimised store every file has
    /// several links: a list of them cost ~50 bytes a file at the build's peak); this costs
    /// 8 bytes a file, once the tree is whole.
    fn link_shared_inodes(&self, tree: &mut Tree) -> Result<(), ClosureError> {
        // The closure's files with the stamp the walk took, store path by store path.
        let prefixes: Vec<Vec<u8>> = self.paths.iter().map(|sp| image_of(&sp.path)).collect();
        // Called with a file's print, image path, host path and its store path's image path.
        type Each<'e> = dyn FnMut(u64, &[u8], &HostPath, &[u8]) + 'e;
        let stamped = |tree: &Tree, each: &mut Each| {
            for pre in &prefixes {
                let under =
                    |p: &[u8]| p.starts_with(pre) && (p.len() == pre.len() || p[pre.len()] == b'/');
                for (p, e) in tree.range_from(pre).take_while(|(p, _)| under(p)) {
                    if let Kind::File(Content::Host {
                        path,
                        stamp: Some(s),
                        ..
                    }) = &e.kind
                    {
                        each(s.get(), p, path, pre);
                    }
                }
            }
        };
        let mut prints: Vec<u64> = Vec::new();
        stamped(tree, &mut |s, _, _, _| prints.push(s));
        prints.sort_unstable();
        let shared: BTreeSet<u64> = prints
            .chunk_by(|a, b| a == b)
            .filter(|same| same.len() > 1)
            .map(|same| same[0])
            .collect();
        drop(prints);
        if shared.is_empty() {
            return Ok(());
        }
        // Files with more than one link: (device, inode) and image path.
        type DevIno = (u64, u64);
        let mut linked: Vec<(DevIno, Vec<u8>)> = Vec::new();
        let mut failed = None;
        stamped(tree, &mut |s, p, host, store_path| {
            if !shared.contains(&s) || failed.is_some() {
                return;
            }
            let host = host.resolve(p);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.nlink() > 1 => linked.push(((m.dev(), m.ino()), p.to_vec())),
                Ok(_) => {}
                Err(err) => {
                    failed = Some(ClosureError::StoreRead {
                        path: crate::tree::display_path(store_path),
                        host: host.display().to_string(),
                        err,
                    })
                }
            }
        });
        if let Some(err) = failed {
            return Err(err);
        }
        linked.sort_unstable();
        for same in linked.chunk_by(|a, b| a.0 == b.0).filter(|s| s.len() > 1) {
            let target = same[0].1.clone();
            for (_, path) in &same[1..] {
                if let Some(e) = tree.get_mut(&path[..]) {
                    e.kind = Kind::HardLink(target.clone());
                }
            }
        }
        Ok(())
    }

    /// Total NAR size of the closure (bytes; 0 for paths whose size is unknown).
    pub fn size(&self) -> u64 {
        self.paths.iter().filter_map(|p| p.nar_size).sum()
    }

    /// The store path `path` (`/nix/store/…`), if it is in the closure.
    pub fn get(&self, path: &Path) -> Option<&StorePath> {
        self.paths
            .binary_search_by(|p| p.path.as_path().cmp(path))
            .ok()
            .map(|i| &self.paths[i])
    }
}

/// Walks one store path on the host (never following symlinks) into tree entries; with
/// `records`, a store path walked before and unchanged since is taken from its record instead,
/// and one walked now is recorded ([`WalkRecords`]).
fn walk_store_path(
    sp: &StorePath,
    store_root: Option<&Path>,
    root: &Arc<PathBuf>,
    records: Option<&WalkRecords>,
) -> Result<Batch, ClosureError> {
    let name = sp.path.display().to_string();
    let basename = sp.basename();
    let host_root = host_path(store_root, &name);
    let walked = match records.and_then(|r| r.load(&basename, &host_root)) {
        Some(recorded) => recorded,
        None => {
            let (walked, may_record) = walk_host(&name, &host_root)?;
            if let (Some(r), true) = (records, may_record) {
                r.store(&basename, &walked);
            }
            walked
        }
    };
    let group = Group::StorePath(basename.into());
    let root_image = image_of(&sp.path);
    // A file's image path under the store root names that very file when the store path
    // does (checked once here: a store root spelled oddly gets each file's own path).
    let shared = HostPath::under(Arc::clone(root));
    let under_root = shared.resolve(&root_image) == host_root;
    let mut out = Batch::with_capacity(
        walked.len(),
        walked
            .iter()
            .map(|(rel, _)| root_image.len() + 1 + rel.len())
            .sum(),
    );
    for (rel, r) in walked {
        let entry = match r {
            Recorded::Dir { mode, .. } => Entry::dir(mode, group.clone()),
            Recorded::Symlink(t) => Entry::symlink(t, group.clone()),
            Recorded::File { mode, size, print } => {
                let path = match (under_root, rel.is_empty()) {
                    (true, _) => shared.clone(),
                    (false, true) => HostPath::from(host_root.as_path()),
                    (false, false) => {
                        HostPath::from(host_root.join(std::ffi::OsStr::from_bytes(&rel)))
                    }
                };
                let content = Content::Host {
                    path,
                    size,
                    stamp: Some(print),
                };
                Entry::file(content, mode, group.clone())
            }
        };
        let image: &[&[u8]] = if rel.is_empty() {
            &[&root_image]
        } else {
            &[&root_image, b"/", &rel]
        };
        out.push(image, entry);
    }
    Ok(out)
}

/// The walk of the store path `name` at `host_root`: each entry's path relative to it (the
/// root's is empty) and what it is; and whether the path may be recorded
/// ([`WalkRecords::may_record`]).
fn walk_host(name: &str, host_root: &Path) -> Result<(Walk, bool), ClosureError> {
    let read_err = |host: &Path, err| ClosureError::StoreRead {
        path: name.to_string(),
        host: host.display().to_string(),
        err,
    };
    let mut out = Vec::new();
    let mut may_record = false;
    let mut each = |host: &Path, depth, meta: &fs::Metadata| {
        let rel = if depth > 0 {
            host.strip_prefix(host_root)
                .expect("walked under the root")
                .as_os_str()
                .as_bytes()
                .to_vec()
        } else {
            may_record = WalkRecords::may_record(meta);
            Vec::new()
        };
        let ft = meta.file_type();
        let mode = meta.mode() & 0o7777;
        let stamp = crate::tree::HostStamp::of(meta).print();
        let entry = if ft.is_symlink() {
            let target = fs::read_link(host).map_err(|e| read_err(host, e))?;
            let t = target.as_os_str().as_bytes().to_vec();
            if depth == 0 && !link_stays_in_store(&t) {
                return Err(ClosureError::EscapingSymlink {
                    path: name.to_string(),
                    target: String::from_utf8_lossy(&t).into_owned(),
                });
            }
            Recorded::Symlink(t)
        } else if ft.is_dir() {
            Recorded::Dir {
                mode,
                print: stamp.get(),
            }
        } else if ft.is_file() {
            Recorded::File {
                mode,
                size: meta.len(),
                print: stamp,
            }
        } else {
            return Err(ClosureError::UnsupportedFile {
                path: name.to_string(),
                host: host.display().to_string(),
                what: file_type_name(ft),
            });
        };
        out.push((rel, entry));
        Ok(())
    };
    walk_sorted(host_root, &mut each, &read_err)?;
    Ok((out, may_record))
}

/// `/nix/store/x` → `nix/store/x` as image-path bytes.
fn image_of(p: &Path) -> Vec<u8> {
    crate::tree::image_path(p.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "/nix/store/0kwfpbiwpkrc415hz2ykpagpzw5pk1mr-busybox-static";
    const B: &str = "/nix/store/6w1z088wcnwgiw7qnlrf5v4rnngspq7c-greeting";
    const C: &str = "/nix/store/07v862jyjr4jfbiyxhkzm276y8p0dyv5-fixture-lib";

    #[test]
    fn nar_size_matches_nix_for_a_single_file() {
        // The fixture's `greeting` (builtins.toFile, 40 bytes): Nix reports narSize 152.
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("g");
        fs::write(&f, "hello from the imgbuild fixture closure\n").unwrap();
        assert_eq!(nar_walk(&f, None).unwrap(), 152);
    }

    #[test]
    fn scanner_finds_hashes_across_chunk_boundaries_and_in_names() {
        let hashes: HashMap<[u8; HASH_LEN], usize> =
            [(hash_part(A), 0), (hash_part(B), 1), (hash_part(C), 2)].into();
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("blob");
        let mut data = vec![b'x'; (1 << 20) - 10];
        data.extend_from_slice(&hash_part(A)); // straddles the 1 MiB chunk edge
        data.extend_from_slice(b"-busybox\0");
        fs::write(&f, &data).unwrap();
        let mut found = BTreeSet::new();
        Scanner {
            hashes: &hashes,
            found: &mut found,
        }
        .scan_file(&f)
        .unwrap();
        assert_eq!(found, [0].into());
        let mut found = BTreeSet::new();
        let mut s = Scanner {
            hashes: &hashes,
            found: &mut found,
        };
        s.scan(format!("x{}y", &B[11..43]).as_bytes());
        s.scan(b"0kwfpbiwpkrc415hz2ykpagpzw5pk1m"); // 31 chars: too short
        assert_eq!(found, [1].into());
    }

    #[test]
    fn store_symlinks_must_stay_in_the_store() {
        assert!(link_stays_in_store(A.as_bytes()));
        assert!(link_stays_in_store(
            b"0kwfpbiwpkrc415hz2ykpagpzw5pk1mr-busybox-static"
        ));
        assert!(link_stays_in_store(b"../store/x-y"));
        assert!(!link_stays_in_store(b"/etc/passwd"));
        assert!(!link_stays_in_store(b"../../etc"));
        assert!(!link_stays_in_store(b"/nix/store"));
    }
}
