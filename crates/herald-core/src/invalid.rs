//! Validation failures: the rule a value broke, and the field it was given in.

use std::fmt;

/// The rule a value broke, without saying which field held it.
///
/// Constructors return this; the edge that knows the field name turns it into
/// a [`FieldError`] with [`Invalid::at`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid(pub String);

impl Invalid {
    /// A broken rule, phrased so that it reads after the field name ("must not be empty").
    pub fn new(rule: impl Into<String>) -> Self {
        Invalid(rule.into())
    }

    /// Names the field that held the invalid value.
    pub fn at(self, field: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            rule: self.0,
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// A validation failure of one named field.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// The field as the client named it, e.g. `to[1]` or `headers.X-Tag`.
    pub field: String,
    /// The rule it broke, e.g. `must not contain CR, LF or NUL`.
    pub rule: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.rule)
    }
}

/// Refuses CR, LF and NUL, the characters that could end a header or an SMTP command early.
pub(crate) fn refuse_control_breaks(s: &str) -> Result<(), Invalid> {
    if s.contains(['\r', '\n', '\0']) {
        return Err(Invalid::new("must not contain CR, LF or NUL"));
    }
    Ok(())
}

/// Refuses control characters (C0, DEL and C1) except TAB: CR, LF and NUL
/// could end a header line or an SMTP command early, and the others (VT, FF,
/// ESC, …) reach the reader's screen or terminal.
pub(crate) fn refuse_controls(s: &str) -> Result<(), Invalid> {
    if s.chars().any(|c| c.is_control() && c != '\t') {
        return Err(Invalid::new(
            "must not contain control characters (CR, LF, NUL, ESC and the like; TAB is allowed)",
        ));
    }
    Ok(())
}

/// Refuses an RFC 2047 encoded word (`=?charset?B|Q?text?=`) in header text.
///
/// Herald encodes header text itself, so a client never needs to send one;
/// one that is sent would be decoded by the reader's program into whatever
/// it holds, CR, LF and ESC included, past every check made here. Refusing
/// them all, rather than decoding and checking, cannot be fooled by a charset
/// or a decoder that reads the word differently from the reader's.
pub(crate) fn refuse_encoded_words(s: &str) -> Result<(), Invalid> {
    let mut rest = s;
    while let Some(at) = rest.find("=?") {
        rest = &rest[at + 2..];
        if is_encoded_word_tail(rest) {
            return Err(Invalid::new(
                "must not contain an encoded word (=?charset?B?…?= or =?charset?Q?…?=); \
                 send the text itself, Herald encodes it",
            ));
        }
    }
    Ok(())
}

/// Whether `s` (what follows a `=?`) continues as an encoded word: a charset,
/// `B` or `Q`, the encoded text, and `?=`.
fn is_encoded_word_tail(s: &str) -> bool {
    let mut parts = s.splitn(4, '?');
    let (Some(charset), Some(encoding), Some(text), Some(end)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let printable = |part: &str| part.bytes().all(|b| b.is_ascii_graphic());
    !charset.is_empty()
        && printable(charset)
        && (encoding.eq_ignore_ascii_case("b") || encoding.eq_ignore_ascii_case("q"))
        && printable(text)
        && end.starts_with('=')
}
