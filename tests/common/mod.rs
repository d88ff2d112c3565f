//! Helpers shared by the integration tests: run the real imgbuild binary, find the
//! workspace's payload binaries, make temp dirs. Each test file includes this with
//! `mod common;` and may use only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The imgbuild binary cargo built for this test run.
pub fn imgbuild_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imgbuild"))
}

/// The directory holding the workspace binaries (hls-origin, hls-swarm, imgbuild-init),
/// building them if this test run did not (`cargo test -p imgbuild` alone builds only
/// imgbuild).
pub fn payload_dir() -> PathBuf {
    let dir = imgbuild_bin().parent().unwrap().to_path_buf();
    let release = !dir.ends_with("debug");
    let missing = ["hls-origin", "hls-swarm", "imgbuild-init"]
        .iter()
        .any(|b| !dir.join(b).exists());
    if missing {
        static BUILD: std::sync::Once = std::sync::Once::new();
        BUILD.call_once(|| {
            let mut c = Command::new(env!("CARGO"));
            c.args([
                "build",
                "-p",
                "hls-origin",
                "-p",
                "hls-swarm",
                "-p",
                "imgbuild-init",
            ]);
            if release {
                c.arg("--release");
            }
            let st = c
                .status()
                .expect("running cargo build for the payload binaries");
            assert!(st.success(), "cargo build of the payload binaries failed");
        });
    }
    dir
}

/// A command running imgbuild with the payload directory set.
pub fn imgbuild() -> Command {
    let mut c = Command::new(imgbuild_bin());
    c.env("IMGBUILD_PAYLOAD_DIR", payload_dir());
    c.env_remove("IMGBUILD_ROOT");
    default_signals(&mut c);
    c
}

/// SIGINT, SIGTERM and SIGHUP at their default action in the child, as on a terminal. A test
/// run started in the background (`cargo test … &`, a CI runner without job control) has
/// SIGINT ignored, an ignored signal stays ignored across exec, and a test that interrupts
/// imgbuild would then see it carry on.
pub fn default_signals(c: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: signal(2) is async-signal-safe, as pre_exec requires.
    unsafe {
        c.pre_exec(|| {
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::signal(s, libc::SIG_DFL);
            }
            Ok(())
        })
    }
}

/// Runs imgbuild with the given arguments and returns its output.
pub fn run(args: &[&str]) -> Output {
    imgbuild().args(args).output().expect("running imgbuild")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The repository root (for copying profiles/ into a temp root).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Copies a directory tree (files and directories only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A temp copy of profiles/, layers/ and rootfs/ for `--root` tests.
pub fn temp_root() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for d in ["profiles", "layers", "rootfs"] {
        copy_tree(&repo().join(d), &t.path().join(d));
    }
    t
}

/// Whether a command exists on PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The default boot-asset directory (`IMGBUILD_BOOT_ASSETS`, else
/// ~/.cache/imgbuild/boot-assets), filled by scripts/boot-assets when it is missing.
pub fn boot_assets() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("IMGBUILD_BOOT_ASSETS").map_or_else(
            || PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/imgbuild/boot-assets"),
            PathBuf::from,
        );
        if !dir.join("vmlinuz").is_file() {
            let st = Command::new(repo().join("scripts/boot-assets"))
                .arg(&dir)
                .status()
                .expect("running scripts/boot-assets");
            assert!(st.success(), "scripts/boot-assets failed");
        }
        dir
    })
    .clone()
}

/// Waits until nothing listens on 127.0.0.1:`port` (a fixed port a command under test
/// publishes, like `up`'s profile port 17080, may still be held by a container or QEMU that
/// an earlier test is tearing down).
pub fn wait_until_free(port: u16, timeout: std::time::Duration) {
    let t0 = std::time::Instant::now();
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < timeout,
            "port {port} is still in use after {timeout:?}: {}",
            String::from_utf8_lossy(
                &Command::new("ss")
                    .args(["-ltnp", &format!("sport = :{port}")])
                    .output()
                    .map(|o| o.stdout)
                    .unwrap_or_default()
            )
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
