//! The golden path, end to end with the real tools: `imgbuild up` (non-terminal, menu on a
//! terminal, interrupted), the compose file, and the ISO booted in QEMU loaded by the swarm.
//! Each test checks the user-visible outcome and that nothing is left behind.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// These tests each run docker images or QEMU; on 2 cores they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// What `docker ARGS` printed on stdout, whatever its exit status.
fn docker(args: &[&str]) -> String {
    common::stdout(&common::docker(args))
}

/// Containers, networks and temp dirs an `up` with this pid would have made.
fn leftovers(pid: u32) -> Vec<String> {
    let tag = format!("imgbuild-up-{pid}");
    // Its name, or its name and a suffix (`-origin`, `-swarm`): not another pid that starts alike.
    let own = |n: &str| n == tag || n.starts_with(&format!("{tag}-"));
    let mut left = Vec::new();
    for c in docker(&["ps", "-a", "--format", "{{.Names}}"]).lines() {
        if own(c) {
            left.push(format!("container {c}"));
        }
    }
    for n in docker(&["network", "ls", "--format", "{{.Name}}"]).lines() {
        if own(n) {
            left.push(format!("network {n}"));
        }
    }
    let dir = std::env::temp_dir().join(&tag);
    if dir.exists() {
        left.push(format!("temp dir {}", dir.display()));
    }
    left
}

#[test]
#[ignore = "full: needs docker"]
fn up_run_non_terminal_reports_zero_errors_and_leaves_nothing_behind() {
    let _g = lock();
    let child = imgbuild()
        .args(["up", "origin", "default", "run", "--duration", "20s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(o.status.success(), "up failed:\n{out}\n{err}");
    assert!(err.contains("Executing: docker load"), "{err}");
    assert!(err.contains("Executing: docker network create"), "{err}");
    let all = format!("{out}{err}");
    let summary = all
        .lines()
        .find(|l| l.trim_start().starts_with("errors:"))
        .unwrap_or_else(|| panic!("no summary in:\n{all}"));
    assert!(
        summary.trim_start().starts_with("errors:    0 "),
        "{summary}"
    );
    let requests = all
        .lines()
        .find(|l| l.trim_start().starts_with("requests:"))
        .unwrap();
    let n: u64 = requests.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        n > 100,
        "the swarm made only {n} requests in 20 s: {requests}"
    );
    assert_eq!(leftovers(pid), Vec::<String>::new());
}

#[test]
#[ignore = "full: needs docker"]
fn up_run_interrupted_by_sigint_cleans_up() {
    let _g = lock();
    let mut child = imgbuild()
        .args(["up", "origin", "default", "run", "--duration", "60s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Interrupt once both images are built and the network is made: the container build has
    // written its outputs by then (a writer's own signal handler once replaced `up`'s here and
    // Ctrl-C killed `up` before its cleanup), and there is a network and a container to remove.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let Ok(line) = line else { break };
            if line.contains("docker run -d") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let started = rx.recv_timeout(Duration::from_secs(300)).is_ok();
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "up did not stop after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let err = reader.join().unwrap();
    assert!(started, "up never started the origin container:\n{err}");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        None,
        "up was killed by the signal instead of cleaning up:\n{err}"
    );
    assert!(
        !status.success(),
        "an interrupted up reported success:\n{err}"
    );
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(leftovers(pid), Vec::<String>::new(), "{err}");
}

#[test]
#[ignore = "full: needs docker"]
fn up_without_a_terminal_says_its_defaults_in_one_line() {
    let _g = lock();
    // `up` publishes the profile's port.
    common::wait_until_free(17080, Duration::from_secs(120));
    let o = imgbuild().arg("up").stdin(Stdio::null()).output().unwrap();
    let err = stderr(&o);
    let _ = Command::new("docker")
        .args(["rm", "-f", "imgbuild-up-origin-default"])
        .output();
    assert!(o.status.success(), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("not on a terminal"))
        .collect();
    assert_eq!(
        lines,
        ["imgbuild up: not on a terminal; using the defaults: origin default container"]
    );
    assert!(
        stdout(&o).contains("hls-origin:default is healthy"),
        "{}",
        stdout(&o)
    );
}

#[test]
#[ignore = "full: needs docker and tmux"]
fn up_on_a_terminal_shows_the_menu_and_builds_the_chosen_profile() {
    let _g = lock();
    common::wait_until_free(17080, Duration::from_secs(120));
    let session = format!("imgbuild-up-menu-{}", std::process::id());
    // The pane is the terminal: stdin, stdout and stderr of imgbuild are all a tty.
    let cmd = format!(
        "env IMGBUILD_PAYLOAD_DIR={} {} up; sleep 30",
        payload_dir().display(),
        imgbuild_bin().display()
    );
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output().expect("tmux");
    assert!(tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "200",
        "-y",
        "50",
        "bash",
        "-c",
        &cmd
    ])
    .status
    .success());
    let screen = || stdout(&tmux(&["capture-pane", "-p", "-S", "-200", "-t", &session]));
    let wait_for = |needle: &str, secs: u64| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            if screen().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    };
    let result = (|| {
        if !wait_for("Kind:", 20) {
            return Err(format!("no kind menu:\n{}", screen()));
        }
        if !screen().contains("swarm") {
            return Err(format!("kind menu lacks swarm:\n{}", screen()));
        }
        tmux(&["send-keys", "-t", &session, "1", "Enter"]);
        if !wait_for("Profile:", 10) {
            return Err(format!("no profile menu:\n{}", screen()));
        }
        if !screen().contains("low-latency") {
            return Err(format!("profile menu lacks low-latency:\n{}", screen()));
        }
        tmux(&["send-keys", "-t", &session, "low-latency", "Enter"]);
        if !wait_for("Action:", 10) {
            return Err(format!("no action menu:\n{}", screen()));
        }
        tmux(&["send-keys", "-t", &session, "Enter"]);
        if !wait_for("hls-origin:low-latency is healthy", 240) {
            return Err(format!(
                "the chosen profile was not built and run:\n{}",
                screen()
            ));
        }
        Ok(())
    })();
    tmux(&["kill-session", "-t", &session]);
    let _ = Command::new("docker")
        .args(["rm", "-f", "imgbuild-up-origin-low-latency"])
        .output();
    result.unwrap();
}

