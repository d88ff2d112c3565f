//! imgbuild-init as a container entrypoint, run as an ordinary process (not PID 1) with a
//! temporary config pointing at small shell-script services.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_imgbuild-init");

/// A running init with its console (stderr) lines collected.
struct Init {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    dir: tempfile::TempDir,
}

fn config_json(dir: &Path, script: &str, extra: &str) -> PathBuf {
    let svc = dir.join("svc.sh");
    std::fs::write(&svc, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&svc, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg = dir.join("init.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"service": {{"name": "test-svc", "path": "{}", "args": ["first"] {extra}}}}}"#,
            svc.display()
        ),
    )
    .unwrap();
    cfg
}

impl Init {
    fn start(script: &str, extra_cfg: &str, args: &[&str], env: &[(&str, &str)]) -> Init {
        Init::start_as(script, extra_cfg, args, env, None)
    }

    /// Like `start`, with init itself running as `run_as` (uid = gid).
    fn start_as(
        script: &str,
        extra_cfg: &str,
        args: &[&str],
        env: &[(&str, &str)],
        run_as: Option<u32>,
    ) -> Init {
        let dir = tempfile::tempdir().unwrap();
        // World-writable so a service switched to another uid can leave its notes.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let cfg = config_json(dir.path(), script, extra_cfg);
        // Started as another user, init must be reachable by that user: the build directory
        // may sit below a directory only root can enter (a CI clone in `mktemp -d`, mode
        // 0700), so that user runs a copy in the test's own world-readable directory.
        let bin = match run_as {
            Some(_) => {
                let copy = dir.path().join("imgbuild-init");
                std::fs::copy(BIN, &copy).unwrap();
                copy
            }
            None => PathBuf::from(BIN),
        };
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(&cfg)
            .arg("--container")
            .args(args)
            .env("OUT", dir.path())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(id) = run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(id).gid(id);
        }
        let mut child = cmd.spawn().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[init] {l}");
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Init {
            child,
            lines,
            seen: vec![],
            dir,
        }
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Wait for the next console line containing `needle` (lines already seen are skipped).
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
                    "no console line containing {needle:?} within {timeout:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Wait for init to exit; returns (exit code, time taken).
    fn wait_exit(&mut self, timeout: Duration) -> (Option<i32>, Duration) {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return (s.code(), t.elapsed());
            }
            if t.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("init did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

fn pid_in(line: &str) -> i32 {
    let start = line.find("(pid ").expect("pid in marker") + 5;
    line[start..].trim_end_matches(')').parse().unwrap()
}

fn alive(pid: i32) -> bool {
    // A zombie still has /proc/PID; a reaped process does not.
    Path::new(&format!("/proc/{pid}")).exists()
}

fn read_when_present(p: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(p) {
            if s.ends_with('\n') {
                return s;
            }
        }
        assert!(Instant::now() < deadline, "{} never written", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

const SECS_5: Duration = Duration::from_secs(5);

#[test]
fn the_service_starts_and_the_marker_names_its_pid() {
    let mut init = Init::start("echo $$ > \"$OUT/pid\"; exec sleep 100", "", &[], &[]);
    let line = init.expect("started", SECS_5);
    assert!(
        line.starts_with("imgbuild-init: service test-svc started (pid "),
        "{line}"
    );
    let pid = pid_in(&line);
    let written = read_when_present(&init.out("pid"), SECS_5);
    assert_eq!(written.trim().parse::<i32>().unwrap(), pid);
}

#[test]
fn a_killed_service_is_restarted_with_a_new_pid_and_growing_backoff() {
    let mut init = Init::start("exec sleep 100", "", &[], &[]);
    let first = pid_in(&init.expect("started (pid", SECS_5));
    unsafe { libc::kill(first, libc::SIGKILL) };
    let exited = init.expect("exited", SECS_5);
    assert_eq!(
        exited,
        "imgbuild-init: service test-svc exited (status 137, signal SIGKILL), restarting in 0.5s"
    );
    let t = Instant::now();
    let second = pid_in(&init.expect("started (pid", SECS_5));
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "restarted too early"
    );
    assert_ne!(first, second);
    unsafe { libc::kill(second, libc::SIGKILL) };
    assert!(init.expect("exited", SECS_5).ends_with("restarting in 1s"));
    let third = pid_in(&init.expect("started (pid", SECS_5));
    assert_ne!(third, second);
    assert!(
        !alive(first) && !alive(second),
        "old services must be reaped"
    );
}

#[test]
fn a_crashing_service_backs_off_exponentially() {
    let mut init = Init::start("exit 1", "", &[], &[]);
    let delays: Vec<String> = (0..4)
        .map(|_| {
            let l = init.expect("exited", Duration::from_secs(10));
            assert!(l.contains("(status 1)"), "{l}");
            l.rsplit(' ').next().unwrap().to_string()
        })
        .collect();
    assert_eq!(delays, ["0.5s", "1s", "2s", "4s"]);
}

#[test]
fn env_layers_config_under_process_env_and_extra_args_are_appended() {
    let mut init = Init::start(
        r#"{ for a in "$@"; do echo "arg=$a"; done; echo "A=$A"; echo "B=$B"; echo "C=$C"; } > "$OUT/seen.tmp"
mv "$OUT/seen.tmp" "$OUT/seen"; exec sleep 100"#,
        r#", "env": {"A": "config", "B": "config"}"#,
        &["--port", "18080", "two words"],
        &[("B", "process"), ("C", "process")],
    );
    init.expect("started", SECS_5);
    let seen = read_when_present(&init.out("seen"), SECS_5);
    assert_eq!(
        seen,
        "arg=first\narg=--port\narg=18080\narg=two words\nA=config\nB=process\nC=process\n"
    );
}

#[test]
fn sigterm_stops_service_and_init_within_2s_with_the_service_status() {
    let mut init = Init::start(
        "trap 'echo stopping > \"$OUT/term\"; exit 7' TERM; sleep 100 & wait",
        "",
        &[],
        &[],
    );
    let pid = pid_in(&init.expect("started", SECS_5));
    std::thread::sleep(Duration::from_millis(200));
    init.signal(libc::SIGTERM);
    let (code, took) = init.wait_exit(SECS_5);
    assert_eq!(code, Some(7));
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(init.out("term").exists(), "the service saw SIGTERM");
    init.expect("exited (status 7)", SECS_5);
    assert!(!alive(pid));
}

#[test]
fn a_service_ignoring_sigterm_is_killed_and_init_still_exits_within_2s() {
    let mut init = Init::start(
        "trap '' TERM INT; while :; do sleep 0.1; done",
        "",
        &[],
        &[],
    );
    init.expect("started", SECS_5);
    std::thread::sleep(Duration::from_millis(200));
    init.signal(libc::SIGINT);
    let (code, took) = init.wait_exit(SECS_5);
    assert_eq!(code, Some(137));
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn orphans_of_the_service_are_reaped() {
    // The inner shell exits at once, so its `sleep` is orphaned and re-parented to init.
    let mut init = Init::start(
        r#"sh -c 'sleep 0.3 & echo $! > "$OUT/orphan"'; exec sleep 100"#,
        "",
        &[],
        &[],
    );
    init.expect("started", SECS_5);
    let orphan: i32 = read_when_present(&init.out("orphan"), SECS_5)
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + SECS_5;
    while alive(orphan) {
        assert!(
            Instant::now() < deadline,
            "orphan {orphan} still in the process table (zombie not reaped)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_clean_exit_or_bad_usage_ends_the_container_with_that_status() {
    let mut init = Init::start("exit 0", "", &[], &[]);
    let (code, _) = init.wait_exit(SECS_5);
    assert_eq!(code, Some(0));
    init.expect("exited (status 0), not restarting", SECS_5);
    let mut init = Init::start("exit 2", "", &["--bogus"], &[]);
    assert_eq!(init.wait_exit(SECS_5).0, Some(2));
}

#[test]
fn a_malformed_config_is_one_line_naming_the_file_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("init.json");
    std::fs::write(&cfg, r#"{"service": {"name": "x", "path": "/bin/true",}}"#).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("--container")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "imgbuild-init: malformed config {}:",
            cfg.display()
        )),
        "{err}"
    );
    // A missing file too.
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/init.json", "--container"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/init.json"));
}

#[test]
fn boot_mode_refuses_to_run_unless_pid_1() {
    let out = Command::new(BIN).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--container"));
}

#[test]
fn as_root_the_service_runs_as_the_configured_user_without_groups() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let mut init = Init::start(
        r#"echo "$(id -u) $(id -g) $(id -G) $HOME" > "$OUT/id.tmp"; mv "$OUT/id.tmp" "$OUT/id"; exec sleep 100"#,
        r#", "uid": 65534, "gid": 65534"#,
        &[],
        &[("HOME", "/root")],
    );
    init.expect("started", SECS_5);
    let id = read_when_present(&init.out("id"), SECS_5);
    let f: Vec<&str> = id.split_whitespace().collect();
    assert_eq!(&f[..3], ["65534", "65534", "65534"], "{id}");
    assert_ne!(f.get(3), Some(&"/root"), "HOME must not stay /root");
}

