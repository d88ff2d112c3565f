//! The container tar in the other tools of the ecosystem: skopeo reads it both as a
//! docker-archive and as an oci-archive, `skopeo copy` to an OCI layout that `umoci unpack`
//! turns into exactly the files of imgbuild's Tree (modes, owners, sizes, link targets), and
//! podman loads it. Full tier: `cargo test -- --ignored`.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn ok(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().unwrap();
    assert!(o.status.success(), "{cmd} {args:?}: {}", common::stderr(&o));
    common::stdout(&o)
}

/// `--binary hls-origin=COPY`: a private copy, so a concurrent `cargo build` of the
/// workspace cannot change the payload between the build and the comparison.
fn binary_arg(dir: &Path) -> String {
    let copy = dir.join("hls-origin");
    if !copy.exists() {
        std::fs::copy(common::payload_dir().join("hls-origin"), &copy).unwrap();
    }
    format!("hls-origin={}", copy.display())
}

fn build(dir: &Path, args: &[&str]) -> std::path::PathBuf {
    let tar = dir.join("image.tar");
    let o = common::imgbuild()
        .args([
            "container",
            "origin/default",
            "--no-cache",
            "--binary",
            &binary_arg(dir),
            "-o",
        ])
        .arg(&tar)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    tar
}

/// (type, mode, uid, gid, size or link target) of every path under `root`.
fn walk(root: &Path, rel: &str, out: &mut BTreeMap<String, String>) {
    let here = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let mut names: Vec<_> = std::fs::read_dir(&here)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names {
        let r = if rel.is_empty() {
            n.to_string_lossy().into_owned()
        } else {
            format!("{rel}/{}", n.to_string_lossy())
        };
        let p = root.join(&r);
        let m = std::fs::symlink_metadata(&p).unwrap();
        let mode = m.permissions().mode() & 0o7777;
        let desc = if m.file_type().is_symlink() {
            format!(
                "symlink {}:{} -> {}",
                m.uid(),
                m.gid(),
                std::fs::read_link(&p).unwrap().display()
            )
        } else if m.is_dir() {
            format!("dir {mode:o} {}:{}", m.uid(), m.gid())
        } else {
            format!("file {mode:o} {}:{} {}", m.uid(), m.gid(), m.len())
        };
        out.insert(format!("/{r}"), desc);
        if m.is_dir() {
            walk(root, &r, out);
        }
    }
}

#[test]
#[ignore = "full: needs skopeo, umoci"]
fn skopeo_reads_both_forms_and_umoci_unpacks_exactly_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    for compression in ["none", "gzip"] {
        let tar = build(dir.path(), &["--compression", compression]);
        let t = tar.to_str().unwrap();
        for transport in ["docker-archive", "oci-archive"] {
            let v: Value =
                serde_json::from_str(&ok("skopeo", &["inspect", &format!("{transport}:{t}")]))
                    .unwrap();
            assert_eq!(v["Labels"]["hls.profile"], "default", "{transport}");
            assert_eq!(v["Os"], "linux");
        }
        let raw: Value = serde_json::from_str(&ok(
            "skopeo",
            &["inspect", "--raw", "--config", &format!("oci-archive:{t}")],
        ))
        .unwrap();
        assert_eq!(raw["config"]["Healthcheck"]["Test"][1], "/bin/hls-origin");
        let layout = dir.path().join(format!("layout-{compression}"));
        ok(
            "skopeo",
            &[
                "copy",
                "-q",
                &format!("oci-archive:{t}"),
                &format!("oci:{}:img", layout.display()),
            ],
        );
        let bundle = dir.path().join(format!("bundle-{compression}"));
        ok(
            "umoci",
            &[
                "unpack",
                "--image",
                &format!("{}:img", layout.display()),
                bundle.to_str().unwrap(),
            ],
        );
        let mut got = BTreeMap::new();
        walk(&bundle.join("rootfs"), "", &mut got);
        // The Tree, as imgbuild describes it.
        let o = common::imgbuild()
            .args([
                "container",
                "origin/default",
                "--dry-run",
                "--binary",
                &binary_arg(dir.path()),
            ])
            .output()
            .unwrap();
        let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
        let mut want = BTreeMap::new();
        for e in plan["tree"].as_array().unwrap() {
            let (uid, gid) = (e["uid"].as_u64().unwrap(), e["gid"].as_u64().unwrap());
            let mode = e["mode"].as_u64().unwrap();
            let desc = match e["type"].as_str().unwrap() {
                "dir" => format!("dir {mode:o} {uid}:{gid}"),
                "file" => format!("file {mode:o} {uid}:{gid} {}", e["size"]),
                "symlink" => format!("symlink {uid}:{gid} -> {}", e["target"].as_str().unwrap()),
                other => panic!("unexpected {other}"),
            };
            want.insert(e["path"].as_str().unwrap().to_string(), desc);
        }
        assert_eq!(got, want, "{compression}");
    }
}

#[test]
#[ignore = "full: needs podman"]
fn podman_loads_the_tar_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let tar = build(dir.path(), &["--compression", "zstd"]);
    let root = dir.path().join("podman-root");
    let run = dir.path().join("podman-run");
    let base = [
        "--root",
        root.to_str().unwrap(),
        "--runroot",
        run.to_str().unwrap(),
    ];
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["load", "-i", tar.to_str().unwrap()]);
    let out = ok("podman", &args);
    assert!(out.contains("hls-origin:default"), "{out}");
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["image", "inspect", "hls-origin:default"]);
    let v: Value = serde_json::from_str(&ok("podman", &args)).unwrap();
    assert_eq!(v[0]["Config"]["User"], "1000:1000");
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["system", "reset", "--force"]);
    let _ = Command::new("podman").args(&args).output();
}
