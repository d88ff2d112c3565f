//! `imgbuild check`, the gatekeeper: passes on the repository; on broken copies (`--root`)
//! fails naming file and line for each kind of breakage; and a new profile file is picked
//! up everywhere with no code change.

mod common;
use common::*;
use std::fs;
use std::path::Path;

fn check(root: &Path) -> std::process::Output {
    imgbuild()
        .args(["--root", root.to_str().unwrap(), "check"])
        .output()
        .unwrap()
}

#[test]
fn check_passes_on_the_repository() {
    let o = run(&["check"]);
    assert!(o.status.success(), "check failed:\n{}", stderr(&o));
    assert!(stderr(&o).contains("13 profiles"), "{}", stderr(&o));
}

#[test]
fn check_passes_on_an_unmodified_copy() {
    let t = temp_root();
    let o = check(t.path());
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Writes `text` into a temp copy at `rel`, runs check, and asserts the failure names
/// `file:line` and contains `needle`.
fn assert_broken(rel: &str, text: &str, line: usize, needle: &str) {
    let t = temp_root();
    fs::write(t.path().join(rel), text).unwrap();
    let o = check(t.path());
    let err = stderr(&o);
    assert_ne!(
        o.status.code(),
        Some(0),
        "check passed on a broken tree:\n{err}"
    );
    let want = format!("{}:{line}:", t.path().join(rel).display());
    assert!(err.contains(&want), "expected {want} in:\n{err}");
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
}

#[test]
fn unknown_key_is_named_with_file_and_line() {
    assert_broken(
        "profiles/origin/default.toml",
        "description = \"x\"\n\n[origin]\nsegment_duraton = 2\n",
        4,
        "unknown field `segment_duraton`",
    );
}

#[test]
fn wrong_type_is_named_with_file_and_line() {
    assert_broken(
        "profiles/swarm/gentle.toml",
        "description = \"x\"\n[swarm]\nclients = \"many\"\n",
        3,
        "invalid type",
    );
}

#[test]
fn toml_syntax_error_gives_line_and_column() {
    let t = temp_root();
    let rel = "profiles/origin/debug.toml";
    fs::write(t.path().join(rel), "description = \"x\"\n[origin\n").unwrap();
    let o = imgbuild()
        .args([
            "--root",
            t.path().to_str().unwrap(),
            "profiles",
            "show",
            "origin/debug",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{}:2:", t.path().join(rel).display())),
        "{err}"
    );
}

#[test]
fn two_images_with_the_same_name_and_tag_are_named() {
    assert_broken(
        "profiles/origin/logged.toml",
        "description = \"x\"\n\n[image]\ntag = \"debug\"\n",
        4,
        "image hls-origin:debug is also built by origin/debug",
    );
}

#[test]
fn layer_group_naming_a_missing_file_is_named() {
    assert_broken(
        "layers/base.toml",
        "description = \"x\"\n\n[[copy]]\nfrom = \"rootfs/nope\"\nto = \"/\"\n",
        4,
        "rootfs/nope",
    );
}

#[test]
fn a_new_profile_file_appears_in_list_completions_and_check() {
    let t = temp_root();
    fs::write(
        t.path().join("profiles/origin/night-owl.toml"),
        "description = \"Test profile added by a user\"\n[origin]\nlist_size = 42\n",
    )
    .unwrap();
    let root = t.path().to_str().unwrap();
    let list = imgbuild()
        .args(["--root", root, "profiles", "list"])
        .output()
        .unwrap();
    assert!(
        stdout(&list).contains("origin/night-owl"),
        "{}",
        stdout(&list)
    );
    assert!(stdout(&list).contains("14 profiles"));
    let show = imgbuild()
        .args([
            "--root",
            root,
            "profiles",
            "show",
            "origin/night-owl",
            "--json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(v["env"]["LIST_SIZE"], "42");
    let comp = imgbuild()
        .args(["--root", root, "completions", "bash"])
        .output()
        .unwrap();
    assert!(stdout(&comp).contains("origin/night-owl"));
    let c = check(t.path());
    assert!(c.status.success(), "{}", stderr(&c));
    assert!(stderr(&c).contains("14 profiles"), "{}", stderr(&c));
    // An invalid value in the new profile is caught by check too.
    fs::write(
        t.path().join("profiles/origin/night-owl.toml"),
        "[origin]\nfps = 0\n",
    )
    .unwrap();
    let c = check(t.path());
    assert_ne!(c.status.code(), Some(0));
    assert!(stderr(&c).contains("night-owl.toml"), "{}", stderr(&c));
}

#[test]
fn a_base_that_leaves_a_setting_to_the_builtin_default_fails() {
    let t = temp_root();
    let p = t.path().join("profiles/swarm/_base.toml");
    let text = fs::read_to_string(&p)
        .unwrap()
        .replace("segment_retries = 3\n", "");
    fs::write(&p, text).unwrap();
    let o = check(t.path());
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("swarm.segment_retries"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn payload_binaries_are_static_with_no_elf_interpreter() {
    let dir = payload_dir();
    for b in ["hls-origin", "hls-swarm", "imgbuild-init"] {
        let bytes = fs::read(dir.join(b)).unwrap();
        assert!(bytes.starts_with(b"\x7fELF"), "{b} is not ELF");
        // Independent check with the system's readelf when present; our own parser otherwise.
        let out = std::process::Command::new("readelf")
            .args(["-l", "-d"])
            .arg(dir.join(b))
            .output();
        if let Some(out) = out.ok().filter(|o| o.status.success()) {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(!text.contains("INTERP"), "{b} has a program interpreter");
            assert!(!text.contains("(NEEDED)"), "{b} needs shared libraries");
        } else {
            panic!("readelf (binutils) is required for this test");
        }
    }
}

/// Writes each (file, text) into one temp copy and runs check on it.
fn check_with(files: &[(&str, &str)]) -> (std::process::Output, tempfile::TempDir) {
    let t = temp_root();
    for (rel, text) in files {
        fs::write(t.path().join(rel), text).unwrap();
    }
    (check(t.path()), t)
}

/// The findings of a check run, one per line, with `file:line:` at the start of each.
fn lines_naming(o: &std::process::Output, file: &Path, line: usize) -> Vec<String> {
    let want = format!("{}:{line}:", file.display());
    stderr(o)
        .lines()
        .filter(|l| l.starts_with(&want))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_bad_resolution_is_named_at_its_line_and_exits_2() {
    let rel = "profiles/origin/debug.toml";
    let (o, t) = check_with(&[(
        rel,
        "description = \"x\"\n\n[origin]\nvariants = [\n  { name = \"a\", resolution = \"1920x1080\", video = \"5000k\", maxrate = \"5500k\", bufsize = \"10000k\", audio = \"128k\" },\n  { name = \"b\", resolution = \"1280x\", video = \"2000k\", maxrate = \"2200k\", bufsize = \"4000k\", audio = \"128k\" },\n]\n",
    )]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let found = lines_naming(&o, &t.path().join(rel), 6);
    assert_eq!(found.len(), 1, "{}", stderr(&o));
    assert!(
        found[0].contains("resolution \"1280x\" is not WxH"),
        "{found:?}"
    );
}

#[test]
fn zero_clients_is_named_at_its_line_and_exits_2() {
    let rel = "profiles/swarm/gentle.toml";
    let (o, t) = check_with(&[(
        rel,
        "description = \"x\"\n[swarm]\nramp_rate = 2\nclients = 0\n",
    )]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let found = lines_naming(&o, &t.path().join(rel), 4);
    assert_eq!(found.len(), 1, "{}", stderr(&o));
    assert!(found[0].contains("swarm.clients"), "{found:?}");
}

#[test]
fn a_bad_value_set_in_the_base_is_named_in_the_base() {
    let base = "profiles/swarm/_base.toml";
    let t = temp_root();
    let p = t.path().join(base);
    let text = fs::read_to_string(&p).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("variant ="))
        .unwrap()
        + 1;
    fs::write(&p, text.replace("variant = \"all\"", "variant = \"every\"")).unwrap();
    let o = check(t.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // Every swarm profile inherits it; each names the base's line.
    let found = lines_naming(&o, &p, line);
    assert!(!found.is_empty(), "{}", stderr(&o));
    assert!(found[0].contains("swarm.variant \"every\""), "{found:?}");
}

#[test]
fn a_layer_group_that_does_not_exist_is_named_at_the_profile_line() {
    let rel = "profiles/origin/logged.toml";
    let (o, t) = check_with(&[(
        rel,
        "description = \"x\"\n\n[image]\nlayers = [\"base\", \"extras\"]\n",
    )]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let found = lines_naming(&o, &t.path().join(rel), 4);
    assert_eq!(found.len(), 1, "{}", stderr(&o));
    assert!(found[0].contains("\"extras\""), "{found:?}");
    assert!(found[0].contains("layers/extras.toml"), "{found:?}");
}

#[test]
fn a_profile_may_not_set_a_label_imgbuild_sets() {
    for label in ["org.opencontainers.image.version", "hls.profile"] {
        let rel = "profiles/origin/logged.toml";
        let text = format!("description = \"x\"\n\n[image.labels]\n\"{label}\" = \"9\"\n");
        let (o, t) = check_with(&[(rel, &text)]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let found = lines_naming(&o, &t.path().join(rel), 4);
        assert_eq!(found.len(), 1, "{label}: {}", stderr(&o));
        assert!(
            found[0].contains(label) && found[0].contains("reserved"),
            "{found:?}"
        );
        // The build refuses it the same way, in one line.
        let b = imgbuild()
            .args([
                "--root",
                t.path().to_str().unwrap(),
                "container",
                "origin/logged",
                "--dry-run",
            ])
            .output()
            .unwrap();
        assert_eq!(b.status.code(), Some(2), "{}", stderr(&b));
        let err = stderr(&b);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("logged.toml:4:") && err.contains("reserved"),
            "{err}"
        );
    }
    // Labels of its own are fine.
    let (o, _t) = check_with(&[(
        "profiles/origin/logged.toml",
        "description = \"x\"\n\n[image.labels]\n\"com.example.team\" = \"video\"\n",
    )]);
    assert!(o.status.success(), "{}", stderr(&o));
}
