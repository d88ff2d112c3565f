//! imgbuild-init as PID 1 of a real kernel: QEMU (TCG) boots the Debian cloud kernel from
//! the boot-asset directory (`scripts/boot-assets`) with an initramfs this test writes
//! itself: /init is imgbuild-init, the service is a static busybox httpd. It checks, in the
//! user's terms: the network comes up by DHCP, `/health` answers through a port forward,
//! kernel command-line overrides reach the service, a NoCloud CIDATA volume sets the
//! hostname, the test kill is followed by a restart, and ctrl-alt-del powers the machine off.
//!
//! Skipped (with a note) when qemu-system-x86_64, the boot assets or a static busybox are
//! missing. The ISO's own end-to-end tests live with the ISO writer.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_imgbuild-init");

/// Network and CD modules, dependencies first (the order the ISO notes found to work).
const MODULES: &[&str] = &[
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/net/virtio_net.ko",
    "drivers/scsi/scsi_common.ko",
    "drivers/scsi/scsi_mod.ko",
    "drivers/ata/libata.ko",
    "drivers/ata/ata_piix.ko",
    "drivers/cdrom/cdrom.ko",
    "drivers/scsi/sr_mod.ko",
    "fs/isofs/isofs.ko",
];

/// A minimal newc cpio writer (the format the kernel unpacks as initramfs).
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn new() -> Cpio {
        Cpio {
            out: vec![],
            ino: 1,
        }
    }
    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            1,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.ino += 1;
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[], (0, 0));
    }
    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100000 | mode, data, (0, 0));
    }
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.out
    }
}

