//! The Justfile at the top of the repository: `just --list` names every recipe, and the
//! `main-container` recipe builds the origin image and loads it into a real docker engine.
//! `just` is not a Debian package: it is installed from crates.io with `cargo install just
//! --locked` into ~/.cache/imgbuild/just (scripts/test starts that in the background for the
//! full tier and says so in `IMGBUILD_JUST_INSTALL_PID`; this test waits for it, and installs
//! `just` itself when it is still missing). Full tier.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// The pinned `just`, installed when missing.
fn just() -> PathBuf {
    let root = PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/imgbuild/just");
    let bin = root.join("bin/just");
    // scripts/test's background install: wait for it rather than race it for the same root.
    if let Ok(pid) = std::env::var("IMGBUILD_JUST_INSTALL_PID") {
        let t0 = std::time::Instant::now();
        while !bin.exists()
            && std::path::Path::new(&format!("/proc/{pid}")).exists()
            && t0.elapsed() < std::time::Duration::from_secs(1800)
        {
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
    }
    if !bin.exists() {
        let st = Command::new(env!("CARGO"))
            .args([
                "install",
                "just",
                "--version",
                "1.53.0",
                "--locked",
                "--root",
            ])
            .arg(&root)
            .current_dir("/")
            .status()
            .expect("running cargo install just");
        assert!(st.success(), "cargo install just failed");
    }
    bin
}

#[test]
#[ignore = "full: needs just (cargo install) and docker"]
fn just_lists_the_recipes_and_main_container_loads_the_origin_image() {
    let just = just();
    let o = Command::new(&just)
        .arg("--list")
        .current_dir(common::repo())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    let list = common::stdout(&o);
    for recipe in [
        "enhanced-origin",
        "main-container",
        "iso",
        "microvm",
        "up",
        "test",
    ] {
        assert!(
            list.lines()
                .any(|l| l.split_whitespace().next() == Some(recipe)),
            "just --list lacks {recipe}: {list}"
        );
    }
    // `just` alone lists them too.
    let o = Command::new(&just)
        .current_dir(common::repo())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(common::stdout(&o).contains("main-container"));

    // The recipe with this test's imgbuild, and a root whose origin image has a name of its
    // own, so the load replaces no image anyone else uses.
    let root = common::temp_root();
    let name = format!("imgbuild-just{}-hls-origin", std::process::id());
    let base = root.path().join("profiles/origin/_base.toml");
    let text = std::fs::read_to_string(&base).unwrap();
    assert!(text.contains("name = \"hls-origin\""), "{text}");
    std::fs::write(
        &base,
        text.replace("name = \"hls-origin\"", &format!("name = \"{name}\"")),
    )
    .unwrap();
    let image = format!("{name}:default");
    let o = Command::new(&just)
        .arg("main-container")
        .current_dir(common::repo())
        .env("IMGBUILD", common::imgbuild_bin())
        .env("IMGBUILD_PAYLOAD_DIR", common::payload_dir())
        .env("IMGBUILD_ROOT", root.path())
        .env("IMGBUILD_CACHE", root.path().join("cache"))
        .output()
        .unwrap();
    let inspect = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Config.User}}", &image])
        .output()
        .unwrap();
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    assert!(
        o.status.success(),
        "just main-container: {}{}",
        common::stdout(&o),
        common::stderr(&o)
    );
    assert!(
        common::stdout(&o).contains(&format!("Loaded image: {image}")),
        "{}",
        common::stdout(&o)
    );
    assert!(inspect.status.success(), "{}", common::stderr(&inspect));
    assert_eq!(common::stdout(&inspect).trim(), "1000:1000");
}
