//! Webhook posts as HTTP/1.1 written straight on kept-alive connections,
//! pipelined: the requests to one origin wait in one queue, each connection
//! (a *line*) takes as many of them as it has room for and writes them in
//! one write, and their answers are parsed with `httparse` where they lie in
//! the read buffer, in the order the requests went.
//!
//! Webhooks are posted once per event, thousands a second under load, and
//! reqwest's layers (its redirect and timeout services, hyper's connection
//! task and the channel to it, the pool's bookkeeping) cost as much CPU as
//! everything else of a post together (BENCHMARKS.md); a write and a read of
//! their own for every request, on both ends of the connection, cost as much
//! again. The rules are those of
//! [`GuardedHttp`](crate::guarded_http::GuardedHttp), which calls this module
//! after checking the URL: the addresses connected to are the ones the egress
//! policy admitted, redirects are answers, no proxy is used, and at most the
//! caller's length of an answer is read.
//!
//! Pipelining (RFC 9112, section 9.3.2) is kept safe by three rules. A new
//! line carries one request until it has answered one and stayed open, so a
//! server that closes after every answer (as HTTP/1.0 servers do) is never
//! sent a second. A request has the whole timeout from the moment it is the
//! oldest unanswered one on its line; when that runs out it fails alone, and
//! the line closes. A request whose line closed before its answer, on a line
//! that had answered before (the server ended a kept connection, or a request
//! ahead of it timed out), goes again once on another: at least once, as
//! every webhook event is, and its `webhook-id` lets the receiver drop a
//! repeat. A server seen closing a kept connection unannounced with requests
//! written behind the one it answered gets one request a connection, for
//! five minutes.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_core::{EndpointUrl, Invalid};
use herald_smtp::Egress;
use reqwest::StatusCode;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use url::Host;

use crate::guarded_http::{Answer, HttpError, admit};

/// How long an answer's head may be.
const MAX_HEAD: usize = 64 * 1024;
/// How many header lines an answer may have.
const MAX_HEADERS: usize = 100;
/// How long a line with nothing to carry is kept open.
const IDLE_FOR: Duration = Duration::from_secs(30);
/// How many requests a line carries unanswered, once it has shown that its
/// server keeps connections open.
pub const PIPELINED: usize = 16;
/// How long an origin whose server closed a kept connection unannounced,
/// with requests written behind the one it was answering, gets one request
/// a connection, as if it kept none: pipelined requests, or ones that go
/// again on a kept connection, would meet the same close.
const SINGLE_FOR: Duration = Duration::from_secs(300);
/// How many origins queues are kept for.
const ORIGINS_KEPT: usize = 1_024;
/// How many URLs are kept prepared; past it the cache starts afresh.
const TARGETS_KEPT: usize = 10_000;

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

/// A URL as posts to it need it, prepared once: parsed, where its
/// connections go, and the start of its requests' head (request line, host,
/// user agent).
pub(crate) struct Target {
    pub url: EndpointUrl,
    origin: Origin,
    head: String,
}

/// One request waiting for its answer.
struct Job {
    request: Vec<u8>,
    max_body: usize,
    /// It went once on a line that closed before answering it.
    again: bool,
    done: oneshot::Sender<Result<Answer, HttpError>>,
}

impl Job {
    fn fail(self, error: HttpError) {
        let _ = self.done.send(Err(error));
    }
}

/// The requests to one origin that no line has taken yet, and its lines.
struct Queue {
    origin: Origin,
    state: Mutex<QueueState>,
    /// Told when a request arrives, for a line waiting for one.
    arrived: Notify,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    /// Lines open or opening.
    lines: usize,
    /// Lines with room, waiting for a request.
    waiting: usize,
    /// Until when a line carries one request and closes (see [`SINGLE_FOR`]).
    single_until: Option<Instant>,
}

impl QueueState {
    fn single(&self) -> bool {
        self.single_until
            .is_some_and(|until| until > Instant::now())
    }
}

/// How lines connect and time their requests.
struct Settings {
    tls: TlsConnector,
    connect_timeout: Duration,
    timeout: Duration,
    /// The most lines to one origin.
    lines: usize,
}

