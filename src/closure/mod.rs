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
//!
//! By job: [`input`] (the input formats), [`store`] (reading the store: sizes, reference
//! scanning, the image entries), [`walk_record`] (store walks remembered in the layer cache),
//! [`executables`] (the image-wide ELF check).

use std::io;
use std::path::PathBuf;

use crate::tree::TreeError;

pub mod executables;
pub mod input;
pub mod store;
pub mod walk_record;

pub use executables::{check_executables, unresolved, ElfCheck, ElfCheckArgs};
pub use input::{parse_bytes, InputFormat};
pub use store::load;

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
    /// Several executables of the image cannot start (or one misses several things).
    #[error("{} problems with the executables of the image: {}; add the store paths that provide them to the closure (or package them with --elf-check warn)", .0.len(), list(.0))]
    Executables(Vec<ClosureError>),
}

fn list(problems: &[ClosureError]) -> String {
    problems
        .iter()
        .enumerate()
        .map(|(n, p)| format!("({}) {p}", n + 1))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ClosureError {
    /// The executable an ELF-check failure is about.
    pub fn binary(&self) -> Option<&str> {
        match self {
            ClosureError::MissingInterpreter { binary, .. }
            | ClosureError::MissingLibrary { binary, .. }
            | ClosureError::BadExecutable { binary, .. } => Some(binary),
            _ => None,
        }
    }
}

pub(crate) fn malformed(input: &str, what: impl Into<String>) -> ClosureError {
    ClosureError::Malformed {
        input: input.to_string(),
        what: what.into(),
    }
}

// ---------------------------------------------------------------------------------------
// Store path names

/// Nix's base-32 alphabet (no e, o, u, t).
const NIX_BASE32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
pub(crate) const HASH_LEN: usize = 32;

/// `BASE32_TABLE[byte]`: the byte is in `NIX_BASE32`.
pub(crate) static BASE32_TABLE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < NIX_BASE32.len() {
        t[NIX_BASE32[i] as usize] = true;
        i += 1;
    }
    t
};

/// True for `<32 nix-base32 chars>-<name>`.
pub(crate) fn is_store_basename(b: &str) -> bool {
    let bytes = b.as_bytes();
    bytes.len() > HASH_LEN + 1
        && bytes[..HASH_LEN].iter().all(|&c| BASE32_TABLE[c as usize])
        && bytes[HASH_LEN] == b'-'
        && !bytes.contains(&b'/')
        && !bytes.iter().any(|c| c.is_ascii_whitespace() || *c == 0)
}

/// `/nix/store/<hash>-<name>` (or a bare `<hash>-<name>`, as newer Nix JSON may write
/// references) → the full path; anything else → `None`.
pub(crate) fn store_path(s: &str) -> Option<String> {
    let base = match s.strip_prefix(STORE_DIR) {
        Some(rest) => rest.strip_prefix('/')?,
        None if !s.contains('/') => s,
        None => return None,
    };
    is_store_basename(base).then(|| format!("{STORE_DIR}/{base}"))
}

pub(crate) fn hash_part(path: &str) -> [u8; HASH_LEN] {
    let base = &path.as_bytes()[STORE_DIR.len() + 1..];
    base[..HASH_LEN].try_into().expect("validated store path")
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "/nix/store/0kwfpbiwpkrc415hz2ykpagpzw5pk1mr-busybox-static";
    const B: &str = "/nix/store/6w1z088wcnwgiw7qnlrf5v4rnngspq7c-greeting";

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
}
