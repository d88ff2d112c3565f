//! A client for the OCI distribution protocol (what `docker push` speaks), on `ureq` with
//! rustls: references, credentials (Docker config, credential helpers, a given user and
//! password), Basic and Bearer auth, blob existence checks, cross-repository mounts,
//! monolithic and chunked uploads, manifests, and retries with backoff on 5xx and dropped
//! connections. Every failure is a [`RegistryError`] that reads as one line.
//!
//! The steps and the decisions behind them are in docs/push-and-sbom.md.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Input(String),
    #[error("{host}: unknown host ({detail}); check the registry name in the reference")]
    UnknownHost { host: String, detail: String },
    #[error("{host}: connection refused; is the registry running and listening there?")]
    Refused { host: String },
    #[error("{host}: TLS failure: {reason}{hint}")]
    Tls {
        host: String,
        reason: String,
        hint: &'static str,
    },
    #[error("{host}: {detail}")]
    Transport { host: String, detail: String },
    #[error("{url}: 401 unauthorized: {message}; check the credentials (--username/--password-stdin or the Docker config)")]
    Unauthorized { url: String, message: String },
    #[error("{url}: 403 forbidden: {message}; these credentials may not push to this repository")]
    Forbidden { url: String, message: String },
    #[error("{url}: 404 not found: {message}; check the repository name")]
    NotFound { url: String, message: String },
    #[error("{url}: the registry reports a digest mismatch: {message}")]
    DigestMismatch { url: String, message: String },
    #[error("{url}: HTTP {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{what}: {err}")]
    Io { what: String, err: io::Error },
}

/// Errors that are the user's input (exit 2) rather than a failed push.
impl crate::error::Classify for RegistryError {
    fn exit_class(&self) -> crate::error::ExitClass {
        if matches!(self, RegistryError::Input(_)) {
            crate::error::ExitClass::BadInput
        } else {
            crate::error::ExitClass::Failure
        }
    }
}

impl RegistryError {
    fn retryable(&self) -> bool {
        match self {
            RegistryError::Status { status, .. } => *status >= 500,
            RegistryError::Transport { .. } => true,
            _ => false,
        }
    }
}

type R<T> = Result<T, RegistryError>;

/// `registry.example:5000/hls-origin:low-latency` split up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` as written (Docker Hub is `registry-1.docker.io`).
    pub registry: String,
    pub repository: String,
    /// The tag, or a `sha256:` digest.
    pub tag: String,
}

impl Reference {
    pub fn parse(s: &str) -> R<Reference> {
        let bad = |why: &str| {
            RegistryError::Input(format!(
                "image reference {s:?}: {why}; write it as HOST[:PORT]/NAME[:TAG], e.g. 127.0.0.1:5000/hls-origin:default"
            ))
        };
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(bad("empty or contains spaces"));
        }
        let (name, tag) = if let Some((n, d)) = s.split_once('@') {
            (n, d.to_string())
        } else {
            match s.rfind(':') {
                Some(i) if !s[i + 1..].contains('/') => (&s[..i], s[i + 1..].to_string()),
                _ => (s, "latest".to_string()),
            }
        };
        let (registry, repository) = match name.split_once('/') {
            Some((h, rest)) if h.contains('.') || h.contains(':') || h == "localhost" => {
                (h.to_string(), rest.to_string())
            }
            _ => (
                "registry-1.docker.io".to_string(),
                if name.contains('/') {
                    name.to_string()
                } else {
                    format!("library/{name}")
                },
            ),
        };
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        if !repo_ok {
            return Err(bad(
                "the repository name must be lowercase letters, digits, '.', '_', '-' and '/'",
            ));
        }
        let tag_ok = if tag.starts_with("sha256:") {
            tag.len() == 71
        } else {
            !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        if !tag_ok {
            return Err(bad("bad tag"));
        }
        Ok(Reference {
            registry,
            repository,
            tag,
        })
    }

