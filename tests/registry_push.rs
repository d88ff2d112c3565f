//! `imgbuild push` against Debian's real `docker-registry` (distribution 2.8) on loopback:
//! plain HTTP, and HTTPS with a private CA and htpasswd logins. The pushed image is pulled
//! and run by the real docker engine and read back by skopeo; a push after one binary
//! changed sends only the changed blobs, counted in the registry's own request log.
//!
//! Each registry gets a config written by its test, storage in a temp dir and a port below
//! the kernel's ephemeral range (so no outgoing connection can hold it) from a per-process
//! counter; a port another process holds is skipped. A failing test prints the registry's
//! log. Full tier: `cargo test --test registry_push -- --include-ignored`.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

static NEXT: AtomicU16 = AtomicU16::new(0);

/// A port below the ephemeral range, distinct per test of this process and spread by pid
/// across concurrent test processes.
fn next_port() -> u16 {
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let span = low.saturating_sub(20000).max(1000);
    let base = 20000 + (std::process::id() as u16 % (span / 64)) * 64;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    assert!(n < 64, "out of test ports");
    base + n
}

struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    tls: bool,
}

impl Registry {
    /// Starts `docker-registry serve` with `extra` YAML appended under `http:` / top level.
    fn start(tls: Option<(&Path, &Path)>, htpasswd: Option<&Path>) -> Registry {
        let mut last = String::new();
        for _ in 0..8 {
            let dir = tempfile::tempdir().unwrap();
            let port = next_port();
            let mut cfg = format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            );
            if let Some((cert, key)) = tls {
                cfg.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    cert.display(),
                    key.display()
                ));
            }
            if let Some(h) = htpasswd {
                cfg.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: imgbuild-test\n    path: {}\n",
                    h.display()
                ));
            }
            let cfg_path = dir.path().join("config.yml");
            std::fs::write(&cfg_path, cfg).unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&cfg_path)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("running docker-registry (apt-get install docker-registry)");
            let mut r = Registry {
                child,
                dir,
                port,
                tls: tls.is_some(),
            };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = r.child.try_wait() {
                    break;
                }
                if r.log().contains("listening on") && TcpStream::connect(r.addr()).is_ok() {
                    return r;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            last = r.log();
            if !last.contains("address already in use") {
                panic!("docker-registry did not start on port {port}:\n{last}");
            }
        }
        panic!("docker-registry found no free port:\n{last}");
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The digests of the blob uploads the registry completed, from its request log, in the
    /// log from byte `from` on.
    fn uploaded_since(&self, from: usize) -> BTreeSet<String> {
        let log = self.log();
        let mut out = BTreeSet::new();
        for line in log[from.min(log.len())..].lines() {
            if !(line.contains("response completed")
                && line.contains("http.request.method=PUT")
                && line.contains("/blobs/uploads/"))
            {
                continue;
            }
            if let Some(i) = line.find("digest=sha256") {
                let d: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '%' || *c == ':')
                    .collect();
                out.insert(d.replace("%3A", ":"));
            }
        }
        out
    }

    fn skopeo_args(&self) -> Vec<String> {
        if self.tls {
            vec![
                format!("--cert-dir={}", self.dir.path().join("certs.d").display()),
                "--creds=tester:right-password".into(),
            ]
        } else {
            vec!["--tls-verify=false".into()]
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- docker-registry log ---\n{}", self.log());
        }
    }
}

fn ok(o: Output, what: &str, reg: &Registry) -> String {
    assert!(
        o.status.success(),
        "{what}: {}{}\n--- registry log ---\n{}",
        common::stdout(&o),
        common::stderr(&o),
        reg.log()
    );
    common::stdout(&o)
}

fn cmd(prog: &str, args: &[&str]) -> Output {
    Command::new(prog).args(args).output().expect(prog)
}

