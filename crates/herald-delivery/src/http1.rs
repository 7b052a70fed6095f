//! Webhook posts as HTTP/1.1 written straight on kept-alive connections: one
//! write for the request, its answer parsed with `httparse` where it lies in
//! the read buffer.
//!
//! Webhooks are posted once per event, thousands a second under load, and
//! reqwest's layers (its redirect and timeout services, hyper's connection
//! task and the channel to it, the pool's bookkeeping) cost as much CPU as
//! everything else of a post together (BENCHMARKS.md). The rules are those of
//! [`GuardedHttp`](crate::guarded_http::GuardedHttp), which calls this module
//! after checking the URL: the addresses connected to are the ones the egress
//! policy admitted, redirects are answers, no proxy is used, and at most the
//! caller's length of an answer is read.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_core::{EndpointUrl, Invalid};
use herald_smtp::Egress;
use reqwest::StatusCode;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use url::Host;

use crate::guarded_http::{Answer, HttpError, admit};

/// How long an answer's head may be.
const MAX_HEAD: usize = 64 * 1024;
/// How many header lines an answer may have.
const MAX_HEADERS: usize = 100;
/// How long an unused connection is kept.
const IDLE_FOR: Duration = Duration::from_secs(30);
/// How many unused connections are kept per origin: the dispatcher's
/// requests in flight to one webhook, twice over.
const IDLE_PER_ORIGIN: usize = 32;
/// How many origins unused connections are kept for.
const IDLE_ORIGINS: usize = 1_024;

/// A connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Where a connection goes: scheme, host as written, and port.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Origin {
    https: bool,
    host: String,
    port: u16,
}

struct Idle {
    io: Box<dyn Io>,
    since: Instant,
}

/// A URL as posts to it need it, prepared once: parsed, where its
/// connections go, and the start of its requests' head (request line, host,
/// user agent).
pub(crate) struct Target {
    pub url: EndpointUrl,
    origin: Origin,
    head: String,
}

/// How many URLs are kept prepared; past it the cache starts afresh.
const TARGETS_KEPT: usize = 10_000;

/// The kept-alive connections of one client, and how it makes new ones.
pub(crate) struct Connections {
    idle: Mutex<HashMap<Origin, Vec<Idle>>>,
    targets: Mutex<HashMap<String, Arc<Target>>>,
    tls: TlsConnector,
    connect_timeout: Duration,
    user_agent: &'static str,
}

/// How an exchange on a connection ended, when it gave no answer.
enum Failed {
    /// A kept connection the server had closed: nothing of an answer came,
    /// so the request may go again on a new connection.
    Stale,
    Error(HttpError),
}

impl From<HttpError> for Failed {
    fn from(e: HttpError) -> Self {
        Failed::Error(e)
    }
}

impl Connections {
    pub(crate) fn new(
        tls: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
        user_agent: &'static str,
    ) -> Self {
        Connections {
            idle: Mutex::default(),
            targets: Mutex::default(),
            tls: TlsConnector::from(tls),
            connect_timeout,
            user_agent,
        }
    }

    /// `url` parsed and prepared for posts (see [`Target`]), once per URL.
    pub(crate) fn target(&self, url: &str) -> Result<Arc<Target>, Invalid> {
        if let Some(target) = self.targets.lock().expect("targets lock").get(url) {
            return Ok(target.clone());
        }
        let parsed = EndpointUrl::parse(url)?;
        let target = Arc::new(self.prepare(parsed));
        let mut targets = self.targets.lock().expect("targets lock");
        if targets.len() >= TARGETS_KEPT {
            targets.clear();
        }
        targets.insert(url.to_owned(), target.clone());
        Ok(target)
    }

    fn prepare(&self, url: EndpointUrl) -> Target {
        use std::fmt::Write;
        let parts = url.as_url();
        let host = parts.host_str().unwrap_or_default();
        let mut head = String::with_capacity(128);
        let _ = write!(head, "POST {}", parts.path());
        if let Some(query) = parts.query() {
            let _ = write!(head, "?{query}");
        }
        let _ = match parts.port() {
            Some(port) => write!(head, " HTTP/1.1\r\nhost: {host}:{port}\r\n"),
            None => write!(head, " HTTP/1.1\r\nhost: {host}\r\n"),
        };
        let _ = write!(head, "user-agent: {}\r\n", self.user_agent);
        let origin = Origin {
            https: url.is_https(),
            host: host.to_owned(),
            port: parts.port_or_known_default().unwrap_or(80),
        };
        Target { url, origin, head }
    }