/// The lines of one client, by origin, and how it makes new ones.
pub(crate) struct Connections {
    queues: Mutex<HashMap<Origin, Arc<Queue>>>,
    targets: Mutex<HashMap<String, Arc<Target>>>,
    settings: Arc<Settings>,
    user_agent: &'static str,
}

impl Connections {
    /// Lines connected within `connect_timeout`, `lines` at most to one
    /// origin, each request answered within `timeout` of its turn.
    pub(crate) fn new(
        tls: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
        timeout: Duration,
        lines: usize,
        user_agent: &'static str,
    ) -> Self {
        Connections {
            queues: Mutex::default(),
            targets: Mutex::default(),
            settings: Arc::new(Settings {
                tls: TlsConnector::from(tls),
                connect_timeout,
                timeout,
                lines: lines.max(1),
            }),
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
        egress: &Arc<Egress>,
        target: &Arc<Target>,
        headers: &[(&str, &str)],
        body: &[u8],
        max_body: usize,
    ) -> Result<Answer, HttpError> {
        let (done, answered) = oneshot::channel();
        let job = Job {
            request: request(target, headers, body),
            max_body,
            again: false,
            done,
        };
        let queue = self.queue(&target.origin);
        // A new line when none waits for a request and the origin has room
        // for one; otherwise a line takes it when it has room.
        let open = {
            let mut state = queue.state.lock().expect("queue lock");
            state.jobs.push_back(job);
            let open = state.waiting == 0 && state.lines < self.settings.lines;
            if open {
                state.lines += 1;
            }
            open
        };
        if open {
            let settings = self.settings.clone();
            tokio::spawn(line(queue, settings, egress.clone(), target.clone()));
        } else {
            queue.arrived.notify_one();
        }
        answered.await.unwrap_or_else(|_| Err(closed_early()))
    }

    /// The queue of `origin`'s requests.
    fn queue(&self, origin: &Origin) -> Arc<Queue> {
        let mut queues = self.queues.lock().expect("queues lock");
        if let Some(queue) = queues.get(origin) {
            return queue.clone();
        }
        if queues.len() >= ORIGINS_KEPT {
            queues.retain(|_, q| Arc::strong_count(q) > 1);
        }
        let queue = Arc::new(Queue {
            origin: origin.clone(),
            state: Mutex::default(),
            arrived: Notify::new(),
        });
        queues.insert(origin.clone(), queue.clone());
        queue
    }
}

impl Settings {
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
            Host::Domain(name) => {
                let found = tokio::net::lookup_host((name, origin.port));
                tokio::time::timeout(self.connect_timeout, found)
                    .await
                    .map_err(|_| HttpError::Timeout(self.connect_timeout))?
                    .map_err(|e| HttpError::Unreachable(e.to_string()))?
                    .collect()
            }
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
        let handshake = self.tls.connect(name, tcp);
        let tls = tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .map_err(|_| HttpError::Timeout(self.connect_timeout))?
            .map_err(|e| HttpError::Unreachable(innermost(&e)))?;
        Ok(Box::new(tls))
    }
}

/// One line to `queue`'s origin, connected again while requests wait that
/// no other line waits to take. A connection that fails fails the oldest
/// request waiting, as the connection of its own would have.
async fn line(
    queue: Arc<Queue>,
    settings: Arc<Settings>,
    egress: Arc<Egress>,
    target: Arc<Target>,
) {
    loop {
        match settings.connect(&egress, &target.url, &queue.origin).await {
            Ok(io) => carry(&queue, &settings, io).await,
            Err(e) => {
                let oldest = queue.state.lock().expect("queue lock").jobs.pop_front();
                if let Some(job) = oldest {
                    job.fail(e);
                }
            }
        }
        let mut state = queue.state.lock().expect("queue lock");
        if state.jobs.is_empty() || state.waiting > 0 {
            state.lines -= 1;
            if !state.jobs.is_empty() {
                queue.arrived.notify_one();
            }
            return;
        }
    }
}

/// What one line holds, shared by its writer and its reader.
#[derive(Default)]
struct Line {
    state: Mutex<LineState>,
    /// Told by the writer when it wrote, or closed the line.
    written: Notify,
    /// Told by the reader when an answer came, or it closed the line.
    answered: Notify,
}

