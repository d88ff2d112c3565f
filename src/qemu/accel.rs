//! Choosing QEMU's accelerator and supervising a guest so that a present-but-broken KVM can
//! never strand a boot.
//!
//! Two checks, because a KVM can fail in two places:
//! 1. Before the boot, a probe guest ([`probe_kvm`], the boot sector in `kvm-probe.S`) runs
//!    what firmware and boot loaders run first: x87, SSE, the switch to protected mode and to
//!    long mode. A KVM that cannot run it is not used.
//! 2. During the boot, [`run_guest`] reads QEMU's stderr. When QEMU reports a KVM failure
//!    (`KVM internal error`, a failed KVM ioctl or MSR write), or exits with an error in its
//!    first seconds under KVM, the run ends as [`Ended::KvmFailed`]: QEMU is stopped, its
//!    register dump is not shown, and the caller boots again under TCG, or fails in one line
//!    when KVM was asked for explicitly.
//!
//! The QEMU program is `qemu-system-x86_64` from `PATH`, or the one named by `--qemu` /
//! `IMGBUILD_QEMU` (tests point it at a wrapper that reproduces a broken KVM).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::ValueEnum;

/// The accelerator asked for.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// KVM when the probe guest runs under it, with a fall-back to TCG if the boot then fails
    /// under KVM.
    Auto,
    /// KVM or a one-line failure (exit 1); never falls back.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// The `-cpu` model given to QEMU under KVM, by the probe and by real boots alike.
pub const KVM_CPU: &str = "host";

/// How long after its start a QEMU that exits with an error under KVM is taken for a KVM
/// failure (a guest that ran this long under KVM has passed firmware and boot loader).
pub const EARLY_EXIT: Duration = Duration::from_secs(15);

/// How long the probe guest may take. It needs milliseconds under a working KVM; QEMU's own
/// start takes most of this on a loaded machine.
const PROBE_DEADLINE: Duration = Duration::from_secs(20);

/// The probe guest: `kvm-probe.S` assembled (a 512-byte BIOS boot sector).
pub const PROBE_SECTOR: &[u8; 512] = include_bytes!("kvm-probe.bin");

/// The QEMU program: `explicit` (from `--qemu` or `IMGBUILD_QEMU`) or `qemu-system-x86_64`
/// on `PATH`.
pub fn qemu_program(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("IMGBUILD_QEMU").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("qemu-system-x86_64"))
            .find(|f| f.is_file())
    })
}

/// Whether a line QEMU wrote to stderr says that KVM failed (rather than the guest or a
/// setting). Returns the reason to show, in one line.
pub fn kvm_failure(line: &str) -> Option<String> {
    let l = line.trim();
    let l = l.strip_prefix("qemu-system-x86_64: ").unwrap_or(l);
    const SIGNS: [&str; 7] = [
        "KVM internal error",
        "KVM: entry failed",
        "kvm run failed",
        "failed to set MSR",
        "kvm_buf_set_msrs",
        "failed to initialize kvm",
        "Could not access KVM kernel module",
    ];
    SIGNS.iter().any(|s| l.contains(s)).then(|| l.to_string())
}

/// How a supervised QEMU run ended.
#[derive(Debug)]
pub enum Ended {
    /// QEMU exited by itself (the user quit, the guest powered off, or an error not of KVM's).
    Exited(ExitStatus),
    /// KVM failed; QEMU was stopped. The reason is one line.
    KvmFailed(String),
}

/// Reads a child's stderr line by line on a thread of its own.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// Stops QEMU: SIGTERM (it restores the terminal it put in raw mode), then SIGKILL.
fn stop(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own child's pid; it has not been waited for, so the pid is
        // still ours.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The first line of stderr worth showing, without QEMU's program-name prefix.
fn first_line(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())
        .map(|l| {
            l.strip_prefix("qemu-system-x86_64: ")
                .unwrap_or(l)
                .to_string()
        })
        .unwrap_or_default()
}

