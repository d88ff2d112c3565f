//! Store walks remembered. The walk of a store path that Nix has made immutable — read-only
//! and with mtime 1, as Nix leaves every path it registers — is kept in the layer cache
//! (`walks/<hash>-<name>`) and used again, instead of an `lstat` of every file, while every
//! directory in the store path still has the stamp it had then (size, device, inode, mtime,
//! ctime). Adding, removing, renaming or replacing an entry changes its directory's mtime and
//! ctime, and so do `nix-store --delete` and rebuilding the path (a new inode) or
//! `nix-store --optimise` (a file replaced by a hard link is a rename in its directory).
//!
//! What is trusted: that a file of such a store path is not written in place, nor its mode
//! changed — Nix never does either, only root can, and Nix calls the result a corrupt store
//! (`nix-store --verify --check-contents`). A path that is not read-only with mtime 1 (a
//! synthetic store under `--store-root`, a path being built) is walked every time, and
//! `--no-cache` walks everything. docs/CLI.md "Store walks" says the same for users.
//!
//! The record is a small binary file: a magic line, then per entry in walk order its kind,
//! its path relative to the store path, and its mode; a directory's stamp print, a file's
//! size and stamp print, a symlink's target.

use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::oci::files::Pending;
use crate::tree::{HostStamp, StampPrint};

/// The first bytes of a record; bumped whenever what a record holds changes.
const MAGIC: &[u8] = b"imgbuild-walk-1\n";

/// One entry of a store path's walk, relative to the store path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// A directory: its mode and the print of its stamp when walked.
    Dir { mode: u32, print: u64 },
    /// A regular file: its mode, size and the print of its stamp.
    File {
        mode: u32,
        size: u64,
        print: StampPrint,
    },
    /// A symbolic link and its target.
    Symlink(Vec<u8>),
}

/// A store path's walk: each entry's path relative to the store path (the root's is empty,
/// and first), and what it is, in walk order.
pub type Walk = Vec<(Vec<u8>, Recorded)>;

/// The walk records of a layer cache (its `walks/` directory).
#[derive(Clone, Debug)]
pub struct WalkRecords {
    dir: PathBuf,
}

impl WalkRecords {
    /// The records kept under the layer cache `cache`.
    pub fn in_cache(cache: &Path) -> WalkRecords {
        WalkRecords {
            dir: cache.join("walks"),
        }
    }

    /// Whether a store path whose root has `root` as its `lstat` may be recorded: a directory
    /// as Nix leaves it, no write permission for anyone and mtime 1.
    pub fn may_record(root: &fs::Metadata) -> bool {
        root.is_dir() && root.mode() & 0o222 == 0 && root.mtime() == 1
    }

    /// The walk of the store path `basename` at `host_root` as recorded, if there is a record
    /// and every directory in it (the root first) still has its recorded stamp.
    pub fn load(&self, basename: &str, host_root: &Path) -> Option<Walk> {
        let bytes = fs::read(self.dir.join(basename)).ok()?;
        let entries = decode(&bytes)?;
        let mut dirs = 0;
        for (rel, r) in &entries {
            if let Recorded::Dir { print, .. } = r {
                let host = if rel.is_empty() {
                    host_root.to_path_buf()
                } else {
                    host_root.join(std::ffi::OsStr::from_bytes(rel))
                };
                let m = fs::symlink_metadata(&host).ok()?;
                if dirs == 0 && !Self::may_record(&m) {
                    return None;
                }
                if !m.is_dir() || HostStamp::of(&m).print().get() != *print {
                    return None;
                }
                dirs += 1;
            }
        }
        // The root is the first entry and a directory.
        (dirs > 0 && entries.first().is_some_and(|(rel, _)| rel.is_empty())).then_some(entries)
    }

    /// Records the walk of the store path `basename` (the root first, relative paths). A
    /// failure to write is only logged: the next build walks the path again.
    pub fn store(&self, basename: &str, entries: &[(Vec<u8>, Recorded)]) {
        let written = (|| -> std::io::Result<()> {
            fs::create_dir_all(&self.dir)?;
            let mut p = Pending::new_in(&self.dir, "walk")?;
            p.file.write_all(&encode(entries))?;
            p.persist(&self.dir.join(basename), true)?;
            Ok(())
        })();
        if let Err(e) = written {
            tracing::debug!(store_path = basename, error = %e, "could not record the walk");
        }
    }
}

fn encode(entries: &[(Vec<u8>, Recorded)]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    let bytes = |out: &mut Vec<u8>, b: &[u8]| {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    };
    for (rel, r) in entries {
        match r {
            Recorded::Dir { mode, print } => {
                out.push(0);
                bytes(&mut out, rel);
                out.extend_from_slice(&mode.to_le_bytes());
                out.extend_from_slice(&print.to_le_bytes());
            }
            Recorded::File { mode, size, print } => {
                out.push(1);
                bytes(&mut out, rel);
                out.extend_from_slice(&mode.to_le_bytes());
                out.extend_from_slice(&size.to_le_bytes());
                out.extend_from_slice(&print.get().to_le_bytes());
            }
            Recorded::Symlink(target) => {
                out.push(2);
                bytes(&mut out, rel);
                bytes(&mut out, target);
            }
        }
    }
    out
}

/// The entries of a record, or `None` if it is not one this version wrote whole.
fn decode(b: &[u8]) -> Option<Walk> {
    struct Cursor<'a>(&'a [u8]);
    impl<'a> Cursor<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let (a, rest) = self.0.split_at_checked(n)?;
            self.0 = rest;
            Some(a)
        }
        fn u8(&mut self) -> Option<u8> {
            Some(self.take(1)?[0])
        }
        fn u32(&mut self) -> Option<u32> {
            Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
        }
        fn u64(&mut self) -> Option<u64> {
            Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
        }
        fn bytes(&mut self) -> Option<Vec<u8>> {
            let n = self.u32()? as usize;
            Some(self.take(n)?.to_vec())
        }
    }
    let mut c = Cursor(b.strip_prefix(MAGIC)?);
    let n = c.u64()?;
    // Each entry takes at least 9 bytes: a count past that is not a whole record.
    if n > (c.0.len() / 9) as u64 {
        return None;
    }
    let mut entries = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let tag = c.u8()?;
        let rel = c.bytes()?;
        let r = match tag {
            0 => Recorded::Dir {
                mode: c.u32()?,
                print: c.u64()?,
            },
            1 => Recorded::File {
                mode: c.u32()?,
                size: c.u64()?,
                print: StampPrint::from_raw(c.u64()?)?,
            },
            2 => Recorded::Symlink(c.bytes()?),
            _ => return None,
        };
        entries.push((rel, r));
    }
    c.0.is_empty().then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_decodes_to_what_was_encoded_and_a_cut_one_to_nothing() {
        let entries = vec![
            (
                Vec::new(),
                Recorded::Dir {
                    mode: 0o555,
                    print: 7,
                },
            ),
            (
                b"bin/x".to_vec(),
                Recorded::File {
                    mode: 0o555,
                    size: 12,
                    print: StampPrint::from_raw(9).unwrap(),
                },
            ),
            (b"lib".to_vec(), Recorded::Symlink(b"../y/lib".to_vec())),
        ];
        let b = encode(&entries);
        assert_eq!(decode(&b), Some(entries));
        for cut in [MAGIC.len() - 1, MAGIC.len() + 8, b.len() - 1] {
            assert_eq!(decode(&b[..cut]), None, "cut at {cut}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
    }
}
