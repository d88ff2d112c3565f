//! `imgbuild-init`: PID 1 of imgbuild's ISO initramfs (as `/init`) and, with `--container`,
//! the supervising entrypoint of the "enhanced" container image.
//!
//! # Usage
//! ```text
//! /init                                   boot mode (must be PID 1)
//! imgbuild-init [--config PATH] --container [SERVICE-ARGS...]
//! imgbuild-init [--config PATH] --check   parse the config, print a summary, exit 0 or 2
//! ```
//! Own options come before `--container`; everything after it (a leading `--` is dropped)
//! is appended to `service.args`. Exit codes: 2 for bad usage or a bad config (one line
//! naming the file), otherwise the service's status (128 + signal for a signal death).
//!
//! # Configuration: `/etc/imgbuild/init.json` (written by imgbuild)
//! The contract is docs/INIT.md; its types are crates/init-contract, shared with imgbuild.
//! Unknown fields are errors, so a typo is not silently ignored.
//!
//! # Boot mode
//! Mounts proc, sysfs, devtmpfs, devpts, tmpfs on /run, /tmp, /dev/shm; makes sure stdio is
//! the console; loads the modules in order with finit_module (already loaded is fine,
//! failures are reported and skipped); brings up `lo` and the first Ethernet interface
//! (eth0 first; waiting up to 5 s for it to appear); configures it by DHCP over a UDP
//! socket on port 68 (8 s, then the static fallback 10.0.2.15/24 gw 10.0.2.2 dns 10.0.2.3,
//! said in one line; no lease renewal) or statically, with ioctls; writes /etc/resolv.conf;
//! reads a NoCloud CIDATA volume if there is one (see `nocloud`; no network-config); sets
//! the hostname (and /etc/hostname); starts the service (environment: only what is listed
//! below plus a default PATH; stdin /dev/null; its own session) and keeps it running.
//! SIGTERM, SIGINT (ctrl-alt-del) and SIGPWR stop the service (SIGTERM, 2 s, SIGKILL),
//! sync and power off. A config that cannot be read halts with one line (PID 1 never
//! exits); ctrl-alt-del still powers off.
//!
//! Kernel command line (later entries win; double quotes group words):
//! - `hostname=NAME`
//! - `ip=dhcp` | `ip=off` | `ip=ADDR/LEN::GW` | the kernel's full
//!   `ip=CLIENT:SERVER:GW:NETMASK:HOSTNAME:DEVICE:AUTOCONF:DNS0:DNS1`
//! - `hls.ip=ADDR/LEN|dhcp|off`, `hls.gw=ADDR`, `hls.dns=ADDR[,ADDR]` (win over `ip=`)
//! - `hls.KEY=VALUE`: service environment variable KEY (any other KEY; case kept)
//! - `imgbuild.test=kill-service-after=SECS[,poweroff-after=SECS]`: SIGKILL the service
//!   once, SECS after it first started (so a test sees a restart)
//! - `imgbuild.modules=NAME[,NAME…]`: load only these of the config's modules (the
//!   MicroVM names its machine's; the ISO loads them all);
//! - `imgbuild.poweroff=SECS`: power off SECS after the service was first started;
//!   `imgbuild.poweroff` alone: power off when the service exits instead of restarting
//!
//! (`hls.` is the config's `cmdline_prefix`.)
//! Precedence — hostname: config < NoCloud meta-data `local-hostname` < user-data
//! `hostname` < `hostname=`. Service env: config < NoCloud `hls:` map < `hls.KEY=VALUE`.
//!
//! # Container mode
//! No mounts, modules or network. Service env: config env < the process environment
//! (`docker run -e` wins). Drops to uid/gid when started as root (setgroups([]), setgid,
//! setuid; HOME=/root becomes the user's home); started as any other user it just runs;
//! root without CAP_SETUID/CAP_SETGID runs the service as root and says so. Restarts the
//! service with backoff after a crash; a service that exits 0 or 2 (bad usage) ends the
//! container with that status, and one that cannot be started at all ends it with 127
//! (not found) or 126. SIGTERM/SIGINT are forwarded, SIGKILL follows after 1.5 s, and init
//! exits with the service's status. SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2/SIGWINCH are
//! forwarded. Orphans are reaped (PR_SET_CHILD_SUBREAPER when not PID 1).
//!
//! # Console markers (stderr, prefix `imgbuild-init: `)
//! - `service NAME started (pid N)`
//! - `service NAME exited (status N), restarting in Xs` /
//!   `service NAME exited (status N, signal SIGKILL), restarting in Xs`
//!   (restart delay 0.5 s doubling to 10 s, back to 0.5 s after 30 s of running)
//! - `service NAME exited (status N), not restarting` (container mode status 0 or 2;
//!   boot mode with `imgbuild.poweroff`)
//! - `SIGTERM received: stopping service NAME (pid N)`, then `service NAME exited (…)`
//! - `test: killing service NAME (pid N) as imgbuild.test asked`
//! - boot steps: `mounted devtmpfs on /dev`, `module virtio_net loaded` (or `already
//!   loaded`, or `NOT loaded (PATH): why`), `link eth0 up`, `DHCP lease A/N from S in Ts`
//!   or `DHCP failed (why); static fallback 10.0.2.15/24 gw 10.0.2.2`, `address A/N on eth0
//!   (dhcp|static|fallback)`, `default route via G dev eth0`, `DNS …`, `NoCloud: CIDATA
//!   volume on /dev/sr0`, `NoCloud: NOTE` (a user-data key ignored, a `write_files` item
//!   skipped, `user-data is not valid YAML (why at line L column C); using only what comes
//!   before the error`, …), `hostname H`, `service env K=V (NoCloud|kernel command line)`,
//!   `power off`.

