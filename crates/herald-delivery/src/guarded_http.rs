//! The guarded HTTP client: every HTTP request a tenant can direct (its OAuth2
//! token endpoint, its webhooks) goes through the egress policy, on the
//! very addresses connected to, with no redirects and no proxy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use herald_core::{EndpointUrl, Invalid};
use herald_smtp::{Egress, EgressRule};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use url::Host;

use crate::http1::Connections;
pub use crate::http1::PIPELINED;

/// How long a whole request may take, answer included.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many connections posts use to one origin, unless told.
const POST_CONNECTIONS: usize = 16;
/// Who is asking, in every request.
const USER_AGENT: &str = concat!("herald/", env!("CARGO_PKG_VERSION"));

/// Why a guarded request was not made, or did not give an answer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL breaks a rule of [`EndpointUrl`] (a stored one may predate a rule).
    #[error("the URL {0}")]
    Url(Invalid),
    /// Every address of the host is forbidden (by this rule, the first
    /// address's); nothing was connected to.
    #[error("the destination is not allowed by this installation's egress policy: {0}")]
    Egress(EgressRule),
    /// Plain `http` to an address outside the operator's allow list; nothing was connected to.
    #[error(
        "plain http:// is only used to addresses in the operator's --egress-allow; use https://"
    )]
    PlainHttp,
    /// The endpoint answered with a redirect, which is not followed.
    #[error("the endpoint answered HTTP {0} (a redirect), and redirects are not followed")]
    Redirect(StatusCode),
    /// The answer is longer than the caller accepts.
    #[error("the answer is longer than {0} bytes")]
    TooLarge(usize),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting, TLS or reading failed; the innermost cause, never the request.
    #[error("could not be reached: {0}")]
    Unreachable(String),
}

/// A guarded endpoint's answer: its status and at most the accepted length of body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

/// An HTTP client for URLs a tenant gives. It refuses before connecting when
/// the URL's host (an IP literal, or every address its name resolves to) is
/// forbidden by the [`Egress`] policy, or when plain `http` would go to an
/// address the operator has not allowed explicitly. Redirects are answers, not
/// instructions, and no proxy from the environment is used.
pub struct GuardedHttp {
    egress: Arc<Egress>,
    https: Client,
    http: Client,
    /// Kept-alive connections for [`GuardedHttp::post`].
    connections: Connections,
    timeout: Duration,
}

impl GuardedHttp {
    /// A client under `egress`, whose requests take at most 30 seconds.
    pub fn new(egress: Arc<Egress>) -> Self {
        GuardedHttp::with_timeout(egress, TIMEOUT)
    }

    /// A client under `egress` whose requests, answer included, take at most
    /// `timeout` (a post: from its turn on its connection).
    pub fn with_timeout(egress: Arc<Egress>, timeout: Duration) -> Self {
        GuardedHttp::for_webhooks(egress, timeout, POST_CONNECTIONS)
    }

    /// A client as [`GuardedHttp::with_timeout`] whose posts go over at most
    /// `connections` connections to one origin, each carrying up to
    /// [`PIPELINED`] requests pipelined (see the `http1` module).
    pub fn for_webhooks(egress: Arc<Egress>, timeout: Duration, connections: usize) -> Self {
        // One client per scheme, because the scheme decides which addresses
        // the resolver keeps: plain http only those on the allow list.
        let client = |plain_http: bool| {
            Client::builder()
                .timeout(timeout)
                .connect_timeout(CONNECT_TIMEOUT.min(timeout))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .https_only(!plain_http)
                .user_agent(USER_AGENT)
                .dns_resolver(Arc::new(EgressResolver {
                    egress: egress.clone(),
                    plain_http,
                }))
                .build()
                .expect("an HTTP client with default TLS settings builds")
        };
        GuardedHttp {
            https: client(false),
            http: client(true),
            connections: Connections::new(
                herald_smtp::https_client_config(),
                CONNECT_TIMEOUT.min(timeout),
                timeout,
                connections,
                USER_AGENT,
            ),
            egress,
            timeout,
        }
    }

