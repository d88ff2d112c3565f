//! The Nix closure: store paths, their references and sizes, read from what Nix already
//! emits, turned into image `Tree` entries under `nix/store/`, and the check that every ELF
//! executable of an image finds its interpreter and libraries in it.
//!
//! Inputs (`--closure`, repeatable; the format of each is detected from its content):
//! - `nix path-info --json --recursive`: the array form of Nix 2.8 (`[{path, narSize,
//!   references, …}]`) and the object form of newer Nix (`{"/nix/store/…": {narSize, …}}`);
//!   a structured-attrs exportReferencesGraph JSON (`{"name": [{path, …}]}`) too.
//! - a closureInfo directory (`registration`, in the `nix-store --dump-db` format: path,
//!   narHash, narSize, deriver, reference count, references one per line) or such a
//!   registration file alone;
//! - an exportReferencesGraph file (the same records without hash and size);
//! - a plain list of store paths, one per line: references are then found by scanning every
//!   file (names, contents, symlink targets) for the 32-character hash of each listed path,
//!   as Nix does. Only paths known to the closure count.
//!
//! Several inputs are merged (references united). Every reference must be in the closure.
//! Sizes missing from an input (exportReferencesGraph, plain list) are computed from the
//! store as the exact NAR serialisation size, so `nar_size` is always known after `load`.
//!
//! Store files are read from `/nix/store`, or from `DIR/nix/store` with `--store-root DIR`;
//! image paths are always `nix/store/…`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::tree::{display_path, Content, Entry, Group, Kind, Tree, TreeError};

/// The store directory inside the image (and on the host without `--store-root`).
pub const STORE_DIR: &str = "/nix/store";

/// One store path of the closure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorePath {
    /// `/nix/store/<hash>-<name>` (always the image path, also with `--store-root`).
    pub path: PathBuf,
    /// Size of the path's NAR serialisation: from the input when it says (path-info JSON,
    /// closureInfo), else computed from the store by `load`. `None` only when built by hand.
    pub nar_size: Option<u64>,
    /// The NAR hash as the input gives it (`sha256:<base32>` or SRI `sha256-<base64>`), for
    /// the SBOM; `None` when the input does not say (plain path lists).
    pub nar_hash: Option<String>,
    /// Store paths this one references, sorted; may include itself.
    pub references: Vec<PathBuf>,
}

impl StorePath {
    /// `<hash>-<name>`.
    pub fn basename(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// A closed set of store paths, sorted by path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Closure {
    pub paths: Vec<StorePath>,
}

/// Why a closure could not be loaded, packaged or checked. Each names the input file or
/// store path and says what to do. All of them are the user's input (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    #[error("closure input {input}: cannot read it: {err}; check the --closure argument")]
    ReadInput { input: String, err: io::Error },
    #[error("closure input {input}: {what}")]
    Malformed { input: String, what: String },
    #[error("closure input {input}: store path {path} references {reference}, which is not in the closure; pass the whole closure (nix path-info --json --recursive, a closureInfo, or a complete path list)")]
    MissingReference {
        input: String,
        path: String,
        reference: String,
    },
    #[error("store path {path}: cannot read {host}: {err}; make sure it is realised (nix-store --realise) and readable by this user (check its permissions), or point --store-root at a directory holding nix/store")]
    StoreRead {
        path: String,
        host: String,
        err: io::Error,
    },
    #[error("store path {path} is a symlink to {target}, which is outside the Nix store; a store path must be a file, a directory or a symlink to another store path")]
    EscapingSymlink { path: String, target: String },
    #[error("store path {path}: {host} is a {what}, which a Nix store cannot hold; only files, directories and symlinks are packaged")]
    UnsupportedFile {
        path: String,
        host: String,
        what: &'static str,
    },
    #[error("store path {path}: {err}")]
    Tree { path: String, err: TreeError },
    #[error("executable {binary}: its interpreter {interpreter} is not in the image; add the store path that provides it to the closure")]
    MissingInterpreter { binary: String, interpreter: String },
    #[error("executable {binary}: library {library}{via} is not in the image (searched {searched}); add the store path that provides it to the closure or fix the RUNPATH")]
    MissingLibrary {
        binary: String,
        library: String,
        /// ` (needed by /path/of/lib.so)` when a library, not the executable, needs it.
        via: String,
        searched: String,
    },
    #[error("executable {binary}: {what}")]
    BadExecutable { binary: String, what: String },
}

fn malformed(input: &str, what: impl Into<String>) -> ClosureError {
    ClosureError::Malformed {
        input: input.to_string(),
        what: what.into(),
    }
}