    /// The host without the port (brackets kept off an IPv6 address).
    pub fn host(&self) -> &str {
        let r = self.registry.as_str();
        if let Some(rest) = r.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        r.rsplit_once(':').map_or(r, |(h, _)| h)
    }

    /// Plain HTTP is implied for loopback: `localhost`, 127.0.0.0/8 and `[::1]`.
    pub fn is_loopback(&self) -> bool {
        let h = self.host();
        h == "localhost"
            || h == "::1"
            || h.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| a.octets()[0] == 127)
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.tag.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        write!(f, "{}/{}{sep}{}", self.registry, self.repository, self.tag)
    }
}

/// A user name and password (or identity token) for one registry.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

/// The Docker config's directory: `$DOCKER_CONFIG`, else `~/.docker`.
fn docker_config_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker"))
}

/// `https://host:5000/v1/` → `host:5000`, as the keys of `auths` are written in many ways.
fn normalise_host(k: &str) -> &str {
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    k.split('/').next().unwrap_or(k)
}

/// Credentials for `registry` from the Docker config: a credential helper
/// (`credHelpers`, then `credsStore`) or an `auths` entry. `Ok(None)` when none is set.
pub fn docker_config_credentials(registry: &str) -> R<Option<Credentials>> {
    let Some(dir) = docker_config_dir() else {
        return Ok(None);
    };
    let path = dir.join("config.json");
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(RegistryError::Io {
                what: path.display().to_string(),
                err,
            })
        }
    };
    let cfg: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
        RegistryError::Input(format!(
            "{}: not valid JSON ({e}); fix or move the Docker config",
            path.display()
        ))
    })?;
    // Docker Hub's entry is keyed by its v1 URL.
    let keys: Vec<&str> = if registry == "registry-1.docker.io" {
        vec![
            "https://index.docker.io/v1/",
            "index.docker.io",
            "docker.io",
        ]
    } else {
        vec![registry]
    };
    let helper = keys
        .iter()
        .find_map(|k| cfg["credHelpers"][*k].as_str())
        .or_else(|| cfg["credsStore"].as_str());
    if let Some(h) = helper.filter(|h| !h.is_empty()) {
        if let Some(c) = credential_helper(h, keys[0])? {
            return Ok(Some(c));
        }
    }
    if let Some(auths) = cfg["auths"].as_object() {
        for (k, v) in auths {
            if !keys.contains(&normalise_host(k)) {
                continue;
            }
            if let Some(a) = v["auth"].as_str().filter(|a| !a.is_empty()) {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(a)
                    .map_err(|_| {
                        RegistryError::Input(format!(
                            "{}: auths.{k}.auth is not base64; log in again",
                            path.display()
                        ))
                    })?;
                let raw = String::from_utf8_lossy(&raw).into_owned();
                let (u, p) = raw.split_once(':').ok_or_else(|| {
                    RegistryError::Input(format!(
                        "{}: auths.{k}.auth is not USER:PASSWORD; log in again",
                        path.display()
                    ))
                })?;
                return Ok(Some(Credentials {
                    username: u.to_string(),
                    password: p.to_string(),
                }));
            }
            if let Some(t) = v["identitytoken"].as_str() {
                return Ok(Some(Credentials {
                    username: "<token>".into(),
                    password: t.to_string(),
                }));
            }
        }
    }
    Ok(None)
}

/// Runs `docker-credential-NAME get` with the registry on stdin.
fn credential_helper(name: &str, registry: &str) -> R<Option<Credentials>> {
    use std::io::Write;
    let prog = format!("docker-credential-{name}");
    let mut child = std::process::Command::new(&prog)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            RegistryError::Input(format!(
                "the Docker config names credential helper {prog}, which cannot run ({e}); install it or remove it from the config"
            ))
        })?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(registry.as_bytes());
    }
    let out = child.wait_with_output().map_err(|err| RegistryError::Io {
        what: prog.clone(),
        err,
    })?;
    if !out.status.success() {
        // "credentials not found" is not an error: push anonymously.
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| RegistryError::Input(format!("{prog} get: unreadable answer ({e})")))?;
    match (v["Username"].as_str(), v["Secret"].as_str()) {
        (Some(u), Some(s)) => Ok(Some(Credentials {
            username: u.to_string(),
            password: s.to_string(),
        })),
        _ => Ok(None),
    }
}

