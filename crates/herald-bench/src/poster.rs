//! A lean keep-alive HTTP/1.1 client for the closed-loop single-API load:
//! one connection that posts the same prepared request again and again, as
//! `wrk` does, so that the load generator costs the two cores it shares with
//! the node as little as it can.
//!
//! A general client (reqwest) builds each request anew: its URL parsed, a
//! header map filled, a pooled connection checked out and back, and its
//! connection driven by a task of its own. That was about a seventh of the
//! machine's samples in the single-API end-to-end phase. Here the request's
//! bytes are built once, each post is one write and the reads its answer
//! needs, and the answer is parsed with `httparse`.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most header lines an answer may have.
const MAX_HEADERS: usize = 32;

/// Longest head of an answer read.
const MAX_HEAD: usize = 64 * 1024;

/// Largest body of an answer read.
const MAX_BODY: usize = 1024 * 1024;

/// One client's connection and its prepared request.
pub struct Poster {
    addr: SocketAddr,
    request: Vec<u8>,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

/// An answer: its status and body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Poster {
    /// A poster of `body` (JSON) to `path` at `addr` with `token` as its
    /// bearer token; it connects at its first post.
    pub fn new(addr: SocketAddr, path: &str, token: &str, body: &[u8]) -> Poster {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        Poster {
            addr,
            request,
            stream: None,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Posts the request and reads its answer. After an error the
    /// connection is dropped, and the next post opens a new one.
    pub async fn post(&mut self) -> Result<Answer, String> {
        let answer = self.exchange().await;
        if answer.is_err() {
            self.stream = None;
        }
        answer
    }

    async fn exchange(&mut self) -> Result<Answer, String> {
        // A connection the node closed while it was idle is opened again
        // before the request is written: after the write, whether the node
        // saw the request could not be told.
        if let Some(stream) = &self.stream {
            match stream.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => self.stream = None,
            }
        }
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream
            .write_all(&self.request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.buf.clear();
        let (status, head, length, close) = loop {
            if self.buf.len() > MAX_HEAD {
                return Err(format!("an answer's head longer than {MAX_HEAD} bytes"));
            }
            read_more(stream, &mut self.buf, "before answering").await?;
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            let head = match response.parse(&self.buf).map_err(|e| e.to_string())? {
                httparse::Status::Partial => continue,
                httparse::Status::Complete(head) => head,
            };
            let status = response.code.unwrap_or(0);
            if (100..200).contains(&status) {
                // An interim answer: the final one follows.
                self.buf.drain(..head);
                continue;
            }
            let header = |name: &str| {
                response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned())
            };
            let length = match header("content-length") {
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| format!("{status}: a content-length of {v:?}"))?,
                None if status == 204 || status == 304 => 0,
                // The node gives every answer a length; any other framing is
                // not read here.
                None => return Err(format!("{status}: an answer without a content-length")),
            };
            if length > MAX_BODY {
                return Err(format!("{status}: an answer of {length} bytes"));
            }
            let close = header("connection").is_some_and(|v| {
                v.split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("close"))
            });
            break (status, head, length, close);
        };
        while self.buf.len() < head + length {
            read_more(stream, &mut self.buf, "within an answer").await?;
        }
        let body = self.buf[head..head + length].to_vec();
        // More than the answer: the connection is out of step; a new one next time.
        if close || self.buf.len() > head + length {
            self.stream = None;
        }
        Ok(Answer { status, body })
    }
}

/// Reads what has arrived into `buf`; the node closing the connection is an
/// error, said to have happened `when`.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, when: &str) -> Result<(), String> {
    match stream.read_buf(buf).await {
        Ok(0) => Err(format!("the node closed the connection {when}")),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("read: {e}")),
    }
}
