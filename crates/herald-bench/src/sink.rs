//! A fast SMTP sink on loopback: it accepts every message, counts it and throws
//! the content away, so that it costs as little CPU as possible next to the node.
//! The fairness phase also starts a slow one (a delay before each end-of-DATA
//! reply, like a provider's server under load) and one that records when each
//! recipient's message arrived; the default sink does neither.
//!
//! Replies are collected while complete commands remain in the read buffer and
//! written in one go before the next read, which answers pipelined commands in
//! order and with few writes. The end of DATA is found by jumping from line
//! feed to line feed; no line is ever copied.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// How much one read may bring in; large enough for a whole 2 KiB message and
/// its envelope, small enough to stay in cache.
const READ_CHUNK: usize = 64 * 1024;

/// A command line longer than this is refused and the connection closed: the
/// sink only ever talks to Herald's own client.
const MAX_COMMAND: usize = 4096;

/// The terminating line of DATA, seen at the start of a line.
const END_OF_DATA: &[u8] = b".\r\n";

/// How a sink behaves besides accepting everything; the default is as fast as it can be.
#[derive(Clone, Copy, Default)]
pub struct Behaviour {
    /// Held before each reply to the end of DATA, so that every connection
    /// delivers at most one message per `delay`: a slow provider.
    pub delay: Option<Duration>,
    /// Keeps each message's first recipient and the moment its end of DATA
    /// arrived, so that a submission can be matched to its delivery.
    pub record: bool,
}

/// What the sink has received, shared with whoever waits for it.
struct Shared {
    behaviour: Behaviour,
    /// `(first recipient, arrival)` per message, when recording.
    arrivals: Mutex<Vec<(String, Instant)>>,
    messages: AtomicU64,
    connections: AtomicU64,
    bytes: AtomicU64,
    /// The count a waiter waits for; sessions wake it only on reaching it, so
    /// the waiter is not woken for every message (u64::MAX: nobody waits).
    target: AtomicU64,
    arrived: Notify,
}

impl Shared {
    fn new(behaviour: Behaviour) -> Self {
        Shared {
            behaviour,
            arrivals: Mutex::new(Vec::new()),
            messages: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            arrived: Notify::new(),
        }
    }
}

/// A running sink; it stops when the process ends.
#[derive(Clone)]
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Sink {
    /// Binds 127.0.0.1 on a free port and starts accepting, as fast as it can.
    pub async fn start() -> anyhow::Result<Sink> {
        Sink::start_with(Behaviour::default()).await
    }

    /// Binds 127.0.0.1 on a free port and starts accepting, behaving as asked.
    pub async fn start_with(behaviour: Behaviour) -> anyhow::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(behaviour));
        let accepting = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                accepting.connections.fetch_add(1, Ordering::Relaxed);
                let shared = accepting.clone();
                tokio::spawn(async move {
                    // A session that breaks only loses its own unfinished message.
                    let _ = serve(socket, &shared).await;
                });
            }
        });
        Ok(Sink { addr, shared })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Messages accepted so far.
    pub fn messages(&self) -> u64 {
        self.shared.messages.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Content bytes received so far, terminators included.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// Each message's first recipient and arrival so far, when recording.
    pub fn arrivals(&self) -> Vec<(String, Instant)> {
        self.shared
            .arrivals
            .lock()
            .expect("no session panics holding the lock")
            .clone()
    }

    /// Waits until at least `target` messages have arrived or `limit` has passed;
    /// returns the count reached. One waiter at a time.
    pub async fn wait_for(&self, target: u64, limit: Duration) -> u64 {
        self.shared.target.store(target, Ordering::SeqCst);
        let reached = self.wait(target, limit).await;
        self.shared.target.store(u64::MAX, Ordering::SeqCst);
        reached
    }

    async fn wait(&self, target: u64, limit: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // The waiter is registered before the count is read, so an arrival
            // between the read and the wait still wakes it.
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let now = self.messages();
            if now >= target {
                return now;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.messages();
            }
        }
    }
}

