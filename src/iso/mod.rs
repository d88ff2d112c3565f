//! `imgbuild iso`: a bootable ISO (BIOS and UEFI, CD and USB stick) for an origin profile.
//!
//! Stages, each a function from data to data:
//! load profile → locate inputs (payload binaries, boot assets) → resolve modules →
//! initramfs (Tree → cpio, zstd or gzip) → ESP (Tree → FAT) → ISO tree → write (temp file, renamed).
//!
//! Files: [`assets`] (where inputs come from), [`modules`] (`.modinfo` dependency order),
//! [`initramfs`], [`esp`], [`bootcfg`] (isolinux and systemd-boot configuration),
//! [`hadris`] (the only module that uses the hadris crates), [`inspect`].

pub mod assets;
pub mod bootcfg;
pub mod esp;
pub mod hadris;
pub mod initramfs;
pub mod inspect;
pub mod modules;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::cli::Ctx;
use crate::error::BadInput;
use crate::profile::{self, Kind};
use crate::tree::{Content, Entry, Group, Tree};

/// What a bootable image is made from: the ISO and the MicroVM take the same inputs.
#[derive(Args, Debug, Clone)]
pub struct BootInputs {
    /// origin/PROFILE (default origin/default).
    #[arg(value_name = "origin/PROFILE", default_value = "origin/default")]
    pub profile: String,
    /// Kernel image (default: vmlinuz in the boot-asset directory).
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// Kernel modules: lib/modules/<version>, or a directory holding one such directory.
    #[arg(long, value_name = "DIR")]
    pub modules: Option<PathBuf>,
    /// Boot-asset directory (default $IMGBUILD_BOOT_ASSETS, else ~/.cache/imgbuild/boot-assets;
    /// scripts/boot-assets fills it).
    #[arg(long, value_name = "DIR")]
    pub boot_assets: Option<PathBuf>,
    /// Use this file for a payload binary (hls-origin, imgbuild-init); must be static.
    #[arg(long = "binary", value_name = "NAME=PATH")]
    pub binary: Vec<String>,
    /// Words appended to the kernel command line (e.g. hls.PORT=18080).
    #[arg(long, value_name = "EXTRA", allow_hyphen_values = true)]
    pub cmdline: Vec<String>,
    /// Initramfs compression.
    #[arg(long, value_enum, default_value = "zstd")]
    pub compression: initramfs::Compression,
    #[command(flatten)]
    pub elf_check: crate::closure::ElfCheckArgs,
}

#[derive(Args, Debug, Clone)]
pub struct IsoArgs {
    #[command(flatten)]
    pub input: BootInputs,
    /// Output file (default ./hls-origin-<profile>.iso).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write the staged ISO tree (and esp.img, isohdpfx.bin) to DIR, for comparisons
    /// with other ISO writers (bench/iso-vs-xorriso).
    #[arg(long, value_name = "DIR", hide = true)]
    pub stage: Option<PathBuf>,
}

/// Errors of the ISO stages; `is_bad_input` says which are the user's input (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("{0} is a {1} profile; imgbuild iso builds origin profiles")]
    NotOrigin(String, Kind),
    #[error(transparent)]
    Asset(#[from] assets::MissingAsset),
    #[error(transparent)]
    Module(#[from] modules::ModuleError),
    #[error(transparent)]
    Initramfs(#[from] initramfs::InitramfsError),
    #[error(transparent)]
    Esp(#[from] esp::EspError),
    #[error(transparent)]
    Hadris(#[from] hadris::HadrisError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("kernel {0} is {1} bytes: the UEFI boot partition (FAT) holds files below 4 GiB, so the ISO cannot boot it; use a kernel image under 4 GiB")]
    KernelTooLarge(String, u64),
}

impl IsoError {
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            IsoError::NotOrigin(..)
                | IsoError::KernelTooLarge(..)
                | IsoError::Asset(_)
                | IsoError::Module(
                    modules::ModuleError::UnknownDependency { .. }
                        | modules::ModuleError::Missing { .. }
                        | modules::ModuleError::Compressed(..)
                        | modules::ModuleError::Cycle(_)
                        | modules::ModuleError::NotModule(..)
                )
        )
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
    pub network: profile::Network,
}

/// Path of [`IsoMeta`] inside the ISO.
pub const META_PATH: &str = "imgbuild.json";

/// `SOURCE_DATE_EPOCH`, default 1.
pub fn source_date_epoch() -> Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse::<i64>().map_err(|_| {
            BadInput(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a whole number of seconds"
            ))
            .into()
        }),
        _ => Ok(1),
    }
}

