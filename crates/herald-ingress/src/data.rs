//! The DATA reader: finds the one true end of a message (`<CRLF>.<CRLF>`),
//! removes dot-stuffing, and judges the message's lines while it reads.
//!
//! `smtp-proto` has a DATA receiver, but it takes a bare LF as a line end for
//! dot-unstuffing, keeps bare CR and LF in the message, and neither measures
//! lines nor counts size or header fields; checking each of those afterwards
//! would walk a 10 MiB message again and keep it in memory after it is
//! already known to be refused. This reader does all of it in one pass and
//! stops keeping the message as soon as it is refused.
//!
//! The rules, against SMTP smuggling (CVE-2023-51764/51765/51766):
//! only CR followed by LF ends a line, so only `CRLF . CRLF` ends DATA; a CR
//! not followed by LF, or an LF not preceded by CR, is part of the line it is
//! in and makes the whole message refused (`554 5.5.2`). `\n.\n`, `\r.\r`,
//! `\n.\r\n` and `\r\n.\n` therefore never end DATA, and what follows them
//! is read as more of the same (refused) message.

use crate::reply::Reply;

/// Where in a line the reader is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line (also right after the DATA command).
    LineStart,
    /// After a `.` at the start of a line.
    Dot,
    /// Inside a line.
    Within,
    /// After a CR; `dot_line` when the line so far is the lone `.`.
    Cr { dot_line: bool },
}

/// Why a message is refused, in the order the reply is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Faults {
    bare_newline: bool,
    nul: bool,
    too_big: bool,
    line_too_long: bool,
    too_many_header_fields: bool,
}

/// The longest line of a message, without its CRLF (RFC 5322 §2.1.1,
/// RFC 5321 §4.5.3.1.6).
pub(crate) const MAX_LINE: usize = 998;

/// Reads one message from the bytes after `354`.
pub(crate) struct DataReader {
    state: State,
    message: Vec<u8>,
    /// Octets of the message so far (unstuffed, CRLFs included, without what
    /// `message` held at the start).
    size: usize,
    max_size: usize,
    line_len: usize,
    /// The first octet of the current line, to tell a header field from its continuation.
    line_first: Option<u8>,
    in_header: bool,
    header_fields: usize,
    max_header_fields: usize,
    faults: Faults,
}

/// The reader's verdict once DATA ended.
pub(crate) enum Outcome {
    /// The message, as received (with what the reader was started with in front).
    Message(Vec<u8>),
    /// The reply that refuses it.
    Refused(Reply),
}

impl DataReader {
    /// A reader that appends to `prefix` (the `Received:` header), for
    /// messages of at most `max_size` octets and `max_header_fields` fields.
    pub fn new(prefix: Vec<u8>, max_size: usize, max_header_fields: usize) -> DataReader {
        DataReader {
            state: State::LineStart,
            message: prefix,
            size: 0,
            max_size,
            line_len: 0,
            line_first: None,
            in_header: true,
            header_fields: 0,
            max_header_fields,
            faults: Faults::default(),
        }
    }

