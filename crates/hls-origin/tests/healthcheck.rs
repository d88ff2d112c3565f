//! `hls-origin healthcheck`, the image's healthcheck: it follows the running server's effective
//! settings. One test on purpose: the healthcheck picks servers that are its siblings, so no
//! other test's server may run beside these scenarios (each test file is its own process).

mod common;

use std::net::TcpListener;
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

fn healthcheck(pre: &[&str], post: &[&str], env_port: Option<u16>) -> (Output, Duration) {
    let mut c = command();
    c.args(pre).arg("healthcheck").args(post);
    if let Some(p) = env_port {
        c.env("PORT", p.to_string());
    }
    let t0 = Instant::now();
    let out = c.output().unwrap();
    (out, t0.elapsed())
}

fn line(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn healthcheck_follows_the_server_and_fails_when_it_is_down() {
    // The docker case: image Env says PORT=<image_port>, `docker run IMAGE --port <flag_port>`.
    let image_port = reserved_port();
    let mut cmd = command();
    cmd.env("PORT", image_port.to_string());
    // The healthcheck reads the port from the server's command line: give it a real one.
    let server = Server::start_on(cmd, reserved_port(), &[]);
    let (out, _) = healthcheck(&[], &[], Some(image_port));
    assert_eq!(out.status.code(), Some(0), "{}", line(&out));
    assert!(
        line(&out).contains(&format!(":{}/health", server.port)),
        "probed the flag port: {}",
        line(&out)
    );
    assert_eq!(line(&out).lines().count(), 1);

    // Explicit flags on the healthcheck's own line win over discovery.
    let dead = reserved_port();
    let (out, _) = healthcheck(&["--port", &dead.to_string()], &[], None);
    assert_eq!(out.status.code(), Some(1), "{}", line(&out));
    assert!(
        line(&out).starts_with("unhealthy:") && line(&out).contains(&dead.to_string()),
        "{}",
        line(&out)
    );
    drop(server);

    // A server configured only through its environment (and a non-default bind address).
    let env_port = reserved_port();
    let env_log = testkit::ChildLog::new("hls-origin-env");
    let mut child = command()
        .env("PORT", env_port.to_string())
        .env("BIND", "127.0.0.1")
        .stdout(std::process::Stdio::null())
        .stderr(env_log.stdio())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while try_get(env_port, "/health").is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "hls-origin on PORT={env_port} never answered; its stderr:\n{}",
            env_log.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (out, _) = healthcheck(&[], &["--timeout", "2"], None);
    assert_eq!(out.status.code(), Some(0), "{}", line(&out));
    assert!(
        line(&out).contains(&format!("127.0.0.1:{env_port}")),
        "{}",
        line(&out)
    );

    // Server down: nothing to find, own env points at a closed port.
    child.kill().unwrap();
    child.wait().unwrap();
    let (out, took) = healthcheck(&[], &[], Some(env_port));
    assert_eq!(out.status.code(), Some(1), "{}", line(&out));
    assert!(line(&out).starts_with("unhealthy:"), "{}", line(&out));
    assert_eq!(line(&out).lines().count(), 1);
    assert!(took < Duration::from_secs(2));

    // Something listens but never answers: the timeout is honoured.
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_port = mute.local_addr().unwrap().port();
    let (out, took) = healthcheck(
        &["--port", &mute_port.to_string()],
        &["--timeout", "0.5"],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", line(&out));
    assert!(line(&out).contains("timed out"), "{}", line(&out));
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}