#[test]
fn started_as_the_target_user_it_just_runs_and_says_so_for_another_user() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to start init as another user");
        return;
    }
    let id = r#"echo "$(id -u)" > "$OUT/id.tmp"; mv "$OUT/id.tmp" "$OUT/id"; exec sleep 100"#;
    let mut init = Init::start_as(id, r#", "uid": 65534, "gid": 65534"#, &[], &[], Some(65534));
    let first = init.expect("imgbuild-init:", SECS_5);
    assert!(
        first.contains("started (pid"),
        "no warning expected: {first}"
    );
    assert_eq!(read_when_present(&init.out("id"), SECS_5), "65534\n");
    // Asked for uid 1000 while running as 65534: it cannot switch, says so, and runs.
    let mut init = Init::start_as(id, r#", "uid": 1000, "gid": 1000"#, &[], &[], Some(65534));
    let warn = init.expect("imgbuild-init:", SECS_5);
    assert!(warn.contains("not root"), "{warn}");
    init.expect("started (pid", SECS_5);
    assert_eq!(read_when_present(&init.out("id"), SECS_5), "65534\n");
}

#[test]
fn a_missing_service_program_ends_the_container_with_127() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("init.json");
    std::fs::write(
        &cfg,
        r#"{"service": {"name": "ghost", "path": "/nonexistent/bin/ghost"}}"#,
    )
    .unwrap();
    let t = Instant::now();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("--container")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(t.elapsed() < Duration::from_secs(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("service ghost could not be started: /nonexistent/bin/ghost:"),
        "{err}"
    );
}
