//! `imgbuild boot IMAGE.iso|DIR`: runs an ISO or a MicroVM directory in QEMU (src/qemu/)
//! with the serial console on this terminal and the profile's ports forwarded to 127.0.0.1
//! (same numbers unless `--forward` says otherwise). BIOS or UEFI (OVMF), CD or disk (the
//! USB-stick path); user-mode or tap networking.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use init_contract::Network;

use super::Ctx;
use crate::error::BadInput;
use crate::qemu::accel::{self, Ended};
use crate::qemu::nvram;
use crate::qemu::{
    ovmf, parse_forward, parse_serial, qemu_args, shell_line, tap, Accel, BootError, Forward,
    Machine, Medium, Net, NetMode, Serial,
};

#[derive(Args, Debug, Clone)]
pub struct BootArgs {
    /// The ISO to boot (built by `imgbuild iso`), or a MicroVM directory (built by
    /// `imgbuild microvm`: its kernel and initramfs are given to QEMU directly).
    #[arg(value_name = "IMAGE.iso|DIR")]
    pub image: PathBuf,
    /// Boot with UEFI firmware (OVMF) instead of BIOS.
    #[arg(long)]
    pub uefi: bool,
    /// Attach the image as a hard disk (what a USB stick written with dd looks like) instead
    /// of a CD.
    #[arg(long)]
    pub disk: bool,
    /// Forward 127.0.0.1:HOSTPORT to the guest's GUESTPORT (repeatable; default: the
    /// profile's ports, same numbers).
    #[arg(long, value_name = "HOSTPORT:GUESTPORT")]
    pub forward: Vec<String>,
    /// Guest memory (default: the profile's iso.memory).
    #[arg(long, value_name = "M")]
    pub memory: Option<String>,
    /// A NoCloud seed: DIR's files (meta-data, user-data) become a CIDATA volume.
    #[arg(long, value_name = "DIR")]
    pub cidata: Option<PathBuf>,
    /// Accelerator: auto uses KVM when a probe guest runs under it and boots again under
    /// TCG if the guest then fails under KVM; kvm never falls back (exit 1 when it fails).
    #[arg(long, value_enum, default_value = "auto", env = "IMGBUILD_ACCEL")]
    pub accel: Accel,
    /// Guest networking: user (QEMU's user-mode network, the ports forwarded to 127.0.0.1),
    /// tap (a tap device on a bridge holding the profile's gateway address: the guest answers
    /// on its static address), or auto: tap for a profile with a static address, else user.
    #[arg(long, value_enum, default_value = "auto")]
    pub net: NetMode,
    /// With --net tap: use this existing tap device instead of creating one.
    #[arg(long, value_name = "NAME")]
    pub tap: Option<String>,
    /// With --net tap: enslave the tap to this existing bridge instead of creating one.
    #[arg(long, value_name = "NAME")]
    pub bridge: Option<String>,
    /// Where the guest's serial console goes: stdio (this terminal, with QEMU's monitor
    /// behind Ctrl-A C) or tcp:PORT (a TCP server on 127.0.0.1:PORT that `nc`/`telnet`
    /// connect to; this terminal then gets QEMU's monitor).
    #[arg(long, value_name = "stdio|tcp:PORT", default_value = "stdio", value_parser = parse_serial)]
    pub serial: Serial,
    /// Also give QEMU's monitor on this unix socket (for scripts: `screendump`, `pmemsave`).
    #[arg(long, value_name = "PATH")]
    pub monitor: Option<PathBuf>,
    /// The QEMU program (default: qemu-system-x86_64 on PATH).
    #[arg(long, value_name = "PATH", env = "IMGBUILD_QEMU")]
    pub qemu: Option<PathBuf>,
}