mod boot;
mod cidr;
mod cmdline;
mod config;
mod consoles;
mod container;
mod dhcp;
mod modules;
mod net;
mod nocloud;
mod say;
mod supervise;
mod tuning;
mod yaml;

use std::path::PathBuf;

const USAGE: &str =
    "usage: imgbuild-init [--config PATH] [--check | --container [SERVICE-ARGS...]]";

/// The command line, parsed.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    config: PathBuf,
    mode: Mode,
}

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Boot,
    Container(Vec<String>),
    Check,
    Help,
    Version,
}

/// Parse the arguments after the program name. In boot mode the kernel may pass stray words: those are
/// ignored when `lenient`.
fn parse_args(args: &[String], lenient: bool) -> Result<Args, String> {
    let mut config = PathBuf::from(config::DEFAULT_CONFIG);
    let mut mode = Mode::Boot;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--container" => {
                let mut rest: Vec<String> = it.cloned().collect();
                if rest.first().map(String::as_str) == Some("--") {
                    rest.remove(0);
                }
                mode = Mode::Container(rest);
                break;
            }
            "--config" => {
                config = it.next().ok_or("--config needs a path")?.into();
            }
            s if s.starts_with("--config=") => config = s["--config=".len()..].into(),
            "--check" => mode = Mode::Check,
            "-h" | "--help" => mode = Mode::Help,
            "-V" | "--version" => mode = Mode::Version,
            other if !lenient => return Err(format!("unknown argument {other:?}")),
            _ => {}
        }
    }
    Ok(Args { config, mode })
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let pid1 = std::process::id() == 1;
    let args = match parse_args(&argv, pid1) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("imgbuild-init: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let code = match args.mode {
        Mode::Help => {
            println!("{USAGE}\nSee the crate documentation for the config schema and the kernel command line.");
            0
        }
        Mode::Version => {
            println!("imgbuild-init {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Mode::Check => match <config::Config as config::Load>::load(&args.config) {
            Ok(c) => {
                println!(
                    "{}: service {} ({}), {} module(s), network {:?}",
                    args.config.display(),
                    c.service.name,
                    c.service.path.display(),
                    c.modules.len(),
                    c.network
                );
                0
            }
            Err(e) => {
                eprintln!("imgbuild-init: {e}");
                2
            }
        },
        Mode::Container(extra) => container::run(&args.config, extra),
        Mode::Boot if !pid1 => {
            eprintln!(
                "imgbuild-init: boot mode runs only as PID 1 (/init); use --container to supervise a service as an ordinary process\n{USAGE}"
            );
            2
        }
        Mode::Boot => boot::run(&args.config),
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments() {
        let a = parse_args(
            &v(&["--config", "/c.json", "--container", "--port", "1"]),
            false,
        )
        .unwrap();
        assert_eq!(a.config, PathBuf::from("/c.json"));
        assert_eq!(a.mode, Mode::Container(v(&["--port", "1"])));
        let a = parse_args(&v(&["--container", "--", "--config", "x"]), false).unwrap();
        assert_eq!(a.mode, Mode::Container(v(&["--config", "x"])));
        assert_eq!(parse_args(&[], false).unwrap().mode, Mode::Boot);
        assert!(parse_args(&v(&["--bogus"]), false).is_err());
        // The kernel passes unknown words to init: ignored in boot mode.
        assert_eq!(
            parse_args(&v(&["quiet", "splash"]), true).unwrap().mode,
            Mode::Boot
        );
        let a = parse_args(&v(&["--config=/x", "--check"]), false).unwrap();
        assert_eq!((a.config, a.mode), (PathBuf::from("/x"), Mode::Check));
    }
}
