//! Helpers shared by the integration tests: run the real imgbuild binary, find the
//! workspace's payload binaries, make temp dirs, run docker, take a port no other test gets
//! ([`reserved_port`], from the workspace's testkit). Each test file includes this with
//! `mod common;` and may use only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A free loopback port that no other test of the run is handed (see testkit): the one port
/// helper of the tests, for servers that must be told their port before they start.
#[allow(unused_imports)] // not every test binary takes a port
pub use testkit::reserved_port;

/// Runs `docker ARGS` and returns what it did, whatever its exit status.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("running docker")
}

/// Runs `docker ARGS`, asserts it succeeded (showing its stderr when not) and returns its
/// stdout, trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    let o = docker(args);
    assert!(o.status.success(), "docker {args:?}: {}", stderr(&o));
    stdout(&o).trim().to_string()
}

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
    while !testkit::port_is_free(port) {
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

/// At most two QEMUs at once in one test binary (the machines have 2 cores).
pub struct QemuSlot;

static QEMU_SLOTS: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

impl QemuSlot {
    pub fn take() -> QemuSlot {
        let mut n = QEMU_SLOTS.0.lock().unwrap();
        while *n >= 2 {
            n = QEMU_SLOTS.1.wait(n).unwrap();
        }
        *n += 1;
        QemuSlot
    }
}

impl Drop for QemuSlot {
    fn drop(&mut self) {
        *QEMU_SLOTS.0.lock().unwrap() -= 1;
        QEMU_SLOTS.1.notify_one();
    }
}

/// A command run in its own process group (imgbuild and the QEMU it starts) with stdout and
/// stderr collected; the whole group is killed on drop, and what it printed is shown.
pub struct Console {
    pub child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    pub started: std::time::Instant,
    _slot: Option<QemuSlot>,
}

impl Console {
    /// Starts `cmd`, holding `slot` (if any) until the console is dropped.
    pub fn start(mut cmd: Command, slot: Option<QemuSlot>) -> Console {
        use std::io::Read;
        use std::os::unix::process::CommandExt;
        let mut child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for mut r in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    log.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Console {
            child,
            log,
            started: std::time::Instant::now(),
            _slot: slot,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Kills the whole group at once (`kill -9`): what imgbuild cannot clean up after.
    pub fn kill_hard(&mut self) {
        kill_group(self.child.id(), "-KILL");
        let _ = self.child.wait();
    }

    /// Waits until the output shows `needle` `count` times; panics with the output when the
    /// command exits first or `timeout` passes.
    pub fn wait_for(&mut self, needle: &str, count: usize, timeout: std::time::Duration) {
        let end = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < end {
            if self.log().matches(needle).count() >= count {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                std::thread::sleep(std::time::Duration::from_millis(200));
                panic!("exited ({st}) before {needle:?}:\n{}", self.log());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("no {needle:?} ×{count} within {timeout:?}:\n{}", self.log());
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        stop_group(&mut self.child);
        eprintln!(
            "ran {:.1} s; output:\n{}",
            self.started.elapsed().as_secs_f64(),
            self.log()
        );
    }
}

/// `docker stop NAME` with 30 s of grace, then asserts that the container ended by itself
/// on the SIGTERM: its exit code is not 137, which is docker's SIGKILL once the grace runs
/// out. Not timed: on a loaded machine `docker stop` alone can take seconds.
#[allow(dead_code)] // not every test binary stops containers
pub fn stop_and_assert_sigterm_ends(name: &str) {
    let o = Command::new("docker")
        .args(["stop", "-t", "30", name])
        .output()
        .unwrap();
    assert!(o.status.success(), "docker stop {name}: {}", stderr(&o));
    let o = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.ExitCode}}",
            name,
        ])
        .output()
        .unwrap();
    let state = stdout(&o);
    let logs = Command::new("docker")
        .args(["logs", name])
        .output()
        .unwrap();
    assert!(
        state.trim().starts_with("false ") && state.trim() != "false 137",
        "{name}: state after docker stop is {state:?} (137: killed, SIGTERM did not end it); logs:\n{}{}",
        stdout(&logs),
        stderr(&logs)
    );
}

/// The stage names of a `--timings` table on stderr (its rows end in a share, `…%`), in order,
/// the `total` row last.
#[allow(dead_code)]
pub fn timing_stages(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.trim_end().ends_with('%'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn kill_group(leader: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{leader}")])
        .status();
}

/// Stops a process group (imgbuild and the QEMU or docker it started) as a user would: SIGTERM,
/// up to 20 s for imgbuild to remove what it made, then SIGKILL for whatever is left.
pub fn stop_group(child: &mut std::process::Child) {
    kill_group(child.id(), "-TERM");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < end {
        if !matches!(child.try_wait(), Ok(None)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    kill_group(child.id(), "-KILL");
    let _ = child.wait();
}

/// What a process with this pid left in the temp directory under imgbuild's names
/// (`imgbuild-…-PID…`): a boot's firmware variables or seed volume, `up`'s work directory.
pub fn temp_leftovers(pid: u32) -> Vec<String> {
    let tag = format!("-{pid}");
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with("imgbuild-")
                && n.match_indices(&tag)
                    .any(|(i, _)| !n[i + tag.len()..].starts_with(|c: char| c.is_ascii_digit()))
        })
        .collect()
}

/// A temporary directory for what a test binary builds once and keeps in a `static` (which is
/// never dropped, so never removed): under the target directory (`CARGO_TARGET_TMPDIR`), not
/// the system's temp directory, so a test run leaves nothing in /tmp.
pub fn kept_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}