fn build_tar(dir: &Path, cache: &Path, extra: &[&str]) -> PathBuf {
    let tar = dir.join("origin.tar");
    let mut args = vec![
        "container",
        "origin/default",
        "--compression",
        "gzip",
        "-o",
        tar.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = common::imgbuild()
        .args(&args)
        .env("IMGBUILD_CACHE", cache)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    tar
}

fn push(reg: &Registry, args: &[&str], cache: &Path, password: Option<&str>) -> Output {
    let mut c = common::imgbuild();
    c.arg("push")
        .args(args)
        .arg("--json")
        .env("IMGBUILD_CACHE", cache);
    c.env("DOCKER_CONFIG", reg.dir.path().join("docker-config"));
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(p) = password {
        writeln!(child.stdin.take().unwrap(), "{p}").unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

/// (manifest, config) raw JSON of the image in a local tar, through skopeo.
fn local_raw(tar: &Path) -> (Value, Value) {
    let t = format!("oci-archive:{}", tar.display());
    let m = cmd("skopeo", &["inspect", "--raw", &t]);
    let c = cmd("skopeo", &["inspect", "--config", "--raw", &t]);
    assert!(
        m.status.success() && c.status.success(),
        "{}",
        common::stderr(&m)
    );
    (
        serde_json::from_slice(&m.stdout).unwrap(),
        serde_json::from_slice(&c.stdout).unwrap(),
    )
}

fn remote_raw(reg: &Registry, reference: &str) -> (Value, Value) {
    let t = format!("docker://{}/{reference}", reg.addr());
    let mut a: Vec<String> = vec!["inspect".into(), "--raw".into()];
    a.extend(reg.skopeo_args());
    a.push(t.clone());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let m = ok(cmd("skopeo", &a), "skopeo inspect --raw", reg);
    let mut a: Vec<String> = vec!["inspect".into(), "--config".into(), "--raw".into()];
    a.extend(reg.skopeo_args());
    a.push(t);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let c = ok(cmd("skopeo", &a), "skopeo inspect --config", reg);
    (
        serde_json::from_str(&m).unwrap(),
        serde_json::from_str(&c).unwrap(),
    )
}

fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// A copy of hls-origin with bytes appended: still the same program, a different file.
fn changed_origin(dir: &Path) -> PathBuf {
    let mut b = std::fs::read(common::payload_dir().join("hls-origin")).unwrap();
    b.extend_from_slice(b"\0imgbuild-test: one binary changed\0");
    let p = dir.join("hls-origin");
    std::fs::write(&p, b).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn wait_healthy(name: &str) {
    let start = Instant::now();
    loop {
        let o = cmd(
            "docker",
            &[
                "inspect",
                "-f",
                "{{.State.Health.Status}}/{{.State.Status}}",
                name,
            ],
        );
        let h = common::stdout(&o).trim().to_string();
        if h.starts_with("healthy") {
            return;
        }
        if start.elapsed() > Duration::from_secs(90) || h.ends_with("exited") {
            let logs = cmd("docker", &["logs", "--tail", "30", name]);
            panic!(
                "{name} not healthy: {h}\n{}{}",
                common::stdout(&logs),
                common::stderr(&logs)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Removes a docker container and image when dropped.
struct DockerCleanup {
    container: String,
    image: String,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let _ = cmd("docker", &["rm", "-f", &self.container]);
        let _ = cmd("docker", &["rmi", "-f", &self.image]);
    }
}

#[test]
#[ignore = "full: needs docker-registry, docker, skopeo"]
fn plain_registry_push_pull_run_and_push_only_what_changed() {
    let reg = Registry::start(None, None);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let tar = build_tar(tmp.path(), &cache, &[]);
    let target = format!("{}/hls-origin:default", reg.addr());

    // A tar: everything is new, the manifest goes last.
    let o = push(&reg, &[tar.to_str().unwrap(), &target], &cache, None);
    let s: Value = serde_json::from_str(&ok(o, "push of the tar", &reg)).unwrap();
    let (lm, lc) = local_raw(&tar);
    assert!(s["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["action"] == "uploaded"));
    assert_eq!(
        s["blobs"].as_array().unwrap().len(),
        layer_digests(&lm).len() + 1
    );
    // The manifest goes last: after every upload of the image's blobs (layers and config),
    // in the registry's own log. (The SBOM referrer's blobs follow the image manifest.)
    let mut image_blobs: BTreeSet<String> = layer_digests(&lm)
        .into_iter()
        .map(|d| d.replace(':', "%3A"))
        .collect();
    image_blobs.insert(lm["config"]["digest"].as_str().unwrap().replace(':', "%3A"));
    let log = reg.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("response completed") && l.contains("http.request.method=PUT"))
        .collect();
    let uploads: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            l.contains("/blobs/uploads/")
                && image_blobs
                    .iter()
                    .any(|d| l.contains(&format!("digest={d}")))
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        uploads.len(),
        image_blobs.len(),
        "uploads in the log: {lines:#?}"
    );
    let manifest = lines
        .iter()
        .position(|l| l.contains("/v2/hls-origin/manifests/default"))
        .expect("no manifest put in the registry log");
    assert!(
        uploads.iter().all(|&u| u < manifest),
        "the manifest was put before a blob"
    );
    // The SBOM is attached as a referrer; registry 2.8 has no referrers API, so it is
    // listed under the sha256-<hex> tag; its document is the SBOM in the tar.
    let referrer = check_referrer(&reg, &s);
    let doc = blob(&reg, referrer["layers"][0]["digest"].as_str().unwrap());
    let o = common::run(&["sbom", tar.to_str().unwrap()]);
    assert_eq!(
        doc, o.stdout,
        "the referrer's document is not the image's SBOM"
    );

    // skopeo sees in the registry exactly the tar's manifest, config and layers.
    let (rm, rc) = remote_raw(&reg, "hls-origin:default");
    assert_eq!(rm, lm, "the pushed manifest differs from the tar's");
    assert_eq!(rc, lc, "the pushed config differs from the tar's");
    assert_eq!(layer_digests(&rm), layer_digests(&lm));

    // Another repository of the same registry: every blob is mounted, none uploaded.
    let before = reg.log().len();
    let copy = format!("{}/hls-origin-copy:default", reg.addr());
    let o = push(
        &reg,
        &[tar.to_str().unwrap(), &copy, "--mount-from", "hls-origin"],
        &cache,
        None,
    );
    let m: Value = serde_json::from_str(&ok(o, "push with --mount-from", &reg)).unwrap();
    for b in m["blobs"].as_array().unwrap() {
        assert_eq!(b["action"], "mounted", "{m}");
    }
    let log = reg.log()[before..].to_string();
    assert!(
        log.contains("mount=sha256"),
        "no mount request in the registry log"
    );
    // Chunked uploads (PATCH with Content-Range, then PUT) give the same image.
    let before = reg.log().len();
    let chunked = format!("{}/hls-origin-chunked:default", reg.addr());
    let o = push(
        &reg,
        &[tar.to_str().unwrap(), &chunked, "--chunk-size", "1000000"],
        &cache,
        None,
    );
    ok(o, "chunked push", &reg);
    assert!(
        reg.log()[before..].contains("\"PATCH /v2/hls-origin-chunked/blobs/uploads/"),
        "no PATCH in the registry log"
    );
    let (cm, cc) = remote_raw(&reg, "hls-origin-chunked:default");
    assert_eq!((cm, cc), (lm.clone(), lc.clone()));

    // The real docker engine pulls and runs it: healthy.
    let name = format!("imgbuild-test-push-{}", std::process::id());
    let _cleanup = DockerCleanup {
        container: name.clone(),
        image: target.clone(),
    };
    ok(cmd("docker", &["pull", &target]), "docker pull", &reg);
    ok(
        cmd("docker", &["run", "-d", "--name", &name, &target]),
        "docker run",
        &reg,
    );
    wait_healthy(&name);

    // The profile pushed from the build: same bytes, nothing to upload.
    let before = reg.log().len();
    let o = push(&reg, &["origin/default", &target], &cache, None);
    let s: Value = serde_json::from_str(&ok(o, "push of the profile", &reg)).unwrap();
    assert!(
        reg.uploaded_since(before).is_empty(),
        "an unchanged image uploaded {:?}",
        reg.uploaded_since(before)
    );
    assert!(s["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["action"] == "exists"));

    // `container --push` is the same push: nothing new to send.
    let before = reg.log().len();
    let o = common::imgbuild()
        .args([
            "container",
            "origin/default",
            "--compression",
            "gzip",
            "--json",
            "--timings",
            "--push",
            &target,
        ])
        .env("IMGBUILD_CACHE", &cache)
        .env("DOCKER_CONFIG", reg.dir.path().join("docker-config"))
        .output()
        .unwrap();
    // --timings: the build's stages and the push, on stderr beside the push's JSON.
    let err = common::stderr(&o);
    let stages = common::timing_stages(&err);
    let s: Value = serde_json::from_str(&ok(o, "container --push", &reg)).unwrap();
    assert_eq!(
        stages,
        [
            "resolve",
            "sbom",
            "tree",
            "elf-check",
            "plan",
            "layers",
            "config",
            "push",
            "total"
        ],
        "{err}"
    );
    assert!(reg.uploaded_since(before).is_empty());
    assert_eq!(
        s["digest"],
        format!("sha256:{}", sha256_hex(&cmd_raw(&reg)))
    );

    // One binary changed: its layer, the SBOM's layer (it holds the binary's sha256) and the
    // config go up, nothing else.
    let bin = changed_origin(tmp.path());
    let before = reg.log().len();
    let o = push(
        &reg,
        &[
            "origin/default",
            &target,
            "--binary",
            &format!("hls-origin={}", bin.display()),
        ],
        &cache,
        None,
    );
    let s: Value = serde_json::from_str(&ok(o, "push after one binary changed", &reg)).unwrap();
    let (rm2, _) = remote_raw(&reg, "hls-origin:default");
    let plan = common::run(&["container", "origin/default", "--dry-run"]);
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let names: Vec<&str> = plan["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    let new_layers = layer_digests(&rm2);
    let old_layers = layer_digests(&lm);
    let changed: Vec<&str> = names
        .iter()
        .zip(new_layers.iter().zip(&old_layers))
        .filter(|(_, (n, o))| n != o)
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(changed, ["payload hls-origin", "sbom"]);
    let old: BTreeSet<String> = old_layers.into_iter().collect();
    let mut expect: BTreeSet<String> = new_layers
        .into_iter()
        .filter(|d| !old.contains(d))
        .collect();
    expect.insert(rm2["config"]["digest"].as_str().unwrap().to_string());
    // Besides the image: the new SBOM document, the one blob of its referrer artifact.
    let referrer = check_referrer(&reg, &s);
    let mut with_referrer = expect.clone();
    with_referrer.insert(
        referrer["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    assert_eq!(
        reg.uploaded_since(before),
        with_referrer,
        "the registry log shows other uploads than the changed layers, the config and the SBOM referrer's document"
    );
    let uploaded: BTreeSet<String> = s["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["action"] == "uploaded")
        .map(|b| b["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(uploaded, expect);
    assert_eq!(
        s["digest"],
        format!("sha256:{}", sha256_hex(&cmd_raw(&reg)))
    );
}

#[test]
#[ignore = "full: needs docker-registry, skopeo, curl"]
fn a_re_push_asks_only_about_blobs_the_tag_does_not_list_and_resends_one_deleted_since() {
    let reg = Registry::start(None, None);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let tar = build_tar(tmp.path(), &cache, &[]);
    let tar = tar.to_str().unwrap();
    let target = format!("{}/hls-origin:default", reg.addr());
    ok(
        push(&reg, &[tar, &target], &cache, None),
        "first push",
        &reg,
    );
    let (lm, lc) = local_raw(Path::new(tar));

    // Unchanged: the tag's manifest lists every layer and the config, so only the SBOM
    // referrer's two blobs are asked about, and nothing goes up.
    let before = reg.log().len();
    let s: Value = serde_json::from_str(&ok(
        push(&reg, &[tar, &target], &cache, None),
        "re-push",
        &reg,
    ))
    .unwrap();
    let heads = reg.log()[before..]
        .lines()
        .filter(|l| l.contains("response completed") && l.contains("http.request.method=HEAD"))
        .count();
    assert_eq!(heads, 2, "HEADs of a re-push:\n{}", &reg.log()[before..]);
    assert!(reg.uploaded_since(before).is_empty());
    assert!(s["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["action"] == "exists"));

    // A layer deleted from the repository since: the registry refuses the manifest
    // (MANIFEST_BLOB_UNKNOWN); the push then checks what the tag listed and sends that one.
    let gone = layer_digests(&lm)[0].clone();
    let o = cmd(
        "curl",
        &[
            "-fsS",
            "-X",
            "DELETE",
            &format!("http://{}/v2/hls-origin/blobs/{gone}", reg.addr()),
        ],
    );
    assert!(o.status.success(), "curl DELETE: {}", common::stderr(&o));
    let before = reg.log().len();
    let s: Value = serde_json::from_str(&ok(
        push(&reg, &[tar, &target], &cache, None),
        "push after a blob was deleted",
        &reg,
    ))
    .unwrap();
    assert_eq!(reg.uploaded_since(before), BTreeSet::from([gone.clone()]));
    for b in s["blobs"].as_array().unwrap() {
        let want = if b["digest"] == gone.as_str() {
            "uploaded"
        } else {
            "exists"
        };
        assert_eq!(b["action"], want, "{b}");
    }
    assert_eq!(remote_raw(&reg, "hls-origin:default"), (lm, lc));
}

/// A blob of the plain registry, fetched with curl.
fn blob(reg: &Registry, digest: &str) -> Vec<u8> {
    let o = cmd(
        "curl",
        &[
            "-fsS",
            &format!("http://{}/v2/hls-origin/blobs/{digest}", reg.addr()),
        ],
    );
    assert!(o.status.success(), "curl: {}", common::stderr(&o));
    o.stdout
}

/// Checks, with skopeo, that the push summary's SBOM referrer is listed for the image under
/// the tag fallback and points at it; returns the referrer's manifest.
fn check_referrer(reg: &Registry, summary: &Value) -> Value {
    let r = &summary["sbom_referrer"];
    assert_eq!(r["found_via"], "tag", "{summary}");
    assert_eq!(r["artifact_type"], "application/spdx+json");
    let image = summary["digest"].as_str().unwrap();
    let tag = image.replacen(':', "-", 1);
    let raw = |reference: &str| -> Value {
        let mut a: Vec<String> = vec!["inspect".into(), "--raw".into()];
        a.extend(reg.skopeo_args());
        a.push(format!("docker://{}/hls-origin{reference}", reg.addr()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        serde_json::from_str(&ok(
            cmd("skopeo", &a),
            "skopeo inspect of the referrer",
            reg,
        ))
        .unwrap()
    };
    let index = raw(&format!(":{tag}"));
    assert!(
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["digest"] == r["digest"] && m["artifactType"] == "application/spdx+json"),
        "the referrer is not in the {tag} index: {index}"
    );
    let m = raw(&format!("@{}", r["digest"].as_str().unwrap()));
    assert_eq!(m["subject"]["digest"], image);
    assert_eq!(m["artifactType"], "application/spdx+json");
    m
}

fn cmd_raw(reg: &Registry) -> Vec<u8> {
    let mut a: Vec<String> = vec!["inspect".into(), "--raw".into()];
    a.extend(reg.skopeo_args());
    a.push(format!("docker://{}/hls-origin:default", reg.addr()));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = cmd("skopeo", &a);
    assert!(o.status.success());
    o.stdout
}

fn sha256_hex(b: &[u8]) -> String {
    let o = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b)?;
            c.wait_with_output()
        })
        .unwrap();
    common::stdout(&o)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A CA, a server certificate for 127.0.0.1 signed by it, and an htpasswd file.
fn tls_material(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            common::stderr(&o)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=imgbuild test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
    let h = Command::new("htpasswd")
        .args(["-Bbn", "tester", "right-password"])
        .output()
        .expect("htpasswd (apt-get install apache2-utils)");
    assert!(h.status.success());
    std::fs::write(dir.join("htpasswd"), &h.stdout).unwrap();
    (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
        dir.join("htpasswd"),
    )
}

#[test]
#[ignore = "full: needs docker-registry, skopeo, openssl, htpasswd"]
fn tls_htpasswd_registry_push_and_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key, htpasswd) = tls_material(tmp.path());
    let reg = Registry::start(Some((&cert, &key)), Some(&htpasswd));
    // skopeo trusts the CA through a cert dir of its own.
    let cd = reg.dir.path().join("certs.d");
    std::fs::create_dir_all(&cd).unwrap();
    std::fs::copy(&ca, cd.join("ca.crt")).unwrap();
    let cache = tmp.path().join("cache");
    let tar = build_tar(tmp.path(), &cache, &[]);
    let target = format!("{}/hls-origin:default", reg.addr());
    let ca_s = ca.to_str().unwrap();
    let t = tar.to_str().unwrap();

    // Loopback implies plain HTTP unless --ca-file asks for TLS.
    let good = push(
        &reg,
        &[
            t,
            &target,
            "--ca-file",
            ca_s,
            "--username",
            "tester",
            "--password-stdin",
        ],
        &cache,
        Some("right-password"),
    );
    let one_line = |o: &Output| {
        let e = common::stderr(o);
        assert_eq!(e.trim_end().lines().count(), 1, "not one line: {e}");
        e
    };
    if !good.status.success() {
        panic!(
            "push to the TLS registry failed: {}\n{}",
            common::stderr(&good),
            reg.log()
        );
    }
    let s: Value = serde_json::from_slice(&good.stdout).unwrap();
    let (lm, lc) = local_raw(&tar);
    let (rm, rc) = remote_raw(&reg, "hls-origin:default");
    assert_eq!(rm, lm);
    assert_eq!(rc, lc);
    assert!(s["digest"].as_str().unwrap().starts_with("sha256:"));

    // A wrong password: one line naming the 401 and the registry's message, exit 1.
    let bad = push(
        &reg,
        &[
            t,
            &target,
            "--ca-file",
            ca_s,
            "--username",
            "tester",
            "--password-stdin",
        ],
        &cache,
        Some("wrong-password"),
    );
    assert_eq!(bad.status.code(), Some(1), "{}", common::stderr(&bad));
    let e = one_line(&bad);
    assert!(e.contains("401") && e.contains("UNAUTHORIZED"), "{e}");
    assert!(!e.contains("wrong-password"), "the password leaked: {e}");

    // Another CA: a TLS failure with the reason, one line, exit 1.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (other_ca, ..) = tls_material(&other);
    let o = push(
        &reg,
        &[
            t,
            &target,
            "--ca-file",
            other_ca.to_str().unwrap(),
            "--username",
            "tester",
            "--password-stdin",
        ],
        &cache,
        Some("right-password"),
    );
    assert_eq!(o.status.code(), Some(1));
    let e = one_line(&o);
    assert!(e.contains("TLS failure: invalid peer certificate"), "{e}");

    // No CA at all: loopback means plain HTTP, which this HTTPS registry refuses.
    let o = push(&reg, &[t, &target], &cache, None);
    assert_eq!(o.status.code(), Some(1));
    let e = one_line(&o);
    assert!(e.contains("HTTPS") && e.contains("--ca-file"), "{e}");

    // Credentials from a Docker config (auths) instead of stdin.
    let dc = reg.dir.path().join("docker-config");
    std::fs::create_dir_all(&dc).unwrap();
    let auth = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(b"tester:right-password")?;
            c.wait_with_output()
        })
        .unwrap();
    std::fs::write(
        dc.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            reg.addr(),
            common::stdout(&auth).trim()
        ),
    )
    .unwrap();
    let o = push(&reg, &[t, &target, "--ca-file", ca_s], &cache, None);
    ok(o, "push with the Docker config's credentials", &reg);

    // A credential helper named by the Docker config (credHelpers) wins over auths: the
    // helper protocol is `docker-credential-NAME get`, the registry on stdin, JSON out.
    let helper_dir = tmp.path().join("helper");
    std::fs::create_dir_all(&helper_dir).unwrap();
    let helper = helper_dir.join("docker-credential-imgbuildtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread host\n[ \"$host\" = \"{}\" ] || exit 1\necho '{{\"ServerURL\":\"'$host'\",\"Username\":\"tester\",\"Secret\":\"right-password\"}}'\n",
            reg.addr()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dc.join("config.json"),
        format!(
            r#"{{"auths":{{"{0}":{{"auth":"dGVzdGVyOndyb25n"}}}},"credHelpers":{{"{0}":"imgbuildtest"}}}}"#,
            reg.addr()
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        helper_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = common::imgbuild()
        .args(["push", t, &target, "--ca-file", ca_s])
        .env("IMGBUILD_CACHE", &cache)
        .env("DOCKER_CONFIG", &dc)
        .env("PATH", path)
        .output()
        .unwrap();
    ok(o, "push with a credential helper", &reg);
}

#[test]
fn unreachable_registries_fail_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let tar = build_tar(tmp.path(), &cache, &[]);
    let t = tar.to_str().unwrap();
    let run = |args: &[&str]| {
        let o = common::imgbuild()
            .arg("push")
            .args(args)
            .env("IMGBUILD_CACHE", &cache)
            .env("DOCKER_CONFIG", tmp.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let e = common::stderr(&o);
        assert_eq!(e.trim_end().lines().count(), 1, "not one line: {e}");
        (o.status.code(), e)
    };
    // Port 1 on loopback: nothing listens there.
    let (code, e) = run(&[t, "127.0.0.1:1/x:y"]);
    assert_eq!(code, Some(1));
    assert!(e.contains("connection refused"), "{e}");
    let (code, e) = run(&[t, "registry.invalid:5000/x:y"]);
    assert_eq!(code, Some(1));
    assert!(e.contains("unknown host"), "{e}");
    let (code, e) = run(&[t, "127.0.0.1:1/Upper"]);
    assert_eq!(code, Some(2));
    assert!(e.contains("repository name"), "{e}");
    let (code, e) = run(&["no/such/thing.tar", "127.0.0.1:1/x"]);
    assert_eq!(code, Some(2), "{e}");
    let (code, e) = run(&[t, "127.0.0.1:1/x", "--username", "u", "--password-stdin"]);
    assert_eq!(code, Some(2));
    assert!(e.contains("stdin is empty"), "{e}");
}
