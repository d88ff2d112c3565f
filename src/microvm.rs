//! The MicroVM writer: a directory booted by QEMU with the kernel and initramfs given
//! directly (no firmware boot loader, no boot medium): `DIR/vmlinuz` (the bzImage) or, with
//! `--pvh`, `DIR/vmlinux` (the kernel unpacked, entered at its PVH entry point),
//! `DIR/initrd.img` (the initramfs the ISO carries, byte for byte) and `DIR/microvm.json`
//! ([`MicrovmMeta`]: the kernel file, the kernel command line, the ports, memory and machine
//! type). It takes typed inputs and never
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
    /// The kernel's file in the directory: [`KERNEL_FILE`] (absent from the JSON, as in
    /// directories written before `--pvh`) or [`VMLINUX_FILE`].
    #[serde(default = "bzimage_file", skip_serializing_if = "is_bzimage_file")]
    pub kernel_file: String,
    /// The whole kernel command line, consoles included.
    pub cmdline: String,
    /// The guest's network (the profile's `iso.network`).
    #[serde(default)]
    pub network: init_contract::Network,
}

pub const META_FILE: &str = "microvm.json";
/// The kernel as the boot assets hold it, a bzImage (the default).
pub const KERNEL_FILE: &str = "vmlinuz";
/// The kernel unpacked, an ELF booted through its PVH entry point (`--pvh`).
pub const VMLINUX_FILE: &str = "vmlinux";
pub const INITRD_FILE: &str = "initrd.img";

fn bzimage_file() -> String {
    KERNEL_FILE.into()
}

fn is_bzimage_file(f: &str) -> bool {
    f == KERNEL_FILE
}

/// The kernel a MicroVM directory carries.
pub enum Kernel<'a> {
    /// The bzImage file, copied as [`KERNEL_FILE`].
    BzImage(&'a Path),
    /// The unpacked ELF ([`crate::vmlinux::pvh_kernel`]), written as [`VMLINUX_FILE`].
    Pvh(Vec<u8>),
}

impl Kernel<'_> {
    /// Its file name in the directory (what `microvm.json` names as `kernel_file`).
    pub fn file_name(&self) -> &'static str {
        match self {
            Kernel::BzImage(_) => KERNEL_FILE,
            Kernel::Pvh(_) => VMLINUX_FILE,
        }
    }
}

/// Whether `dir` is a MicroVM directory (it has a `microvm.json`).
pub fn is_microvm(dir: &Path) -> bool {
    dir.is_dir() && dir.join(META_FILE).is_file()
}

/// Reads `DIR/microvm.json`.
pub fn read_meta(dir: &Path) -> Result<MicrovmMeta> {
    let path = dir.join(META_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let meta: MicrovmMeta = serde_json::from_slice(&bytes).map_err(|e| {
        BadInput(format!(
            "{}: not a MicroVM description ({e}); build it again with imgbuild microvm",
            path.display()
        ))
    })?;
    // The file QEMU opens: one of the two names, never a path.
    if ![KERNEL_FILE, VMLINUX_FILE].contains(&meta.kernel_file.as_str()) {
        return Err(BadInput(format!(
            "{}: kernel_file {:?} is neither {KERNEL_FILE} nor {VMLINUX_FILE}; build it again with imgbuild microvm",
            path.display(),
            meta.kernel_file
        ))
        .into());
    }
    Ok(meta)
}

/// Writes the MicroVM directory `output` (kernel, initramfs, description): into a new
/// directory beside it, renamed into place when complete, so an error (or a signal) leaves
/// the old directory (or nothing) behind. An existing `output` is replaced only when it is a
/// MicroVM directory or empty.
pub fn write(output: &Path, kernel: &Kernel, initrd: &[u8], meta: &MicrovmMeta) -> Result<()> {
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
    let kernel_file = kernel.file_name();
    match kernel {
        Kernel::BzImage(path) => {
            std::fs::copy(path, tmp.join(kernel_file))
                .with_context(|| format!("copying the kernel {}", path.display()))?;
        }
        Kernel::Pvh(elf) => std::fs::write(tmp.join(kernel_file), elf)?,
    }
    std::fs::write(tmp.join(INITRD_FILE), initrd)?;
    std::fs::write(tmp.join(META_FILE), &json)?;
    for f in [kernel_file, INITRD_FILE, META_FILE] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.join(f), std::fs::Permissions::from_mode(0o644))?;
    }
    pending
        .persist(output)
        .with_context(|| format!("naming {}", output.display()))?;
    Ok(())
}
