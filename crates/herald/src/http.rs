//! Serving HTTP: hyper's HTTP/1 connection with a timer, so that a client must
//! send its request head within a deadline and its body within another, a
//! client that stops reading its answers is dropped, a cap on open
//! connections, and graceful shutdown.
//!
//! `axum::serve` runs hyper without a timer, so hyper's header-read timeout
//! never applies there: half-sent requests (slowloris) held every descriptor
//! of a node and `/healthz` stopped answering.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Sleep;
use tokio_io_timeout::TimeoutStream;
use tower::ServiceExt;

/// How long clients may take, and how many may be connected at once.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// The whole request head (request line and header fields) must arrive
    /// within this time, counted from when the node starts waiting for it: on
    /// a new connection, or after the previous answer on a kept-alive one. So
    /// it is also how long an idle connection stays open.
    pub header_timeout: Duration,
    /// The whole request body must arrive within this time after its head.
    pub body_timeout: Duration,
    /// A write to the client that makes no progress for this long closes the
    /// connection: a client that stops reading (its receive window full) would
    /// otherwise hold its connection, and its place under `max_connections`,
    /// for ever, since hyper's header timer does not run while it writes.
    pub write_timeout: Duration,
    /// Connections open at once; beyond, new ones wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit, where
/// the system allows, and returns the soft limit now in force.
pub fn raise_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (limit.current, limit.maximum) {
        if soft < hard {
            limit.current = Some(hard);
            if let Err(error) = setrlimit(Resource::Nofile, limit) {
                tracing::warn!(%error, soft, hard, "could not raise the open-file limit");
            }
        }
    }
    getrlimit(Resource::Nofile).current
}

/// The connection cap that fits under the open-file limit, leaving `reserve`
/// descriptors for everything else the node opens (database, SMTP, files).
pub fn connection_cap(wanted: usize, file_limit: Option<u64>, reserve: usize) -> usize {
    let Some(limit) = file_limit else {
        return wanted;
    };
    let room = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(reserve)
        .max(1);
    if wanted > room {
        tracing::warn!(
            max_connections = wanted,
            open_file_limit = limit,
            using = room,
            "--max-connections is above what the open-file limit allows; raise the limit (ulimit -n) or lower --max-connections"
        );
        return room;
    }
    wanted
}

/// A request body that fails once its deadline passes, however the bytes trickle in.
struct DeadlineBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

/// The error a body gives when its deadline passed, carried as an
/// `io::Error` of kind `TimedOut` so that the API can tell it from a body
/// that broke off (a 408, not a 400) without knowing this type.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
struct BodyTimedOut(Duration);

impl Body for DeadlineBody {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                BodyTimedOut(self.timeout),
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Returns once the node is stopping.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, not held across the
    // accept loop's awaits (it is not `Send`).
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Serves `app` on `listener` until `stop` turns true, then lets the requests
/// in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        // A slot is taken before accepting: beyond the cap, new connections
        // wait in the kernel's backlog while the open ones are served as usual.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = stopping(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, mostly: wait a moment rather than spin.
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopping(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let body_timeout = limits.body_timeout;
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let mut request = request.map(|inner| {
                axum::body::Body::new(DeadlineBody {
                    inner,
                    timeout: body_timeout,
                    deadline: Box::pin(tokio::time::sleep(body_timeout)),
                })
            });
            request.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                let Ok(response) = app.oneshot(request).await;
                Ok::<_, Infallible>(response)
            }
        });
        // The timer starts when a write cannot go on (the client's window is
        // full) and restarts with every byte the client takes, so a slow but
        // reading client is served, while one that stops reading makes hyper's
        // write fail with `TimedOut` and the connection end. Reads need no
        // timer of their own: the header and body deadlines bound them.
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.write_timeout));
        let connection =
            graceful.watch(http.serve_connection(TokioIo::new(Box::pin(stream)), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "an HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_file_limit() {
        assert_eq!(connection_cap(10_000, Some(1024), 200), 824);
        assert_eq!(connection_cap(100, Some(1024), 200), 100);
        assert_eq!(connection_cap(100, None, 200), 100);
        assert_eq!(connection_cap(100, Some(10), 200), 1);
    }
}