/// How to reach the registry.
pub struct ClientOptions {
    pub plain_http: bool,
    pub ca_file: Option<PathBuf>,
    pub credentials: Option<Credentials>,
    /// Retries after the first attempt on 5xx and dropped connections.
    pub retries: u32,
}

/// A session with one repository of one registry.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    host: String,
    pub repository: String,
    credentials: Option<Credentials>,
    /// The `Authorization` header in effect, learnt from the first 401.
    auth: Mutex<Option<String>>,
    retries: u32,
}

fn tls_config(ca_file: Option<&Path>) -> R<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(f) = ca_file {
        let bad = |why: String| {
            RegistryError::Input(format!(
                "--ca-file {}: {why}; give a PEM file of CA certificates",
                f.display()
            ))
        };
        let mut n = 0;
        for c in
            rustls_pki_types::CertificateDer::pem_file_iter(f).map_err(|e| bad(e.to_string()))?
        {
            let c = c.map_err(|e| bad(e.to_string()))?;
            roots.add(c).map_err(|e| bad(e.to_string()))?;
            n += 1;
        }
        if n == 0 {
            return Err(bad("no certificate in it".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RegistryError::Input(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// `application/json` error bodies of the distribution spec: `{"errors":[{code,message}]}`.
fn registry_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some(errs) = v["errors"].as_array() {
            let parts: Vec<String> = errs
                .iter()
                .map(|e| {
                    let code = e["code"].as_str().unwrap_or("");
                    let msg = e["message"].as_str().unwrap_or("");
                    match (code.is_empty(), msg.is_empty()) {
                        (false, false) => format!("{code}: {msg}"),
                        (false, true) => code.to_string(),
                        _ => msg.to_string(),
                    }
                })
                .collect();
            if !parts.is_empty() {
                return parts.join("; ");
            }
        }
    }
    let t = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.is_empty() {
        "(no message)".into()
    } else {
        t.chars().take(200).collect()
    }
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// `Bearer realm="…",service="…"` → ("bearer", {realm, service, …}).
fn parse_challenge(h: &str) -> (String, std::collections::BTreeMap<String, String>) {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    let mut params = std::collections::BTreeMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (&q[..end], q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(k, v.to_string());
        rest = next.trim_start_matches(',').trim();
    }
    (scheme.to_ascii_lowercase(), params)
}

/// Gives a reader of a blob from a byte offset on (chunked uploads and retries reopen).
pub type Opener<'a> = dyn Fn(u64) -> io::Result<Box<dyn Read + 'a>> + 'a;

/// What to send: nothing, bytes, or a reader made anew for each attempt.
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    Reader {
        open: &'a dyn Fn() -> io::Result<Box<dyn Read + 'a>>,
        len: u64,
    },
}

pub struct Resp {
    pub status: u16,
    pub location: Option<String>,
    pub digest: Option<String>,
    pub body: String,
}

impl Client {
    pub fn new(reference: &Reference, o: &ClientOptions) -> R<Client> {
        let scheme = if o.plain_http { "http" } else { "https" };
        let mut b = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(300))
            .timeout_write(Duration::from_secs(300))
            .redirects(0)
            // Keep a connection per thread of a push (ureq keeps one per host by default,
            // so the others would connect anew for every request).
            .max_idle_connections_per_host(32);
        if !o.plain_http {
            b = b.tls_config(tls_config(o.ca_file.as_deref())?);
        }
        Ok(Client {
            agent: b.build(),
            base: format!("{scheme}://{}", reference.registry),
            host: reference.registry.clone(),
            repository: reference.repository.clone(),
            credentials: o.credentials.clone(),
            auth: Mutex::new(None),
            retries: o.retries,
        })
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// One transport-level failure in one line, classified.
    fn transport(&self, t: &ureq::Transport) -> RegistryError {
        let host = self.host.clone();
        // The rustls error, if there is one, anywhere in the chain.
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(t);
        while let Some(e) = cur {
            if let Some(r) = e.downcast_ref::<rustls::Error>() {
                return tls_error(host, r);
            }
            if let Some(io) = e.downcast_ref::<io::Error>() {
                if let Some(r) = io.get_ref().and_then(|x| x.downcast_ref::<rustls::Error>()) {
                    return tls_error(host, r);
                }
                if io.kind() == io::ErrorKind::ConnectionRefused {
                    return RegistryError::Refused { host };
                }
            }
            cur = e.source();
        }
        let detail = t
            .message()
            .map(str::to_string)
            .or_else(|| std::error::Error::source(t).map(|s| s.to_string()))
            .unwrap_or_else(|| t.kind().to_string());
        match t.kind() {
            ureq::ErrorKind::Dns => RegistryError::UnknownHost { host, detail },
            ureq::ErrorKind::ConnectionFailed if detail.contains("refused") => {
                RegistryError::Refused { host }
            }
            _ => RegistryError::Transport { host, detail },
        }
    }

    /// Sends one request with the auth in effect; on a 401 learns the challenge, gets a
    /// token (Bearer) or uses the credentials (Basic) and sends once more. `scope` is the
    /// Bearer scope to ask for. Retries 5xx and dropped connections with backoff.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &Body,
        scope: &str,
    ) -> R<Resp> {
        // One request; on a 401, authenticate as the challenge says and send once more.
        let authed = || -> R<Resp> {
            let r = self.send_once(method, path, headers, body)?;
            if r.0 != 401 {
                return self.check(method, path, r);
            }
            let challenge = r.1.clone();
            self.authenticate(&challenge, scope, path)?;
            let r = self.send_once(method, path, headers, body)?;
            self.check(method, path, r)
        };
        let mut attempt = 0;
        loop {
            match authed() {
                Err(e) if e.retryable() && attempt < self.retries => {
                    attempt += 1;
                    let wait = Duration::from_millis(250 << attempt.min(6));
                    tracing::warn!("{e}; retry {attempt}/{} in {wait:?}", self.retries);
                    std::thread::sleep(wait);
                }
                r => return r,
            }
        }
    }

    /// (status, www-authenticate, location, digest header, body)
    #[allow(clippy::type_complexity)]
    fn send_once(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &Body,
    ) -> R<(u16, String, Option<String>, Option<String>, String)> {
        let url = self.url(path);
        let mut req = self.agent.request(method, &url);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        if let Some(a) = self.auth.lock().expect("auth lock").clone() {
            req = req.set("Authorization", &a);
        }
        let res = match body {
            Body::Empty if method == "PUT" || method == "POST" || method == "PATCH" => {
                req.set("Content-Length", "0").send_bytes(&[])
            }
            Body::Empty => req.call(),
            Body::Bytes(b) => req.send_bytes(b),
            Body::Reader { open, len } => {
                let r = open().map_err(|err| RegistryError::Io {
                    what: "reading the blob".into(),
                    err,
                })?;
                req.set("Content-Length", &len.to_string()).send(r)
            }
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => return Err(self.transport(&t)),
        };
        let status = resp.status();
        let www = resp.header("www-authenticate").unwrap_or("").to_string();
        let location = resp.header("location").map(str::to_string);
        let digest = resp.header("docker-content-digest").map(str::to_string);
        let text = if method == "HEAD" {
            String::new()
        } else {
            let mut s = String::new();
            let _ = resp.into_reader().take(1 << 20).read_to_string(&mut s);
            s
        };
        Ok((status, www, location, digest, text))
    }

    fn check(
        &self,
        _method: &str,
        path: &str,
        r: (u16, String, Option<String>, Option<String>, String),
    ) -> R<Resp> {
        let (status, _, location, digest, body) = r;
        let url = self.url(path.split('?').next().unwrap_or(path));
        let message = || registry_message(&body);
        match status {
            200..=299 | 404 if path.contains("/blobs/sha256:") || path.contains("/manifests/") => {
                Ok(Resp {
                    status,
                    location,
                    digest,
                    body,
                })
            }
            200..=399 => Ok(Resp {
                status,
                location,
                digest,
                body,
            }),
            401 => Err(RegistryError::Unauthorized {
                url,
                message: message(),
            }),
            403 => Err(RegistryError::Forbidden {
                url,
                message: message(),
            }),
            404 => Err(RegistryError::NotFound {
                url,
                message: message(),
            }),
            400 if body.contains("HTTP request to an HTTPS server") => Err(RegistryError::Status {
                url,
                status,
                message: "the registry speaks HTTPS; give its CA with --ca-file (loopback registries are otherwise reached over plain HTTP)".into(),
            }),
            400 if body.contains("DIGEST_INVALID") => Err(RegistryError::DigestMismatch {
                url,
                message: message(),
            }),
            _ => Err(RegistryError::Status {
                url,
                status,
                message: message(),
            }),
        }
    }

    fn authenticate(&self, challenge: &str, scope: &str, path: &str) -> R<()> {
        let (scheme, p) = parse_challenge(challenge);
        let url = self.url(path.split('?').next().unwrap_or(path));
        let unauthorized = |m: &str| RegistryError::Unauthorized {
            url: url.clone(),
            message: m.to_string(),
        };
        match scheme.as_str() {
            "basic" => {
                let c = self.credentials.as_ref().ok_or_else(|| {
                    unauthorized("the registry wants a user name and password and none was given")
                })?;
                *self.auth.lock().expect("auth lock") = Some(basic(c));
                Ok(())
            }
            "bearer" => {
                let realm = p
                    .get("realm")
                    .ok_or_else(|| unauthorized("a Bearer challenge without a realm"))?;
                // One `scope` parameter per scope (the token spec's form; a space-joined
                // list reads as one malformed scope), the realm's own query kept.
                let mut q = realm.clone();
                let mut sep = if realm.contains('?') { '&' } else { '?' };
                if let Some(s) = p.get("service") {
                    q.push_str(&format!("{sep}service={}", enc(s)));
                    sep = '&';
                }
                for s in scope.split_whitespace() {
                    q.push_str(&format!("{sep}scope={}", enc(s)));
                    sep = '&';
                }
                let mut req = self.agent.get(&q);
                if let Some(c) = &self.credentials {
                    req = req.set("Authorization", &basic(c));
                }
                let resp = match req.call() {
                    Ok(r) => r,
                    Err(ureq::Error::Status(code, r)) => {
                        let body = r.into_string().unwrap_or_default();
                        let message = registry_message(&body);
                        return Err(match code {
                            401 => RegistryError::Unauthorized {
                                url: realm.clone(),
                                message,
                            },
                            403 => RegistryError::Forbidden {
                                url: realm.clone(),
                                message,
                            },
                            _ => RegistryError::Status {
                                url: realm.clone(),
                                status: code,
                                message,
                            },
                        });
                    }
                    Err(ureq::Error::Transport(t)) => return Err(self.transport(&t)),
                };
                let text = resp.into_string().map_err(|err| RegistryError::Io {
                    what: format!("{realm}: reading the token"),
                    err,
                })?;
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                let tok = v["token"]
                    .as_str()
                    .or_else(|| v["access_token"].as_str())
                    .ok_or_else(|| unauthorized("the token service answered without a token"))?;
                *self.auth.lock().expect("auth lock") = Some(format!("Bearer {tok}"));
                Ok(())
            }
            _ => Err(unauthorized(&format!(
                "unsupported authentication challenge {challenge:?}"
            ))),
        }
    }

    fn scope(&self) -> String {
        format!("repository:{}:pull,push", self.repository)
    }

    /// Checks the API root (`/v2/`), authenticating once, so the first real request
    /// already carries credentials and a wrong password fails before anything is sent.
    pub fn ping(&self) -> R<()> {
        let scope = self.scope();
        let r = self.send_once("GET", "/v2/", &[], &Body::Empty)?;
        if r.0 == 401 {
            self.authenticate(&r.1, &scope, "/v2/")?;
            let r = self.send_once("GET", "/v2/", &[], &Body::Empty)?;
            self.check("GET", "/v2/", r)?;
        } else {
            self.check("GET", "/v2/", r)?;
        }
        Ok(())
    }

    /// Whether the repository has the blob.
    pub fn blob_exists(&self, digest: &str) -> R<bool> {
        let path = format!("/v2/{}/blobs/{digest}", self.repository);
        let r = self.send("HEAD", &path, &[], &Body::Empty, &self.scope())?;
        Ok(r.status == 200)
    }

    /// Asks the registry to mount the blob from another repository; true when it did.
    pub fn mount(&self, digest: &str, from: &str) -> R<bool> {
        let path = format!(
            "/v2/{}/blobs/uploads/?mount={}&from={}",
            self.repository,
            enc(digest),
            enc(from)
        );
        let scope = format!("{} repository:{from}:pull", self.scope());
        let r = self.send("POST", &path, &[], &Body::Empty, &scope)?;
        Ok(r.status == 201)
    }

    fn start_upload(&self) -> R<String> {
        let path = format!("/v2/{}/blobs/uploads/", self.repository);
        let r = self.send("POST", &path, &[], &Body::Empty, &self.scope())?;
        r.location.ok_or_else(|| RegistryError::Status {
            url: self.url(&path),
            status: r.status,
            message: "the upload was accepted without a Location".into(),
        })
    }

    fn with_digest(loc: &str, digest: &str) -> String {
        let sep = if loc.contains('?') { '&' } else { '?' };
        format!("{loc}{sep}digest={}", enc(digest))
    }

    /// Uploads a blob: one PUT when it is at most `chunk` bytes, else PATCH chunks and a
    /// closing PUT. `open(offset)` gives a reader at that byte.
    pub fn upload(&self, digest: &str, len: u64, chunk: u64, open: &Opener<'_>) -> R<()> {
        let loc = self.start_upload()?;
        let scope = self.scope();
        if len <= chunk {
            let o = || open(0);
            let r = self.send(
                "PUT",
                &Self::with_digest(&loc, digest),
                &[("Content-Type", "application/octet-stream")],
                &Body::Reader { open: &o, len },
                &scope,
            )?;
            return self.expect_created(r, digest);
        }
        let mut loc = loc;
        let mut off = 0;
        while off < len {
            let n = chunk.min(len - off);
            let o = || Ok(Box::new(open(off)?.take(n)) as Box<dyn Read>);
            let range = format!("{off}-{}", off + n - 1);
            let r = self.send(
                "PATCH",
                &loc,
                &[
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Range", &range),
                ],
                &Body::Reader { open: &o, len: n },
                &scope,
            )?;
            if let Some(l) = r.location {
                loc = l;
            }
            off += n;
        }
        let r = self.send(
            "PUT",
            &Self::with_digest(&loc, digest),
            &[],
            &Body::Empty,
            &scope,
        )?;
        self.expect_created(r, digest)
    }

    fn expect_created(&self, r: Resp, digest: &str) -> R<()> {
        if let Some(d) = &r.digest {
            if d != digest {
                return Err(RegistryError::DigestMismatch {
                    url: self.base.clone(),
                    message: format!("sent {digest}, the registry stored {d}"),
                });
            }
        }
        Ok(())
    }

    /// Puts a manifest under `reference` (a tag or digest); returns the registry's digest.
    pub fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> R<Option<String>> {
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let r = self.send(
            "PUT",
            &path,
            &[("Content-Type", media_type)],
            &Body::Bytes(bytes),
            &self.scope(),
        )?;
        if r.status == 404 {
            return Err(RegistryError::NotFound {
                url: self.url(&path),
                message: registry_message(&r.body),
            });
        }
        Ok(r.digest)
    }

    /// The referrers API (OCI distribution 1.1): the index of manifests whose `subject` is
    /// `digest`, or `None` where the registry has no such API (404, or not an index).
    pub fn referrers(&self, digest: &str) -> R<Option<serde_json::Value>> {
        let path = format!("/v2/{}/referrers/{digest}", self.repository);
        match self.get_json(&path, crate::oci::image::MT_INDEX) {
            Ok(Some(v)) if v["manifests"].is_array() => Ok(Some(v)),
            Ok(_) | Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(RegistryError::Status { status, .. }) if status == 400 || status == 405 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Uploads in-memory bytes as a blob in one PUT (the caller knows it is missing).
    pub fn put_blob(&self, digest: &str, bytes: &[u8]) -> R<()> {
        let len = bytes.len() as u64;
        self.upload(digest, len, len.max(1), &|off| {
            Ok(Box::new(&bytes[(off as usize).min(bytes.len())..]) as Box<dyn Read>)
        })
    }

    /// GETs a path of this registry's API as JSON; `None` on 404.
    pub fn get_json(&self, path: &str, accept: &str) -> R<Option<serde_json::Value>> {
        let r = self.send(
            "GET",
            path,
            &[("Accept", accept)],
            &Body::Empty,
            &self.scope(),
        )?;
        if r.status == 404 {
            return Ok(None);
        }
        serde_json::from_str(&r.body)
            .map(Some)
            .map_err(|e| RegistryError::Status {
                url: self.url(path),
                status: r.status,
                message: format!("not JSON: {e}"),
            })
    }
}

fn basic(c: &Credentials) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password))
    )
}

