//! Header names, header values, subjects and display names that are safe to write into a message.

use crate::Invalid;
use crate::invalid::{refuse_control_breaks, refuse_controls, refuse_encoded_words};

/// The longest line RFC 5322 allows, without its CRLF.
pub const MAX_LINE: usize = 998;

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, max = $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Accepts text without control characters (TAB aside) and without
            /// RFC 2047 encoded words, within the length limit.
            pub fn parse(input: &str) -> Result<Self, Invalid> {
                refuse_controls(input)?;
                refuse_encoded_words(input)?;
                Self::from_stored(input)
            }

            /// Reads back a value stored earlier. It is checked only against
            /// the rules every stored value was accepted under (no CR, LF or
            /// NUL, the length limit), so that mail stored before a rule
            /// became stricter can still be read and sent; new input goes
            /// through [`Self::parse`].
            pub fn from_stored(input: &str) -> Result<Self, Invalid> {
                refuse_control_breaks(input)?;
                if input.len() > $max {
                    return Err(Invalid::new(format!("must be at most {} octets", $max)));
                }
                Ok($name(input.to_owned()))
            }
        }

        text_newtype_impls!($name);
    };
}

text_type!(
    /// A header field body: one line, encoded as needed when the message is written.
    HeaderValue, max = MAX_LINE
);
text_type!(
    /// A message subject.
    Subject, max = MAX_LINE
);
text_type!(
    /// The display name beside an address in From or Reply-To.
    DisplayName, max = 200
);

/// Header fields Herald writes itself; a submitter may not set them through `headers`.
const RESERVED_HEADERS: &[&str] = &[
    "bcc",
    "cc",
    "content-transfer-encoding",
    "content-type",
    "date",
    "from",
    "message-id",
    "mime-version",
    "received",
    "reply-to",
    "return-path",
    "sender",
    "subject",
    "to",
];

/// A custom header field name such as `X-Alert-Id`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct HeaderName(String);

impl HeaderName {
    /// Accepts printable ASCII without `:` (RFC 5322 ftext), except the fields Herald sets itself.
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        // 64 keeps "Name: " well inside the 76 columns where a header is folded,
        // so the value can never start a line of its own (where it would read
        // as a header field).
        if input.is_empty() || input.len() > 64 {
            return Err(Invalid::new("must be a header name of 1 to 64 characters"));
        }
        if !input.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
            return Err(Invalid::new(
                "must be printable ASCII without spaces or colons",
            ));
        }
        if RESERVED_HEADERS.contains(&input.to_ascii_lowercase().as_str()) {
            return Err(Invalid::new(
                "is set by Herald; use the message's own field instead",
            ));
        }
        Ok(HeaderName(input.to_owned()))
    }
}

impl AsRef<str> for HeaderName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_refuse_line_breaks() {
        assert!(HeaderValue::parse("fine").is_ok());
        for bad in ["a\r\nBcc: x@y", "a\nb", "a\rb", "a\0b"] {
            assert!(HeaderValue::parse(bad).is_err());
            assert!(Subject::parse(bad).is_err());
            assert!(DisplayName::parse(bad).is_err());
        }
        assert!(Subject::parse(&"x".repeat(MAX_LINE + 1)).is_err());
    }

    #[test]
    fn header_text_refuses_controls_and_encoded_words() {
        for fine in [
            "Disk full\ton /var",
            "Überwachung – 日本語 🕴",
            "a=?b",
            "x =? y ?= z",
            "=?utf-8?X?abc?=",
            "50% =?",
        ] {
            assert!(HeaderValue::parse(fine).is_ok(), "{fine:?} was refused");
            assert!(Subject::parse(fine).is_ok(), "{fine:?} was refused");
            assert!(DisplayName::parse(fine).is_ok(), "{fine:?} was refused");
        }
        for control in [
            "\u{b}",
            "\u{c}",
            "\u{1b}[2J",
            "\u{7f}",
            "\u{85}",
            "\u{9b}",
            "\u{1}",
        ] {
            let text = format!("alert {control} now");
            for refused in [
                HeaderValue::parse(&text).err(),
                Subject::parse(&text).err(),
                DisplayName::parse(&text).err(),
            ] {
                let rule = refused.unwrap_or_else(|| panic!("{text:?} was accepted")).0;
                assert!(rule.contains("control characters"), "{rule}");
            }
        }
        for word in [
            "=?utf-8?B?DQpCY2M6IHZpY3RpbUBldmlsLmV4YW1wbGU=?=",
            "Hello =?UTF-8?q?=0D=0ABcc:_x@y.example?= there",
            "=?iso-8859-1?Q??=",
            "==?utf-8?b?Gw==?=",
        ] {
            for refused in [
                HeaderValue::parse(word).err(),
                Subject::parse(word).err(),
                DisplayName::parse(word).err(),
            ] {
                let rule = refused.unwrap_or_else(|| panic!("{word:?} was accepted")).0;
                assert!(rule.contains("encoded word"), "{rule}");
            }
        }
        // What an earlier version stored is still read back.
        assert!(Subject::from_stored("=?utf-8?B?SGk=?= \u{1b}").is_ok());
        let stored = "\"Ops \u{b} =?utf-8?B?SGk=?=\" <ops@acme.example>";
        assert!(crate::Mailbox::parse(stored).is_err());
        assert!(crate::Mailbox::from_stored(stored).is_ok());
        assert!(Subject::from_stored("a\r\nb").is_err());
    }

    #[test]
    fn header_names_refuse_reserved_and_malformed() {
        assert!(HeaderName::parse("X-Alert-Id").is_ok());
        assert!(HeaderName::parse(&format!("X-{}", "A".repeat(62))).is_ok());
        for bad in [
            "",
            "Bcc",
            "FROM",
            "X Tag",
            "X:Tag",
            "Ünï",
            &format!("X-{}", "A".repeat(63)),
        ] {
            assert!(HeaderName::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