    /// Starts a request to `url` after checking it.
    pub fn request(&self, method: Method, url: &str) -> Result<RequestBuilder, HttpError> {
        let url = self.check(url)?;
        let client = if url.is_https() {
            &self.https
        } else {
            &self.http
        };
        Ok(client.request(method, url.as_url().clone()))
    }

    /// POSTs `body` with `headers` to `url` after checking it, on a
    /// kept-alive connection (see the `http1` module: the path of webhooks,
    /// thousands a second), and reads at most `max_body` bytes of the
    /// answer. A redirect is an error.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        max_body: usize,
    ) -> Result<Answer, HttpError> {
        let target = self.connections.target(url).map_err(HttpError::Url)?;
        self.admit_literal(&target.url)?;
        // The connections time each request from its turn on its
        // connection: one queued behind a slow one is not failed for it.
        self.connections
            .post(&self.egress, &target, headers, body, max_body)
            .await
    }

    /// `url` parsed, when its rules allow it.
    fn check(&self, url: &str) -> Result<EndpointUrl, HttpError> {
        let url = EndpointUrl::parse(url).map_err(HttpError::Url)?;
        self.admit_literal(&url)?;
        Ok(url)
    }

    /// A host written as an IP address is judged here, because no resolver
    /// is asked about it.
    fn admit_literal(&self, url: &EndpointUrl) -> Result<(), HttpError> {
        let literal: Option<IpAddr> = match url.host() {
            Host::Ipv4(v4) => Some(v4.into()),
            Host::Ipv6(v6) => Some(v6.into()),
            Host::Domain(_) => None,
        };
        match literal {
            Some(ip) => admit(&self.egress, !url.is_https(), ip),
            None => Ok(()),
        }
    }

    /// Sends a request made by [`GuardedHttp::request`] and reads at most
    /// `max_body` bytes of its answer. A redirect is an error.
    pub async fn send(
        &self,
        request: RequestBuilder,
        max_body: usize,
    ) -> Result<Answer, HttpError> {
        let mut response = request.send().await.map_err(|e| self.classify(e))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(HttpError::Redirect(status));
        }
        if response
            .content_length()
            .is_some_and(|length| length > max_body as u64)
        {
            return Err(HttpError::TooLarge(max_body));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.classify(e))? {
            if body.len() + chunk.len() > max_body {
                return Err(HttpError::TooLarge(max_body));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer { status, body })
    }

    fn classify(&self, error: reqwest::Error) -> HttpError {
        classify(error, self.timeout)
    }
}

/// Whether a request may go to `ip`.
pub(crate) fn admit(egress: &Egress, plain_http: bool, ip: IpAddr) -> Result<(), HttpError> {
    if let Some(rule) = egress.refusal(ip) {
        return Err(HttpError::Egress(rule));
    }
    if plain_http && !egress.allows(ip) {
        return Err(HttpError::PlainHttp);
    }
    Ok(())
}

/// The refusal the resolver hands reqwest, found again among its error's causes.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("refused by the egress policy: {0}")]
    Egress(EgressRule),
    #[error("plain http to an address outside the allow list")]
    PlainHttp,
}

/// Resolves names and keeps only the addresses the policy admits: these are
/// the ones reqwest connects to, so the check and the connection agree.
struct EgressResolver {
    egress: Arc<Egress>,
    plain_http: bool,
}

impl Resolve for EgressResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let (egress, plain_http) = (self.egress.clone(), self.plain_http);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let admitted: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match admit(&egress, plain_http, addr.ip()) {
                    Ok(()) => true,
                    Err(HttpError::PlainHttp) => {
                        refusal.get_or_insert(Refused::PlainHttp);
                        false
                    }
                    Err(HttpError::Egress(rule)) => {
                        refusal.get_or_insert(Refused::Egress(rule));
                        false
                    }
                    // `admit` refuses for no other reason.
                    Err(_) => false,
                })
                .collect();
            match (admitted.is_empty(), refusal) {
                (true, Some(refused)) => Err(refused.into()),
                _ => Ok(Box::new(admitted.into_iter()) as Addrs),
            }
        })
    }
}

