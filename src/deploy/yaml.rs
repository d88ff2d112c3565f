//! A small block-style YAML writer for the deploy files (docs/deploy.md says why not a YAML
//! crate): a tree of maps, sequences and JSON scalars, with comments before any map entry
//! (the deploy files explain their figures where they stand, e.g. the fd need Kubernetes has
//! no field for). Strings are always written as JSON strings, which are valid YAML
//! double-quoted scalars, so no string is ever read back as a number, a boolean or null
//! (`"no"`, `"1.0"`, `"0755"`); keys are written plain only when they are plainly strings.
//! The tests read every file back with a YAML 1.2 parser and compare it to the tree.

use serde_json::Value;

/// A YAML node.
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    /// null, a boolean, a number or a string.
    Scalar(Value),
    Seq(Vec<Yaml>),
    Map(Vec<Entry>),
}

/// One key of a map, with comment lines written above it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub value: Yaml,
    pub comment: Vec<String>,
}

impl Yaml {
    pub fn map() -> Yaml {
        Yaml::Map(vec![])
    }

    /// Add (or replace) `key`; builder style.
    pub fn with(mut self, key: &str, value: impl Into<Yaml>) -> Yaml {
        self.set(key, value, &[]);
        self
    }

    /// Add (or replace) `key` with comment lines above it; builder style.
    pub fn with_comment(mut self, key: &str, value: impl Into<Yaml>, comment: &[&str]) -> Yaml {
        self.set(key, value, comment);
        self
    }

    fn set(&mut self, key: &str, value: impl Into<Yaml>, comment: &[&str]) {
        let Yaml::Map(entries) = self else {
            panic!("Yaml::with on a non-map")
        };
        let e = Entry {
            key: key.to_string(),
            value: value.into(),
            comment: comment.iter().map(|c| c.to_string()).collect(),
        };
        match entries.iter_mut().find(|x| x.key == key) {
            Some(x) => *x = e,
            None => entries.push(e),
        }
    }

    /// The same tree as JSON (comments dropped): what a YAML parser reads back.
    pub fn to_json(&self) -> Value {
        match self {
            Yaml::Scalar(v) => v.clone(),
            Yaml::Seq(items) => Value::Array(items.iter().map(Yaml::to_json).collect()),
            Yaml::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// The node as a YAML document body (no `---`), ending with a newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        match self {
            Yaml::Map(e) if !e.is_empty() => write_map(&mut out, e, 0),
            Yaml::Seq(s) if !s.is_empty() => write_seq(&mut out, s, 0),
            other => {
                out.push_str(&inline(other));
                out.push('\n');
            }
        }
        out
    }
}

impl From<Value> for Yaml {
    fn from(v: Value) -> Yaml {
        match v {
            Value::Array(a) => Yaml::Seq(a.into_iter().map(Yaml::from).collect()),
            Value::Object(o) => Yaml::Map(
                o.into_iter()
                    .map(|(key, v)| Entry {
                        key,
                        value: Yaml::from(v),
                        comment: vec![],
                    })
                    .collect(),
            ),
            scalar => Yaml::Scalar(scalar),
        }
    }
}

impl From<&str> for Yaml {
    fn from(s: &str) -> Yaml {
        Yaml::Scalar(Value::from(s))
    }
}

impl From<String> for Yaml {
    fn from(s: String) -> Yaml {
        Yaml::Scalar(Value::from(s))
    }
}

impl From<u64> for Yaml {
    fn from(n: u64) -> Yaml {
        Yaml::Scalar(Value::from(n))
    }
}

impl From<u32> for Yaml {
    fn from(n: u32) -> Yaml {
        Yaml::Scalar(Value::from(n))
    }
}

impl From<bool> for Yaml {
    fn from(b: bool) -> Yaml {
        Yaml::Scalar(Value::from(b))
    }
}

impl From<Vec<Yaml>> for Yaml {
    fn from(v: Vec<Yaml>) -> Yaml {
        Yaml::Seq(v)
    }
}

/// A sequence of strings.
pub fn strings<S: AsRef<str>>(items: &[S]) -> Yaml {
    Yaml::Seq(items.iter().map(|s| Yaml::from(s.as_ref())).collect())
}

/// Several documents in one file, each after `---`, with comment lines first.
pub fn documents(header: &[String], docs: &[Yaml]) -> String {
    let mut out = comments(header, 0);
    for d in docs {
        out.push_str("---\n");
        out.push_str(&d.render());
    }
    out
}

/// `# line` for each line (a line break inside a comment starts another comment line).
pub fn comments(lines: &[String], indent: usize) -> String {
    let mut out = String::new();
    for l in lines.iter().flat_map(|l| l.split('\n')) {
        out.push_str(&" ".repeat(indent));
        out.push('#');
        if !l.is_empty() {
            out.push(' ');
            out.push_str(l);
        }
        out.push('\n');
    }
    out
}

