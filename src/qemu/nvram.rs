//! The UEFI firmware's variable store kept between boots, as a machine keeps its NVRAM.
//!
//! OVMF starts from an empty store (the `OVMF_VARS` template) and fills it on its first
//! boot: boot options, consoles, language, memory type information and eight `Attempt`
//! records (the iSCSI driver's), each written through the emulated flash chip. Under TCG
//! that first-boot work is about 0.6-0.9 s of a UEFI boot (docs/booting.md). `imgbuild boot
//! --uefi` therefore starts from the store the last boot with the same firmware and the same
//! kind of boot medium left behind ([`locate`]), and keeps the store of this boot when QEMU
//! has ended ([`keep`]), in `imgbuild/uefi-vars` of the user's cache directory
//! (`crate::buildenv::cache_dir`); removing it gives the next boot an empty store again.
//!
//! The store is copied only while no QEMU writes it (before the boot, after QEMU exited), so
//! what is kept is the state a power cut at that moment would leave, which the firmware's
//! fault-tolerant variable writes are made to recover from. A store is named by the SHA-256
//! of the firmware code, of the template and of the medium kind: another OVMF, another
//! template or a CD instead of a disk never start from it.

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where a boot's variable store comes from, and where it is kept afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarStore {
    /// The file the boot's private copy is made from: the kept store when there is one, else
    /// the firmware's template.
    pub source: PathBuf,
    /// Where this boot's store is kept when QEMU has ended (`None`: no cache directory).
    pub keep_at: Option<PathBuf>,
}

/// The store for a boot with firmware `code` and variable template `template` from a CD
/// (`disk` false) or a disk, kept in `dir`.
pub fn locate(
    dir: Option<&Path>,
    code: &Path,
    template: &Path,
    disk: bool,
) -> std::io::Result<VarStore> {
    let Some(dir) = dir else {
        return Ok(VarStore {
            source: template.to_path_buf(),
            keep_at: None,
        });
    };
    let mut h = Sha256::new();
    for f in [code, template] {
        let bytes = std::fs::read(f)?;
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    let medium = if disk { "disk" } else { "cd" };
    h.update(medium.as_bytes());
    let d = h.finalize();
    let hex: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
    let keep_at = dir.join(format!("{hex}-{medium}.fd"));
    Ok(VarStore {
        source: if keep_at.is_file() {
            keep_at.clone()
        } else {
            template.to_path_buf()
        },
        keep_at: Some(keep_at),
    })
}

impl VarStore {
    /// Whether the boot starts from a kept store (else from the template).
    pub fn kept(&self) -> bool {
        self.keep_at.as_ref() == Some(&self.source)
    }
}

/// Keeps `store` (the boot's private copy, QEMU gone) at `at`: written beside it and renamed
/// over it, so a reader sees the old store or the new one, never a part.
pub fn keep(store: &mut std::fs::File, at: &Path) -> std::io::Result<()> {
    let dir = at.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        at.file_name().and_then(|n| n.to_str()).unwrap_or("vars"),
        std::process::id()
    ));
    let result = (|| {
        store.seek(SeekFrom::Start(0))?;
        let mut f = std::fs::File::create(&tmp)?;
        std::io::copy(store, &mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, at)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "nvram-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_kept_store_is_the_next_boots_source_for_the_same_firmware_and_medium_only() {
        let d = dir();
        let (code, template) = (d.join("code.fd"), d.join("vars.fd"));
        std::fs::write(&code, b"firmware").unwrap();
        std::fs::write(&template, b"empty store").unwrap();
        let cache = d.join("cache");

        let first = locate(Some(&cache), &code, &template, false).unwrap();
        assert_eq!(first.source, template);
        assert!(!first.kept());
        let at = first.keep_at.clone().unwrap();

        let mut used = crate::oci::files::scratch_in(&d).unwrap();
        used.write_all(b"store after a boot").unwrap();
        keep(&mut used, &at).unwrap();
        assert_eq!(std::fs::read(&at).unwrap(), b"store after a boot");
        // Nothing but the store is left in the cache directory.
        let names: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");

        let second = locate(Some(&cache), &code, &template, false).unwrap();
        assert!(second.kept());
        assert_eq!(second.source, at);
        // A disk boot, another firmware or another template start from the template.
        assert!(!locate(Some(&cache), &code, &template, true).unwrap().kept());
        std::fs::write(&code, b"firmware 2").unwrap();
        assert!(!locate(Some(&cache), &code, &template, false)
            .unwrap()
            .kept());
        std::fs::write(&code, b"firmware").unwrap();
        std::fs::write(&template, b"other store").unwrap();
        assert!(!locate(Some(&cache), &code, &template, false)
            .unwrap()
            .kept());
        // Without a cache directory: the template, nothing kept.
        let none = locate(None, &code, &template, false).unwrap();
        assert!(!none.kept());
        assert_eq!((none.source, none.keep_at), (template, None));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn keeping_replaces_the_store_whole() {
        let d = dir();
        let at = d.join("cache/x-cd.fd");
        for text in [&b"a longer first store"[..], b"short"] {
            let mut f = crate::oci::files::scratch_in(&d).unwrap();
            f.write_all(text).unwrap();
            keep(&mut f, &at).unwrap();
            assert_eq!(std::fs::read(&at).unwrap(), text);
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
