//! Reading profiles: each file parsed alone (syntax, unknown keys, wrong types with their
//! line), laid over its kind's `_base.toml` by the merge rule, resolved into a [`Profile`] and
//! validated. Also the names of the profiles a root holds and did-you-mean suggestions.

use crate::root::Root;

use super::validate::{validate, Invalid};
use super::{Kind, OriginSettings, Profile, ProfileDoc, ProfileError, Settings, SwarmSettings};

/// Line and column (1-based) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

/// Turns a toml error into `file:line:col: message`.
pub fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> ProfileError {
    let (line, col) = e.span().map_or((1, 1), |s| line_col(text, s.start));
    ProfileError::Located {
        file: file.to_string(),
        line,
        col,
        msg: e.message().trim().to_string(),
    }
}

/// Parses one profile file alone: syntax, unknown keys and wrong types, with locations.
fn parse_file(root: &Root, rel: &str) -> Result<toml::Table, ProfileError> {
    parse_table(&root.display(rel), &root.read_text(rel)?)
}

/// Checks one file's text alone (syntax, unknown keys, wrong types, each with its
/// location) and returns its table for merging.
fn parse_table(file: &str, text: &str) -> Result<toml::Table, ProfileError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
    let _: ProfileDoc = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
    Ok(table)
}

