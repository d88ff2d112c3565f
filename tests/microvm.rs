//! `imgbuild microvm` writes a reproducible MicroVM directory (the ISO's initramfs, the
//! kernel, microvm.json) and `imgbuild boot DIR` boots it with the kernel given to QEMU
//! directly, default accelerator choice, until the service answers /health through the
//! forward. Bad input is one line, exit 2, nothing left behind. Full tier: QEMU and the boot
//! assets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn microvm(out: &Path, extra: &[&str]) -> std::process::Output {
    common::imgbuild()
        .args(["microvm", "origin/default", "-o", out.to_str().unwrap()])
        .arg("--boot-assets")
        .arg(common::boot_assets())
        .args(extra)
        .output()
        .unwrap()
}

/// The names of the files in `dir`, sorted.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn health(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /health HTTP/1.0\r\n\r\n");
    let mut b = String::new();
    let _ = s.read_to_string(&mut b);
    b.starts_with("HTTP/1.1 200") && b.ends_with("OK\n")
}

#[test]
#[ignore = "full: needs the boot assets"]
fn the_microvm_directory_is_reproducible_and_carries_the_isos_initramfs() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a.microvm"), d.path().join("b.microvm"));
    let o = microvm(&a, &[]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    // The second with --timings: a table of the stages on stderr, the same files.
    let o = microvm(&b, &["--timings"]);
    let err = common::stderr(&o);
    assert!(o.status.success(), "{err}");
    let stages = common::timing_stages(&err);
    assert_eq!(
        stages,
        [
            "profile",
            "payloads",
            "modules",
            "initramfs",
            "kernel",
            "write",
            "total"
        ],
        "{err}"
    );
    let names = file_names(&a);
    assert_eq!(names, ["initrd.img", "microvm.json", "vmlinuz"]);
    for n in &names {
        assert_eq!(
            std::fs::read(a.join(n)).unwrap(),
            std::fs::read(b.join(n)).unwrap(),
            "{n} differs between two builds"
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("microvm.json")).unwrap()).unwrap();
    assert_eq!(meta["profile"], "origin/default");
    assert_eq!(meta["ports"], serde_json::json!([17080]));
    assert_eq!(meta["machine"], "q35");
    assert!(
        meta["cmdline"].as_str().unwrap().contains("console=ttyS0"),
        "{meta}"
    );
    // Only the modules of its machine (virtio-net on PCI, with their dependencies).
    let cmdline = meta["cmdline"].as_str().unwrap();
    let modules = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("imgbuild.modules="))
        .unwrap_or_else(|| panic!("no imgbuild.modules= in {cmdline}"));
    let modules: Vec<&str> = modules.split(',').collect();
    // The base profile's kernel arguments, which spare the boot work a VM pays for in emulated
    // CPU time (docs/booting.md).
    for w in ["cryptomgr.notests", "no_timer_check"] {
        assert!(
            cmdline.split_whitespace().any(|x| x == w),
            "{w} missing: {cmdline}"
        );
    }
    for m in ["virtio_pci", "virtio_net", "virtio_ring", "net_failover"] {
        assert!(modules.contains(&m), "{m} missing: {modules:?}");
    }
    for m in ["isofs", "sr_mod", "ata_piix", "scsi_mod"] {
        assert!(!modules.contains(&m), "{m} is an ISO driver: {modules:?}");
    }
    assert_eq!(
        std::fs::read(a.join("vmlinuz")).unwrap(),
        std::fs::read(common::boot_assets().join("vmlinuz")).unwrap()
    );
    // The initramfs is the one the ISO carries, byte for byte.
    let stage = d.path().join("stage");
    let o = common::imgbuild()
        .args(["iso", "origin/default", "-o"])
        .arg(d.path().join("x.iso"))
        .arg("--boot-assets")
        .arg(common::boot_assets())
        .arg("--stage")
        .arg(&stage)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert_eq!(
        std::fs::read(a.join("initrd.img")).unwrap(),
        std::fs::read(stage.join("tree/boot/initrd.img")).unwrap()
    );
    // Built again over itself: replaced, same bytes.
    let o = microvm(&a, &[]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert_eq!(
        std::fs::read(a.join("initrd.img")).unwrap(),
        std::fs::read(b.join("initrd.img")).unwrap()
    );
}