fn assets() -> Option<(PathBuf, PathBuf, String)> {
    let dir = std::env::var_os("IMGBUILD_BOOT_ASSETS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/imgbuild/boot-assets"))
        })?;
    let kernel = dir.join("vmlinuz");
    let kver = std::fs::read_dir(dir.join("modules"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()?;
    kernel
        .exists()
        .then(|| (kernel, dir.join("modules").join(&kver), kver))
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

fn is_static(p: &Path) -> bool {
    // A static ELF has no PT_INTERP program header; look for the interpreter path instead
    // of parsing: dynamic binaries carry "/lib64/ld-linux" in their first pages.
    let mut head = vec![0u8; 4096];
    let n = std::fs::File::open(p)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    n > 4 && &head[..4] == b"\x7fELF" && !head[..n].windows(8).any(|w| w == b"/lib64/l")
}

fn initramfs(
    modules_dir: &Path,
    kver: &str,
    busybox: &Path,
    network: serde_json::Value,
    extra_modules: &[&str],
) -> Vec<u8> {
    let mut c = Cpio::new();
    for d in [
        "bin",
        "dev",
        "etc",
        "etc/imgbuild",
        "proc",
        "sys",
        "run",
        "tmp",
        "www",
    ] {
        c.dir(d);
    }
    c.entry("dev/console", 0o020600, &[], (5, 1));
    c.file("init", 0o755, &std::fs::read(BIN).unwrap());
    c.file("bin/busybox", 0o755, &std::fs::read(busybox).unwrap());
    c.file("www/health", 0o644, b"OK\n");
    let mut listed = Vec::new();
    let mut made = std::collections::BTreeSet::new();
    for m in MODULES {
        let host = modules_dir.join("kernel").join(m);
        let Ok(data) = std::fs::read(&host) else {
            continue;
        };
        let rel = format!("lib/modules/{kver}/kernel/{m}");
        let mut prefix = String::new();
        for part in Path::new(&rel).parent().unwrap().iter() {
            prefix = if prefix.is_empty() {
                part.to_string_lossy().into_owned()
            } else {
                format!("{prefix}/{}", part.to_string_lossy())
            };
            if made.insert(prefix.clone()) {
                c.dir(&prefix);
            }
        }
        c.file(&rel, 0o644, &data);
        listed.push(rel);
    }
    listed.extend(extra_modules.iter().map(|m| m.to_string()));
    let config = serde_json::json!({
        "service": {
            "name": "httpd",
            "path": "/bin/busybox",
            "args": ["sh", "-c",
                "echo \"svc env PORT=$PORT GREETING=$GREETING FROM_CONFIG=$FROM_CONFIG FROM_NOCLOUD=$FROM_NOCLOUD uid=$(/bin/busybox id -u)\"; exec /bin/busybox httpd -f -p \"$PORT\" -h /www"],
            "env": {"PORT": "17080", "FROM_CONFIG": "yes", "GREETING": "config"},
            "uid": 1000, "gid": 1000
        },
        "hostname": "from-config",
        "network": network,
        "modules": listed,
        "cmdline_prefix": "hls."
    });
    c.file(
        "etc/imgbuild/init.json",
        0o644,
        serde_json::to_string_pretty(&config).unwrap().as_bytes(),
    );
    c.finish()
}

struct Vm {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Vm {
    fn expect(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no console line containing {needle:?} within {timeout:?}; console:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    Some(r)
}

/// Everything a boot needs from the host. These tests are in the full tier, which installs
/// all of it; a missing piece fails the test rather than skipping it.
struct Host {
    qemu: PathBuf,
    kernel: PathBuf,
    modules_dir: PathBuf,
    kver: String,
    busybox: PathBuf,
}

fn host() -> Option<Host> {
    let Some(qemu) = on_path("qemu-system-x86_64") else {
        panic!("qemu-system-x86_64 not found: apt-get install qemu-system-x86 (scripts/test full does)");
    };
    let Some((kernel, modules_dir, kver)) = assets() else {
        panic!("no boot assets: run scripts/boot-assets");
    };
    let Some(busybox) = on_path("busybox").filter(|b| is_static(b)) else {
        panic!("no static busybox on PATH: apt-get install busybox-static");
    };
    Some(Host {
        qemu,
        kernel,
        modules_dir,
        kver,
        busybox,
    })
}

/// Boot with this initramfs, kernel command line and extra QEMU arguments; the serial
/// console's lines arrive on `Vm::lines`.
fn boot(h: &Host, initrd: &Path, append: &str, extra: &[String]) -> Vm {
    let mut cmd = Command::new(&h.qemu);
    cmd.args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot"])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(&h.kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 quiet panic=-1 {append}"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if !extra.iter().any(|a| a == "-monitor") {
        // -nographic would put the monitor on stdio next to the serial console.
        cmd.args(["-monitor", "none"]);
    }
    let mut child = cmd.spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).split(b'\n').map_while(Result::ok) {
            let l = String::from_utf8_lossy(&l)
                .trim_end_matches('\r')
                .to_string();
            eprintln!("[vm] {l}");
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Vm {
        child,
        lines,
        seen: vec![],
    }
}

/// Wait for `/health` to answer 200 OK through the host port forward.
fn wait_health(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(r) = http_get(port, "/health") {
            if r.starts_with("HTTP/1.") && r.contains(" 200 ") && r.ends_with("OK\n") {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no /health answer through the forward"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn wait_power_off(vm: &mut Vm, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = vm.child.try_wait().unwrap() {
            assert!(s.success(), "qemu exited with {s}");
            return;
        }
        assert!(Instant::now() < deadline, "the machine did not power off");
        std::thread::sleep(Duration::from_millis(200));
    }
}

const BOOT: Duration = Duration::from_secs(120);

#[test]
#[ignore = "full: needs qemu, boot assets and busybox-static"]
fn the_machine_boots_serves_restarts_and_powers_off_on_ctrl_alt_del() {
    let Some(h) = host() else { return };
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd.cpio");
    std::fs::write(
        &initrd,
        initramfs(
            &h.modules_dir,
            &h.kver,
            &h.busybox,
            serde_json::json!({"mode": "dhcp"}),
            &[],
        ),
    )
    .unwrap();

    // A NoCloud seed when a mastering tool is around (the boot must work without it too).
    let seed = dir.path().join("seed.iso");
    let seed_dir = dir.path().join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    std::fs::write(
        seed_dir.join("meta-data"),
        "instance-id: iid-1\nlocal-hostname: from-nocloud\n",
    )
    .unwrap();
    std::fs::write(
        seed_dir.join("user-data"),
        "#cloud-config\nhls:\n  GREETING: nocloud\n  FROM_NOCLOUD: yes\n",
    )
    .unwrap();
    let have_seed = on_path("genisoimage")
        .map(|g| {
            Command::new(g)
                .args(["-quiet", "-V", "CIDATA", "-J", "-r", "-o"])
                .arg(&seed)
                .arg(&seed_dir)
                .status()
                .is_ok_and(|s| s.success())
        })
        .unwrap_or(false);

    let port = testkit::reserved_port();
    let monitor = dir.path().join("monitor.sock");
    let mut extra = vec![
        "-monitor".to_string(),
        format!("unix:{},server,nowait", monitor.display()),
        "-nic".to_string(),
        format!("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{port}-:18080"),
    ];
    if have_seed {
        extra.push("-drive".into());
        extra.push(format!(
            "file={},media=cdrom,if=ide,readonly=on",
            seed.display()
        ));
    }
    let mut vm = boot(
        &h,
        &initrd,
        "hls.PORT=18080 \"hls.GREETING=from the kernel\" imgbuild.test=kill-service-after=3",
        &extra,
    );
    let boot = BOOT;
    vm.expect("imgbuild-init: module virtio_net loaded", boot);
    vm.expect("imgbuild-init: DHCP lease 10.0.2.15/24 from 10.0.2.2", boot);
    vm.expect("imgbuild-init: default route via 10.0.2.2 dev eth0", boot);
    let host = vm.expect("imgbuild-init: hostname ", boot);
    if have_seed {
        assert_eq!(host, "imgbuild-init: hostname from-nocloud");
    } else {
        assert_eq!(host, "imgbuild-init: hostname from-config");
    }
    vm.expect("imgbuild-init: service httpd started (pid ", boot);
    let env = vm.expect("svc env ", boot);
    // config < NoCloud `hls:` < kernel `hls.KEY=VALUE`; the service runs as uid 1000.
    let nocloud = if have_seed { "yes" } else { "" };
    assert!(
        env.ends_with(&format!(
            "PORT=18080 GREETING=from the kernel FROM_CONFIG=yes FROM_NOCLOUD={nocloud} uid=1000"
        )),
        "{env}"
    );

    wait_health(port, Duration::from_secs(60));

    vm.expect("imgbuild-init: test: killing service httpd", boot);
    vm.expect(
        "imgbuild-init: service httpd exited (status 137, signal SIGKILL), restarting in 0.5s",
        boot,
    );
    vm.expect("imgbuild-init: service httpd started (pid ", boot);
    vm.expect("svc env ", boot);

    // ctrl-alt-del → SIGINT to init → stop the service, power off, QEMU exits.
    let mut mon = std::os::unix::net::UnixStream::connect(&monitor).unwrap();
    mon.write_all(b"sendkey ctrl-alt-delete\n").unwrap();
    vm.expect(
        "imgbuild-init: SIGINT received: stopping service httpd",
        boot,
    );
    // The service is stopped with SIGTERM whatever asked for the power-off.
    vm.expect(
        "imgbuild-init: service httpd exited (status 143, signal SIGTERM)",
        boot,
    );
    vm.expect("imgbuild-init: power off", boot);
    wait_power_off(&mut vm, Duration::from_secs(60));
}

#[test]
#[ignore = "full: needs qemu, boot assets and busybox-static"]
fn static_network_from_the_command_line_a_missing_module_and_power_off_on_exit() {
    let Some(h) = host() else { return };
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd.cpio");
    // The config says static 10.177.0.10/24 (a tap profile); the kernel command line moves
    // the machine onto QEMU's user network instead.
    std::fs::write(
        &initrd,
        initramfs(
            &h.modules_dir,
            &h.kver,
            &h.busybox,
            serde_json::json!({"mode": "static", "address": "10.177.0.10/24",
                               "gateway": "10.177.0.1", "dns": "10.177.0.1"}),
            &["lib/modules/nowhere/missing_mod.ko"],
        ),
    )
    .unwrap();
    let port = testkit::reserved_port();
    let extra = vec![
        "-nic".to_string(),
        format!("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{port}-10.0.2.20:17080"),
    ];
    let mut vm = boot(
        &h,
        &initrd,
        "ip=10.0.2.20/24::10.0.2.2 hls.dns=10.0.2.3 hostname=static-box \
         imgbuild.test=kill-service-after=15 imgbuild.poweroff",
        &extra,
    );
    vm.expect("imgbuild-init: module virtio_net loaded", BOOT);
    // Listed last; reported, and the boot goes on.
    vm.expect("imgbuild-init: module missing_mod NOT loaded", BOOT);
    vm.expect("imgbuild-init: address 10.0.2.20/24 on eth0 (static)", BOOT);
    vm.expect("imgbuild-init: default route via 10.0.2.2 dev eth0", BOOT);
    vm.expect("imgbuild-init: DNS 10.0.2.3", BOOT);
    vm.expect("imgbuild-init: hostname static-box", BOOT);
    vm.expect("imgbuild-init: service httpd started (pid ", BOOT);
    wait_health(port, Duration::from_secs(14));
    // imgbuild.poweroff: the (test-killed) service is not restarted; the machine goes down.
    vm.expect(
        "imgbuild-init: service httpd exited (status 137, signal SIGKILL), not restarting",
        BOOT,
    );
    vm.expect("imgbuild-init: power off", BOOT);
    wait_power_off(&mut vm, Duration::from_secs(60));
}
