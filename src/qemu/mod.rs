//! `imgbuild boot IMAGE.iso`: runs an ISO in QEMU with the serial console on this terminal
//! and the profile's ports forwarded to 127.0.0.1 (same numbers unless `--forward` says
//! otherwise). BIOS or UEFI (OVMF), CD or disk (the USB-stick path). The accelerator is
//! chosen and the guest supervised by [`accel`]: KVM only when it really runs a boot, else
//! TCG, said in one line.

pub mod accel;
pub mod tap;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

pub use accel::Accel;
use accel::Ended;

use crate::cli::Ctx;
use crate::error::BadInput;

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

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("qemu-system-x86_64 not found on PATH: install QEMU (Debian: apt-get install qemu-system-x86) or name it with --qemu / IMGBUILD_QEMU")]
    NoQemu,
    #[error("UEFI firmware not found ({0}): install OVMF (Debian: apt-get install ovmf) or set IMGBUILD_OVMF_CODE and IMGBUILD_OVMF_VARS")]
    NoOvmf(String),
    #[error("--forward {0:?}: expected HOSTPORT:GUESTPORT, e.g. 8080:17080")]
    BadForward(String),
}

/// One `hostfwd` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub host: u16,
    pub guest: u16,
}

pub fn parse_forward(s: &str) -> Result<Forward, BootError> {
    let bad = || BootError::BadForward(s.to_string());
    let (h, g) = s.split_once(':').ok_or_else(bad)?;
    Ok(Forward {
        host: h.parse().map_err(|_| bad())?,
        guest: g.parse().map_err(|_| bad())?,
    })
}

/// `--serial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serial {
    Stdio,
    Tcp(u16),
}

fn parse_serial(s: &str) -> Result<Serial, String> {
    if s == "stdio" {
        return Ok(Serial::Stdio);
    }
    s.strip_prefix("tcp:")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|&p| p != 0)
        .map(Serial::Tcp)
        .ok_or_else(|| format!("{s:?}: expected stdio or tcp:PORT (e.g. tcp:4555)"))
}

/// `--net`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetMode {
    Auto,
    User,
    Tap,
}

/// The guest's network card and what is behind it.
#[derive(Debug, Clone)]
pub enum Net {
    /// User-mode networking with the forwards.
    User,
    /// A host tap device: QEMU's `-netdev` and `-device` values.
    Tap { netdev: String, device: String },
}

/// What the guest boots from.
#[derive(Debug, Clone)]
pub enum Medium {
    /// An ISO through firmware and boot loader, as a CD or (`disk`) as a hard disk.
    Iso { image: PathBuf, disk: bool },
    /// A kernel and initramfs given to QEMU directly (a MicroVM directory).
    Kernel {
        kernel: PathBuf,
        initrd: PathBuf,
        cmdline: String,
        machine: String,
    },
}

/// What the QEMU command line is made from.
#[derive(Debug, Clone)]
pub struct Machine {
    pub medium: Medium,
    pub net: Net,
    pub serial: Serial,
    pub monitor: Option<PathBuf>,
    pub uefi: Option<(PathBuf, PathBuf)>,
    pub forwards: Vec<Forward>,
    pub memory: String,
    pub kvm: bool,
    pub cidata: Option<PathBuf>,
}