/// The merge rule of docs/PROFILES.md: top-level tables merge key by key; every other
/// value (scalars, arrays, tables below the top level) from the overlay replaces the base's.
pub fn merge_tables(base: &toml::Table, overlay: &toml::Table) -> toml::Table {
    let mut out = base.clone();
    for (k, v) in overlay {
        match (out.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => {
                for (k2, v2) in o {
                    b.insert(k2.clone(), v2.clone());
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// Names of the profile files of a kind (file stems, sorted), skipping `_`-prefixed bases.
pub fn profile_names(root: &Root, kind: Kind) -> Result<Vec<String>, ProfileError> {
    let dir = format!("profiles/{kind}");
    let mut names: Vec<String> = root
        .files_under(&dir)?
        .into_iter()
        .filter_map(|f| {
            let name = f.rel.strip_prefix(&dir)?.strip_prefix('/')?;
            let stem = name.strip_suffix(".toml")?;
            (!stem.contains('/') && !stem.starts_with('_')).then(|| stem.to_string())
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Every `kind/name` in the root, sorted.
pub fn all_ids(root: &Root) -> Result<Vec<String>, ProfileError> {
    let mut ids = Vec::new();
    for kind in Kind::ALL {
        for n in profile_names(root, kind)? {
            ids.push(format!("{kind}/{n}"));
        }
    }
    Ok(ids)
}

fn base_rel(kind: Kind) -> String {
    format!("profiles/{kind}/_base.toml")
}

/// Loads and validates one profile.
pub fn load(root: &Root, kind: Kind, name: &str) -> Result<Profile, ProfileError> {
    let rel = format!("profiles/{kind}/{name}.toml");
    if !profile_names(root, kind)?.iter().any(|n| n == name) {
        return Err(unknown(root, &format!("{kind}/{name}")));
    }
    let base_text = if root.exists(&base_rel(kind)) {
        Some(root.read_text(&base_rel(kind))?)
    } else {
        None
    };
    let base = base_text
        .as_deref()
        .map(|t| (root.display(&base_rel(kind)), t));
    let base = base.as_ref().map(|(f, t)| (f.as_str(), *t));
    from_texts(kind, name, root.display(&rel), base, &root.read_text(&rel)?)
}

/// The one way a profile is made: each file checked alone, laid over the base by the merge
/// rule, then resolved and validated. `base` is (shown name, text) of `_base.toml`.
fn from_texts(
    kind: Kind,
    name: &str,
    file: String,
    base: Option<(&str, &str)>,
    text: &str,
) -> Result<Profile, ProfileError> {
    let base_table = match base {
        Some((bfile, btext)) => parse_table(bfile, btext)?,
        None => toml::Table::new(),
    };
    let table = parse_table(&file, text)?;
    let doc: ProfileDoc = toml::Value::Table(merge_tables(&base_table, &table))
        .try_into()
        .map_err(|e: toml::de::Error| ProfileError::Invalid {
            file: file.clone(),
            msg: format!(
                "after merging with {}: {}",
                base_rel(kind),
                e.message().trim()
            ),
        })?;
    let mut files = vec![(file.as_str(), text)];
    files.extend(base);
    resolve(kind, name, file.clone(), doc).map_err(|e| locate(&files, e))
}

/// Parses and validates one profile from text, as [`load`] does from the root tree: `base`
/// is the text of its kind's `_base.toml` (if any), `text` the profile file's. Errors name
/// `profiles/KIND/NAME.toml` (or the base) and the line. For tests and fuzzing.
pub fn parse_text(
    kind: Kind,
    name: &str,
    base: Option<&str>,
    text: &str,
) -> Result<Profile, ProfileError> {
    let base_file = base_rel(kind);
    from_texts(
        kind,
        name,
        format!("profiles/{kind}/{name}.toml"),
        base.map(|b| (base_file.as_str(), b)),
        text,
    )
}

/// Resolves `KIND/PROFILE` (or a bare profile name that only one kind has).
pub fn load_id(root: &Root, id: &str) -> Result<Profile, ProfileError> {
    if let Some((k, n)) = id.split_once('/') {
        if let Some(kind) = Kind::parse(k) {
            return load(root, kind, n);
        }
    } else {
        let kinds: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| {
                profile_names(root, *k)
                    .map(|n| n.iter().any(|x| x == id))
                    .unwrap_or(false)
            })
            .collect();
        if kinds.len() == 1 {
            return load(root, kinds[0], id);
        }
    }
    Err(unknown(root, id))
}

/// Loads every profile of every kind.
pub fn load_all(root: &Root) -> Result<Vec<Profile>, ProfileError> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        for n in profile_names(root, kind)? {
            out.push(load(root, kind, &n)?);
        }
    }
    Ok(out)
}

fn unknown(root: &Root, given: &str) -> ProfileError {
    let valid = all_ids(root).unwrap_or_default();
    let best = valid
        .iter()
        .map(|v| {
            let bare = v.split_once('/').map_or(v.as_str(), |(_, n)| n);
            (edit_distance(given, v).min(edit_distance(given, bare)), v)
        })
        .min();
    let suggestion = match best {
        Some((d, v)) if d <= given.len().max(3) / 2 + 1 => format!(" (did you mean {v}?)"),
        _ => String::new(),
    };
    ProfileError::Unknown {
        given: given.to_string(),
        suggestion,
        valid: valid.join(", "),
    }
}

/// Levenshtein distance, for did-you-mean suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn resolve(kind: Kind, name: &str, file: String, doc: ProfileDoc) -> Result<Profile, Invalid> {
    let invalid = |key: &str, msg: &str| Invalid {
        key: vec![key.to_string()],
        msg: msg.to_string(),
    };
    let settings = match (kind, doc.origin, doc.swarm) {
        (Kind::Origin, Some(o), None) => Settings::Origin(o),
        (Kind::Swarm, None, Some(s)) => Settings::Swarm(s),
        (Kind::Origin, _, Some(_)) => {
            return Err(invalid("swarm", "an origin profile has no [swarm] section"))
        }
        (Kind::Swarm, Some(_), _) => {
            return Err(invalid("origin", "a swarm profile has no [origin] section"))
        }
        (Kind::Origin, None, _) => {
            return Err(invalid(
                "origin",
                "missing [origin] (in the profile or _base.toml)",
            ))
        }
        (Kind::Swarm, _, None) => {
            return Err(invalid(
                "swarm",
                "missing [swarm] (in the profile or _base.toml)",
            ))
        }
    };
    if kind == Kind::Swarm && doc.iso.is_some() {
        return Err(invalid("iso", "[iso] is for origin profiles only"));
    }
    let p = Profile {
        kind,
        name: name.to_string(),
        file,
        description: doc.description,
        image: doc.image,
        settings,
        iso: doc.iso,
        kernel: doc.kernel.unwrap_or_default(),
    };
    validate(&p)?;
    Ok(p)
}

// ---------------------------------------------------------------------------------------
// Where a key is written

/// A node of a parsed TOML document on the way down a key path.
enum Node<'a> {
    Item(&'a toml_edit::Item),
    Value(&'a toml_edit::Value),
    Table(&'a toml_edit::Table),
}

impl<'a> Node<'a> {
    /// The child named `part` (a key, or a position in an array) and where it is written.
    fn child(&self, part: &str) -> Option<(Node<'a>, Option<std::ops::Range<usize>>)> {
        let table: Option<&'a dyn toml_edit::TableLike> = match *self {
            Node::Item(i) => i.as_table_like(),
            Node::Value(v) => v.as_inline_table().map(|t| t as &dyn toml_edit::TableLike),
            Node::Table(t) => Some(t as &dyn toml_edit::TableLike),
        };
        if let Some(t) = table {
            let (k, item) = t.get_key_value(part)?;
            return Some((Node::Item(item), k.span()));
        }
        let n: usize = part.parse().ok()?;
        match *self {
            Node::Item(toml_edit::Item::ArrayOfTables(a)) => {
                let t = a.get(n)?;
                Some((Node::Table(t), t.span()))
            }
            Node::Item(i) => {
                let v = i.as_array()?.get(n)?;
                Some((Node::Value(v), v.span()))
            }
            Node::Value(v) => {
                let v = v.as_array()?.get(n)?;
                Some((Node::Value(v), v.span()))
            }
            Node::Table(_) => None,
        }
    }
}

/// How much of `key` a TOML text writes, and the byte offset of the deepest part it writes:
/// `(3, Some(…))` for `["origin", "variants", "1"]` in a file listing two variants.
fn find_key(text: &str, key: &[String]) -> (usize, Option<usize>) {
    let Ok(doc) = toml_edit::ImDocument::parse(text) else {
        return (0, None);
    };
    let mut node = Node::Item(doc.as_item());
    let mut found = (0, None);
    for (depth, part) in key.iter().enumerate() {
        let Some((next, span)) = node.child(part) else {
            break;
        };
        found = (depth + 1, span.map(|s| s.start).or(found.1));
        node = next;
    }
    found
}

/// The file and `(line, column)` that set `key` for a profile: the profile's own file when
/// it writes the key, else its kind's `_base.toml` when that does, else the file that writes
/// the longest part of the key (`[origin]` for a key left to a built-in default).
/// `files` are (shown name, text), the profile first.
fn key_location(files: &[(&str, &str)], key: &[String]) -> (String, Option<(usize, usize)>) {
    let found: Vec<(usize, Option<usize>)> = files.iter().map(|(_, t)| find_key(t, key)).collect();
    let full = found
        .iter()
        .position(|(d, o)| *d == key.len() && o.is_some());
    let pick = full.or_else(|| {
        let best = found.iter().map(|(d, _)| *d).max().filter(|d| *d > 0)?;
        found.iter().position(|(d, o)| *d == best && o.is_some())
    });
    match pick {
        Some(i) => {
            let (file, text) = files[i];
            let at = found[i].1.map(|o| line_col(text, o));
            (file.to_string(), at)
        }
        None => (files.first().map_or("", |f| f.0).to_string(), None),
    }
}

/// A failed validation as the error that names where the key is written.
fn locate(files: &[(&str, &str)], e: Invalid) -> ProfileError {
    match key_location(files, &e.key) {
        (file, Some((line, col))) => ProfileError::Located {
            file,
            line,
            col,
            msg: e.msg,
        },
        (file, None) => ProfileError::Invalid { file, msg: e.msg },
    }
}

/// Where a profile sets `key` (`["image", "layers", "1"]`): its file or its kind's
/// `_base.toml`, with `(line, column)` when the key is written, so `check` can name the
/// line of a layer group that does not exist.
pub fn where_set(root: &Root, p: &Profile, key: &[&str]) -> (String, Option<(usize, usize)>) {
    let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
    let own = format!("profiles/{}/{}.toml", p.kind, p.name);
    let base = base_rel(p.kind);
    let mut texts = Vec::new();
    for rel in [own, base] {
        if let Ok(t) = root.read_text(&rel) {
            texts.push((root.display(&rel), t));
        }
    }
    let files: Vec<(&str, &str)> = texts
        .iter()
        .map(|(f, t)| (f.as_str(), t.as_str()))
        .collect();
    if files.is_empty() {
        return (p.file.clone(), None);
    }
    key_location(&files, &key)
}

/// Keys of `[section]` that a kind's `_base.toml` leaves to a built-in default. `check`
/// requires this to be empty so every profile is complete and explicit.
pub fn base_gaps(root: &Root, kind: Kind) -> Result<Vec<String>, ProfileError> {
    let rel = base_rel(kind);
    if !root.exists(&rel) {
        return Ok(vec![format!("{rel} is missing")]);
    }
    let base = parse_file(root, &rel)?;
    let section = kind.as_str();
    let full = match kind {
        Kind::Origin => toml::Table::try_from(OriginSettings::default()),
        Kind::Swarm => toml::Table::try_from(SwarmSettings::default()),
    }
    .expect("settings serialise");
    let have = base.get(section).and_then(|v| v.as_table());
    Ok(full
        .keys()
        .filter(|k| !have.is_some_and(|t| t.contains_key(*k)))
        .map(|k| format!("{section}.{k}"))
        .collect())
}
