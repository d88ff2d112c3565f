//! TLS for `https://` viewers (docs/tls.md): one rustls `ClientConfig` shared by every viewer
//! (an `Arc`, so its session-resumption cache is shared too: a reconnecting viewer resumes
//! instead of a full handshake), and the reasons a handshake fails, as metric labels.
//!
//! Trust: the system's roots (rustls-native-certs reads the OS store, e.g.
//! /etc/ssl/certs, and honours SSL_CERT_FILE / SSL_CERT_DIR), plus the CAs of `--ca-file`.
//! `--insecure` skips certificate checks altogether (signatures of the handshake are still
//! checked, so the connection is still TLS) and is said once, loudly, at start.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, RootCertStore};

/// Why a TLS handshake failed; `label()` is the metrics label and JSON key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsReason {
    /// The server's certificate is past its notAfter.
    Expired,
    /// The server's certificate is before its notBefore.
    NotYetValid,
    /// The certificate chain does not lead to a trusted root (self-signed, private CA not
    /// given with --ca-file).
    UnknownIssuer,
    /// The certificate is not valid for the host name (or IP address) of the URL.
    NameMismatch,
    /// The certificate was revoked.
    Revoked,
    /// Any other certificate problem (bad encoding, wrong key usage, bad signature).
    BadCertificate,
    /// The server sent an alert (for example it wants a client certificate, or shares no
    /// protocol version or cipher suite with us).
    Alert,
    /// Anything else during the handshake: the peer closed or does not speak TLS.
    Handshake,
}

/// Every reason, in a fixed order (metric arrays are indexed by it).
pub const TLS_REASONS: [TlsReason; 8] = [
    TlsReason::Expired,
    TlsReason::NotYetValid,
    TlsReason::UnknownIssuer,
    TlsReason::NameMismatch,
    TlsReason::Revoked,
    TlsReason::BadCertificate,
    TlsReason::Alert,
    TlsReason::Handshake,
];

impl TlsReason {
    pub fn label(self) -> &'static str {
        match self {
            TlsReason::Expired => "expired",
            TlsReason::NotYetValid => "not_yet_valid",
            TlsReason::UnknownIssuer => "unknown_issuer",
            TlsReason::NameMismatch => "name_mismatch",
            TlsReason::Revoked => "revoked",
            TlsReason::BadCertificate => "bad_certificate",
            TlsReason::Alert => "alert",
            TlsReason::Handshake => "handshake",
        }
    }

    pub fn index(self) -> usize {
        TLS_REASONS.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// The reason of a failed handshake (tokio-rustls reports rustls errors inside io errors).
    pub fn of(e: &io::Error) -> TlsReason {
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidCertificate(c)) => match c {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    TlsReason::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    TlsReason::NotYetValid
                }
                CertificateError::UnknownIssuer => TlsReason::UnknownIssuer,
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsReason::NameMismatch,
                CertificateError::Revoked => TlsReason::Revoked,
                _ => TlsReason::BadCertificate,
            },
            Some(rustls::Error::AlertReceived(_)) => TlsReason::Alert,
            _ => TlsReason::Handshake,
        }
    }
}

/// Setting up TLS failed (bad `--ca-file`).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("--ca-file {0}: cannot read it as PEM certificates ({1}); give a PEM file with one or more CA certificates")]
    CaFile(PathBuf, String),
    #[error(
        "--ca-file {0}: no certificate in it; give a PEM file with one or more CA certificates"
    )]
    CaFileEmpty(PathBuf),
    #[error("--ca-file {0}: certificate {1} is not a usable CA certificate ({2})")]
    CaCert(PathBuf, usize, rustls::Error),
}

/// How the swarm trusts servers.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
}

/// The shared client configuration: system roots plus `--ca-file`, or no verification with
/// `--insecure`. Returns the config and how many system roots were loaded.
pub fn client_config(s: &TlsSettings) -> Result<(Arc<ClientConfig>, usize), TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let mut system = 0;
    let mut config = if s.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!("system CA store: {e}");
        }
        let (added, _) = roots.add_parsable_certificates(native.certs);
        system = added;
        if let Some(path) = &s.ca_file {
            add_ca_file(&mut roots, path)?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    // HTTP/1.1 only (the client speaks nothing else).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), system))
}

fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsSetupError> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsSetupError::CaFile(path.to_path_buf(), e.to_string()))?;
    let mut n = 0;
    for (i, cert) in iter.enumerate() {
        let cert = cert.map_err(|e| TlsSetupError::CaFile(path.to_path_buf(), e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TlsSetupError::CaCert(path.to_path_buf(), i + 1, e))?;
        n += 1;
    }
    if n == 0 {
        return Err(TlsSetupError::CaFileEmpty(path.to_path_buf()));
    }
    Ok(())
}

/// `--insecure`: any certificate is accepted; handshake signatures are still verified.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    crate::tls_signatures::provider_signature_checks!(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_come_from_the_rustls_error_inside_the_io_error() {
        let wrap = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let cases = [
            (CertificateError::Expired, "expired"),
            (CertificateError::UnknownIssuer, "unknown_issuer"),
            (CertificateError::NotValidForName, "name_mismatch"),
            (CertificateError::NotValidYet, "not_yet_valid"),
            (CertificateError::BadSignature, "bad_certificate"),
        ];
        for (c, label) in cases {
            assert_eq!(
                TlsReason::of(&wrap(rustls::Error::InvalidCertificate(c))).label(),
                label
            );
        }
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(TlsReason::of(&eof), TlsReason::Handshake);
        for (i, r) in TLS_REASONS.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn a_ca_file_that_is_not_pem_is_one_clear_error() {
        let dir = std::env::temp_dir().join(format!("hls-swarm-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("notpem.txt");
        std::fs::write(&f, "hello\n").unwrap();
        let e = client_config(&TlsSettings {
            ca_file: Some(f.clone()),
            insecure: false,
        })
        .unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        let e = client_config(&TlsSettings {
            ca_file: Some(dir.join("missing.pem")),
            insecure: false,
        })
        .unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
