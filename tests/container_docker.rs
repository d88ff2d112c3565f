//! The container images in a real Docker engine: every profile's image loads under its name
//! with its labels, environment, ports, user and healthcheck; origins become healthy and serve
//! through `-p`; the swarm runs against an origin on a docker network without errors; settings
//! precedence, hardening and stops on SIGTERM hold.
//!
//! Every image is built and loaded once per test binary (shared through a `OnceLock`); every
//! container and network gets a unique name and is removed when its test ends; the images are
//! removed when the test binary exits. Full tier: `cargo test -- --ignored`.

mod common;
use common::{docker, docker_ok};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One profile as `profiles list/show --json` describe it.
#[derive(Clone, Debug)]
struct Profile {
    id: String,
    kind: String,
    name: String,
    image: String,
    show: Value,
}

struct Images {
    profiles: Vec<Profile>,
    _dir: tempfile::TempDir,
}

static IMAGES: OnceLock<Images> = OnceLock::new();
static LOADED: Mutex<Vec<String>> = Mutex::new(Vec::new());

extern "C" fn remove_images() {
    let images = LOADED.lock().map(|v| v.clone()).unwrap_or_default();
    if !images.is_empty() {
        let mut c = Command::new("docker");
        c.args(["rmi", "-f"]).args(&images);
        let _ = c.output();
    }
}

/// Builds and loads every profile's image once.
fn images() -> &'static Images {
    IMAGES.get_or_init(|| {
        let o = common::run(&["profiles", "list", "--json"]);
        assert!(o.status.success(), "{}", common::stderr(&o));
        let list: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
        let dir = common::kept_dir();
        // SAFETY: registering a plain extern "C" function to run at exit.
        unsafe { libc::atexit(remove_images) };
        let mut profiles = Vec::new();
        for p in list {
            let id = p["id"].as_str().unwrap().to_string();
            let show = common::run(&["profiles", "show", &id, "--json"]);
            let tar = dir.path().join(format!("{}.tar", id.replace('/', "-")));
            let o = common::imgbuild()
                .args(["container", &id, "-o", tar.to_str().unwrap()])
                .env("IMGBUILD_CACHE", dir.path().join("cache"))
                .output()
                .unwrap();
            assert!(o.status.success(), "building {id}: {}", common::stderr(&o));
            let image = p["image"].as_str().unwrap().to_string();
            LOADED.lock().unwrap().push(image.clone());
            let out = docker_ok(&["load", "-i", tar.to_str().unwrap()]);
            assert!(out.contains(&format!("Loaded image: {image}")), "{out}");
            profiles.push(Profile {
                kind: p["kind"].as_str().unwrap().to_string(),
                name: p["name"].as_str().unwrap().to_string(),
                id,
                image,
                show: serde_json::from_slice(&show.stdout).unwrap(),
            });
        }
        Images {
            profiles,
            _dir: dir,
        }
    })
}

fn of_kind(kind: &str) -> Vec<Profile> {
    images()
        .profiles
        .iter()
        .filter(|p| p.kind == kind)
        .cloned()
        .collect()
}

