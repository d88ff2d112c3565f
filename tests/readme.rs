//! The README is held to what imgbuild really does: each troubleshooting row is an error
//! imgbuild prints today (triggered here), and every `sh` block runs (full tier).

mod common;
use common::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).unwrap()
}

/// The message column of the troubleshooting table (code span, backticks stripped).
fn troubleshooting_messages() -> Vec<String> {
    let text = readme();
    let start = text
        .find("## Troubleshooting")
        .expect("README has a Troubleshooting section");
    let section = &text[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |e| e + 3);
    section[..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            // The first code span of the row (`…` or ``…`` when it holds backticks).
            let cell = l.trim_start_matches("| ");
            let fence = if cell.starts_with("``") { "``" } else { "`" };
            let inner = &cell[fence.len()..];
            inner[..inner.find(fence).expect("closed code span")]
                .trim()
                .to_string()
        })
        .collect()
}

/// True when `actual` contains the README pattern, `…` standing for anything.
fn matches(pattern: &str, actual: &str) -> bool {
    let mut rest = actual;
    for frag in pattern.split('…').map(str::trim).filter(|f| !f.is_empty()) {
        match rest.find(frag) {
            Some(i) => rest = &rest[i + frag.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn troubleshooting_rows_are_errors_imgbuild_really_prints() {
    let tmp = tempfile::tempdir().unwrap();
    let out = |name: &str| tmp.path().join(name).display().to_string();
    let broken = temp_root();
    std::fs::write(
        broken.path().join("profiles/origin/x.toml"),
        "[origin]\nport = 1\n\nsegment_duraton = 2\n",
    )
    .unwrap();
    let mut actual: Vec<String> = Vec::new();
    let mut trigger = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = imgbuild();
        c.args(args).stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert!(!o.status.success(), "{args:?} succeeded");
        actual.push(stderr(&o));
    };
    trigger(&["container", "origin/defualt"], &[]);
    trigger(
        &["container", "origin/default", "-o", &out("a.tar")],
        &[("IMGBUILD_PAYLOAD_DIR", "/nonexistent")],
    );
    trigger(
        &["iso", "--boot-assets", "/nonexistent", "-o", &out("a.iso")],
        &[],
    );
    trigger(
        &["up", "origin", "default", "run"],
        &[("DOCKER_HOST", "unix:///nonexistent.sock")],
    );
    trigger(
        &[
            "container",
            "origin/default",
            "--closure",
            "/nonexistent.json",
            "-o",
            &out("b.tar"),
        ],
        &[],
    );
    trigger(
        &["container", "--max-layers", "200", "-o", &out("c.tar")],
        &[],
    );
    trigger(&["--root", broken.path().to_str().unwrap(), "check"], &[]);
    // The KVM lines and the OVMF error come from `imgbuild boot` (src/commands/boot.rs and
    // src/qemu/), which needs an ISO and QEMU (the ISO boot tests see the KVM note on this
    // machine), and the executables error needs a closure with broken ELF files
    // (tests/bad_input.rs builds one); here their text is checked against the source that
    // prints them.
    for f in [
        "src/qemu/mod.rs",
        "src/qemu/accel.rs",
        "src/commands/boot.rs",
        "src/closure/mod.rs",
    ] {
        actual.push(std::fs::read_to_string(repo().join(f)).unwrap());
    }
    for msg in troubleshooting_messages() {
        // The check row names a file in the repository; the broken copy has the same shape.
        let pattern = msg.replace("profiles/origin/x.toml", "x.toml");
        assert!(
            actual.iter().any(|a| matches(&pattern, a)),
            "README troubleshooting row is not what imgbuild prints: {msg}\nactual messages:\n{}",
            actual.join("\n")
        );
    }
    assert!(troubleshooting_messages().len() >= 8);
}

/// The README's `sh` blocks, in order.
fn sh_blocks() -> Vec<String> {
    let text = readme();
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        match (&mut cur, line.trim_end()) {
            (None, "```sh") => cur = Some(String::new()),
            (Some(b), "```") => {
                blocks.push(std::mem::take(b));
                cur = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

/// CI runs exactly the README's second set-up command: the last line of `.ci/run` is that
/// block's one command, word for word.
#[test]
fn ci_runs_exactly_the_readme_test_command() {
    let blocks = sh_blocks();
    let test_command = blocks
        .get(1)
        .map(|b| b.trim().to_string())
        .expect("the README's second sh block (the test command)");
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    let last = ci
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default();
    assert_eq!(
        last, test_command,
        ".ci/run must end with the README's test command"
    );
}

/// Runs one README line that runs until stopped, waiting for what the README says it prints.
fn run_until_it_prints(line: &str, path: &str) {
    use std::os::unix::process::CommandExt;
    let expect = line
        .split("prints: ")
        .nth(1)
        .expect("a long-running README line says what it prints")
        .trim();
    let cmd = line.split('#').next().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new("bash")
        .args(["-c", cmd])
        .current_dir(repo())
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let seen = loop {
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        if text.contains(expect) {
            break true;
        }
        if start.elapsed() > Duration::from_secs(180) || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    common::stop_group(&mut child);
    assert!(
        seen,
        "README line `{cmd}` never printed {expect:?}:\n{}",
        std::fs::read_to_string(log.path()).unwrap_or_default()
    );
}

#[test]
#[ignore = "full: runs every README command (release build, docker, QEMU)"]
fn every_readme_command_runs() {
    let root = repo();
    let before: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let path = format!(
        "{}:{}",
        root.join("target/x86_64-unknown-linux-gnu/release")
            .display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let swarm_before = Command::new("docker")
        .args(["info", "--format", "{{.Swarm.LocalNodeState}}"])
        .output()
        .map(|o| stdout(&o))
        .unwrap_or_default();
    // The report example writes these two into /tmp: removed afterwards unless they were there.
    let report_files: Vec<PathBuf> = ["hls-swarm-report.html", "hls-swarm-series.json"]
        .iter()
        .map(|n| std::env::temp_dir().join(n))
        .filter(|p| !p.exists())
        .collect();
    // `mktemp -d` directories (a bench's scratch): each must be gone when its command ends.
    let mktemp_dirs = || -> Vec<PathBuf> {
        std::fs::read_dir(std::env::temp_dir())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with("tmp."))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mktemp_before = mktemp_dirs();
    let blocks = sh_blocks();
    assert!(blocks.len() >= 6, "README has {} sh blocks", blocks.len());
    let mut failures = Vec::new();
    for block in &blocks {
        if block.trim() == "scripts/test" {
            continue; // the test command itself: CI runs it, and this test is part of it
        }
        let started = Instant::now();
        let (long, script): (Vec<&str>, Vec<&str>) =
            block.lines().partition(|l| l.contains("# until "));
        let o = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script.join("\n")])
            .current_dir(root)
            .env("PATH", &path)
            .env_remove("IMGBUILD_ROOT")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if !o.status.success() {
            failures.push(format!(
                "```sh\n{block}```\nfailed ({}):\n{}{}",
                o.status,
                stdout(&o),
                stderr(&o)
            ));
            continue;
        }
        for l in long {
            run_until_it_prints(l, &path);
        }
        // Where a CI run's time goes (shown with --nocapture or when the test fails).
        eprintln!(
            "README block ({:.0?}): {}",
            started.elapsed(),
            block.lines().next().unwrap_or_default()
        );
    }
    // Remove what the README's commands wrote into the checkout (images, ISOs, MicroVMs).
    for e in std::fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        let s = name.to_string_lossy();
        if !before.contains(&name) && (s.ends_with(".tar") || s.ends_with(".iso")) {
            let _ = std::fs::remove_file(e.path());
        }
        if !before.contains(&name) && (s.ends_with(".microvm") || s.starts_with("deploy-")) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    for f in &report_files {
        let _ = std::fs::remove_file(f);
    }
    let left: Vec<PathBuf> = mktemp_dirs()
        .into_iter()
        .filter(|d| !mktemp_before.contains(d))
        .collect();
    for d in &left {
        let _ = std::fs::remove_dir_all(d);
    }
    if !left.is_empty() {
        failures.push(format!(
            "the README's commands left temporary directories behind: {left:?}"
        ));
    }
    let _ = Command::new("docker")
        .args(["rm", "-f", "hls-origin", "imgbuild-up-origin-default"])
        .output();
    // The "More load than one machine" block, when it failed half-way: its stack, and the
    // one-node swarm it made (only when the node was not in a swarm before).
    let _ = Command::new("docker").args(["stack", "rm", "hls"]).output();
    if swarm_before.trim() == "inactive" {
        let _ = Command::new("docker")
            .args(["swarm", "leave", "--force"])
            .output();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
