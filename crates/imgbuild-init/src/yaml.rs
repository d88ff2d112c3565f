//! The YAML tree of cloud-init NoCloud `meta-data` and `#cloud-config` user-data, read with
//! `yaml-rust2`'s event parser. Every scalar is kept as the text it was written as (no
//! integers, booleans or YAML-1.2 octals: `permissions: 0600` stays "0600", as cloud-init reads
//! it), except that a plain empty, `~` or `null` value is `Null`. Aliases are resolved, tags
//! ignored, only the first document is read. A syntax error never fails a boot: what was read
//! before it is kept and the error is returned beside it, for one warning line.

use std::collections::BTreeMap;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Str(String),
    Seq(Vec<Value>),
    Map(Vec<(String, Value)>),
}

impl Value {
    /// The value of `key` in a map (the last one when a key repeats).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(m) => m.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// A parsed document: its tree, and the syntax error that ended the parse early, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub value: Value,
    pub error: Option<String>,
}

/// A collection still being read, with the anchor it will be stored under.
enum Open {
    Seq(Vec<Value>, usize),
    /// Entries, and the key read whose value is awaited (`Some(None)`: a key that is not a
    /// scalar, whose entry is dropped).
    Map(Vec<(String, Value)>, Option<Option<String>>, usize),
}

/// Builds the tree from parser events.
#[derive(Default)]
struct Builder {
    open: Vec<Open>,
    anchors: BTreeMap<usize, Value>,
    root: Option<Value>,
}

impl Builder {
    /// Whether the next node is a map key.
    fn awaits_key(&self) -> bool {
        matches!(self.open.last(), Some(Open::Map(_, None, _)))
    }

    /// A complete node: store it under its anchor, then hand it to its parent.
    fn node(&mut self, v: Value, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, v.clone());
        }
        match self.open.last_mut() {
            None => {
                self.root.get_or_insert(v);
            }
            Some(Open::Seq(items, _)) => items.push(v),
            Some(Open::Map(_, key @ None, _)) => {
                *key = Some(match v {
                    Value::Str(s) => Some(s),
                    Value::Null => Some(String::new()),
                    _ => None,
                })
            }
            Some(Open::Map(entries, key @ Some(_), _)) => {
                if let Some(Some(k)) = key.take() {
                    entries.push((k, v));
                }
            }
        }
    }

    /// Close the innermost collection.
    fn close(&mut self) {
        match self.open.pop() {
            Some(Open::Seq(items, anchor)) => self.node(Value::Seq(items), anchor),
            Some(Open::Map(mut entries, key, anchor)) => {
                if let Some(Some(k)) = key {
                    entries.push((k, Value::Null));
                }
                self.node(Value::Map(entries), anchor)
            }
            None => {}
        }
    }

    /// Take one event; false once the first document is complete.
    fn event(&mut self, ev: Event) -> bool {
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let v = if self.awaits_key() {
                    Value::Str(text)
                } else {
                    scalar(text, style)
                };
                self.node(v, anchor)
            }
            Event::Alias(id) => {
                let v = self.anchors.get(&id).cloned().unwrap_or(Value::Null);
                self.node(v, 0)
            }
            Event::SequenceStart(anchor, _) => self.open.push(Open::Seq(Vec::new(), anchor)),
            Event::MappingStart(anchor, _) => self.open.push(Open::Map(Vec::new(), None, anchor)),
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::DocumentEnd | Event::StreamEnd => return false,
            Event::Nothing | Event::StreamStart | Event::DocumentStart => {}
        }
        true
    }
}

/// A scalar value: plain empty, `~` and `null` are `Null`, everything else its text.
fn scalar(text: String, style: TScalarStyle) -> Value {
    match (style, text.as_str()) {
        (TScalarStyle::Plain, "" | "~" | "null" | "Null" | "NULL") => Value::Null,
        _ => Value::Str(text),
    }
}

/// `yaml-rust2` reads an empty `|` or `>` block at the very end of the input as "\n"; YAML
/// (and cloud-init's PyYAML) make it "" unless its header keeps line breaks (`|+`).
fn empty_block_fix(src: &str, ev: Event, mark: &Marker) -> Event {
    match ev {
        Event::Scalar(text, style @ (TScalarStyle::Literal | TScalarStyle::Folded), a, t)
            if text == "\n" =>
        {
            let header: String = src
                .lines()
                .nth(mark.line().saturating_sub(1))
                .unwrap_or("")
                .chars()
                .skip(mark.col())
                .take_while(|c| !c.is_whitespace())
                .collect();
            let text = if header.contains('+') {
                text
            } else {
                String::new()
            };
            Event::Scalar(text, style, a, t)
        }
        ev => ev,
    }
}

