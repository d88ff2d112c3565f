//! `imgbuild push` through the Bearer token flow against Debian's real `docker-registry`
//! (distribution 2.8) configured with `auth: token:`. The token service is a small HTTP
//! server this test runs on loopback: it checks Basic credentials and issues real JWTs
//! (RS256, the signing certificate in the `x5c` header, claims iss/sub/aud/exp/nbf/iat/jti
//! and `access`), signed by `openssl dgst -sha256 -sign` with a key and self-signed
//! certificate the test makes with `openssl`; the registry trusts that certificate through
//! `rootcertbundle`, so every token it accepts was verified by the registry itself.
//!
//! Checked: a push with credentials succeeds (the token service saw the repository's
//! `pull,push` scope, the registry's service name and the right Basic credentials); a
//! `--mount-from` push asks for each scope as its own `scope` parameter, as the token spec
//! (distribution's docs/spec/auth/token.md) says; a wrong password fails in one line with
//! exit 1; skopeo (`--creds`) and `docker pull` see the pushed image.
//! Full tier: `cargo test --test registry_token -- --include-ignored`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{json, Value};

const SERVICE: &str = "i15-registry";
const ISSUER: &str = "i15-token-issuer";
const USER: &str = "tester";
const PASSWORD: &str = "right-password";

/// One request the token service answered.
#[derive(Clone, Debug)]
struct TokenRequest {
    /// Every `scope` parameter, in order.
    scopes: Vec<String>,
    service: Option<String>,
    /// The Basic credentials sent, if any.
    basic: Option<(String, String)>,
    /// Whether a token was issued (credentials right).
    issued: bool,
}

/// The token service: one thread accepting on a loopback port bound to port 0.
struct TokenServer {
    port: u16,
    seen: Arc<Mutex<Vec<TokenRequest>>>,
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn unpercent(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RS256 over `input` with the test's key, by openssl.
fn rs256(key: &Path, input: &[u8]) -> Vec<u8> {
    let mut c = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    c.stdin.take().unwrap().write_all(input).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "openssl dgst -sign: {}",
        common::stderr(&o)
    );
    o.stdout
}

/// A JWT granting `access` (the registry's claim set) to `sub`.
fn jwt(key: &Path, cert_der: &[u8], sub: &str, access: &Value) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({
        "typ": "JWT",
        "alg": "RS256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(cert_der)],
    });
    static JTI: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let claims = json!({
        "iss": ISSUER,
        "sub": sub,
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("i15-{}-{}", std::process::id(), JTI.fetch_add(1, std::sync::atomic::Ordering::SeqCst)),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = rs256(key, input.as_bytes());
    format!("{input}.{}", b64url(&sig))
}

impl TokenServer {
    fn start(key: PathBuf, cert_der: Vec<u8>) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = Arc::clone(&seen);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (key, cert, seen) = (key.clone(), cert_der.clone(), Arc::clone(&seen2));
                std::thread::spawn(move || {
                    let _ = serve(conn, &key, &cert, &seen);
                });
            }
        });
        TokenServer { port, seen }
    }

    fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    fn seen(&self) -> Vec<TokenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

/// Answers one HTTP request on `conn` (then closes it): GET /token?scope=…&service=….
fn serve(
    conn: TcpStream,
    key: &Path,
    cert_der: &[u8],
    seen: &Mutex<Vec<TokenRequest>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut auth = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut scopes = Vec::new();
    let mut service = None;
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "scope" => scopes.push(unpercent(v)),
            "service" => service = Some(unpercent(v)),
            _ => {}
        }
    }
    let basic = auth
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| {
            let s = String::from_utf8(b).ok()?;
            let (u, p) = s.split_once(':')?;
            Some((u.to_string(), p.to_string()))
        });
    let right = basic
        .as_ref()
        .is_some_and(|(u, p)| u == USER && p == PASSWORD)
        && target.starts_with("/token")
        && service.as_deref() == Some(SERVICE);
    seen.lock().unwrap().push(TokenRequest {
        scopes: scopes.clone(),
        service: service.clone(),
        basic: basic.clone(),
        issued: right,
    });
    let (status, body) = if right {
        // Each scope is `repository:NAME:ACTIONS`; grant pull and push as asked.
        let access: Vec<Value> = scopes
            .iter()
            .filter_map(|s| {
                let mut p = s.splitn(3, ':');
                let (t, name, actions) = (p.next()?, p.next()?, p.next()?);
                let actions: Vec<&str> = actions
                    .split(',')
                    .filter(|a| *a == "pull" || *a == "push")
                    .collect();
                (t == "repository").then(|| json!({"type": t, "name": name, "actions": actions}))
            })
            .collect();
        let token = jwt(key, cert_der, USER, &Value::Array(access));
        (
            "200 OK",
            json!({"token": token, "access_token": token, "expires_in": 300}).to_string(),
        )
    } else {
        (
            "401 Unauthorized",
            json!({"errors": [{"code": "UNAUTHORIZED", "message": "i15 token service: wrong user name or password"}]}).to_string(),
        )
    };
    let mut w = conn;
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