#[derive(Default)]
struct LineState {
    /// Requests written or being written, oldest first.
    unanswered: VecDeque<Job>,
    /// When the oldest unanswered request's turn began: written, or the
    /// answer before it came.
    turn: Option<Instant>,
    /// The server has answered a request and kept the connection.
    kept: bool,
    /// No more requests go on this line.
    closed: bool,
}

impl LineState {
    /// How many more requests the line takes now; `single` while its
    /// origin gets one request a connection (see [`SINGLE_FOR`]).
    fn room(&self, single: bool) -> usize {
        match (self.closed, self.kept) {
            (true, _) => 0,
            (false, true) if single => 0,
            (false, true) => PIPELINED.saturating_sub(self.unanswered.len()),
            (false, false) => usize::from(self.unanswered.is_empty()),
        }
    }
}

/// Carries requests on `io` until it closes; what it leaves unanswered goes
/// again (once, when the line had answered before) or fails.
async fn carry(queue: &Arc<Queue>, settings: &Settings, io: Box<dyn Io>) {
    let (reader, writer) = tokio::io::split(io);
    let line = Arc::new(Line::default());
    let writing = tokio::spawn(write(queue.clone(), line.clone(), writer));
    let ended = read(queue, &line, reader, settings.timeout).await;
    writing.abort();
    let _ = writing.await;
    let left = {
        let mut state = line.state.lock().expect("line lock");
        state.closed = true;
        std::mem::take(&mut state.unanswered)
    };
    if ended.unannounced && left.len() > 1 {
        // A server that ends kept connections without saying so, after
        // one answer or a few: pipelined requests would meet it again.
        queue.state.lock().expect("queue lock").single_until = Some(Instant::now() + SINGLE_FOR);
    }
    let mut again = Vec::new();
    for job in left {
        if ended.answered_any && !job.again {
            again.push(Job { again: true, ..job });
        } else {
            job.fail(closed_early());
        }
    }
    if !again.is_empty() {
        let mut state = queue.state.lock().expect("queue lock");
        for job in again.into_iter().rev() {
            state.jobs.push_front(job);
        }
        drop(state);
        queue.arrived.notify_one();
    }
}

/// Counts a line among its queue's waiting ones while it lives (dropped
/// also when the writer is stopped while it waits).
struct Waiting<'a>(&'a Queue);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.state.lock().expect("queue lock").waiting -= 1;
    }
}

/// The writer of a line: takes requests from the queue as it has room,
/// and writes each take in one write.
async fn write(queue: Arc<Queue>, line: Arc<Line>, mut writer: WriteHalf<Box<dyn Io>>) {
    let mut batch = Vec::new();
    loop {
        enum Next {
            Write,
            Jobs { idle: bool },
            Room,
        }
        let next = {
            let mut jobs = queue.state.lock().expect("queue lock");
            let mut state = line.state.lock().expect("line lock");
            let single = jobs.single();
            let room = state.room(single);
            if state.closed {
                return;
            } else if single && state.kept && state.unanswered.is_empty() {
                // A kept line carries nothing more while its origin gets
                // one request a connection.
                state.closed = true;
                drop(state);
                line.written.notify_one();
                return;
            } else if room > 0 && !jobs.jobs.is_empty() {
                if state.unanswered.is_empty() {
                    state.turn = Some(Instant::now());
                }
                let taken = room.min(jobs.jobs.len());
                for job in jobs.jobs.drain(..taken) {
                    batch.extend_from_slice(&job.request);
                    state.unanswered.push_back(job);
                }
                if !jobs.jobs.is_empty() {
                    // Another line may take the rest.
                    queue.arrived.notify_one();
                }
                Next::Write
            } else if room > 0 {
                jobs.waiting += 1;
                Next::Jobs {
                    idle: state.unanswered.is_empty(),
                }
            } else {
                Next::Room
            }
        };
        match next {
            Next::Write => {
                line.written.notify_one();
                if writer.write_all(&batch).await.is_err() {
                    // The reader finds the connection broken too.
                    return;
                }
                batch.clear();
            }
            Next::Jobs { idle } => {
                let _waiting = Waiting(&queue);
                tokio::select! {
                    // Requests come in bursts (a commit's events at once):
                    // the other tasks ready to post go first, so that this
                    // line takes them in one write.
                    _ = queue.arrived.notified() => tokio::task::yield_now().await,
                    _ = line.answered.notified() => {}
                    _ = tokio::time::sleep(IDLE_FOR), if idle => {
                        let mut state = line.state.lock().expect("line lock");
                        if state.unanswered.is_empty() {
                            state.closed = true;
                            drop(state);
                            line.written.notify_one();
                            return;
                        }
                    }
                }
            }
            Next::Room => line.answered.notified().await,
        }
    }
}