/// Parse the first document of `src`; never fails (see [`Parsed`]).
pub fn parse(src: &str) -> Parsed {
    let mut parser = Parser::new_from_str(src);
    let mut b = Builder::default();
    let mut error = None;
    loop {
        match parser.next_token() {
            Ok((ev, mark)) => {
                if !b.event(empty_block_fix(src, ev, &mark)) {
                    break;
                }
            }
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    while !b.open.is_empty() {
        b.close();
    }
    Parsed {
        value: b.root.unwrap_or(Value::Null),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(v.into())
    }

    /// The tree of a document that must parse without error.
    fn parse_ok(src: &str) -> Value {
        let p = parse(src);
        assert_eq!(p.error, None, "{src:?}");
        p.value
    }

    #[test]
    fn maps_sequences_and_scalars() {
        let v = parse_ok(
            "#cloud-config\nhostname: box # comment\nempty:\nlist:\n  - a\n  - 'b c'\nsame_indent:\n- x\n- y\nnested:\n  k: \"v\\tw\"\n  n: 1\n",
        );
        assert_eq!(v.get("hostname"), Some(&s("box")));
        assert_eq!(v.get("empty"), Some(&Value::Null));
        assert_eq!(v.get("list"), Some(&Value::Seq(vec![s("a"), s("b c")])));
        assert_eq!(
            v.get("same_indent"),
            Some(&Value::Seq(vec![s("x"), s("y")]))
        );
        assert_eq!(v.get("nested").and_then(|n| n.get("k")), Some(&s("v\tw")));
        assert_eq!(v.get("nested").and_then(|n| n.get("n")), Some(&s("1")));
    }

    #[test]
    fn sequence_of_maps_with_block_scalars() {
        let v = parse_ok(
            "write_files:\n  - path: /etc/a\n    content: |\n      line 1\n        indented\n\n      line 3\n    permissions: '0600'\n  - path: /etc/b\n    content: >-\n      folded\n      text\n  - content: \"x\"\n    path: /etc/c\nafter: yes\n",
        );
        let Some(Value::Seq(files)) = v.get("write_files") else {
            panic!("{v:?}")
        };
        assert_eq!(files.len(), 3);
        assert_eq!(
            files[0].get("content"),
            Some(&s("line 1\n  indented\n\nline 3\n"))
        );
        assert_eq!(files[0].get("permissions"), Some(&s("0600")));
        assert_eq!(files[1].get("content"), Some(&s("folded text")));
        assert_eq!(files[2].get("path"), Some(&s("/etc/c")));
        assert_eq!(v.get("after"), Some(&s("yes")));
    }

    #[test]
    fn flow_and_json() {
        let v = parse_ok("{\"instance-id\": \"i-1\", \"local-hostname\":\"h\"}");
        assert_eq!(v.get("instance-id"), Some(&s("i-1")));
        assert_eq!(v.get("local-hostname"), Some(&s("h")));
        let v = parse_ok("hls: {PORT: 18080, 'A': \"b, c\"}\nkeys: [x, 'y']\nurl: http://a:b/c\n");
        assert_eq!(v.get("hls").and_then(|h| h.get("A")), Some(&s("b, c")));
        assert_eq!(v.get("keys"), Some(&Value::Seq(vec![s("x"), s("y")])));
        assert_eq!(v.get("url"), Some(&s("http://a:b/c")));
    }

    #[test]
    fn odd_input_does_not_panic() {
        for src in [
            "",
            "- ",
            ":",
            "a: |",
            "a: [",
            "\"unterminated: x",
            "  - - a\n  -",
            "a:\n\tb: c",
        ] {
            let _ = parse(src);
        }
        assert_eq!(parse_ok("a: |\n"), Value::Map(vec![("a".into(), s(""))]));
        assert_eq!(
            parse_ok("a:\n - >2\n").get("a"),
            Some(&Value::Seq(vec![s("")]))
        );
        assert_eq!(
            parse_ok("a: |+\n\n"),
            Value::Map(vec![("a".into(), s("\n"))])
        );
        assert_eq!(parse_ok(""), Value::Null);
    }

    /// A syntax error keeps what was read before it and says where it is.
    #[test]
    fn error_keeps_what_came_before() {
        let p = parse("hostname: h\nhls:\n  PORT: 1\nbad: [x\nafter: y\n");
        assert_eq!(p.value.get("hostname"), Some(&s("h")));
        assert_eq!(
            p.value.get("hls").and_then(|h| h.get("PORT")),
            Some(&s("1"))
        );
        assert_eq!(p.value.get("after"), None);
        let e = p.error.expect("an error");
        assert!(e.contains("line"), "{e}");
        let p = parse("a:\n\tb: c");
        assert!(p.error.is_some());
    }

    /// Scalars stay the text they were written as; only plain null-likes are `Null`.
    #[test]
    fn scalars_keep_their_text() {
        let v = parse_ok(
            "mode: 0600\noct: 0o17\nyes: true\nq: 'null'\nn: ~\nnull: k\nf: 1.50\ndoc: ---\n",
        );
        assert_eq!(v.get("mode"), Some(&s("0600")));
        assert_eq!(v.get("oct"), Some(&s("0o17")));
        assert_eq!(v.get("yes"), Some(&s("true")));
        assert_eq!(v.get("q"), Some(&s("null")));
        assert_eq!(v.get("n"), Some(&Value::Null));
        assert_eq!(v.get("null"), Some(&s("k")));
        assert_eq!(v.get("f"), Some(&s("1.50")));
    }

    #[test]
    fn anchors_documents_and_complex_keys() {
        let v =
            parse_ok("base: &b {PORT: 1}\nhls: *b\n? [x]\n: dropped\nlast: 1\n---\nsecond: 2\n");
        assert_eq!(v.get("hls").and_then(|h| h.get("PORT")), Some(&s("1")));
        assert_eq!(v.get("last"), Some(&s("1")));
        assert_eq!(v.get("second"), None);
        let Value::Map(m) = &v else { panic!("{v:?}") };
        assert_eq!(m.len(), 3, "{m:?}");
    }
}
