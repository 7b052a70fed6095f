//! E-mail addresses as they may appear in an SMTP envelope and in a header.

use std::fmt;

use crate::Invalid;
use crate::invalid::refuse_control_breaks;

/// An RFC 5321 mailbox `local@domain`, ASCII only, safe to put between `<` and `>`
/// in an SMTP command and in a header.
///
/// Quoted local parts, comments and source routes are refused: notification
/// mail has no use for them and each is a way to smuggle syntax.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

/// Characters RFC 5322 allows in an unquoted local part besides letters and digits.
const ATEXT_SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";

impl EmailAddress {
    /// Parses an address, naming the rule it breaks when it is not one.
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        refuse_control_breaks(input)?;
        let s = input.trim();
        if s.is_empty() {
            return Err(Invalid::new("must not be empty"));
        }
        if !s.is_ascii() {
            return Err(Invalid::new(
                "must be ASCII (internationalised addresses are not supported)",
            ));
        }
        if s.len() > 254 {
            return Err(Invalid::new("must be at most 254 characters"));
        }
        let (local, domain) = s
            .rsplit_once('@')
            .ok_or_else(|| Invalid::new("must be an address of the form name@domain"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(Invalid::new("must have a local part of 1 to 64 characters"));
        }
        let atom_ok = |c: char| c.is_ascii_alphanumeric() || ATEXT_SPECIALS.contains(c);
        if local
            .split('.')
            .any(|atom| atom.is_empty() || !atom.chars().all(atom_ok))
        {
            return Err(Invalid::new(
                "must have a local part of letters, digits, dots (not leading, trailing or doubled) and !#$%&'*+/=?^_`{|}~-",
            ));
        }
        if !is_domain(domain) {
            return Err(Invalid::new(
                "must have a domain of dot-separated labels of letters, digits and hyphens",
            ));
        }
        Ok(EmailAddress(s.to_owned()))
    }

    /// The domain part, after the `@`.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }
}

/// True for a DNS name of letter-digit-hyphen labels (RFC 1035), at most 253 octets.
pub(crate) fn is_domain(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses() {
        for ok in [
            "a@b.example",
            "first.last+tag@mail.acme.example",
            "x_y@localhost",
        ] {
            assert_eq!(EmailAddress::parse(ok).unwrap().as_ref(), ok);
        }
    }

    #[test]
    fn refuses_smuggling_and_malformed_addresses() {
        for bad in [
            "",
            "no-at-sign",
            "a@b>\r\nRCPT TO:<x@y>",
            "a@b\n",
            "a\0@b",
            "<a@b>",
            "a b@c",
            ".a@b",
            "a..b@c",
            "a@-b.example",
            "a@b_c.example",
            "\"quoted\"@b",
            "ü@b.example",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn names_the_rule() {
        let err = EmailAddress::parse("a@b\r\nX: y").unwrap_err();
        assert_eq!(
            err.at("to[0]").to_string(),
            "to[0] must not contain CR, LF or NUL"
        );
    }
}