/// How a line's reader ended.
#[derive(Default)]
struct Ended {
    /// The line answered a request.
    answered_any: bool,
    /// The server closed the connection with requests unanswered, not
    /// having said it would.
    unannounced: bool,
}

/// The reader of a line: matches answers to requests in order, each within
/// `timeout` of its turn, until the connection closes or must.
async fn read(
    queue: &Queue,
    line: &Line,
    mut reader: ReadHalf<Box<dyn Io>>,
    timeout: Duration,
) -> Ended {
    let mut buffer: Vec<u8> = Vec::with_capacity(4 * 1024);
    let mut answered_any = false;
    let ended = |answered_any, unannounced| Ended {
        answered_any,
        unannounced,
    };
    loop {
        let oldest = {
            let state = line.state.lock().expect("line lock");
            match state.unanswered.front() {
                Some(job) => Some((job.max_body, state.turn.unwrap_or_else(Instant::now))),
                None if state.closed => return ended(answered_any, false),
                None => None,
            }
        };
        let Some((max_body, turn)) = oldest else {
            // Nothing asked: watch for the server closing the connection
            // until a request is written.
            tokio::select! {
                _ = line.written.notified() => continue,
                read = reader.read_buf(&mut buffer) => match read {
                    // An answer to a request written meanwhile.
                    Ok(n) if n > 0 && line_has_unanswered(line) => continue,
                    _ => {
                        close(line);
                        return ended(answered_any, line_has_unanswered(line));
                    }
                },
            }
        };
        let deadline = turn + timeout;
        let mut at_end = false;
        let parsed = loop {
            match parse_answer(&buffer, at_end, max_body) {
                Ok(Some(parsed)) => break Ok(parsed),
                Ok(None) if at_end => break Err(None),
                Ok(None) => {}
                Err(e) => break Err(Some(e)),
            }
            match tokio::time::timeout_at(deadline, reader.read_buf(&mut buffer)).await {
                Err(_) => break Err(Some(HttpError::Timeout(timeout))),
                Ok(Ok(0)) => at_end = true,
                Ok(Ok(_)) => {}
                Ok(Err(e)) if buffer.is_empty() => {
                    tracing::debug!(error = %e, "a webhook connection broke");
                    break Err(None);
                }
                Ok(Err(e)) => break Err(Some(HttpError::Unreachable(e.to_string()))),
            }
        };
        // Whether a kept connection may carry more (the queue's lock is not
        // taken under the line's: writers take both in the other order).
        let single = matches!(&parsed, Ok(p) if p.keep_alive)
            && queue.state.lock().expect("queue lock").single();
        let mut state = line.state.lock().expect("line lock");
        match parsed {
            Ok(parsed) => {
                buffer.drain(..parsed.length);
                let job = state
                    .unanswered
                    .pop_front()
                    .expect("an answer to the oldest");
                answered_any = true;
                state.turn = Some(Instant::now());
                let _ = job.done.send(parsed.result);
                // A kept connection carries more; bytes after the last
                // answer nobody asked for mean it cannot.
                state.kept |= parsed.keep_alive;
                let garbled = state.unanswered.is_empty() && !buffer.is_empty();
                if !parsed.keep_alive || garbled || single {
                    state.closed = true;
                }
                let closed = state.closed;
                drop(state);
                line.answered.notify_one();
                if closed {
                    return ended(answered_any, false);
                }
            }
            // Closed with nothing of the answer: the request may go again.
            Err(None) if buffer.is_empty() => {
                state.closed = true;
                drop(state);
                line.answered.notify_one();
                return ended(answered_any, true);
            }
            Err(e) => {
                let job = state.unanswered.pop_front().expect("the oldest");
                state.closed = true;
                drop(state);
                job.fail(e.unwrap_or_else(|| {
                    HttpError::Unreachable("the connection closed within the answer".into())
                }));
                line.answered.notify_one();
                return ended(answered_any, false);
            }
        }
    }
}

