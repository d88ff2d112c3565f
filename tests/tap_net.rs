//! `imgbuild boot --net tap` (the default for a profile with a static address): the `tap`
//! profile, booted as a MicroVM and as an ISO, answers `/health` on 10.177.0.10 from the
//! host side of a bridge imgbuild made with the profile's gateway address. Each boot runs in
//! a network namespace of the test's own, and after imgbuild is stopped (SIGTERM) nothing it
//! created is left: no links but `lo`, no processes. Without CAP_NET_ADMIN the boot fails in
//! one line, exit 1. Full tier: root, QEMU, iproute2 and the boot assets.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("ibt-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let o = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip (iproute2)");
        assert!(o.status.success(), "ip netns add: {}", common::stderr(&o));
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        let o = Command::new("ip")
            .arg("-n")
            .arg(&self.0)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "ip {args:?}: {}", common::stderr(&o));
        common::stdout(&o)
    }

    fn exec(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]);
        c
    }

    /// GET /health on 10.177.0.10:17080 from inside the namespace.
    fn health(&self) -> bool {
        let o = self
            .exec()
            .args([
                "timeout",
                "5",
                "bash",
                "-c",
                "exec 3<>/dev/tcp/10.177.0.10/17080 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3",
            ])
            .output()
            .unwrap();
        let out = common::stdout(&o);
        out.starts_with("HTTP/1.1 200") && out.ends_with("OK\n")
    }

    fn links(&self) -> Vec<String> {
        self.ip(&["-o", "link"])
            .lines()
            .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn processes_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle))
        .collect()
}

fn build(kind: &str, out: &Path) {
    let o: Output = common::imgbuild()
        .args([kind, "origin/tap", "-o", out.to_str().unwrap()])
        .arg("--boot-assets")
        .arg(common::boot_assets())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
}

/// Boots `image` in `ns` with default settings, waits for /health on the static address,
/// stops imgbuild with SIGTERM and checks that nothing it made is left.
fn answers_on_its_static_address(ns: &Netns, image: &Path, log: &testkit::ChildLog) {
    let mut child: Child = ns
        .exec()
        .arg(common::imgbuild_bin())
        .arg("boot")
        .arg(image)
        .env("IMGBUILD_PAYLOAD_DIR", common::payload_dir())
        .stdin(Stdio::null())
        .stdout(log.stdio())
        .stderr(log.stdio())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut up = false;
    while t0.elapsed() < Duration::from_secs(240) {
        if ns.health() {
            up = true;
            break;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("imgbuild boot exited ({st}):\n{}", log.text());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let during = ns.links();
    // `ip netns exec` execs imgbuild: the child's pid is imgbuild's.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let st = child.wait().unwrap();
    let text = log.text();
    assert!(up, "/health on 10.177.0.10 never answered:\n{text}");
    assert!(
        text.contains("address 10.177.0.10/24 on eth0 (static)"),
        "{text}"
    );
    assert!(text.contains("-netdev tap,id=net0,ifname=itap"), "{text}");
    assert!(during.iter().any(|l| l.starts_with("ibr")), "{during:?}");
    assert!(!st.success(), "stopped by SIGTERM: {st}");
    assert!(text.contains("imgbuild: error: interrupted"), "{text}");
    assert_eq!(ns.links(), ["lo"], "left behind:\n{text}");
    assert!(
        processes_mentioning(image).is_empty(),
        "{:?}",
        processes_mentioning(image)
    );
}

#[test]
#[ignore = "full: needs root, qemu, iproute2 and the boot assets"]
fn the_tap_microvm_answers_on_its_static_address_and_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let vm = d.path().join("tap.microvm");
    build("microvm", &vm);
    let ns = Netns::new("mvm");
    let log = testkit::ChildLog::new("tap-microvm");
    answers_on_its_static_address(&ns, &vm, &log);
}

#[test]
#[ignore = "full: needs root, qemu, iproute2 and the boot assets"]
fn the_tap_iso_answers_on_its_static_address_and_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let iso = d.path().join("tap.iso");
    build("iso", &iso);
    let ns = Netns::new("iso");
    let log = testkit::ChildLog::new("tap-iso");
    answers_on_its_static_address(&ns, &iso, &log);
}

#[test]
#[ignore = "full: needs root, iproute2 and the boot assets"]
fn without_cap_net_admin_the_tap_boot_fails_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let vm = d.path().join("tap.microvm");
    build("microvm", &vm);
    let ns = Netns::new("nocap");
    // Root without CAP_NET_ADMIN: the capability is dropped from the bounding set.
    let o = ns
        .exec()
        .args([
            "setpriv",
            "--bounding-set",
            "-net_admin",
            "--inh-caps",
            "-net_admin",
        ])
        .arg(common::imgbuild_bin())
        .arg("boot")
        .arg(&vm)
        .env("IMGBUILD_PAYLOAD_DIR", common::payload_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("imgbuild: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains("--net tap") && errors[0].contains("CAP_NET_ADMIN"),
        "{err}"
    );
    assert!(
        !err.contains("Executing: qemu"),
        "QEMU never started: {err}"
    );
    assert_eq!(ns.links(), ["lo"]);
}