fn build_and_load(id: &str) {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("img.tar");
    let o = run(&["container", id, "-o", tar.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let l = Command::new("docker")
        .args(["load", "-i", tar.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(l.status.success(), "{}", stderr(&l));
}

#[test]
#[ignore = "full: needs docker and docker-compose"]
fn compose_file_reaches_healthy_and_the_swarm_reports_zero_errors() {
    let _g = lock();
    build_and_load("origin/default");
    build_and_load("swarm/default");
    let project = format!("imgbuildtest{}", std::process::id());
    let compose = |args: &[&str]| {
        Command::new("docker-compose")
            .current_dir(repo())
            .env("DURATION", "15s")
            .env("ORIGIN_PORT", common::reserved_port().to_string())
            .args(["-p", &project, "-f", "compose.yaml"])
            .args(args)
            .output()
            .expect("docker-compose is installed by the full test tier")
    };
    let o = compose(&[
        "up",
        "--abort-on-container-exit",
        "--exit-code-from",
        "swarm",
    ]);
    let (out, err) = (stdout(&o), stderr(&o));
    let down = compose(&["down", "-v", "--remove-orphans"]);
    assert!(o.status.success(), "compose up failed:\n{out}\n{err}");
    let summary = out
        .lines()
        .find(|l| l.contains("errors:"))
        .unwrap_or_else(|| panic!("no swarm summary:\n{out}\n{err}"));
    assert!(
        summary
            .split("errors:")
            .nth(1)
            .unwrap()
            .trim_start()
            .starts_with("0 "),
        "{summary}"
    );
    assert!(down.status.success(), "{}", stderr(&down));
}

/// Stops a whole process group (imgbuild boot and its QEMU) when dropped.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        common::stop_group(&mut self.0);
    }
}

#[test]
#[ignore = "full: needs qemu and boot assets"]
fn iso_golden_path_the_swarm_loads_the_booted_origin_with_zero_errors() {
    use std::os::unix::process::CommandExt;
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("origin.iso");
    let o = run(&["iso", "origin/default", "-o", iso.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let port = common::reserved_port();
    let console = std::fs::File::create(dir.path().join("console.log")).unwrap();
    let vm = Group(
        imgbuild()
            .args([
                "boot",
                iso.to_str().unwrap(),
                "--forward",
                &format!("{port}:17080"),
            ])
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    let console = || std::fs::read_to_string(dir.path().join("console.log")).unwrap_or_default();
    let start = Instant::now();
    loop {
        let ok = std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .and_then(|mut s| {
                use std::io::{Read, Write};
                s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
                s.write_all(b"GET /health HTTP/1.0\r\n\r\n").ok()?;
                let mut b = String::new();
                s.read_to_string(&mut b).ok()?;
                b.starts_with("HTTP/1.1 200").then_some(())
            });
        if ok.is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the ISO never answered /health:\n{}",
            console()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let summary = dir.path().join("summary.json");
    let swarm = Command::new(payload_dir().join("hls-swarm"))
        .args([
            "--clients",
            "20",
            "--ramp-rate",
            "10",
            "--duration",
            "20s",
            "--metrics-port",
            "0",
        ])
        .arg("--summary-json")
        .arg(&summary)
        .arg(format!("http://127.0.0.1:{port}/master.m3u8"))
        .env_clear()
        .output()
        .unwrap();
    drop(vm);
    assert!(
        swarm.status.success(),
        "swarm failed:\n{}\nconsole:\n{}",
        stderr(&swarm),
        console()
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(v["errors"]["total"], 0, "{v}");
    assert!(v["requests"]["segment"].as_u64().unwrap() >= 20, "{v}");
    assert!(
        console().contains("imgbuild-init: service hls-origin started"),
        "{}",
        console()
    );
}