    /// POSTs `body` with `headers` to `target` (its URL checked by the
    /// caller) and reads at most `max_body` bytes of the answer.
    pub(crate) async fn post(
        &self,
        egress: &Egress,
        target: &Target,
        headers: &[(&str, &str)],
        body: &[u8],
        max_body: usize,
    ) -> Result<Answer, HttpError> {
        let request = request(target, headers, body);
        let origin = &target.origin;
        // A kept connection first. Should its server have closed it
        // meanwhile, the request goes again on a new one.
        if let Some(io) = self.take(origin) {
            match exchange(io, &request, max_body, true).await {
                Ok((answer, kept)) => {
                    self.keep(origin, kept);
                    return Ok(answer);
                }
                Err(Failed::Stale) => {}
                Err(Failed::Error(e)) => return Err(e),
            }
        }
        let io = self.connect(egress, &target.url, origin).await?;
        match exchange(io, &request, max_body, false).await {
            Ok((answer, kept)) => {
                self.keep(origin, kept);
                Ok(answer)
            }
            Err(Failed::Stale) => Err(HttpError::Unreachable(
                "the connection closed before an answer".into(),
            )),
            Err(Failed::Error(e)) => Err(e),
        }
    }

    /// A kept connection to `origin` that has not idled too long.
    fn take(&self, origin: &Origin) -> Option<Box<dyn Io>> {
        let mut idle = self.idle.lock().expect("idle lock");
        let kept = idle.get_mut(origin)?;
        let found = std::iter::from_fn(|| kept.pop()).find(|c| c.since.elapsed() < IDLE_FOR);
        if kept.is_empty() {
            idle.remove(origin);
        }
        found.map(|c| c.io)
    }

    /// Keeps the connection an answer came on, when it can carry another request.
    fn keep(&self, origin: &Origin, kept: Option<Box<dyn Io>>) {
        let Some(io) = kept else { return };
        let mut idle = self.idle.lock().expect("idle lock");
        if idle.len() >= IDLE_ORIGINS && !idle.contains_key(origin) {
            idle.retain(|_, kept| kept.iter().any(|c| c.since.elapsed() < IDLE_FOR));
            if idle.len() >= IDLE_ORIGINS {
                return;
            }
        }
        if !idle.contains_key(origin) {
            idle.insert(origin.clone(), Vec::new());
        }
        let list = idle.get_mut(origin).expect("inserted above");
        if list.len() < IDLE_PER_ORIGIN {
            list.push(Idle {
                io,
                since: Instant::now(),
            });
        }
    }

    /// A new connection to the first admitted address of `url`'s host that
    /// answers, TLS on top for https.
    async fn connect(
        &self,
        egress: &Egress,
        url: &EndpointUrl,
        origin: &Origin,
    ) -> Result<Box<dyn Io>, HttpError> {
        let plain_http = !origin.https;
        let addresses: Vec<SocketAddr> = match url.host() {
            Host::Ipv4(v4) => vec![SocketAddr::new(v4.into(), origin.port)],
            Host::Ipv6(v6) => vec![SocketAddr::new(v6.into(), origin.port)],
            Host::Domain(name) => tokio::net::lookup_host((name, origin.port))
                .await
                .map_err(|e| HttpError::Unreachable(e.to_string()))?
                .collect(),
        };
        let mut refusal = None;
        let mut unreachable = None;
        for address in addresses {
            if let Err(refused) = admit(egress, plain_http, address.ip()) {
                refusal.get_or_insert(refused);
                continue;
            }
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(address)).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    return self.secure(tcp, url, origin).await;
                }
                Ok(Err(e)) => unreachable = Some(HttpError::Unreachable(e.to_string())),
                Err(_) => unreachable = Some(HttpError::Timeout(self.connect_timeout)),
            }
        }
        Err(unreachable
            .or(refusal)
            .unwrap_or_else(|| HttpError::Unreachable("the host has no address".into())))
    }

    /// TLS over `tcp` for https, verified for the URL's host.
    async fn secure(
        &self,
        tcp: TcpStream,
        url: &EndpointUrl,
        origin: &Origin,
    ) -> Result<Box<dyn Io>, HttpError> {
        if !origin.https {
            return Ok(Box::new(tcp));
        }
        let name = match url.host() {
            Host::Ipv4(v4) => ServerName::IpAddress(IpAddr::from(v4).into()),
            Host::Ipv6(v6) => ServerName::IpAddress(IpAddr::from(v6).into()),
            Host::Domain(name) => ServerName::try_from(name.to_owned())
                .map_err(|e| HttpError::Unreachable(format!("invalid TLS server name: {e}")))?,
        };
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| HttpError::Unreachable(innermost(&e)))?;
        Ok(Box::new(tls))
    }
}

