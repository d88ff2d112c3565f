//! Where profiles/, layers/ and rootfs/ come from: the copy embedded in the binary at build
//! time (so imgbuild works from any directory), or a directory given with `--root` /
//! `IMGBUILD_ROOT` (so users keep their own profiles). Everything that reads those trees goes
//! through [`Root`].

use std::path::{Path, PathBuf};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// A file of the root tree: its path relative to the root, its bytes and its mode bits.
#[derive(Clone, Debug)]
pub struct RootFile {
    pub rel: String,
    pub mode: u32,
    /// Host path when the root is a directory (lets writers stream the file).
    pub host: Option<PathBuf>,
}

/// The tree of profiles, layer groups and rootfs files imgbuild reads.
#[derive(Clone, Debug)]
pub enum Root {
    Embedded,
    Dir(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("{0}: cannot read: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: not found in the root tree")]
    Missing(String),
}

impl Root {
    /// `--root DIR` if given, else the embedded tree.
    pub fn from_option(dir: Option<PathBuf>) -> Result<Self, String> {
        match dir {
            None => Ok(Root::Embedded),
            Some(d) if d.join("profiles").is_dir() => Ok(Root::Dir(d)),
            Some(d) => Err(format!(
                "--root {}: no profiles/ directory there; point it at a tree with profiles/, layers/ and rootfs/",
                d.display()
            )),
        }
    }

    /// How a root-relative path is shown in messages (`profiles/origin/x.toml` or an
    /// absolute path under `--root`).
    pub fn display(&self, rel: &str) -> String {
        match self {
            Root::Embedded => rel.to_string(),
            Root::Dir(d) => d.join(rel).display().to_string(),
        }
    }

    /// The root directory on disk, when there is one.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            Root::Embedded => None,
            Root::Dir(d) => Some(d),
        }
    }

    /// Every file below `prefix` (a root-relative directory), sorted by path.
    pub fn files_under(&self, prefix: &str) -> Result<Vec<RootFile>, RootError> {
        let prefix = prefix.trim_end_matches('/');
        match self {
            Root::Embedded => Ok(embedded::FILES
                .iter()
                .filter(|(p, _, _)| p.starts_with(prefix) && p[prefix.len()..].starts_with('/'))
                .map(|(p, _, mode)| RootFile {
                    rel: p.to_string(),
                    mode: *mode,
                    host: None,
                })
                .collect()),
            Root::Dir(d) => {
                let base = d.join(prefix);
                let mut out = Vec::new();
                if !base.is_dir() {
                    return Ok(out);
                }
                let mut stack = vec![base];
                while let Some(dir) = stack.pop() {
                    let rd = std::fs::read_dir(&dir)
                        .map_err(|e| RootError::Read(dir.display().to_string(), e))?;
                    for ent in rd {
                        let ent = ent.map_err(|e| RootError::Read(dir.display().to_string(), e))?;
                        let path = ent.path();
                        let meta = std::fs::symlink_metadata(&path)
                            .map_err(|e| RootError::Read(path.display().to_string(), e))?;
                        if meta.is_dir() {
                            stack.push(path);
                        } else if meta.is_file() {
                            use std::os::unix::fs::PermissionsExt;
                            let rel = path
                                .strip_prefix(d)
                                .expect("walk stays under root")
                                .to_string_lossy()
                                .into_owned();
                            out.push(RootFile {
                                rel,
                                mode: meta.permissions().mode() & 0o7777,
                                host: Some(path),
                            });
                        }
                    }
                }
                out.sort_by(|a, b| a.rel.cmp(&b.rel));
                Ok(out)
            }
        }
    }

    /// Whether a root-relative path exists (file or directory).
    pub fn exists(&self, rel: &str) -> bool {
        let rel = rel.trim_matches('/');
        match self {
            Root::Embedded => embedded::FILES.iter().any(|(p, _, _)| {
                *p == rel || (p.starts_with(rel) && p[rel.len()..].starts_with('/'))
            }),
            Root::Dir(d) => d.join(rel).exists(),
        }
    }

    /// Reads a root-relative file.
    pub fn read(&self, rel: &str) -> Result<Vec<u8>, RootError> {
        match self {
            Root::Embedded => embedded::FILES
                .iter()
                .find(|(p, _, _)| *p == rel)
                .map(|(_, b, _)| b.to_vec())
                .ok_or_else(|| RootError::Missing(rel.to_string())),
            Root::Dir(d) => {
                let p = d.join(rel);
                std::fs::read(&p).map_err(|e| RootError::Read(p.display().to_string(), e))
            }
        }
    }

    /// Reads a root-relative file as UTF-8 text.
    pub fn read_text(&self, rel: &str) -> Result<String, RootError> {
        let bytes = self.read(rel)?;
        String::from_utf8(bytes).map_err(|_| {
            RootError::Read(
                self.display(rel),
                std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_tree_has_profiles_layers_and_rootfs() {
        let r = Root::Embedded;
        assert!(!r.files_under("profiles/origin").unwrap().is_empty());
        assert!(r.exists("layers/base.toml"));
        assert!(r.exists("rootfs/common"));
        assert!(r
            .read_text("rootfs/common/etc/nsswitch.conf")
            .unwrap()
            .contains("passwd"));
    }
}