fn tls_error(host: String, e: &rustls::Error) -> RegistryError {
    let hint = match e {
        rustls::Error::InvalidCertificate(_) => {
            "; give the registry's CA with --ca-file, or use --plain-http for a plain-HTTP registry"
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "; is this a plain-HTTP registry? then use --plain-http"
        }
        _ => "",
    };
    RegistryError::Tls {
        host,
        reason: e.to_string(),
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("registry.example:5000/hls-origin:low-latency").unwrap();
        assert_eq!(r.registry, "registry.example:5000");
        assert_eq!(r.repository, "hls-origin");
        assert_eq!(r.tag, "low-latency");
        assert_eq!(r.host(), "registry.example");
        assert!(!r.is_loopback());
        let r = Reference::parse("127.0.0.1:5000/a/b").unwrap();
        assert_eq!((r.repository.as_str(), r.tag.as_str()), ("a/b", "latest"));
        assert!(r.is_loopback());
        assert!(Reference::parse("[::1]:5000/x:y").unwrap().is_loopback());
        assert!(Reference::parse("localhost:5000/x").unwrap().is_loopback());
        assert!(!Reference::parse("128.0.0.1:5000/x").unwrap().is_loopback());
        assert_eq!(
            Reference::parse("hls-origin").unwrap().repository,
            "library/hls-origin"
        );
        assert!(Reference::parse("127.0.0.1:5000/Upper:x").is_err());
        assert!(Reference::parse("127.0.0.1:5000/x:bad tag").is_err());
        assert!(Reference::parse("127.0.0.1:5000/x:").is_err());
    }

    #[test]
    fn challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a:pull""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a:pull");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(s, "basic");
        assert_eq!(p["realm"], "Registry Realm");
    }

    #[test]
    fn messages() {
        assert_eq!(
            registry_message(
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#
            ),
            "UNAUTHORIZED: authentication required"
        );
        assert_eq!(registry_message(""), "(no message)");
    }
}