/// A request to `target` in one buffer: its prepared head, `headers`, the
/// length, and `body`.
fn request(target: &Target, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let headers_length: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    let mut request = Vec::with_capacity(target.head.len() + headers_length + 40 + body.len());
    request.extend_from_slice(target.head.as_bytes());
    for (name, value) in headers {
        debug_assert!(!value.contains(['\r', '\n']), "a header value on one line");
        for part in [name.as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
            request.extend_from_slice(part);
        }
    }
    request.extend_from_slice(b"content-length: ");
    request.extend_from_slice(body.len().to_string().as_bytes());
    request.extend_from_slice(b"\r\n\r\n");
    request.extend_from_slice(body);
    request
}

/// The innermost cause of an error, as reqwest's errors are reported.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// Writes `request` on `io` and reads the answer; the connection comes back
/// with it when it can carry another request.
async fn exchange(
    mut io: Box<dyn Io>,
    request: &[u8],
    max_body: usize,
    reused: bool,
) -> Result<(Answer, Option<Box<dyn Io>>), Failed> {
    let broken = |e: std::io::Error| {
        if reused {
            Failed::Stale
        } else {
            Failed::Error(HttpError::Unreachable(e.to_string()))
        }
    };
    io.write_all(request).await.map_err(broken)?;
    io.flush().await.map_err(broken)?;
    let mut buffer: Vec<u8> = Vec::with_capacity(1024);
    let mut answered = false;
    let head = loop {
        match parse_head(&buffer)? {
            // Informational answers (100 Continue) come before the real one.
            Some(head) if (100..200).contains(&head.status) && head.status != 101 => {
                buffer.drain(..head.length);
                continue;
            }
            Some(head) => break head,
            None if buffer.len() > MAX_HEAD => {
                return Err(unreachable("the answer's head is too long"));
            }
            None => {}
        }
        match io.read_buf(&mut buffer).await {
            Ok(0) | Err(_) if reused && !answered => return Err(Failed::Stale),
            Ok(0) => return Err(unreachable("the connection closed before an answer")),
            Err(e) => return Err(unreachable(&e.to_string())),
            Ok(_) => answered = true,
        }
    };
    let status = StatusCode::from_u16(head.status)
        .map_err(|_| unreachable("the answer's status is not valid"))?;
    if status.is_redirection() {
        return Err(Failed::Error(HttpError::Redirect(status)));
    }
    buffer.drain(..head.length);
    let (body, reusable) = match head.framing {
        _ if status.as_u16() == 204 || status.as_u16() == 304 => (Vec::new(), buffer.is_empty()),
        Framing::Length(length) => {
            if length > max_body as u64 {
                return Err(Failed::Error(HttpError::TooLarge(max_body)));
            }
            let length = length as usize;
            read_to(&mut io, &mut buffer, length).await?;
            let body = buffer.drain(..length).collect();
            (body, buffer.is_empty())
        }
        Framing::Chunked => {
            let body = read_chunked(&mut io, &mut buffer, max_body).await?;
            (body, buffer.is_empty())
        }
        Framing::UntilClose => {
            loop {
                if buffer.len() > max_body {
                    return Err(Failed::Error(HttpError::TooLarge(max_body)));
                }
                match io.read_buf(&mut buffer).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(unreachable(&e.to_string())),
                }
            }
            (std::mem::take(&mut buffer), false)
        }
    };
    let kept = (reusable && head.keep_alive).then_some(io);
    Ok((Answer { status, body }, kept))
}

fn unreachable(why: &str) -> Failed {
    Failed::Error(HttpError::Unreachable(why.to_owned()))
}

/// How an answer's body ends (RFC 9112, section 6.3).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// An answer's head: its status, length in the buffer, and what follows it.
#[derive(Debug, PartialEq)]
struct Head {
    status: u16,
    length: usize,
    framing: Framing,
    /// The connection may carry another request after this answer.
    keep_alive: bool,
}

