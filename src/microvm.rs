//! The MicroVM writer: a directory booted by QEMU with the kernel and initramfs given
//! directly (no firmware boot loader, no boot medium): `DIR/vmlinuz`, `DIR/initrd.img` (the
//! initramfs the ISO carries, byte for byte) and `DIR/microvm.json` ([`MicrovmMeta`]: the
//! kernel command line, the ports, memory and machine type). It takes typed inputs and never
//! sees a profile; the `microvm` command (src/commands/microvm.rs) makes them.
//! `imgbuild boot DIR` boots it. Same inputs, same bytes.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::BadInput;

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
    pub network: init_contract::Network,
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

/// Writes the MicroVM directory `output` (kernel, initramfs, description): into a new
/// directory beside it, renamed into place when complete, so an error (or a signal) leaves
/// the old directory (or nothing) behind. An existing `output` is replaced only when it is a
/// MicroVM directory or empty.
pub fn write(output: &Path, kernel: &Path, initrd: &[u8], meta: &MicrovmMeta) -> Result<()> {
    if output.exists() && !is_microvm(output) {
        let empty = std::fs::read_dir(output)
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
    let mut json = serde_json::to_vec_pretty(meta)?;
    json.push(b'\n');
    let pending = crate::oci::files::PendingDir::new_for(output)
        .with_context(|| format!("creating a directory beside {}", output.display()))?;
    let tmp = &pending.path;
    std::fs::copy(kernel, tmp.join(KERNEL_FILE))
        .with_context(|| format!("copying the kernel {}", kernel.display()))?;
    std::fs::write(tmp.join(INITRD_FILE), initrd)?;
    std::fs::write(tmp.join(META_FILE), &json)?;
    for f in [KERNEL_FILE, INITRD_FILE, META_FILE] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.join(f), std::fs::Permissions::from_mode(0o644))?;
    }
    pending
        .persist(output)
        .with_context(|| format!("naming {}", output.display()))?;
    Ok(())
}
