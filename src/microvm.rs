//! `imgbuild microvm`: a MicroVM directory for an origin profile, booted by QEMU with the
//! kernel and initramfs given directly (no firmware boot loader, no boot medium):
//! `DIR/vmlinuz`, `DIR/initrd.img` (the initramfs the ISO carries, byte for byte) and
//! `DIR/microvm.json` ([`MicrovmMeta`]: the kernel command line, the profile's ports,
//! memory and machine type). `imgbuild boot DIR` boots it. Same inputs, same bytes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::cli::Ctx;
use crate::error::BadInput;
use crate::iso::{self, bootcfg};

#[derive(Args, Debug, Clone)]
pub struct MicrovmArgs {
    #[command(flatten)]
    pub input: iso::BootInputs,
    /// Output directory (default ./hls-origin-<profile>.microvm); an existing one is replaced
    /// only when it is a MicroVM directory or empty.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
}

/// The QEMU machine type of a MicroVM. Measured under TCG on the test machines: the Debian
/// cloud kernel reaches its no-root panic in 2.0–2.3 s with `-M q35 -kernel`, while
/// `-M microvm` hangs at TSC calibration unless given `acpi=off` and the legacy PIT, PIC and
/// RTC, and then takes 4–11 s.
pub const MACHINE: &str = "q35";

/// The modules the MicroVM's machine needs, dependencies added at build time: its only
/// device is the virtio-net NIC on PCI (`imgbuild boot DIR` gives no CD, disk or SCSI).
/// The command line names them (`imgbuild.modules=`, read by imgbuild-init), so the
/// initramfs stays the ISO's byte for byte while the boot skips the ISO's other drivers
/// (ten modules, about 0.3 s under TCG).
pub const MACHINE_MODULES: &[&str] = &["virtio_pci", "virtio_net"];

/// `DIR/microvm.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MicrovmMeta {
    pub imgbuild: String,
    pub profile: String,
    pub image: String,
    pub ports: Vec<u16>,
    pub memory: String,
    pub machine: String,
    /// The kernel release (`uname -r` of the guest).
    pub kernel: String,
    /// The whole kernel command line, consoles included.
    pub cmdline: String,
    /// The guest's network (the profile's `iso.network`).
    #[serde(default)]
    pub network: crate::profile::Network,
}

pub const META_FILE: &str = "microvm.json";
pub const KERNEL_FILE: &str = "vmlinuz";
pub const INITRD_FILE: &str = "initrd.img";

/// Whether `dir` is a MicroVM directory (it has a `microvm.json`).
pub fn is_microvm(dir: &Path) -> bool {
    dir.is_dir() && dir.join(META_FILE).is_file()
}

/// Reads `DIR/microvm.json`.
pub fn read_meta(dir: &Path) -> Result<MicrovmMeta> {
    let path = dir.join(META_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        BadInput(format!(
            "{}: not a MicroVM description ({e}); build it again with imgbuild microvm",
            path.display()
        ))
        .into()
    })
}

pub fn run(ctx: &Ctx, a: MicrovmArgs) -> Result<()> {
    let out = build(ctx, &a)?;
    println!("{}", out.display());
    Ok(())
}

/// The profile's command line plus `imgbuild.modules=` with [`MACHINE_MODULES`] and what
/// they depend on, in load order.
fn machine_cmdline(profile_cmdline: &str, modules_dir: &Path) -> Result<String> {
    let mods = iso::modules::resolve(modules_dir, MACHINE_MODULES).map_err(iso::IsoError::from)?;
    let names: Vec<&str> = mods.iter().map(|m| m.name.as_str()).collect();
    let modules = format!("imgbuild.modules={}", names.join(","));
    Ok(if profile_cmdline.is_empty() {
        modules
    } else {
        format!("{profile_cmdline} {modules}")
    })
}

/// Builds the MicroVM directory and returns its path.
pub fn build(ctx: &Ctx, a: &MicrovmArgs) -> Result<PathBuf> {
    let payload = iso::boot_payload(ctx, &a.input)?;
    let p = &payload.profile;
    let output = a
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}-{}.microvm", p.image.name, p.name)));
    if let Some(e) = crate::oci::files::missing_output_dir(&output) {
        return Err(BadInput(e).into());
    }
    if output.exists() && !is_microvm(&output) {
        let empty = std::fs::read_dir(&output)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(BadInput(format!(
                "-o {}: exists and is not a MicroVM directory; name a new or empty directory",
                output.display()
            ))
            .into());
        }
    }
    let meta = MicrovmMeta {
        imgbuild: env!("CARGO_PKG_VERSION").into(),
        profile: p.id(),
        image: p.image_ref(),
        ports: p.ports(),
        memory: p
            .iso
            .as_ref()
            .map_or_else(|| "512M".into(), |i| i.memory.clone()),
        machine: MACHINE.into(),
        kernel: payload.assets.kver.clone(),
        cmdline: bootcfg::full(
            bootcfg::CONSOLES_DEFAULT,
            &machine_cmdline(&payload.cmdline, &payload.assets.modules)?,
        ),
        network: p
            .iso
            .as_ref()
            .map(|i| i.network.clone())
            .unwrap_or_default(),
    };
    let mut json = serde_json::to_vec_pretty(&meta)?;
    json.push(b'\n');
    // Written beside the output under a temporary name and renamed into place when
    // complete: an error (or a signal) leaves the old directory (or nothing) behind.
    let pending = crate::oci::files::PendingDir::new_for(&output)
        .with_context(|| format!("creating a directory beside {}", output.display()))?;
    let tmp = &pending.path;
    std::fs::copy(&payload.assets.kernel, tmp.join(KERNEL_FILE))
        .with_context(|| format!("copying the kernel {}", payload.assets.kernel.display()))?;
    std::fs::write(tmp.join(INITRD_FILE), &payload.initrd)?;
    std::fs::write(tmp.join(META_FILE), &json)?;
    for f in [KERNEL_FILE, INITRD_FILE, META_FILE] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.join(f), std::fs::Permissions::from_mode(0o644))?;
    }
    pending
        .persist(&output)
        .with_context(|| format!("naming {}", output.display()))?;
    Ok(output)
}
