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
            if stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| format!("read: {e}"))?
                == 0
            {
                return Err("the node closed the connection before answering".into());
            }
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf).map_err(|e| e.to_string())? {
                httparse::Status::Partial => continue,
                httparse::Status::Complete(head) => {
                    let header = |name: &str| {
                        response
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| String::from_utf8_lossy(h.value).into_owned())
                    };
                    let length = header("content-length")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .ok_or("an answer without a content-length")?;
                    let close =
                        header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
                    break (response.code.unwrap_or(0), head, length, close);
                }
            }
        };
        while self.buf.len() < head + length {
            if stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| format!("read: {e}"))?
                == 0
            {
                return Err("the node closed the connection within an answer".into());
            }
        }
        let body = self.buf[head..head + length].to_vec();
        if close {
            self.stream = None;
        }
        Ok(Answer { status, body })
    }
}