    /// Takes bytes from `input` up to the end of DATA; returns how many it
    /// took and whether DATA ended with them. Bytes after the end are not taken.
    pub fn feed(&mut self, input: &[u8]) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            // A run of ordinary octets inside a line is taken at once.
            if self.state == State::Within {
                let run = input[i..]
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(input.len() - i);
                if run > 0 {
                    self.content(&input[i..i + run]);
                    i += run;
                    continue;
                }
            }
            let byte = input[i];
            i += 1;
            if self.step(byte) {
                return (i, true);
            }
        }
        (i, false)
    }

    /// One octet; true when it ended DATA.
    fn step(&mut self, byte: u8) -> bool {
        match self.state {
            State::LineStart if byte == b'.' => {
                // A leading dot is removed (RFC 5321 §4.5.2): it either ends
                // DATA (a lone dot) or was added by the client's stuffing.
                self.state = State::Dot;
                false
            }
            State::LineStart | State::Within | State::Dot => {
                match byte {
                    b'\r' => {
                        self.state = State::Cr {
                            dot_line: self.state == State::Dot,
                        }
                    }
                    b'\n' => {
                        self.faults.bare_newline = true;
                        self.content(b"\n");
                        self.state = State::Within;
                    }
                    _ => {
                        self.content(&[byte]);
                        self.state = State::Within;
                    }
                }
                false
            }
            State::Cr { dot_line } => {
                if byte == b'\n' {
                    if dot_line {
                        return true;
                    }
                    self.end_of_line();
                    self.state = State::LineStart;
                    return false;
                }
                // A CR that no LF follows: part of the line, and a fault.
                self.faults.bare_newline = true;
                self.content(b"\r");
                self.state = State::Within;
                self.step(byte)
            }
        }
    }

    /// Octets of the current line (never CR LF line ends).
    fn content(&mut self, bytes: &[u8]) {
        if bytes.contains(&0) {
            self.faults.nul = true;
        }
        if self.line_first.is_none() {
            self.line_first = bytes.first().copied();
        }
        self.line_len += bytes.len();
        if self.line_len > MAX_LINE {
            self.faults.line_too_long = true;
        }
        self.keep(bytes);
    }

    fn end_of_line(&mut self) {
        if self.in_header {
            match self.line_first {
                None => self.in_header = false,
                Some(b' ' | b'\t') => {}
                Some(_) => {
                    self.header_fields += 1;
                    if self.header_fields > self.max_header_fields {
                        self.faults.too_many_header_fields = true;
                    }
                }
            }
        }
        self.line_len = 0;
        self.line_first = None;
        self.keep(b"\r\n");
    }

    /// Adds to the message while it can still be accepted; a refused
    /// message's octets are counted, never kept.
    fn keep(&mut self, bytes: &[u8]) {
        self.size += bytes.len();
        if self.size > self.max_size {
            self.faults.too_big = true;
        }
        if self.faults != Faults::default() {
            if !self.message.is_empty() {
                self.message = Vec::new();
            }
            return;
        }
        self.message.extend_from_slice(bytes);
    }

    /// The verdict, once `feed` said DATA ended.
    pub fn finish(self) -> Outcome {
        let faults = self.faults;
        if faults.bare_newline {
            return Outcome::Refused(Reply::new(
                554,
                "5.5.2",
                "Message refused: bare CR or LF in DATA (lines must end with CRLF)",
            ));
        }
        if faults.nul {
            // RFC 5322 §3.5 and RFC 2045 §2.8 allow no NUL in a message's
            // lines, 8-bit ones included; BINARYMIME is not offered.
            return Outcome::Refused(Reply::new(
                554,
                "5.6.0",
                "Message refused: a NUL octet in the message (no line of a message may hold one)",
            ));
        }
        if faults.too_big {
            return Outcome::Refused(Reply::new(
                552,
                "5.3.4",
                format!("Message too big: the limit is {} octets", self.max_size),
            ));
        }
        if faults.line_too_long {
            // RFC 5322 §2.1.1 makes such a line a malformed message rather
            // than a protocol error, so the code is the media one, 5.6.0 (RFC
            // 3463: "other or undefined media error"), with 554, the reply for
            // a failed transaction after DATA.
            return Outcome::Refused(Reply::new(
                554,
                "5.6.0",
                format!("Message refused: a line is longer than {MAX_LINE} octets"),
            ));
        }
        if faults.too_many_header_fields {
            // A limit on what the system takes, like the size: 5.3.4.
            return Outcome::Refused(Reply::new(
                552,
                "5.3.4",
                format!(
                    "Message refused: more than {} header fields",
                    self.max_header_fields
                ),
            ));
        }
        Outcome::Message(self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds the chunks; returns what was taken in all, whether DATA ended, and the outcome.
    fn read(chunks: &[&[u8]]) -> (usize, bool, Outcome) {
        let mut reader = DataReader::new(Vec::new(), 1 << 20, 10);
        let mut taken = 0;
        for chunk in chunks {
            let (n, done) = reader.feed(chunk);
            taken += n;
            if done {
                return (taken, true, reader.finish());
            }
            assert_eq!(n, chunk.len());
        }
        (taken, false, reader.finish())
    }

    fn message(chunks: &[&[u8]]) -> Vec<u8> {
        match read(chunks) {
            (_, true, Outcome::Message(m)) => m,
            (_, done, Outcome::Refused(r)) => panic!("refused ({done}): {r:?}"),
            (_, false, _) => panic!("DATA did not end"),
        }
    }

    fn refusal(chunks: &[&[u8]]) -> Reply {
        match read(chunks) {
            (_, true, Outcome::Refused(r)) => r,
            (_, true, Outcome::Message(m)) => {
                panic!("accepted {:?}", String::from_utf8_lossy(&m))
            }
            (_, false, _) => panic!("DATA did not end"),
        }
    }

    #[test]
    fn unstuffs_and_ends_at_crlf_dot_crlf_only() {
        assert_eq!(message(&[b".\r\n"]), b"");
        assert_eq!(
            message(&[b"a: b\r\n\r\n..x\r\n.y\r\n\r\n.\r\nafter"]),
            b"a: b\r\n\r\n.x\r\ny\r\n\r\n"
        );
        // Split at every point, the same message.
        let whole: &[u8] = b"s: t\r\n\r\nline\r\n..\r\n.\r\n";
        for cut in 0..whole.len() {
            assert_eq!(
                message(&[&whole[..cut], &whole[cut..]]),
                b"s: t\r\n\r\nline\r\n.\r\n",
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn leaves_what_follows_the_end() {
        let (taken, done, _) = read(&[b"x\r\n.\r\nMAIL FROM:<a@b.c>\r\n"]);
        assert!(done);
        assert_eq!(taken, 6);
    }

    #[test]
    fn no_smuggled_end_ends_data_and_each_is_refused() {
        for smuggled in [&b"\n.\n"[..], b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"] {
            let mut chunk = b"a: b\r\n\r\nx".to_vec();
            chunk.extend_from_slice(smuggled);
            chunk.extend_from_slice(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n");
            let (taken, done, _) = read(&[&chunk]);
            assert!(!done, "{smuggled:?} ended DATA");
            assert_eq!(taken, chunk.len());
            chunk.extend_from_slice(b"\r\n.\r\n");
            let reply = refusal(&[&chunk]);
            assert_eq!(
                (reply.code, reply.enhanced.as_deref()),
                (554, Some("5.5.2"))
            );
        }
        for bare in [
            &b"a\nb\r\n.\r\n"[..],
            b"a\rb\r\n.\r\n",
            b"\n.\r\n.\r\n",
            b"\r\r\n.\r\n",
        ] {
            assert_eq!(refusal(&[bare]).code, 554, "{bare:?}");
        }
    }

    /// Random sequences of CR, LF, dots and letters, fed in random pieces:
    /// DATA ends exactly after the first CRLF.CRLF (the DATA command's CRLF
    /// counting as the first CRLF), and the message is refused exactly when
    /// it holds a bare CR or LF.
    #[test]
    fn ends_where_the_first_crlf_dot_crlf_is_and_nowhere_else() {
        let mut seed: u64 = 0x5eed;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        for _ in 0..20_000 {
            let len = next(24) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| [b'\r', b'\n', b'.', b'a'][next(4) as usize])
                .collect();
            let mut framed = b"\r\n".to_vec();
            framed.extend_from_slice(&input);
            let end = framed
                .windows(5)
                .position(|w| w == b"\r\n.\r\n")
                .map(|at| at + 5 - 2);
            let mut reader = DataReader::new(Vec::new(), 1 << 20, 1000);
            let mut taken = 0;
            let mut done = false;
            while taken < input.len() && !done {
                let piece = 1 + next(4) as usize;
                let stop = (taken + piece).min(input.len());
                let (n, ended) = reader.feed(&input[taken..stop]);
                taken += n;
                done = ended;
            }
            assert_eq!(done.then_some(taken), end, "{input:?}");
            if done {
                let body = &input[..taken - 3];
                let mut bare = false;
                for (i, &b) in body.iter().enumerate() {
                    let prev = if i == 0 { b'\n' } else { body[i - 1] };
                    let next_b = body.get(i + 1).copied().unwrap_or(b'\r');
                    bare |= (b == b'\n' && prev != b'\r') || (b == b'\r' && next_b != b'\n');
                }
                // The body's last CRLF belongs to the terminator, so the
                // checks above see it as paired.
                let refused = matches!(reader.finish(), Outcome::Refused(_));
                assert_eq!(refused, bare, "{input:?}");
            }
        }
    }

    #[test]
    fn limits() {
        let long = [b'a'; MAX_LINE];
        let mut ok = long.to_vec();
        ok.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(message(&[&ok]).len(), MAX_LINE + 2);
        // A stuffed dot does not count.
        let mut stuffed = b".".to_vec();
        stuffed.extend_from_slice(&ok);
        assert_eq!(message(&[&stuffed]).len(), MAX_LINE + 2);
        let mut too_long = b"b".to_vec();
        too_long.extend_from_slice(&ok);
        let reply = refusal(&[&too_long]);
        assert_eq!(
            (reply.code, reply.enhanced.as_deref()),
            (554, Some("5.6.0"))
        );

        let mut reader = DataReader::new(b"Received: x\r\n".to_vec(), 10, 10);
        assert_eq!(reader.feed(b"0123456789"), (10, false));
        assert_eq!(reader.feed(b"\r\n.\r\n"), (5, true));
        match reader.finish() {
            Outcome::Refused(r) => {
                assert_eq!((r.code, r.enhanced.unwrap().as_str()), (552, "5.3.4"))
            }
            Outcome::Message(_) => panic!("too big, accepted"),
        }

        let fields: String = (0..11).map(|i| format!("x{i}: y\r\n \r\n")).collect();
        let reply = refusal(&[fields.as_bytes(), b"\r\nbody\r\n.\r\n"]);
        assert_eq!(
            (reply.code, reply.enhanced.as_deref()),
            (552, Some("5.3.4"))
        );
        let fields: String = (0..10).map(|i| format!("x{i}: y\r\n\tz\r\n")).collect();
        let body: String = (0..20).map(|i| format!("b{i}: not a field\r\n")).collect();
        message(&[fields.as_bytes(), b"\r\n", body.as_bytes(), b".\r\n"]);
    }
}
