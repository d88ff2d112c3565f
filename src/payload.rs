//! Where the payload programs (hls-origin, hls-swarm, imgbuild-init) come from: by default
//! the workspace binaries next to the imgbuild executable (cargo puts them in the same
//! target directory); `--binary NAME=PATH` overrides one. Every payload must be static:
//! images carry no libc for them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::elf;

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("payload binary {name}: {path} not found; build the workspace (`cargo build --release`) or pass --binary {name}=PATH")]
    Missing { name: String, path: String },
    #[error("payload binary {name} ({path}) is not static (interpreter {interp:?}, libraries {needed:?}); build it with the workspace's .cargo/config.toml or pass a static --binary {name}=PATH")]
    NotStatic {
        name: String,
        path: String,
        interp: Option<String>,
        needed: Vec<String>,
    },
    #[error("--binary {0:?}: expected NAME=PATH")]
    BadOverride(String),
    #[error(transparent)]
    Elf(#[from] elf::ElfError),
}

/// Every PayloadError is the user's input (exit 2).
impl crate::error::Classify for PayloadError {
    fn exit_class(&self) -> crate::error::ExitClass {
        crate::error::ExitClass::BadInput
    }
}

/// The directory holding the workspace binaries: `IMGBUILD_PAYLOAD_DIR`, else the
/// directory of the running imgbuild executable.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IMGBUILD_PAYLOAD_DIR") {
        return PathBuf::from(d);
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Parses `--binary NAME=PATH` values.
pub fn parse_overrides(values: &[String]) -> Result<BTreeMap<String, PathBuf>, PayloadError> {
    values
        .iter()
        .map(|v| match v.split_once('=') {
            Some((n, p)) if !n.is_empty() && !p.is_empty() => Ok((n.to_string(), PathBuf::from(p))),
            _ => Err(PayloadError::BadOverride(v.clone())),
        })
        .collect()
}

/// Finds a payload binary and proves it is static.
pub fn locate(name: &str, overrides: &BTreeMap<String, PathBuf>) -> Result<PathBuf, PayloadError> {
    let path = overrides
        .get(name)
        .cloned()
        .unwrap_or_else(|| default_dir().join(name));
    if !path.is_file() {
        return Err(PayloadError::Missing {
            name: name.into(),
            path: path.display().to_string(),
        });
    }
    let needs = elf::read(&path)?;
    if !needs.is_static() {
        return Err(PayloadError::NotStatic {
            name: name.into(),
            path: path.display().to_string(),
            interp: needs.interpreter,
            needed: needs.needed,
        });
    }
    Ok(path)
}