/// Debian's docker-registry with token auth on a reserved loopback port.
struct Registry {
    child: Child,
    log: testkit::ChildLog,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Registry {
    fn start(realm: &str, cert: &Path) -> Registry {
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("i15-registry-")
                .tempdir()
                .unwrap();
            let port = common::reserved_port();
            let cfg = format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                dir.path().join("data").display(),
                cert.display()
            );
            let cfg_path = dir.path().join("config.yml");
            std::fs::write(&cfg_path, cfg).unwrap();
            let log = testkit::ChildLog::new("i15-docker-registry");
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&cfg_path)
                .stdout(log.stdio())
                .stderr(log.stdio())
                .spawn()
                .expect("running docker-registry (apt-get install docker-registry)");
            let mut r = Registry {
                child,
                log,
                _dir: dir,
                port,
            };
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = r.child.try_wait() {
                    break;
                }
                if r.log.text().contains("listening on") && TcpStream::connect(r.addr()).is_ok() {
                    return r;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            last = r.log.text();
            if !last.contains("address already in use") {
                panic!("docker-registry did not start on port {port}:\n{last}");
            }
        }
        panic!("docker-registry found no free port:\n{last}");
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- docker-registry log ---\n{}", self.log.text());
        }
    }
}

/// Removes the pulled image when dropped.
struct DockerImage(String);

impl Drop for DockerImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        common::stderr(&o)
    );
}

