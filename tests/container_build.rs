//! `imgbuild container` and `imgbuild inspect` without a container engine: reproducible
//! bytes, compression independent of threads, the layer cache, atomic output, exit codes.
//! Most tests package a small stand-in payload (`--binary`) so they run in a second; the
//! real payloads are exercised by tests/container_docker.rs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// A tiny "static executable": an ELF header without program headers (so neither an
/// interpreter nor libraries) followed by `size` bytes of compressible data.
fn fake_payload(dir: &Path, name: &str, size: usize, seed: u32) -> PathBuf {
    let mut b = vec![0u8; 64];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2; // 64-bit
    b[5] = 1; // little-endian
    b[6] = 1;
    b[16] = 2; // ET_EXEC
    b[18] = 62; // x86-64
    b[20] = 1;
    b[32] = 64; // e_phoff
    b[52] = 64; // e_ehsize
    b[54] = 56; // e_phentsize, e_phnum = 0
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    while b.len() < size {
        x = x.wrapping_mul(1103515245).wrapping_add(12345);
        let w = ["live ", "segment ", "playlist ", "viewer "][(x >> 16) as usize % 4];
        b.extend_from_slice(w.as_bytes());
        b.push((x >> 24) as u8);
    }
    let p = dir.join(name);
    std::fs::write(&p, &b).unwrap();
    p
}

struct Build {
    dir: tempfile::TempDir,
    payload: PathBuf,
}

impl Build {
    fn new() -> Build {
        let dir = tempfile::tempdir().unwrap();
        let payload = fake_payload(dir.path(), "hls-origin", 3 << 20, 1);
        Build { dir, payload }
    }

    fn cmd(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut c = common::imgbuild();
        c.current_dir(cwd)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("IMGBUILD_CACHE", self.dir.path().join("cache"))
            .arg("container")
            .arg("--binary")
            .arg(format!("hls-origin={}", self.payload.display()))
            .args(args);
        c
    }

    fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        let o = self.cmd(cwd, args).output().unwrap();
        assert!(
            o.status.success(),
            "imgbuild container {args:?}: {}",
            common::stderr(&o)
        );
        o
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn inspect_json(file: &Path, verify: bool) -> (Output, Value) {
    let mut args = vec!["inspect", file.to_str().unwrap(), "--json"];
    if verify {
        args.push("--verify");
    }
    let o = common::run(&args);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (o, v)
}

#[test]
fn the_same_inputs_give_byte_identical_tars_from_any_directory_with_or_without_cache() {
    let b = Build::new();
    let (cwd1, cwd2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    b.run(cwd1.path(), &[]);
    b.run(cwd2.path(), &["--no-cache"]);
    // A third build comes entirely from the cache.
    b.run(cwd2.path(), &["-o", "again.tar"]);
    let default_name = "hls-origin-default.tar";
    let one = std::fs::read(cwd1.path().join(default_name)).unwrap();
    assert_eq!(one, std::fs::read(cwd2.path().join(default_name)).unwrap());
    assert_eq!(one, std::fs::read(cwd2.path().join("again.tar")).unwrap());
}

#[test]
fn gzip_and_zstd_bytes_do_not_depend_on_the_thread_count() {
    let b = Build::new();
    for c in ["gzip", "zstd"] {
        let one = b.path(&format!("{c}-1.tar"));
        let two = b.path(&format!("{c}-2.tar"));
        b.run(
            b.dir.path(),
            &[
                "--compression",
                c,
                "--no-cache",
                "--threads",
                "1",
                "-o",
                one.to_str().unwrap(),
            ],
        );
        b.run(
            b.dir.path(),
            &[
                "--compression",
                c,
                "--no-cache",
                "--threads",
                "2",
                "-o",
                two.to_str().unwrap(),
            ],
        );
        let (o, v) = inspect_json(&one, true);
        let (_, v2) = inspect_json(&two, false);
        assert_eq!(
            v["layers"][1].to_string(),
            v2["layers"][1].to_string(),
            "{c}"
        );
        assert!(
            std::fs::read(&one).unwrap() == std::fs::read(&two).unwrap(),
            "{c}: the tars differ"
        );
        assert!(o.status.success(), "{}", common::stderr(&o));
        let mt = v["layers"][1]["media_type"].as_str().unwrap();
        assert_eq!(mt, format!("application/vnd.oci.image.layer.v1.tar+{c}"));
        // gzip is one valid stream that the system gzip reads back.
        if c == "gzip" {
            let digest = v["layers"][1]["digest"]
                .as_str()
                .unwrap()
                .replace("sha256:", "");
            let sh = format!("tar -xOf {} blobs/sha256/{digest} | gzip -t", one.display());
            assert!(Command::new("sh")
                .args(["-c", &sh])
                .status()
                .unwrap()
                .success());
        }
    }
}

/// `tar tv` of every layer, with the time column removed.
fn layer_listings(image: &Path, v: &Value) -> Vec<String> {
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let d = l["digest"].as_str().unwrap().replace("sha256:", "");
            let sh = format!(
                "tar -xOf {} blobs/sha256/{d} | tar -tv --numeric-owner --full-time",
                image.display()
            );
            let o = Command::new("sh").args(["-c", &sh]).output().unwrap();
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    // perms owner size date time name…: drop date and time.
                    format!("{} {} {} {}", f[0], f[1], f[2], f[5..].join(" "))
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

#[test]
fn source_date_epoch_changes_times_and_nothing_else() {
    let b = Build::new();
    let a_path = b.path("a.tar");
    let c_path = b.path("c.tar");
    b.run(b.dir.path(), &["-o", a_path.to_str().unwrap()]);
    b.cmd(b.dir.path(), &["-o", c_path.to_str().unwrap()])
        .env("SOURCE_DATE_EPOCH", "1")
        .status()
        .unwrap();
    let (_, a) = inspect_json(&a_path, false);
    let (_, c) = inspect_json(&c_path, false);
    assert_eq!(a["created"], "2023-11-14T22:13:20Z");
    assert_eq!(c["created"], "1970-01-01T00:00:01Z");
    assert_eq!(
        a["labels"]["org.opencontainers.image.created"],
        a["created"]
    );
    assert_eq!(
        c["labels"]["org.opencontainers.image.created"],
        c["created"]
    );
    for k in [
        "env",
        "entrypoint",
        "user",
        "exposed_ports",
        "healthcheck",
        "working_dir",
        "image",
    ] {
        assert_eq!(a[k], c[k], "{k}");
    }
    let la = a["labels"].as_object().unwrap();
    let lc = c["labels"].as_object().unwrap();
    let differing: Vec<&String> = la.keys().filter(|k| la[*k] != lc[*k]).collect();
    assert_eq!(differing, ["org.opencontainers.image.created"]);
    assert_ne!(a["config_digest"], c["config_digest"]);
    assert_eq!(layer_listings(&a_path, &a), layer_listings(&c_path, &c));
    let times = |p: &Path, v: &Value| {
        let d = v["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .replace("sha256:", "");
        let sh = format!("tar -xOf {} blobs/sha256/{d} | tar -tv --full-time --utc | awk '{{print $4\" \"$5}}' | sort -u", p.display());
        String::from_utf8(
            Command::new("sh")
                .args(["-c", &sh])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
    };
    assert_eq!(times(&a_path, &a).trim(), "2023-11-14 22:13:20");
    assert_eq!(times(&c_path, &c).trim(), "1970-01-01 00:00:01");
}

#[test]
fn inspect_verify_passes_on_a_good_tar_and_fails_on_one_flipped_byte() {
    let b = Build::new();
    let good = b.path("good.tar");
    b.run(
        b.dir.path(),
        &["-o", good.to_str().unwrap(), "--compression", "gzip"],
    );
    let (o, v) = inspect_json(&good, true);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert_eq!(v["verified"], true);
    assert_eq!(v["image"][0], "hls-origin:default");
    let contents: Vec<&str> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["contents"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["base", "payload hls-origin", "config", "sbom"]);
    let bytes = std::fs::read(&good).unwrap();
    // Flip one byte: in the middle of the payload layer, and in the config JSON.
    let config_at = bytes
        .windows(15)
        .position(|w| w == b"{\"architecture\"")
        .unwrap();
    for at in [bytes.len() / 2, config_at + 40] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x01;
        let p = b.path("bad.tar");
        std::fs::write(&p, &bad).unwrap();
        let o = common::run(&["inspect", p.to_str().unwrap(), "--verify"]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "byte {at}: {}",
            common::stdout(&o)
        );
        assert!(
            common::stdout(&o).contains("verification FAILED"),
            "{}",
            common::stdout(&o)
        );
    }
}

#[test]
fn stdout_streaming_gives_the_same_bytes_as_a_file() {
    let b = Build::new();
    let file = b.path("f.tar");
    b.run(b.dir.path(), &["-o", file.to_str().unwrap()]);
    let o = b.run(b.dir.path(), &["-o", "-"]);
    assert_eq!(o.stdout, std::fs::read(&file).unwrap());
}

/// The stages `--timings` and `--json` report for a written image, in the order they run.
const STAGES: [&str; 9] = [
    "resolve",
    "sbom",
    "tree",
    "elf-check",
    "plan",
    "layers",
    "config",
    "archive",
    "rename",
];

/// The `(stage, seconds, share)` rows of a `--timings` table in `stderr`, the total row last.
fn timing_rows(stderr: &str) -> Vec<(String, f64, f64)> {
    stderr
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [name, secs, share] if share.ends_with('%') => Some((
                    name.to_string(),
                    secs.parse().ok()?,
                    share.trim_end_matches('%').parse().ok()?,
                )),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn json_gives_the_seconds_of_every_stage_in_order_and_they_cover_the_total() {
    let b = Build::new();
    let out = b.path("j.tar");
    let o = b.run(b.dir.path(), &["--json", "-o", out.to_str().unwrap()]);
    let text = common::stdout(&o);
    let v: Value = serde_json::from_str(&text).unwrap();
    // The keys scripts read are still there.
    for k in [
        "output",
        "image",
        "format",
        "compression",
        "config_digest",
        "manifest_digest",
        "size",
        "layers",
    ] {
        assert!(!v[k].is_null(), "{k} missing: {text}");
    }
    let stages = v["stages"].as_object().expect("a stages object");
    let names: Vec<&str> = stages.keys().map(String::as_str).collect();
    let mut want = STAGES.to_vec();
    want.sort();
    assert_eq!(names, want, "{text}");
    // In the order they ran (serde_json's Value sorts keys, so read the text).
    let stages_text = &text[text.find("\"stages\":").unwrap()..];
    let at: Vec<usize> = STAGES
        .iter()
        .map(|s| stages_text.find(&format!("\"{s}\":")).unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
    let secs: Vec<f64> = STAGES
        .iter()
        .map(|s| stages[*s].as_f64().expect("seconds as a number"))
        .collect();
    assert!(secs.iter().all(|s| *s >= 0.0), "{text}");
    let total = v["total_seconds"].as_f64().unwrap();
    let sum: f64 = secs.iter().sum();
    assert!(total > 0.0 && sum <= total + 1e-9, "{sum} > {total}");
    // Only the checks between stages are left out, and each figure is truncated to the
    // millisecond.
    assert!(
        sum >= 0.8 * total - 0.001 * STAGES.len() as f64,
        "the stages cover {sum} s of {total} s: {text}"
    );
    // Writing the 3 MiB payload layer takes some time.
    assert!(stages["layers"].as_f64().unwrap() > 0.0, "{text}");
}

#[test]
fn timings_print_every_stage_on_stderr_and_change_no_byte_of_the_image() {
    let b = Build::new();
    let plain = b.path("plain.tar");
    let timed = b.path("timed.tar");
    let both = b.path("both.tar");
    b.run(b.dir.path(), &["--no-cache", "-o", plain.to_str().unwrap()]);
    let o = b.run(
        b.dir.path(),
        &["--no-cache", "--timings", "-o", timed.to_str().unwrap()],
    );
    assert!(o.stdout.is_empty(), "{}", common::stdout(&o));
    let err = common::stderr(&o);
    let rows = timing_rows(&err);
    let names: Vec<&str> = rows.iter().map(|(n, _, _)| n.as_str()).collect();
    let mut want = STAGES.to_vec();
    want.push("total");
    assert_eq!(names, want, "{err}");
    assert!(err.lines().next().unwrap().starts_with("stage"), "{err}");
    let (_, total, share) = rows.last().unwrap();
    assert_eq!(*share, 100.0);
    assert!(rows.iter().all(|(_, s, p)| *s >= 0.0 && *p >= 0.0), "{err}");
    let shares: f64 = rows[..STAGES.len()].iter().map(|(_, _, p)| p).sum();
    assert!(shares <= 100.0 + 0.05 * STAGES.len() as f64, "{err}");
    let secs: f64 = rows[..STAGES.len()].iter().map(|(_, s, _)| s).sum();
    assert!(secs <= total + 1e-9, "{err}");
    b.run(
        b.dir.path(),
        &["--timings", "--json", "-o", both.to_str().unwrap()],
    );
    let image = std::fs::read(&plain).unwrap();
    assert!(
        image == std::fs::read(&timed).unwrap(),
        "--timings changed the image"
    );
    assert!(
        image == std::fs::read(&both).unwrap(),
        "--json --timings changed the image"
    );
    // On stdout the tar is the same too, and the table still goes to stderr.
    let o = b.run(b.dir.path(), &["--timings", "-o", "-"]);
    assert!(o.stdout == image, "-o - --timings changed the image");
    let names: Vec<String> = timing_rows(&common::stderr(&o))
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(names, want);
}

#[test]
fn a_dry_run_times_the_stages_before_the_layers_and_prints_the_same_json() {
    let b = Build::new();
    let plain = b.run(b.dir.path(), &["--dry-run"]);
    let o = b.run(b.dir.path(), &["--dry-run", "--timings"]);
    assert!(
        o.stdout == plain.stdout,
        "--timings changed the dry-run JSON"
    );
    let names: Vec<String> = timing_rows(&common::stderr(&o))
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(
        names,
        ["resolve", "sbom", "tree", "elf-check", "plan", "total"],
        "{}",
        common::stderr(&o)
    );
    assert_eq!(
        std::fs::read_dir(b.dir.path()).unwrap().count(),
        1,
        "wrote nothing"
    );
}

#[test]
fn a_rebuild_after_changing_only_the_binary_rewrites_its_layer_and_the_sbom() {
    let b = Build::new();
    let summary = |o: &Output| -> Vec<(String, bool)> {
        layer_fields(o, "cached")
            .into_iter()
            .map(|(n, c)| (n, c.as_bool().unwrap()))
            .collect()
    };
    let first = summary(&b.run(b.dir.path(), &["--json", "--compression", "gzip"]));
    assert!(first.iter().all(|(_, cached)| !cached), "{first:?}");
    let second = summary(&b.run(b.dir.path(), &["--json", "--compression", "gzip"]));
    assert!(second.iter().all(|(_, cached)| *cached), "{second:?}");
    fake_payload(b.dir.path(), "hls-origin", 3 << 20, 2);
    let third = summary(&b.run(b.dir.path(), &["--json", "--compression", "gzip"]));
    let rewritten: Vec<&str> = third
        .iter()
        .filter(|(_, c)| !c)
        .map(|(n, _)| n.as_str())
        .collect();
    // The SBOM records the binary's sha256, so its small layer changes too.
    assert_eq!(rewritten, ["payload hls-origin", "sbom"]);
    let (o, _) = inspect_json(&b.dir.path().join("hls-origin-default.tar"), true);
    assert!(o.status.success(), "{}", common::stderr(&o));
}

/// Each layer's name and the value of one of its fields in the JSON summary.
/// Without `--cache-dir` or `IMGBUILD_CACHE` the layer cache is `$XDG_CACHE_HOME/imgbuild/layers`,
/// else `~/.cache/imgbuild/layers`.
#[test]
fn the_default_layer_cache_follows_xdg_cache_home_then_home() {
    let b = Build::new();
    let (xdg, home) = (b.path("xdg"), b.path("home"));
    std::fs::create_dir_all(&home).unwrap();
    for (env, cache) in [
        (
            vec![("XDG_CACHE_HOME", &xdg), ("HOME", &home)],
            xdg.join("imgbuild/layers"),
        ),
        (vec![("HOME", &home)], home.join(".cache/imgbuild/layers")),
    ] {
        let mut c = b.cmd(b.dir.path(), &["-o", "x.tar"]);
        c.env_remove("IMGBUILD_CACHE").env_remove("XDG_CACHE_HOME");
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", common::stderr(&o));
        assert!(
            cache.join("keys").read_dir().map_or(0, |d| d.count()) > 0,
            "no layer in {}",
            cache.display()
        );
    }
}

fn layer_fields(o: &Output, field: &str) -> Vec<(String, Value)> {
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["name"].as_str().unwrap().to_string(), l[field].clone()))
        .collect()
}

/// Each layer's name and where its bytes came from (`"from"` in the JSON summary).
fn layer_origins(o: &Output) -> Vec<(String, String)> {
    layer_fields(o, "from")
        .into_iter()
        .map(|(n, f)| (n, f.as_str().unwrap().to_string()))
        .collect()
}

fn all_from(layers: &[(String, String)], origin: &str) -> bool {
    layers.iter().all(|(_, f)| f == origin)
}

#[test]
fn a_plain_rebuild_keeps_or_copies_unchanged_layers_only_while_the_previous_archive_is_intact() {
    let b = Build::new();
    let out = b.path("img.tar");
    let o = out.to_str().unwrap();
    let build = |o: &str| layer_origins(&b.run(b.dir.path(), &["--json", "-o", o]));
    let first = build(o);
    assert!(all_from(&first, "new"), "{first:?}");
    let cold = std::fs::read(&out).unwrap();
    // Unchanged, the same output: the archive is updated in place, every layer stays.
    let again = build(o);
    assert!(all_from(&again, "kept"), "{again:?}");
    assert_eq!(std::fs::read(&out).unwrap(), cold);
    // The archive touched (its stamp changed): it is not trusted, the sources are read.
    let t = Command::new("touch").arg(&out).status().unwrap();
    assert!(t.success());
    let touched = build(o);
    assert!(all_from(&touched, "sources"), "{touched:?}");
    assert_eq!(std::fs::read(&out).unwrap(), cold);
    // The cache now knows the archive that build wrote.
    let again = build(o);
    assert!(all_from(&again, "kept"), "{again:?}");
    // Into another file: every layer copied out of the intact archive.
    let other = b.path("other.tar");
    let copied = build(other.to_str().unwrap());
    assert!(all_from(&copied, "previous-archive"), "{copied:?}");
    assert_eq!(std::fs::read(&other).unwrap(), cold);
    // The archive gone: the sources again, into a third file.
    std::fs::remove_file(&out).unwrap();
    std::fs::remove_file(&other).unwrap();
    let third = b.path("third.tar");
    let gone = build(third.to_str().unwrap());
    assert!(all_from(&gone, "sources"), "{gone:?}");
    assert_eq!(std::fs::read(&third).unwrap(), cold);
    // One binary changed: its layer and the SBOM are new. Here the payload is most of the
    // image, so less than half of the archive would stay where it is: a new file is written
    // and the other layers are copied out of the old one (the update in place is tested in
    // src/oci/mod.rs and measured by bench/container-vs-tar).
    fake_payload(b.dir.path(), "hls-origin", 3 << 20, 2);
    let changed = build(third.to_str().unwrap());
    let new: Vec<&str> = changed
        .iter()
        .filter(|(_, f)| f != "previous-archive")
        .map(|(n, f)| {
            assert_eq!(f, "new", "{changed:?}");
            n.as_str()
        })
        .collect();
    assert_eq!(new, ["payload hls-origin", "sbom"], "{changed:?}");
    let (v, _) = inspect_json(&third, true);
    assert!(v.status.success(), "{}", common::stderr(&v));
    // Nothing but the archive is left beside it.
    let mut names: Vec<String> = std::fs::read_dir(b.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["cache", "hls-origin", "third.tar"]);
}

#[test]
fn an_oci_dir_is_an_oci_layout_that_verifies() {
    let b = Build::new();
    let d = b.path("img.oci");
    b.run(
        b.dir.path(),
        &[
            "--format",
            "oci-dir",
            "-o",
            d.to_str().unwrap(),
            "--compression",
            "zstd",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(d.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(d.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "default"
    );
    let (o, v) = inspect_json(&d, true);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert_eq!(v["verified"], true);
}

#[test]
fn bad_input_exits_2_and_leaves_no_output() {
    let b = Build::new();
    let cwd = tempfile::tempdir().unwrap();
    type Case<'a> = (Vec<&'a str>, Option<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["origin/no-such-profile"], None, "unknown profile"),
        (vec!["--max-layers", "128"], None, "127"),
        (
            vec!["--max-layers", "2"],
            None,
            "at least 4 layers (base, 1 payload binary, config, SBOM)",
        ),
        (vec!["--binary", "nonsense"], None, "NAME=PATH"),
        (
            vec!["--binary", "hls-origin=/etc/hostname"],
            None,
            "not an ELF",
        ),
        (vec!["--binary", "hls-origin=/bin/ls"], None, "not static"),
        (
            vec![],
            Some(("SOURCE_DATE_EPOCH", "yesterday")),
            "SOURCE_DATE_EPOCH",
        ),
        (vec!["-o", "/nonexistent-dir/x.tar"], None, "does not exist"),
        (vec!["--format", "oci-dir", "-o", "-"], None, "directory"),
        (vec!["swarm/default", "--init"], None, "--init"),
    ];
    for (args, env, msg) in cases {
        let mut c = b.cmd(cwd.path(), &args);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", common::stderr(&o));
        assert!(
            common::stderr(&o).contains(msg),
            "{args:?}: {}",
            common::stderr(&o)
        );
    }
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn ctrl_c_during_a_build_leaves_nothing_behind() {
    let b = Build::new();
    let big = fake_payload(b.dir.path(), "big", 400 << 20, 3);
    let out = tempfile::tempdir().unwrap();
    let mut child = common::imgbuild()
        .current_dir(out.path())
        .args([
            "container",
            "--no-cache",
            "--compression",
            "gzip",
            "--threads",
            "1",
            "--binary",
        ])
        .arg(format!("hls-origin={}", big.display()))
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the build should still be running"
    );
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let st = child.wait().unwrap();
    assert!(!st.success());
    let left: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn dry_run_prints_the_tree_and_plan_and_writes_nothing() {
    let b = Build::new();
    let cwd = tempfile::tempdir().unwrap();
    let o = b.run(
        cwd.path(),
        &[
            "--dry-run",
            "--init",
            "--binary",
            &format!("imgbuild-init={}", b.payload.display()),
        ],
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "base",
            "payload hls-origin",
            "payload imgbuild-init",
            "config",
            "sbom"
        ]
    );
    let tree = v["tree"].as_array().unwrap();
    let get = |p: &str| {
        tree.iter()
            .find(|e| e["path"] == p)
            .unwrap_or_else(|| panic!("{p} missing"))
    };
    assert_eq!(get("/tmp")["mode"], 0o1777);
    assert_eq!(get("/bin/hls-origin")["mode"], 0o755);
    assert!(
        tree.iter()
            .all(|e| e["mode"].as_u64().unwrap() & 0o6000 == 0),
        "no setuid/setgid"
    );
    let init = get("/etc/imgbuild/init.json");
    assert_eq!(init["group"], "config");
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0);
}
