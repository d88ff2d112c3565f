//! `imgbuild iso`: a bootable ISO (BIOS and UEFI, CD and USB stick) for an origin profile,
//! as named stages from data to data:
//! [`origin_profile`] → [`payloads`] and boot assets → [`boot_modules`] →
//! [`initramfs_image`] (the profile's init contract, programs and modules → cpio) →
//! [`iso_meta`] → [`crate::iso::write`] (ESP, ISO tree, the file). The first four are shared
//! with `imgbuild microvm` ([`boot_payload`]). `--timings` reports how long each took
//! (profile, payloads, modules, initramfs, write).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use super::Ctx;
use crate::error::BadInput;
use crate::iso::{self, assets, bootcfg, initramfs, modules, IsoError, IsoMeta};
use crate::profile::{self, Kind, Profile};
use crate::timings::Stopwatch;

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

impl BootInputs {
    /// The inputs `imgbuild iso PROFILE` gets: every flag at its default.
    pub fn new(profile: &str) -> BootInputs {
        BootInputs {
            profile: profile.to_string(),
            kernel: None,
            modules: None,
            boot_assets: None,
            binary: vec![],
            cmdline: vec![],
            compression: initramfs::Compression::Zstd,
            elf_check: Default::default(),
        }
    }
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
    /// After the build, print how long each stage took (profile, payloads, modules,
    /// initramfs, write) as a table on stderr. The ISO is the same.
    #[arg(long)]
    pub timings: bool,
}

pub fn run(ctx: &Ctx, a: IsoArgs) -> Result<()> {
    let out = build(ctx, &a)?;
    println!("{}", out.display());
    Ok(())
}

/// What an ISO and a MicroVM share: the profile, the boot assets, the initramfs and the
/// kernel command line (without consoles).
pub struct BootPayload {
    pub profile: Profile,
    pub assets: assets::Assets,
    pub initrd: Vec<u8>,
    pub cmdline: String,
    pub epoch: u64,
}

/// Stage 1: the profile, which must be an origin profile.
pub fn origin_profile(ctx: &Ctx, id: &str) -> Result<Profile> {
    let p = profile::load_id(&ctx.root, id)?;
    if p.kind != Kind::Origin {
        return Err(BadInput(format!(
            "{} is a {} profile; imgbuild iso builds origin profiles",
            p.id(),
            p.kind
        ))
        .into());
    }
    Ok(p)
}

/// The payload programs of a boot image: (imgbuild-init, the service), both static.
pub struct Payloads {
    pub init: PathBuf,
    pub service: PathBuf,
}

/// Stage 2: the payload binaries and the boot assets.
pub fn payloads(p: &Profile, a: &BootInputs) -> Result<(Payloads, assets::Assets)> {
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
    Ok((Payloads { init, service }, assets))
}

/// Stage 3: the modules the boot needs, dependencies first.
pub fn boot_modules(assets: &assets::Assets) -> Result<Vec<modules::Module>> {
    let t = Instant::now();
    let mods = modules::resolve(&assets.modules, modules::BOOT_MODULES).map_err(IsoError::from)?;
    tracing::info!(
        "modules ({}): {} in {}",
        mods.len(),
        mods.iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        iso::ms(t)
    );
    Ok(mods)
}

