//! The handshake-signature half of a rustls `ServerCertVerifier`, for the verifiers that only
//! decide which certificate to accept and leave the signature checks to the crypto provider:
//! hls-swarm's `--insecure` verifier and hls-origin's healthcheck, which trusts exactly the
//! server's own certificate. hls-origin compiles this file in as a module (`#[path]`), as it
//! does the payload settings, so its dependency list — and the SBOM in every image — stays its
//! own.

/// Expands to `verify_tls12_signature`, `verify_tls13_signature` and
/// `supported_verify_schemes`, checked with the signature algorithms of the `CryptoProvider`
/// at `self.<field>` (an `Arc<CryptoProvider>`).
macro_rules! provider_signature_checks {
    ($field:tt) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.$field.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.$field.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.$field
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}
pub(crate) use provider_signature_checks;