// ---------------------------------------------------------------------------------------
// Store path names

/// Nix's base-32 alphabet (no e, o, u, t).
const NIX_BASE32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
const HASH_LEN: usize = 32;

/// `BASE32_TABLE[byte]`: the byte is in `NIX_BASE32`.
static BASE32_TABLE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < NIX_BASE32.len() {
        t[NIX_BASE32[i] as usize] = true;
        i += 1;
    }
    t
};

/// True for `<32 nix-base32 chars>-<name>`.
fn is_store_basename(b: &str) -> bool {
    let bytes = b.as_bytes();
    bytes.len() > HASH_LEN + 1
        && bytes[..HASH_LEN].iter().all(|&c| BASE32_TABLE[c as usize])
        && bytes[HASH_LEN] == b'-'
        && !bytes.contains(&b'/')
        && !bytes.iter().any(|c| c.is_ascii_whitespace() || *c == 0)
}

/// `/nix/store/<hash>-<name>` (or a bare `<hash>-<name>`, as newer Nix JSON may write
/// references) → the full path; anything else → `None`.
fn store_path(s: &str) -> Option<String> {
    let base = match s.strip_prefix(STORE_DIR) {
        Some(rest) => rest.strip_prefix('/')?,
        None if !s.contains('/') => s,
        None => return None,
    };
    is_store_basename(base).then(|| format!("{STORE_DIR}/{base}"))
}

fn hash_part(path: &str) -> [u8; HASH_LEN] {
    let base = &path.as_bytes()[STORE_DIR.len() + 1..];
    base[..HASH_LEN].try_into().expect("validated store path")
}

// ---------------------------------------------------------------------------------------
// Parsing

/// One store path as an input describes it (paths already validated and normalised).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    path: String,
    nar_size: Option<u64>,
    nar_hash: Option<String>,
    references: Vec<String>,
}

/// What one input holds.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// A reference graph (JSON, registration, exportReferencesGraph).
    Records(Vec<Record>),
    /// A plain list of store paths; references come from scanning.
    List(Vec<String>),
}

/// Detects the format of one input file's bytes and parses it.
fn parse_input(input: &str, bytes: &[u8]) -> Result<Parsed, ClosureError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(malformed(input, "is empty; expected nix path-info JSON, a closureInfo registration, an exportReferencesGraph file or a list of store paths")),
        Some(b'[') | Some(b'{') => parse_json(input, bytes).map(Parsed::Records),
        Some(_) => {
            let text = std::str::from_utf8(bytes).map_err(|e| {
                malformed(
                    input,
                    format!("byte offset {}: not UTF-8 text", e.valid_up_to()),
                )
            })?;
            let has_count_line = text.lines().any(|l| {
                let l = l.trim();
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit())
            });
            if has_count_line {
                parse_registration(input, text).map(Parsed::Records)
            } else {
                parse_list(input, text).map(Parsed::List)
            }
        }
    }
}

/// `nix path-info --json` in either form, or a structured-attrs exportReferencesGraph.
fn parse_json(input: &str, bytes: &[u8]) -> Result<Vec<Record>, ClosureError> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        let what = if e.is_eof() {
            format!(
                "JSON is truncated (line {}, column {})",
                e.line(),
                e.column()
            )
        } else {
            format!("invalid JSON: {e}")
        };
        malformed(input, what)
    })?;
    match &v {
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| json_record(input, &format!("entry {i}"), None, item))
            .collect(),
        serde_json::Value::Object(map) => {
            if map.keys().any(|k| store_path(k).is_some()) {
                // Newer Nix: keyed by store path.
                map.iter()
                    .map(|(k, item)| json_record(input, &format!("key {k:?}"), Some(k), item))
                    .collect()
            } else {
                // Structured attrs: {"name": [ {path, narSize, references, …}, … ], …}.
                let mut out = Vec::new();
                let mut found = false;
                for (k, val) in map {
                    if let serde_json::Value::Array(items) = val {
                        if items.first().and_then(|o| o.get("path")).is_some() {
                            found = true;
                            for (i, item) in items.iter().enumerate() {
                                out.push(json_record(
                                    input,
                                    &format!("{k:?} entry {i}"),
                                    None,
                                    item,
                                )?);
                            }
                        }
                    }
                }
                if !found {
                    return Err(malformed(input, "JSON object is neither keyed by store path (nix path-info --json) nor holds a list of {path, references} objects (exportReferencesGraph)"));
                }
                Ok(out)
            }
        }
        _ => Err(malformed(
            input,
            "JSON is neither an array nor an object of store paths",
        )),
    }
}

