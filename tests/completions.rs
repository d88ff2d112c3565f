//! Shell completions, tested in the real shells: bash (its completion function driven
//! through COMP_WORDS), fish (`complete -C`), and zsh (an interactive zsh in tmux, Tab
//! pressed). Each asserts that profile names from profiles/ complete.

mod common;
use common::*;
use std::process::Command;

fn script(shell: &str) -> tempfile::NamedTempFile {
    let o = run(&["completions", shell]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), &o.stdout).unwrap();
    f
}

/// A PATH with imgbuild first.
fn path_with_imgbuild() -> String {
    format!(
        "{}:{}",
        imgbuild_bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn bash_completes_profile_names() {
    assert!(have("bash"));
    let f = script("bash");
    let prog = format!(
        "source {}; COMP_WORDS=(imgbuild profiles show origin/4); COMP_CWORD=3; COMP_LINE='imgbuild profiles show origin/4'; COMP_POINT=${{#COMP_LINE}}; _imgbuild imgbuild origin/4 show; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        f.path().display()
    );
    let o = Command::new("bash").args(["-c", &prog]).output().unwrap();
    let out = stdout(&o);
    assert!(
        out.lines().any(|l| l == "origin/4k-abr"),
        "bash offered:\n{out}\n{}",
        stderr(&o)
    );
    // `up` completes kinds then bare profile names.
    let prog = format!(
        "source {}; COMP_WORDS=(imgbuild up origin gen); COMP_CWORD=3; _imgbuild imgbuild gen origin; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        f.path().display()
    );
    let o = Command::new("bash").args(["-c", &prog]).output().unwrap();
    assert!(
        stdout(&o).lines().any(|l| l == "gentle"),
        "bash offered:\n{}",
        stdout(&o)
    );
}

#[test]
#[ignore = "full: needs fish"]
fn fish_completes_profile_names() {
    let f = script("fish");
    let o = Command::new("fish")
        .env("PATH", path_with_imgbuild())
        .args([
            "--no-config",
            "-c",
            &format!(
                "source {}; complete -C'imgbuild container swarm/'",
                f.path().display()
            ),
        ])
        .output()
        .expect("fish is installed by the full test tier");
    let out = stdout(&o);
    for p in ["swarm/burst", "swarm/extreme", "swarm/gentle"] {
        assert!(
            out.lines().any(|l| l.split('\t').next() == Some(p)),
            "fish offered:\n{out}\n{}",
            stderr(&o)
        );
    }
    assert!(
        !out.contains("origin/"),
        "fish offered origin profiles for swarm/: {out}"
    );
}

#[test]
#[ignore = "full: needs zsh and tmux"]
fn zsh_completes_profile_names() {
    let f = script("zsh");
    let home = tempfile::tempdir().unwrap();
    let compdir = home.path().join("comp");
    std::fs::create_dir_all(&compdir).unwrap();
    std::fs::copy(f.path(), compdir.join("_imgbuild")).unwrap();
    std::fs::write(
        home.path().join(".zshrc"),
        format!(
            "fpath=({} $fpath)\nautoload -U compinit && compinit -u -d {}/.zcompdump\nPS1='READY> '\n",
            compdir.display(),
            home.path().display()
        ),
    )
    .unwrap();
    let session = format!("imgbuild-zsh-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(args)
            .output()
            .expect("tmux is installed by the full test tier")
    };
    let st = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "200",
        "-y",
        "50",
        &format!(
            "env -i HOME={} ZDOTDIR={} PATH={} TERM=xterm zsh -i",
            home.path().display(),
            home.path().display(),
            path_with_imgbuild()
        ),
    ]);
    assert!(st.status.success(), "{}", stderr(&st));
    let capture = || stdout(&tmux(&["capture-pane", "-p", "-t", &session]));
    let wait_for = |needle: &str| {
        for _ in 0..100 {
            if capture().contains(needle) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    };
    assert!(wait_for("READY>"), "zsh did not start:\n{}", capture());
    tmux(&[
        "send-keys",
        "-t",
        &session,
        "imgbuild profiles show origin/4",
        "Tab",
    ]);
    let ok = wait_for("origin/4k-abr");
    let screen = capture();
    tmux(&["kill-session", "-t", &session]);
    assert!(ok, "zsh did not complete origin/4k-abr:\n{screen}");
}
