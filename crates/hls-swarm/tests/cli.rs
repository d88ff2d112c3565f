//! The command-line contract: a missing URL, and the precedence matrix of every setting
//! (default, env only, `--x v`, `--x=v`, both → flag wins, first or last on the line, repeated)
//! as shown by --print-config.

mod common;
use common::*;
use serde_json::{json, Value};

fn print_config(args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut c = swarm();
    c.args(args).arg("--print-config");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?} {env:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--print-config prints JSON")
}

fn with<'a>(mut a: Vec<&'a str>, b: &[&'a str]) -> Vec<&'a str> {
    a.extend_from_slice(b);
    a
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        _ => a == b,
    }
}

fn check(cfg: &Value, key: &str, value: &Value, source: &str, case: &str) {
    let got = &cfg[key];
    assert!(
        same(&got["value"], value) && got["source"] == source,
        "{case}: {key} is {got}, expected value {value} from {source}"
    );
}

/// (key, flag, env, default, env value → resolved, flag value → resolved)
type Row = (
    &'static str,
    &'static str,
    &'static str,
    Value,
    (&'static str, Value),
    (&'static str, Value),
);

fn matrix() -> Vec<Row> {
    vec![
        (
            "clients",
            "--clients",
            "CLIENTS",
            json!(50),
            ("7", json!(7)),
            ("9", json!(9)),
        ),
        (
            "ramp_rate",
            "--ramp-rate",
            "RAMP_RATE",
            json!(5.0),
            ("2.5", json!(2.5)),
            ("20", json!(20.0)),
        ),
        (
            "ramp_jitter",
            "--ramp-jitter",
            "RAMP_JITTER",
            json!(100),
            ("1s", json!(1000)),
            ("250ms", json!(250)),
        ),
        (
            "metrics_port",
            "--metrics-port",
            "METRICS_PORT",
            json!(9090),
            ("9191", json!(9191)),
            ("0", json!(0)),
        ),
        (
            "log_level",
            "--log-level",
            "LOG_LEVEL",
            json!("info"),
            ("warning", json!("warn")),
            ("debug", json!("debug")),
        ),
        (
            "variant",
            "--variant",
            "VARIANT",
            json!("all"),
            ("lowest", json!("lowest")),
            ("highest", json!("highest")),
        ),
        (
            "timeout",
            "--timeout",
            "TIMEOUT",
            json!(15.0),
            ("30", json!(30.0)),
            ("500ms", json!(0.5)),
        ),
        (
            "connect_timeout",
            "--connect-timeout",
            "CONNECT_TIMEOUT",
            json!(5.0),
            ("2", json!(2.0)),
            ("750ms", json!(0.75)),
        ),
        (
            "first_byte_timeout",
            "--first-byte-timeout",
            "FIRST_BYTE_TIMEOUT",
            json!(10.0),
            ("4s", json!(4.0)),
            ("1.5", json!(1.5)),
        ),
        (
            "min_rate",
            "--min-rate",
            "MIN_RATE",
            json!(1000),
            ("8k", json!(8000)),
            ("0", json!(0)),
        ),
        (
            "reconnect",
            "--reconnect",
            "RECONNECT",
            json!(true),
            ("no", json!(false)),
            ("yes", json!(true)),
        ),
        (
            "reconnect_delay_max",
            "--reconnect-delay-max",
            "RECONNECT_DELAY_MAX",
            json!(5.0),
            ("10", json!(10.0)),
            ("2", json!(2.0)),
        ),
        (
            "segment_retries",
            "--segment-retries",
            "SEGMENT_RETRIES",
            json!(3),
            ("5", json!(5)),
            ("1", json!(1)),
        ),
        (
            "duration",
            "--duration",
            "DURATION",
            json!(0.0),
            ("2m", json!(120.0)),
            ("20s", json!(20.0)),
        ),
        (
            "max_error_rate",
            "--max-error-rate",
            "MAX_ERROR_RATE",
            json!(0.01),
            ("0.05", json!(0.05)),
            ("10%", json!(0.1)),
        ),
        (
            "summary_json",
            "--summary-json",
            "SUMMARY_JSON",
            Value::Null,
            ("/tmp/env.json", json!("/tmp/env.json")),
            ("/tmp/flag.json", json!("/tmp/flag.json")),
        ),
        (
            "report",
            "--report",
            "REPORT_HTML",
            Value::Null,
            ("/tmp/env.html", json!("/tmp/env.html")),
            ("/tmp/flag.html", json!("/tmp/flag.html")),
        ),
        (
            "series_json",
            "--series-json",
            "SERIES_JSON",
            Value::Null,
            ("/tmp/env-series.json", json!("/tmp/env-series.json")),
            ("/tmp/flag-series.json", json!("/tmp/flag-series.json")),
        ),
        (
            "url",
            "--url",
            "STREAM_URL",
            Value::Null,
            (
                "http://env.example/master.m3u8",
                json!("http://env.example/master.m3u8"),
            ),
            (
                "http://flag.example/master.m3u8",
                json!("http://flag.example/master.m3u8"),
            ),
        ),
    ]
}

#[test]
fn every_setting_follows_flag_over_env_over_default_in_every_spelling() {
    let url = "http://127.0.0.1:1/master.m3u8";
    for (key, flag, env, default, (ev, ev_json), (fv, fv_json)) in matrix() {
        let eq = format!("{flag}={fv}");
        let other = if key == "url" { vec![] } else { vec![url] };
        // default
        let cfg = print_config(&other, &[]);
        check(&cfg, key, &default, "default", "default");
        // env only
        check(
            &print_config(&other, &[(env, ev)]),
            key,
            &ev_json,
            "env",
            "env only",
        );
        // flag only, `--x v`, first on the line
        check(
            &print_config(&with(vec![flag, fv], &other), &[]),
            key,
            &fv_json,
            "flag",
            "--x v first",
        );
        // flag only, `--x=v`, last on the line
        check(
            &print_config(&with(other.clone(), &[&eq]), &[]),
            key,
            &fv_json,
            "flag",
            "--x=v last",
        );
        // both: the flag wins, either spelling, either place
        check(
            &print_config(&with(vec![flag, fv], &other), &[(env, ev)]),
            key,
            &fv_json,
            "flag",
            "env + --x v first",
        );
        check(
            &print_config(&with(other.clone(), &[flag, fv]), &[(env, ev)]),
            key,
            &fv_json,
            "flag",
            "env + --x v last",
        );
        check(
            &print_config(&with(vec![&eq], &other), &[(env, ev)]),
            key,
            &fv_json,
            "flag",
            "env + --x=v first",
        );
        check(
            &print_config(&with(other.clone(), &[&eq]), &[(env, ev)]),
            key,
            &fv_json,
            "flag",
            "env + --x=v last",
        );
        // repeated: the last occurrence wins
        check(
            &print_config(&with(vec![flag, ev], &with(other.clone(), &[&eq])), &[]),
            key,
            &fv_json,
            "flag",
            "repeated",
        );
    }
}

#[test]
fn the_positional_url_is_a_flag_and_beats_stream_url() {
    let cfg = print_config(
        &["http://pos.example/m.m3u8"],
        &[("STREAM_URL", "http://env.example/m.m3u8")],
    );
    check(
        &cfg,
        "url",
        &json!("http://pos.example/m.m3u8"),
        "flag",
        "positional + env",
    );
    let cfg = print_config(
        &["--clients", "2", "http://pos.example/m.m3u8", "--clients=3"],
        &[],
    );
    check(
        &cfg,
        "url",
        &json!("http://pos.example/m.m3u8"),
        "flag",
        "positional in the middle",
    );
    check(
        &cfg,
        "clients",
        &json!(3),
        "flag",
        "positional in the middle",
    );
}

#[test]
fn a_missing_url_is_one_line_naming_stream_url_and_exit_2() {
    for env in [vec![], vec![("STREAM_URL", "")], vec![("CLIENTS", "3")]] {
        let mut c = swarm();
        c.args(["--clients", "2"]);
        for (k, v) in &env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {err}");
        assert_eq!(err.lines().count(), 1, "exactly one line: {err:?}");
        assert!(err.contains("STREAM_URL"), "{err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn bad_values_are_usage_errors() {
    for args in [
        vec!["http://h/", "--clients", "many"],
        vec!["http://h/", "--variant", "best"],
        vec!["http://h/", "--reconnect", "maybe"],
        vec!["http://h/", "--duration", "3 weeks"],
        vec!["http://h/", "--connect-timeout", "0"],
        vec!["http://h/", "--first-byte-timeout", "soon"],
        vec!["http://h/", "--min-rate", "fast"],
        vec!["ftp://h/master.m3u8"],
        vec!["https://h/", "--max-latency", "0"],
    ] {
        let out = swarm().args(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
