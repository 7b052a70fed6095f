//! Message content as it goes on the wire after DATA: CRLF line endings only,
//! dot-stuffed, and ended by the `.` line.

/// Turns message content into the exact bytes to send after a 354 reply.
///
/// Every CR, LF and CRLF becomes CRLF, so no bare CR or LF reaches the server
/// (the SMTP smuggling class of CVE-2023-51764/5/6); every line that starts
/// with `.` gets a second one (RFC 5321 4.5.2); and the result ends with
/// `CRLF . CRLF`, the only end of data the server can see.
pub fn dot_stuffed(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 64 + 5);
    let mut at_line_start = true;
    let mut bytes = content.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'\r' | b'\n' => {
                if b == b'\r' && bytes.peek() == Some(&b'\n') {
                    bytes.next();
                }
                out.extend_from_slice(b"\r\n");
                at_line_start = true;
            }
            _ => {
                if at_line_start && b == b'.' {
                    out.push(b'.');
                }
                out.push(b);
                at_line_start = false;
            }
        }
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(s: &str) -> String {
        String::from_utf8(dot_stuffed(s.as_bytes())).unwrap()
    }

    #[test]
    fn normalises_line_endings() {
        assert_eq!(wire("a\nb\rc\r\nd"), "a\r\nb\r\nc\r\nd\r\n.\r\n");
        assert_eq!(wire("a\r\n"), "a\r\n.\r\n");
        assert_eq!(wire(""), ".\r\n");
        assert_eq!(wire("a\r\r\nb"), "a\r\n\r\nb\r\n.\r\n");
    }

    #[test]
    fn stuffs_every_dot_line_so_data_never_ends_early() {
        assert_eq!(wire(".\r\n"), "..\r\n.\r\n");
        assert_eq!(wire("a\n.\r\nb"), "a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(wire("a\r.\r\nb"), "a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(wire("a\n.\nb"), "a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(wire(".leading"), "..leading\r\n.\r\n");
        let out = wire("x\n.\n.\r\n\r.\r");
        // The only `CRLF . CRLF` is the terminator.
        assert_eq!(out.matches("\r\n.\r\n").count(), 1);
        assert!(out.ends_with("\r\n.\r\n"));
        assert!(!out.replace("\r\n", "").contains(['\r', '\n']));
    }
}
