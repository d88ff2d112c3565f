//! The profile commands as a user sees them: `profiles list`, `profiles show`, unknown
//! names, and the README's profiles table kept in step with profiles/.

mod common;
use common::*;

#[test]
fn profiles_list_shows_all_thirteen_profiles() {
    let o = run(&["profiles", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("13 profiles"), "{out}");
    for id in [
        "origin/4k-abr",
        "origin/tap-logged",
        "swarm/extreme",
        "swarm/gentle",
    ] {
        assert!(out.contains(id), "{id} missing from:\n{out}");
    }
}

#[test]
fn profiles_list_json_parses_and_names_every_image_once() {
    let o = run(&["profiles", "list", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 13);
    let mut images: Vec<&str> = items.iter().map(|i| i["image"].as_str().unwrap()).collect();
    images.sort();
    images.dedup();
    assert_eq!(images.len(), 13, "two profiles share an image name");
    assert_eq!(items.iter().filter(|i| i["kind"] == "origin").count(), 8);
}

#[test]
fn show_4k_abr_has_five_variants_each_with_its_own_segment_size() {
    let o = run(&["profiles", "show", "origin/4k-abr"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for (rung, bytes) in [
        ("2160p", "3798000 bytes"),
        ("1080p", "1282000 bytes"),
        ("720p", "532000 bytes"),
        ("480p", "274000 bytes"),
        ("360p", "141000 bytes"),
    ] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(rung))
            .unwrap_or_else(|| panic!("{rung} missing:\n{out}"));
        assert!(line.contains(bytes), "{rung}: {line}");
    }
    let j = run(&["profiles", "show", "origin/4k-abr", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).expect("valid JSON");
    let variants = v["derived"]["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 5);
    assert_eq!(variants[0]["segment_bytes"], 3_798_000);
    assert_eq!(v["env"]["PORT"], "17080");
    assert_eq!(v["derived"]["segment_lifetime_seconds"], 30.0);
}

#[test]
fn show_swarm_prints_derived_ramp_and_resources() {
    let o = run(&["profiles", "show", "swarm/stress", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["derived"]["ramp_duration_seconds"], 10.0);
    assert_eq!(v["derived"]["ephemeral_ports"], 200);
    assert_eq!(v["env"]["CLIENTS"], "200");
    assert_eq!(v["env"]["LOG_LEVEL"], "warning");
}

#[test]
fn unknown_profile_lists_valid_ones_suggests_closest_and_exits_2() {
    let o = run(&["profiles", "show", "origin/low-latncy"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("did you mean origin/low-latency?"), "{err}");
    assert!(err.contains("swarm/burst"), "{err}");
}

#[test]
fn bad_usage_exits_2() {
    let o = run(&["profiles", "frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn readme_profiles_table_matches_profiles_dir() {
    let o = run(&["profiles", "list", "--markdown"]);
    assert!(o.status.success());
    let table = stdout(&o);
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("<!-- profiles:begin -->")
        .expect("README has the profiles:begin marker");
    let end = readme
        .find("<!-- profiles:end -->")
        .expect("README has the profiles:end marker");
    let section = readme[start..end]
        .trim_start_matches("<!-- profiles:begin -->")
        .trim();
    assert_eq!(
        section,
        table.trim(),
        "README's profiles table is stale: replace it with `imgbuild profiles list --markdown`"
    );
}

#[test]
fn works_from_any_directory_with_the_embedded_tree() {
    let dir = tempfile::tempdir().unwrap();
    let o = imgbuild()
        .current_dir(dir.path())
        .args(["profiles", "show", "swarm/default"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("CLIENTS=50"));
}