/// The QEMU arguments (without the program name).
pub fn qemu_args(m: &Machine) -> Vec<String> {
    let mut a: Vec<String> = vec![];
    let mut push = |s: &[&str]| a.extend(s.iter().map(|x| x.to_string()));
    if m.kvm {
        push(&["-accel", "kvm", "-cpu", accel::KVM_CPU]);
    } else {
        push(&["-accel", "tcg"]);
    }
    push(&["-m", &m.memory]);
    push(&["-nographic", "-no-reboot"]);
    match m.serial {
        Serial::Stdio => push(&["-serial", "mon:stdio"]),
        Serial::Tcp(port) => push(&[
            "-serial",
            &format!("tcp:127.0.0.1:{port},server=on,wait=off"),
            "-monitor",
            "stdio",
        ]),
    }
    if let Some(sock) = &m.monitor {
        push(&[
            "-monitor",
            &format!("unix:{},server=on,wait=off", sock.display()),
        ]);
    }
    let mut hostfwd = String::new();
    for f in &m.forwards {
        hostfwd.push_str(&format!(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host, f.guest));
    }
    // No option ROM on the network card: nothing boots from it (iPXE would cost time).
    match &m.net {
        Net::User => {
            push(&["-netdev", &format!("user,id=net0{hostfwd}")]);
            push(&["-device", "virtio-net-pci,netdev=net0,romfile="]);
        }
        Net::Tap { netdev, device } => {
            push(&["-netdev", netdev]);
            push(&["-device", device]);
        }
    }
    match &m.medium {
        Medium::Iso { image, disk } => {
            if let Some((code, vars)) = &m.uefi {
                push(&[
                    "-drive",
                    &format!("if=pflash,format=raw,readonly=on,file={}", code.display()),
                    "-drive",
                    &format!("if=pflash,format=raw,file={}", vars.display()),
                ]);
            }
            // The boot medium sits on an AHCI controller: firmware reads it by DMA. On the
            // legacy IDE controller SeaBIOS moves every byte of kernel and initramfs by port
            // I/O, which under TCG takes seconds longer.
            let img = image.display().to_string();
            push(&["-device", "ahci,id=ahci"]);
            if *disk {
                // snapshot=on: the guest's writes never reach the image.
                push(&[
                    "-drive",
                    &format!("file={img},format=raw,if=none,id=boot,snapshot=on"),
                    "-device",
                    "ide-hd,drive=boot,bus=ahci.0,bootindex=0",
                ]);
            } else {
                push(&[
                    "-drive",
                    &format!("file={img},format=raw,if=none,id=boot,media=cdrom,readonly=on"),
                    "-device",
                    "ide-cd,drive=boot,bus=ahci.0,bootindex=0",
                ]);
            }
        }
        Medium::Kernel {
            kernel,
            initrd,
            cmdline,
            machine,
        } => {
            push(&["-M", machine]);
            push(&["-kernel", &kernel.display().to_string()]);
            push(&["-initrd", &initrd.display().to_string()]);
            push(&["-append", cmdline]);
        }
    }
    if let Some(c) = &m.cidata {
        // The NoCloud seed on the legacy IDE controller (ata_piix + sr_mod in the initramfs).
        push(&[
            "-drive",
            &format!(
                "file={},format=raw,if=ide,media=cdrom,readonly=on",
                c.display()
            ),
        ]);
    }
    a
}