/// Where a session is in the protocol.
enum Mode {
    /// Reading command lines.
    Commands,
    /// Inside DATA; `at_line_start` says whether the next byte begins a line.
    Data { at_line_start: bool },
}

/// One SMTP session, until QUIT or the peer closes.
async fn serve(mut socket: TcpStream, shared: &Shared) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    socket.write_all(b"220 herald-bench sink ESMTP\r\n").await?;
    // One buffer for the whole session, zeroed once: bytes before `start` are
    // consumed, bytes from `end` on are free.
    let mut buf = vec![0u8; READ_CHUNK];
    let mut start = 0usize;
    let mut end = 0usize;
    let mut replies: Vec<u8> = Vec::with_capacity(1024);
    let mut mode = Mode::Commands;
    // The current message's first recipient, kept only when recording.
    let mut recipient: Option<String> = None;
    loop {
        let mut quit = false;
        // Counted here and added once per read, not once per line.
        let mut content_bytes = 0u64;
        // Work through everything complete in the buffer.
        loop {
            match mode {
                Mode::Commands => {
                    let Some(nl) = find_newline(&buf[start..end]) else {
                        if end - start > MAX_COMMAND {
                            replies.extend_from_slice(b"500 line too long\r\n");
                            quit = true;
                        }
                        break;
                    };
                    let line = &buf[start..start + nl];
                    start += nl + 1;
                    match command(line) {
                        Command::Ehlo => replies.extend_from_slice(
                            b"250-herald-bench sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
                        ),
                        Command::Ok => replies.extend_from_slice(b"250 OK\r\n"),
                        Command::Mail => {
                            recipient = None;
                            replies.extend_from_slice(b"250 OK\r\n");
                        }
                        Command::Rcpt => {
                            if shared.behaviour.record && recipient.is_none() {
                                recipient = Some(address(line));
                            }
                            replies.extend_from_slice(b"250 OK\r\n");
                        }
                        Command::Data => {
                            replies.extend_from_slice(b"354 go ahead\r\n");
                            // The DATA line's own CRLF is the CRLF before a possible
                            // immediate terminator, so the content starts a line.
                            mode = Mode::Data {
                                at_line_start: true,
                            };
                        }
                        Command::Quit => {
                            replies.extend_from_slice(b"221 bye\r\n");
                            quit = true;
                            break;
                        }
                        Command::Unknown => {
                            replies.extend_from_slice(b"500 unrecognised command\r\n")
                        }
                    }
                }
                Mode::Data {
                    ref mut at_line_start,
                } => {
                    let rest = &buf[start..end];
                    if *at_line_start {
                        if rest.starts_with(END_OF_DATA) {
                            start += END_OF_DATA.len();
                            if let Some(delay) = shared.behaviour.delay {
                                // The replies so far go first; only this one waits.
                                socket.write_all(&replies).await?;
                                replies.clear();
                                tokio::time::sleep(delay).await;
                            }
                            if shared.behaviour.record {
                                let to = recipient.take().unwrap_or_default();
                                shared
                                    .arrivals
                                    .lock()
                                    .expect("no session panics holding the lock")
                                    .push((to, Instant::now()));
                            }
                            let count = shared.messages.fetch_add(1, Ordering::SeqCst) + 1;
                            if count >= shared.target.load(Ordering::SeqCst) {
                                shared.arrived.notify_waiters();
                            }
                            replies.extend_from_slice(b"250 OK queued\r\n");
                            mode = Mode::Commands;
                            continue;
                        }
                        if END_OF_DATA.starts_with(rest) {
                            // Possibly the terminator, cut by the read: wait for more.
                            break;
                        }
                        *at_line_start = false;
                    }
                    match find_newline(rest) {
                        Some(nl) => {
                            content_bytes += nl as u64 + 1;
                            start += nl + 1;
                            *at_line_start = true;
                        }
                        None => {
                            content_bytes += rest.len() as u64;
                            start = end;
                            break;
                        }
                    }
                }
            }
        }
        shared.bytes.fetch_add(content_bytes, Ordering::Relaxed);
        if !replies.is_empty() {
            socket.write_all(&replies).await?;
            replies.clear();
        }
        if quit {
            return Ok(());
        }
        // Move the unconsumed tail (a partial line, at most a few kilobytes) to
        // the front, so the buffer never grows with the session.
        buf.copy_within(start..end, 0);
        end -= start;
        start = 0;
        let n = socket.read(&mut buf[end..]).await?;
        if n == 0 {
            return Ok(());
        }
        end += n;
    }
}