fn push(args: &[&str], cache: &Path, password: &str, docker_config: &Path) -> Output {
    let mut c = common::imgbuild();
    c.arg("push")
        .args(args)
        .args(["--username", USER, "--password-stdin"])
        .env("IMGBUILD_CACHE", cache)
        .env("DOCKER_CONFIG", docker_config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

#[test]
#[ignore = "full: needs docker-registry, openssl, skopeo, docker"]
fn bearer_token_push_through_a_real_token_service() {
    let tmp = tempfile::Builder::new()
        .prefix("i15-token-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=i15 token issuer",
            "-keyout",
            "token.key",
            "-out",
            "token.crt",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-in",
            "token.crt",
            "-outform",
            "DER",
            "-out",
            "token.der",
        ],
    );
    let tokens = TokenServer::start(
        dir.join("token.key"),
        std::fs::read(dir.join("token.der")).unwrap(),
    );
    let reg = Registry::start(&tokens.realm(), &dir.join("token.crt"));
    let cache = dir.join("cache");
    let empty_config = dir.join("docker-config-empty");
    std::fs::create_dir_all(&empty_config).unwrap();

    // Without a token the registry answers with a Bearer challenge naming our token service.
    let o = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-D", "-"])
        .arg(format!("http://{}/v2/", reg.addr()))
        .output()
        .unwrap();
    let head = common::stdout(&o).to_ascii_lowercase();
    assert!(
        head.contains(" 401 ")
            && head.contains(&format!(
                "www-authenticate: bearer realm=\"{}\"",
                tokens.realm()
            )),
        "{head}"
    );

    // A push with the right password goes through the token flow.
    let target = format!("{}/i15-origin:token", reg.addr());
    let o = push(
        &["origin/default", &target, "--json"],
        &cache,
        PASSWORD,
        &empty_config,
    );
    assert!(
        o.status.success(),
        "push: {}{}\n--- registry log ---\n{}",
        common::stdout(&o),
        common::stderr(&o),
        reg.log.text()
    );
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    let digest = summary["digest"].as_str().unwrap().to_string();
    assert!(summary["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["action"] == "uploaded"));
    let seen = tokens.seen();
    assert!(
        seen.iter().any(|r| r.issued
            && r.scopes == ["repository:i15-origin:pull,push"]
            && r.service.as_deref() == Some(SERVICE)
            && r.basic == Some((USER.into(), PASSWORD.into()))),
        "the token service saw no request for the push's scope with the credentials: {seen:?}"
    );
    assert!(seen.iter().all(|r| r.issued), "{seen:?}");
    // The registry checked the token: its log names the token's subject on the requests.
    assert!(
        reg.log
            .text()
            .contains(&format!("auth.user.name=\"{USER}\""))
            || reg.log.text().contains(&format!("auth.user.name={USER}")),
        "the registry log shows no request authorised as {USER}:\n{}",
        reg.log.text()
    );

    // A mount from that repository asks for both repositories' scopes, each its own
    // parameter, and the registry links the blobs instead of taking them again.
    let n = tokens.seen().len();
    let copy = format!("{}/i15-copy:token", reg.addr());
    let o = push(
        &[
            "origin/default",
            &copy,
            "--json",
            "--mount-from",
            "i15-origin",
        ],
        &cache,
        PASSWORD,
        &empty_config,
    );
    assert!(
        o.status.success(),
        "mount push: {}{}\n--- registry log ---\n{}",
        common::stdout(&o),
        common::stderr(&o),
        reg.log.text()
    );
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    let layers: Vec<&Value> = s["blobs"].as_array().unwrap().iter().collect();
    assert!(
        layers.iter().all(|b| b["action"] == "mounted"),
        "not every blob was mounted: {s}"
    );
    let later = &tokens.seen()[n..];
    assert!(
        later.iter().any(|r| r.scopes
            == [
                "repository:i15-copy:pull,push",
                "repository:i15-origin:pull"
            ]),
        "no token request with both scopes as separate parameters: {later:?}"
    );

    // A wrong password: one line naming the token service's answer, exit 1, nothing pushed.
    let o = push(
        &[
            "origin/default",
            &format!("{}/i15-wrong:token", reg.addr()),
            "--json",
        ],
        &cache,
        "wrong-password",
        &empty_config,
    );
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("401") && err.contains("wrong user name or password"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    assert!(tokens
        .seen()
        .iter()
        .any(|r| !r.issued && r.basic == Some((USER.into(), "wrong-password".into()))));

    // skopeo, with --creds, goes through the same token service and sees the image.
    let o = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("--creds={USER}:{PASSWORD}"),
        ])
        .arg(format!("docker://{target}"))
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo inspect: {}", common::stderr(&o));
    let inspect: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(inspect["Digest"], digest.as_str());
    assert_eq!(
        inspect["Layers"].as_array().unwrap().len() + 1,
        summary["blobs"].as_array().unwrap().len()
    );

    // docker pull, logged in through a Docker config of this test's own.
    let docker_config = dir.join("docker-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        docker_config.join("config.json"),
        json!({"auths": {reg.addr(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let _image = DockerImage(target.clone());
    let o = Command::new("docker")
        .env("DOCKER_CONFIG", &docker_config)
        .args(["pull", &target])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "docker pull: {}{}",
        common::stdout(&o),
        common::stderr(&o)
    );
    let o = Command::new("docker")
        .args(["image", "inspect", "-f", "{{json .RepoDigests}}", &target])
        .output()
        .unwrap();
    let repo_digests = common::stdout(&o);
    assert!(
        repo_digests.contains(&digest),
        "docker's repo digests {repo_digests} lack {digest}"
    );
    // The same push from the Docker config's credentials (no --username): nothing to send.
    let o = {
        let mut c = common::imgbuild();
        c.args(["push", "origin/default", &target, "--json"])
            .env("IMGBUILD_CACHE", &cache)
            .env("DOCKER_CONFIG", &docker_config)
            .stdin(Stdio::null());
        c.output().unwrap()
    };
    assert!(
        o.status.success(),
        "push with the Docker config: {}",
        common::stderr(&o)
    );
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["digest"], digest.as_str());
    assert!(s["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["action"] == "exists"));
}
