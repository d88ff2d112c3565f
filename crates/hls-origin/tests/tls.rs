//! HTTPS with `--tls-cert`/`--tls-key`, with certificates made here by `openssl`: curl
//! (verifying against the test CA) gets the same playlist shape and byte-identical segments
//! as from a plain origin with the same settings; plain HTTP on the TLS port is a counted
//! handshake failure; `hls-origin healthcheck` speaks TLS to its server; bad certificate
//! settings are one line and exit 2. One test on purpose: the healthcheck picks sibling
//! servers, so no other server of this file may run beside it.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (install the openssl package)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate it signs for localhost and 127.0.0.1; a second key that
/// belongs to no certificate.
fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-days",
        "2",
        "-subj",
        "/CN=hls-origin test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(dir, &a);
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend([
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    openssl(dir, &a);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "stray.key",
        ],
    );
}

fn curl(ca: &Path, url: &str) -> (bool, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "5", "--cacert"])
        .arg(ca)
        .arg(url)
        .output()
        .expect("run curl");
    (out.status.success(), out.stdout)
}

fn origin_exit(args: &[&str]) -> (Option<i32>, String) {
    let out = command()
        .args(["--port", "0"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of one sample line of a /metrics page.
fn metrics_value(page: &[u8], series: &str) -> Option<u64> {
    String::from_utf8_lossy(page).lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
#[ignore = "full: needs openssl and curl"]
fn the_origin_serves_https_and_its_healthcheck_follows() {
    let dir = std::env::temp_dir().join(format!("hls-origin-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    make_certs(&dir);
    let (cert, key, ca) = (
        dir.join("server.pem"),
        dir.join("server.key"),
        dir.join("ca.pem"),
    );
    let s = |p: &Path| p.to_str().unwrap().to_string();

    // Bad settings first (no server of ours runs yet): one line each, exit 2.
    let (code, err) = origin_exit(&["--tls-cert", &s(&cert)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--tls-cert and --tls-key go together"),
        "{err}"
    );
    let missing = dir.join("missing.pem");
    let (code, err) = origin_exit(&["--tls-cert", &s(&missing), "--tls-key", &s(&key)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("missing.pem") && err.lines().count() == 1,
        "{err}"
    );
    let (code, err) = origin_exit(&[
        "--tls-cert",
        &s(&cert),
        "--tls-key",
        &s(&dir.join("stray.key")),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("do not go together"), "{err}");

    // Same settings over TLS and plain: same playlists, byte-identical segments.
    let settings = [
        "--segment-duration",
        "2",
        "--list-size",
        "4",
        "--variants",
        "360p:640x360:500k/550k/1000k:64k",
    ];
    let plain = Server::start(&settings);
    let port = reserved_port();
    let log = testkit::ChildLog::new("hls-origin (TLS)");
    let mut child = command()
        .current_dir(&dir)
        .args(["--port", &port.to_string(), "--log-level", "info"])
        // Relative paths: the healthcheck resolves them in the server's working directory.
        .args(["--tls-cert", "server.pem", "--tls-key", "server.key"])
        .args(["--header-timeout", "1"])
        .args(settings)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.stdio())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let line = log.wait_for_line("hls-origin listening", Duration::from_secs(20), || {
        matches!(child.try_wait(), Ok(None))
    });
    assert!(
        line.as_deref()
            .is_some_and(|l| l.contains("scheme=\"https\"")),
        "{}",
        log.text()
    );
    let _child = Kill(child);
    let https = |path: &str| format!("https://localhost:{port}{path}");
    let t0 = Instant::now();
    while !curl(&ca, &https("/health")).0 {
        assert!(t0.elapsed() < Duration::from_secs(20), "{}", log.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, body) = curl(&ca, &https("/stream.m3u8"));
    assert!(ok);
    let pl = String::from_utf8(body).unwrap();
    assert!(
        pl.starts_with("#EXTM3U") && pl.contains("#EXT-X-PROGRAM-DATE-TIME:"),
        "{pl}"
    );
    let seg = pl
        .lines()
        .rfind(|l| l.ends_with(".ts"))
        .unwrap()
        .to_string();
    let (ok, over_tls) = curl(&ca, &https(&format!("/{seg}")));
    assert!(ok, "GET {seg} over TLS");
    let over_http = plain.get(&format!("/{seg}"));
    assert_eq!(over_http.status, 200);
    assert!(over_tls.len() > 100_000, "{} bytes", over_tls.len());
    assert!(over_tls == over_http.body, "segment {seg} differs over TLS");

    // Plain HTTP on the TLS port gets no HTTP answer; the origin counts a failed handshake.
    {
        use std::io::{Read, Write};
        let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let _ = sock.read_to_end(&mut answer);
        assert!(
            !answer.starts_with(b"HTTP/"),
            "plain HTTP got an HTTP answer"
        );
    }
    // A peer that connects and never starts the handshake is closed by --header-timeout.
    {
        use std::io::Read;
        let mut silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let t = Instant::now();
        let mut b = [0u8; 64];
        let n = silent.read(&mut b).unwrap_or(0);
        assert_eq!(n, 0, "the server sent something to a silent peer");
        assert!(
            t.elapsed() < Duration::from_secs(9),
            "not closed by --header-timeout"
        );
    }
    let (_, metrics) = curl(&ca, &https("/metrics"));
    assert!(
        metrics_value(
            &metrics,
            "hls_origin_connections_closed_total{reason=\"header_timeout\"}"
        )
        .is_some_and(|n| n >= 1),
        "{}",
        String::from_utf8_lossy(&metrics)
    );
    let failed = metrics_value(&metrics, "hls_origin_tls_handshake_errors_total");
    assert!(
        failed.is_some_and(|n| n >= 1),
        "{}",
        String::from_utf8_lossy(&metrics)
    );

    // The healthcheck finds the TLS server (its sibling, on the reserved port) and speaks TLS.
    drop(plain);
    let out = command().arg("healthcheck").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}\n{}", log.text());
    assert!(
        said.contains(&format!("healthy: https://127.0.0.1:{port}/health")),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