/// What a command line asks for.
enum Command {
    Ehlo,
    Ok,
    Mail,
    Rcpt,
    Data,
    Quit,
    Unknown,
}

/// The address between the angle brackets of a MAIL or RCPT line, or the
/// whole line when there are none.
fn address(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let inner = text
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map_or(text.trim(), |(address, _)| address);
    inner.to_owned()
}

/// Recognises a command by its first four letters, whatever their case.
fn command(line: &[u8]) -> Command {
    let Some(verb) = line.get(..4) else {
        return Command::Unknown;
    };
    let mut upper = [0u8; 4];
    for (u, b) in upper.iter_mut().zip(verb) {
        *u = b.to_ascii_uppercase();
    }
    match &upper {
        b"EHLO" | b"HELO" => Command::Ehlo,
        b"RCPT" => Command::Rcpt,
        b"MAIL" => Command::Mail,
        b"RSET" | b"NOOP" => Command::Ok,
        b"DATA" => Command::Data,
        b"QUIT" => Command::Quit,
        _ => Command::Unknown,
    }
}

/// The index of the first line feed. Eight bytes are tested at a time, so a
/// long line costs one comparison per word rather than one per byte.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const LF: u64 = ONES * b'\n' as u64;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let x = word ^ LF;
        // A zero byte in `x` is a line feed in `word` (the classic has-zero-byte test).
        if (x.wrapping_sub(ONES) & !x & HIGHS) != 0 {
            return chunk.iter().position(|&b| b == b'\n').map(|i| offset + i);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| offset + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_line_feeds_anywhere() {
        for len in 0..40 {
            for at in 0..len {
                let mut bytes = vec![b'a'; len];
                bytes[at] = b'\n';
                assert_eq!(find_newline(&bytes), Some(at), "len {len} at {at}");
            }
            assert_eq!(find_newline(&vec![b'a'; len]), None);
        }
        // Bytes just above and below a line feed are not taken for one.
        assert_eq!(find_newline(&[0x0b, 0x09, 0x8a, 0x0a]), Some(3));
    }

    #[tokio::test]
    async fn answers_pipelined_commands_and_counts_messages() {
        let sink = Sink::start().await.unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", sink.port()))
            .await
            .unwrap();
        let mut script = b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n".to_vec();
        script.extend_from_slice(
            b"line\r\n..dot\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n.\r\nQUIT\r\n",
        );
        // Sent a byte at a time, so every boundary is cut once.
        for b in script {
            s.write_all(&[b]).await.unwrap();
        }
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("220 "));
        assert_eq!(answer.matches("354 ").count(), 2);
        assert_eq!(answer.matches("250 OK queued").count(), 2);
        assert!(answer.ends_with("221 bye\r\n"));
        assert_eq!(sink.wait_for(2, Duration::from_secs(1)).await, 2);
    }

    #[tokio::test]
    async fn a_slow_recording_sink_still_answers_in_order_and_keeps_recipients() {
        let sink = Sink::start_with(Behaviour {
            delay: Some(Duration::from_millis(1)),
            record: true,
        })
        .await
        .unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", sink.port()))
            .await
            .unwrap();
        s.write_all(
            b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<first@d>\r\nRCPT TO:<second@d>\r\nDATA\r\n\
              body\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<third@d>\r\nDATA\r\n.\r\nQUIT\r\n",
        )
        .await
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer.matches("250 OK queued").count(), 2);
        assert!(answer.ends_with("250 OK queued\r\n221 bye\r\n"));
        assert_eq!(sink.wait_for(2, Duration::from_secs(5)).await, 2);
        let to: Vec<String> = sink.arrivals().into_iter().map(|(to, _)| to).collect();
        assert_eq!(to, ["first@d", "third@d"]);
    }
}
