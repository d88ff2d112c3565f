//! `imgbuild check`, the gatekeeper: every profile parses and validates, every layer group
//! a profile names exists and every file it names exists, every payload binary exists and is
//! static, no two images share a name and tag, and each kind's `_base.toml` sets every
//! setting (so all profiles of a kind carry the same, complete set of fields). Reports every
//! failure (not just the first) as `file:line: message`: semantic ones (a resolution `1280x`,
//! zero clients, a reserved label, a layer group that does not exist) at the line of the
//! profile or `_base.toml` that sets the key. Any finding is bad input (exit 2).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::profile::{self, Kind, ProfileError};
use crate::root::Root;
use crate::{layers, payload};

/// One failed check.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
            (Some(l), None) => write!(f, "{}:{l}: {}", self.file, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

fn finding(e: &ProfileError) -> Finding {
    match e {
        ProfileError::Located {
            file,
            line,
            col,
            msg,
        } => Finding {
            file: file.clone(),
            line: Some(*line),
            column: Some(*col),
            message: msg.clone(),
        },
        ProfileError::Invalid { file, msg } => Finding {
            file: file.clone(),
            line: None,
            column: None,
            message: msg.clone(),
        },
        other => Finding {
            file: "profiles".into(),
            line: None,
            column: None,
            message: other.to_string(),
        },
    }
}

/// A finding at the line of a profile (or its `_base.toml`) that sets `key`.
fn at_key(root: &Root, p: &profile::Profile, key: &[&str], message: String) -> Finding {
    let (file, at) = profile::where_set(root, p, key);
    Finding {
        file,
        line: at.map(|a| a.0),
        column: at.map(|a| a.1),
        message,
    }
}

/// The result of a check run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub profiles: usize,
    pub layer_groups: usize,
    pub findings: Vec<Finding>,
}

/// Runs every check. `check_binaries` is off only for callers that build nothing.
pub fn run(root: &Root, check_binaries: bool) -> Report {
    let mut findings = Vec::new();
    let mut loaded = Vec::new();
    let mut groups_used = BTreeSet::new();
    for kind in Kind::ALL {
        match profile::base_gaps(root, kind) {
            Ok(gaps) if !gaps.is_empty() => findings.push(Finding {
                file: root.display(&format!("profiles/{kind}/_base.toml")),
                line: None,
                column: None,
                message: format!(
                    "leaves these settings to built-in defaults: {}; set them so every {kind} profile is explicit",
                    gaps.join(", ")
                ),
            }),
            Ok(_) => {}
            Err(e) => findings.push(finding(&e)),
        }
        let names = match profile::profile_names(root, kind) {
            Ok(n) => n,
            Err(e) => {
                findings.push(finding(&e));
                continue;
            }
        };
        for name in names {
            match profile::load(root, kind, &name) {
                Ok(p) => loaded.push(p),
                Err(e) => findings.push(finding(&e)),
            }
        }
    }
    // Layer groups: each named one loads and every file it names exists.
    for p in &loaded {
        for g in &p.image.layers {
            groups_used.insert(g.clone());
        }
    }
    let mut all_groups: BTreeSet<String> = layers::group_names(root)
        .unwrap_or_default()
        .into_iter()
        .collect();
    all_groups.extend(groups_used.iter().cloned());
    for g in &all_groups {
        let Err(e) = layers::load(root, g) else {
            continue;
        };
        if root.exists(&format!("layers/{g}.toml")) {
            findings.push(finding(&e));
            continue;
        }
        // A group no file defines: name the profile line that asks for it.
        for p in &loaded {
            if let Some(n) = p.image.layers.iter().position(|x| x == g) {
                let at = n.to_string();
                findings.push(at_key(
                    root,
                    p,
                    &["image", "layers", &at],
                    format!("image.layers names {g:?}: {e}"),
                ));
            }
        }
    }
    // Image names: no two profiles produce the same name:tag.
    let mut refs: BTreeMap<String, Vec<&profile::Profile>> = BTreeMap::new();
    for p in &loaded {
        refs.entry(p.image_ref()).or_default().push(p);
    }
    for (r, ps) in refs.iter().filter(|(_, ps)| ps.len() > 1) {
        for p in ps {
            let others: Vec<String> = ps
                .iter()
                .filter(|o| o.id() != p.id())
                .map(|o| o.id())
                .collect();
            let key: &[&str] = if p.image.tag.is_some() {
                &["image", "tag"]
            } else {
                &["image", "name"]
            };
            let mut f = at_key(
                root,
                p,
                key,
                format!(
                    "image {r} is also built by {}; give one of them another image.tag",
                    others.join(", ")
                ),
            );
            // The tag comes from the file name when the profile sets none: its first line.
            if f.file != p.file || f.line.is_none() {
                (f.file, f.line, f.column) = (p.file.clone(), Some(1), None);
            }
            findings.push(f);
        }
    }
    // Payload binaries exist and are static.
    if check_binaries {
        let bins: BTreeSet<&str> = loaded.iter().map(|p| p.image.binary.as_str()).collect();
        for b in bins {
            if let Err(e) = payload::locate(b, &BTreeMap::new()) {
                let users: Vec<String> = loaded
                    .iter()
                    .filter(|p| p.image.binary == b)
                    .map(|p| p.id())
                    .collect();
                let first = loaded
                    .iter()
                    .find(|p| p.image.binary == b)
                    .expect("a user exists");
                findings.push(Finding {
                    file: first.file.clone(),
                    line: None,
                    column: None,
                    message: format!("{e} (used by {})", users.join(", ")),
                });
            }
        }
    }
    findings.sort();
    findings.dedup();
    Report {
        profiles: loaded.len(),
        layer_groups: all_groups.len(),
        findings,
    }
}