/// Turns reqwest's error into what a tenant may read: the egress refusal when
/// the resolver refused, otherwise the innermost cause. The URL and request
/// are left out (the request holds credentials).
fn classify(error: reqwest::Error, timeout: Duration) -> HttpError {
    if error.is_timeout() {
        return HttpError::Timeout(timeout);
    }
    let mut cause: &dyn std::error::Error = &error;
    loop {
        match cause.downcast_ref::<Refused>() {
            Some(Refused::Egress(rule)) => return HttpError::Egress(*rule),
            Some(Refused::PlainHttp) => return HttpError::PlainHttp,
            None => {}
        }
        match cause.source() {
            Some(inner) => cause = inner,
            None => break,
        }
    }
    HttpError::Unreachable(cause.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(allow: &str) -> GuardedHttp {
        GuardedHttp::new(Arc::new(Egress::new(
            Egress::parse_list(allow).unwrap(),
            Vec::new(),
        )))
    }

    #[test]
    fn literal_hosts_are_judged_before_any_request() {
        let default = guard("");
        for url in [
            "https://169.254.169.254/latest/meta-data/",
            "https://[fd00:ec2::254]/",
            "https://100.100.100.200/",
            "https://[64:ff9b::a9fe:a9fe]/",
            "https://[::ffff:127.0.0.1]:8443/",
            "http://2130706433:9/token",
            "http://0x7f.1:9/token",
            "http://0177.0.0.1:9/token",
        ] {
            assert!(
                matches!(
                    default.request(Method::POST, url),
                    Err(HttpError::Egress(_))
                ),
                "{url}"
            );
        }
        // A public address is permitted, but plain http goes only to the allow list.
        assert!(matches!(
            default.request(Method::POST, "http://203.0.113.7:9/token"),
            Err(HttpError::PlainHttp)
        ));
        assert!(
            default
                .request(Method::POST, "https://203.0.113.7/token")
                .is_ok()
        );
        let allowing = guard("127.0.0.0/8");
        assert!(
            allowing
                .request(Method::POST, "http://127.0.0.1:9/token")
                .is_ok()
        );
        assert!(matches!(
            allowing.request(Method::POST, "http://localhost:pw@169.254.169.254/"),
            Err(HttpError::Url(_))
        ));
    }

    /// A loopback listener that never accepts: the kernel completes a
    /// client's handshake anyway, so afterwards it tells whether anyone connected.
    fn untouched() -> std::net::TcpListener {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        listener
    }

    fn was_connected(listener: &std::net::TcpListener) -> bool {
        match listener.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept failed: {e}"),
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_a_forbidden_address_is_not_connected_to() {
        let listener = untouched();
        let port = listener.local_addr().unwrap().port();
        let default = guard("");
        for url in [
            format!("https://localhost:{port}/token"),
            format!("http://localhost:{port}/token"),
            format!("https://127.0.0.1:{port}/token"),
            format!("http://2130706433:{port}/token"),
        ] {
            let result = match default.request(Method::POST, &url) {
                Ok(request) => default.send(request, 1024).await.map(|_| ()),
                Err(e) => Err(e),
            };
            assert!(
                matches!(result, Err(HttpError::Egress(_))),
                "{url}: {result:?}"
            );
            assert!(!was_connected(&listener), "{url} was connected to");
        }
    }

    #[tokio::test]
    async fn an_answer_is_read_up_to_its_limit() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = tcp.read(&mut buffer).await.unwrap();
                    request.extend_from_slice(&buffer[..n]);
                }
                let body = "x".repeat(5000);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                tcp.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let guard = guard("127.0.0.0/8");
        let url = format!("http://127.0.0.1:{port}/token");
        let result = guard
            .send(guard.request(Method::GET, &url).unwrap(), 1024)
            .await;
        assert!(
            matches!(result, Err(HttpError::TooLarge(1024))),
            "{result:?}"
        );
        let answer = guard
            .send(guard.request(Method::GET, &url).unwrap(), 8192)
            .await
            .unwrap();
        assert_eq!(answer.body.len(), 5000);
    }
}
