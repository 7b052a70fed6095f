//! Messages recorded by the test server, with small helpers to inspect headers and body.

/// One message that was fully received and answered 2xx at the end of DATA.
#[derive(Clone, Debug)]
pub struct ReceivedMessage {
    /// The address inside `<>` of MAIL FROM, without the brackets (empty for the null sender).
    pub mail_from: String,
    /// Accepted recipients only, without brackets, in the order given.
    pub rcpt_to: Vec<String>,
    /// Message content after un-dot-stuffing, CRLF preserved, without the terminating
    /// ".\r\n" line.
    pub data: Vec<u8>,
    /// Bytes exactly as on the wire after the 354 reply, up to and including the CRLF
    /// that precedes the terminating ".\r\n" line.
    pub raw_data: Vec<u8>,
    /// Whether the transaction ran over TLS.
    pub tls: bool,
    /// The username the session authenticated as, if any.
    pub authenticated_as: Option<String>,
    /// Whether MAIL FROM carried SMTPUTF8, which allows UTF-8 in addresses and headers.
    pub smtputf8: bool,
    /// The parameters of MAIL FROM after the address, as sent (`SIZE=1234`, `SMTPUTF8`).
    pub mail_parameters: Vec<String>,
}

impl ReceivedMessage {
    /// Returns the value of the first header named `name` (case-insensitive), unfolded
    /// and trimmed, or `None` if the header section has no such header.
    pub fn header(&self, name: &str) -> Option<String> {
        let (head, _) = split_message(&self.data);
        let head = String::from_utf8_lossy(head);
        let mut found: Option<String> = None;
        for line in head.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.starts_with([' ', '\t']) {
                // A continuation line belongs to the header being collected, if it is
                // the one we want; unfolding removes only the CRLF and keeps the space.
                if let Some(value) = found.as_mut() {
                    value.push_str(line);
                }
                continue;
            }
            if found.is_some() {
                break;
            }
            if let Some((field, value)) = line.split_once(':') {
                if field.trim_end().eq_ignore_ascii_case(name) {
                    found = Some(value.to_owned());
                }
            }
        }
        found.map(|v| v.trim().to_owned())
    }

    /// Returns the body: everything after the first blank line (empty if there is none).
    pub fn body(&self) -> Vec<u8> {
        split_message(&self.data).1.to_vec()
    }
}

/// Splits message content into the header section and the body at the first blank line.
fn split_message(data: &[u8]) -> (&[u8], &[u8]) {
    if let Some(rest) = data.strip_prefix(b"\r\n") {
        return (&[], rest);
    }
    match data.windows(4).position(|w| w == b"\r\n\r\n") {
        // The header section keeps the CRLF ending its last line.
        Some(at) => (&data[..at + 2], &data[at + 4..]),
        None => (data, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: &str) -> ReceivedMessage {
        ReceivedMessage {
            mail_from: String::new(),
            rcpt_to: Vec::new(),
            data: data.as_bytes().to_vec(),
            raw_data: data.as_bytes().to_vec(),
            tls: false,
            authenticated_as: None,
            smtputf8: false,
            mail_parameters: Vec::new(),
        }
    }

    #[test]
    fn headers_are_unfolded_and_case_insensitive() {
        let m = message(
            "Subject: hello\r\n  world\r\nX-Test: a\r\nx-test: b\r\n\r\nbody\r\nSubject: no\r\n",
        );
        assert_eq!(m.header("subject").as_deref(), Some("hello  world"));
        assert_eq!(m.header("X-TEST").as_deref(), Some("a"));
        assert_eq!(m.header("Missing"), None);
        assert_eq!(m.body(), b"body\r\nSubject: no\r\n");
    }

    #[test]
    fn message_without_blank_line_has_empty_body() {
        let m = message("Subject: only\r\n");
        assert_eq!(m.header("subject").as_deref(), Some("only"));
        assert!(m.body().is_empty());
        let m = message("\r\nbody only\r\n");
        assert_eq!(m.header("subject"), None);
        assert_eq!(m.body(), b"body only\r\n");
    }
}
