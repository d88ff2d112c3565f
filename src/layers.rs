//! Layer groups: `layers/<name>.toml` says which rootfs files and directories go together
//! into an image, in what order. Profiles name groups in `image.layers`. This module parses
//! a group (with the line of every file it names, so `check` can point at a missing one).
//!
//! ```toml
//! description = "…"
//! [[copy]]            # copy a file or a directory tree from the root tree
//! from = "rootfs/common"
//! to = "/"
//! [[dir]]             # an empty directory with a mode
//! path = "/tmp"
//! mode = "1777"
//! [[symlink]]
//! path = "/bin/sh"
//! target = "busybox"
//! ```

use serde::Deserialize;
use toml::Spanned;

use crate::profile::{line_col, toml_error, ProfileError};
use crate::root::Root;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerGroupDoc {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub copy: Vec<Copy>,
    #[serde(default)]
    pub dir: Vec<Dir>,
    #[serde(default)]
    pub symlink: Vec<Symlink>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Copy {
    pub from: Spanned<String>,
    #[serde(default = "slash")]
    pub to: String,
}

fn slash() -> String {
    "/".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dir {
    pub path: String,
    pub mode: Spanned<String>,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Symlink {
    pub path: String,
    pub target: String,
}

/// A parsed layer group with where it came from.
#[derive(Debug)]
pub struct LayerGroup {
    pub name: String,
    pub file: String,
    pub doc: LayerGroupDoc,
}

/// Names of the layer groups in `layers/`.
pub fn group_names(root: &Root) -> Result<Vec<String>, ProfileError> {
    Ok(root
        .files_under("layers")?
        .into_iter()
        .filter_map(|f| {
            f.rel
                .strip_prefix("layers/")?
                .strip_suffix(".toml")
                .filter(|s| !s.contains('/'))
                .map(str::to_string)
        })
        .collect())
}

/// Loads `layers/<name>.toml` and checks that every file it names exists and every mode
/// is octal. Errors carry the file and line.
pub fn load(root: &Root, name: &str) -> Result<LayerGroup, ProfileError> {
    let rel = format!("layers/{name}.toml");
    let file = root.display(&rel);
    if !root.exists(&rel) {
        let valid = group_names(root)?.join(", ");
        return Err(ProfileError::Invalid {
            file,
            msg: format!("no layer group {name:?}; groups in layers/: {valid}"),
        });
    }
    let text = root.read_text(&rel)?;
    let doc: LayerGroupDoc = toml::from_str(&text).map_err(|e| toml_error(&file, &text, &e))?;
    let at = |span: std::ops::Range<usize>, msg: String| {
        let (line, col) = line_col(&text, span.start);
        ProfileError::Located {
            file: file.clone(),
            line,
            col,
            msg,
        }
    };
    for c in &doc.copy {
        let from = c.from.get_ref();
        let escapes = from.starts_with('/') || from.split('/').any(|p| p == "..");
        if escapes {
            return Err(at(
                c.from.span(),
                format!("copy.from {from:?} leaves the root tree; name a path inside it such as rootfs/common"),
            ));
        }
        if !root.exists(from) {
            return Err(at(
                c.from.span(),
                format!("copy.from {from:?} does not exist in the root tree"),
            ));
        }
    }
    for d in &doc.dir {
        if u32::from_str_radix(d.mode.get_ref(), 8).map_or(true, |m| m > 0o7777) {
            return Err(at(
                d.mode.span(),
                format!(
                    "dir.mode {:?} is not an octal mode such as \"0755\"",
                    d.mode.get_ref()
                ),
            ));
        }
    }
    Ok(LayerGroup {
        name: name.to_string(),
        file,
        doc,
    })
}