fn json_record(
    input: &str,
    at: &str,
    key: Option<&str>,
    item: &serde_json::Value,
) -> Result<Record, ClosureError> {
    let bad = |what: String| malformed(input, format!("{at}: {what}"));
    if item.is_null() {
        return Err(bad("the path is not valid in the store (null); build or fetch it, then run nix path-info again".into()));
    }
    let obj = item
        .as_object()
        .ok_or_else(|| bad("expected an object".into()))?;
    let raw = match key {
        Some(k) => k,
        None => obj
            .get("path")
            .and_then(|p| p.as_str())
            .ok_or_else(|| bad("no \"path\" string".into()))?,
    };
    let path = store_path(raw).ok_or_else(|| {
        bad(format!(
            "{raw:?} is not a store path (/nix/store/<hash>-<name>)"
        ))
    })?;
    if obj.get("valid").and_then(|v| v.as_bool()) == Some(false) {
        return Err(bad(format!(
            "{path} is not valid in the store; build or fetch it, then run nix path-info again"
        )));
    }
    let nar_size = match obj.get("narSize") {
        None | Some(serde_json::Value::Null) => None,
        Some(n) => Some(
            n.as_u64()
                .ok_or_else(|| bad(format!("{path}: narSize {n} is not a size")))?,
        ),
    };
    let refs = obj
        .get("references")
        .and_then(|r| r.as_array())
        .ok_or_else(|| bad(format!("{path}: no \"references\" list")))?;
    let references = refs
        .iter()
        .map(|r| {
            r.as_str().and_then(store_path).ok_or_else(|| {
                bad(format!(
                    "{path}: reference {r} is not a store path (/nix/store/<hash>-<name>)"
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let nar_hash = obj
        .get("narHash")
        .and_then(|h| h.as_str())
        .map(str::to_string);
    Ok(Record {
        path,
        nar_size,
        nar_hash,
        references,
    })
}

/// The `nix-store --dump-db` / closureInfo `registration` format, and exportReferencesGraph
/// (records without the hash and size lines). Per record: path, [narHash, narSize,]
/// deriver (may be empty), reference count, references.
fn parse_registration(input: &str, text: &str) -> Result<Vec<Record>, ClosureError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let at = |n: usize, what: String| malformed(input, format!("line {}: {what}", n + 1));
    while i < lines.len() {
        if lines[i].trim().is_empty() {
            i += 1;
            continue;
        }
        let start = i;
        let path = store_path(lines[i].trim()).ok_or_else(|| {
            at(
                i,
                format!(
                    "{:?} is not a store path (a record starts with /nix/store/<hash>-<name>)",
                    lines[i]
                ),
            )
        })?;
        let truncated = |n: usize, what: &str| {
            malformed(
                input,
                format!(
                    "line {}: ends inside the record of {path} (line {}); expected {what}",
                    n + 1,
                    start + 1
                ),
            )
        };
        let get = |n: usize, what: &str| lines.get(n).copied().ok_or_else(|| truncated(n, what));
        let is_count = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        i += 1;
        let l1 = get(i, "the hash or deriver")?;
        let mut nar_size = None;
        let mut nar_hash = None;
        if !l1.is_empty() && !l1.starts_with('/') {
            // narHash, then narSize.
            nar_hash = Some(l1.trim().to_string());
            i += 1;
            let s = get(i, "the NAR size")?;
            if !s.is_empty() {
                nar_size = Some(
                    s.trim()
                        .parse::<u64>()
                        .map_err(|_| at(i, format!("NAR size {s:?} is not a number")))?,
                );
            }
            i += 1; // deriver
            get(i, "the deriver")?;
        } else if !is_count(get(i + 1, "the reference count")?) {
            if l1.is_empty() && get(i + 1, "the NAR size")?.is_empty() {
                i += 2; // empty hash and size lines, then the deriver
                get(i, "the deriver")?;
            } else {
                return Err(at(
                    i + 1,
                    format!(
                        "expected the reference count of {path}, found {:?}",
                        lines[i + 1]
                    ),
                ));
            }
        }
        i += 1;
        let c = get(i, "the reference count")?;
        if !is_count(c.trim()) {
            return Err(at(
                i,
                format!("expected the reference count of {path}, found {c:?}"),
            ));
        }
        let count: usize = c
            .trim()
            .parse()
            .map_err(|_| at(i, format!("reference count {c:?} is too large")))?;
        let mut references = Vec::new();
        for _ in 0..count {
            i += 1;
            let r = get(i, "a reference")?;
            references.push(store_path(r.trim()).ok_or_else(|| {
                at(
                    i,
                    format!(
                        "reference {r:?} of {path} is not a store path (the count says {count})"
                    ),
                )
            })?);
        }
        i += 1;
        out.push(Record {
            path,
            nar_size,
            nar_hash,
            references,
        });
    }
    Ok(out)
}

/// The input formats [`load`] detects, to parse one of them on purpose ([`parse_bytes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    /// `nix path-info --json` (either form) or a structured-attrs exportReferencesGraph.
    Json,
    /// closureInfo `registration` / `nix-store --dump-db` / exportReferencesGraph records.
    Registration,
    /// A plain list of store paths.
    List,
}

/// Parses one closure input's bytes as `format` (`None`: detected as [`load`] does) and
/// returns every store path it names (paths and references), without touching the store.
/// For fuzzing and tests; errors are the ones `load` gives for the same bytes.
pub fn parse_bytes(
    input: &str,
    bytes: &[u8],
    format: Option<InputFormat>,
) -> Result<Vec<String>, ClosureError> {
    let text = || {
        std::str::from_utf8(bytes).map_err(|e| {
            malformed(
                input,
                format!("byte offset {}: not UTF-8 text", e.valid_up_to()),
            )
        })
    };
    let parsed = match format {
        None => parse_input(input, bytes)?,
        Some(InputFormat::Json) => Parsed::Records(parse_json(input, bytes)?),
        Some(InputFormat::Registration) => Parsed::Records(parse_registration(input, text()?)?),
        Some(InputFormat::List) => Parsed::List(parse_list(input, text()?)?),
    };
    Ok(match parsed {
        Parsed::Records(recs) => recs
            .into_iter()
            .flat_map(|r| std::iter::once(r.path).chain(r.references))
            .collect(),
        Parsed::List(paths) => paths,
    })
}

/// A plain list of store paths; blank lines and `#` comments are skipped.
fn parse_list(input: &str, text: &str) -> Result<Vec<String>, ClosureError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        out.push(store_path(l).ok_or_else(|| {
            malformed(
                input,
                format!(
                    "line {}: {l:?} is not a store path (/nix/store/<hash>-<name>)",
                    n + 1
                ),
            )
        })?);
    }
    if out.is_empty() {
        return Err(malformed(input, "lists no store paths"));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Loading and merging

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
    let results = parallel_map(&todo, |&(i, scan)| {
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

/// Runs `f` over `items` on up to `available_parallelism` threads; results in item order.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, ClosureError> + Sync,
) -> Result<Vec<R>, ClosureError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<Result<R, ClosureError>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                out.lock().unwrap()[i] = Some(r);
            });
        }
    });
    out.into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
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

