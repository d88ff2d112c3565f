//! The image's SBOM: where it is, what it lists, that it is the same bytes every time, and
//! that an independent validator (`pyspdxtools` from PyPI's spdx-tools, pinned in
//! scripts/test) accepts it. Tests with the real Nix fixture closure are full tier.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn sbom_of(args: &[&str]) -> Vec<u8> {
    let mut a = vec!["sbom"];
    a.extend_from_slice(args);
    let o = common::run(&a);
    assert!(o.status.success(), "{}", common::stderr(&o));
    o.stdout
}

fn build(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let tar = dir.join(name);
    let mut a = vec!["container", "origin/default", "-o", tar.to_str().unwrap()];
    a.extend_from_slice(extra);
    let o = common::imgbuild()
        .args(&a)
        .env("IMGBUILD_CACHE", dir.join(format!("cache-{name}")))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    tar
}

/// `pyspdxtools` (spdx-tools from PyPI): $PYSPDXTOOLS, the venv scripts/test makes, or PATH.
fn pyspdxtools() -> PathBuf {
    if let Some(p) = std::env::var_os("PYSPDXTOOLS") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(std::env::var("HOME").unwrap())
        .join(".cache/imgbuild/spdx-tools/bin/pyspdxtools");
    if venv.is_file() {
        return venv;
    }
    assert!(
        common::have("pyspdxtools"),
        "pyspdxtools not found: run scripts/test full (it installs spdx-tools) or set PYSPDXTOOLS"
    );
    PathBuf::from("pyspdxtools")
}

fn validate(doc: &[u8], dir: &Path) -> std::process::Output {
    let f = dir.join("doc.spdx.json");
    std::fs::write(&f, doc).unwrap();
    Command::new(pyspdxtools())
        .args(["-i", f.to_str().unwrap()])
        .output()
        .expect("running pyspdxtools")
}

fn fixture(kind: &str) -> PathBuf {
    let o = Command::new(common::repo().join("fixtures/make-closures"))
        .output()
        .expect("running fixtures/make-closures");
    assert!(o.status.success(), "{}", common::stderr(&o));
    common::repo().join("fixtures/.cache/small").join(kind)
}