/// The answer's head at the start of `buffer`, once it is all there.
fn parse_head(buffer: &[u8]) -> Result<Option<Head>, Failed> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut headers);
    let length = match answer.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(unreachable(&format!("the answer is not HTTP/1.1: {e}"))),
    };
    let mut framing = None;
    let mut chunked = false;
    let mut close = answer.version == Some(0);
    for header in answer.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or_default();
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides: chunked, or the body runs to the close.
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            framing = Some(if chunked {
                Framing::Chunked
            } else {
                Framing::UntilClose
            });
        } else if header.name.eq_ignore_ascii_case("content-length") && !chunked {
            let length: u64 = value
                .trim()
                .parse()
                .map_err(|_| unreachable("the answer's content-length is not a number"))?;
            match framing {
                Some(Framing::Length(other)) if other != length => {
                    return Err(unreachable("the answer has two content-lengths"));
                }
                Some(Framing::Chunked | Framing::UntilClose) => {}
                _ => framing = Some(Framing::Length(length)),
            }
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && answer.version == Some(0) {
                    close = false;
                }
            }
        }
    }
    Ok(Some(Head {
        status: answer.code.unwrap_or_default(),
        length,
        framing: framing.unwrap_or(Framing::UntilClose),
        keep_alive: !close,
    }))
}

/// Reads until `buffer` holds at least `length` bytes.
async fn read_to(io: &mut Box<dyn Io>, buffer: &mut Vec<u8>, length: usize) -> Result<(), Failed> {
    while buffer.len() < length {
        buffer.reserve(length - buffer.len());
        match io.read_buf(buffer).await {
            Ok(0) => return Err(unreachable("the connection closed within the answer")),
            Ok(_) => {}
            Err(e) => return Err(unreachable(&e.to_string())),
        }
    }
    Ok(())
}

/// Reads a chunked body of at most `max_body` bytes, trailers included;
/// what follows it stays in `buffer`.
async fn read_chunked(
    io: &mut Box<dyn Io>,
    buffer: &mut Vec<u8>,
    max_body: usize,
) -> Result<Vec<u8>, Failed> {
    let mut body = Vec::new();
    loop {
        let (start, size) = loop {
            match httparse::parse_chunk_size(buffer) {
                Ok(httparse::Status::Complete(found)) => break found,
                Ok(httparse::Status::Partial) if buffer.len() < MAX_HEAD => {
                    read_more(io, buffer).await?;
                }
                _ => return Err(unreachable("the answer's chunks are not valid")),
            }
        };
        if size == 0 {
            buffer.drain(..start);
            // Trailer lines, up to the empty one.
            loop {
                match memchr::memmem::find(buffer, b"\r\n") {
                    Some(0) => {
                        buffer.drain(..2);
                        return Ok(body);
                    }
                    Some(end) => {
                        buffer.drain(..end + 2);
                    }
                    None if buffer.len() < MAX_HEAD => read_more(io, buffer).await?,
                    None => return Err(unreachable("the answer's trailers are too long")),
                }
            }
        }
        if (body.len() as u64).saturating_add(size) > max_body as u64 {
            return Err(Failed::Error(HttpError::TooLarge(max_body)));
        }
        let end = start + size as usize;
        read_to(io, buffer, end + 2).await?;
        if &buffer[end..end + 2] != b"\r\n" {
            return Err(unreachable("the answer's chunks are not valid"));
        }
        body.extend_from_slice(&buffer[start..end]);
        buffer.drain(..end + 2);
    }
}