/// FNV-1a, 64 bit: a stable hash for the GPT GUID seed (std's hasher may change).
fn fnv(seed: u64, data: &[u8]) -> u64 {
    data.iter()
        .fold(seed, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn ms(t: Instant) -> String {
    format!("{:.1} ms", t.elapsed().as_secs_f64() * 1000.0)
}

pub fn run(ctx: &Ctx, a: IsoArgs) -> Result<()> {
    let out = build(ctx, &a)?;
    println!("{}", out.display());
    Ok(())
}

/// What an ISO and a MicroVM share: the profile, the boot assets, the initramfs and the
/// kernel command line (without consoles).
pub struct BootPayload {
    pub profile: profile::Profile,
    pub assets: assets::Assets,
    pub initrd: Vec<u8>,
    pub cmdline: String,
    pub epoch: i64,
}

/// Steps 1 to 4 and the command line: profile, inputs, modules, initramfs.
pub fn boot_payload(ctx: &Ctx, a: &BootInputs) -> Result<BootPayload> {
    let epoch = source_date_epoch()?;
    // 1. Profile.
    let p = profile::load_id(&ctx.root, &a.profile)?;
    if p.kind != Kind::Origin {
        return Err(IsoError::NotOrigin(p.id(), p.kind).into());
    }
    // 2. Inputs: payload binaries (static) and boot assets.
    let overrides = crate::payload::parse_overrides(&a.binary)?;
    let init = crate::payload::locate("imgbuild-init", &overrides)?;
    let service = crate::payload::locate(&p.image.binary, &overrides)?;
    let assets = assets::locate(
        a.boot_assets.as_deref(),
        a.kernel.as_deref(),
        a.modules.as_deref(),
    )
    .map_err(IsoError::from)?;
    tracing::info!(
        "boot assets: {} (kernel {}, modules {})",
        assets.dir.display(),
        assets.kernel.display(),
        assets.modules.display()
    );
    // 3. Modules, dependencies first.
    let t = Instant::now();
    let mods = modules::resolve(&assets.modules, modules::BOOT_MODULES).map_err(IsoError::from)?;
    tracing::info!(
        "modules ({}): {} in {}",
        mods.len(),
        mods.iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        ms(t)
    );
    // 4. Initramfs.
    let t = Instant::now();
    let version = env!("CARGO_PKG_VERSION");
    let base = crate::rootfs::base_tree(&ctx.root, &p, version)?;
    let config = initramfs::init_config(&p, &assets.kver, &mods);
    let itree = initramfs::tree(
        base,
        &init,
        &p.image.binary,
        &service,
        &config,
        &assets.kver,
        &mods,
    )
    .map_err(IsoError::from)?;
    a.elf_check
        .apply(&itree)
        .context("checking the executables of the initramfs")?;
    let initrd = initramfs::write(&itree, epoch, a.compression).map_err(IsoError::from)?;
    tracing::info!(
        "initramfs: {} entries, {} bytes → {} bytes {:?} in {}",
        itree.len(),
        itree.content_size(),
        initrd.len(),
        a.compression,
        ms(t)
    );
    let cmdline = bootcfg::cmdline(
        p.iso.as_ref().map_or("", |i| i.cmdline.as_str()),
        &a.cmdline,
    );
    Ok(BootPayload {
        profile: p,
        assets,
        initrd,
        cmdline,
        epoch,
    })
}

/// Builds the ISO and returns its path.
pub fn build(ctx: &Ctx, a: &IsoArgs) -> Result<PathBuf> {
    let t0 = Instant::now();
    let BootPayload {
        profile: p,
        assets,
        initrd,
        cmdline,
        epoch,
    } = boot_payload(ctx, &a.input)?;
    let version = env!("CARGO_PKG_VERSION");
    let output = a
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}-{}.iso", p.image.name, p.name)));
    if let Some(e) = crate::oci::files::missing_output_dir(&output) {
        return Err(BadInput(e).into());
    }
    // 5. Boot configuration and ESP.
    let title = format!("{}-{}", p.image.name, p.name);
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
        p.volume_id().as_bytes(),
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
    // 6. ISO tree.
    let meta = IsoMeta {
        imgbuild: version.into(),
        profile: p.id(),
        image: p.image_ref(),
        ports: p.ports(),
        memory: p
            .iso
            .as_ref()
            .map_or_else(|| "512M".into(), |i| i.memory.clone()),
        kernel: assets.kver.clone(),
        cmdline: bootcfg::full(bootcfg::CONSOLES_DEFAULT, &cmdline),
        network: p
            .iso
            .as_ref()
            .map(|i| i.network.clone())
            .unwrap_or_default(),
    };
    let iso_tree = iso_tree(&assets, initrd, &title, &cmdline, &meta)?;
    let mbr_code = std::fs::read(&assets.isohdpfx)
        .map_err(|e| IsoError::Io(assets.isohdpfx.display().to_string(), e))?;
    if let Some(dir) = &a.stage {
        stage(dir, &iso_tree, &esp_img, &mbr_code)?;
    }
    let time = hadris::time(epoch).map_err(IsoError::from)?;
    let spec = hadris::IsoSpec {
        volume_id: p.volume_id(),
        publisher: "IMGBUILD".into(),
        application: format!("IMGBUILD {version}"),
        time,
        seed,
        boot: Some(hadris::IsoBoot {
            bios_image: "isolinux/isolinux.bin".into(),
            catalog: "isolinux/boot.cat".into(),
            mbr_code,
            esp: esp_img,
        }),
    };
    // 7. Write to a temp name beside the output, rename at the end.
    let t = Instant::now();
    let htree = hadris::convert(&iso_tree, time).map_err(IsoError::from)?;
    let dir = crate::oci::files::output_dir(&output);
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
        .persist(&output, true)
        .map_err(|e| IsoError::Io(format!("naming {}", output.display()), e))?;
    tracing::info!("write: {size} bytes ISO in {}", ms(t));
    tracing::info!("total: {}", ms(t0));
    Ok(output)
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
                    Content::Host { path, .. } => {
                        std::fs::copy(path, &dest)?;
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
