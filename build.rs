//! Embeds profiles/, layers/ and rootfs/ into the imgbuild binary so it works from any
//! directory (`$OUT_DIR/embedded.rs`: a sorted list of (relative path, bytes, mode)), and
//! names the source revision it is built from (`IMGBUILD_BUILD_REVISION`, read by
//! src/buildenv.rs): `IMGBUILD_REVISION` at build time, else `git rev-parse --short HEAD`
//! when the build has git and a repository, else nothing (the label says `unknown`).
use std::{env, fs, os::unix::fs::PermissionsExt, path::Path, process::Command};

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String, u32)>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let meta = fs::symlink_metadata(&path).unwrap();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if meta.is_dir() {
            walk(root, &path, out);
        } else if meta.is_file() {
            out.push((
                rel,
                path.to_string_lossy().into_owned(),
                meta.permissions().mode() & 0o7777,
            ));
        }
    }
}

/// Output of `git ARGS` in `dir`, trimmed, when git runs and succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    let s = String::from_utf8(o.stdout).ok()?.trim().to_string();
    (o.status.success() && !s.is_empty()).then_some(s)
}

fn revision(manifest: &Path) {
    println!("cargo:rerun-if-env-changed=IMGBUILD_REVISION");
    let rev = match env::var("IMGBUILD_REVISION") {
        Ok(r) if !r.is_empty() => Some(r),
        _ => {
            // Built again when HEAD moves (a commit, a checkout): logs/HEAD of this worktree.
            if let Some(log) = git(manifest, &["rev-parse", "--git-path", "logs/HEAD"]) {
                println!("cargo:rerun-if-changed={}", manifest.join(log).display());
            }
            git(manifest, &["rev-parse", "--short", "HEAD"])
        }
    };
    if let Some(r) = rev {
        println!("cargo:rustc-env=IMGBUILD_BUILD_REVISION={r}");
    }
}

fn main() {
    let manifest = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).to_path_buf();
    revision(&manifest);
    let mut files = Vec::new();
    for top in ["profiles", "layers", "rootfs"] {
        let dir = manifest.join(top);
        println!("cargo:rerun-if-changed={}", dir.display());
        if dir.is_dir() {
            walk(&manifest, &dir, &mut files);
        }
    }
    let mut code = String::from("/// Files of profiles/, layers/ and rootfs/ at build time: (path, bytes, mode).\npub static FILES: &[(&str, &[u8], u32)] = &[\n");
    for (rel, abs, mode) in &files {
        code.push_str(&format!(
            "    ({rel:?}, include_bytes!({abs:?}), 0o{mode:o}),\n"
        ));
    }
    code.push_str("];\n");
    fs::write(
        Path::new(&env::var("OUT_DIR").unwrap()).join("embedded.rs"),
        code,
    )
    .unwrap();
}
