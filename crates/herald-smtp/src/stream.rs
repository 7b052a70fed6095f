//! The byte stream under a session: plain TCP, or TLS over TCP after an upgrade.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A session's transport; `Closed` only while it is being upgraded to TLS.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<Acking>>),
    Closed,
}

/// The TCP stream under TLS, acknowledging what it receives at once.
///
/// A TLS 1.3 server sends session tickets after the handshake and then the
/// reply to the first command. A server with Nagle's algorithm on (Postfix's
/// smtpd) holds that reply until the tickets are acknowledged, and Linux
/// delays an acknowledgement by up to 40 ms, so every session waited that
/// long for its first reply. The tickets are read inside the TLS layer, where
/// the session never sees them, so `TCP_QUICKACK` is set here before every
/// socket read (a task woken by arriving data sets it with the data waiting,
/// which sends the pending acknowledgement at once): one `setsockopt` per
/// read, nothing next to a TLS record's cryptography. A Nagle server that
/// writes pipelined replies one by one waited the same way, and no longer does.
pub(crate) struct Acking(pub(crate) TcpStream);

impl AsyncRead for Acking {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let tcp = &mut self.get_mut().0;
        // A failure only costs the latency this avoids.
        #[cfg(target_os = "linux")]
        let _ = tcp.set_quickack(true);
        Pin::new(&mut *tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Acking {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection already closed")
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}