fn write_map(out: &mut String, entries: &[Entry], indent: usize) {
    for e in entries {
        out.push_str(&comments(&e.comment, indent));
        out.push_str(&" ".repeat(indent));
        write_entry(out, e, indent);
    }
}

/// `key: value` from the current column (the indent is already written).
fn write_entry(out: &mut String, e: &Entry, indent: usize) {
    out.push_str(&key(&e.key));
    out.push(':');
    match &e.value {
        Yaml::Map(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, m, indent + 2);
        }
        Yaml::Seq(s) if !s.is_empty() => {
            out.push('\n');
            write_seq(out, s, indent + 2);
        }
        v => {
            out.push(' ');
            out.push_str(&inline(v));
            out.push('\n');
        }
    }
}

fn write_seq(out: &mut String, items: &[Yaml], indent: usize) {
    for item in items {
        match item {
            Yaml::Map(m) if !m.is_empty() => {
                out.push_str(&comments(&m[0].comment, indent));
                out.push_str(&" ".repeat(indent));
                out.push_str("- ");
                write_entry(out, &m[0], indent + 2);
                write_map(out, &m[1..], indent + 2);
            }
            Yaml::Seq(s) if !s.is_empty() => {
                out.push_str(&" ".repeat(indent));
                out.push_str("-\n");
                write_seq(out, s, indent + 2);
            }
            v => {
                out.push_str(&" ".repeat(indent));
                out.push_str("- ");
                out.push_str(&inline(v));
                out.push('\n');
            }
        }
    }
}

/// A scalar, `{}` or `[]`.
fn inline(v: &Yaml) -> String {
    match v {
        Yaml::Scalar(Value::Null) => "null".into(),
        Yaml::Scalar(s) => s.to_string(),
        Yaml::Seq(_) => "[]".into(),
        Yaml::Map(_) => "{}".into(),
    }
}

/// A key written plain when a YAML 1.1 or 1.2 reader takes it as that string, else quoted.
fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain {
        k.to_string()
    } else {
        Value::from(k).to_string()
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use serde_json::json;

    /// A YAML 1.2 parser's reading of `text` (every document), as JSON.
    pub fn parse_back(text: &str) -> Vec<Value> {
        use yaml_rust2::{Yaml as Y, YamlLoader};
        fn conv(y: &Y) -> Value {
            match y {
                Y::Real(r) => json!(r.parse::<f64>().unwrap()),
                Y::Integer(i) => json!(i),
                Y::String(s) => json!(s),
                Y::Boolean(b) => json!(b),
                Y::Array(a) => Value::Array(a.iter().map(conv).collect()),
                Y::Hash(h) => Value::Object(
                    h.iter()
                        .map(|(k, v)| (k.as_str().expect("string key").to_string(), conv(v)))
                        .collect(),
                ),
                Y::Null => Value::Null,
                other => panic!("unexpected YAML node {other:?}"),
            }
        }
        YamlLoader::load_from_str(text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .iter()
            .map(conv)
            .collect()
    }

    #[test]
    fn tricky_values_read_back_as_written() {
        let v = json!({
            "version": "3.8",
            "no": "no",
            "on": ["yes", "1.0", "0755", "", "null", "~", "# not a comment", "a: b", "- x"],
            "env": {"START_AT": "${START_AT:-}", "Quote\"d": "line\nbreak", "ünï": "ç€"},
            "n": [0, -3, 2.5, true, null],
            "empty": {"m": {}, "s": []},
            "nested": [[1, [2]], {"a": [{"b": 1, "c": {"d": [1]}}]}],
            "1key": 1,
            "key with space": 2
        });
        let y = Yaml::from(v.clone());
        assert_eq!(parse_back(&y.render()), vec![v]);
    }

    #[test]
    fn comments_sit_above_their_keys_and_documents_split() {
        let a = Yaml::map().with("kind", "Job").with_comment(
            "spec",
            Yaml::map().with("x", 1u32),
            &["two\nlines", ""],
        );
        let b = Yaml::from(json!([{"k": 1}]));
        let seq_first = Yaml::Seq(vec![Yaml::map().with_comment("name", "c", &["about c"])]);
        let text = documents(
            &["header".into()],
            &[a.clone(), b.clone(), seq_first.clone()],
        );
        assert!(
            text.starts_with("# header\n---\nkind: \"Job\"\n# two\n# lines\n#\nspec:\n  x: 1\n")
        );
        assert!(text.contains("# about c\n- name: \"c\"\n"), "{text}");
        assert_eq!(
            parse_back(&text),
            vec![a.to_json(), b.to_json(), seq_first.to_json()]
        );
    }
}
