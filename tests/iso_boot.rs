//! The ISO boots in real QEMU, with the default accelerator choice (KVM where it really
//! works, else TCG), and serves: BIOS and UEFI, from CD and as a disk
//! (the USB-stick path), the service starts, `/health` and the playlist answer through the
//! port forward; the tap profile comes up with its static address; a killed service is
//! restarted; a kernel command-line override moves the port. Full tier: needs QEMU, OVMF and
//! the boot assets (fetched with scripts/boot-assets when missing). At most two QEMUs run at
//! once; each is killed (its process group) when its test ends.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use std::sync::OnceLock;
use std::time::{Duration, Instant};

const STARTED: &str = "imgbuild-init: service hls-origin started";

fn build(dir: &Path, profile: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(format!("{}.iso", profile.replace('/', "-")));
    let o = common::imgbuild()
        .args(["iso", profile, "-o", out.to_str().unwrap(), "--boot-assets"])
        .arg(common::boot_assets())
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    out
}

/// origin/default, built once for the four boot paths.
fn default_iso() -> PathBuf {
    static ISO: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    ISO.get_or_init(|| {
        let d = common::kept_dir();
        let p = build(d.path(), "origin/default", &[]);
        (d, p)
    })
    .1
    .clone()
}

/// `imgbuild boot ISO ARGS` holding a QEMU slot.
fn boot_vm(iso: &Path, args: &[&str]) -> common::Console {
    boot_vm_with(iso, args, &[])
}

/// [`boot_vm`] with these environment variables set for imgbuild.
fn boot_vm_with(iso: &Path, args: &[&str], env: &[(&str, &Path)]) -> common::Console {
    let slot = common::QemuSlot::take();
    let mut cmd = common::imgbuild();
    cmd.envs(env.iter().copied())
        .arg("boot")
        .arg(iso)
        .args(args);
    common::Console::start(cmd, Some(slot))
}

/// GET through the forward: (status line, body).
fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut b = Vec::new();
    s.read_to_end(&mut b).ok()?;
    let text = String::from_utf8_lossy(&b).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

