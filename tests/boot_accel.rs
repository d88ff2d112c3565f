//! A present-but-broken KVM never strands a boot. Each test points `IMGBUILD_QEMU` at a
//! wrapper around the real qemu-system-x86_64 that reproduces how a broken KVM fails, so the
//! paths run on any machine, with or without /dev/kvm:
//! - `probe-fails`: every `-accel kvm` run prints QEMU's "KVM internal error" and register
//!   dump, then hangs (as QEMU does: the guest is stopped, the process stays);
//! - `guest-dies`: the probe guest passes (the wrapper runs it under TCG), the real boot
//!   runs for two seconds, then fails the same way;
//! - `exits-early`: the probe passes, the real boot under KVM exits at once with an error
//!   that does not name KVM (QEMU failing an assertion).
//!
//! Everything else is real: the ISO, QEMU under TCG, the guest's /health through the forward.
//! Full tier: needs QEMU, OVMF and the boot assets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const STARTED: &str = "imgbuild-init: service hls-origin started";

/// The wrapper: MODE as its first line's variable, the real QEMU found on PATH.
const WRAPPER: &str = r#"#!/bin/bash
# A qemu-system-x86_64 whose KVM is broken in the way MODE says (see tests/boot_accel.rs).
mode=__MODE__
real=$(command -v qemu-system-x86_64)
kvm=0; probe=0; tcg=(); prev=
for a in "$@"; do
  case "$a" in
    kvm) kvm=1; tcg+=(tcg) ;;
    host) if [ "$prev" = -cpu ]; then tcg+=(max); else tcg+=("$a"); fi ;;
    isa-debug-exit*) probe=1; tcg+=("$a") ;;
    *) tcg+=("$a") ;;
  esac
  prev=$a
done
[ $kvm = 1 ] || exec "$real" "$@"
internal_error() {
  printf '%s\n' 'KVM internal error. Suberror: 1' 'extra data[0]: 0x0000000000000001' \
    'emulation failure' 'EAX=00000000 EBX=00807000 ECX=00000001 EDX=00807154' \
    'Code=00 00 00 <9b> db e3 0f 20 c0' >&2
  # QEMU stops the guest and keeps running: hang, under the wrapper's own name.
  exec -a "$0" sleep 600
}
case "$mode" in
  probe-fails) internal_error ;;
  guest-dies)
    [ $probe = 1 ] && exec "$real" "${tcg[@]}"
    "$real" "${tcg[@]}" & pid=$!
    sleep 2; kill $pid; wait $pid
    internal_error ;;
  exits-early)
    [ $probe = 1 ] && exec "$real" "${tcg[@]}"
    echo 'qemu-system-x86_64: ../../accel/accel-softmmu.c:42: something: Assertion failed.' >&2
    exit 134 ;;
esac
"#;

