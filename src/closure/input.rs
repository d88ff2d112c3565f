//! The closure input formats (see the module documentation of [`crate::closure`]): path-info
//! JSON in both forms, closureInfo registrations and exportReferencesGraph records, plain
//! store path lists. Each parser names the input and the line or byte of what is wrong.

use super::{malformed, store_path, ClosureError};

/// One store path as an input describes it (paths already validated and normalised).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) path: String,
    pub(super) nar_size: Option<u64>,
    pub(super) nar_hash: Option<String>,
    pub(super) references: Vec<String>,
}

/// What one input holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parsed {
    /// A reference graph (JSON, registration, exportReferencesGraph).
    Records(Vec<Record>),
    /// A plain list of store paths; references come from scanning.
    List(Vec<String>),
}

/// Detects the format of one input file's bytes and parses it.
pub(super) fn parse_input(input: &str, bytes: &[u8]) -> Result<Parsed, ClosureError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(malformed(input, "is empty; expected nix path-info JSON, a closureInfo registration, an exportReferencesGraph file or a list of store paths")),
        Some(b'[') | Some(b'{') => parse_json(input, bytes).map(Parsed::Records),
        Some(_) => {
            let text = std::str::from_utf8(bytes).map_err(|e| {
                malformed(
                    input,
                    format!("byte offset {}: not UTF-8 text", e.valid_up_to()),
                )
            })?;
            let has_count_line = text.lines().any(|l| {
                let l = l.trim();
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit())
            });
            if has_count_line {
                parse_registration(input, text).map(Parsed::Records)
            } else {
                parse_list(input, text).map(Parsed::List)
            }
        }
    }
}

/// `nix path-info --json` in either form, or a structured-attrs exportReferencesGraph.
fn parse_json(input: &str, bytes: &[u8]) -> Result<Vec<Record>, ClosureError> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        let what = if e.is_eof() {
            format!(
                "JSON is truncated (line {}, column {})",
                e.line(),
                e.column()
            )
        } else {
            format!("invalid JSON: {e}")
        };
        malformed(input, what)
    })?;
    match &v {
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| json_record(input, &format!("entry {i}"), None, item))
            .collect(),
        serde_json::Value::Object(map) => {
            if map.keys().any(|k| store_path(k).is_some()) {
                // Newer Nix: keyed by store path.
                map.iter()
                    .map(|(k, item)| json_record(input, &format!("key {k:?}"), Some(k), item))
                    .collect()
            } else {
                // Structured attrs: {"name": [ {path, narSize, references, …}, … ], …}.
                let mut out = Vec::new();
                let mut found = false;
                for (k, val) in map {
                    if let serde_json::Value::Array(items) = val {
                        if items.first().and_then(|o| o.get("path")).is_some() {
                            found = true;
                            for (i, item) in items.iter().enumerate() {
                                out.push(json_record(
                                    input,
                                    &format!("{k:?} entry {i}"),
                                    None,
                                    item,
                                )?);
                            }
                        }
                    }
                }
                if !found {
                    return Err(malformed(input, "JSON object is neither keyed by store path (nix path-info --json) nor holds a list of {path, references} objects (exportReferencesGraph)"));
                }
                Ok(out)
            }
        }
        _ => Err(malformed(
            input,
            "JSON is neither an array nor an object of store paths",
        )),
    }
}

