//! The settings contract: flag > env > default for every setting and every way of writing the
//! flag, read back with `--print-config`.

mod common;

use serde_json::{json, Value};

use common::*;

struct Row {
    flag: &'static str,
    env: &'static str,
    default: Value,
    env_value: &'static str,
    env_json: Value,
    flag_value: &'static str,
    flag_json: Value,
}

fn rows() -> Vec<Row> {
    let r = |flag, env, default, env_value, env_json, flag_value, flag_json| Row {
        flag,
        env,
        default,
        env_value,
        env_json,
        flag_value,
        flag_json,
    };
    vec![
        r(
            "port",
            "PORT",
            json!(17080),
            "18001",
            json!(18001),
            "18002",
            json!(18002),
        ),
        r(
            "bind",
            "BIND",
            json!("0.0.0.0"),
            "127.0.0.1",
            json!("127.0.0.1"),
            "::1",
            json!("::1"),
        ),
        r(
            "segment-duration",
            "SEGMENT_DURATION",
            json!(2.0),
            "1.5",
            json!(1.5),
            "0.5",
            json!(0.5),
        ),
        r(
            "list-size",
            "LIST_SIZE",
            json!(10),
            "6",
            json!(6),
            "15",
            json!(15),
        ),
        r(
            "delete-threshold",
            "DELETE_THRESHOLD",
            json!(5),
            "3",
            json!(3),
            "7",
            json!(7),
        ),
        r(
            "playlist-name",
            "PLAYLIST_NAME",
            json!("stream.m3u8"),
            "env.m3u8",
            json!("env.m3u8"),
            "flag.m3u8",
            json!("flag.m3u8"),
        ),
        r(
            "master-name",
            "MASTER_NAME",
            json!("master.m3u8"),
            "em.m3u8",
            json!("em.m3u8"),
            "fm.m3u8",
            json!("fm.m3u8"),
        ),
        r(
            "segment-pattern",
            "SEGMENT_PATTERN",
            json!("seg%05d.ts"),
            "e%03d.ts",
            json!("e%03d.ts"),
            "f%06d.ts",
            json!("f%06d.ts"),
        ),
        r(
            "fps",
            "FPS",
            json!(30.0),
            "25",
            json!(25.0),
            "60",
            json!(60.0),
        ),
        r(
            "variants",
            "VARIANTS",
            json!("1080p:1920x1080:5000k/5500k/10000k:128k"),
            "720p:1280x720:2000k/2200k/4000k:128k",
            json!("720p:1280x720:2000k/2200k/4000k:128k"),
            "360p:640x360:500k/550k/1000k:64k",
            json!("360p:640x360:500k/550k/1000k:64k"),
        ),
        r(
            "access-log",
            "ACCESS_LOG",
            json!("off"),
            "segments",
            json!("segments"),
            "all",
            json!("all"),
        ),
        r(
            "log-level",
            "LOG_LEVEL",
            json!("info"),
            "warning",
            json!("warn"),
            "debug",
            json!("debug"),
        ),
        r(
            "source",
            "SOURCE_DIR",
            json!(""),
            "/srv/env-segments",
            json!("/srv/env-segments"),
            "/srv/flag-segments",
            json!("/srv/flag-segments"),
        ),
        r(
            "header-timeout",
            "HEADER_TIMEOUT",
            json!(10.0),
            "3",
            json!(3.0),
            "0.5",
            json!(0.5),
        ),
        r(
            "keepalive-timeout",
            "KEEPALIVE_TIMEOUT",
            json!(75.0),
            "30",
            json!(30.0),
            "5",
            json!(5.0),
        ),
        r(
            "send-timeout",
            "SEND_TIMEOUT",
            json!(60.0),
            "20",
            json!(20.0),
            "2.5",
            json!(2.5),
        ),
        r(
            "max-connections",
            "MAX_CONNECTIONS",
            json!(0),
            "5000",
            json!(5000),
            "100",
            json!(100),
        ),
        r(
            "tls-cert",
            "TLS_CERT",
            json!(""),
            "/run/env/cert.pem",
            json!("/run/env/cert.pem"),
            "/run/flag/cert.pem",
            json!("/run/flag/cert.pem"),
        ),
        r(
            "tls-key",
            "TLS_KEY",
            json!(""),
            "/run/env/key.pem",
            json!("/run/env/key.pem"),
            "/run/flag/key.pem",
            json!("/run/flag/key.pem"),
        ),
    ]
}

