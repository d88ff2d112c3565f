//! `imgbuild inspect --verify` against image archives built by hand: every digest, diff_id
//! and size is right, and exactly one thing is wrong (an entry escaping the root, a hard link
//! out of it, a size that lies) — verify must fail naming it, or pass when nothing is wrong
//! (a file whose size is only in a PAX record, as for files past 8 GiB). Also malformed
//! archives: one-line errors, no panics (crash inputs found by fuzzing live here too).

mod common;

use std::path::Path;

use imgbuild::oci::tar::{self as itar, EntryType, Header};
use sha2::{Digest, Sha256};

fn sha(b: &[u8]) -> String {
    format!(
        "sha256:{}",
        Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

fn hdr<'a>(name: &'a [u8], link: &'a [u8], kind: EntryType, size: u64) -> Header<'a> {
    Header {
        name,
        link,
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        size,
        mtime: 1,
        dev: (0, 0),
    }
}

/// A tar of (header, data) pairs, ended properly.
fn tar_of(entries: &[(Header, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (h, data) in entries {
        itar::header_bytes(h, &mut out);
        out.extend_from_slice(data);
        out.resize(out.len() + itar::padding(data.len() as u64), 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// A complete, self-consistent docker-archive holding `layers` (uncompressed tars).
fn image_of(layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:01Z",
        "config": {"User": "1000:1000", "Entrypoint": ["/bin/x"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": layers.iter().map(|_| serde_json::json!({"created_by": "test"})).collect::<Vec<_>>(),
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(&config), "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": sha(l), "size": l.len()})).collect::<Vec<_>>(),
    }))
    .unwrap();
    let blob = |d: &str| format!("blobs/sha256/{}", &d["sha256:".len()..]);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": sha(&manifest), "size": manifest.len(),
                       "annotations": {"io.containerd.image.name": "docker.io/library/t:t"}}],
    }))
    .unwrap();
    let docker = serde_json::to_vec(&serde_json::json!([{
        "Config": blob(&sha(&config)),
        "RepoTags": ["t:t"],
        "Layers": layers.iter().map(|l| blob(&sha(l))).collect::<Vec<_>>(),
    }]))
    .unwrap();
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            "oci-layout".into(),
            b"{\"imageLayoutVersion\":\"1.0.0\"}".to_vec(),
        ),
        ("index.json".into(), index),
        ("manifest.json".into(), docker),
        (blob(&sha(&config)), config.clone()),
        (blob(&sha(&manifest)), manifest.clone()),
    ];
    for l in layers {
        files.push((blob(&sha(l)), l.clone()));
    }
    let dirs = ["blobs/", "blobs/sha256/"];
    let mut entries: Vec<(Header, &[u8])> = dirs
        .iter()
        .map(|d| (hdr(d.as_bytes(), b"", EntryType::Dir, 0), &b""[..]))
        .collect();
    for (n, b) in &files {
        entries.push((
            hdr(n.as_bytes(), b"", EntryType::File, b.len() as u64),
            b.as_slice(),
        ));
    }
    tar_of(&entries)
}

fn verify(bytes: &[u8]) -> std::process::Output {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("image.tar");
    std::fs::write(&p, bytes).unwrap();
    common::run(&["inspect", "--verify", p.to_str().unwrap()])
}

fn assert_verify_fails(bytes: &[u8], mentions: &[&str]) {
    let o = verify(bytes);
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(1), "verify should fail: {err}");
    let line = err.trim_end();
    assert_eq!(line.lines().count(), 1, "one line: {err}");
    for m in mentions {
        assert!(line.contains(m), "should mention {m:?}: {line}");
    }
}

fn good_layer() -> Vec<u8> {
    tar_of(&[
        (hdr(b"etc/", b"", EntryType::Dir, 0), b""),
        (hdr(b"etc/hostname", b"", EntryType::File, 4), b"box\n"),
    ])
}

#[test]
fn a_hand_built_image_verifies() {
    let o = verify(&image_of(&[good_layer()]));
    assert!(o.status.success(), "{}", common::stderr(&o));
}

#[test]
fn verify_fails_naming_an_entry_that_escapes_the_root() {
    for evil in [
        &b"../escape"[..],
        b"etc/../../escape",
        b"/etc/abs",
        b"./../escape",
    ] {
        let layer = tar_of(&[
            (hdr(b"etc/", b"", EntryType::Dir, 0), b""),
            (hdr(evil, b"", EntryType::File, 3), b"bad"),
        ]);
        let shown = String::from_utf8_lossy(evil).into_owned();
        assert_verify_fails(
            &image_of(&[good_layer(), layer]),
            &[
                "verification failed",
                &shown,
                "escapes the image root",
                "layer 2",
            ],
        );
    }
}

#[test]
fn verify_fails_naming_a_long_pax_name_that_escapes() {
    // Too long for ustar: the name is in a PAX record, and that is what must be checked.
    let evil = format!("{}/../../../escape", "d".repeat(120));
    let layer = tar_of(&[(hdr(evil.as_bytes(), b"", EntryType::File, 1), b"x")]);
    assert_verify_fails(&image_of(&[layer]), &[&evil, "escapes the image root"]);
}

#[test]
fn verify_fails_naming_a_hard_link_out_of_the_root() {
    let layer = tar_of(&[(
        hdr(
            b"etc/shadow-copy",
            b"../../etc/shadow",
            EntryType::HardLink,
            0,
        ),
        b"",
    )]);
    assert_verify_fails(
        &image_of(&[layer]),
        &[
            "etc/shadow-copy",
            "../../etc/shadow",
            "escapes the image root",
        ],
    );
}