fn json_record(
    input: &str,
    at: &str,
    key: Option<&str>,
    item: &serde_json::Value,
) -> Result<Record, ClosureError> {
    let bad = |what: String| malformed(input, format!("{at}: {what}"));
    if item.is_null() {
        return Err(bad("the path is not valid in the store (null); build or fetch it, then run nix path-info again".into()));
    }
    let obj = item
        .as_object()
        .ok_or_else(|| bad("expected an object".into()))?;
    let raw = match key {
        Some(k) => k,
        None => obj
            .get("path")
            .and_then(|p| p.as_str())
            .ok_or_else(|| bad("no \"path\" string".into()))?,
    };
    let path = store_path(raw).ok_or_else(|| {
        bad(format!(
            "{raw:?} is not a store path (/nix/store/<hash>-<name>)"
        ))
    })?;
    if obj.get("valid").and_then(|v| v.as_bool()) == Some(false) {
        return Err(bad(format!(
            "{path} is not valid in the store; build or fetch it, then run nix path-info again"
        )));
    }
    let nar_size = match obj.get("narSize") {
        None | Some(serde_json::Value::Null) => None,
        Some(n) => Some(
            n.as_u64()
                .ok_or_else(|| bad(format!("{path}: narSize {n} is not a size")))?,
        ),
    };
    let refs = obj
        .get("references")
        .and_then(|r| r.as_array())
        .ok_or_else(|| bad(format!("{path}: no \"references\" list")))?;
    let references = refs
        .iter()
        .map(|r| {
            r.as_str().and_then(store_path).ok_or_else(|| {
                bad(format!(
                    "{path}: reference {r} is not a store path (/nix/store/<hash>-<name>)"
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let nar_hash = obj
        .get("narHash")
        .and_then(|h| h.as_str())
        .map(str::to_string);
    Ok(Record {
        path,
        nar_size,
        nar_hash,
        references,
    })
}

/// The `nix-store --dump-db` / closureInfo `registration` format, and exportReferencesGraph
/// (records without the hash and size lines). Per record: path, [narHash, narSize,]
/// deriver (may be empty), reference count, references.
fn parse_registration(input: &str, text: &str) -> Result<Vec<Record>, ClosureError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let at = |n: usize, what: String| malformed(input, format!("line {}: {what}", n + 1));
    while i < lines.len() {
        if lines[i].trim().is_empty() {
            i += 1;
            continue;
        }
        let start = i;
        let path = store_path(lines[i].trim()).ok_or_else(|| {
            at(
                i,
                format!(
                    "{:?} is not a store path (a record starts with /nix/store/<hash>-<name>)",
                    lines[i]
                ),
            )
        })?;
        let truncated = |n: usize, what: &str| {
            malformed(
                input,
                format!(
                    "line {}: ends inside the record of {path} (line {}); expected {what}",
                    n + 1,
                    start + 1
                ),
            )
        };
        let get = |n: usize, what: &str| lines.get(n).copied().ok_or_else(|| truncated(n, what));
        let is_count = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        i += 1;
        let l1 = get(i, "the hash or deriver")?;
        let mut nar_size = None;
        let mut nar_hash = None;
        if !l1.is_empty() && !l1.starts_with('/') {
            // narHash, then narSize.
            nar_hash = Some(l1.trim().to_string());
            i += 1;
            let s = get(i, "the NAR size")?;
            if !s.is_empty() {
                nar_size = Some(
                    s.trim()
                        .parse::<u64>()
                        .map_err(|_| at(i, format!("NAR size {s:?} is not a number")))?,
                );
            }
            i += 1; // deriver
            get(i, "the deriver")?;
        } else if !is_count(get(i + 1, "the reference count")?) {
            if l1.is_empty() && get(i + 1, "the NAR size")?.is_empty() {
                i += 2; // empty hash and size lines, then the deriver
                get(i, "the deriver")?;
            } else {
                return Err(at(
                    i + 1,
                    format!(
                        "expected the reference count of {path}, found {:?}",
                        lines[i + 1]
                    ),
                ));
            }
        }
        i += 1;
        let c = get(i, "the reference count")?;
        if !is_count(c.trim()) {
            return Err(at(
                i,
                format!("expected the reference count of {path}, found {c:?}"),
            ));
        }
        let count: usize = c
            .trim()
            .parse()
            .map_err(|_| at(i, format!("reference count {c:?} is too large")))?;
        let mut references = Vec::new();
        for _ in 0..count {
            i += 1;
            let r = get(i, "a reference")?;
            references.push(store_path(r.trim()).ok_or_else(|| {
                at(
                    i,
                    format!(
                        "reference {r:?} of {path} is not a store path (the count says {count})"
                    ),
                )
            })?);
        }
        i += 1;
        out.push(Record {
            path,
            nar_size,
            nar_hash,
            references,
        });
    }
    Ok(out)
}

/// The input formats [`load`] detects, to parse one of them on purpose ([`parse_bytes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    /// `nix path-info --json` (either form) or a structured-attrs exportReferencesGraph.
    Json,
    /// closureInfo `registration` / `nix-store --dump-db` / exportReferencesGraph records.
    Registration,
    /// A plain list of store paths.
    List,
}

/// Parses one closure input's bytes as `format` (`None`: detected as [`load`] does) and
/// returns every store path it names (paths and references), without touching the store.
/// For fuzzing and tests; errors are the ones `load` gives for the same bytes.
pub fn parse_bytes(
    input: &str,
    bytes: &[u8],
    format: Option<InputFormat>,
) -> Result<Vec<String>, ClosureError> {
    let text = || {
        std::str::from_utf8(bytes).map_err(|e| {
            malformed(
                input,
                format!("byte offset {}: not UTF-8 text", e.valid_up_to()),
            )
        })
    };
    let parsed = match format {
        None => parse_input(input, bytes)?,
        Some(InputFormat::Json) => Parsed::Records(parse_json(input, bytes)?),
        Some(InputFormat::Registration) => Parsed::Records(parse_registration(input, text()?)?),
        Some(InputFormat::List) => Parsed::List(parse_list(input, text()?)?),
    };
    Ok(match parsed {
        Parsed::Records(recs) => recs
            .into_iter()
            .flat_map(|r| std::iter::once(r.path).chain(r.references))
            .collect(),
        Parsed::List(paths) => paths,
    })
}

/// A plain list of store paths; blank lines and `#` comments are skipped.
fn parse_list(input: &str, text: &str) -> Result<Vec<String>, ClosureError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        out.push(store_path(l).ok_or_else(|| {
            malformed(
                input,
                format!(
                    "line {}: {l:?} is not a store path (/nix/store/<hash>-<name>)",
                    n + 1
                ),
            )
        })?);
    }
    if out.is_empty() {
        return Err(malformed(input, "lists no store paths"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "/nix/store/0kwfpbiwpkrc415hz2ykpagpzw5pk1mr-busybox-static";
    const B: &str = "/nix/store/6w1z088wcnwgiw7qnlrf5v4rnngspq7c-greeting";
    const C: &str = "/nix/store/07v862jyjr4jfbiyxhkzm276y8p0dyv5-fixture-lib";

    fn rec(path: &str, size: Option<u64>, refs: &[&str]) -> Record {
        Record {
            path: path.into(),
            nar_size: size,
            nar_hash: None,
            references: refs.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn hashed(mut r: Record, h: &str) -> Record {
        r.nar_hash = Some(h.into());
        r
    }

    fn err_text(r: Result<Parsed, ClosureError>) -> String {
        r.expect_err("should fail").to_string()
    }

    #[test]
    fn both_json_forms_parse_to_the_same_records() {
        let array = format!(
            r#"[{{"path":"{C}","narHash":"sha256-FacjNYKtDtW+x28WNRMOPK2/WhC1xyjX/aHv/gJITr0=","narSize":2152,
                "references":["{A}","{B}"],"deriver":"/nix/store/i04d2dv5pc5bps6mxhmskq3ga63vr8nf-fixture-lib.drv",
                "registrationTime":1795619747,"ultimate":true}},
               {{"path":"{A}","narSize":1983504,"references":[]}},
               {{"path":"{B}","narSize":152,"references":[],"ca":"text:sha256:0q3k"}}]"#
        );
        let object = format!(
            r#"{{"{C}":{{"narHash":"sha256-FacjNYKtDtW+x28WNRMOPK2/WhC1xyjX/aHv/gJITr0=","narSize":2152,"references":["{A}","6w1z088wcnwgiw7qnlrf5v4rnngspq7c-greeting"]}},
                "{A}":{{"narSize":1983504,"references":[]}},"{B}":{{"narSize":152,"references":[]}}}}"#
        );
        let mut a = match parse_input("a.json", array.as_bytes()).unwrap() {
            Parsed::Records(r) => r,
            p => panic!("{p:?}"),
        };
        let mut o = match parse_input("o.json", object.as_bytes()).unwrap() {
            Parsed::Records(r) => r,
            p => panic!("{p:?}"),
        };
        a.sort_by(|x, y| x.path.cmp(&y.path));
        o.sort_by(|x, y| x.path.cmp(&y.path));
        assert_eq!(a, o);
        assert_eq!(
            a[0],
            hashed(
                rec(C, Some(2152), &[A, B]),
                "sha256-FacjNYKtDtW+x28WNRMOPK2/WhC1xyjX/aHv/gJITr0="
            )
        );
    }

    #[test]
    fn structured_attrs_export_graph_json_parses() {
        let j = format!(
            r#"{{"closure":[{{"closureSize":1,"narHash":"sha256:0q3k","narSize":152,"path":"{B}","references":["{B}"]}}],"name":"x","system":"x86_64-linux"}}"#
        );
        assert_eq!(
            parse_input("attrs.json", j.as_bytes()).unwrap(),
            Parsed::Records(vec![hashed(rec(B, Some(152), &[B]), "sha256:0q3k")])
        );
    }

    #[test]
    fn truncated_and_malformed_json_name_the_file_and_position() {
        let full = format!(r#"[{{"path":"{A}","narSize":1,"references":[]}}]"#);
        let e = err_text(parse_input("in.json", &full.as_bytes()[..30]));
        assert!(
            e.contains("in.json") && e.contains("truncated") && e.contains("column"),
            "{e}"
        );
        let e = err_text(parse_input("in.json", b"[{\"path\": 12,}]"));
        assert!(
            e.contains("in.json") && e.contains("invalid JSON") && e.contains("line 1"),
            "{e}"
        );
        let e = err_text(parse_input("in.json", br#"[{"narSize": 1}]"#));
        assert!(e.contains("entry 0") && e.contains("\"path\""), "{e}");
        let e = err_text(parse_input(
            "in.json",
            format!(r#"[{{"path":"{A}","narSize":1}}]"#).as_bytes(),
        ));
        assert!(e.contains("no \"references\""), "{e}");
        let e = err_text(parse_input(
            "in.json",
            format!(r#"[{{"path":"{A}","valid":false}}]"#).as_bytes(),
        ));
        assert!(e.contains("not valid in the store"), "{e}");
        let e = err_text(parse_input(
            "in.json",
            format!(r#"{{"{A}":null}}"#).as_bytes(),
        ));
        assert!(e.contains("not valid in the store"), "{e}");
        let e = err_text(parse_input(
            "in.json",
            format!(r#"[{{"path":"{A}","narSize":1,"references":["/etc/passwd"]}}]"#).as_bytes(),
        ));
        assert!(
            e.contains("/etc/passwd") && e.contains("not a store path"),
            "{e}"
        );
        let e = err_text(parse_input("in.json", b"{\"a\": 1}"));
        assert!(e.contains("neither keyed by store path"), "{e}");
        let e = err_text(parse_input("in.json", b"  \n"));
        assert!(e.contains("is empty"), "{e}");
    }

    #[test]
    fn dump_db_records_parse() {
        let text = format!(
            "{A}\na9da20ec0aa4ba9fe1b9ffd0b23d2945c068ca2b9f2ab54f4906a7a1d0608443\n1983504\n\
             /nix/store/jhsy8m2zvh02936mq9nfpnrh6qg0ykg5-busybox-static.drv\n0\n\
             {B}\n158bd698a3f17a32b00f73119a03242ee1138625087b404355b6ae5007b8e4fc\n152\n\n0\n\
             {C}\n15a7233582ad0ed5bec76f1635130e3cadbf5a10b5c728d7fda1effe02484ebd\n2152\n\
             /nix/store/i04d2dv5pc5bps6mxhmskq3ga63vr8nf-fixture-lib.drv\n3\n{A}\n{B}\n{C}\n"
        );
        assert_eq!(
            parse_input("registration", text.as_bytes()).unwrap(),
            Parsed::Records(vec![
                hashed(
                    rec(A, Some(1983504), &[]),
                    "a9da20ec0aa4ba9fe1b9ffd0b23d2945c068ca2b9f2ab54f4906a7a1d0608443"
                ),
                hashed(
                    rec(B, Some(152), &[]),
                    "158bd698a3f17a32b00f73119a03242ee1138625087b404355b6ae5007b8e4fc"
                ),
                hashed(
                    rec(C, Some(2152), &[A, B, C]),
                    "15a7233582ad0ed5bec76f1635130e3cadbf5a10b5c728d7fda1effe02484ebd"
                ),
            ])
        );
    }

    #[test]
    fn export_references_graph_records_parse() {
        // As Nix writes it: path, empty deriver, count, references.
        let text = format!("{C}\n\n2\n{A}\n{B}\n{A}\n\n0\n{B}\n\n0\n");
        assert_eq!(
            parse_input("graph", text.as_bytes()).unwrap(),
            Parsed::Records(vec![
                rec(C, None, &[A, B]),
                rec(A, None, &[]),
                rec(B, None, &[])
            ])
        );
        // With a deriver, and with empty hash and size lines.
        let text = format!(
            "{C}\n/nix/store/i04d2dv5pc5bps6mxhmskq3ga63vr8nf-x.drv\n1\n{A}\n{A}\n\n\n\n0\n"
        );
        assert_eq!(
            parse_input("graph", text.as_bytes()).unwrap(),
            Parsed::Records(vec![rec(C, None, &[A]), rec(A, None, &[])])
        );
    }

    #[test]
    fn truncated_and_malformed_registrations_name_the_line() {
        let e = err_text(parse_input("reg", format!("{C}\n\n2\n{A}\n").as_bytes()));
        assert!(
            e.contains("reg: line 5") && e.contains("ends inside the record"),
            "{e}"
        );
        let e = err_text(parse_input(
            "reg",
            format!("{C}\nabc\nxyz\n\n0\n").as_bytes(),
        ));
        assert!(e.contains("line 3") && e.contains("NAR size"), "{e}");
        let e = err_text(parse_input(
            "reg",
            format!("{C}\n\n1\nnot-a-path\n").as_bytes(),
        ));
        assert!(
            e.contains("line 4") && e.contains("not a store path"),
            "{e}"
        );
        let e = err_text(parse_input("reg", b"garbage\n\n0\n"));
        assert!(e.contains("line 1") && e.contains("garbage"), "{e}");
    }

    #[test]
    fn plain_lists_parse_and_bad_lines_are_named() {
        let text = format!("# closure\n{A}\n\n  {B}  \n");
        assert_eq!(
            parse_input("list", text.as_bytes()).unwrap(),
            Parsed::List(vec![A.into(), B.into()])
        );
        let e = err_text(parse_input(
            "list",
            format!("{A}\n/usr/bin/ls\n").as_bytes(),
        ));
        assert!(
            e.contains("list: line 2") && e.contains("/usr/bin/ls"),
            "{e}"
        );
        let e = err_text(parse_input("list", b"/nix/store/x\xff\n"));
        assert!(e.contains("byte offset 12") && e.contains("UTF-8"), "{e}");
    }
}