/// Polls `/health` until it answers `200 OK\n`.
fn wait_healthy(port: u16, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if let Some((status, body)) = get(port, "/health") {
            if status.contains(" 200 ") && body == "OK\n" {
                return t0.elapsed();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("/health on 127.0.0.1:{port} did not answer within {timeout:?}");
}

fn boots_and_serves(args: &[&str], timeout: Duration) {
    let iso = default_iso();
    let port = common::reserved_port();
    let fwd = format!("{port}:17080");
    let mut all = vec!["--forward", fwd.as_str()];
    all.extend_from_slice(args);
    let mut vm = boot_vm(&iso, &all);
    vm.wait_for(STARTED, 1, timeout);
    wait_healthy(port, Duration::from_secs(30));
    eprintln!(
        "{args:?}: /health answered {:.1} s after boot began",
        vm.started.elapsed().as_secs_f64()
    );
    let (status, body) = get(port, "/stream.m3u8").expect("playlist");
    assert!(status.contains(" 200 "), "{status}");
    assert!(body.starts_with("#EXTM3U"), "{body}");
    assert!(body.contains("#EXT-X-TARGETDURATION:2"), "{body}");
    let log = vm.log();
    assert!(log.contains("Executing: qemu-system-x86_64"), "{log}");
    assert!(
        log.contains(&format!("hostfwd=tcp:127.0.0.1:{port}-:17080")),
        "{log}"
    );
    if args.contains(&"--uefi") {
        // The firmware's private variable store is an unlinked file QEMU opens by descriptor.
        assert!(log.contains("if=pflash,format=raw,file=/dev/fd/"), "{log}");
    }
    killed_leaves_nothing(vm);
}

/// `kill -9` of the whole boot (imgbuild and QEMU) leaves nothing of it in the temp directory.
fn killed_leaves_nothing(mut vm: common::Console) {
    let pid = vm.child.id();
    vm.kill_hard();
    assert_eq!(common::temp_leftovers(pid), Vec::<String>::new());
}

#[test]
#[ignore = "full: needs qemu"]
fn bios_cd_boot_answers_health_and_a_playlist() {
    boots_and_serves(&[], Duration::from_secs(90));
}

#[test]
#[ignore = "full: needs qemu"]
fn bios_disk_boot_answers_health_and_a_playlist() {
    boots_and_serves(&["--disk"], Duration::from_secs(90));
}

#[test]
#[ignore = "full: needs qemu"]
fn uefi_cd_boot_answers_health_and_a_playlist() {
    boots_and_serves(&["--uefi"], Duration::from_secs(120));
}

#[test]
#[ignore = "full: needs qemu"]
fn uefi_disk_boot_answers_health_and_a_playlist() {
    boots_and_serves(&["--uefi", "--disk"], Duration::from_secs(120));
}

/// The firmware's variable store one UEFI boot leaves (stopped as a user stops it, SIGTERM) is
/// where the next one starts (src/qemu/nvram.rs): the first-boot work is not done twice.
#[test]
#[ignore = "full: needs qemu"]
fn a_uefi_boot_keeps_the_firmware_variables_for_the_next_one() {
    let iso = default_iso();
    let cache = tempfile::tempdir().unwrap();
    let store_dir = cache.path().join("imgbuild/uefi-vars");
    let boot = || {
        let fwd = format!("{}:17080", common::reserved_port());
        boot_vm_with(
            &iso,
            &["--uefi", "--forward", &fwd],
            &[("XDG_CACHE_HOME", cache.path())],
        )
    };
    let mut first = boot();
    first.wait_for(STARTED, 1, Duration::from_secs(120));
    assert!(
        !first.log().contains("firmware variables kept"),
        "{}",
        first.log()
    );
    assert!(!store_dir.exists(), "a store was kept while QEMU ran");
    common::stop_group(&mut first.child);
    let kept: Vec<PathBuf> = std::fs::read_dir(&store_dir)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", store_dir.display(), first.log()))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].to_string_lossy().ends_with("-cd.fd"), "{kept:?}");
    // A store the firmware has booted from holds its boot order (the template holds nothing).
    let utf16: Vec<u8> = "BootOrder"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let bytes = std::fs::read(&kept[0]).unwrap();
    assert!(
        bytes.windows(utf16.len()).any(|w| w == utf16),
        "no BootOrder variable in the kept store"
    );

    let mut second = boot();
    second.wait_for(STARTED, 1, Duration::from_secs(120));
    let line = format!(
        "imgbuild: firmware variables kept from the last UEFI boot: {}",
        kept[0].display()
    );
    assert!(second.log().contains(&line), "{}", second.log());
    killed_leaves_nothing(second);
}

#[test]
#[ignore = "full: needs qemu"]
fn the_tap_profile_comes_up_with_its_static_address() {
    let d = tempfile::tempdir().unwrap();
    let iso = build(d.path(), "origin/tap", &[]);
    let port = common::reserved_port();
    let fwd = format!("{port}:17080");
    // User-mode networking here: tests/tap_net.rs boots it on a tap device.
    let mut vm = boot_vm(&iso, &["--forward", &fwd, "--net", "user"]);
    vm.wait_for(STARTED, 1, Duration::from_secs(90));
    let log = vm.log();
    assert!(
        log.contains("address 10.177.0.10/24 on eth0 (static)"),
        "{log}"
    );
    assert!(log.contains("hostname hls-origin-tap"), "{log}");
}

#[test]
#[ignore = "full: needs qemu"]
fn a_killed_service_restarts_and_a_cmdline_port_override_answers() {
    let d = tempfile::tempdir().unwrap();
    let iso = build(
        d.path(),
        "origin/default",
        &[
            "--cmdline",
            "imgbuild.test=kill-service-after=5",
            "--cmdline",
            "hls.PORT=18080",
        ],
    );
    let port = common::reserved_port();
    let fwd = format!("{port}:18080");
    let mut vm = boot_vm(&iso, &["--forward", &fwd]);
    vm.wait_for(STARTED, 1, Duration::from_secs(90));
    wait_healthy(port, Duration::from_secs(30));
    // Killed once after 5 s, then started again by the init.
    vm.wait_for("service hls-origin exited", 1, Duration::from_secs(30));
    vm.wait_for(STARTED, 2, Duration::from_secs(30));
    wait_healthy(port, Duration::from_secs(30));
    let log = vm.log();
    assert!(log.contains("restarting"), "{log}");
    let (_, body) = get(port, "/stream.m3u8").expect("playlist");
    assert!(body.starts_with("#EXTM3U"), "{body}");
}

#[test]
#[ignore = "full: needs qemu"]
fn a_nocloud_seed_sets_the_hostname_and_the_port() {
    let seed = tempfile::tempdir().unwrap();
    std::fs::write(
        seed.path().join("meta-data"),
        "instance-id: iso-test-1\nlocal-hostname: seeded-origin\n",
    )
    .unwrap();
    std::fs::write(
        seed.path().join("user-data"),
        "#cloud-config\nhls:\n  PORT: 18090\n",
    )
    .unwrap();
    let port = common::reserved_port();
    let fwd = format!("{port}:18090");
    let mut vm = boot_vm(
        &default_iso(),
        &["--forward", &fwd, "--cidata", seed.path().to_str().unwrap()],
    );
    vm.wait_for(STARTED, 1, Duration::from_secs(90));
    wait_healthy(port, Duration::from_secs(30));
    let log = vm.log();
    assert!(log.contains("NoCloud: CIDATA volume on /dev/"), "{log}");
    assert!(log.contains("hostname seeded-origin"), "{log}");
    killed_leaves_nothing(vm);
}
