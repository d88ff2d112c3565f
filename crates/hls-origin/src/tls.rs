//! HTTPS for `--tls-cert FILE --tls-key FILE` (docs/tls.md): the rustls server configuration,
//! loaded once at start (a bad file is one line and exit 2), and how a TLS connection sends a
//! segment body. The plain-http path never touches this module: it keeps `sendfile(2)`.
//!
//! Session resumption: TLS 1.3 tickets from a rotating ticketer (stateless for the server)
//! and a 4096-entry session cache for TLS 1.2 session ids, so viewers that reconnect skip the
//! full handshake.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerSessionMemoryCache;
use rustls::ServerConfig;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

use crate::body::{send_timed_out, FileRange};

/// Why `--tls-cert` / `--tls-key` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("--tls-cert {0}: {1}; give a PEM file with the server certificate (then its chain)")]
    Cert(PathBuf, String),
    #[error("--tls-cert {0}: no certificate in it; give a PEM file with the server certificate (then its chain)")]
    NoCert(PathBuf),
    #[error(
        "--tls-key {0}: {1}; give the PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate"
    )]
    Key(PathBuf, String),
    #[error("--tls-cert {0} and --tls-key {1} do not go together: {2}")]
    Mismatch(PathBuf, PathBuf, rustls::Error),
}

/// The certificates of a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsSetupError::Cert(path.to_path_buf(), e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::Cert(path.to_path_buf(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCert(path.to_path_buf()));
    }
    Ok(certs)
}

/// The acceptor for `--tls-cert` / `--tls-key`.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsSetupError> {
    let certs = load_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsSetupError::Key(key.to_path_buf(), e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| TlsSetupError::Mismatch(cert.to_path_buf(), key.to_path_buf(), e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(4096);
    config.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| TlsSetupError::Mismatch(cert.to_path_buf(), key.to_path_buf(), e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Bytes of a memfd segment read per TLS write (one TLS record's worth of plaintext).
const FILE_CHUNK: usize = 16 * 1024;

/// Write `head` then `body` through TLS (`sock`): the bytes must pass through user space to be
/// encrypted, so they are read from the memfd in 16 KiB chunks (no copy of the whole segment
/// per response). Fails with `TimedOut` when a write makes no progress for `send_timeout`.
pub async fn send_file<W: AsyncWrite + Unpin>(
    sock: &mut W,
    head: &[u8],
    body: FileRange<'_>,
    send_timeout: Duration,
) -> io::Result<()> {
    let (mut off, mut len) = (body.off, body.len);
    tokio::time::timeout(send_timeout, sock.write_all(head))
        .await
        .map_err(|_| send_timed_out(send_timeout))??;
    let mut chunk = vec![0u8; FILE_CHUNK.min(len.max(1))];
    while len > 0 {
        let n = len.min(chunk.len());
        body.file.read_exact_at(&mut chunk[..n], off)?;
        let mut b = &chunk[..n];
        while !b.is_empty() {
            let w = tokio::time::timeout(send_timeout, sock.write(b))
                .await
                .map_err(|_| send_timed_out(send_timeout))??;
            if w == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            b = &b[w..];
        }
        off += n as u64;
        len -= n;
    }
    Ok(())
}
