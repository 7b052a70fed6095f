//! Binding the listener's sockets and accepting sessions until told to stop.

use herald_metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::limits::{AuthFailures, RateLimits, SessionsPerIp};
use crate::reply::Reply;
use crate::session::Session;
use crate::tls::{CertificateError, Certificates, Hangup, hangup};
use crate::{Backend, Settings};

/// Why the listener cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Neither address is set.
    #[error("the SMTP listener needs an address to listen on (--smtp-listen or --smtps-listen)")]
    NoAddress,
    /// One of certificate and key is given without the other.
    #[error("--smtp-tls-cert and --smtp-tls-key go together: give both or neither")]
    HalfCertificate,
    /// Implicit TLS without a certificate.
    #[error("--smtps-listen needs a certificate: give --smtp-tls-cert and --smtp-tls-key")]
    SmtpsWithoutCertificate,
    /// The certificate could not be loaded.
    #[error("the SMTP listener's certificate: {0}")]
    Certificate(#[from] CertificateError),
    /// An address could not be bound.
    #[error("cannot listen for SMTP on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What every session of one listener shares.
pub(crate) struct Shared {
    pub settings: Settings,
    pub backend: Arc<dyn Backend>,
    pub tls: Option<TlsAcceptor>,
    pub rates: RateLimits,
    pub auth_failures: AuthFailures,
    pub sessions: Arc<SessionsPerIp>,
    /// One permit per session, `max_sessions` in all.
    pub slots: Arc<Semaphore>,
    /// Where sessions, replies and submissions are counted.
    pub metrics: Arc<Metrics>,
}

/// The bound sockets, ready to serve: bind first so that the caller learns
/// the addresses (port 0) and a start that cannot listen fails before anything runs.
pub struct Listener {
    shared: Arc<Shared>,
    plain: Option<TcpListener>,
    implicit: Option<TcpListener>,
    certificates: Option<(Arc<Certificates>, Hangup)>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

impl Listener {
    /// Loads the certificate (if any) and binds the addresses; what the
    /// listener does is counted in a registry of its own.
    pub async fn bind(
        settings: Settings,
        backend: Arc<dyn Backend>,
    ) -> Result<Listener, StartError> {
        Listener::bind_metered(settings, backend, Arc::default()).await
    }

    /// [`Listener::bind`], counting sessions, replies and submissions in `metrics`.
    pub async fn bind_metered(
        settings: Settings,
        backend: Arc<dyn Backend>,
        metrics: Arc<Metrics>,
    ) -> Result<Listener, StartError> {
        if settings.listen.is_none() && settings.smtps_listen.is_none() {
            return Err(StartError::NoAddress);
        }
        let certificates = match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => Some(Certificates::load(cert, key)?),
            (None, None) => None,
            _ => return Err(StartError::HalfCertificate),
        };
        if settings.smtps_listen.is_some() && certificates.is_none() {
            return Err(StartError::SmtpsWithoutCertificate);
        }
        let plain = match settings.listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let implicit = match settings.smtps_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let shared = Arc::new(Shared {
            tls: certificates.as_ref().map(Certificates::acceptor),
            rates: RateLimits::default(),
            auth_failures: AuthFailures::new(
                settings.max_auth_failures,
                settings.auth_failure_window,
                settings.auth_block,
            ),
            sessions: Arc::default(),
            slots: Arc::new(Semaphore::new(settings.max_sessions.max(1))),
            settings,
            backend,
            metrics,
        });
        Ok(Listener {
            shared,
            plain,
            implicit,
            certificates: certificates.map(|certificates| (certificates, hangup())),
        })
    }

    /// The address of the STARTTLS listener, if there is one.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.plain.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address of the implicit-TLS listener, if there is one.
    pub fn smtps_addr(&self) -> Option<SocketAddr> {
        self.implicit.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Accepts sessions until `stop` turns true, then closes the sockets and
    /// waits for the sessions: each idle one is told `421 4.3.2` and closed,
    /// one receiving or committing a message finishes it first.
    pub async fn serve(self, mut stop: watch::Receiver<bool>) {
        let Listener {
            shared,
            plain,
            implicit,
            certificates,
        } = self;
        if let Some((certificates, hangup)) = certificates {
            tokio::spawn(certificates.watch(hangup, shared.settings.tls_poll, stop.clone()));
        }
        tracing::info!(
            smtp = ?plain.as_ref().and_then(|l| l.local_addr().ok()),
            smtps = ?implicit.as_ref().and_then(|l| l.local_addr().ok()),
            tls = shared.tls.is_some(),
            "SMTP listener is running"
        );
        let mut sessions = JoinSet::new();
        loop {
            tokio::select! {
                accepted = accept(plain.as_ref()) => {
                    if let Some((stream, peer)) = accepted {
                        sessions.spawn(start(shared.clone(), stream, peer, false, stop.clone()));
                    }
                }
                accepted = accept(implicit.as_ref()) => {
                    if let Some((stream, peer)) = accepted {
                        sessions.spawn(start(shared.clone(), stream, peer, true, stop.clone()));
                    }
                }
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                _ = stopped(&mut stop) => break,
            }
        }
        drop(plain);
        drop(implicit);
        while sessions.join_next().await.is_some() {}
        tracing::info!("SMTP listener stopped");
    }
}

/// Resolves when `stop` turns true; never when its sender is gone without saying so.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The next connection of a listener that may be absent.
async fn accept(listener: Option<&TcpListener>) -> Option<(TcpStream, SocketAddr)> {
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    match listener.accept().await {
        Ok(accepted) => Some(accepted),
        Err(error) => {
            // Out of descriptors, mostly: wait a moment rather than spin.
            tracing::warn!(%error, "SMTP listener: could not accept a connection");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            None
        }
    }
}

/// Admits a connection (or answers 421 when its address has too many) and runs its session.
async fn start(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let ip = crate::canonical(peer.ip());
    let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
        tracing::warn!(%peer, "SMTP session refused: the listener has its most sessions open");
        let reply = Reply::new(
            421,
            "4.3.2",
            format!(
                "{} Too many connections, try again later",
                shared.settings.hostname
            ),
        );
        return refuse(&shared, stream, implicit_tls, reply).await;
    };
    let Some(slot) = shared
        .sessions
        .enter(ip, shared.settings.max_sessions_per_ip)
    else {
        tracing::info!(%peer, "SMTP session refused: too many sessions from this address");
        let reply = Reply::new(
            421,
            "4.7.0",
            format!(
                "{} Too many connections from your address, try again later",
                shared.settings.hostname
            ),
        );
        return refuse(&shared, stream, implicit_tls, reply).await;
    };
    Session::run(shared, stream, peer, implicit_tls, stop).await;
    drop(slot);
    drop(permit);
}

/// Answers a connection that is not admitted and closes it. Over implicit
/// TLS the client could not read a plaintext reply: it is only closed.
async fn refuse(shared: &Shared, mut stream: TcpStream, implicit_tls: bool, reply: Reply) {
    if implicit_tls {
        return;
    }
    let mut out = Vec::new();
    shared.metrics.smtp_reply(reply.code);
    reply.write_to(&mut out);
    let _ = tokio::time::timeout(shared.settings.write_timeout, async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    })
    .await;
}