fn profile(id: &str) -> Profile {
    images()
        .profiles
        .iter()
        .find(|p| p.id == id)
        .unwrap_or_else(|| panic!("no profile {id}"))
        .clone()
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn unique(what: &str) -> String {
    format!(
        "imgbuild-test-{what}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A container removed when dropped.
struct Container(String);

impl Container {
    /// `docker run -d --name <unique> <opts…> IMAGE <args…>`.
    fn run(opts: &[&str], image: &str, args: &[&str]) -> Container {
        let name = unique("c");
        let mut a = vec!["run", "-d", "--name", &name];
        a.extend_from_slice(opts);
        a.push(image);
        a.extend_from_slice(args);
        let c = Container(name.clone());
        docker_ok(&a);
        c
    }

    fn health(&self) -> String {
        common::stdout(&docker(&[
            "inspect",
            "-f",
            "{{if .State.Health}}{{.State.Health.Status}}{{end}}/{{.State.Status}}",
            &self.0,
        ]))
        .trim()
        .to_string()
    }

    /// Waits until docker reports `healthy` (Docker 20.10 probes first after `Interval`).
    fn wait_healthy(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            let h = self.health();
            if h.starts_with("healthy") {
                return;
            }
            if start.elapsed() > limit || h.ends_with("exited") {
                let logs = docker(&["logs", "--tail", "30", &self.0]);
                panic!(
                    "{} not healthy after {:?}: {h}\n{}{}",
                    self.0,
                    start.elapsed(),
                    common::stdout(&logs),
                    common::stderr(&logs)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The host address a container port is published on.
    fn host_port(&self, port: u16) -> String {
        docker_ok(&["port", &self.0, &format!("{port}/tcp")])
            .lines()
            .next()
            .unwrap()
            .trim()
            .replace("0.0.0.0", "127.0.0.1")
    }

    fn logs(&self) -> String {
        let o = docker(&["logs", &self.0]);
        common::stdout(&o) + &common::stderr(&o)
    }

    fn wait_exit(&self, limit: Duration) -> i64 {
        let start = Instant::now();
        loop {
            let s = common::stdout(&docker(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.ExitCode}}",
                &self.0,
            ]));
            let mut it = s.split_whitespace();
            if it.next() == Some("exited") {
                return it.next().unwrap().parse().unwrap();
            }
            assert!(
                start.elapsed() < limit,
                "{} still running: {}",
                self.0,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.0]);
    }
}

struct Network(String);

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.0]);
    }
}

/// A plain HTTP/1.1 GET (Connection: close): (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

