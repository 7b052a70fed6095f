//! Header names, header values, subjects and display names that are safe to write into a message.

use std::fmt;

use crate::Invalid;
use crate::invalid::refuse_control_breaks;

/// The longest line RFC 5322 allows, without its CRLF.
pub const MAX_LINE: usize = 998;

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, max = $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Accepts text with no CR, LF or NUL, within the length limit.
            pub fn parse(input: &str) -> Result<Self, Invalid> {
                refuse_control_breaks(input)?;
                if input.len() > $max {
                    return Err(Invalid::new(format!("must be at most {} octets", $max)));
                }
                Ok($name(input.to_owned()))
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
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
