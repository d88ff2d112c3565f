//! Just enough YAML for cloud-init NoCloud `meta-data` and `#cloud-config` user-data:
//! block maps and sequences by indentation, `- key: value` items, plain, 'single' and
//! "double" quoted scalars, literal `|` and folded `>` block scalars (with `-`/`+`),
//! one-line flow `[a, b]` / `{k: v}` collections, comments and `---`. Anything else is kept
//! as text rather than failing, so an unusual user-data never stops a boot.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Str(String),
    Seq(Vec<Value>),
    Map(Vec<(String, Value)>),
}

impl Value {
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

struct Line {
    indent: usize,
    text: String,
}

/// Parse a document. Tabs used for indentation count as one column each.
pub fn parse(src: &str) -> Value {
    let mut lines: Vec<Line> = Vec::new();
    for raw in src.lines() {
        let raw = raw.trim_end_matches('\r');
        if raw == "---" || raw == "..." || raw.starts_with("--- ") {
            continue;
        }
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        lines.push(Line {
            indent,
            text: raw[indent..].to_string(),
        });
    }
    let mut i = 0;
    block(&mut lines, &mut i, 0)
}

fn is_blank(l: &Line) -> bool {
    let t = l.text.trim();
    t.is_empty() || t.starts_with('#')
}

fn skip_blank(lines: &[Line], i: &mut usize) {
    while *i < lines.len() && is_blank(&lines[*i]) {
        *i += 1;
    }
}

fn is_seq_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// A block (map, sequence or lone scalar) whose lines are indented at least `min`.
fn block(lines: &mut [Line], i: &mut usize, min: usize) -> Value {
    skip_blank(lines, i);
    if *i >= lines.len() || lines[*i].indent < min {
        return Value::Null;
    }
    let n = lines[*i].indent;
    if is_seq_item(&lines[*i].text) {
        seq(lines, i, n)
    } else if split_key(&lines[*i].text).is_some() {
        map(lines, i, n)
    } else {
        let v = scalar(&lines[*i].text);
        *i += 1;
        v
    }
}

fn seq(lines: &mut [Line], i: &mut usize, n: usize) -> Value {
    let mut items = Vec::new();
    loop {
        skip_blank(lines, i);
        if *i >= lines.len() || lines[*i].indent != n || !is_seq_item(&lines[*i].text) {
            break;
        }
        let rest = lines[*i].text[1..].to_string();
        let inner = rest.trim_start();
        if inner.is_empty() || inner.starts_with('#') {
            *i += 1;
            items.push(block(lines, i, n + 1));
        } else {
            // "- key: v" or "- - x": re-read the rest of the line as a block at its column.
            let col = n + 1 + (rest.len() - inner.len());
            lines[*i].indent = col;
            lines[*i].text = inner.to_string();
            if split_key(inner).is_some() || is_seq_item(inner) {
                items.push(block(lines, i, col));
            } else {
                items.push(scalar_or_block(lines, i, inner.to_string(), n));
            }
        }
    }
    Value::Seq(items)
}

fn map(lines: &mut [Line], i: &mut usize, n: usize) -> Value {
    let mut entries = Vec::new();
    loop {
        skip_blank(lines, i);
        if *i >= lines.len() || lines[*i].indent != n {
            break;
        }
        let Some((key, rest)) = split_key(&lines[*i].text) else {
            break;
        };
        let rest = rest.trim().to_string();
        let value = if rest.is_empty() || rest.starts_with('#') {
            *i += 1;
            skip_blank(lines, i);
            // A sequence may sit at the key's own indentation.
            if *i < lines.len() && lines[*i].indent == n && is_seq_item(&lines[*i].text) {
                seq(lines, i, n)
            } else {
                block(lines, i, n + 1)
            }
        } else {
            scalar_or_block(lines, i, rest, n)
        };
        entries.push((key, value));
    }
    Value::Map(entries)
}

/// The value text after `key:` or `- `; a block scalar header pulls in the following lines.
fn scalar_or_block(lines: &mut [Line], i: &mut usize, rest: String, n: usize) -> Value {
    *i += 1;
    let head = strip_comment(&rest);
    let Some(style) = head.chars().next().filter(|c| *c == '|' || *c == '>') else {
        return scalar(&rest);
    };
    let chomp = if head.contains('-') {
        '-'
    } else if head.contains('+') {
        '+'
    } else {
        ' '
    };
    // Collect the lines indented deeper than the parent, plus blank lines among them.
    let start = *i;
    let mut end = start;
    while end < lines.len() && (lines[end].indent > n || lines[end].text.trim().is_empty()) {
        end += 1;
    }
    let content: Vec<&Line> = lines[start..end].iter().collect();
    let ind = content
        .iter()
        .filter(|l| !l.text.trim().is_empty())
        .map(|l| l.indent)
        .min()
        .unwrap_or(n + 1);
    let mut body: Vec<String> = content
        .iter()
        .map(|l| {
            if l.text.trim().is_empty() {
                String::new()
            } else {
                format!("{}{}", " ".repeat(l.indent - ind), l.text)
            }
        })
        .collect();
    // Trailing blank lines that were consumed belong to the chomping, not to the next key.
    *i = end;
    let trailing = body.iter().rev().take_while(|l| l.is_empty()).count();
    body.truncate(body.len() - trailing);
    let mut text = if style == '|' {
        body.join("\n")
    } else {
        fold(&body)
    };
    match chomp {
        '-' => {}
        '+' => {
            text.push('\n');
            text.push_str(&"\n".repeat(trailing));
        }
        _ if !body.is_empty() => text.push('\n'),
        _ => {}
    }
    Value::Str(text)
}

fn fold(body: &[String]) -> String {
    let mut out = String::new();
    let mut prev_more_indented = false;
    for (idx, l) in body.iter().enumerate() {
        let more = l.starts_with(' ');
        if idx > 0 {
            if l.is_empty() || body[idx - 1].is_empty() || more || prev_more_indented {
                out.push('\n');
            } else {
                out.push(' ');
            }
        }
        out.push_str(l);
        prev_more_indented = more;
    }
    out
}

/// `key: rest` → (key, rest). The key may be quoted.
fn split_key(text: &str) -> Option<(String, String)> {
    let t = text.trim_start();
    if t.starts_with('"') || t.starts_with('\'') {
        let (k, after) = quoted(t)?;
        let after = after.trim_start();
        let rest = after.strip_prefix(':')?;
        return (rest.is_empty() || rest.starts_with(' ')).then(|| (k, rest.to_string()));
    }
    if t.starts_with('#') || t.starts_with('[') || t.starts_with('{') || is_seq_item(t) {
        return None;
    }
    let mut search = 0;
    while let Some(p) = t[search..].find(':') {
        let p = search + p;
        let after = &t[p + 1..];
        if after.is_empty() || after.starts_with(' ') || after.starts_with('\t') {
            return Some((t[..p].trim_end().to_string(), after.to_string()));
        }
        search = p + 1;
    }
    None
}

fn strip_comment(s: &str) -> &str {
    let b = s.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'#' && (i == 0 || b[i - 1] == b' ' || b[i - 1] == b'\t') {
            return s[..i].trim_end();
        }
    }
    s.trim_end()
}

