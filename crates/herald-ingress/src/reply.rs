//! SMTP replies with their enhanced status codes, as the session sends them.

use crate::Refusal;

/// One reply: a code, an enhanced code (RFC 2034; none for 220, 334 and 354)
/// and one or more lines of text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    pub code: u16,
    pub enhanced: Option<String>,
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced code.
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced.to_owned()),
            lines: vec![text.into()],
        }
    }

    /// A one-line reply without an enhanced code (greeting, 334, 354).
    /// The EHLO reply has none either (RFC 2034 gives codes to replies, not
    /// to the keyword lines).
    pub fn bare(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    /// Appends the reply to `out` in wire form: `code-` on every line but the last.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let separator = if i == last { ' ' } else { '-' };
            let text = one_line(line);
            let line = match &self.enhanced {
                Some(enhanced) => format!("{}{separator}{enhanced} {text}\r\n", self.code),
                None => format!("{}{separator}{text}\r\n", self.code),
            };
            out.extend_from_slice(line.as_bytes());
        }
    }
}

impl From<Refusal> for Reply {
    fn from(refusal: Refusal) -> Reply {
        // A backend that chose a success code would make a refusal look like
        // an acceptance; it is answered as a temporary failure instead.
        if !(400..600).contains(&refusal.code) {
            return Reply::new(451, "4.3.0", refusal.text);
        }
        Reply::new(refusal.code, &refusal.enhanced, refusal.text)
    }
}

/// A text safe on one reply line: CR, LF and other controls become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_codes() {
        let mut out = Vec::new();
        Reply::new(250, "2.1.0", "Ok").write_to(&mut out);
        Reply::bare(354, "End data").write_to(&mut out);
        Reply {
            code: 250,
            enhanced: None,
            lines: vec!["host".into(), "PIPELINING".into(), "SIZE 10".into()],
        }
        .write_to(&mut out);
        Reply::new(451, "4.3.0", "a\r\nb").write_to(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "250 2.1.0 Ok\r\n354 End data\r\n250-host\r\n250-PIPELINING\r\n250 SIZE 10\r\n451 4.3.0 a  b\r\n"
        );
    }

    #[test]
    fn a_refusal_with_a_success_code_is_no_success() {
        let reply = Reply::from(Refusal::new(250, "2.0.0", "fine"));
        assert_eq!(reply.code, 451);
    }
}
