//! The listener's certificate: loaded from PEM files, reloaded on SIGHUP and
//! when the files change, and kept when a reload fails.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Why a certificate could not be loaded; names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no PEM certificate, or a malformed one.
    #[error("{path} holds no PEM certificate (or a malformed one)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no PEM private key, or a malformed one.
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1), or a malformed one")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is of a kind rustls cannot sign with, or is not the certificate's.
    #[error("the key in {key} does not fit the certificate in {cert}: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's words.
        reason: String,
    },
}

/// The certificate in use, swapped whole on a reload.
pub(crate) struct Certificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times and lengths at the last (attempted) load.
    stamp: Mutex<Stamp>,
}

type Stamp = (Option<(SystemTime, u64)>, Option<(SystemTime, u64)>);

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate chain and its key.
fn load(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, CertificateError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| CertificateError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| CertificateError::NoCertificate {
            path: cert_path.to_owned(),
        })?;
    if chain.is_empty() {
        return Err(CertificateError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| CertificateError::NoKey {
        path: key_path.to_owned(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|error| CertificateError::Mismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        reason: error.to_string(),
    })
}

fn stamp_of(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

impl Certificates {
    /// Loads the certificate the listener starts with; a failure stops the start.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Certificates>, CertificateError> {
        let stamp = (stamp_of(cert_path), stamp_of(key_path));
        let key = load(cert_path, key_path)?;
        Ok(Arc::new(Certificates {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(key)),
            stamp: Mutex::new(stamp),
        }))
    }

    /// An acceptor that always presents the certificate current at the handshake.
    pub fn acceptor(self: &Arc<Self>) -> TlsAcceptor {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        TlsAcceptor::from(Arc::new(config))
    }

    /// Loads the files again; a failure keeps the certificate in use and says why.
    fn reload(&self, why: &str) {
        *self.stamp.lock().expect("the stamp is never poisoned") =
            (stamp_of(&self.cert_path), stamp_of(&self.key_path));
        match load(&self.cert_path, &self.key_path) {
            Ok(key) => {
                *self
                    .current
                    .write()
                    .expect("the certificate is never poisoned") = Arc::new(key);
                tracing::info!(cert = %self.cert_path.display(), why, "SMTP listener: certificate reloaded");
            }
            Err(error) => tracing::warn!(
                %error,
                why,
                "SMTP listener: the certificate could not be reloaded; the one loaded before stays in use"
            ),
        }
    }

    /// Whether either file changed since the last load (or attempt).
    fn changed(&self) -> bool {
        let now = (stamp_of(&self.cert_path), stamp_of(&self.key_path));
        *self.stamp.lock().expect("the stamp is never poisoned") != now
    }

    /// Reloads on SIGHUP (from `hangup`, see [`hangup`]) and when the files
    /// change (looked at every `poll`), until `stop`.
    pub async fn watch(
        self: Arc<Self>,
        mut hangup: Hangup,
        poll: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        // The first look is one period after the start: the files were just loaded.
        let poll = poll.max(Duration::from_millis(10));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    if self.changed() {
                        self.reload("the files changed");
                    }
                }
                _ = hangup.recv() => self.reload("SIGHUP"),
                _ = stop.wait_for(|stopping| *stopping) => return,
            }
        }
    }
}

/// SIGHUP, as a stream of signals received (never one where there is no such signal).
pub(crate) struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = self.signal.as_mut() {
            if signal.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

/// Installs the SIGHUP handler now, so that a SIGHUP sent once the listener
/// is bound reloads the certificate rather than ending the process.
pub(crate) fn hangup() -> Hangup {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Hangup {
                signal: Some(signal),
            },
            Err(error) => {
                tracing::warn!(%error, "SMTP listener: no SIGHUP handler; the certificate files are still watched");
                Hangup { signal: None }
            }
        }
    }
    #[cfg(not(unix))]
    Hangup {}
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .expect("the certificate is never poisoned")
                .clone(),
        )
    }
}

/// The TLS version and cipher suite of a session, as the `Received:` header gives them.
pub(crate) fn parameters(connection: &rustls::ServerConnection) -> Option<(String, String)> {
    let version = match connection.protocol_version()? {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
        other => format!("{other:?}"),
    };
    let suite = connection.negotiated_cipher_suite()?.suite();
    let cipher = suite
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{suite:?}"));
    Some((version, cipher))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_testsmtp::TestTls;

    fn leaf(tls: &TestTls) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(tls.cert_pem().as_bytes()).unwrap()
    }

    #[test]
    fn a_failed_reload_keeps_the_certificate_in_use() {
        let dir = std::env::temp_dir().join(format!("herald-ingress-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let first = TestTls::generate(&["localhost"]);
        std::fs::write(&cert, first.cert_pem()).unwrap();
        std::fs::write(&key, first.key_pem()).unwrap();
        let certificates = Certificates::load(&cert, &key).unwrap();
        let in_use = || certificates.current.read().unwrap().clone();
        let before = in_use();
        assert!(!certificates.changed());

        // Another certificate's key: refused, the first stays.
        let second = TestTls::generate(&["localhost"]);
        std::fs::write(&key, second.key_pem()).unwrap();
        assert!(matches!(
            load(&cert, &key),
            Err(CertificateError::Mismatch { .. })
        ));
        certificates.reload("test");
        assert!(Arc::ptr_eq(&before, &in_use()));
        // The failed attempt is remembered: no new attempt until the files change again.
        assert!(!certificates.changed());

        std::fs::write(&cert, "no PEM here").unwrap();
        let error = load(&cert, &key).unwrap_err();
        assert!(
            matches!(error, CertificateError::NoCertificate { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("cert.pem"), "{error}");
        certificates.reload("test");
        assert!(Arc::ptr_eq(&before, &in_use()));

        // The whole new pair: taken.
        std::fs::write(&cert, second.cert_pem()).unwrap();
        certificates.reload("test");
        assert_eq!(in_use().cert[0], leaf(&second));
        assert_ne!(in_use().cert[0], leaf(&first));

        std::fs::remove_file(&key).unwrap();
        let error = load(&cert, &key).unwrap_err();
        assert!(matches!(error, CertificateError::Read { .. }), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
