//! The SMTP load generator of the ingest phases, in the manner of Postfix's
//! `smtp-source`: N connections at once, each one session that sends M
//! messages one after another with PIPELINING (MAIL, RCPT and DATA in one
//! write, the content and its terminator in another), timing each message
//! from its MAIL to the `250` after its content.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::content;
use crate::load::{Outcome, percentiles};
use crate::sys::round;

/// How long the generator waits for any one reply before giving the session up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// The shape of the load.
#[derive(Clone, Copy)]
pub struct SmtpLoad {
    /// Sessions at once.
    pub connections: usize,
    /// Messages each session sends.
    pub per_connection: u64,
    /// Body size of each message in bytes.
    pub size: usize,
}

impl SmtpLoad {
    pub fn total(&self) -> u64 {
        self.connections as u64 * self.per_connection
    }

    pub fn json(&self) -> Value {
        json!({
            "connections": self.connections,
            "messages_per_connection": self.per_connection,
            "messages": self.total(),
            "body_bytes": self.size,
            "message_bytes": message(self.size).len(),
        })
    }
}

/// The figures of an SMTP run as JSON, latencies as percentiles in milliseconds.
pub fn json(out: &Outcome) -> Value {
    json!({
        "accepted": out.accepted,
        "refused": out.refused,
        "failed_sessions": out.failed,
        "seconds": round(out.seconds, 3),
        "accepted_per_second": round(out.rate(), 0),
        "message_latency_ms": percentiles(&out.latencies),
        "first_problem": out.first_problem,
    })
}

/// The message every session sends: a notification's headers and a plain
/// text body of `size` bytes, CRLF line endings, ending in CRLF, with no line
/// that starts with a dot (so it goes on the wire as it is).
pub fn message(size: usize) -> Vec<u8> {
    let mut text = format!(
        "From: <{sender}>\r\n\
         To: <{recipient}>\r\n\
         Subject: Herald benchmark notification\r\n\
         Message-ID: <smtp-ingest@bench.example>\r\n\
         Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=\"us-ascii\"\r\n\r\n",
        sender = content::SENDER,
        recipient = content::RECIPIENT,
    );
    text.push_str(&content::body_text(size).replace('\n', "\r\n"));
    if !text.ends_with("\r\n") {
        text.push_str("\r\n");
    }
    text.into_bytes()
}

/// Runs the load against the SMTP server at `addr` and times it from the
/// first connection to the last reply.
pub async fn run(addr: SocketAddr, load: SmtpLoad) -> Outcome {
    let mut data = message(load.size);
    data.extend_from_slice(b".\r\n");
    let data: &'static [u8] = data.leak();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..load.connections {
        tasks.spawn(async move {
            let mut out = Outcome::default();
            if let Err(error) = session(addr, load.per_connection, data, &mut out).await {
                out.failed += 1;
                out.problem(error.to_string());
            }
            out
        });
    }
    let mut total = Outcome::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(out) => total.merge(out),
            Err(error) => {
                total.failed += 1;
                total.problem(error.to_string());
            }
        }
    }
    total.seconds = started.elapsed().as_secs_f64();
    total
}

/// One session: greeting, EHLO, `count` messages, QUIT.
async fn session(
    addr: SocketAddr,
    count: u64,
    data: &'static [u8],
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut stream = BufReader::with_capacity(16 * 1024, stream);
    let mut line = String::new();
    let greeting = reply(&mut stream, &mut line).await?;
    anyhow::ensure!(greeting == 220, "greeting {}", line.trim_end());
    stream
        .get_mut()
        .write_all(b"EHLO bench.example\r\n")
        .await?;
    let ehlo = reply(&mut stream, &mut line).await?;
    anyhow::ensure!(ehlo == 250, "EHLO answered {}", line.trim_end());
    let envelope = format!(
        "MAIL FROM:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\n",
        content::SENDER,
        content::RECIPIENT
    );
    for _ in 0..count {
        let sent = Instant::now();
        stream.get_mut().write_all(envelope.as_bytes()).await?;
        let mail = reply(&mut stream, &mut line).await?;
        let mail_text = line.trim_end().to_owned();
        let rcpt = reply(&mut stream, &mut line).await?;
        let rcpt_text = line.trim_end().to_owned();
        let go_ahead = reply(&mut stream, &mut line).await?;
        if go_ahead != 354 {
            // The server refused the transaction somewhere; say where, and
            // start the next one afresh.
            out.refused += 1;
            out.problem(format!(
                "MAIL {mail_text:?}, RCPT {rcpt_text:?}, DATA {:?}",
                line.trim_end()
            ));
            if mail == 250 || rcpt == 250 {
                stream.get_mut().write_all(b"RSET\r\n").await?;
                reply(&mut stream, &mut line).await?;
            }
            continue;
        }
        stream.get_mut().write_all(data).await?;
        let done = reply(&mut stream, &mut line).await?;
        if done == 250 {
            out.accepted += 1;
            out.latencies.push(sent.elapsed());
        } else {
            out.refused += 1;
            out.problem(format!("end of DATA answered {}", line.trim_end()));
        }
    }
    stream.get_mut().write_all(b"QUIT\r\n").await?;
    // The goodbye is not waited for beyond this: the messages are already counted.
    let _ = reply(&mut stream, &mut line).await;
    Ok(())
}

/// Reads one reply, all its lines, into `line` (the last line stays there);
/// returns its code.
async fn reply(stream: &mut BufReader<TcpStream>, line: &mut String) -> anyhow::Result<u16> {
    loop {
        line.clear();
        let read = tokio::time::timeout(REPLY_TIMEOUT, stream.read_line(line)).await??;
        anyhow::ensure!(read > 0, "the server closed the connection");
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| anyhow::anyhow!("not an SMTP reply: {:?}", line.trim_end()))?;
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_crlf_and_needs_no_stuffing() {
        let message = message(1024);
        let text = std::str::from_utf8(&message).unwrap();
        assert!(text.ends_with("\r\n"));
        assert!(!text.replace("\r\n", "").contains('\n'));
        assert!(text.split("\r\n").all(|l| !l.starts_with('.')));
    }
}