/// A command line as a shell would take it back.
pub fn shell_line(prog: &str, args: &[String]) -> String {
    std::iter::once(prog.to_string())
        .chain(args.iter().map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// OVMF code and vars templates.
fn ovmf() -> Result<(PathBuf, PathBuf), BootError> {
    if let (Some(c), Some(v)) = (
        std::env::var_os("IMGBUILD_OVMF_CODE"),
        std::env::var_os("IMGBUILD_OVMF_VARS"),
    ) {
        return Ok((c.into(), v.into()));
    }
    let pairs = [
        (
            "/usr/share/OVMF/OVMF_CODE_4M.fd",
            "/usr/share/OVMF/OVMF_VARS_4M.fd",
        ),
        (
            "/usr/share/OVMF/OVMF_CODE.fd",
            "/usr/share/OVMF/OVMF_VARS.fd",
        ),
        (
            "/usr/share/edk2/ovmf/OVMF_CODE.fd",
            "/usr/share/edk2/ovmf/OVMF_VARS.fd",
        ),
        (
            "/usr/share/qemu/edk2-x86_64-code.fd",
            "/usr/share/qemu/edk2-i386-vars.fd",
        ),
    ];
    pairs
        .iter()
        .map(|(c, v)| (PathBuf::from(c), PathBuf::from(v)))
        .find(|(c, v)| c.is_file() && v.is_file())
        .ok_or_else(|| BootError::NoOvmf(pairs.map(|p| p.0).join(", ")))
}

/// Deletes a path on drop.
struct Cleanup(Vec<PathBuf>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
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
        memory: p
            .iso
            .as_ref()
            .map_or_else(|| "512M".into(), |i| i.memory.clone()),
        kernel: String::new(),
        cmdline: String::new(),
        network: p
            .iso
            .as_ref()
            .map(|i| i.network.clone())
            .unwrap_or_default(),
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
            kernel: a.image.join(crate::microvm::KERNEL_FILE),
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
        .unwrap_or_else(|| "512M".into());
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
    let mut cleanup = Cleanup(vec![]);
    let uefi = if a.uefi {
        let (code, vars) = ovmf()?;
        // The firmware writes its variables: give it a private copy.
        let copy =
            std::env::temp_dir().join(format!("imgbuild-ovmf-vars-{}.fd", std::process::id()));
        std::fs::copy(&vars, &copy)
            .with_context(|| format!("copying {} to {}", vars.display(), copy.display()))?;
        cleanup.0.push(copy.clone());
        Some((code, copy))
    } else {
        None
    };
    let cidata = match &a.cidata {
        Some(dir) => {
            let path =
                std::env::temp_dir().join(format!("imgbuild-cidata-{}.iso", std::process::id()));
            cleanup.0.push(path.clone());
            write_cidata(dir, &path)?;
            Some(path)
        }
        None => None,
    };
    // Networking: a tap profile (static address) gets a tap device unless told otherwise.
    let network = meta.as_ref().map(|m| m.network.clone()).unwrap_or_default();
    let tap_mode = match a.net {
        NetMode::User => false,
        NetMode::Tap => true,
        NetMode::Auto => matches!(network, crate::profile::Network::Static { .. }),
    };
    // SIGINT/SIGTERM/SIGHUP from here on stop QEMU and let every guard below clean up.
    crate::signals::install();
    let (tapnet, net, where_to) = if tap_mode {
        let (gateway, guest) = match &network {
            crate::profile::Network::Static {
                address, gateway, ..
            } => {
                let prefix = address.split_once('/').map_or("24", |x| x.1);
                (
                    Some(format!("{gateway}/{prefix}")),
                    address.split('/').next().unwrap_or("").to_string(),
                )
            }
            crate::profile::Network::Dhcp => (None, String::new()),
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
    drop(cleanup);
    if crate::signals::interrupted() {
        anyhow::bail!("interrupted: QEMU stopped, tap devices and temporary files removed");
    }
    if !status.success() {
        anyhow::bail!("qemu-system-x86_64 exited with {status}");
    }
    Ok(())
}

/// A NoCloud seed volume (label CIDATA, Rock Ridge + Joliet names) from a directory.
fn write_cidata(dir: &Path, out: &Path) -> Result<()> {
    if !dir.join("meta-data").is_file() && !dir.join("user-data").is_file() {
        return Err(BadInput(format!(
            "--cidata {}: expected meta-data and/or user-data files",
            dir.display()
        ))
        .into());
    }
    let t = crate::iso::hadris::host_tree(dir)?;
    let epoch = crate::iso::source_date_epoch()?;
    let time = crate::iso::hadris::time(epoch)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    crate::iso::hadris::write_data_iso(f, &t, "CIDATA", time)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_parse() {
        assert_eq!(
            parse_forward("18080:17080").unwrap(),
            Forward {
                host: 18080,
                guest: 17080
            }
        );
        assert!(parse_forward("18080").is_err());
        assert!(parse_forward("x:1").is_err());
    }

    #[test]
    fn qemu_line_has_serial_console_virtio_nic_and_forwards() {
        let m = Machine {
            medium: Medium::Iso {
                image: "a.iso".into(),
                disk: true,
            },
            uefi: Some(("/c.fd".into(), "/tmp/v.fd".into())),
            forwards: vec![Forward {
                host: 18080,
                guest: 17080,
            }],
            memory: "512M".into(),
            kvm: false,
            cidata: None,
            net: Net::User,
            serial: Serial::Stdio,
            monitor: None,
        };
        let line = shell_line("qemu-system-x86_64", &qemu_args(&m));
        assert!(line.contains("-accel tcg"), "{line}");
        assert!(
            line.contains("-nographic -no-reboot -serial mon:stdio"),
            "{line}"
        );
        assert!(
            line.contains("-netdev user,id=net0,hostfwd=tcp:127.0.0.1:18080-:17080 -device virtio-net-pci,netdev=net0,romfile="),
            "{line}"
        );
        assert!(
            line.contains("if=pflash,format=raw,readonly=on,file=/c.fd"),
            "{line}"
        );
        assert!(
            line.contains("file=a.iso,format=raw,if=none,id=boot,snapshot=on"),
            "{line}"
        );
        assert!(line.contains("ide-hd,drive=boot,bus=ahci.0"), "{line}");
        assert_eq!(shell_line("x", &["a b".into()]), "x 'a b'");
    }
}
