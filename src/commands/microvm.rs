//! `imgbuild microvm`: a MicroVM directory for an origin profile (the writer is
//! src/microvm.rs). Stages: the ISO's [`super::iso::boot_payload`] (profile, payloads,
//! modules, initramfs) → the machine's command line ([`machine_cmdline`]) →
//! [`crate::microvm::MicrovmMeta`] → [`crate::microvm::write`]. `--timings` reports how long
//! each took (profile, payloads, modules, initramfs, kernel, write).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use super::iso::{boot_payload, output_path, BootInputs};
use super::Ctx;
use crate::error::BadInput;
use crate::iso::{bootcfg, modules, IsoError};
use crate::microvm::{self, Kernel, MicrovmMeta};
use crate::timings::Stopwatch;

#[derive(Args, Debug, Clone)]
pub struct MicrovmArgs {
    #[command(flatten)]
    pub input: BootInputs,
    /// Output directory (default ./hls-origin-<profile>.microvm); an existing one is replaced
    /// only when it is a MicroVM directory or empty.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Unpack the kernel and boot it through its PVH entry point (DIR/vmlinux): about 0.3 s
    /// sooner to /health under TCG, but the kernel then has no VGA text console (the serial
    /// console only), and the directory holds the kernel unpacked (Debian's: 53 MB).
    #[arg(long)]
    pub pvh: bool,
    /// After the build, print how long each stage took (profile, payloads, modules,
    /// initramfs, kernel, write) as a table on stderr. The directory is the same.
    #[arg(long)]
    pub timings: bool,
}

pub fn run(ctx: &Ctx, a: MicrovmArgs) -> Result<()> {
    let out = build(ctx, &a)?;
    println!("{}", out.display());
    Ok(())
}

/// The profile's command line plus `imgbuild.modules=` with [`microvm::MACHINE_MODULES`] and
/// what they depend on, in load order.
fn machine_cmdline(profile_cmdline: &str, modules_dir: &Path) -> Result<String> {
    let mods = modules::resolve(modules_dir, microvm::MACHINE_MODULES).map_err(IsoError::from)?;
    let names: Vec<&str> = mods.iter().map(|m| m.name.as_str()).collect();
    let modules = format!("imgbuild.modules={}", names.join(","));
    Ok(if profile_cmdline.is_empty() {
        modules
    } else {
        format!("{profile_cmdline} {modules}")
    })
}

/// Builds the MicroVM directory and returns its path (with `--timings`, printing the stage
/// table on stderr).
pub fn build(ctx: &Ctx, a: &MicrovmArgs) -> Result<PathBuf> {
    let mut sw = Stopwatch::start();
    let payload = boot_payload(ctx, &a.input, &mut sw)?;
    let p = &payload.profile;
    let output = output_path(a.output.as_deref(), p, ".microvm")?;
    let kernel = sw.time("kernel", || kernel(&payload.assets.kernel, a.pvh))?;
    // The machine's modules are resolved like the boot's: their time goes to that row.
    let cmdline = sw.time("modules", || {
        machine_cmdline(&payload.cmdline, &payload.assets.modules)
    })?;
    let meta = MicrovmMeta {
        imgbuild: crate::buildenv::VERSION.into(),
        profile: p.id(),
        image: p.image_ref(),
        ports: p.ports(),
        memory: crate::vm::memory(p),
        machine: microvm::MACHINE.into(),
        kernel: payload.assets.kver.clone(),
        kernel_file: kernel.file_name().into(),
        cmdline: bootcfg::full(bootcfg::CONSOLES_DEFAULT, &cmdline),
        network: crate::vm::network(p),
    };
    sw.time("write", || {
        microvm::write(&output, &kernel, &payload.initrd, &meta)
    })?;
    if a.timings {
        eprint!("{}", sw.finish().table());
    }
    Ok(output)
}

/// The bzImage as it is, or with `--pvh` the kernel unpacked (refused in one line, naming
/// the kernel and why, when it cannot be booted that way: no silent fallback).
fn kernel(bzimage: &Path, pvh: bool) -> Result<Kernel<'_>> {
    if !pvh {
        return Ok(Kernel::BzImage(bzimage));
    }
    let bytes = std::fs::read(bzimage)
        .with_context(|| format!("reading the kernel {}", bzimage.display()))?;
    crate::vmlinux::pvh_kernel(&bytes)
        .map(Kernel::Pvh)
        .map_err(|e| {
            BadInput(format!(
                "--pvh: {}: {e}; build without --pvh to boot it as the bzImage it is",
                bzimage.display()
            ))
            .into()
        })
}
