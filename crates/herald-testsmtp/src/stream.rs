//! A connection that is either plain TCP or TLS, so one session loop serves both.

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

/// The byte stream under an SMTP session: plain TCP (`Left`, before STARTTLS
/// or without TLS at all), or TLS over TCP (`Right`, after STARTTLS or from
/// the first byte; boxed because the TLS state is much larger than a TCP
/// stream).
pub(crate) type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;
