//! Security properties of EVERY profile's image, in a real docker engine. Profiles come
//! from `imgbuild profiles list --json` (never named here). tests/container_docker.rs checks
//! the config (`User`), shell names, setuid bits and /etc ownership from `tar -tv`; this file
//! checks what the kernel and the image's bytes say, for every profile:
//!
//! Every origin profile is checked twice: its image and its `--init` image (imgbuild-init as
//! PID 1 supervising the origin, also as the profile's user).
//!
//! - PID 1 of the running container has uid/gid 1000 and no effective capabilities
//!   (`/proc/PID/status` on the host, PID from `docker inspect`), and `--read-only
//!   --cap-drop ALL --security-opt no-new-privileges` still becomes healthy;
//! - as that user, /etc cannot be written and /tmp can (a real write through
//!   `/proc/PID/root` with the container's uid);
//! - the exported file system, read header by header: the only executable files are the
//!   profile's payload programs (so no shell, compiler, package manager or interpreter under
//!   any name), every ELF file is one of them, no setuid/setgid bit, /tmp is 1777, nothing
//!   but /tmp is writable by the image user;
//! - `docker stop` takes less than 2 s.
//!
//! Each image is built and loaded once (OnceLock); images and containers are removed.

mod common;
use common::{docker, docker_ok};

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use imgbuild::oci::tar as itar;
use serde_json::Value;

#[derive(Clone, Debug)]
struct Image {
    id: String,
    /// `<run id>hls-<kind>:<profile>`: never clashes with images others use.
    reference: String,
    kind: String,
    port: u64,
    binary: String,
    uid: u64,
    gid: u64,
}

static IMAGES: OnceLock<Vec<Image>> = OnceLock::new();
static LOADED: Mutex<Vec<String>> = Mutex::new(Vec::new());

extern "C" fn remove_images() {
    let images = LOADED.lock().map(|v| v.clone()).unwrap_or_default();
    if !images.is_empty() {
        let _ = Command::new("docker")
            .args(["rmi", "-f"])
            .args(&images)
            .output();
    }
}

