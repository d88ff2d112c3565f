//! A real Nix closure (built offline by `fixtures/make-closures`) packaged into the origin
//! image: it loads into Docker and a program from the closure runs from its store path, with
//! its shebang interpreter, symlinks and cross-path hard links intact. Full tier:
//! `cargo test -- --ignored` (needs nix-bin and docker).

mod common;

use std::process::Command;

use serde_json::Value;

struct Image(&'static str);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", self.0]).output();
    }
}

#[test]
#[ignore = "full: needs nix and docker"]
fn a_real_nix_closure_is_packaged_loaded_and_a_program_from_it_runs() {
    let o = Command::new(common::repo().join("fixtures/make-closures"))
        .output()
        .unwrap();
    assert!(o.status.success(), "make-closures: {}", common::stderr(&o));
    let cache = common::repo().join("fixtures/.cache/small");
    let top = std::fs::read_to_string(cache.join("top"))
        .unwrap()
        .trim()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    for input in ["path-info.json", "closure-info"] {
        let tar = dir.path().join(format!("{input}.tar"));
        let o = common::imgbuild()
            .args([
                "container",
                "origin/default",
                "--no-cache",
                "--json",
                "--closure",
            ])
            .arg(cache.join(input))
            .arg("-o")
            .arg(&tar)
            .output()
            .unwrap();
        assert!(o.status.success(), "{input}: {}", common::stderr(&o));
        let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
        let store_layers: Vec<&Value> = summary["layers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["name"].as_str().unwrap().starts_with("store"))
            .collect();
        let store_paths = std::fs::read_to_string(cache.join("store-paths.txt")).unwrap();
        let placed: usize = store_layers
            .iter()
            .map(|l| l["contents"].as_array().unwrap().len())
            .sum();
        assert_eq!(
            placed,
            store_paths.lines().count(),
            "{input}: every store path in a layer"
        );
        let v = common::run(&["inspect", tar.to_str().unwrap(), "--verify"]);
        assert!(v.status.success(), "{}", common::stdout(&v));

        let _image = Image("hls-origin:default");
        let load = Command::new("docker")
            .args(["load", "-i", tar.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(load.status.success(), "{}", common::stderr(&load));
        let run = Command::new("docker")
            .args([
                "run",
                "--rm",
                "--entrypoint",
                &format!("{top}/bin/hello"),
                "hls-origin:default",
            ])
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", common::stderr(&run));
        assert!(
            common::stdout(&run).contains("hello from the imgbuild fixture closure"),
            "{}",
            common::stdout(&run)
        );
    }
}