impl BootArgs {
    /// The arguments `imgbuild boot IMAGE` gets: every flag at its default (the accelerator
    /// from `IMGBUILD_ACCEL` and the QEMU program from `IMGBUILD_QEMU`, as the flags' `env`
    /// read them).
    pub fn new(image: PathBuf) -> Result<BootArgs> {
        let accel = match std::env::var("IMGBUILD_ACCEL") {
            Ok(v) if !v.is_empty() => {
                <Accel as clap::ValueEnum>::from_str(&v, false).map_err(|_| {
                    BadInput(format!("IMGBUILD_ACCEL={v:?}: expected auto, kvm or tcg"))
                })?
            }
            _ => Accel::Auto,
        };
        Ok(BootArgs {
            image,
            uefi: false,
            disk: false,
            forward: vec![],
            memory: None,
            cidata: None,
            accel,
            net: NetMode::Auto,
            tap: None,
            bridge: None,
            serial: Serial::Stdio,
            monitor: None,
            qemu: std::env::var_os("IMGBUILD_QEMU")
                .filter(|q| !q.is_empty())
                .map(PathBuf::from),
        })
    }
}

/// A file only this boot uses (the firmware's variable store, the NoCloud seed) as QEMU sees
/// it: unlinked from the temp directory the moment it is made and kept open here, its
/// descriptor inherited by QEMU, which opens it as `/dev/fd/N`. So nothing is left in the
/// temp directory however imgbuild ends, `kill -9` included; a named copy was left behind by
/// every boot that was killed. It lives until the boot returns, across a KVM-to-TCG retry.
struct PrivateFile(std::fs::File);

impl PrivateFile {
    fn new(what: &str) -> Result<Self> {
        let dir = std::env::temp_dir();
        let file = crate::oci::files::scratch_in(&dir)
            .with_context(|| format!("creating the {what} in {}", dir.display()))?;
        // Inherited by the processes imgbuild starts (QEMU among them): no close-on-exec.
        // SAFETY: F_SETFD on a descriptor this File owns; no memory is involved.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) } == -1 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("passing the {what} to QEMU"));
        }
        Ok(PrivateFile(file))
    }

    /// The name QEMU opens it by.
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/fd/{}", self.0.as_raw_fd()))
    }
}

/// For an ISO without `/imgbuild.json`: the profile whose volume id the ISO carries.
fn meta_from_volume_id(ctx: &Ctx, image: &Path) -> Option<crate::iso::IsoMeta> {
    let vol = crate::iso::hadris::read_iso(image).ok()?.volume_id;
    let p = crate::profile::load_all(&ctx.root)
        .ok()?
        .into_iter()
        .find(|p| p.kind == crate::profile::Kind::Origin && p.volume_id() == vol)?;
    Some(crate::iso::IsoMeta {
        imgbuild: String::new(),
        profile: p.id(),
        image: p.image_ref(),
        ports: p.ports(),
        memory: crate::vm::memory(&p),
        kernel: String::new(),
        cmdline: String::new(),
        network: crate::vm::network(&p),
    })
}