fn print_config(args: &[String], env: Option<(&str, &str)>) -> Value {
    let mut c = command();
    c.args(args);
    if let Some((k, v)) = env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} {env:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn flag_beats_env_beats_default_for_every_setting_and_spelling() {
    let rows = rows();
    for (i, row) in rows.iter().enumerate() {
        // Another setting on the line, so "first" and "last" mean something.
        let other = &rows[(i + 1) % rows.len()];
        let other_args = vec![format!("--{}", other.flag), other.flag_value.to_string()];
        let check = |args: Vec<String>, env: Option<(&str, &str)>, value: &Value, source: &str| {
            let got = print_config(&args, env);
            assert_eq!(
                got[row.flag],
                json!({"value": value, "source": source}),
                "{} with {args:?} env {env:?}",
                row.flag
            );
            assert_eq!(got[other.flag]["source"], "flag", "{args:?}");
        };
        let base = || {
            let mut a = vec!["--print-config".to_string()];
            a.extend(other_args.clone());
            a
        };
        check(base(), None, &row.default, "default");
        check(base(), Some((row.env, row.env_value)), &row.env_json, "env");
        let spellings: [Vec<String>; 2] = [
            vec![format!("--{}", row.flag), row.flag_value.to_string()],
            vec![format!("--{}={}", row.flag, row.flag_value)],
        ];
        for spelled in &spellings {
            for first in [true, false] {
                let mut args = if first { spelled.clone() } else { base() };
                args.extend(if first { base() } else { spelled.clone() });
                check(args.clone(), None, &row.flag_json, "flag");
                check(args, Some((row.env, row.env_value)), &row.flag_json, "flag");
            }
        }
    }
}

#[test]
fn print_config_lists_every_setting() {
    let got = print_config(&["--print-config".to_string()], None);
    let keys: Vec<&str> = got
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for row in rows() {
        assert!(
            keys.contains(&row.flag),
            "{} missing from {keys:?}",
            row.flag
        );
    }
    assert_eq!(keys.len(), rows().len());
}

#[test]
fn bad_values_are_usage_errors() {
    for (args, env) in [
        (vec!["--port", "http"], None),
        (vec!["--segment-duration", "0"], None),
        (vec!["--segment-pattern", "seg.ts"], None),
        (vec!["--variants", "720p:1280x720:2000k:128k"], None),
        (vec!["--print-config"], Some(("LIST_SIZE", "zero"))),
        (vec!["--print-config"], Some(("ACCESS_LOG", "sometimes"))),
        (vec!["--header-timeout", "0"], None),
        (vec!["--print-config"], Some(("SEND_TIMEOUT", "soon"))),
        (vec!["--print-config", "--keepalive-timeout", "1e9"], None),
        (vec!["--print-config"], Some(("MAX_CONNECTIONS", "-1"))),
    ] {
        let mut c = command();
        c.args(&args);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} {env:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn help_documents_layout_env_and_healthcheck() {
    let out = command().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        "[env: PORT=]",
        "[env: SEGMENT_DURATION=]",
        "HEADER_TIMEOUT=]",
        "MAX_CONNECTIONS=]",
        "docs/hardening.md",
        "/<variant>/stream.m3u8",
        "healthcheck",
        "flag > environment variable > built-in default",
    ] {
        assert!(help.contains(want), "--help lacks {want:?}:\n{help}");
    }
}