/// A wrapper of MODE in its own directory (its path marks every process it starts).
fn wrapper(mode: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::Builder::new()
        .prefix(&format!("broken-kvm-{mode}-"))
        .tempdir()
        .unwrap();
    let p = d.path().join("qemu-broken-kvm");
    std::fs::write(&p, WRAPPER.replace("__MODE__", mode)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    (d, p)
}

/// Processes whose command line mentions `dir` (the wrapper and what it started).
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(&needle) {
                out.push(format!("{}: {c}", e.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// origin/default, built once.
fn default_iso() -> PathBuf {
    static ISO: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    ISO.get_or_init(|| {
        let d = common::kept_dir();
        let out = d.path().join("origin-default.iso");
        let o = common::imgbuild()
            .args(["iso", "origin/default", "-o", out.to_str().unwrap()])
            .arg("--boot-assets")
            .arg(common::boot_assets())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", common::stderr(&o));
        (d, out)
    })
    .1
    .clone()
}

fn healthy(port: u16, timeout: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(b"GET /health HTTP/1.0\r\n\r\n");
            let mut b = String::new();
            let _ = s.read_to_string(&mut b);
            if b.starts_with("HTTP/1.1 200") && b.ends_with("OK\n") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// What imgbuild itself said about KVM: each `imgbuild: KVM …` up to the end of its line
/// (the console's last bytes, escape codes and all, may stand before it on the same line).
fn kvm_lines(log: &str) -> Vec<&str> {
    log.match_indices("imgbuild: KVM")
        .map(|(i, _)| log[i..].lines().next().unwrap_or(""))
        .collect()
}

/// Boots `args` through the wrapper of `mode` with the default accelerator choice, reaches
/// /health through the forward, and checks what was said about KVM.
fn falls_back_to_tcg(mode: &str, args: &[&str], said: &str) {
    let iso = default_iso();
    let slot = common::QemuSlot::take();
    let (dir, qemu) = wrapper(mode);
    let port = common::reserved_port();
    let mut cmd = common::imgbuild();
    cmd.arg("boot")
        .arg(iso)
        .args(["--forward", &format!("{port}:17080")])
        .args(args)
        .env("IMGBUILD_QEMU", &qemu)
        .env_remove("IMGBUILD_ACCEL");
    let mut run = common::Console::start(cmd, Some(slot));
    run.wait_for(STARTED, 1, Duration::from_secs(240));
    assert!(
        healthy(port, Duration::from_secs(60)),
        "/health never answered:\n{}",
        run.log()
    );
    let log = run.log();
    let kvm = kvm_lines(&log);
    assert_eq!(kvm.len(), 1, "one KVM line, not {kvm:?}:\n{log}");
    assert!(kvm[0].contains(said), "{kvm:?}");
    assert!(
        !log.contains("EAX=") && !log.contains("extra data[0]"),
        "QEMU's register dump is not shown:\n{log}"
    );
    assert!(log.contains("-accel tcg"), "{log}");
    drop(run);
    assert!(
        processes_under(dir.path()).is_empty(),
        "{:?}",
        processes_under(dir.path())
    );
}

#[test]
#[ignore = "full: needs qemu and the boot assets"]
fn the_probe_fails_so_the_bios_cd_boots_under_tcg() {
    falls_back_to_tcg(
        "probe-fails",
        &[],
        "KVM is not usable (the probe guest failed under KVM: KVM internal error",
    );
}

#[test]
#[ignore = "full: needs qemu, ovmf and the boot assets"]
fn the_guest_dies_under_kvm_so_the_uefi_cd_boots_again_under_tcg() {
    falls_back_to_tcg(
        "guest-dies",
        &["--uefi"],
        "KVM failed while booting (KVM internal error. Suberror: 1); booting again under TCG",
    );
}

#[test]
#[ignore = "full: needs qemu and the boot assets"]
fn qemu_exits_early_under_kvm_so_the_disk_boots_again_under_tcg() {
    falls_back_to_tcg(
        "exits-early",
        &["--disk"],
        "KVM failed while booting (QEMU exited with exit status: 134: ../../accel/accel-softmmu.c:42",
    );
}

#[test]
#[ignore = "full: needs qemu and the boot assets"]
fn explicit_kvm_fails_in_one_line_and_leaves_no_qemu() {
    let iso = default_iso();
    let _slot = common::QemuSlot::take();
    for (mode, via_env) in [("probe-fails", false), ("guest-dies", true)] {
        let (dir, qemu) = wrapper(mode);
        let port = common::reserved_port();
        let mut cmd = common::imgbuild();
        cmd.arg("boot")
            .arg(&iso)
            .args(["--forward", &format!("{port}:17080")])
            .env("IMGBUILD_QEMU", &qemu);
        if via_env {
            cmd.env("IMGBUILD_ACCEL", "kvm");
        } else {
            cmd.args(["--accel", "kvm"]).env_remove("IMGBUILD_ACCEL");
        }
        let t0 = Instant::now();
        let o = cmd.stdin(Stdio::null()).output().unwrap();
        let err = common::stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{mode}: {err}");
        let errors: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("imgbuild: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{mode}: {err}");
        assert!(
            errors[0].starts_with("imgbuild: error: KVM")
                && errors[0].contains("--accel kvm does not fall back to TCG"),
            "{mode}: {err}"
        );
        assert!(!err.contains("EAX="), "{mode}: {err}");
        assert!(
            !err.contains("-accel tcg"),
            "{mode}: never ran under TCG: {err}"
        );
        assert!(t0.elapsed() < Duration::from_secs(120), "{mode}");
        assert!(
            processes_under(dir.path()).is_empty(),
            "{mode}: left running: {:?}",
            processes_under(dir.path())
        );
    }
}

#[test]
#[ignore = "full: needs qemu and the boot assets"]
fn up_origin_default_iso_boots_again_under_tcg_when_the_guest_dies_under_kvm() {
    common::boot_assets();
    let slot = common::QemuSlot::take();
    let (dir, qemu) = wrapper("guest-dies");
    // `up` forwards the profile's own port.
    common::wait_until_free(17080, Duration::from_secs(120));
    let mut cmd = common::imgbuild();
    cmd.args(["up", "origin", "default", "iso"])
        .env("IMGBUILD_QEMU", &qemu)
        .env_remove("IMGBUILD_ACCEL");
    let mut run = common::Console::start(cmd, Some(slot));
    run.wait_for(STARTED, 1, Duration::from_secs(300));
    assert!(
        healthy(17080, Duration::from_secs(60)),
        "/health never answered:\n{}",
        run.log()
    );
    let log = run.log();
    let kvm = kvm_lines(&log);
    assert_eq!(kvm.len(), 1, "one KVM line, not {kvm:?}:\n{log}");
    assert!(kvm[0].contains("booting again under TCG"), "{kvm:?}");
    let pid = run.child.id();
    // Stopped as a user would (SIGTERM): `up` removes its work directory with the ISO in it.
    drop(run);
    assert!(processes_under(dir.path()).is_empty());
    assert_eq!(common::temp_leftovers(pid), Vec::<String>::new());
}