async fn read_more(io: &mut Box<dyn Io>, buffer: &mut Vec<u8>) -> Result<(), Failed> {
    match io.read_buf(buffer).await {
        Ok(0) => Err(unreachable("the connection closed within the answer")),
        Ok(_) => Ok(()),
        Err(e) => Err(unreachable(&e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        match parse_head(text.as_bytes()) {
            Ok(Some(head)) => head,
            Ok(None) => panic!("partial: {text:?}"),
            Err(_) => panic!("refused: {text:?}"),
        }
    }

    #[test]
    fn a_head_says_how_its_body_ends_and_whether_the_connection_goes_on() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello");
        assert_eq!(
            (h.status, h.length, h.framing, h.keep_alive),
            (200, 38, Framing::Length(5), true)
        );
        let h = head(
            "HTTP/1.1 500 Oops\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 9\r\n\r\n",
        );
        assert_eq!(h.framing, Framing::Chunked);
        // A chunked answer's content-length is ignored, whichever comes first.
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 9\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        let h = head("HTTP/1.1 204 No Content\r\nconnection: Close\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\ncontent-length: 0\r\n\r\n");
        assert!(h.keep_alive);
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-le"),
            Ok(None)
        ));
        for refused in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "SMTP 220 hello\r\n\r\n",
        ] {
            assert!(parse_head(refused.as_bytes()).is_err(), "{refused:?}");
        }
    }

    /// A loopback server that answers each connection's requests with
    /// `answer(n)` (`n` counting requests over all connections), closes a
    /// connection after `per_connection` requests, and keeps what it received.
    struct Server {
        url: String,
        connections: Arc<std::sync::atomic::AtomicUsize>,
        received: Arc<Mutex<Vec<String>>>,
    }

    async fn server(per_connection: usize, answer: fn(usize) -> String) -> Server {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook?x=1", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let received: Arc<Mutex<Vec<String>>> = Arc::default();
        let (counted, kept) = (connections.clone(), received.clone());
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    for _ in 0..per_connection {
                        let request = loop {
                            if let Some(end) = memchr::memmem::find(&buffer, b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buffer[..end]).to_string();
                                let length: usize = head
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length: "))
                                    .map_or(0, |v| v.parse().unwrap());
                                if buffer.len() >= end + 4 + length {
                                    let request: Vec<u8> =
                                        buffer.drain(..end + 4 + length).collect();
                                    break String::from_utf8(request).unwrap();
                                }
                            }
                            if tcp.read_buf(&mut buffer).await.unwrap_or(0) == 0 {
                                return;
                            }
                        };
                        let n = {
                            let mut kept = kept.lock().unwrap();
                            kept.push(request);
                            kept.len()
                        };
                        if tcp.write_all(answer(n).as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Server {
            url,
            connections,
            received,
        }
    }

    fn client() -> crate::guarded_http::GuardedHttp {
        crate::guarded_http::GuardedHttp::new(Arc::new(Egress::new(
            Egress::parse_list("127.0.0.0/8").unwrap(),
            Vec::new(),
        )))
    }

    async fn post(
        http: &crate::guarded_http::GuardedHttp,
        url: &str,
        max: usize,
    ) -> Result<Answer, HttpError> {
        http.post(url, &[("webhook-id", "msg_1")], b"{\"a\":1}", max)
            .await
    }

    #[tokio::test]
    async fn a_kept_connection_carries_the_next_post_and_one_the_server_closed_is_replaced() {
        use std::sync::atomic::Ordering;
        let server = server(2, |_| "HTTP/1.1 204 No Content\r\n\r\n".to_owned()).await;
        let http = client();
        for _ in 0..3 {
            let answer = post(&http, &server.url, 1024).await.unwrap();
            assert_eq!(answer.status, StatusCode::NO_CONTENT);
        }
        // The server closed the first connection after two requests: the
        // third found it closed and went again on a second one.
        assert_eq!(server.connections.load(Ordering::SeqCst), 2);
        let received = server.received.lock().unwrap().clone();
        assert_eq!(received.len(), 3);
        let port = server
            .url
            .split(':')
            .nth(2)
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        assert_eq!(
            received[0],
            format!(
                "POST /hook?x=1 HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nuser-agent: herald/{}\r\n\
                 webhook-id: msg_1\r\ncontent-length: 7\r\n\r\n{{\"a\":1}}",
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    #[tokio::test]
    async fn answers_are_read_by_their_framing_and_up_to_the_limit() {
        let server = server(10, |n| match n {
            1 => "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Internal Server Error\r\n\
                  transfer-encoding: chunked\r\n\r\n4;x=y\r\noops\r\n3\r\n!!!\r\n0\r\nT: 1\r\n\r\n"
                .to_owned(),
            2 => "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_owned(),
            3 => "HTTP/1.1 200 OK\r\ncontent-length: 2000\r\n\r\n".to_owned(),
            _ => "HTTP/1.1 307 Temporary Redirect\r\nlocation: /x\r\ncontent-length: 0\r\n\r\n"
                .to_owned(),
        })
        .await;
        let http = client();
        let answer = post(&http, &server.url, 1024).await.unwrap();
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(answer.body, b"oops!!!");
        // The chunked answer ended where it said: the connection goes on.
        let answer = post(&http, &server.url, 1024).await.unwrap();
        assert_eq!(
            (answer.status, answer.body.as_slice()),
            (StatusCode::OK, &b"ok"[..])
        );
        assert!(matches!(
            post(&http, &server.url, 1024).await,
            Err(HttpError::TooLarge(1024))
        ));
        assert!(matches!(
            post(&http, &server.url, 1024).await,
            Err(HttpError::Redirect(StatusCode::TEMPORARY_REDIRECT))
        ));
        let chunked_too_long = server_with_chunks().await;
        assert!(matches!(
            post(&http, &chunked_too_long, 8).await,
            Err(HttpError::TooLarge(8))
        ));
    }

    async fn server_with_chunks() -> String {
        server(1, |_| {
            "HTTP/1.1 500 Oops\r\ntransfer-encoding: chunked\r\n\r\n5\r\n12345\r\n5\r\n67890\r\n0\r\n\r\n"
                .to_owned()
        })
        .await
        .url
    }
}
