//! TLS client settings of a server entry: trust roots, a custom CA bundle, a name override,
//! or verification explicitly turned off.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

/// How a server's certificate is checked.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// Verify the certificate chain and name. On by default; off only when an administrator says so.
    pub verify: bool,
    /// A PEM bundle of CAs to trust instead of the system's roots.
    pub ca_pem: Option<String>,
    /// The name to verify (and send as SNI) instead of the host, for relays addressed by IP.
    pub server_name: Option<String>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            verify: true,
            ca_pem: None,
            server_name: None,
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's trust roots, loaded once per process.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let loaded = rustls_native_certs::load_native_certs();
            for error in &loaded.errors {
                tracing::warn!(%error, "could not load a system trust root");
            }
            let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
            tracing::debug!(added, "loaded system trust roots");
            Arc::new(roots)
        })
        .clone()
}

impl TlsSettings {
    /// Builds the connector for these settings.
    pub(crate) fn connector(&self) -> Result<TlsConnector, String> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let config = if !self.verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
                .with_no_client_auth()
        } else if let Some(pem) = &self.ca_pem {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("the CA bundle is not valid PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("the CA bundle holds an unusable certificate: {e}"))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .with_root_certificates(system_roots())
                .with_no_client_auth()
        };
        Ok(TlsConnector::from(Arc::new(config)))
    }

    /// The name the certificate must carry: the override, or the host itself.
    pub(crate) fn server_name(&self, host: &str) -> Result<ServerName<'static>, String> {
        let name = self.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_owned())
            .map_err(|e| format!("invalid TLS server name {name:?}: {e}"))
    }
}

/// Checks a PEM CA bundle without connecting anywhere, for validation at the edge.
pub fn validate_ca_pem(pem: &str) -> Result<usize, String> {
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("is not valid PEM: {e}"))?;
        RootCertStore::empty()
            .add(cert)
            .map_err(|e| format!("holds an unusable certificate: {e}"))?;
        count += 1;
    }
    if count == 0 {
        return Err("holds no certificate".into());
    }
    Ok(count)
}

/// The verifier for servers whose entry turns verification off: it still checks
/// handshake signatures, but trusts any certificate for any name.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
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

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