/// Builds and loads every profile's image once. The profiles are built from a copy of the
/// root tree whose image names carry this test run's id, so loading them never replaces or
/// removes an image anyone else uses (`hls-origin:default` stays untouched).
fn images() -> &'static [Image] {
    IMAGES.get_or_init(|| {
        let root = common::temp_root();
        let tag = format!("imgbuild-sec{}-", std::process::id());
        for kind in ["origin", "swarm"] {
            let base = root.path().join(format!("profiles/{kind}/_base.toml"));
            if let Ok(text) = std::fs::read_to_string(&base) {
                let text = text.replace("name = \"hls-", &format!("name = \"{tag}hls-"));
                std::fs::write(&base, text).unwrap();
            }
        }
        let root_arg = root.path().to_str().unwrap().to_string();
        let o = common::run(&["--root", &root_arg, "profiles", "list", "--json"]);
        assert!(o.status.success(), "{}", common::stderr(&o));
        let list: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
        assert!(!list.is_empty());
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: registering a plain extern "C" function to run at exit.
        unsafe { libc::atexit(remove_images) };
        let mut out = Vec::new();
        for p in list {
            let id = p["id"].as_str().unwrap().to_string();
            let show = common::run(&["--root", &root_arg, "profiles", "show", &id, "--json"]);
            assert!(show.status.success(), "{}", common::stderr(&show));
            let show: Value = serde_json::from_slice(&show.stdout).unwrap();
            let user = &show["profile"]["image"]["user"];
            let kind = p["kind"].as_str().unwrap().to_string();
            // Origin profiles also as the enhanced image (`--init`, tagged `<tag>-init`).
            let variants: &[bool] = if kind == "origin" {
                &[false, true]
            } else {
                &[false]
            };
            for &init in variants {
                let tar = dir.path().join("image.tar");
                let mut cmd = common::imgbuild();
                cmd.args(["--root", &root_arg, "container", &id, "-o"])
                    .arg(&tar)
                    .arg("--cache-dir")
                    .arg(dir.path().join("cache"));
                if init {
                    cmd.arg("--init");
                }
                let o = cmd.output().unwrap();
                assert!(o.status.success(), "building {id}: {}", common::stderr(&o));
                let mut reference = p["image"].as_str().unwrap().to_string();
                if init {
                    reference.push_str("-init");
                }
                LOADED.lock().unwrap().push(reference.clone());
                let loaded = docker_ok(&["load", "-i", tar.to_str().unwrap()]);
                assert!(loaded.contains(&reference), "{loaded}");
                out.push(Image {
                    kind: kind.clone(),
                    port: show["ports"][0].as_u64().unwrap_or(0),
                    id: if init {
                        format!("{id} --init")
                    } else {
                        id.clone()
                    },
                    reference,
                    binary: show["profile"]["image"]["binary"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                    uid: user["uid"].as_u64().unwrap_or(1000),
                    gid: user["gid"].as_u64().unwrap_or(1000),
                });
            }
        }
        out
    })
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn unique() -> String {
    format!(
        "imgbuild-sec-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A docker network with a running origin (the first origin profile's image, hardened) that
/// swarm containers load, so every swarm profile runs as it would (one with reconnects off
/// would otherwise give up and exit).
struct Target {
    net: String,
    url: String,
    origin: Option<Container>,
}

impl Target {
    fn start() -> Target {
        let net = unique();
        docker_ok(&["network", "create", &net]);
        let mut t = Target {
            net,
            url: String::new(),
            origin: None,
        };
        let img = images()
            .iter()
            .find(|i| i.kind == "origin" && !i.id.ends_with("--init"))
            .expect("an origin profile")
            .clone();
        let name = unique();
        docker_ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &t.net,
            "--network-alias",
            "origin",
            "--read-only",
            "--cap-drop",
            "ALL",
            &img.reference,
        ]);
        let c = Container(name);
        c.wait_healthy(Duration::from_secs(60));
        t.url = format!("http://origin:{}/master.m3u8", img.port);
        t.origin = Some(c);
        t
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        drop(self.origin.take());
        let _ = docker(&["network", "rm", &self.net]);
    }
}

struct Container(String);

impl Container {
    /// `docker run -d` with the hardening options; swarm images get a target URL (nothing
    /// listens there; the swarm keeps retrying and stays up).
    fn run(img: &Image, t: &Target, hardened: bool) -> Container {
        let name = unique();
        let url = format!("STREAM_URL={}", t.url);
        let mut args = vec!["run", "-d", "--name", &name, "--network", &t.net];
        if hardened {
            args.extend([
                "--read-only",
                "--cap-drop",
                "ALL",
                "--security-opt",
                "no-new-privileges",
            ]);
        }
        args.extend(["-e", &url, &img.reference]);
        docker_ok(&args);
        Container(name)
    }

    fn inspect(&self) -> Value {
        let s = docker_ok(&["inspect", &self.0]);
        serde_json::from_str::<Value>(&s).unwrap()[0].clone()
    }

    fn wait_healthy(&self, limit: Duration) {
        let t = Instant::now();
        loop {
            let st = self.inspect();
            let h = st["State"]["Health"]["Status"].as_str().unwrap_or("none");
            if h == "healthy" {
                return;
            }
            assert!(
                st["State"]["Running"].as_bool() == Some(true),
                "{} exited ({}): {}",
                self.0,
                st["State"]["ExitCode"],
                docker_ok(&["logs", &self.0])
            );
            assert!(
                t.elapsed() < limit,
                "{} not healthy after {limit:?} ({h}): {}",
                self.0,
                docker_ok(&["logs", &self.0])
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn pid(&self) -> u32 {
        self.inspect()["State"]["Pid"].as_u64().unwrap() as u32
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

/// `Uid:`/`Gid:` (real, effective, saved, fs) and `CapEff:` of a host PID.
fn proc_status(pid: u32) -> BTreeMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

#[test]
#[ignore = "full: needs docker"]
fn every_image_runs_as_its_user_without_capabilities_read_only_and_stops_on_sigterm() {
    let target = Target::start();
    // Docker 20.10 ignores the profiles' `start_interval` (API 1.44+), so an image's first
    // health check runs one `interval` (10 s) after its start: the containers of a batch
    // start together and wait out that interval side by side, not one after the other. A
    // batch of HEALTH_BATCH keeps the swarm profiles' load on the one target origin small.
    const HEALTH_BATCH: usize = 6;
    for batch in images().chunks(HEALTH_BATCH) {
        let running: Vec<(&Image, Container)> = batch
            .iter()
            .map(|img| (img, Container::run(img, &target, true)))
            .collect();
        for (img, c) in &running {
            check_user_capabilities_and_sigterm(img, c);
        }
    }
}

/// PID 1 of a running hardened container: healthy, the profile's uid/gid, no effective
/// capabilities, no_new_privs, `docker top` agrees, and SIGTERM ends it.
fn check_user_capabilities_and_sigterm(img: &Image, c: &Container) {
    c.wait_healthy(Duration::from_secs(60));
    let pid = c.pid();
    let st = proc_status(pid);
    let uid = img.uid.to_string();
    let gid = img.gid.to_string();
    assert_eq!(img.uid, 1000, "{}: the profile's uid", img.id);
    let ids = |k: &str| -> Vec<String> { st[k].split_whitespace().map(str::to_string).collect() };
    assert_eq!(ids("Uid"), vec![uid.clone(); 4], "{}: PID 1 uids", img.id);
    assert_eq!(ids("Gid"), vec![gid.clone(); 4], "{}: PID 1 gids", img.id);
    assert_eq!(
        u64::from_str_radix(&st["CapEff"], 16).unwrap(),
        0,
        "{}: effective capabilities",
        img.id
    );
    assert_eq!(st["NoNewPrivs"], "1", "{}", img.id);
    // `docker top` agrees (the daemon's view).
    let top = docker_ok(&["top", &c.0, "-o", "pid,uid,gid,comm"]);
    let row = top.lines().nth(1).unwrap_or_default().to_string();
    let f: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &f[..3],
        &[pid.to_string().as_str(), uid.as_str(), gid.as_str()],
        "{}: {top}",
        img.id
    );
    // SIGTERM to PID 1 ends it.
    common::stop_and_assert_sigterm_ends(&c.0);
}

#[test]
#[ignore = "full: needs docker and setpriv"]
fn as_the_image_user_etc_is_not_writable_and_tmp_is() {
    let target = Target::start();
    for img in images() {
        // Without --read-only, so only the permissions decide.
        let c = Container::run(img, &target, false);
        let pid = c.pid();
        let try_write = |path: &str| -> Output {
            Command::new("setpriv")
                .arg(format!("--reuid={}", img.uid))
                .arg(format!("--regid={}", img.gid))
                .args(["--clear-groups", "--", "sh", "-c"])
                .arg(format!(
                    "echo x > /proc/{pid}/root{path} && echo WROTE || echo REFUSED"
                ))
                .output()
                .unwrap()
        };
        for path in [
            "/etc/imgbuild-test",
            "/etc/passwd",
            "/bin/imgbuild-test",
            "/imgbuild-test",
        ] {
            let o = try_write(path);
            assert_eq!(
                common::stdout(&o).trim(),
                "REFUSED",
                "{}: uid {} could write {path}: {}",
                img.id,
                img.uid,
                common::stderr(&o)
            );
            assert!(
                common::stderr(&o).contains("Permission denied"),
                "{}: {path}: {}",
                img.id,
                common::stderr(&o)
            );
        }
        let o = try_write("/tmp/imgbuild-test");
        assert_eq!(
            common::stdout(&o).trim(),
            "WROTE",
            "{}: /tmp not writable: {}",
            img.id,
            common::stderr(&o)
        );
    }
}

/// One entry of an exported file system.
struct Exported {
    name: String,
    flag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    head: Vec<u8>,
}

/// `docker export` of a created container, read header by header.
fn export(img: &Image) -> Vec<Exported> {
    let name = unique();
    docker_ok(&["create", "--name", &name, &img.reference]);
    let _c = Container(name.clone());
    let o = docker(&["export", &name]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let b = o.stdout;
    let mut out = Vec::new();
    let mut off = 0;
    let (mut long, mut size) = (None, None);
    while off + itar::BLOCK <= b.len() {
        let block: &[u8; itar::BLOCK] = b[off..off + itar::BLOCK].try_into().unwrap();
        let Some(h) = itar::parse_block(block).expect("docker export writes valid tar") else {
            break;
        };
        off += itar::BLOCK;
        let len = size.take().unwrap_or(h.size) as usize;
        let data = &b[off..off + len];
        off += len.div_ceil(itar::BLOCK) * itar::BLOCK;
        match h.flag {
            b'x' => {
                for (k, v) in itar::parse_pax(data).unwrap() {
                    match k.as_str() {
                        "path" => long = Some(v),
                        "size" => size = String::from_utf8(v).unwrap().parse().ok(),
                        _ => {}
                    }
                }
            }
            b'L' => long = Some(data.split(|&c| c == 0).next().unwrap().to_vec()),
            b'g' => {}
            flag => {
                let name = long.take().unwrap_or(h.name);
                out.push(Exported {
                    name: String::from_utf8_lossy(&name)
                        .trim_start_matches("./")
                        .trim_end_matches('/')
                        .to_string(),
                    flag,
                    // docker export puts the file type bits in the mode field too.
                    mode: h.mode & 0o7777,
                    uid: h.uid,
                    gid: h.gid,
                    head: data[..data.len().min(4)].to_vec(),
                });
            }
        }
    }
    assert!(
        out.len() > 5,
        "{}: export has {} entries",
        img.id,
        out.len()
    );
    out
}

/// Docker writes these into every container at export; they are not the image's.
fn docker_added(name: &str) -> bool {
    matches!(
        name,
        ".dockerenv" | "etc/hosts" | "etc/hostname" | "etc/resolv.conf" | "dev" | "proc" | "sys"
    ) || name.starts_with("dev/")
        || name.starts_with("proc/")
        || name.starts_with("sys/")
}

#[test]
#[ignore = "full: needs docker"]
fn every_image_holds_only_its_programs_no_setuid_and_only_tmp_is_writable() {
    for img in images() {
        let files = export(img);
        let mut executables = Vec::new();
        let mut elves = Vec::new();
        for e in files.iter().filter(|e| !docker_added(&e.name)) {
            assert_eq!(
                e.mode & 0o6000,
                0,
                "{}: /{} has setuid/setgid (mode {:o})",
                img.id,
                e.name,
                e.mode
            );
            let regular = matches!(e.flag, b'0' | 0 | b'7');
            if regular && e.mode & 0o111 != 0 {
                executables.push(e.name.clone());
            }
            if regular && e.head == b"\x7fELF" {
                elves.push(e.name.clone());
            }
            // Writable by the image user: owner with u+w, group with g+w, or o+w.
            let writable = e.flag != b'2'
                && ((e.uid == img.uid && e.mode & 0o200 != 0)
                    || (e.gid == img.gid && e.mode & 0o020 != 0)
                    || e.mode & 0o002 != 0);
            if writable {
                assert_eq!(
                    e.name, "tmp",
                    "{}: /{} is writable by uid {} (mode {:o}, owner {}:{})",
                    img.id, e.name, img.uid, e.mode, e.uid, e.gid
                );
            }
            if e.name.starts_with("etc") {
                assert_eq!((e.uid, e.gid), (0, 0), "{}: /{} owner", img.id, e.name);
            }
        }
        let tmp = files.iter().find(|e| e.name == "tmp").expect("/tmp exists");
        assert_eq!((tmp.flag, tmp.mode), (b'5', 0o1777), "{}: /tmp", img.id);
        // The profile's program (and imgbuild-init, if the image has it) and nothing else:
        // no shell, compiler, package manager or interpreter, whatever its name.
        let allowed = [
            format!("bin/{}", img.binary),
            "bin/imgbuild-init".to_string(),
        ];
        assert!(
            executables.contains(&allowed[0]),
            "{}: {} missing: {executables:?}",
            img.id,
            allowed[0]
        );
        for x in executables.iter().chain(&elves) {
            assert!(
                allowed.contains(x),
                "{}: /{x} is an executable or ELF file that is not the profile's program",
                img.id
            );
        }
    }
}