pub fn run(ctx: &Ctx, a: BootArgs) -> Result<()> {
    let microvm = a.image.is_dir();
    if microvm && !crate::microvm::is_microvm(&a.image) {
        return Err(BadInput(format!(
            "{}: a directory without {}; build a MicroVM into it with imgbuild microvm, or name an ISO",
            a.image.display(),
            crate::microvm::META_FILE
        ))
        .into());
    }
    if !microvm && !a.image.is_file() {
        return Err(BadInput(format!("{}: no such file", a.image.display())).into());
    }
    if microvm && (a.uefi || a.disk) {
        return Err(BadInput(format!(
            "{}: a MicroVM boots its kernel directly; --uefi and --disk are for ISOs",
            a.image.display()
        ))
        .into());
    }
    let qemu = accel::qemu_program(a.qemu.as_deref()).ok_or(BootError::NoQemu)?;
    let (meta, medium) = if microvm {
        let vm = crate::microvm::read_meta(&a.image)?;
        let medium = Medium::Kernel {
            kernel: a.image.join(&vm.kernel_file),
            initrd: a.image.join(crate::microvm::INITRD_FILE),
            cmdline: vm.cmdline.clone(),
            machine: vm.machine.clone(),
        };
        let meta = crate::iso::IsoMeta {
            imgbuild: vm.imgbuild,
            profile: vm.profile,
            image: vm.image,
            ports: vm.ports,
            memory: vm.memory,
            kernel: vm.kernel,
            cmdline: vm.cmdline,
            network: vm.network,
        };
        (Some(meta), medium)
    } else {
        let meta = match crate::iso::read_meta(&a.image)
            .with_context(|| format!("{}: reading imgbuild.json", a.image.display()))?
        {
            Some(m) => Some(m),
            None => meta_from_volume_id(ctx, &a.image),
        };
        let medium = Medium::Iso {
            image: a.image.clone(),
            disk: a.disk,
        };
        (meta, medium)
    };
    let forwards: Vec<Forward> = if a.forward.is_empty() {
        meta.as_ref()
            .map(|m| {
                m.ports
                    .iter()
                    .map(|&p| Forward { host: p, guest: p })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        a.forward
            .iter()
            .map(|f| parse_forward(f).map_err(|e| BadInput(e.to_string())))
            .collect::<Result<_, _>>()?
    };
    let memory = a
        .memory
        .clone()
        .or_else(|| meta.as_ref().map(|m| m.memory.clone()))
        .unwrap_or_else(|| crate::vm::DEFAULT_MEMORY.into());
    let kvm = match a.accel {
        Accel::Tcg => false,
        Accel::Kvm => {
            accel::probe_kvm(&qemu).map_err(|why| {
                anyhow::anyhow!("KVM is not usable ({why}); --accel kvm does not fall back to TCG: use --accel auto or tcg")
            })?;
            true
        }
        Accel::Auto => {
            match accel::probe_kvm(&qemu) {
                Ok(()) => true,
                Err(why) => {
                    eprintln!("imgbuild: KVM is not usable ({why}); using TCG (software emulation, slower)");
                    false
                }
            }
        }
    };
    // Held until the boot returns: QEMU opens them by their descriptors.
    let mut private = Vec::new();
    // The firmware's variable store: a private copy of the one the last boot with this
    // firmware kept (src/qemu/nvram.rs), else of the firmware's template.
    let mut var_store = None;
    let uefi = if a.uefi {
        let (code, template) = ovmf()?;
        let store = nvram::locate(
            crate::buildenv::cache_dir("uefi-vars").as_deref(),
            &code,
            &template,
            a.disk,
        )
        .with_context(|| format!("reading the firmware {}", code.display()))?;
        let copy = PrivateFile::new("firmware variable store")?;
        std::io::copy(
            &mut std::fs::File::open(&store.source)
                .with_context(|| format!("reading {}", store.source.display()))?,
            &mut &copy.0,
        )
        .with_context(|| format!("copying {}", store.source.display()))?;
        if store.kept() {
            eprintln!(
                "imgbuild: firmware variables kept from the last UEFI boot: {}",
                store.source.display()
            );
        }
        let path = copy.path();
        var_store = Some((copy.0.try_clone()?, store));
        private.push(copy);
        Some((code, path))
    } else {
        None
    };
    let cidata = match &a.cidata {
        Some(dir) => {
            let seed = PrivateFile::new("NoCloud seed volume")?;
            write_cidata(dir, seed.0.try_clone()?)?;
            let path = seed.path();
            private.push(seed);
            Some(path)
        }
        None => None,
    };
    // Networking: a tap profile (static address) gets a tap device unless told otherwise.
    let network = meta.as_ref().map(|m| m.network.clone()).unwrap_or_default();
    let tap_mode = match a.net {
        NetMode::User => false,
        NetMode::Tap => true,
        NetMode::Auto => matches!(network, Network::Static { .. }),
    };
    // SIGINT/SIGTERM/SIGHUP from here on stop QEMU and let every guard below clean up.
    crate::signals::install();
    let (tapnet, net, where_to) = if tap_mode {
        let (gateway, guest) = match &network {
            Network::Static {
                address, gateway, ..
            } => {
                let prefix = address.split_once('/').map_or("24", |x| x.1);
                (
                    gateway.as_ref().map(|g| format!("{g}/{prefix}")),
                    address.split('/').next().unwrap_or("").to_string(),
                )
            }
            Network::Dhcp | Network::None => (None, String::new()),
        };
        let t = tap::TapNet::setup(a.tap.as_deref(), a.bridge.as_deref(), gateway.as_deref())?;
        let net = Net::Tap {
            netdev: t.netdev(),
            device: t.device(),
        };
        let ports = meta.as_ref().map(|m| m.ports.clone()).unwrap_or_default();
        let urls: Vec<String> = ports
            .iter()
            .map(|p| format!("http://{guest}:{p}"))
            .collect();
        let where_to = format!(
            "; tap {} on bridge {}{}",
            t.tap,
            t.bridge,
            if urls.is_empty() || guest.is_empty() {
                String::new()
            } else {
                format!(", guest at {}", urls.join(", "))
            }
        );
        (Some(t), net, where_to)
    } else {
        let fw: Vec<String> = forwards
            .iter()
            .map(|f| format!("http://127.0.0.1:{} → guest :{}", f.host, f.guest))
            .collect();
        let where_to = if fw.is_empty() {
            String::new()
        } else {
            format!("; forwards: {}", fw.join(", "))
        };
        (None, Net::User, where_to)
    };
    let mut m = Machine {
        medium,
        net,
        serial: a.serial,
        monitor: a.monitor.clone(),
        uefi,
        forwards: if tap_mode { vec![] } else { forwards },
        memory,
        kvm,
        cidata,
    };
    let status = loop {
        let args = qemu_args(&m);
        eprintln!("Executing: {}", shell_line("qemu-system-x86_64", &args));
        match m.serial {
            Serial::Stdio => {
                eprintln!("imgbuild: serial console follows (Ctrl-A X quits QEMU){where_to}")
            }
            Serial::Tcp(port) => eprintln!(
                "imgbuild: serial console on tcp 127.0.0.1:{port} (nc 127.0.0.1 {port}); QEMU's monitor follows (quit ends the VM){where_to}"
            ),
        }
        match accel::run_guest(&qemu, &args, m.kvm)
            .with_context(|| format!("running {}", qemu.display()))?
        {
            Ended::Exited(st) => break st,
            Ended::KvmFailed(why) if a.accel == Accel::Auto => {
                eprintln!("imgbuild: KVM failed while booting ({why}); booting again under TCG (software emulation, slower)");
                m.kvm = false;
            }
            Ended::KvmFailed(why) => {
                anyhow::bail!("KVM failed while booting ({why}); --accel kvm does not fall back to TCG: use --accel auto or tcg")
            }
        }
    };
    drop(tapnet);
    // QEMU has ended: its variable store is kept for the next boot. A store that cannot be
    // kept costs the next boot time, not this one its result.
    if let Some((mut file, store)) = var_store {
        if let Some(at) = store.keep_at {
            if let Err(e) = nvram::keep(&mut file, &at) {
                tracing::warn!("firmware variables not kept at {}: {e}", at.display());
            }
        }
    }
    drop(private);
    if crate::signals::interrupted() {
        anyhow::bail!("interrupted: QEMU stopped, tap devices and temporary files removed");
    }
    if !status.success() {
        anyhow::bail!("qemu-system-x86_64 exited with {status}");
    }
    Ok(())
}

/// A NoCloud seed volume (label CIDATA, Rock Ridge + Joliet names) from a directory.
fn write_cidata(dir: &Path, out: std::fs::File) -> Result<()> {
    if !dir.join("meta-data").is_file() && !dir.join("user-data").is_file() {
        return Err(BadInput(format!(
            "--cidata {}: expected meta-data and/or user-data files",
            dir.display()
        ))
        .into());
    }
    let t = crate::iso::hadris::host_tree(dir)?;
    let epoch = crate::buildenv::source_date_epoch()?;
    let epoch = crate::buildenv::signed(epoch);
    let time = crate::iso::hadris::time(epoch)?;
    crate::iso::hadris::write_data_iso(out, &t, "CIDATA", time)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `up` boots with [`BootArgs::new`]: the same as the command line's defaults.
    #[test]
    fn new_gives_the_command_line_defaults() {
        let parsed: BootArgs = crate::commands::parse_args(&["x", "a.iso"]);
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", BootArgs::new("a.iso".into()).unwrap())
        );
    }
}
