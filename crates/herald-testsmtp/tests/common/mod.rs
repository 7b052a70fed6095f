//! A minimal raw SMTP client used by the integration tests to drive the test server.

#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long any single read may take before the test fails instead of hanging.
pub const STEP: Duration = Duration::from_secs(5);

/// One SMTP reply: the code and the text of each line after the code and separator.
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The text of the last line.
    pub fn text(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or_default()
    }
}

/// A raw SMTP client over any byte stream.
pub struct Client<S> {
    io: BufReader<S>,
}

/// Connects over plain TCP without reading the greeting.
pub async fn connect(addr: SocketAddr) -> Client<TcpStream> {
    let tcp = TcpStream::connect(addr)
        .await
        .expect("connect to test server");
    Client::new(tcp)
}

/// Connects over plain TCP, checks the greeting and sends EHLO.
pub async fn connect_ehlo(addr: SocketAddr) -> Client<TcpStream> {
    let mut client = connect(addr).await;
    assert_eq!(client.read_reply().await.code, 220);
    assert_eq!(client.cmd("EHLO client.test").await.code, 250);
    client
}

/// A client configuration trusting the CA given as PEM, using the ring provider.
pub fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM parses");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("CA certificate is usable as a root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

/// Runs a TLS client handshake for `localhost` over `tcp`.
pub async fn tls_handshake(
    tcp: TcpStream,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from("localhost").expect("valid server name");
    tokio::time::timeout(STEP, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("tls handshake timed out")
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(stream: S) -> Self {
        Client {
            io: BufReader::new(stream),
        }
    }

    /// Returns the stream, checking that the server sent nothing unread.
    pub fn into_inner(self) -> S {
        assert!(
            self.io.buffer().is_empty(),
            "unexpected buffered bytes: {:?}",
            String::from_utf8_lossy(self.io.buffer())
        );
        self.io.into_inner()
    }

    /// Writes raw bytes.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let stream = self.io.get_mut();
        stream
            .write_all(bytes.as_ref())
            .await
            .expect("write to server");
        stream.flush().await.expect("flush to server");
    }

    /// Reads one line including its CRLF.
    pub async fn read_line(&mut self) -> String {
        let mut line = String::new();
        let read = tokio::time::timeout(STEP, self.io.read_line(&mut line))
            .await
            .expect("server reply timed out")
            .expect("read from server");
        assert!(read > 0, "server closed the connection");
        line
    }

    /// Reads a complete (possibly multiline) reply.
    pub async fn read_reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await;
            let line = line.strip_suffix("\r\n").expect("reply lines end in CRLF");
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("malformed reply line {line:?}"));
            let separator = line.as_bytes().get(3).copied().unwrap_or(b' ');
            lines.push(line.get(4..).unwrap_or_default().to_owned());
            if separator == b' ' {
                return Reply { code, lines };
            }
        }
    }

    /// Sends one command line and reads its reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n")).await;
        self.read_reply().await
    }

    /// Opens a transaction from `from` to `to` (MAIL and RCPT answered 250)
    /// and starts its DATA (354).
    pub async fn begin_data(&mut self, from: &str, to: &str) {
        let mail = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        assert_eq!(mail.code, 250, "MAIL FROM:<{from}>");
        let rcpt = self.cmd(&format!("RCPT TO:<{to}>")).await;
        assert_eq!(rcpt.code, 250, "RCPT TO:<{to}>");
        assert_eq!(self.cmd("DATA").await.code, 354);
    }

    /// Whether the server closed the connection (EOF or reset) within [`STEP`] without
    /// sending anything more.
    pub async fn is_closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match tokio::time::timeout(STEP, self.io.read_to_end(&mut rest)).await {
            Ok(Ok(_)) => rest.is_empty(),
            Ok(Err(_)) => true,
            Err(_) => false,
        }
    }
}