/// Walks a store path on the host without following symlinks, returning its exact NAR
/// size; with a scanner, also scans names, contents and symlink targets for hashes.
fn nar_walk(host: &Path, mut scanner: Option<Scanner<'_>>) -> io::Result<u64> {
    fn node(path: &Path, sc: &mut Option<Scanner<'_>>) -> io::Result<u64> {
        // Name the file inside the store path in every error.
        let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let meta = fs::symlink_metadata(path).map_err(named)?;
        let ft = meta.file_type();
        // "(" "type" <type> … ")"
        let mut size = nar_str(1) + nar_str(4) + nar_str(1);
        if ft.is_symlink() {
            let target = fs::read_link(path)?;
            let t = target.as_os_str().as_bytes();
            if let Some(s) = sc {
                s.scan(t);
            }
            size += nar_str(7) + nar_str(6) + nar_str(t.len() as u64);
        } else if ft.is_dir() {
            size += nar_str(9);
            let mut names: Vec<_> = fs::read_dir(path)
                .map_err(named)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()?;
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for name in names {
                let n = name.as_bytes();
                if let Some(s) = sc {
                    s.scan(n);
                }
                // "entry" "(" "name" <name> "node" <node> ")"
                size += nar_str(5) + nar_str(1) + nar_str(4) + nar_str(n.len() as u64);
                size += nar_str(4) + node(&path.join(&name), sc)? + nar_str(1);
            }
        } else if ft.is_file() {
            size += nar_str(7); // "regular"
            if meta.mode() & 0o100 != 0 {
                size += nar_str(10) + nar_str(0); // "executable" ""
            }
            size += nar_str(8) + nar_str(meta.len()); // "contents" <bytes>
            if let Some(s) = sc {
                s.scan_file(path).map_err(named)?;
            }
        } else {
            return Err(io::Error::other(SpecialFile(
                path.to_path_buf(),
                file_type_name(ft),
            )));
        }
        Ok(size)
    }
    Ok(nar_str(13) + node(host, &mut scanner)?) // "nix-archive-1"
}