#[test]
fn verify_passes_a_file_whose_size_is_only_in_a_pax_record() {
    // What the writer emits past 8 GiB: the ustar size field cannot hold it, a PAX `size`
    // record does. Here with 5 bytes, the ustar field saying 0.
    let mut pax = Vec::new();
    // "%d size=5\n" where the length counts itself: 10 bytes.
    let rec = b"10 size=5\n".to_vec();
    let mut ph = hdr(b"././@PaxHeader", b"", EntryType::File, rec.len() as u64);
    ph.mode = 0o644;
    let mut blk = Vec::new();
    itar::header_bytes(&ph, &mut blk);
    blk[156] = b'x';
    blk[148..156].copy_from_slice(b"        ");
    let sum: u32 = blk.iter().map(|&b| b as u32).sum();
    blk[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    pax.extend_from_slice(&blk);
    pax.extend_from_slice(&rec);
    pax.resize(pax.len() + itar::padding(rec.len() as u64), 0);
    itar::header_bytes(&hdr(b"big", b"", EntryType::File, 0), &mut pax);
    pax.extend_from_slice(b"12345");
    pax.resize(pax.len() + itar::padding(5), 0);
    pax.extend_from_slice(&[0u8; 1024]);
    let o = verify(&image_of(&[pax]));
    assert!(
        o.status.success(),
        "a PAX size must be honoured: {}{}",
        common::stdout(&o),
        common::stderr(&o)
    );
}

#[test]
fn verify_fails_when_a_layer_lies_about_its_diff_id_or_size() {
    let bytes = image_of(&[good_layer()]);
    // Same length, one byte of the layer's file content changed: digest and diff_id fail.
    let pos = bytes
        .windows(4)
        .position(|w| w == b"box\n")
        .expect("layer content in the archive");
    let mut bad = bytes.clone();
    bad[pos] = b'f';
    assert_verify_fails(&bad, &["verification failed", "digest"]);
}

#[test]
fn malformed_archives_fail_in_one_line_without_panicking() {
    let good = image_of(&[good_layer()]);
    let d = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("garbage", b"this is not a tar archive at all".repeat(40)),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("one block", good[..512].to_vec()),
        ("no end marker", good[..good.len() - 1024].to_vec()),
    ];
    for (what, bytes) in cases {
        let p = d.path().join(what);
        std::fs::write(&p, &bytes).unwrap();
        let o = common::run(&["inspect", "--verify", p.to_str().unwrap()]);
        let err = common::stderr(&o);
        assert!(
            matches!(o.status.code(), Some(1) | Some(2)),
            "{what}: exit {:?}: {err}",
            o.status.code()
        );
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
        assert!(
            err.contains(p.to_str().unwrap()) || err.contains("manifest"),
            "{what}: names the input: {err}"
        );
    }
}

/// The partition-table reader behind `inspect FILE.iso`, on every ISO regression input and
/// on a GPT header whose entry LBA and size are as large as the fields allow (fuzzing found
/// `lba * 512 + i * size` overflowing).
#[test]
fn iso_partition_parser_survives_corrupt_gpt_headers() {
    let mut head = vec![0u8; 2048];
    head[510] = 0x55;
    head[511] = 0xAA;
    head[512..520].copy_from_slice(b"EFI PART");
    for (lba, n, size) in [
        (u64::MAX, 4u32, 128u32),
        (1, 128, u32::MAX),
        (u64::MAX / 512, 2, 0),
    ] {
        head[512 + 72..512 + 80].copy_from_slice(&lba.to_le_bytes());
        head[512 + 80..512 + 84].copy_from_slice(&n.to_le_bytes());
        head[512 + 84..512 + 88].copy_from_slice(&size.to_le_bytes());
        let p = imgbuild::iso::inspect::partitions(&head);
        assert!(p.gpt.is_empty(), "{lba} {n} {size}");
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    for e in std::fs::read_dir(dir).into_iter().flatten() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("inspect_iso-")
        {
            let _ = imgbuild::iso::inspect::partitions(&std::fs::read(&p).unwrap());
        }
    }
}

/// Regression inputs found by `cargo fuzz` (fuzz/ targets inspect_tar and inspect_iso; the
/// `swarm_*` ones belong to hls-swarm):
/// each must give a clean error, never a panic.
#[test]
fn fuzz_regressions_give_clean_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .expect("fuzz/regressions exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none_or(|x| x != "md"))
        // hls-swarm's inputs are fed to its own parsers by crates/hls-swarm/tests/fuzz_regressions.rs.
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("swarm_")
        })
        .collect();
    inputs.sort();
    // The GPT overflow found by the inspect_iso target must be among them (an ignore rule
    // once kept it out of the repository and this test passed on nothing).
    assert!(
        inputs.iter().any(|p| p
            .to_string_lossy()
            .contains("inspect_iso-gpt-entry-offset-overflow")),
        "fuzz/regressions lacks its inputs: {inputs:?}"
    );
    for p in inputs {
        let o = common::run(&["inspect", "--verify", p.to_str().unwrap()]);
        let err = common::stderr(&o);
        assert!(!err.contains("panicked"), "{}: {err}", p.display());
        assert!(
            o.status.code().is_some_and(|c| c <= 2),
            "{}: {:?} {err}",
            p.display(),
            o.status
        );
    }
}
