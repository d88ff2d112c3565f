//! Container mode: supervise the configured service as the image's entrypoint (any PID).

use crate::config::{Config, Load};
use crate::say::say;
use crate::supervise::{self, Ending, Restart, Spec, Supervisor};
use nix::sys::signal::Signal;
use std::path::Path;
use std::time::Duration;

/// How long a forwarded SIGTERM/SIGINT is given before SIGKILL: docker's users expect the
/// container gone within 2 s.
pub const GRACE: Duration = Duration::from_millis(1500);

pub fn run(config_path: &Path, extra: Vec<String>) -> i32 {
    let cfg = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            say!("{e}");
            return 2;
        }
    };
    supervise::block_signals();
    if std::process::id() != 1 {
        // Orphans of the service are re-parented to us, so we can reap them.
        // SAFETY: plain prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let user = supervise::service_user(cfg.service.uid, cfg.service.gid);
    let mut env = cfg.service.env.clone();
    for (k, v) in std::env::vars_os() {
        env.insert(
            k.to_string_lossy().into_owned(),
            v.to_string_lossy().into_owned(),
        );
    }
    if let Some((uid, _)) = user {
        // docker sets HOME=/root for a root container; the service is not root.
        if env.get("HOME").is_none_or(|h| h == "/root") {
            env.insert(
                "HOME".into(),
                supervise::home_of(uid).unwrap_or_else(|| "/".into()),
            );
        }
    }
    let mut args = cfg.service.args.clone();
    args.extend(extra);
    let spec = Spec {
        name: cfg.service.name.clone(),
        path: cfg.service.path.clone(),
        args,
        env,
        user,
        restart: Restart::OnFailure,
        grace: GRACE,
        stop_signals: vec![Signal::SIGTERM, Signal::SIGINT],
        stop_with: None,
        forward_signals: vec![
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGWINCH,
        ],
        stdin_null: false,
        kill_after: None,
        poweroff_after: None,
    };
    match Supervisor::new(spec).run() {
        Ending::Finished(s) => s.code(),
        Ending::Stopped { last: Some(s), .. } => s.code(),
        Ending::Stopped { signal, last: None } => 128 + signal as i32,
        Ending::PowerOffTimer => 0,
    }
}
