//! The webhook sink: an HTTP/1.1 server on loopback that answers 204 to every
//! POST and counts the events by type, for the end-to-end phase with webhooks.
//!
//! Like the SMTP sink it is written to cost the machine as little as it can
//! next to the node: requests are parsed with `httparse` where they lie in the
//! read buffer, the body is skipped by its length, and the answers to every
//! complete request in a read go out in one write. It serves Herald's own
//! client only: a request without a `content-length`, or with a head longer
//! than [`MAX_HEAD`], closes the connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a request's head may be.
const MAX_HEAD: usize = 16 * 1024;
/// The headers a request may have.
const MAX_HEADERS: usize = 32;
/// The answer to every request.
const NO_CONTENT: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";

#[derive(Default)]
struct Counts {
    by_type: Mutex<HashMap<String, u64>>,
    changed: tokio::sync::Notify,
}

/// A running webhook sink.
pub struct Hooks {
    pub url: String,
    counts: Arc<Counts>,
}

impl Hooks {
    pub async fn start() -> anyhow::Result<Hooks> {
        let counts = Arc::new(Counts::default());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/events", listener.local_addr()?);
        let serving = counts.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(serve(tcp, serving.clone()));
            }
        });
        Ok(Hooks { url, counts })
    }

    /// How many events of each type arrived so far.
    pub fn counts(&self) -> HashMap<String, u64> {
        self.counts.by_type.lock().expect("counts lock").clone()
    }

    pub fn total(&self) -> u64 {
        self.counts().values().sum()
    }

    /// Waits until `target` events arrived in all, or `pause` passed; returns the total.
    pub async fn wait_for(&self, target: u64, pause: Duration) -> u64 {
        let changed = self.counts.changed.notified();
        let total = self.total();
        if total >= target {
            return total;
        }
        let _ = tokio::time::timeout(pause, changed).await;
        self.total()
    }
}

/// One connection: requests in, one 204 each, until the client closes.
async fn serve(mut tcp: TcpStream, counts: Arc<Counts>) {
    let mut buffer: Vec<u8> = Vec::with_capacity(8 * 1024);
    let mut answers: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8 * 1024];
    loop {
        let n = match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        let mut kinds: Vec<String> = Vec::new();
        loop {
            match request(&buffer[start..]) {
                Parsed::Complete { length, kind } => {
                    start += length;
                    kinds.push(kind);
                    answers.extend_from_slice(NO_CONTENT);
                }
                Parsed::Partial => break,
                Parsed::Refused => return,
            }
        }
        buffer.drain(..start);
        if !kinds.is_empty() {
            let mut by_type = counts.by_type.lock().expect("counts lock");
            for kind in kinds {
                *by_type.entry(kind).or_default() += 1;
            }
            drop(by_type);
            counts.changed.notify_waiters();
        }
        if !answers.is_empty() {
            if tcp.write_all(&answers).await.is_err() {
                return;
            }
            answers.clear();
        }
    }
}

enum Parsed {
    /// A whole request of `length` bytes, head and body, with its event's type.
    Complete { length: usize, kind: String },
    /// More bytes are needed.
    Partial,
    /// Not a request this sink serves.
    Refused,
}

/// Reads the request at the start of `bytes`.
fn request(bytes: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) if bytes.len() <= MAX_HEAD => return Parsed::Partial,
        _ => return Parsed::Refused,
    };
    let Some(body_length) = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
    else {
        return Parsed::Refused;
    };
    let Some(body) = bytes.get(head..head + body_length) else {
        return Parsed::Partial;
    };
    Parsed::Complete {
        length: head + body_length,
        kind: kind(body),
    }
}

/// The event's type, which Herald writes first in the body: read without
/// parsing the rest.
fn kind(body: &[u8]) -> String {
    body.strip_prefix(b"{\"type\":\"")
        .and_then(|rest| rest.split(|b| *b == b'"').next())
        .map_or_else(
            || "unreadable".to_owned(),
            |t| String::from_utf8_lossy(t).into_owned(),
        )
}
