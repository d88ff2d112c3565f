//! The layering docs/ARCHITECTURE.md describes, checked over the source of src/: no writer
//! (src/oci, src/iso, src/microvm.rs) imports the profile module, error.rs imports no command
//! module, and no command imports cli.rs. Fast tier: it only reads files.

use std::path::{Path, PathBuf};

/// The writer packages: they take typed inputs and never see a profile.
const WRITERS: &[&str] = &["src/oci", "src/iso", "src/microvm.rs"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every .rs file under `rel` (a file or a directory), sorted.
fn rust_files(rel: &str) -> Vec<PathBuf> {
    let root = repo().join(rel);
    if root.is_file() {
        return vec![root];
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(!out.is_empty(), "{rel}: no Rust files");
    out
}

/// The code of a file without comments (`//` to the end of the line), so a doc comment
/// naming a module is not an import.
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lines of `path` that refer to module `module` of the crate (`crate::module`,
/// `use crate::{…, module, …}` and `super::…::module` are the ways to).
fn uses(path: &Path, module: &str) -> Vec<String> {
    let text = code(path);
    let needle = format!("crate::{module}");
    let braced = |l: &str| {
        l.contains("crate::{")
            && l.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|w| w == module)
    };
    text.lines()
        .filter(|l| {
            l.match_indices(&needle).any(|(i, _)| {
                !l[i + needle.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
            }) || braced(l)
        })
        .map(|l| format!("{}: {}", path.display(), l.trim()))
        .collect()
}

#[test]
fn no_writer_imports_the_profile() {
    let mut found = Vec::new();
    for w in WRITERS {
        for f in rust_files(w) {
            found.extend(uses(&f, "profile"));
            // The model modules that are a profile in other words.
            for m in ["rootfs", "init_json", "vm", "commands"] {
                found.extend(uses(&f, m));
            }
        }
    }
    assert!(
        found.is_empty(),
        "writers importing the profile:\n{}",
        found.join("\n")
    );
}

#[test]
fn error_rs_imports_no_command_and_no_module() {
    let path = repo().join("src/error.rs");
    let text = code(&path);
    let refs: Vec<&str> = text.lines().filter(|l| l.contains("crate::")).collect();
    assert!(refs.is_empty(), "src/error.rs refers to modules: {refs:?}");
}

#[test]
fn commands_do_not_import_the_cli() {
    let mut found = Vec::new();
    for f in rust_files("src/commands") {
        found.extend(uses(&f, "cli"));
    }
    for f in rust_files("src") {
        let rel = f.strip_prefix(repo()).unwrap().display().to_string();
        if rel != "src/cli.rs" && rel != "src/lib.rs" {
            found.extend(uses(&f, "cli"));
        }
    }
    assert!(found.is_empty(), "imports of cli.rs:\n{}", found.join("\n"));
}

/// The checks would pass on nothing: make sure they see an import where there is one.
#[test]
fn the_scanner_finds_imports() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.rs");
    std::fs::write(
        &f,
        "use crate::profile::Profile;\nuse crate::{tree, profile};\n// crate::profile in a comment\nuse crate::profiles;\n",
    )
    .unwrap();
    assert_eq!(uses(&f, "profile").len(), 2, "{:?}", uses(&f, "profile"));
    assert!(!uses(&repo().join("src/commands/iso.rs"), "profile").is_empty());
}