// ---------------------------------------------------------------------------------------
// Into the image tree

/// One entry found while walking the store, before hard links are decided.
struct Walked {
    image: Vec<u8>,
    entry: Entry,
    inode: Option<(u64, u64)>,
}

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
    /// when the tree lacks them. Reads from `DIR/nix/store` with `store_root`.
    pub fn add_to_tree(
        &self,
        tree: &mut Tree,
        store_root: Option<&Path>,
    ) -> Result<(), ClosureError> {
        let per_path = parallel_map(&self.paths, |sp| walk_store_path(sp, store_root))?;
        let mut all: Vec<Walked> = per_path.into_iter().flatten().collect();

        // Hard links: group by inode; the byte-smallest image path is the file.
        let mut by_inode: BTreeMap<(u64, u64), Vec<usize>> = BTreeMap::new();
        for (i, w) in all.iter().enumerate() {
            if let Some(ino) = w.inode {
                by_inode.entry(ino).or_default().push(i);
            }
        }
        for idxs in by_inode.values().filter(|v| v.len() > 1) {
            let first = *idxs
                .iter()
                .min_by(|&&a, &&b| all[a].image.cmp(&all[b].image))
                .expect("non-empty");
            let target = all[first].image.clone();
            for &i in idxs.iter().filter(|&&i| i != first) {
                all[i].entry.kind = Kind::HardLink(target.clone());
            }
        }

        for dir in ["nix", "nix/store"] {
            if tree.get(dir).is_none() {
                tree.insert(dir, Entry::dir(0o755, Group::Base))
                    .map_err(|err| ClosureError::Tree {
                        path: STORE_DIR.to_string(),
                        err,
                    })?;
            }
        }
        for w in all {
            let path = display_path(&w.image);
            tree.insert(&w.image, w.entry)
                .map_err(|err| ClosureError::Tree { path, err })?;
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

/// Walks one store path on the host (never following symlinks) into tree entries.
fn walk_store_path(sp: &StorePath, store_root: Option<&Path>) -> Result<Vec<Walked>, ClosureError> {
    let name = sp.path.display().to_string();
    let base = sp.basename();
    let group = Group::StorePath(base.clone());
    let host_root = host_path(store_root, &name);
    let read_err = |host: &Path, err| ClosureError::StoreRead {
        path: name.clone(),
        host: host.display().to_string(),
        err,
    };
    let mut out = Vec::new();
    // (host path, image path) still to visit.
    let mut stack = vec![(host_root.clone(), image_of(&sp.path))];
    while let Some((host, image)) = stack.pop() {
        let meta = fs::symlink_metadata(&host).map_err(|e| read_err(&host, e))?;
        let ft = meta.file_type();
        let mode = meta.mode() & 0o7777;
        let entry = if ft.is_symlink() {
            let target = fs::read_link(&host).map_err(|e| read_err(&host, e))?;
            let t = target.as_os_str().as_bytes().to_vec();
            if host == host_root && !link_stays_in_store(&t) {
                return Err(ClosureError::EscapingSymlink {
                    path: name.clone(),
                    target: String::from_utf8_lossy(&t).into_owned(),
                });
            }
            Entry::symlink(t, group.clone())
        } else if ft.is_dir() {
            let mut children: Vec<_> = fs::read_dir(&host)
                .map_err(|e| read_err(&host, e))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()
                .map_err(|e| read_err(&host, e))?;
            children.sort_by(|a, b| b.as_bytes().cmp(a.as_bytes())); // popped in order
            for c in children {
                let mut img = image.clone();
                img.push(b'/');
                img.extend_from_slice(c.as_bytes());
                stack.push((host.join(&c), img));
            }
            Entry::dir(mode, group.clone())
        } else if ft.is_file() {
            let content = Content::Host {
                path: host.clone(),
                size: meta.len(),
                stamp: Some(crate::tree::HostStamp::of(&meta)),
            };
            let inode = (meta.nlink() > 1).then(|| (meta.dev(), meta.ino()));
            out.push(Walked {
                image,
                entry: Entry::file(content, mode, group.clone()),
                inode,
            });
            continue;
        } else {
            return Err(ClosureError::UnsupportedFile {
                path: name.clone(),
                host: host.display().to_string(),
                what: file_type_name(ft),
            });
        };
        out.push(Walked {
            image,
            entry,
            inode: None,
        });
    }
    Ok(out)
}

/// `/nix/store/x` → `nix/store/x` as image-path bytes.
fn image_of(p: &Path) -> Vec<u8> {
    crate::tree::image_path(p.as_os_str().as_bytes())
}

// ---------------------------------------------------------------------------------------
// ELF check

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

/// Follows symlinks (and hard links) inside the tree to the entry a path names, like the
/// kernel would inside the image. Returns the resolved image path and entry.
fn resolve<'t>(tree: &'t Tree, path: &[u8]) -> Option<(Vec<u8>, &'t Entry)> {
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
    let mut entry = tree.get(&joined)?;
    if let Kind::HardLink(t) = &entry.kind {
        entry = tree.get(t)?;
    }
    Some((joined, entry))
}

/// An ELF object read from the tree.
struct Object {
    interpreter: Option<String>,
    needed: Vec<String>,
    info: DynInfo,
}

fn read_content(entry: &Entry, limit: Option<usize>) -> io::Result<Option<Vec<u8>>> {
    match &entry.kind {
        Kind::File(Content::Bytes(b)) => Ok(Some(match limit {
            Some(n) => b[..b.len().min(n)].to_vec(),
            None => b.to_vec(),
        })),
        Kind::File(Content::Host { path, .. }) => match limit {
            Some(n) => {
                let mut buf = Vec::with_capacity(n);
                fs::File::open(path)?.take(n as u64).read_to_end(&mut buf)?;
                Ok(Some(buf))
            }
            None => fs::read(path).map(Some),
        },
        _ => Ok(None),
    }
}

/// Cheap test on the first 4 KiB: false for non-ELF files and for ELF files that are
/// neither `ET_EXEC` nor have a `PT_INTERP` (libraries), so those are not read whole.
/// True when unsure (program headers past the first 4 KiB).
fn may_be_executable(entry: &Entry) -> bool {
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

fn read_object(binary: &str, entry: &Entry) -> Result<Option<Object>, ClosureError> {
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
/// The first failure is returned, naming the executable and the missing interpreter or
/// library (and the library that needs it, when it is not the executable).
pub fn check_executables(tree: &Tree) -> Result<(), ClosureError> {
    let mut objects: HashMap<Vec<u8>, Option<Object>> = HashMap::new();
    fn load(
        objects: &mut HashMap<Vec<u8>, Option<Object>>,
        path: &[u8],
        entry: &Entry,
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
        let Some(entry) = tree.get(&real) else {
            continue;
        };
        if !objects.contains_key(&real) && !may_be_executable(entry) {
            continue;
        }
        if !load(&mut objects, &real, entry)? {
            continue;
        }
        let binary = display_path(&path);
        let exe = objects[&real].as_ref().expect("loaded");
        if exe.interpreter.is_none() && exe.info.etype != 2 {
            continue; // a shared library or static PIE without needs
        }
        let interp_dir = match &exe.interpreter {
            Some(i) => {
                let ok = resolve(tree, i.as_bytes())
                    .is_some_and(|(_, e)| matches!(e.kind, Kind::File(_)));
                if !ok {
                    return Err(ClosureError::MissingInterpreter {
                        binary,
                        interpreter: i.clone(),
                    });
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
            for c in &candidates {
                if let Some((p, e)) = resolve(tree, c) {
                    if matches!(e.kind, Kind::File(_)) && load(&mut objects, &p, e)? {
                        found = Some(p);
                        break;
                    }
                }
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
                return Err(ClosureError::MissingLibrary {
                    binary,
                    library: lib,
                    via,
                    searched,
                });
            };
            let needs = objects[&p].as_ref().expect("loaded").needed.clone();
            queue.extend(needs.into_iter().map(|n| (p.clone(), n)));
        }
    }
    Ok(())
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

    const A: &str = "/nix/store/0kwfpbiwpkrc415hz2ykpagpzw5pk1mr-busybox-static";
    const B: &str = "/nix/store/6w1z088wcnwgiw7qnlrf5v4rnngspq7c-greeting";
    const C: &str = "/nix/store/07v862jyjr4jfbiyxhkzm276y8p0dyv5-fixture-lib";

    fn rec(path: &str, size: Option<u64>, refs: &[&str]) -> Record {
        Record {
            path: path.into(),
            nar_size: size,
            nar_hash: None,
            references: refs.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn hashed(mut r: Record, h: &str) -> Record {
        r.nar_hash = Some(h.into());
        r
    }

    fn err_text(r: Result<Parsed, ClosureError>) -> String {
        r.expect_err("should fail").to_string()
    }

    #[test]
    fn store_path_names_are_validated() {
        assert_eq!(store_path(A).as_deref(), Some(A));
        assert_eq!(
            store_path("6w1z088wcnwgiw7qnlrf5v4rnngspq7c-greeting").as_deref(),
            Some(B)
        );
        for bad in [
            "/nix/store/short-x",
            "/nix/store/0kwfpbiwpkrc415hz2ykpagpzw5pk1me-x", // `e` is not nix-base32
            "/nix/store/0kwfpbiwpkrc415hz2ykpagpzw5pk1mr-",
            "/nix/store/0kwfpbiwpkrc415hz2ykpagpzw5pk1mr-x/bin",
            "/usr/store/0kwfpbiwpkrc415hz2ykpagpzw5pk1mr-x",
            "relative/0kwfpbiwpkrc415hz2ykpagpzw5pk1mr-x",
        ] {
            assert_eq!(store_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn both_json_forms_parse_to_the_same_records() {
        let array = format!(
            r#"[{{"path":"{C}","narHash":"sha256-FacjNYKtDtW+x28WNRMOPK2/WhC1xyjX/aHv/gJITr0=","narSize":2152,
                "references":["{A}","{B}"],"deriver":"/nix/store/i04d2dv5pc5bps6mxhmskq3ga63vr8nf-fixture-lib.drv",
                "registrationTime":1795619747,"ultimate":true}},
               {{"path":"{A}","narSize":1983504,"references":[]}},
               {{"path":"{B}","narSize":152,"references":[],"ca":"text:sha256:0q3k"}}]"#
        );
        let object = format!(
            r#"{{"{C}":{{"narHash":"sha256-FacjNYKtDtW+x28WNRMOPK2/WhC1xyjX/aHv/gJITr0=","narSize":2152,"references":["{A}","6w1z088wcnwgiw7qnlrf5v4rnngspq7c-greeting"]}},
                "{A}":{{"narSize":1983504,"references":[]}},"{B}":{{"narSize":152,"references":[]}}}}"#
        );
        let mut a = match parse_input("a.json", array.as_bytes()).unwrap() {
            Parsed::Records(r) => r,
            p => panic!("{p:?}"),
        };
        let mut o = match parse_input("o.json", object.as_bytes()).unwrap() {
            Parsed::Records(r) => r,
            p => panic!("{p:?}"),
        };
        a.sort_by(|x, y| x.path.cmp(&y.path));
        o.sort_by(|x, y| x.path.cmp(&y.path));
        assert_eq!(a, o);
        assert_eq!(
            a[0],
            hashed(
                rec(C, Some(2152), &[A, B]),
                "sha256-FacjNYKtDtW+x28WNRMOPK2/WhC1xyjX/aHv/gJITr0="
            )
        );
    }

    #[test]
    fn structured_attrs_export_graph_json_parses() {
        let j = format!(
            r#"{{"closure":[{{"closureSize":1,"narHash":"sha256:0q3k","narSize":152,"path":"{B}","references":["{B}"]}}],"name":"x","system":"x86_64-linux"}}"#
        );
        assert_eq!(
            parse_input("attrs.json", j.as_bytes()).unwrap(),
            Parsed::Records(vec![hashed(rec(B, Some(152), &[B]), "sha256:0q3k")])
        );
    }

    #[test]
    fn truncated_and_malformed_json_name_the_file_and_position() {
        let full = format!(r#"[{{"path":"{A}","narSize":1,"references":[]}}]"#);
        let e = err_text(parse_input("in.json", &full.as_bytes()[..30]));
        assert!(
            e.contains("in.json") && e.contains("truncated") && e.contains("column"),
            "{e}"
        );
        let e = err_text(parse_input("in.json", b"[{\"path\": 12,}]"));
        assert!(
            e.contains("in.json") && e.contains("invalid JSON") && e.contains("line 1"),
            "{e}"
        );
        let e = err_text(parse_input("in.json", br#"[{"narSize": 1}]"#));
        assert!(e.contains("entry 0") && e.contains("\"path\""), "{e}");
        let e = err_text(parse_input(
            "in.json",
            format!(r#"[{{"path":"{A}","narSize":1}}]"#).as_bytes(),
        ));
        assert!(e.contains("no \"references\""), "{e}");
        let e = err_text(parse_input(
            "in.json",
            format!(r#"[{{"path":"{A}","valid":false}}]"#).as_bytes(),
        ));
        assert!(e.contains("not valid in the store"), "{e}");
        let e = err_text(parse_input(
            "in.json",
            format!(r#"{{"{A}":null}}"#).as_bytes(),
        ));
        assert!(e.contains("not valid in the store"), "{e}");
        let e = err_text(parse_input(
            "in.json",
            format!(r#"[{{"path":"{A}","narSize":1,"references":["/etc/passwd"]}}]"#).as_bytes(),
        ));
        assert!(
            e.contains("/etc/passwd") && e.contains("not a store path"),
            "{e}"
        );
        let e = err_text(parse_input("in.json", b"{\"a\": 1}"));
        assert!(e.contains("neither keyed by store path"), "{e}");
        let e = err_text(parse_input("in.json", b"  \n"));
        assert!(e.contains("is empty"), "{e}");
    }

    #[test]
    fn dump_db_records_parse() {
        let text = format!(
            "{A}\na9da20ec0aa4ba9fe1b9ffd0b23d2945c068ca2b9f2ab54f4906a7a1d0608443\n1983504\n\
             /nix/store/jhsy8m2zvh02936mq9nfpnrh6qg0ykg5-busybox-static.drv\n0\n\
             {B}\n158bd698a3f17a32b00f73119a03242ee1138625087b404355b6ae5007b8e4fc\n152\n\n0\n\
             {C}\n15a7233582ad0ed5bec76f1635130e3cadbf5a10b5c728d7fda1effe02484ebd\n2152\n\
             /nix/store/i04d2dv5pc5bps6mxhmskq3ga63vr8nf-fixture-lib.drv\n3\n{A}\n{B}\n{C}\n"
        );
        assert_eq!(
            parse_input("registration", text.as_bytes()).unwrap(),
            Parsed::Records(vec![
                hashed(
                    rec(A, Some(1983504), &[]),
                    "a9da20ec0aa4ba9fe1b9ffd0b23d2945c068ca2b9f2ab54f4906a7a1d0608443"
                ),
                hashed(
                    rec(B, Some(152), &[]),
                    "158bd698a3f17a32b00f73119a03242ee1138625087b404355b6ae5007b8e4fc"
                ),
                hashed(
                    rec(C, Some(2152), &[A, B, C]),
                    "15a7233582ad0ed5bec76f1635130e3cadbf5a10b5c728d7fda1effe02484ebd"
                ),
            ])
        );
    }

    #[test]
    fn export_references_graph_records_parse() {
        // As Nix writes it: path, empty deriver, count, references.
        let text = format!("{C}\n\n2\n{A}\n{B}\n{A}\n\n0\n{B}\n\n0\n");
        assert_eq!(
            parse_input("graph", text.as_bytes()).unwrap(),
            Parsed::Records(vec![
                rec(C, None, &[A, B]),
                rec(A, None, &[]),
                rec(B, None, &[])
            ])
        );
        // With a deriver, and with empty hash and size lines.
        let text = format!(
            "{C}\n/nix/store/i04d2dv5pc5bps6mxhmskq3ga63vr8nf-x.drv\n1\n{A}\n{A}\n\n\n\n0\n"
        );
        assert_eq!(
            parse_input("graph", text.as_bytes()).unwrap(),
            Parsed::Records(vec![rec(C, None, &[A]), rec(A, None, &[])])
        );
    }

    #[test]
    fn truncated_and_malformed_registrations_name_the_line() {
        let e = err_text(parse_input("reg", format!("{C}\n\n2\n{A}\n").as_bytes()));
        assert!(
            e.contains("reg: line 5") && e.contains("ends inside the record"),
            "{e}"
        );
        let e = err_text(parse_input(
            "reg",
            format!("{C}\nabc\nxyz\n\n0\n").as_bytes(),
        ));
        assert!(e.contains("line 3") && e.contains("NAR size"), "{e}");
        let e = err_text(parse_input(
            "reg",
            format!("{C}\n\n1\nnot-a-path\n").as_bytes(),
        ));
        assert!(
            e.contains("line 4") && e.contains("not a store path"),
            "{e}"
        );
        let e = err_text(parse_input("reg", b"garbage\n\n0\n"));
        assert!(e.contains("line 1") && e.contains("garbage"), "{e}");
    }

    #[test]
    fn plain_lists_parse_and_bad_lines_are_named() {
        let text = format!("# closure\n{A}\n\n  {B}  \n");
        assert_eq!(
            parse_input("list", text.as_bytes()).unwrap(),
            Parsed::List(vec![A.into(), B.into()])
        );
        let e = err_text(parse_input(
            "list",
            format!("{A}\n/usr/bin/ls\n").as_bytes(),
        ));
        assert!(
            e.contains("list: line 2") && e.contains("/usr/bin/ls"),
            "{e}"
        );
        let e = err_text(parse_input("list", b"/nix/store/x\xff\n"));
        assert!(e.contains("byte offset 12") && e.contains("UTF-8"), "{e}");
    }

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
