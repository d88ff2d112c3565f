//! The plain input files of a bootable ISO: kernel, its modules, isolinux (+ ldlinux.c32 and
//! the isohybrid MBR) and systemd-boot. They come from the boot-asset directory that
//! `scripts/boot-assets` fills (`--boot-assets DIR`, else `$IMGBUILD_BOOT_ASSETS`, else
//! `~/.cache/imgbuild/boot-assets`); `--kernel` and `--modules` override those two.

use std::path::{Path, PathBuf};

/// An input that is not there: one line naming it and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{what} not found at {path}: run scripts/boot-assets{hint}")]
pub struct MissingAsset {
    pub what: &'static str,
    pub path: String,
    pub hint: &'static str,
}

/// Every boot input, located and checked to exist.
#[derive(Debug, Clone)]
pub struct Assets {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    /// The `lib/modules/<kver>` directory.
    pub modules: PathBuf,
    pub kver: String,
    pub isolinux: PathBuf,
    pub ldlinux: PathBuf,
    pub isohdpfx: PathBuf,
    pub systemd_boot: PathBuf,
}

/// The default boot-asset directory.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IMGBUILD_BOOT_ASSETS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/imgbuild/boot-assets")
}

fn need(path: PathBuf, what: &'static str, hint: &'static str) -> Result<PathBuf, MissingAsset> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(MissingAsset {
            what,
            path: path.display().to_string(),
            hint,
        })
    }
}

/// `--modules DIR` may name `lib/modules/<kver>` itself or a directory holding exactly one
/// `<kver>` directory (the boot-asset layout `modules/<kver>`).
fn modules_dir(dir: &Path) -> Result<(PathBuf, String), MissingAsset> {
    let missing = || MissingAsset {
        what: "kernel modules directory",
        path: dir.display().to_string(),
        hint: " or pass --modules lib/modules/<version>",
    };
    if dir.join("kernel").is_dir() {
        let kver = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok((dir.to_path_buf(), kver));
    }
    let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|_| missing())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("kernel").is_dir())
        .collect();
    subs.sort();
    match subs.as_slice() {
        [one] => {
            let kver = one
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok((one.clone(), kver))
        }
        _ => Err(missing()),
    }
}

/// Locates every input. `dir` is `--boot-assets` (else the default); `kernel` and
/// `modules` override.
pub fn locate(
    dir: Option<&Path>,
    kernel: Option<&Path>,
    modules: Option<&Path>,
) -> Result<Assets, MissingAsset> {
    let dir = dir.map_or_else(default_dir, Path::to_path_buf);
    let kernel = match kernel {
        Some(k) => need(k.to_path_buf(), "kernel", " or fix --kernel")?,
        None => need(dir.join("vmlinuz"), "kernel (vmlinuz)", "")?,
    };
    let (modules, kver) =
        modules_dir(&modules.map_or_else(|| dir.join("modules"), Path::to_path_buf))?;
    Ok(Assets {
        kernel,
        modules,
        kver,
        isolinux: need(
            dir.join("isolinux.bin"),
            "isolinux.bin (BIOS boot loader)",
            "",
        )?,
        ldlinux: need(
            dir.join("ldlinux.c32"),
            "ldlinux.c32 (isolinux's second stage)",
            "",
        )?,
        isohdpfx: need(dir.join("isohdpfx.bin"), "isohdpfx.bin (isohybrid MBR)", "")?,
        systemd_boot: need(
            dir.join("systemd-bootx64.efi"),
            "systemd-bootx64.efi (UEFI boot manager)",
            "",
        )?,
        dir,
    })
}
