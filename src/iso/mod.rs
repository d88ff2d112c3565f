//! The ISO writer: a bootable ISO (BIOS and UEFI, CD and USB stick) from typed inputs (the
//! boot assets, an initramfs, the kernel command line, [`IsoMeta`]); it never sees a profile.
//! The `iso` command (src/commands/iso.rs) makes those inputs from a profile.
//!
//! [`write`]: boot configuration → ESP (Tree → FAT) → ISO tree → write (an unnamed file in
//! the output directory, named when complete).
//!
//! Files: [`assets`] (where inputs come from), [`modules`] (`.modinfo` dependency order),
//! [`initramfs`] (init contract + programs + modules → cpio), [`esp`], [`bootcfg`]
//! (isolinux and systemd-boot configuration), [`hadris`] (the only module that uses the
//! hadris crates), [`inspect`].

pub mod assets;
pub mod bootcfg;
pub mod esp;
pub mod hadris;
pub mod initramfs;
pub mod inspect;
pub mod modules;

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::{BadInput, Classify, ExitClass};
use crate::tree::{Content, Entry, Group, Tree};

/// Errors of the ISO stages; [`Classify`] says which are the user's input (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error(transparent)]
    Asset(#[from] assets::MissingAsset),
    #[error(transparent)]
    Module(#[from] modules::ModuleError),
    #[error(transparent)]
    Part(#[from] PartError),
    #[error(transparent)]
    Hadris(#[from] hadris::HadrisError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("kernel {0} is {1} bytes: the UEFI boot partition (FAT) holds files below 4 GiB, so the ISO cannot boot it; use a kernel image under 4 GiB")]
    KernelTooLarge(String, u64),
}

/// Why a tree the ISO carries as one file (the initramfs, the UEFI boot partition) could not
/// be built.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    #[error(transparent)]
    Tree(#[from] crate::tree::TreeError),
    #[error("{0}: cannot read: {1}")]
    Read(String, std::io::Error),
    #[error(transparent)]
    Hadris(#[from] hadris::HadrisError),
    #[error("compressing the initramfs: {0}")]
    Compress(std::io::Error),
}

impl Classify for IsoError {
    fn exit_class(&self) -> ExitClass {
        let bad = matches!(
            self,
            IsoError::KernelTooLarge(..)
                | IsoError::Asset(_)
                | IsoError::Module(
                    modules::ModuleError::UnknownDependency { .. }
                        | modules::ModuleError::Missing { .. }
                        | modules::ModuleError::Compressed(..)
                        | modules::ModuleError::Cycle(_)
                        | modules::ModuleError::NotModule(..)
                )
        );
        if bad {
            ExitClass::BadInput
        } else {
            ExitClass::Failure
        }
    }
}

/// `/imgbuild.json` in the ISO: what `imgbuild boot` needs to know about the image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IsoMeta {
    pub imgbuild: String,
    pub profile: String,
    pub image: String,
    pub ports: Vec<u16>,
    pub memory: String,
    pub kernel: String,
    pub cmdline: String,
    /// The guest's network (the profile's `iso.network`): `imgbuild boot` chooses user-mode
    /// or tap networking from it. Absent in ISOs of earlier versions: DHCP.
    #[serde(default)]
    pub network: init_contract::Network,
}

/// Path of [`IsoMeta`] inside the ISO.
pub const META_PATH: &str = "imgbuild.json";

/// FNV-1a, 64 bit: a stable hash for the GPT GUID seed (std's hasher may change).
fn fnv(seed: u64, data: &[u8]) -> u64 {
    data.iter()
        .fold(seed, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Milliseconds since `t`, for the stage timings in the log.
pub fn ms(t: Instant) -> String {
    format!("{:.1} ms", t.elapsed().as_secs_f64() * 1000.0)
}

/// Everything an ISO is written from.
pub struct IsoImage<'a> {
    pub assets: &'a assets::Assets,
    /// The compressed initramfs.
    pub initrd: Vec<u8>,
    /// The ISO9660 volume id.
    pub volume_id: String,
    /// The boot menu title (isolinux, systemd-boot).
    pub title: String,
    /// The kernel command line without consoles.
    pub cmdline: String,
    pub meta: IsoMeta,
    /// Every time stamp (SOURCE_DATE_EPOCH).
    pub epoch: u64,
    /// Also write the staged tree (and esp.img, isohdpfx.bin) here.
    pub stage: Option<&'a Path>,
}

/// Writes the ISO to `output` (nothing is left behind on an error or a signal); returns
/// its size in bytes.
pub fn write(img: IsoImage<'_>, output: &Path) -> Result<u64> {
    let IsoImage {
        assets,
        initrd,
        volume_id,
        title,
        cmdline,
        meta,
        epoch,
        stage: stage_dir,
    } = img;
    let epoch = crate::buildenv::signed(epoch);
    // Boot configuration and ESP.
    let kernel_len = std::fs::metadata(&assets.kernel)
        .map_err(|e| IsoError::Io(assets.kernel.display().to_string(), e))?
        .len();
    // ISO9660 level 3 stores it (multi-extent), but the kernel is also in the FAT ESP.
    if kernel_len >= 1 << 32 {
        return Err(
            IsoError::KernelTooLarge(assets.kernel.display().to_string(), kernel_len).into(),
        );
    }
    let mut seed = fnv(FNV_OFFSET, b"imgbuild-iso-1\0");
    for part in [
        volume_id.as_bytes(),
        cmdline.as_bytes(),
        assets.kver.as_bytes(),
    ] {
        seed = fnv(seed, part);
        seed = fnv(seed, b"\0");
    }
    seed = fnv(seed, &kernel_len.to_le_bytes());
    seed = fnv(seed, &initrd);
    let t = Instant::now();
    let etree = esp::tree(
        &assets.systemd_boot,
        &assets.kernel,
        &initrd,
        &title,
        &cmdline,
    )
    .map_err(IsoError::from)?;
    let esp_img = esp::image(&etree, epoch, seed).map_err(IsoError::from)?;
    tracing::info!("ESP: {} bytes FAT in {}", esp_img.len(), ms(t));
    // ISO tree.
    let iso_tree = iso_tree(assets, initrd, &title, &cmdline, &meta)?;
    let mbr_code = std::fs::read(&assets.isohdpfx)
        .map_err(|e| IsoError::Io(assets.isohdpfx.display().to_string(), e))?;
    if let Some(dir) = stage_dir {
        stage(dir, &iso_tree, &esp_img, &mbr_code)?;
    }
    let time = hadris::time(epoch).map_err(IsoError::from)?;
    let spec = hadris::IsoSpec {
        volume_id,
        publisher: "IMGBUILD".into(),
        application: format!("IMGBUILD {}", crate::buildenv::VERSION),
        time,
        seed,
        boot: Some(hadris::IsoBoot {
            bios_image: "isolinux/isolinux.bin".into(),
            catalog: "isolinux/boot.cat".into(),
            mbr_code,
            esp: esp_img,
        }),
    };
    // Write to a temp name beside the output, rename at the end.
    let t = Instant::now();
    let htree = hadris::convert(&iso_tree, time).map_err(IsoError::from)?;
    let dir = crate::oci::files::output_dir(output);
    let name = output
        .file_name()
        .ok_or_else(|| BadInput(format!("-o {}: not a file name", output.display())))?
        .to_string_lossy()
        .into_owned();
    // An unnamed file in the output directory, named only when complete: an error, Ctrl-C
    // or SIGKILL leaves nothing behind.
    let pending = crate::oci::files::Pending::new_in(&dir, &name)
        .map_err(|e| IsoError::Io(format!("creating a file in {}", dir.display()), e))?;
    let file = pending
        .file
        .try_clone()
        .map_err(|e| IsoError::Io(format!("{}", output.display()), e))?;
    let (size, warnings) = hadris::write_iso(file, &htree, spec).map_err(IsoError::from)?;
    for w in warnings {
        tracing::info!("iso: {w}");
    }
    pending
        .persist(output, true)
        .map_err(|e| IsoError::Io(format!("naming {}", output.display()), e))?;
    tracing::info!("write: {size} bytes ISO in {}", ms(t));
    Ok(size)
}

/// The ISO filesystem: isolinux, kernel, initramfs, metadata.
fn iso_tree(
    assets: &assets::Assets,
    initrd: Vec<u8>,
    title: &str,
    cmdline: &str,
    meta: &IsoMeta,
) -> Result<Tree> {
    let host = |p: &Path| {
        crate::tree::host_content(p).map_err(|e| IsoError::Io(p.display().to_string(), e))
    };
    let mut t = Tree::new();
    let f = |c, mode| Entry::file(c, mode, Group::Base);
    // isolinux.bin is patched (boot-info-table) in the image only; the host file is read.
    t.insert("isolinux/isolinux.bin", f(host(&assets.isolinux)?, 0o444))?;
    t.insert("isolinux/ldlinux.c32", f(host(&assets.ldlinux)?, 0o444))?;
    t.insert(
        "isolinux/isolinux.cfg",
        f(Content::bytes(bootcfg::isolinux_cfg(title, cmdline)), 0o444),
    )?;
    t.insert(bootcfg::ISO_KERNEL, f(host(&assets.kernel)?, 0o444))?;
    t.insert(bootcfg::ISO_INITRD, f(Content::bytes(initrd), 0o444))?;
    let mut json = serde_json::to_vec_pretty(meta)?;
    json.push(b'\n');
    t.insert(META_PATH, f(Content::bytes(json), 0o444))?;
    Ok(t)
}

/// Writes the staged tree to `dir` for other ISO writers to compare with.
fn stage(dir: &Path, t: &Tree, esp: &[u8], mbr: &[u8]) -> Result<()> {
    let root = dir.join("tree");
    for (path, e) in t.iter() {
        let dest = root.join(String::from_utf8_lossy(path).as_ref());
        match &e.kind {
            crate::tree::Kind::Dir => std::fs::create_dir_all(&dest)?,
            crate::tree::Kind::File(c) => {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                match c {
                    Content::Bytes(b) => std::fs::write(&dest, b)?,
                    Content::Host { path: host, .. } => {
                        std::fs::copy(host.resolve(path), &dest)?;
                    }
                }
            }
            _ => {}
        }
    }
    std::fs::write(dir.join("esp.img"), esp)?;
    std::fs::write(dir.join("isohdpfx.bin"), mbr)?;
    Ok(())
}

/// Reads `/imgbuild.json` from an ISO built by imgbuild.
pub fn read_meta(iso: &Path) -> Result<Option<IsoMeta>> {
    let Some(bytes) = hadris::read_iso_file(iso, &format!("/{META_PATH}"))? else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
        format!("{}: /{META_PATH} is not valid", iso.display())
    })?))
}

/// Whether a path names an ISO image: `.iso` extension, or the ISO9660 signature
/// `CD001` at byte 32769.
pub fn is_iso(path: &Path) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("iso"))
    {
        return true;
    }
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut sig = [0u8; 5];
    f.seek(SeekFrom::Start(32769)).is_ok() && f.read_exact(&mut sig).is_ok() && &sig == b"CD001"
}