#[test]
fn sbom_lists_the_payload_and_its_locked_crates_deterministically() {
    let a = sbom_of(&["origin/default"]);
    let b = sbom_of(&["origin/default"]);
    assert_eq!(a, b, "two SBOMs of the same inputs differ");
    let v: Value = serde_json::from_slice(&a).unwrap();
    assert_eq!(v["spdxVersion"], "SPDX-2.3");
    let pkgs = v["packages"].as_array().unwrap();
    let origin = pkgs.iter().find(|p| p["name"] == "hls-origin").unwrap();
    let sum = origin["checksums"][0]["checksumValue"].as_str().unwrap();
    let bin = std::fs::read(common::payload_dir().join("hls-origin")).unwrap();
    let o = Command::new("sha256sum")
        .arg(common::payload_dir().join("hls-origin"))
        .output()
        .unwrap();
    assert!(common::stdout(&o).starts_with(sum), "payload checksum");
    assert!(!bin.is_empty());
    // Every crate listed is at the version Cargo.lock pins.
    let lock: toml::Table = std::fs::read_to_string(common::repo().join("Cargo.lock"))
        .unwrap()
        .parse()
        .unwrap();
    let locked: std::collections::BTreeSet<(String, String)> = lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["version"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let crates: Vec<&Value> = pkgs
        .iter()
        .filter(|p| p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-Crate-"))
        .collect();
    assert!(crates.len() > 5, "hls-origin is built from more crates");
    for c in crates {
        let k = (
            c["name"].as_str().unwrap().to_string(),
            c["versionInfo"].as_str().unwrap().to_string(),
        );
        assert!(locked.contains(&k), "{k:?} is not in Cargo.lock");
    }
    let cdx: Value =
        serde_json::from_slice(&sbom_of(&["origin/default", "--format", "cyclonedx"])).unwrap();
    assert_eq!(cdx["specVersion"], "1.5");
    assert!(cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["bom-ref"] == "payload:hls-origin"));
}

#[test]
fn sbom_of_a_tar_is_the_one_in_its_own_last_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = build(tmp.path(), "a.tar", &["--compression", "gzip"]);
    let from_tar = sbom_of(&[tar.to_str().unwrap()]);
    assert_eq!(from_tar, sbom_of(&["origin/default"]));
    let o = common::run(&["container", "origin/default", "--dry-run"]);
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    let last = plan["layers"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["name"], "sbom");
    // The SBOM and its parent directories, nothing else.
    assert_eq!(
        last["paths"],
        serde_json::json!(["/etc", "/etc/imgbuild", "/etc/imgbuild/sbom.spdx.json"])
    );
    // -o writes the file; a missing directory is one line, exit 2, nothing written.
    let out = tmp.path().join("sbom.json");
    let o = common::run(&["sbom", tar.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), from_tar);
    let bad = tmp.path().join("no/such/dir/sbom.json");
    let o = common::run(&["sbom", tar.to_str().unwrap(), "-o", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(common::stderr(&o).lines().count(), 1);
    // No SBOM in the image: one line saying how to get one.
    let none = build(tmp.path(), "none.tar", &["--sbom", "none"]);
    let o = common::run(&["sbom", none.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        common::stderr(&o).contains("--sbom spdx"),
        "{}",
        common::stderr(&o)
    );
}

#[test]
#[ignore = "full: needs nix (fixtures/make-closures) and pyspdxtools (spdx-tools)"]
fn spdx_of_the_fixture_closure_validates_lists_every_path_and_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let pi = fixture("path-info.json");
    let ci = fixture("closure-info");
    let a = build(tmp.path(), "a.tar", &["--closure", pi.to_str().unwrap()]);
    let b = build(tmp.path(), "b.tar", &["--closure", pi.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "two builds of the same inputs differ"
    );
    let doc = sbom_of(&[a.to_str().unwrap()]);
    // The closureInfo form of the same closure gives the same document.
    assert_eq!(
        doc,
        sbom_of(&["origin/default", "--closure", ci.to_str().unwrap()])
    );

    let o = validate(&doc, tmp.path());
    assert!(
        o.status.success() && common::stderr(&o).trim().is_empty(),
        "pyspdxtools rejects the SBOM: {}{}",
        common::stdout(&o),
        common::stderr(&o)
    );
    // The validator does reject a broken document (so its acceptance means something).
    let mut broken: Value = serde_json::from_slice(&doc).unwrap();
    broken["relationships"][0]["relatedSpdxElement"] = "SPDXRef-Nowhere".into();
    let o = validate(&serde_json::to_vec(&broken).unwrap(), tmp.path());
    assert!(
        !o.status.success() && common::stderr(&o).contains("SPDXRef-Nowhere"),
        "pyspdxtools accepted a dangling relationship: {}",
        common::stderr(&o)
    );

    let v: Value = serde_json::from_slice(&doc).unwrap();
    let listed: std::collections::BTreeSet<String> = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            p["sourceInfo"]
                .as_str()?
                .strip_prefix("Nix store path ")
                .map(str::to_string)
        })
        .collect();
    let paths = std::fs::read_to_string(fixture("store-paths.txt")).unwrap();
    let want: std::collections::BTreeSet<String> = paths
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(listed, want, "the SBOM's store paths are not the closure's");
    // Each store path has its NAR hash and its references as DEPENDS_ON.
    for p in v["packages"].as_array().unwrap() {
        if p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-Nix-") {
            assert_eq!(p["checksums"][0]["algorithm"], "SHA256", "{p}");
        }
    }
    assert!(v["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["relationshipType"] == "DEPENDS_ON"));
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(b);
    format!(
        "sha256:{}",
        h.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

#[test]
fn inspect_summarises_the_sbom_and_verify_catches_one_that_does_not_match_the_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a.oci");
    let b = tmp.path().join("b.oci");
    let bin = tmp.path().join("hls-origin");
    let mut bytes = std::fs::read(common::payload_dir().join("hls-origin")).unwrap();
    bytes.extend_from_slice(b"\0another build\0");
    std::fs::write(&bin, bytes).unwrap();
    for (dir, extra) in [
        (&a, None),
        (&b, Some(format!("hls-origin={}", bin.display()))),
    ] {
        let mut args = vec![
            "container".to_string(),
            "origin/default".into(),
            "--format".into(),
            "oci-dir".into(),
            "-o".into(),
            dir.display().to_string(),
        ];
        if let Some(e) = extra {
            args.extend(["--binary".to_string(), e]);
        }
        let o = common::imgbuild()
            .args(&args)
            .env("IMGBUILD_CACHE", tmp.path().join("cache"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", common::stderr(&o));
    }
    let o = common::run(&["inspect", a.to_str().unwrap(), "--verify", "--json"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["sbom"]["format"], "SPDX-2.3");
    assert_eq!(v["sbom"]["path"], "/etc/imgbuild/sbom.spdx.json");
    assert_eq!(v["sbom"]["payloads"], serde_json::json!(["hls-origin"]));

    // Give image A the SBOM layer of image B (whose binary differs), with every digest,
    // diff_id and size made consistent again: only the SBOM check can notice.
    let read = |dir: &Path, d: &str| std::fs::read(blob_path(dir, d)).unwrap();
    let index: Value =
        serde_json::from_slice(&std::fs::read(a.join("index.json")).unwrap()).unwrap();
    let md = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut m: Value = serde_json::from_slice(&read(&a, &md)).unwrap();
    let ib: Value = serde_json::from_slice(&std::fs::read(b.join("index.json")).unwrap()).unwrap();
    let mb: Value =
        serde_json::from_slice(&read(&b, ib["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let cb: Value =
        serde_json::from_slice(&read(&b, mb["config"]["digest"].as_str().unwrap())).unwrap();
    let last = m["layers"].as_array().unwrap().len() - 1;
    let sbom_b = mb["layers"][last].clone();
    std::fs::copy(
        blob_path(&b, sbom_b["digest"].as_str().unwrap()),
        blob_path(&a, sbom_b["digest"].as_str().unwrap()),
    )
    .unwrap();
    let mut c: Value =
        serde_json::from_slice(&read(&a, m["config"]["digest"].as_str().unwrap())).unwrap();
    c["rootfs"]["diff_ids"][last] = cb["rootfs"]["diff_ids"][last].clone();
    let cbytes = serde_json::to_vec(&c).unwrap();
    std::fs::write(blob_path(&a, &sha256(&cbytes)), &cbytes).unwrap();
    m["layers"][last] = sbom_b;
    m["config"]["digest"] = sha256(&cbytes).into();
    m["config"]["size"] = cbytes.len().into();
    let mbytes = serde_json::to_vec(&m).unwrap();
    std::fs::write(blob_path(&a, &sha256(&mbytes)), &mbytes).unwrap();
    let mut index = index;
    index["manifests"][0]["digest"] = sha256(&mbytes).into();
    index["manifests"][0]["size"] = mbytes.len().into();
    std::fs::write(a.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();

    let o = common::run(&["inspect", a.to_str().unwrap(), "--verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", common::stdout(&o));
    let out = common::stdout(&o) + &common::stderr(&o);
    assert!(
        out.contains("the SBOM gives /bin/hls-origin sha256"),
        "--verify did not catch the SBOM mismatch:\n{out}"
    );
    assert!(!out.contains("uncompressed digest"), "{out}");
}
