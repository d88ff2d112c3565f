//! Service supervision, shared by boot and container mode: start the service, print the
//! markers, reap every child (the service and orphans), restart with backoff, and stop on
//! request. Single-threaded: all handled signals are blocked and taken with sigtimedwait,
//! so nothing runs in a signal handler.

use crate::say::say;
use nix::sys::signal::{kill, killpg, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Signals the supervisor takes synchronously.
pub const HANDLED: [Signal; 9] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGPWR,
    Signal::SIGWINCH,
];

fn handled_set() -> SigSet {
    let mut s = SigSet::empty();
    for sig in HANDLED {
        s.add(sig);
    }
    s
}

/// Block the handled signals in this (only) thread; call before starting anything.
pub fn block_signals() {
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled_set()), None);
}

/// Wait for one handled signal, at most `timeout`. `None` on timeout.
pub fn wait_signal(timeout: Duration) -> Option<Signal> {
    let set = handled_set();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(86_400) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` is a valid sigset, `ts` a valid timespec, siginfo may be null.
    let r = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    if r <= 0 {
        None
    } else {
        Signal::try_from(r).ok()
    }
}

/// When a service that exits is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always (boot mode: the machine exists to run the service).
    Always,
    /// After a crash (signal or non-zero status) but not after status 0 or 2 (bad usage,
    /// which a restart cannot fix): container mode.
    OnFailure,
    /// Never: the first exit ends supervision (`imgbuild.poweroff` in boot mode).
    Never,
}

/// Exponential restart delay: 0.5 s doubling to 10 s, back to 0.5 s after 30 s of running.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
pub const HEALTHY_AFTER: Duration = Duration::from_secs(30);

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The delay before the next start, given how long the last run lasted.
    pub fn after_run(&mut self, ran: Duration) -> Duration {
        if ran >= HEALTHY_AFTER {
            self.next = BACKOFF_MIN;
        }
        let d = self.next;
        self.next = (d * 2).min(BACKOFF_MAX);
        d
    }
}

/// A child's end, as waitpid reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(Signal),
}

impl ExitStatus {
    /// The shell-style number: the code, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s as i32,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "status {c}"),
            ExitStatus::Signal(s) => write!(f, "status {}, signal {}", self.code(), s.as_str()),
        }
    }
}

/// "0.5s", "1s", "10s".
pub fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Why supervision ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A stop signal arrived; the service (if it was running) has been stopped.
    Stopped {
        signal: Signal,
        last: Option<ExitStatus>,
    },
    /// The service finished and the restart policy says not to start it again.
    Finished(ExitStatus),
    /// `imgbuild.poweroff` / `poweroff-after` time reached (boot mode).
    PowerOffTimer,
}

/// What to run and how.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub path: PathBuf,
    pub args: Vec<String>,
    /// The complete environment of the service.
    pub env: BTreeMap<String, String>,
    /// uid/gid to switch to (only applied when init runs as root).
    pub user: Option<(u32, u32)>,
    pub restart: Restart,
    /// How long a stopping service gets between the signal and SIGKILL.
    pub grace: Duration,
    /// Stop signals: the service is stopped, then supervision ends.
    pub stop_signals: Vec<Signal>,
    /// The signal that stops the service; `None` forwards the stop signal received.
    pub stop_with: Option<Signal>,
    /// Signals forwarded to the service without stopping.
    pub forward_signals: Vec<Signal>,
    pub stdin_null: bool,
    /// Test aid: SIGKILL the service once, this long after its first start.
    pub kill_after: Option<Duration>,
    /// End supervision (and power off) this long after supervision began.
    pub poweroff_after: Option<Duration>,
}

struct Running {
    pid: Pid,
    started: Instant,
}

pub struct Supervisor {
    spec: Spec,
    running: Option<Running>,
    restart_at: Option<Instant>,
    backoff: Backoff,
    last: Option<ExitStatus>,
    kill_at: Option<Instant>,
    poweroff_at: Option<Instant>,
    stopping: Option<(Signal, Instant)>,
    poweroff_requested: bool,
    pub starts: u32,
}

impl Supervisor {
    pub fn new(spec: Spec) -> Supervisor {
        let poweroff_at = spec.poweroff_after.map(|d| Instant::now() + d);
        Supervisor {
            spec,
            running: None,
            restart_at: Some(Instant::now()),
            backoff: Backoff::default(),
            last: None,
            kill_at: None,
            poweroff_at,
            stopping: None,
            poweroff_requested: false,
            starts: 0,
        }
    }

    /// Start the service; returns the ending when it cannot be started and will not be.
    fn start(&mut self) -> Option<Ending> {
        let spec = &self.spec;
        let mut cmd = Command::new(&spec.path);
        cmd.args(&spec.args).env_clear().envs(&spec.env);
        if spec.stdin_null {
            cmd.stdin(Stdio::null());
        }
        if let Some((uid, gid)) = spec.user {
            // std clears supplementary groups (setgroups(0)) before setuid.
            cmd.gid(gid).uid(uid);
        }
        // SAFETY: sigprocmask and setsid are async-signal-safe. The child must not inherit
        // init's blocked signals; its own session keeps a console ^C or a group kill on
        // the service and its children, away from init.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::signal::sigprocmask(
                    SigmaskHow::SIG_SETMASK,
                    Some(&SigSet::empty()),
                    None,
                )
                .map_err(std::io::Error::from)?;
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        self.starts += 1;
        match cmd.spawn() {
            Ok(child) => {
                let pid = Pid::from_raw(child.id() as i32);
                // The child is reaped by waitpid(-1) below, never through `Child`.
                drop(child);
                say!("service {} started (pid {pid})", spec.name);
                let now = Instant::now();
                if self.starts == 1 {
                    self.kill_at = spec.kill_after.map(|d| now + d);
                }
                self.running = Some(Running { pid, started: now });
                None
            }
            Err(e) => {
                say!(
                    "service {} could not be started: {}: {e}",
                    spec.name,
                    spec.path.display()
                );
                // Shell convention: 127 not found, 126 found but not executable.
                let code = if e.kind() == std::io::ErrorKind::NotFound {
                    127
                } else {
                    126
                };
                if self.spec.restart == Restart::OnFailure {
                    // A container whose program is missing will not heal: end it now.
                    self.last = Some(ExitStatus::Code(code));
                    return Some(Ending::Finished(ExitStatus::Code(code)));
                }
                self.exited(ExitStatus::Code(code), Duration::ZERO)
            }
        }
    }

    /// Book-keeping after the service ended; returns the ending if supervision is over.
    fn exited(&mut self, status: ExitStatus, ran: Duration) -> Option<Ending> {
        self.last = Some(status);
        self.running = None;
        let name = &self.spec.name;
        if let Some((signal, _)) = self.stopping {
            say!("service {name} exited ({status})");
            return Some(Ending::Stopped {
                signal,
                last: Some(status),
            });
        }
        let finished = match self.spec.restart {
            Restart::Always => false,
            Restart::OnFailure => matches!(status, ExitStatus::Code(0) | ExitStatus::Code(2)),
            Restart::Never => true,
        };
        if finished {
            say!("service {name} exited ({status}), not restarting");
            return Some(Ending::Finished(status));
        }
        let delay = self.backoff.after_run(ran);
        say!(
            "service {name} exited ({status}), restarting in {}",
            secs(delay)
        );
        self.restart_at = Some(Instant::now() + delay);
        None
    }

    fn signal_service(&self, sig: Signal) {
        if let Some(r) = &self.running {
            let _ = kill(r.pid, sig);
        }
    }

    /// Reap every child that has ended; returns the ending if the service's end ends it.
    fn reap(&mut self) -> Option<Ending> {
        let mut ending = None;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    ending = ending.or(self.child_ended(pid, ExitStatus::Code(code)));
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    ending = ending.or(self.child_ended(pid, ExitStatus::Signal(sig)));
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        ending
    }

    fn child_ended(&mut self, pid: Pid, status: ExitStatus) -> Option<Ending> {
        match &self.running {
            Some(r) if r.pid == pid => {
                let ran = r.started.elapsed();
                // Take the service's leftover process group down with it on a stop.
                if self.stopping.is_some() {
                    let _ = killpg(pid, Signal::SIGKILL);
                }
                self.exited(status, ran)
            }
            _ => None, // an orphan: reaped, nothing else to do
        }
    }

    /// Begin stopping: forward `sig`, SIGKILL after the grace period.
    fn stop(&mut self, sig: Signal) -> Option<Ending> {
        if self.stopping.is_some() {
            return None;
        }
        self.restart_at = None;
        match &self.running {
            None => Some(Ending::Stopped {
                signal: sig,
                last: self.last,
            }),
            Some(r) => {
                let why = if self.poweroff_requested {
                    "power-off time reached".to_string()
                } else {
                    format!("{} received", sig.as_str())
                };
                say!("{why}: stopping service {} (pid {})", self.spec.name, r.pid);
                self.stopping = Some((sig, Instant::now() + self.spec.grace));
                self.signal_service(self.spec.stop_with.unwrap_or(sig));
                None
            }
        }
    }

    /// Run until a stop signal, a final exit or the power-off timer.
    pub fn run(&mut self) -> Ending {
        loop {
            let now = Instant::now();
            if self.running.is_none() && self.restart_at.is_some_and(|t| t <= now) {
                self.restart_at = None;
                if let Some(e) = self.start() {
                    return e;
                }
                continue;
            }
            if let (Some(t), Some(r)) = (self.kill_at, &self.running) {
                if t <= now {
                    say!(
                        "test: killing service {} (pid {}) as imgbuild.test asked",
                        self.spec.name,
                        r.pid
                    );
                    self.signal_service(Signal::SIGKILL);
                    self.kill_at = None;
                }
            }
            if let Some((_, deadline)) = self.stopping {
                if deadline <= now {
                    if let Some(r) = &self.running {
                        say!(
                            "service {} did not stop within {}: SIGKILL",
                            self.spec.name,
                            secs(self.spec.grace)
                        );
                        let _ = kill(r.pid, Signal::SIGKILL);
                        let _ = killpg(r.pid, Signal::SIGKILL);
                    }
                    // Wait for the kill to be reported; at most a little longer.
                    self.stopping = self
                        .stopping
                        .map(|(s, _)| (s, now + Duration::from_secs(5)));
                }
            }
            if self.poweroff_at.is_some_and(|t| t <= now) && self.stopping.is_none() {
                self.poweroff_at = None;
                self.poweroff_requested = true;
                if self.stop(Signal::SIGTERM).is_some() {
                    return Ending::PowerOffTimer;
                }
            }
            let next = [
                self.restart_at,
                self.kill_at.filter(|_| self.running.is_some()),
                self.stopping.map(|(_, d)| d),
                self.poweroff_at.filter(|_| self.stopping.is_none()),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = next
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3600));
            let Some(sig) = wait_signal(timeout) else {
                continue;
            };
            let ending = if sig == Signal::SIGCHLD {
                self.reap()
            } else if self.spec.stop_signals.contains(&sig) {
                self.stop(sig)
            } else {
                if self.spec.forward_signals.contains(&sig) {
                    self.signal_service(sig);
                }
                None
            };
            if let Some(e) = ending {
                return match e {
                    Ending::Stopped { .. } if self.poweroff_requested => Ending::PowerOffTimer,
                    e => e,
                };
            }
        }
    }
}

/// The uid/gid the service should be switched to, or `None` to run it as init runs.
/// Switching needs root with CAP_SETUID and CAP_SETGID; without them the service runs as
/// init's own user, said in one line.
pub fn service_user(uid: Option<u32>, gid: Option<u32>) -> Option<(u32, u32)> {
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    let (uid, gid) = match (uid, gid) {
        (None, None) => return None,
        (Some(u), g) => (u, g.unwrap_or(u)),
        (None, Some(g)) => (euid, g),
    };
    if euid != 0 {
        if uid != euid || gid != egid {
            say!(
                "running as uid {euid} gid {egid}, not root: the service runs as that, not as uid {uid} gid {gid}"
            );
        }
        return None;
    }
    if !has_setid_caps() {
        say!(
            "cannot switch to uid {uid} gid {gid} (CAP_SETUID/CAP_SETGID dropped): the service runs as root; run the container with --user {uid}:{gid} instead"
        );
        return None;
    }
    Some((uid, gid))
}

fn has_setid_caps() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_none_or(|caps| caps & (1 << 6) != 0 && caps & (1 << 7) != 0)
}

/// The home directory of `uid` from /etc/passwd.
pub fn home_of(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::default();
        let quick = Duration::from_secs(1);
        let seq: Vec<String> = (0..7).map(|_| secs(b.after_run(quick))).collect();
        assert_eq!(seq, ["0.5s", "1s", "2s", "4s", "8s", "10s", "10s"]);
        assert_eq!(b.after_run(Duration::from_secs(31)), BACKOFF_MIN);
        assert_eq!(b.after_run(quick), Duration::from_secs(1));
    }

    #[test]
    fn status_text() {
        assert_eq!(ExitStatus::Code(3).to_string(), "status 3");
        assert_eq!(
            ExitStatus::Signal(Signal::SIGKILL).to_string(),
            "status 137, signal SIGKILL"
        );
        assert_eq!(ExitStatus::Signal(Signal::SIGTERM).code(), 143);
    }
}
