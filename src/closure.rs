//! The Nix closure: store paths, their references and sizes, read from what Nix already
//! emits, and turned into image `Tree` entries under `nix/store/`.
//!
//! (API stub: filled in below by the closure work.)

// Called by the container/ISO pipeline once it is wired; until then nothing in the binary uses it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use crate::tree::Tree;

/// One store path of the closure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorePath {
    /// `/nix/store/<hash>-<name>` (always the image path, also with `--store-root`).
    pub path: PathBuf,
    /// NAR size when the input said it (path-info JSON, closureInfo); `None` otherwise.
    pub nar_size: Option<u64>,
    /// Store paths this one references, sorted; may include itself.
    pub references: Vec<PathBuf>,
}

/// A closed set of store paths, sorted by path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Closure {
    pub paths: Vec<StorePath>,
}

/// Why a closure could not be loaded, packaged or checked. Each names the input file or
/// store path and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    #[error("closure input {input}: {what}")]
    Malformed { input: String, what: String },
}

/// Reads closure inputs (format auto-detected per input) and merges them.
pub fn load(inputs: &[PathBuf], store_root: Option<&Path>) -> Result<Closure, ClosureError> {
    let _ = (inputs, store_root);
    Ok(Closure::default())
}

impl Closure {
    /// Adds every file of every store path to `tree` under `nix/store/`.
    pub fn add_to_tree(
        &self,
        tree: &mut Tree,
        store_root: Option<&Path>,
    ) -> Result<(), ClosureError> {
        let _ = (tree, store_root);
        Ok(())
    }

    /// Sum of the NAR sizes (or on-disk sizes where unknown).
    pub fn size(&self) -> u64 {
        self.paths.iter().filter_map(|p| p.nar_size).sum()
    }
}

/// Every ELF executable in the tree must find its interpreter and libraries in the tree.
pub fn check_executables(tree: &Tree) -> Result<(), ClosureError> {
    let _ = tree;
    Ok(())
}