#[test]
#[ignore = "full: needs the boot assets"]
fn bad_microvm_input_is_one_line_and_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let busy = d.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    let o = microvm(&busy, &[]);
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("exists and is not a MicroVM directory"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(busy.join("notes.txt")).unwrap(),
        "mine"
    );
    // Nothing half-written beside it.
    let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");

    // An output in a directory that does not exist: said before anything is built, for the
    // MicroVM and the ISO alike.
    let nowhere = d.path().join("nowhere");
    for (what, o) in [
        ("microvm", microvm(&nowhere.join("x.microvm"), &[])),
        (
            "iso",
            common::run(&["iso", "-o", nowhere.join("x.iso").to_str().unwrap()]),
        ),
    ] {
        let err = common::stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
        assert!(
            err.contains("nowhere does not exist; create it"),
            "{what}: {err}"
        );
    }
    assert!(!nowhere.exists());

    // Booting a directory that is not a MicroVM, or a MicroVM with ISO-only options.
    let o = common::run(&["boot", busy.to_str().unwrap()]);
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("without microvm.json"), "{err}");
    let vm = d.path().join("vm");
    let o = microvm(&vm, &[]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let o = common::run(&["boot", vm.to_str().unwrap(), "--uefi"]);
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--uefi and --disk are for ISOs"), "{err}");
}