fn line_has_unanswered(line: &Line) -> bool {
    !line.state.lock().expect("line lock").unanswered.is_empty()
}

fn close(line: &Line) {
    line.state.lock().expect("line lock").closed = true;
    line.answered.notify_one();
}

fn closed_early() -> HttpError {
    HttpError::Unreachable("the connection closed before an answer".into())
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

fn unreachable(why: &str) -> HttpError {
    HttpError::Unreachable(why.to_owned())
}

/// A whole answer at the start of a read buffer.
struct Parsed {
    /// The answer, or the error it is (a redirect).
    result: Result<Answer, HttpError>,
    /// How many bytes of the buffer it took, informational answers before it included.
    length: usize,
    /// The connection may carry another request after it.
    keep_alive: bool,
}

/// The answer at the start of `buffer` once it is all there (`ended`: the
/// server closed the connection after what the buffer holds). An error
/// means the connection cannot go on: the answer is not HTTP, or longer
/// than `max_body`.
fn parse_answer(buffer: &[u8], ended: bool, max_body: usize) -> Result<Option<Parsed>, HttpError> {
    let mut start = 0;
    let head = loop {
        match parse_head(&buffer[start..])? {
            // Informational answers (100 Continue) come before the real one.
            Some(head) if (100..200).contains(&head.status) && head.status != 101 => {
                start += head.length;
            }
            Some(head) => break head,
            None if buffer.len() - start > MAX_HEAD => {
                return Err(unreachable("the answer's head is too long"));
            }
            None => return Ok(None),
        }
    };
    let status = StatusCode::from_u16(head.status)
        .map_err(|_| unreachable("the answer's status is not valid"))?;
    let start = start + head.length;
    let rest = &buffer[start..];
    let (body, length, keep_alive) = match head.framing {
        _ if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED => {
            (Vec::new(), 0, head.keep_alive)
        }
        Framing::Length(length) => {
            if length > max_body as u64 {
                return Err(HttpError::TooLarge(max_body));
            }
            let length = length as usize;
            let Some(body) = rest.get(..length) else {
                return Ok(None);
            };
            (body.to_vec(), length, head.keep_alive)
        }
        Framing::Chunked => match chunked(rest, max_body)? {
            Some((body, length)) => (body, length, head.keep_alive),
            None => return Ok(None),
        },
        Framing::UntilClose => {
            if rest.len() > max_body {
                return Err(HttpError::TooLarge(max_body));
            }
            if !ended {
                return Ok(None);
            }
            (rest.to_vec(), rest.len(), false)
        }
    };
    let result = if status.is_redirection() {
        Err(HttpError::Redirect(status))
    } else {
        Ok(Answer { status, body })
    };
    Ok(Some(Parsed {
        result,
        length: start + length,
        keep_alive,
    }))
}

/// A chunked body of at most `max_body` bytes at the start of `bytes`,
/// trailers included, once it is all there: the body and its length in `bytes`.
fn chunked(bytes: &[u8], max_body: usize) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let (start, size) = match httparse::parse_chunk_size(&bytes[at..]) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) if bytes.len() - at < MAX_HEAD => return Ok(None),
            _ => return Err(unreachable("the answer's chunks are not valid")),
        };
        at += start;
        if size == 0 {
            // Trailer lines, up to the empty one.
            let trailers = &bytes[at..];
            if trailers.starts_with(b"\r\n") {
                return Ok(Some((body, at + 2)));
            }
            return match memchr::memmem::find(trailers, b"\r\n\r\n") {
                Some(end) => Ok(Some((body, at + end + 4))),
                None if trailers.len() < MAX_HEAD => Ok(None),
                None => Err(unreachable("the answer's trailers are too long")),
            };
        }
        if (body.len() as u64).saturating_add(size) > max_body as u64 {
            return Err(HttpError::TooLarge(max_body));
        }
        let end = at + size as usize;
        let Some(chunk) = bytes.get(at..end + 2) else {
            return Ok(None);
        };
        if &chunk[size as usize..] != b"\r\n" {
            return Err(unreachable("the answer's chunks are not valid"));
        }
        body.extend_from_slice(&chunk[..size as usize]);
        at = end + 2;
    }
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
fn parse_head(buffer: &[u8]) -> Result<Option<Head>, HttpError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guarded_http::GuardedHttp;

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

    /// A loopback server that answers each connection's requests in turn
    /// with `answer(n, request)` (`n` counting requests over all
    /// connections; `None` answers nothing and stalls the connection),
    /// closes a connection after `per_connection` requests, and keeps what
    /// it received and how many requests it found already waiting behind
    /// the one it answered (sent pipelined).
    struct Server {
        url: String,
        connections: Arc<std::sync::atomic::AtomicUsize>,
        received: Arc<Mutex<Vec<String>>>,
        pipelined: Arc<std::sync::atomic::AtomicUsize>,
    }

    type Answering = fn(usize, &str) -> Option<String>;

    async fn server(per_connection: usize, answer: Answering) -> Server {
        serve(None, per_connection, answer).await
    }

    /// The same server, over TLS with `tls` when given (its URL then
    /// `https://localhost:…`).
    async fn serve(
        tls: Option<Arc<rustls::ServerConfig>>,
        per_connection: usize,
        answer: Answering,
    ) -> Server {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = match tls {
            Some(_) => format!("https://localhost:{port}/hook?x=1"),
            None => format!("http://127.0.0.1:{port}/hook?x=1"),
        };
        let tls = tls.map(tokio_rustls::TlsAcceptor::from);
        let connections = Arc::new(AtomicUsize::new(0));
        let pipelined = Arc::new(AtomicUsize::new(0));
        let received: Arc<Mutex<Vec<String>>> = Arc::default();
        let (counted, kept, behind) = (connections.clone(), received.clone(), pipelined.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let (kept, behind, tls) = (kept.clone(), behind.clone(), tls.clone());
                tokio::spawn(async move {
                    let mut tcp: Box<dyn Io> = match tls {
                        Some(tls) => Box::new(tls.accept(tcp).await.unwrap()),
                        None => Box::new(tcp),
                    };
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
                        if !buffer.is_empty() {
                            behind.fetch_add(1, Ordering::SeqCst);
                        }
                        let n = {
                            let mut kept = kept.lock().unwrap();
                            kept.push(request.clone());
                            kept.len()
                        };
                        let Some(answer) = answer(n, &request) else {
                            return std::future::pending().await;
                        };
                        if tcp.write_all(answer.as_bytes()).await.is_err() {
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
            pipelined,
        }
    }

    fn client() -> GuardedHttp {
        GuardedHttp::new(loopback())
    }

    fn loopback() -> Arc<Egress> {
        Arc::new(Egress::new(
            Egress::parse_list("127.0.0.0/8").unwrap(),
            Vec::new(),
        ))
    }

    async fn post(http: &GuardedHttp, url: &str, max: usize) -> Result<Answer, HttpError> {
        posted(http, url, "msg_1", max).await
    }

    async fn posted(
        http: &GuardedHttp,
        url: &str,
        id: &str,
        max: usize,
    ) -> Result<Answer, HttpError> {
        http.post(url, &[("webhook-id", id)], b"{\"a\":1}", max)
            .await
    }

    /// Echoes the request's `webhook-id` in a 200's body.
    fn echo(_: usize, request: &str) -> Option<String> {
        let id = request
            .lines()
            .find_map(|l| l.strip_prefix("webhook-id: "))
            .unwrap_or_default();
        Some(format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{id}",
            id.len()
        ))
    }

    #[tokio::test]
    async fn a_kept_connection_carries_the_next_post_and_one_the_server_closed_is_replaced() {
        use std::sync::atomic::Ordering;
        let server = server(2, |_, _| Some("HTTP/1.1 204 No Content\r\n\r\n".to_owned())).await;
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
        let server = server(10, |n, _| {
            Some(match n {
                1 => "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Internal Server Error\r\n\
                  transfer-encoding: chunked\r\n\r\n4;x=y\r\noops\r\n3\r\n!!!\r\n0\r\nT: 1\r\n\r\n"
                    .to_owned(),
                2 => "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_owned(),
                3 => "HTTP/1.1 200 OK\r\ncontent-length: 2000\r\n\r\n".to_owned(),
                _ => "HTTP/1.1 307 Temporary Redirect\r\nlocation: /x\r\ncontent-length: 0\r\n\r\n"
                    .to_owned(),
            })
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
        server(1, |_, _| {
            Some(
                "HTTP/1.1 500 Oops\r\ntransfer-encoding: chunked\r\n\r\n5\r\n12345\r\n5\r\n67890\r\n0\r\n\r\n"
                    .to_owned(),
            )
        })
        .await
        .url
    }

    #[tokio::test]
    async fn posts_at_once_share_few_connections_pipelined_and_each_gets_its_own_answer() {
        use std::sync::atomic::Ordering;
        let server = server(usize::MAX, echo).await;
        let http = kept(&server.url, Duration::from_secs(10), 2).await;
        for (id, answer) in at_once(&http, &server.url, 200).await {
            let answer = answer.unwrap();
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(
                String::from_utf8(answer.body).unwrap(),
                id,
                "each its own answer"
            );
        }
        assert!(server.connections.load(Ordering::SeqCst) <= 2);
        assert!(
            server.pipelined.load(Ordering::SeqCst) > 0,
            "requests were written before the answers to those ahead of them"
        );
    }

    #[tokio::test]
    async fn a_server_that_closes_after_each_answer_is_sent_one_request_a_connection() {
        use std::sync::atomic::Ordering;
        let server = server(usize::MAX, |_, _| {
            Some("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok".to_owned())
        })
        .await;
        let http = Arc::new(GuardedHttp::for_webhooks(
            loopback(),
            Duration::from_secs(10),
            2,
        ));
        for (_, answer) in at_once(&http, &server.url, 20).await {
            assert_eq!(answer.unwrap().status, StatusCode::OK);
        }
        // HTTP/1.0 without keep-alive: every request had a connection of its
        // own, and none was written behind another.
        assert_eq!(server.connections.load(Ordering::SeqCst), 20);
        assert_eq!(server.received.lock().unwrap().len(), 20);
        assert_eq!(server.pipelined.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_request_that_runs_out_of_time_fails_alone_and_those_behind_it_go_again() {
        let server = server(usize::MAX, |n, request| {
            if request.contains("webhook-id: slow") {
                return None;
            }
            echo(n, request)
        })
        .await;
        let http = kept(&server.url, Duration::from_secs(2), 1).await;
        let slow = {
            let (http, url) = (http.clone(), server.url.clone());
            tokio::spawn(async move { posted(&http, &url, "slow", 64).await })
        };
        let received = || (server.received.lock().unwrap().len() == 2).then_some(());
        herald_testkit::eventually("the stalled request", Duration::from_secs(10), || {
            std::future::ready(received())
        })
        .await;
        // Written behind the stalled one on the same connection.
        let behind = tokio::spawn({
            let (http, url) = (http.clone(), server.url.clone());
            async move { at_once(&http, &url, 3).await }
        });
        assert!(matches!(slow.await.unwrap(), Err(HttpError::Timeout(_))));
        for (_, answer) in behind.await.unwrap() {
            assert_eq!(answer.unwrap().status, StatusCode::OK);
        }
    }

    #[tokio::test]
    async fn a_server_that_ends_kept_connections_unannounced_still_answers_every_post() {
        // HTTP/1.1 answers that promise a kept connection, and a close
        // after every second one.
        let server = server(2, echo).await;
        let http = kept(&server.url, Duration::from_secs(10), 2).await;
        for (id, answer) in at_once(&http, &server.url, 40).await {
            assert_eq!(
                answer.unwrap().body,
                id.as_bytes(),
                "each answered, none failed"
            );
        }
    }

    #[tokio::test]
    async fn pipelined_posts_go_over_tls_too() {
        use std::sync::atomic::Ordering;
        let tls = herald_testsmtp::TestTls::generate(&["localhost"]);
        let server = serve(Some(tls.server_config()), usize::MAX, echo).await;
        let connections = Arc::new(Connections::new(
            tls.client_config(),
            Duration::from_secs(10),
            Duration::from_secs(10),
            2,
            "herald-test",
        ));
        let target = connections.target(&server.url).unwrap();
        let egress = loopback();
        let post = |id: String| {
            let (connections, target, egress) =
                (connections.clone(), target.clone(), egress.clone());
            async move {
                let headers = [("webhook-id", id.as_str())];
                let answer = connections
                    .post(&egress, &target, &headers, b"{}", 64)
                    .await;
                (id, answer.unwrap())
            }
        };
        assert_eq!(post("first".into()).await.1.body, b"first");
        let mut posts = tokio::task::JoinSet::new();
        for i in 0..100 {
            posts.spawn(post(format!("msg_{i}")));
        }
        for (id, answer) in posts.join_all().await {
            assert_eq!(answer.body, id.as_bytes(), "each its own answer");
        }
        assert!(server.connections.load(Ordering::SeqCst) <= 2);
        assert!(server.pipelined.load(Ordering::SeqCst) > 0);
    }

    /// A third party's HTTP/1.1 server: Python's `http.server`, one thread
    /// a connection, answering each POST with its `webhook-id`.
    const PYTHON_SERVER: &str = "import http.server\n\
        class Echo(http.server.BaseHTTPRequestHandler):\n\
        \x20   protocol_version = 'HTTP/1.1'\n\
        \x20   def do_POST(self):\n\
        \x20       self.rfile.read(int(self.headers['content-length']))\n\
        \x20       id = self.headers['webhook-id'].encode()\n\
        \x20       self.send_response(200)\n\
        \x20       self.send_header('content-length', str(len(id)))\n\
        \x20       self.end_headers()\n\
        \x20       self.wfile.write(id)\n\
        \x20   def log_message(self, *args):\n\
        \x20       pass\n\
        server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Echo)\n\
        print(server.server_address[1], flush=True)\n\
        server.serve_forever()\n";

    #[tokio::test]
    async fn pythons_http_server_answers_pipelined_posts_each_in_turn() {
        use herald_testkit::{Dependency, require};
        use tokio::io::AsyncBufReadExt;
        let started = tokio::process::Command::new("python3")
            .args(["-c", PYTHON_SERVER])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let Some(mut python) = require(Dependency::Python, started) else {
            return;
        };
        let mut port = String::new();
        let stdout = python.stdout.take().unwrap();
        tokio::io::BufReader::new(stdout)
            .read_line(&mut port)
            .await
            .unwrap();
        let url = format!("http://127.0.0.1:{}/hook", port.trim());
        let http = kept(&url, Duration::from_secs(10), 2).await;
        for (id, answer) in at_once(&http, &url, 300).await {
            let answer = answer.unwrap();
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(answer.body, id.as_bytes(), "each its own answer");
        }
    }

    /// A client posting over at most `lines` connections, each request
    /// answered within `timeout`, whose first post (answered) has shown
    /// that `url`'s server keeps its connections.
    async fn kept(url: &str, timeout: Duration, lines: usize) -> Arc<GuardedHttp> {
        let http = Arc::new(GuardedHttp::for_webhooks(loopback(), timeout, lines));
        let first = posted(&http, url, "first", 64).await.unwrap();
        assert_eq!(first.body, b"first");
        http
    }

    /// Posts `count` requests at once (ids `msg_0`, `msg_1`, …) and returns
    /// each id with what its post came to.
    async fn at_once(
        http: &Arc<GuardedHttp>,
        url: &str,
        count: usize,
    ) -> Vec<(String, Result<Answer, HttpError>)> {
        let mut posts = tokio::task::JoinSet::new();
        for i in 0..count {
            let (http, url) = (http.clone(), url.to_owned());
            posts.spawn(async move {
                let id = format!("msg_{i}");
                let answer = posted(&http, &url, &id, 64).await;
                (id, answer)
            });
        }
        posts.join_all().await
    }
}
