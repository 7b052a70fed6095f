//! TLS client settings of a server entry: trust roots, a custom CA bundle, a name override,
//! or verification explicitly turned off.

use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, CipherSuite, ClientConfig, DigitallySignedStruct, ProtocolVersion,
    RootCertStore, SignatureScheme,
};
use tokio_rustls::TlsConnector;

/// The certificate a server presented, kept by the verifier so that a failed
/// verification can say whose certificate it was.
pub(crate) type PresentedCertificate = Arc<Mutex<Option<CertificateDer<'static>>>>;

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

/// The client settings for HTTPS to tenants' endpoints (webhooks): the
/// system's trust roots, HTTP/1.1 offered by ALPN. Built once per process.
pub fn https_client_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut config = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("the default protocol versions are supported")
                .with_root_certificates(system_roots())
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        })
        .clone()
}

impl TlsSettings {
    /// Builds the connector for these settings, and the place where its
    /// verifier keeps the certificate the server presents.
    pub(crate) fn connector(&self) -> Result<(TlsConnector, PresentedCertificate), String> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let presented = PresentedCertificate::default();
        let chain = if self.verify {
            let roots = match &self.ca_pem {
                Some(pem) => {
                    let mut roots = RootCertStore::empty();
                    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                        let cert =
                            cert.map_err(|e| format!("the CA bundle is not valid PEM: {e}"))?;
                        roots.add(cert).map_err(|e| {
                            format!("the CA bundle holds an unusable certificate: {e}")
                        })?;
                    }
                    Arc::new(roots)
                }
                None => system_roots(),
            };
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| e.to_string())?;
            Some((webpki, presented.clone()))
        } else {
            None
        };
        let verifier = Verifier {
            provider: provider(),
            chain,
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok((TlsConnector::from(Arc::new(config)), presented))
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

/// The protocol version as Postfix and OpenSSL name it: `TLSv1.3`, `TLSv1.2`.
pub(crate) fn version_name(version: ProtocolVersion) -> String {
    match version {
        ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        other => format!("{other:?}").replace('_', "."),
    }
}

/// The cipher suite's IANA name, as Postfix and OpenSSL show it for TLS 1.3:
/// rustls calls the TLS 1.3 suites `TLS13_…`, IANA `TLS_…`; its TLS 1.2 names
/// are already IANA's (`TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384`).
pub(crate) fn cipher_name(suite: CipherSuite) -> String {
    let name = format!("{suite:?}");
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

/// What is likely wrong when the handshake failed with `error`, and what to
/// change; `presented` is the certificate the server showed, if it got that far.
pub(crate) fn hint(
    error: &std::io::Error,
    presented: Option<&CertificateDer<'_>>,
    name: &str,
    implicit: bool,
) -> Option<String> {
    let error = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    match error {
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
            if implicit =>
        {
            Some(
                "the server did not start TLS: is this port plaintext or STARTTLS? (security: starttls, or port 465 for implicit TLS)"
                    .into(),
            )
        }
        rustls::Error::InvalidCertificate(problem) => {
            let cert = presented.map(|der| Certificate::parse(der))?;
            let whose = format!(
                "the certificate (subject {}, issuer {})",
                cert.subject, cert.issuer
            );
            Some(match problem {
                CertificateError::UnknownIssuer => format!(
                    "{whose} is not signed by a CA this node trusts{}: trust its CA with tls_ca_pem",
                    if cert.subject == cert.issuer { " (it is self-signed)" } else { "" }
                ),
                CertificateError::BadSignature => format!(
                    "{whose} does not verify against the trusted CAs: check that tls_ca_pem holds the CA that issued it"
                ),
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => format!(
                    "{whose} is valid for {}, not for {name}: set tls_server_name to one of those names, or connect by one of them",
                    if cert.names.is_empty() { "no name".into() } else { cert.names.join(", ") }
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
                    "{whose} expired on {}: the server's administrator must renew it",
                    cert.not_after
                ),
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    format!(
                        "{whose} is not valid before {}: check this node's clock and the server's certificate",
                        cert.not_before
                    )
                }
                _ => format!("{whose} was refused"),
            })
        }
        _ => None,
    }
}

/// The parts of a certificate an administrator needs to recognise it.
struct Certificate {
    subject: String,
    issuer: String,
    names: Vec<String>,
    not_before: String,
    not_after: String,
}

impl Certificate {
    fn parse(der: &[u8]) -> Certificate {
        use x509_parser::extensions::GeneralName;
        match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => {
                let names = cert
                    .subject_alternative_name()
                    .ok()
                    .flatten()
                    .map(|san| {
                        san.value
                            .general_names
                            .iter()
                            .filter_map(|name| match name {
                                GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                                GeneralName::IPAddress(ip) => ip_name(ip),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Certificate {
                    subject: cert.subject().to_string(),
                    issuer: cert.issuer().to_string(),
                    names,
                    not_before: cert.validity().not_before.to_string(),
                    not_after: cert.validity().not_after.to_string(),
                }
            }
            Err(_) => Certificate {
                subject: "unparsable".into(),
                issuer: "unparsable".into(),
                names: Vec::new(),
                not_before: String::new(),
                not_after: String::new(),
            },
        }
    }
}

/// An IP address in a certificate's alternative names, as text.
fn ip_name(bytes: &[u8]) -> Option<String> {
    let ip: std::net::IpAddr = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
        16 => <[u8; 16]>::try_from(bytes).ok()?.into(),
        _ => return None,
    };
    Some(ip.to_string())
}

/// The verifier of every connection. With a chain verifier it checks the
/// certificate chain and name, keeping the certificate the server presented
/// so that a refusal can name its subject, issuer and names; without one
/// (verification turned off by the server's entry) it trusts any certificate
/// for any name. Handshake signatures are checked either way.
#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    chain: Option<(Arc<WebPkiServerVerifier>, PresentedCertificate)>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some((chain, presented)) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        *presented.lock().expect("certificate lock") = Some(end_entity.clone().into_owned());
        chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_those_postfix_and_openssl_show() {
        assert_eq!(version_name(ProtocolVersion::TLSv1_3), "TLSv1.3");
        assert_eq!(version_name(ProtocolVersion::TLSv1_2), "TLSv1.2");
        assert_eq!(
            cipher_name(CipherSuite::TLS13_AES_256_GCM_SHA384),
            "TLS_AES_256_GCM_SHA384"
        );
        assert_eq!(
            cipher_name(CipherSuite::TLS13_CHACHA20_POLY1305_SHA256),
            "TLS_CHACHA20_POLY1305_SHA256"
        );
        assert_eq!(
            cipher_name(CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
        );
    }
}