#[test]
#[ignore = "full: needs qemu and the boot assets"]
fn the_microvm_boots_its_kernel_directly_and_answers_health() {
    let d = tempfile::tempdir().unwrap();
    let vm = d.path().join("origin-default.microvm");
    let o = microvm(&vm, &[]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let text = boot_until_health(&vm, "microvm-boot");
    // Direct kernel boot: no boot loader, no boot medium.
    let line = text
        .lines()
        .find(|l| l.starts_with("Executing: qemu-system-x86_64"))
        .unwrap_or_else(|| panic!("{text}"));
    for want in ["-M q35", "-kernel ", "-initrd ", "-append "] {
        assert!(line.contains(want), "{want}: {line}");
    }
    assert!(
        !line.contains("ide-cd") && !line.contains("pflash"),
        "{line}"
    );
    assert!(
        text.contains("imgbuild-init: service hls-origin started"),
        "{text}"
    );
    assert!(!text.contains("ISOLINUX"), "{text}");
    // It loaded its machine's modules and skipped the ISO's CD, disk and SCSI drivers, which
    // the very same initramfs carries.
    assert!(text.contains("module virtio_net loaded"), "{text}");
    assert!(!text.contains("module isofs"), "{text}");
    assert!(!text.contains("module scsi_mod"), "{text}");

    // The profile's [kernel] sysctls are in force: imgbuild-init reads each back from
    // /proc/sys after writing it and prints what the kernel holds.
    let base: toml::Table = toml::from_str(
        &std::fs::read_to_string(common::repo().join("profiles/origin/_base.toml")).unwrap(),
    )
    .unwrap();
    let sysctl = base["kernel"]["sysctl"].as_table().unwrap();
    assert!(sysctl.len() >= 10, "{sysctl:?}");
    for (name, want) in sysctl {
        let want = want
            .as_str()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let line = format!("imgbuild-init: sysctl {name} = {want}");
        assert!(
            text.lines().any(|l| l.trim_end() == line),
            "no {line:?} on the console:\n{text}"
        );
    }
    assert!(
        !text.contains("cannot set"),
        "every sysctl was set:\n{text}"
    );
    assert!(
        text.contains("imgbuild-init: nofile limit 1048576"),
        "{text}"
    );
}

/// Boots a MicroVM directory (default accelerator choice) until /health answers through the
/// forward, kills it, and returns what `imgbuild boot` printed.
fn boot_until_health(vm: &Path, name: &str) -> String {
    let port = common::reserved_port();
    let log = testkit::ChildLog::new(name);
    let mut child = common::imgbuild()
        .arg("boot")
        .arg(vm)
        .args(["--forward", &format!("{port}:17080")])
        .stdin(Stdio::null())
        .stdout(log.stdio())
        .stderr(log.stdio())
        .process_group(0)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut up = false;
    while t0.elapsed() < Duration::from_secs(180) {
        if health(port) {
            up = true;
            break;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("imgbuild boot exited ({st}):\n{}", log.text());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    common::stop_group(&mut child);
    let text = log.text();
    assert!(up, "/health never answered:\n{text}");
    eprintln!("{name}: /health after {:.1} s", t0.elapsed().as_secs_f64());
    text
}

/// `--pvh`: the kernel unpacked (`vmlinux`, an ELF with the PVH entry note), named in
/// microvm.json, booted by QEMU through that entry to /health. Without `--pvh` the JSON has
/// no `kernel_file` key (the bzImage, as before the option existed).
#[test]
#[ignore = "full: needs qemu and the boot assets"]
fn a_pvh_microvm_boots_the_unpacked_kernel() {
    let d = tempfile::tempdir().unwrap();
    let vm = d.path().join("pvh.microvm");
    let o = microvm(&vm, &["--pvh"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let names = file_names(&vm);
    assert_eq!(names, ["initrd.img", "microvm.json", "vmlinux"]);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vm.join("microvm.json")).unwrap()).unwrap();
    assert_eq!(meta["kernel_file"], "vmlinux");
    let bzimage = std::fs::read(common::boot_assets().join("vmlinuz")).unwrap();
    let vmlinux = std::fs::read(vm.join("vmlinux")).unwrap();
    assert_eq!(&vmlinux[..4], b"\x7fELF");
    assert!(vmlinux.len() > bzimage.len(), "{} bytes", vmlinux.len());
    assert_eq!(vmlinux, imgbuild::vmlinux::pvh_kernel(&bzimage).unwrap());
    // The default directory says nothing of a kernel file.
    let plain = d.path().join("plain.microvm");
    let o = microvm(&plain, &[]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let json = std::fs::read_to_string(plain.join("microvm.json")).unwrap();
    assert!(!json.contains("kernel_file"), "{json}");

    let text = boot_until_health(&vm, "microvm-pvh");
    let line = text
        .lines()
        .find(|l| l.starts_with("Executing: qemu-system-x86_64"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("/vmlinux -initrd "), "{line}");
    assert!(
        text.contains("imgbuild-init: service hls-origin started"),
        "{text}"
    );
}

/// `--pvh` with a kernel imgbuild cannot unpack (the boot assets' kernel with its payload's
/// magic changed to xz's): one line naming the kernel and the method, exit 2, nothing
/// written; and a microvm.json whose kernel_file is a path is refused before QEMU starts.
#[test]
#[ignore = "full: needs the boot assets"]
fn pvh_refuses_a_kernel_it_cannot_unpack_and_boot_refuses_a_kernel_path() {
    let d = tempfile::tempdir().unwrap();
    let mut bz = std::fs::read(common::boot_assets().join("vmlinuz")).unwrap();
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let start = (usize::from(bz[0x1f1]) + 1) * 512 + u32_at(&bz, 0x248) as usize;
    bz[start..start + 6].copy_from_slice(b"\xfd7zXZ\0");
    let kernel = d.path().join("vmlinuz-xz");
    std::fs::write(&kernel, &bz).unwrap();
    let vm = d.path().join("vm");
    let o = microvm(&vm, &["--pvh", "--kernel", kernel.to_str().unwrap()]);
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("vmlinuz-xz") && err.contains("xz"), "{err}");
    assert!(!vm.exists());
    let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");

    let o = microvm(&vm, &[]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let meta = vm.join("microvm.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    json["kernel_file"] = "../../etc/passwd".into();
    std::fs::write(&meta, serde_json::to_vec(&json).unwrap()).unwrap();
    let o = common::run(&["boot", vm.to_str().unwrap()]);
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("kernel_file \"../../etc/passwd\""), "{err}");
}

/// The VGA text memory (32 KiB at 0xB8000: the kernel's vgacon scrolls by moving the
/// screen's start within it), read through QEMU's monitor, as lines of 80 characters.
fn vga_text(monitor: &Path, dump: &Path) -> String {
    use std::os::unix::net::UnixStream;
    let _ = std::fs::remove_file(dump);
    let Ok(mut s) = UnixStream::connect(monitor) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = writeln!(s, "pmemsave 0xb8000 0x8000 \"{}\"", dump.display());
    // The monitor answers with a new prompt once the file is written.
    let t0 = Instant::now();
    while !dump.exists() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    let b = std::fs::read(dump).unwrap_or_default();
    let chars: Vec<u8> = b.iter().step_by(2).copied().collect();
    chars
        .chunks(80)
        .map(|r| String::from_utf8_lossy(r).trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
#[ignore = "full: needs qemu and the boot assets"]
fn the_vga_console_shows_what_the_serial_console_shows() {
    let d = tempfile::tempdir().unwrap();
    let vm = d.path().join("vga.microvm");
    let o = microvm(&vm, &[]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let monitor = d.path().join("monitor.sock");
    let dump = d.path().join("vga.bin");
    let port = common::reserved_port();
    let log = testkit::ChildLog::new("microvm-vga");
    let mut child = common::imgbuild()
        .arg("boot")
        .arg(&vm)
        .args(["--forward", &format!("{port}:17080"), "--monitor"])
        .arg(&monitor)
        .stdin(Stdio::null())
        .stdout(log.stdio())
        .stderr(log.stdio())
        .process_group(0)
        .spawn()
        .unwrap();
    let started = log.wait_for_line(
        "imgbuild-init: service hls-origin started",
        Duration::from_secs(180),
        || matches!(child.try_wait(), Ok(None)),
    );
    let mut screen = String::new();
    if started.is_some() {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(60) {
            screen = vga_text(&monitor, &dump);
            if screen.contains("imgbuild-init: service hls-origin started") {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    common::stop_group(&mut child);
    assert!(started.is_some(), "never started:\n{}", log.text());
    assert!(
        log.text().contains("imgbuild-init: consoles: tty0, ttyS0"),
        "{}",
        log.text()
    );
    assert!(
        screen.contains("imgbuild-init: service hls-origin started"),
        "the VGA screen:\n{screen}\nthe serial console:\n{}",
        log.text()
    );
}
