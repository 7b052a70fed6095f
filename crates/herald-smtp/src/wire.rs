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
    let mut rest = content;
    loop {
        // `rest` starts a line here.
        if rest.first() == Some(&b'.') {
            out.push(b'.');
        }
        match memchr::memchr2(b'\r', b'\n', rest) {
            Some(end) => {
                out.extend_from_slice(&rest[..end]);
                out.extend_from_slice(b"\r\n");
                let crlf = rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n');
                rest = &rest[end + if crlf { 2 } else { 1 }..];
                if rest.is_empty() {
                    break;
                }
            }
            None => {
                if !rest.is_empty() {
                    out.extend_from_slice(rest);
                    out.extend_from_slice(b"\r\n");
                }
                break;
            }
        }
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The size to declare in `MAIL FROM:<…> SIZE=` for content made by
/// [`dot_stuffed`]: RFC 1870 counts the octets sent after the 354 reply,
/// CRLF pairs included, but neither the terminating `.` line nor the dots
/// added by stuffing.
pub fn declared_size(stuffed: &[u8]) -> usize {
    let body = stuffed.strip_suffix(b".\r\n").unwrap_or(stuffed);
    let stuffing =
        usize::from(body.starts_with(b".")) + memchr::memmem::find_iter(body, b"\n.").count();
    body.len() - stuffing
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

    /// The rules of [`dot_stuffed`] byte by byte, as plainly as they read.
    fn stuffed_byte_by_byte(content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at_line_start = true;
        let mut bytes = content.iter().copied().peekable();
        while let Some(b) = bytes.next() {
            if b == b'\r' || b == b'\n' {
                if b == b'\r' && bytes.peek() == Some(&b'\n') {
                    bytes.next();
                }
                out.extend_from_slice(b"\r\n");
                at_line_start = true;
            } else {
                if at_line_start && b == b'.' {
                    out.push(b'.');
                }
                out.push(b);
                at_line_start = false;
            }
        }
        if !at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    #[test]
    fn every_short_mix_of_dots_and_line_ends_is_stuffed_as_the_rules_say() {
        // Every string of up to six bytes from the ones that matter.
        let alphabet = [b'.', b'\r', b'\n', b'a'];
        let mut inputs = vec![Vec::new()];
        let mut last = vec![Vec::new()];
        for _ in 0..6 {
            last = last
                .iter()
                .flat_map(|s: &Vec<u8>| {
                    alphabet.iter().map(move |&b| {
                        let mut next = s.clone();
                        next.push(b);
                        next
                    })
                })
                .collect();
            inputs.extend(last.iter().cloned());
        }
        for input in inputs {
            let stuffed = dot_stuffed(&input);
            assert_eq!(stuffed, stuffed_byte_by_byte(&input), "{input:?}");
            let body = &stuffed[..stuffed.len() - 3];
            let dots = |bytes: &[u8]| bytes.iter().filter(|&&b| b == b'.').count();
            let dots_added = dots(body) - dots(&input);
            assert_eq!(
                declared_size(&stuffed),
                body.len() - dots_added,
                "{input:?}"
            );
        }
    }

    #[test]
    fn the_declared_size_leaves_out_stuffing_and_the_terminator() {
        assert_eq!(declared_size(&dot_stuffed(b"")), 0);
        assert_eq!(declared_size(&dot_stuffed(b"ab\r\n")), 4);
        assert_eq!(declared_size(&dot_stuffed(b".a\n..\nb")), 11);
        assert_eq!(declared_size(&dot_stuffed(b"a\nb")), 6);
    }
}
