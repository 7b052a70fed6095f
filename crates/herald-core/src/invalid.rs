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
