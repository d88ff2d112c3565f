//! QEMU for `imgbuild boot` (src/commands/boot.rs) and `up`: the machine description
//! ([`Machine`]) and its command line ([`qemu_args`]), the firmware ([`ovmf`]), the
//! accelerator choice and guest supervision ([`accel`]: KVM only when it really runs a boot,
//! else TCG, said in one line), tap networking ([`tap`]) and the UEFI variable store kept
//! between boots ([`nvram`]).

pub mod accel;
pub mod nvram;
pub mod tap;

use std::path::PathBuf;

pub use accel::Accel;

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

pub fn parse_serial(s: &str) -> Result<Serial, String> {
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
            // I/O, which under TCG takes seconds longer. A UEFI CD sits on virtio-scsi
            // instead: OVMF's AHCI driver busy-waits 100 µs after each ATAPI command, 0.6 s
            // under TCG for the 21 MB systemd-boot reads from a CD; its virtio-scsi driver
            // reads them in 0.1 s (docs/booting.md). A disk reads well on AHCI with both.
            let img = image.display().to_string();
            if *disk {
                push(&["-device", "ahci,id=ahci"]);
                // snapshot=on: the guest's writes never reach the image.
                push(&[
                    "-drive",
                    &format!("file={img},format=raw,if=none,id=boot,snapshot=on"),
                    "-device",
                    "ide-hd,drive=boot,bus=ahci.0,bootindex=0",
                ]);
            } else {
                let controller = if m.uefi.is_some() {
                    [
                        "virtio-scsi-pci,id=scsi0",
                        "scsi-cd,drive=boot,bus=scsi0.0,bootindex=0",
                    ]
                } else {
                    ["ahci,id=ahci", "ide-cd,drive=boot,bus=ahci.0,bootindex=0"]
                };
                push(&[
                    "-device",
                    controller[0],
                    "-drive",
                    &format!("file={img},format=raw,if=none,id=boot,media=cdrom,readonly=on"),
                    "-device",
                    controller[1],
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
pub fn ovmf() -> Result<(PathBuf, PathBuf), BootError> {
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

    /// A TCG machine booting `a.iso` (as a disk or a CD) with user networking.
    fn iso_machine(disk: bool, uefi: bool) -> Machine {
        Machine {
            medium: Medium::Iso {
                image: "a.iso".into(),
                disk,
            },
            uefi: uefi.then(|| ("/c.fd".into(), "/tmp/v.fd".into())),
            forwards: vec![],
            memory: "512M".into(),
            kvm: false,
            cidata: None,
            net: Net::User,
            serial: Serial::Stdio,
            monitor: None,
        }
    }

    #[test]
    fn qemu_line_has_serial_console_virtio_nic_and_forwards() {
        let mut m = iso_machine(true, true);
        m.forwards = vec![Forward {
            host: 18080,
            guest: 17080,
        }];
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

    #[test]
    fn a_cd_sits_on_ahci_under_seabios_and_on_virtio_scsi_under_ovmf() {
        let cd = "-drive file=a.iso,format=raw,if=none,id=boot,media=cdrom,readonly=on";
        let bios = shell_line("q", &qemu_args(&iso_machine(false, false)));
        assert!(
            bios.contains(&format!(
                "-device ahci,id=ahci {cd} -device ide-cd,drive=boot,bus=ahci.0,bootindex=0"
            )),
            "{bios}"
        );
        assert!(!bios.contains("scsi"), "{bios}");
        let uefi = shell_line("q", &qemu_args(&iso_machine(false, true)));
        assert!(
            uefi.contains(&format!(
                "-device virtio-scsi-pci,id=scsi0 {cd} -device scsi-cd,drive=boot,bus=scsi0.0,bootindex=0"
            )),
            "{uefi}"
        );
        assert!(!uefi.contains("ahci"), "{uefi}");
    }
}