/// Stage 4: the compressed initramfs: the profile's base tree, its init contract, the
/// programs and the modules, its executables checked as `--elf-check` says.
pub fn initramfs_image(
    ctx: &Ctx,
    p: &Profile,
    programs: &Payloads,
    assets: &assets::Assets,
    mods: &[modules::Module],
    epoch: u64,
    inputs: &BootInputs,
) -> Result<Vec<u8>> {
    let t = Instant::now();
    let base = crate::rootfs::base_tree(&ctx.root, p, crate::buildenv::VERSION)?;
    let module_files = mods
        .iter()
        .map(|m| format!("lib/modules/{}/{}", assets.kver, m.rel))
        .collect();
    let config = crate::init_json::boot(p, module_files);
    let itree = initramfs::tree(
        base,
        &programs.init,
        &p.image.binary,
        &programs.service,
        &config,
        &assets.kver,
        mods,
    )
    .map_err(IsoError::from)?;
    inputs
        .elf_check
        .apply(&itree)
        .context("checking the executables of the initramfs")?;
    let epoch = crate::buildenv::signed(epoch);
    let initrd = initramfs::write(&itree, epoch, inputs.compression).map_err(IsoError::from)?;
    tracing::info!(
        "initramfs: {} entries, {} bytes → {} bytes {:?} in {}",
        itree.len(),
        itree.content_size(),
        initrd.len(),
        inputs.compression,
        iso::ms(t)
    );
    Ok(initrd)
}

/// Stages 1 to 4 and the command line: profile, inputs, modules, initramfs, each timed on
/// `sw`.
pub fn boot_payload(ctx: &Ctx, a: &BootInputs, sw: &mut Stopwatch) -> Result<BootPayload> {
    let (epoch, p) = sw.time("profile", || -> Result<_> {
        Ok((
            crate::buildenv::source_date_epoch()?,
            origin_profile(ctx, &a.profile)?,
        ))
    })?;
    let (programs, assets) = sw.time("payloads", || payloads(&p, a))?;
    let mods = sw.time("modules", || boot_modules(&assets))?;
    let initrd = sw.time("initramfs", || {
        initramfs_image(ctx, &p, &programs, &assets, &mods, epoch, a)
    })?;
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

/// Stage 5: `/imgbuild.json`, what `imgbuild boot` needs to know about the ISO.
pub fn iso_meta(p: &Profile, kver: &str, cmdline: &str) -> IsoMeta {
    IsoMeta {
        imgbuild: crate::buildenv::VERSION.into(),
        profile: p.id(),
        image: p.image_ref(),
        ports: p.ports(),
        memory: crate::vm::memory(p),
        kernel: kver.to_string(),
        cmdline: bootcfg::full(bootcfg::CONSOLES_DEFAULT, cmdline),
        network: crate::vm::network(p),
    }
}

/// The output path: `-o`, else `./<image>-<profile><ext>`; its directory must exist.
pub fn output_path(given: Option<&Path>, p: &Profile, ext: &str) -> Result<PathBuf> {
    let output = given
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(format!("{}-{}{ext}", p.image.name, p.name)));
    if let Some(e) = crate::oci::files::missing_output_dir(&output) {
        return Err(BadInput(e).into());
    }
    Ok(output)
}

/// Builds the ISO and returns its path (with `--timings`, printing the stage table on
/// stderr).
pub fn build(ctx: &Ctx, a: &IsoArgs) -> Result<PathBuf> {
    let t0 = Instant::now();
    let mut sw = Stopwatch::start();
    let BootPayload {
        profile: p,
        assets,
        initrd,
        cmdline,
        epoch,
    } = boot_payload(ctx, &a.input, &mut sw)?;
    let output = output_path(a.output.as_deref(), &p, ".iso")?;
    let meta = iso_meta(&p, &assets.kver, &cmdline);
    let t = Instant::now();
    iso::write(
        iso::IsoImage {
            assets: &assets,
            initrd,
            volume_id: p.volume_id(),
            title: format!("{}-{}", p.image.name, p.name),
            cmdline,
            meta,
            epoch,
            stage: a.stage.as_deref(),
        },
        &output,
    )?;
    sw.add("write", t.elapsed());
    tracing::info!("total: {}", iso::ms(t0));
    if a.timings {
        eprint!("{}", sw.finish().table());
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `up` builds with [`BootInputs::new`]: the same as the command line's defaults.
    #[test]
    fn new_gives_the_command_line_defaults() {
        let parsed: BootInputs = crate::commands::parse_args(&["x", "origin/tap"]);
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", BootInputs::new("origin/tap"))
        );
    }
}