/// A quoted scalar at the start of `s`: (value, what follows the closing quote).
fn quoted(s: &str) -> Option<(String, &str)> {
    let q = s.chars().next()?;
    let mut out = String::new();
    let mut it = s.char_indices().skip(1).peekable();
    while let Some((idx, c)) = it.next() {
        if q == '\'' && c == '\'' {
            if let Some((_, '\'')) = it.peek() {
                it.next();
                out.push('\'');
                continue;
            }
            return Some((out, &s[idx + 1..]));
        }
        if q == '"' && c == '"' {
            return Some((out, &s[idx + 1..]));
        }
        if q == '"' && c == '\\' {
            let (_, e) = it.next()?;
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                'u' | 'x' => {
                    let n = if e == 'u' { 4 } else { 2 };
                    let hex: String = (0..n).filter_map(|_| it.next().map(|(_, c)| c)).collect();
                    out.push(
                        u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .unwrap_or('\u{fffd}'),
                    );
                }
                other => out.push(other),
            }
            continue;
        }
        out.push(c);
    }
    None
}

/// A one-line scalar or flow collection.
fn scalar(text: &str) -> Value {
    let t = text.trim();
    if t.starts_with('"') || t.starts_with('\'') {
        if let Some((v, _)) = quoted(t) {
            return Value::Str(v);
        }
    }
    let t = strip_comment(t);
    if (t.starts_with('[') && t.ends_with(']')) || (t.starts_with('{') && t.ends_with('}')) {
        return flow(t);
    }
    match t {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        _ => Value::Str(t.to_string()),
    }
}

/// `[a, "b, c"]` or `{k: v, "x": 'y'}` (one level; nested flow items stay text).
fn flow(t: &str) -> Value {
    let inner = &t[1..t.len() - 1];
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut depth = 0;
    for c in inner.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c)
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                cur.push(c)
            }
            (None, '[' | '{') => {
                depth += 1;
                cur.push(c)
            }
            (None, ']' | '}') => {
                depth -= 1;
                cur.push(c)
            }
            (None, ',') if depth == 0 => items.push(std::mem::take(&mut cur)),
            (None, c) => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        items.push(cur);
    }
    if t.starts_with('[') {
        Value::Seq(items.iter().map(|s| scalar(s)).collect())
    } else {
        Value::Map(
            items
                .iter()
                .filter_map(|s| {
                    let (k, v) = split_key(s.trim()).or_else(|| {
                        // JSON style "k":"v" without a space after the colon.
                        let s = s.trim();
                        let (k, after) = quoted(s)?;
                        let v = after.trim_start().strip_prefix(':')?;
                        Some((k, v.to_string()))
                    })?;
                    Some((k, scalar(&v)))
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(v.into())
    }

    #[test]
    fn maps_sequences_and_scalars() {
        let v = parse(
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
        let v = parse(
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
        let v = parse("{\"instance-id\": \"i-1\", \"local-hostname\":\"h\"}");
        assert_eq!(v.get("instance-id"), Some(&s("i-1")));
        assert_eq!(v.get("local-hostname"), Some(&s("h")));
        let v = parse("hls: {PORT: 18080, 'A': \"b, c\"}\nkeys: [x, 'y']\nurl: http://a:b/c\n");
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
        assert_eq!(parse("a: |\n"), Value::Map(vec![("a".into(), s(""))]));
    }
}