fn config_of(image: &str) -> Value {
    let out = docker_ok(&["inspect", image]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["Config"].clone()
}

#[test]
#[ignore = "full: needs docker"]
fn every_profile_image_loads_under_its_name_with_labels_env_ports_user_and_healthcheck() {
    for p in &images().profiles {
        let c = config_of(&p.image);
        assert_eq!(p.image, format!("hls-{}:{}", p.kind, p.name), "{}", p.id);
        assert_eq!(c["User"], "1000:1000", "{}", p.id);
        assert_eq!(
            c["Entrypoint"],
            serde_json::json!([format!("/bin/hls-{}", p.kind)])
        );
        let labels = c["Labels"].as_object().unwrap();
        for k in [
            "title",
            "description",
            "source",
            "documentation",
            "version",
            "vendor",
            "licenses",
            "revision",
            "created",
        ] {
            let key = format!("org.opencontainers.image.{k}");
            assert!(labels.contains_key(&key), "{}: label {key}", p.id);
        }
        assert_eq!(labels["hls.profile"], p.name.as_str());
        if p.kind == "origin" {
            assert!(labels.contains_key("hls.segment-duration"));
            assert!(labels.contains_key("hls.list-size"));
        }
        let env: Vec<String> = c["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap().to_string())
            .collect();
        let want: BTreeMap<String, Value> = serde_json::from_value(p.show["env"].clone()).unwrap();
        for (k, v) in want {
            let kv = format!("{k}={}", v.as_str().unwrap());
            assert!(env.contains(&kv), "{}: Env lacks {kv}: {env:?}", p.id);
        }
        let ports: Vec<String> = c["ExposedPorts"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let want_ports: Vec<String> = p.show["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| format!("{x}/tcp"))
            .collect();
        assert_eq!(ports, want_ports, "{}", p.id);
        let h = &c["Healthcheck"];
        assert_eq!(h["Test"], p.show["healthcheck"]["test"], "{}", p.id);
        assert_eq!(h["Interval"], p.show["healthcheck"]["interval_ns"]);
        assert_eq!(h["Timeout"], p.show["healthcheck"]["timeout_ns"]);
        assert_eq!(h["StartPeriod"], p.show["healthcheck"]["start_period_ns"]);
        assert_eq!(h["Retries"], p.show["healthcheck"]["retries"]);
    }
}

#[test]
#[ignore = "full: needs docker"]
fn every_origin_profile_becomes_healthy_and_serves_health_and_a_playlist_through_p() {
    let origins = of_kind("origin");
    assert!(!origins.is_empty());
    // All at once: Docker 20.10 runs the first probe one Interval after the start.
    let running: Vec<(Profile, Container)> = origins
        .into_iter()
        .map(|p| {
            let port = p.show["ports"][0].as_u64().unwrap();
            let c = Container::run(&["-p", &format!("127.0.0.1::{port}")], &p.image, &[]);
            (p, c)
        })
        .collect();
    for (p, c) in &running {
        c.wait_healthy(Duration::from_secs(60));
        let addr = c.host_port(p.show["ports"][0].as_u64().unwrap() as u16);
        let (st, body) = get(&addr, "/health");
        assert_eq!((st, body.as_str()), (200, "OK\n"), "{}", p.id);
        let (st, master) = get(&addr, "/master.m3u8");
        assert_eq!(st, 200, "{}", p.id);
        assert!(master.starts_with("#EXTM3U"), "{}: {master}", p.id);
        let media = master
            .lines()
            .find(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap_or_else(|| panic!("{}: no variant in {master}", p.id));
        let media = format!("/{}", media.trim_start_matches('/'));
        let (st, playlist) = get(&addr, &media);
        assert_eq!(st, 200, "{} {media}", p.id);
        assert!(playlist.contains("#EXTINF"), "{}: {playlist}", p.id);
    }
}

#[test]
#[ignore = "full: needs docker"]
fn the_swarm_image_against_the_origin_container_on_a_docker_network_reports_zero_errors() {
    let origin = profile("origin/default");
    let net = Network(unique("net"));
    docker_ok(&["network", "create", &net.0]);
    let alias = "origin";
    let o = Container::run(
        &["--network", &net.0, "--network-alias", alias],
        &origin.image,
        &[],
    );
    o.wait_healthy(Duration::from_secs(60));
    let port = origin.show["ports"][0].as_u64().unwrap();
    let url = format!("http://{alias}:{port}/master.m3u8");
    let swarm = profile("swarm/default");
    let s = Container::run(
        &[
            "--network",
            &net.0,
            "-e",
            &format!("STREAM_URL={url}"),
            "-e",
            "DURATION=8",
        ],
        &swarm.image,
        &[],
    );
    let code = s.wait_exit(Duration::from_secs(40));
    let logs = s.logs();
    assert_eq!(code, 0, "{logs}");
    let errors_line = logs
        .lines()
        .find(|l| l.trim_start().starts_with("errors:"))
        .unwrap_or_else(|| panic!("no summary: {logs}"));
    assert!(
        errors_line.split_whitespace().nth(1) == Some("0"),
        "{errors_line}\n{logs}"
    );
    drop(s);
    drop(o);
}

/// `hls-origin --print-config` in the image: (value, source) of `port`.
fn port_setting(env: &[&str], args: &[&str]) -> (u64, String) {
    let image = profile("origin/default").image;
    let mut a = vec!["run", "--rm"];
    for e in env {
        a.push("-e");
        a.push(e);
    }
    a.push(&image);
    a.extend_from_slice(args);
    a.push("--print-config");
    let v: Value = serde_json::from_str(&docker_ok(&a)).unwrap();
    (
        v["port"]["value"].as_u64().unwrap(),
        v["port"]["source"].as_str().unwrap().to_string(),
    )
}

#[test]
#[ignore = "full: needs docker"]
fn settings_precedence_in_docker_profile_default_then_env_then_command_line() {
    let default_port = profile("origin/default").show["ports"][0].as_u64().unwrap();
    // The profile default is baked into the image as Env.
    assert_eq!(port_setting(&[], &[]), (default_port, "env".into()));
    assert_eq!(port_setting(&["PORT=18081"], &[]), (18081, "env".into()));
    assert_eq!(
        port_setting(&[], &["--port", "18082"]),
        (18082, "flag".into())
    );
    assert_eq!(
        port_setting(&["PORT=18081"], &["--port=18082"]),
        (18082, "flag".into())
    );
}

#[test]
#[ignore = "full: needs docker"]
fn the_healthcheck_follows_a_command_line_port_and_works_read_only_without_capabilities() {
    let image = profile("origin/default").image;
    let moved = Container::run(&[], &image, &["--port", "18080"]);
    let locked = Container::run(
        &[
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
        ],
        &image,
        &[],
    );
    moved.wait_healthy(Duration::from_secs(60));
    locked.wait_healthy(Duration::from_secs(60));
    // And SIGTERM ends it as PID 1.
    for c in [&moved, &locked] {
        common::stop_and_assert_sigterm_ends(&c.0);
    }
}

#[test]
#[ignore = "full: needs docker"]
fn images_are_hardened_no_shell_no_setuid_etc_owned_by_root_and_stop_within_two_seconds() {
    for p in &images().profiles {
        let name = unique("export");
        docker_ok(&["create", "--name", &name, &p.image]);
        let _c = Container(name.clone());
        let listing = Command::new("sh")
            .args([
                "-c",
                &format!("docker export {name} | tar -tv --numeric-owner"),
            ])
            .output()
            .unwrap();
        assert!(listing.status.success());
        for line in common::stdout(&listing).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (perms, owner, path) = (f[0], f[1], f[5]);
            let base = path.trim_end_matches('/').rsplit('/').next().unwrap();
            assert!(
                !["sh", "bash", "ash", "dash", "zsh", "busybox", "su", "sudo"].contains(&base),
                "{}: shell {path}",
                p.id
            );
            assert!(
                !perms.contains('s') && !perms.contains('S'),
                "{}: setuid/setgid {line}",
                p.id
            );
            // Docker adds its own /etc/hosts, resolv.conf, hostname and .dockerenv at export.
            if path.starts_with("etc/") && !perms.starts_with('l') {
                assert_eq!(owner, "0/0", "{}: {line}", p.id);
                assert_eq!(
                    &perms[8..9],
                    "-",
                    "{}: /etc writable by others: {line}",
                    p.id
                );
                assert_eq!(
                    &perms[5..6],
                    "-",
                    "{}: /etc writable by group: {line}",
                    p.id
                );
            }
        }
        assert_eq!(config_of(&p.image)["User"], "1000:1000");
    }
    // The swarm (PID 1, running against nothing) also ends on SIGTERM.
    let swarm = profile("swarm/default");
    let s = Container::run(
        &["-e", "STREAM_URL=http://127.0.0.1:9/none.m3u8"],
        &swarm.image,
        &[],
    );
    std::thread::sleep(Duration::from_secs(2));
    common::stop_and_assert_sigterm_ends(&s.0);
}

#[test]
#[ignore = "full: needs docker"]
fn the_enhanced_init_image_supervises_the_origin_as_uid_1000_and_becomes_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("init.tar");
    let o = common::imgbuild()
        .args(["container", "origin/default", "--init", "--no-cache", "-o"])
        .arg(&tar)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    let image = "hls-origin:default-init";
    LOADED.lock().unwrap().push(image.to_string());
    // SAFETY: registering a plain extern "C" function to run at exit (idempotent cleanup).
    unsafe { libc::atexit(remove_images) };
    let out = docker_ok(&["load", "-i", tar.to_str().unwrap()]);
    assert!(out.contains(&format!("Loaded image: {image}")), "{out}");
    let c = config_of(image);
    // Init runs as the profile's user too: nothing in the image runs as root.
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/bin/imgbuild-init", "--container"])
    );
    let run = Container::run(&["-p", "127.0.0.1::17080"], image, &[]);
    run.wait_healthy(Duration::from_secs(60));
    let (st, body) = get(&run.host_port(17080), "/health");
    assert_eq!((st, body.as_str()), (200, "OK\n"));
    // The service and init run as the profile's user.
    let top = docker_ok(&["top", &run.0, "-o", "pid,uid,args"]);
    for program in ["/bin/hls-origin", "/bin/imgbuild-init"] {
        let line = top
            .lines()
            .find(|l| l.contains(program) && !l.contains("healthcheck"))
            .unwrap_or_else(|| panic!("{program}: {top}"));
        assert_eq!(line.split_whitespace().nth(1), Some("1000"), "{top}");
    }
    common::stop_and_assert_sigterm_ends(&run.0);
}
