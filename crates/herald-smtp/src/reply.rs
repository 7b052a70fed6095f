//! SMTP replies: the three-digit code, the enhanced status code and the server's text.

use std::fmt;

/// One complete (possibly multi-line) SMTP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The RFC 3463 enhanced status code of the first line, such as `5.1.1`, when the server sent one.
    pub enhanced_code: Option<String>,
    /// The reply exactly as the server wrote it, lines joined by `\n`, without CRLF.
    pub text: String,
}

impl Reply {
    /// Builds a reply from its raw lines (without CRLF); `None` when they are not a well-formed reply.
    pub(crate) fn from_lines(lines: &[String]) -> Option<Reply> {
        let first = lines.first()?;
        let code: u16 = first.get(..3)?.parse().ok()?;
        if !(200..600).contains(&code) {
            return None;
        }
        let enhanced_code = first
            .get(4..)
            .and_then(|rest| rest.split(' ').next())
            .filter(|word| is_enhanced_code(word, code))
            .map(str::to_owned);
        Some(Reply {
            code,
            enhanced_code,
            text: lines.join("\n"),
        })
    }

    /// 2xx: the command succeeded.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx: the server waits for more (354 after DATA, 334 during AUTH).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4xx: a temporary failure, worth retrying later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: a permanent failure.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

/// True when `word` looks like `class.subject.detail` and its class matches the reply code's.
fn is_enhanced_code(word: &str, code: u16) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
        && parts[0].parse::<u16>().ok() == Some(code / 100)
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text.replace('\n', " / "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(lines: &[&str]) -> Option<Reply> {
        Reply::from_lines(&lines.iter().map(|l| l.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_code_enhanced_code_and_text() {
        let r = reply(&["550 5.1.1 <x@y>: user unknown"]).unwrap();
        assert_eq!((r.code, r.enhanced_code.as_deref()), (550, Some("5.1.1")));
        assert!(r.is_permanent());
        let r = reply(&["250-mx.example", "250 PIPELINING"]).unwrap();
        assert_eq!(r.enhanced_code, None);
        assert_eq!(r.text, "250-mx.example\n250 PIPELINING");
        let r = reply(&["451 5.0.0 mismatched class"]).unwrap();
        assert_eq!(r.enhanced_code, None);
        assert!(reply(&["hello"]).is_none());
        assert!(reply(&["999 nope"]).is_none());
    }
}
