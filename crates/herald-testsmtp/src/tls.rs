//! Throwaway certificate authorities and server certificates for TLS tests, made with rcgen.

use std::fmt;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A test certificate made with rcgen at test time: a self-signed CA and a leaf
/// certificate signed by it, plus the leaf's private key.
#[derive(Clone)]
pub struct TestTls {
    inner: Arc<Material>,
}

/// The generated certificates and key, shared between clones.
struct Material {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    leaf_pem: String,
    leaf_der: CertificateDer<'static>,
    /// PKCS#8 DER of the leaf's private key.
    leaf_key: Vec<u8>,
    /// The same key as PEM, for servers configured by file (Postfix).
    leaf_key_pem: String,
    names: Vec<String>,
    expired: bool,
}

impl fmt::Debug for TestTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key is deliberately left out even though it is a test key.
        f.debug_struct("TestTls")
            .field("names", &self.inner.names)
            .field("expired", &self.inner.expired)
            .finish_non_exhaustive()
    }
}

impl TestTls {
    /// Self-signed CA + leaf certificate for the given names (DNS names or IP strings
    /// like "127.0.0.1").
    ///
    /// # Panics
    ///
    /// Panics if a name is neither a valid DNS name nor an IP address.
    pub fn generate(names: &[&str]) -> TestTls {
        Self::build(names, false)
    }

    /// Like [`TestTls::generate`], but the leaf certificate expired long ago (it was
    /// valid during the year 2000), while the CA is still valid.
    ///
    /// # Panics
    ///
    /// Panics if a name is neither a valid DNS name nor an IP address.
    pub fn expired(names: &[&str]) -> TestTls {
        Self::build(names, true)
    }

    fn build(names: &[&str], expired: bool) -> TestTls {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())
            .expect("a certificate without subject alternative names is always valid");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "herald-testsmtp test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("generating a CA key pair with ring");
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .expect("self-signing the test CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);

        let owned_names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut leaf_params = CertificateParams::new(owned_names.clone())
            .expect("test certificate names must be DNS names or IP addresses");
        if let Some(first) = names.first() {
            leaf_params
                .distinguished_name
                .push(DnType::CommonName, *first);
        }
        leaf_params.use_authority_key_identifier_extension = true;
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if expired {
            leaf_params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            leaf_params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let leaf_key = KeyPair::generate().expect("generating a leaf key pair with ring");
        let leaf_cert = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("signing the test leaf certificate");

        TestTls {
            inner: Arc::new(Material {
                ca_pem: ca_cert.pem(),
                ca_der: ca_cert.der().clone(),
                leaf_pem: leaf_cert.pem(),
                leaf_der: leaf_cert.der().clone(),
                leaf_key: leaf_key.serialize_der(),
                leaf_key_pem: leaf_key.serialize_pem(),
                names: owned_names,
                expired,
            }),
        }
    }

    /// PEM of the CA certificate clients should trust.
    pub fn ca_pem(&self) -> String {
        self.inner.ca_pem.clone()
    }

    /// DER of the CA certificate clients should trust.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.inner.ca_der.clone()
    }

    /// PEM of the leaf certificate the server presents.
    pub fn cert_pem(&self) -> String {
        self.inner.leaf_pem.clone()
    }

    /// PEM (PKCS#8) of the leaf certificate's private key, for a server that
    /// reads its key from a file, such as a Postfix instance in a test.
    pub fn key_pem(&self) -> String {
        self.inner.leaf_key_pem.clone()
    }

    /// A root store holding only the CA certificate.
    pub fn root_store(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca_der())
            .expect("the freshly generated CA certificate parses");
        roots
    }

    /// A rustls client configuration (ring provider) that trusts only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(ring_provider()))
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_root_certificates(self.root_store())
            .with_no_client_auth();
        Arc::new(config)
    }

    /// The rustls server configuration (ring provider) presenting the leaf certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.inner.leaf_key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(ring_provider()))
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.inner.leaf_der.clone()], key)
            .expect("the generated key matches the generated certificate");
        Arc::new(config)
    }
}

/// The ring crypto provider, chosen explicitly so no process-wide default must be installed.
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}
