//! `hls-origin healthcheck`: the container image's healthcheck (images have no curl or shell).
//!
//! It must follow the server's *effective* settings however they were given (image Env, `docker
//! run IMAGE --port 18080`, `--read-only`), so it does not trust its own environment first: it
//! finds the running server through /proc — a process whose executable is this same file
//! (device + inode of /proc/PID/exe) and whose command line is not a healthcheck — and resolves
//! that process's port and bind address from its /proc/PID/cmdline and /proc/PID/environ with
//! the very same clap parser the server used. Choice among several servers: those sharing our
//! parent (in a container, `docker exec`'d processes and PID 1 both have parent 0; in a shell,
//! siblings), else PID 1, else the only one. Explicit `--port`/`--bind` on the healthcheck's own
//! command line win over discovery; with no server found it uses its own flags/env/defaults.
//! Nothing is written to disk, so it works in a read-only container.
//!
//! A server with `--tls-cert` is probed over TLS, trusting exactly that server's own
//! certificate (the first one of its `--tls-cert` file, resolved against the server's working
//! directory): the probe connects to a loopback address the certificate need not name, and it
//! must not pass for another server on the port.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};

use crate::config::{parse_from, Cli, Command, Settings};

struct Target {
    addr: SocketAddr,
    origin: String,
    /// The server's certificate file (it serves HTTPS).
    tls_cert: Option<PathBuf>,
}

impl Target {
    fn url(&self) -> String {
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}/health", self.addr)
    }
}

pub fn run(own: &Settings, matches: &ArgMatches, timeout: f64) -> i32 {
    let deadline = Instant::now() + Duration::from_secs_f64(timeout.clamp(0.01, 3600.0));
    let explicit = |id| matches.value_source(id) == Some(ValueSource::CommandLine);
    let targets = if explicit("port") || explicit("bind") {
        vec![target(own, "own flags".into())]
    } else {
        match discover() {
            found if !found.is_empty() => found,
            _ => vec![target(
                own,
                "own flags/env/defaults (no server process found)".into(),
            )],
        }
    };
    let mut reasons = Vec::new();
    for t in &targets {
        match probe(t, deadline) {
            Ok(()) => {
                println!("healthy: {} answered 200 ({})", t.url(), t.origin);
                return 0;
            }
            Err(e) => reasons.push(format!("{}: {e} ({})", t.url(), t.origin)),
        }
    }
    println!("unhealthy: {}", reasons.join("; "));
    1
}

fn target(s: &Settings, origin: String) -> Target {
    target_in(s, origin, None)
}

/// `cwd`: the server's working directory, against which a relative --tls-cert is resolved.
fn target_in(s: &Settings, origin: String, cwd: Option<&Path>) -> Target {
    let ip = match s.bind {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let tls_cert = (!s.tls_cert.is_empty()).then(|| match cwd {
        Some(dir) => dir.join(&s.tls_cert),
        None => PathBuf::from(&s.tls_cert),
    });
    Target {
        addr: SocketAddr::new(ip, s.port),
        origin,
        tls_cert,
    }
}

fn probe(t: &Target, deadline: Instant) -> Result<(), String> {
    let addr = t.addr;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or("timed out".to_string())
    };
    let tcp = TcpStream::connect_timeout(&addr, left()?).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    let mut sock: Box<dyn ReadWrite> = match &t.tls_cert {
        None => Box::new(tcp),
        Some(cert) => Box::new(tls_client(cert, addr.ip(), tcp)?),
    };
    sock.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
        left()?;
        let n = sock.read(&mut chunk).map_err(|e| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                "timed out".to_string()
            } else {
                e.to_string()
            }
        })?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|&b| b == b'\r').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    if line.starts_with("HTTP/1.1 200") || line.starts_with("HTTP/1.0 200") {
        Ok(())
    } else if line.is_empty() {
        Err("no HTTP answer".into())
    } else {
        Err(format!("answered {line:?}"))
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A TLS client over `tcp` that trusts exactly the first certificate of `cert_file`.
fn tls_client(
    cert_file: &Path,
    ip: IpAddr,
    tcp: TcpStream,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let pinned = crate::tls::load_certs(cert_file)
        .map_err(|e| e.to_string())?
        .swap_remove(0);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { pinned, provider }))
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(Arc::new(config), ServerName::from(ip))
        .map_err(|e| e.to_string())?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// Accepts the server's own certificate and nothing else.
#[derive(Debug)]
struct Pinned {
    pinned: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server presented another certificate than its --tls-cert".into(),
            ))
        }
    }

    crate::tls_signatures::provider_signature_checks!(provider);
}

struct Proc {
    pid: u32,
    ppid: u32,
    settings: Settings,
    cwd: Option<PathBuf>,
}

fn ppid_of(pid: &str) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn split_nul(b: &[u8]) -> Vec<String> {
    b.split(|&c| c == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Servers of this executable, with settings resolved as they resolved them.
fn servers() -> Vec<Proc> {
    let Ok(me) = std::fs::metadata("/proc/self/exe") else {
        return Vec::new();
    };
    let my_pid = std::process::id();
    let env_names: Vec<String> = Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid_s) = name.to_str() else { continue };
        let Ok(pid) = pid_s.parse::<u32>() else {
            continue;
        };
        if pid == my_pid {
            continue;
        }
        let Ok(meta) = std::fs::metadata(format!("/proc/{pid}/exe")) else {
            continue;
        };
        if meta.dev() != me.dev() || meta.ino() != me.ino() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let args = split_nul(&cmdline);
        if args.is_empty() {
            continue;
        }
        // Resolve with the same clap code, under that process's environment. The healthcheck is
        // single-threaded here, so swapping our own environment is safe.
        for k in &env_names {
            std::env::remove_var(k);
        }
        for kv in split_nul(&environ) {
            if let Some((k, v)) = kv.split_once('=') {
                if env_names.iter().any(|n| n == k) {
                    std::env::set_var(k, v);
                }
            }
        }
        let Ok((cli, _)) = parse_from(&args) else {
            continue;
        };
        if cli.print_config || matches!(cli.command, Some(Command::Healthcheck { .. })) {
            continue;
        }
        let Some(ppid) = ppid_of(pid_s) else { continue };
        out.push(Proc {
            pid,
            ppid,
            settings: cli.settings,
            cwd: std::fs::read_link(format!("/proc/{pid}/cwd")).ok(),
        });
    }
    out
}

fn discover() -> Vec<Target> {
    let all = servers();
    let my_ppid = ppid_of("self").unwrap_or(u32::MAX);
    let pick: Vec<&Proc> = {
        let siblings: Vec<&Proc> = all.iter().filter(|p| p.ppid == my_ppid).collect();
        if !siblings.is_empty() {
            siblings
        } else if let Some(p1) = all.iter().find(|p| p.pid == 1) {
            vec![p1]
        } else if all.len() == 1 {
            vec![&all[0]]
        } else {
            Vec::new()
        }
    };
    pick.into_iter()
        .map(|p| {
            target_in(
                &p.settings,
                format!("server pid {}", p.pid),
                p.cwd.as_deref(),
            )
        })
        .collect()
}
