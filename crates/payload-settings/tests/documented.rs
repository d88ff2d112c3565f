//! docs/PROFILES.md documents every payload setting a profile carries: a row of its settings
//! tables names the profile key, the environment variable and the built-in default.

use payload_settings::{origin, swarm, Setting};

fn rows() -> Vec<Vec<String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROFILES.md");
    let text = std::fs::read_to_string(path).expect("docs/PROFILES.md");
    text.lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

fn assert_documented(section: &str, all: &[Setting]) {
    let rows = rows();
    for s in all {
        let key = format!("`{section}.{}`", s.key);
        let row = rows
            .iter()
            .find(|r| r.first() == Some(&key))
            .unwrap_or_else(|| panic!("docs/PROFILES.md has no row for {key}"));
        assert_eq!(
            row.get(1).map(String::as_str),
            Some(format!("`{}`", s.env).as_str()),
            "{key}: the variable"
        );
        let default = if s.default.is_empty() {
            "(empty)".to_string()
        } else {
            format!("`{}`", s.default)
        };
        assert_eq!(
            row.get(2).map(String::as_str),
            Some(default.as_str()),
            "{key}: the built-in default"
        );
    }
}

#[test]
fn every_origin_setting_is_documented() {
    assert_documented("origin", origin::ALL);
}

#[test]
fn every_swarm_setting_is_documented() {
    assert_documented("swarm", swarm::ALL);
}