/// Whether KVM can run a real boot here: the probe guest must reach its last instruction
/// under KVM (it writes `K` and exits QEMU with status 0x21). The error is one line.
pub fn probe_kvm(qemu: &Path) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("imgbuild-kvm-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let disk = dir.join("probe.img");
    let res = (|| {
        std::fs::write(&disk, PROBE_SECTOR).map_err(|e| format!("{}: {e}", disk.display()))?;
        let args: Vec<String> = [
            "-accel",
            "kvm",
            "-cpu",
            KVM_CPU,
            "-m",
            "16",
            "-nodefaults",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x01",
            "-drive",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("file={},format=raw,if=ide", disk.display())])
        .collect();
        // Announced like every external command `boot` and `up` run; the program's own path
        // tells it apart from the boot's `Executing: qemu-system-x86_64 …` line.
        eprintln!(
            "Executing: {} (the KVM probe guest)",
            super::shell_line(&qemu.display().to_string(), &args)
        );
        let mut child = Command::new(qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", qemu.display()))?;
        let lines = stderr_lines(&mut child);
        let mut seen = vec![];
        let start = Instant::now();
        loop {
            while let Ok(l) = lines.try_recv() {
                if let Some(why) = kvm_failure(&l) {
                    stop(&mut child);
                    return Err(format!("the probe guest failed under KVM: {why}"));
                }
                seen.push(l);
            }
            if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
                let mut out = vec![];
                if let Some(mut o) = child.stdout.take() {
                    let _ = o.read_to_end(&mut out);
                }
                // The reader thread ends with the pipe; collect what it still holds.
                seen.extend(lines.iter());
                if st.code() == Some(0x21) && out.contains(&b'K') {
                    return Ok(());
                }
                let why = seen
                    .iter()
                    .find_map(|l| kvm_failure(l))
                    .unwrap_or_else(|| first_line(&seen));
                return Err(format!("the probe guest failed under KVM ({st}: {why})"));
            }
            if start.elapsed() > PROBE_DEADLINE {
                stop(&mut child);
                return Err(format!(
                    "the probe guest did not finish under KVM in {} s",
                    PROBE_DEADLINE.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })();
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// The terminal settings of standard input, restored after QEMU however it ends (a QEMU that
/// aborts leaves the terminal in raw mode).
struct TermGuard(Option<libc::termios>);

impl TermGuard {
    fn save() -> TermGuard {
        // SAFETY: isatty/tcgetattr on fd 0 with a zeroed termios of the right type.
        unsafe {
            if libc::isatty(0) != 1 {
                return TermGuard(None);
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) == 0 {
                TermGuard(Some(t))
            } else {
                TermGuard(None)
            }
        }
    }
}

impl Drop for TermGuard {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores settings read from the same descriptor.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
        }
    }
}

/// Runs QEMU with the console on this terminal (stdin and stdout inherited). Under KVM its
/// stderr is read: lines of the first [`EARLY_EXIT`] are held back (so a KVM failure shows
/// as one line, not as QEMU's complaint and register dump) and shown after that; a KVM
/// failure at any time stops QEMU and ends the run as [`Ended::KvmFailed`], as does an
/// unsuccessful exit within [`EARLY_EXIT`].
pub fn run_guest(qemu: &Path, args: &[String], kvm: bool) -> std::io::Result<Ended> {
    let _term = TermGuard::save();
    let mut cmd = Command::new(qemu);
    cmd.args(args);
    if !kvm {
        let mut child = cmd.spawn()?;
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(Ended::Exited(st));
            }
            if crate::signals::interrupted() {
                stop(&mut child);
                return Ok(Ended::Exited(child.wait()?));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let mut child = cmd.stderr(Stdio::piped()).spawn()?;
    let lines = stderr_lines(&mut child);
    let start = Instant::now();
    let mut held: Vec<String> = vec![];
    let mut holding = true;
    loop {
        while let Ok(l) = lines.try_recv() {
            if let Some(why) = kvm_failure(&l) {
                stop(&mut child);
                return Ok(Ended::KvmFailed(why));
            }
            if holding {
                held.push(l);
            } else {
                eprintln!("{l}");
            }
        }
        if let Some(st) = child.try_wait()? {
            let rest: Vec<String> = lines.iter().collect();
            if let Some(why) = rest.iter().find_map(|l| kvm_failure(l)) {
                return Ok(Ended::KvmFailed(why));
            }
            held.extend(rest);
            if !st.success() && start.elapsed() < EARLY_EXIT {
                let first = first_line(&held);
                let why = if first.is_empty() {
                    format!(
                        "QEMU exited with {st} after {:.1} s",
                        start.elapsed().as_secs_f64()
                    )
                } else {
                    format!("QEMU exited with {st}: {first}")
                };
                return Ok(Ended::KvmFailed(why));
            }
            for l in held {
                eprintln!("{l}");
            }
            return Ok(Ended::Exited(st));
        }
        if crate::signals::interrupted() {
            stop(&mut child);
            for l in held {
                eprintln!("{l}");
            }
            return Ok(Ended::Exited(child.wait()?));
        }
        if holding && start.elapsed() >= EARLY_EXIT {
            holding = false;
            for l in held.drain(..) {
                eprintln!("{l}");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_failures_are_told_from_other_qemu_errors() {
        for l in [
            "KVM internal error. Suberror: 1",
            "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69",
            "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.",
            "qemu-system-x86_64: failed to initialize kvm: No such file or directory",
            "Could not access KVM kernel module: Permission denied",
        ] {
            assert!(kvm_failure(l).is_some(), "{l}");
        }
        assert_eq!(
            kvm_failure("qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69").unwrap(),
            "error: failed to set MSR 0x10a to 0x69"
        );
        for l in [
            "qemu-system-x86_64: -drive file=x.iso: Could not open 'x.iso': No such file or directory",
            "EAX=00000000 EBX=00807000 ECX=00000001 EDX=00807154",
            "imgbuild-init: service hls-origin started",
        ] {
            assert!(kvm_failure(l).is_none(), "{l}");
        }
    }

    #[test]
    fn probe_sector_is_a_boot_sector_that_runs_x87_first() {
        assert_eq!(&PROBE_SECTOR[510..], &[0x55, 0xAA]);
        // finit (fwait; fninit): the instruction a present-but-broken KVM fails on in OVMF
        // and ISOLINUX.
        assert!(PROBE_SECTOR.windows(3).any(|w| w == [0x9b, 0xdb, 0xe3]));
    }

    /// The committed kvm-probe.bin is kvm-probe.S assembled (GNU as and ld, from binutils,
    /// which scripts/test installs).
    #[test]
    fn kvm_probe_bin_matches_source() {
        let dir = std::env::temp_dir().join(format!("imgbuild-probe-asm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/qemu/kvm-probe.S");
        let obj = dir.join("probe.o");
        let bin = dir.join("probe.bin");
        let run = |c: &mut Command| {
            let o = c
                .output()
                .unwrap_or_else(|e| panic!("{c:?}: {e} (apt-get install binutils)"));
            assert!(
                o.status.success(),
                "{c:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        run(Command::new("as").arg("--32").arg("-o").arg(&obj).arg(&src));
        run(Command::new("ld")
            .args([
                "-m",
                "elf_i386",
                "-Ttext",
                "0x7c00",
                "--oformat",
                "binary",
                "-o",
            ])
            .arg(&bin)
            .arg(&obj));
        let built = std::fs::read(&bin).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            built == PROBE_SECTOR.as_slice(),
            "src/qemu/kvm-probe.bin is stale: assemble kvm-probe.S again (see its header)"
        );
    }
}
