//! E-mail addresses as they may appear in an SMTP envelope and in a header.

use std::fmt;

use crate::invalid::refuse_control_breaks;
use crate::{DisplayName, Invalid};

/// An address `local@domain` (RFC 5322 addr-spec), safe to put between `<`
/// and `>` in an SMTP command and in a header.
///
/// The local part is a dot-atom or a quoted string (`"john doe"@example.com`);
/// either may hold UTF-8 (RFC 6532), and the domain may be an internationalised
/// name in U-labels. Such an address needs a server that offers SMTPUTF8
/// (RFC 6531): see [`EmailAddress::is_ascii`]. Comments, source routes and
/// domain literals are refused, and CR, LF and NUL never get in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

/// Characters RFC 5322 allows in an unquoted local part besides letters and digits.
const ATEXT_SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";

impl EmailAddress {
    /// The same mailbox as `other`, as mail systems compare addresses in
    /// practice: ASCII case aside (a local part is case-sensitive only in
    /// theory, RFC 5321 §2.4).
    pub fn is_same_as(&self, other: &EmailAddress) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }

    /// Parses an address, naming the rule it breaks when it is not one.
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        refuse_control_breaks(input)?;
        let s = input.trim();
        if s.is_empty() {
            return Err(Invalid::new("must not be empty"));
        }
        if s.len() > 254 {
            return Err(Invalid::new("must be at most 254 octets"));
        }
        let (local, domain) = s
            .rsplit_once('@')
            .ok_or_else(|| Invalid::new("must be an address of the form name@domain"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(Invalid::new("must have a local part of 1 to 64 octets"));
        }
        if local.starts_with('"') {
            quoted_local_part(local)?;
        } else if local
            .split('.')
            .any(|atom| atom.is_empty() || !atom.chars().all(is_atext))
        {
            return Err(Invalid::new(
                "must have a local part of letters, digits, dots (not leading, trailing or doubled) and !#$%&'*+/=?^_`{|}~-, or a quoted one",
            ));
        }
        if !is_domain(domain) && !is_international_domain(domain) {
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

    /// False for an internationalised address, which only a server offering
    /// SMTPUTF8 may be given.
    pub fn is_ascii(&self) -> bool {
        self.0.is_ascii()
    }
}

/// A letter or digit (any script: RFC 6532 admits UTF-8), or an atext special.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || ATEXT_SPECIALS.contains(c)
        || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
}

/// Checks a quoted local part: `"` … `"`, printable characters and spaces
/// inside, `"` and `\` only escaped by a backslash.
fn quoted_local_part(local: &str) -> Result<(), Invalid> {
    let rule = || {
        Invalid::new(
            "must have a quoted local part of printable characters between double quotes, with \" and \\\\ escaped by a backslash",
        )
    };
    let inner = local
        .strip_prefix('"')
        .and_then(|l| l.strip_suffix('"'))
        .filter(|inner| !inner.is_empty())
        .ok_or_else(rule)?;
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        let printable = |c: char| c == ' ' || c == '\t' || (!c.is_control() && c != '\u{7f}');
        match c {
            '\\' => match chars.next() {
                Some(escaped) if printable(escaped) => {}
                _ => return Err(rule()),
            },
            '"' => return Err(rule()),
            c if printable(c) => {}
            _ => return Err(rule()),
        }
    }
    Ok(())
}

/// True for a DNS name of letter-digit-hyphen labels (RFC 1035), at most 253 octets.
pub(crate) fn is_domain(s: &str) -> bool {
    labels_made_of(s, |c| c.is_ascii_alphanumeric())
}

/// True for an internationalised domain name written in U-labels: labels of
/// letters and digits of any script and hyphens, at least one non-ASCII.
fn is_international_domain(s: &str) -> bool {
    !s.is_ascii() && labels_made_of(s, char::is_alphanumeric)
}

/// True for dot-separated labels of 1 to 63 octets, each of `letter_or_digit`
/// characters and inner hyphens, at most 253 octets in all (a final dot aside).
fn labels_made_of(s: &str, letter_or_digit: fn(char) -> bool) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| letter_or_digit(c) || c == '-')
        })
}

/// A mailbox as a submitter writes it in `to` or `cc`: an address with an
/// optional display name, `Ada Lovelace <ada@example.com>`,
/// `"Lovelace, Ada" <ada@example.com>`, `<ada@example.com>` or the bare address.
/// The envelope gets the address; the header gets both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<DisplayName>,
    pub address: EmailAddress,
}

impl Mailbox {
    /// Parses a mailbox (RFC 5322 name-addr or addr-spec), naming the rule it breaks.
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        Self::parse_with(input, DisplayName::parse)
    }

    /// Reads back a mailbox stored earlier: its name is checked as
    /// [`DisplayName::from_stored`] checks it, so mail stored before the
    /// rules for names became stricter can still be read and sent.
    pub fn from_stored(input: &str) -> Result<Self, Invalid> {
        Self::parse_with(input, DisplayName::from_stored)
    }

    fn parse_with(
        input: &str,
        display_name: fn(&str) -> Result<DisplayName, Invalid>,
    ) -> Result<Self, Invalid> {
        refuse_control_breaks(input)?;
        let s = input.trim();
        let Some(angle) = s.strip_suffix('>') else {
            return Ok(Mailbox {
                name: None,
                address: EmailAddress::parse(s)?,
            });
        };
        let (phrase, address) = angle.rsplit_once('<').ok_or_else(|| {
            Invalid::new("must be an address, or a name followed by an address in <>")
        })?;
        let address = EmailAddress::parse(address)?;
        let phrase = phrase.trim();
        let name = if let Some(quoted) = phrase.strip_prefix('"') {
            let inner = quoted
                .strip_suffix('"')
                .ok_or_else(|| Invalid::new("must close the quoted name with \""))?;
            unescape(inner)?
        } else if phrase.contains(['"', '<', '>']) {
            return Err(Invalid::new(
                "must quote a name that holds \", < or > (\"Name\" <address>)",
            ));
        } else {
            phrase.to_owned()
        };
        let name = match name.trim() {
            "" => None,
            name => Some(display_name(name)?),
        };
        Ok(Mailbox { name, address })
    }
}

/// The text of a quoted string: `\x` stands for `x`; a bare `"` is refused.
fn unescape(inner: &str) -> Result<String, Invalid> {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(
                chars
                    .next()
                    .ok_or_else(|| Invalid::new("must not end the quoted name with \\"))?,
            ),
            '"' => return Err(Invalid::new("must escape \" inside a quoted name")),
            c => out.push(c),
        }
    }
    Ok(out)
}

impl From<EmailAddress> for Mailbox {
    fn from(address: EmailAddress) -> Self {
        Mailbox {
            name: None,
            address,
        }
    }
}

/// Serialised as its canonical form (see `Display`), as the API takes it.
impl serde::Serialize for Mailbox {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The canonical form, which [`Mailbox::parse`] reads back: the bare address,
/// or the name quoted (with `"` and `\` escaped) before the address in `<>`.
impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            None => write!(f, "{}", self.address),
            Some(name) => {
                let escaped = name.as_ref().replace('\\', "\\\\").replace('"', "\\\"");
                write!(f, "\"{escaped}\" <{}>", self.address)
            }
        }
    }
}

text_newtype_impls!(EmailAddress);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_mailbox_is_told_apart_from_another_case_aside() {
        let a = EmailAddress::parse("Ada@X.example").unwrap();
        assert!(a.is_same_as(&EmailAddress::parse("ada@x.EXAMPLE").unwrap()));
        assert!(!a.is_same_as(&EmailAddress::parse("adam@x.example").unwrap()));
        // Only ASCII letters are folded: other scripts compare as written.
        let e = EmailAddress::parse("émile@x.example").unwrap();
        assert!(!e.is_same_as(&EmailAddress::parse("Émile@x.example").unwrap()));
    }

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
            "\"\"@b.example",
            "\"unclosed@b.example",
            "\"a\"b\"@b.example",
            "a@[192.0.2.1]",
            "a(comment)@b.example",
            "ü @b.example",
            "a@bü_.example",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn accepts_quoted_and_internationalised_addresses() {
        for ok in [
            "\"john doe\"@b.example",
            "\"a\\\"b@c\"@b.example",
            "用户@例子.广告",
            "ü@b.example",
            "a@münchen.example",
        ] {
            let parsed = EmailAddress::parse(ok).unwrap();
            assert_eq!(parsed.as_ref(), ok);
            assert_eq!(parsed.is_ascii(), ok.is_ascii());
        }
        assert_eq!(
            EmailAddress::parse("\"x@y\"@b.example").unwrap().domain(),
            "b.example"
        );
    }

    #[test]
    fn mailboxes_carry_a_name_and_print_back_as_they_parse() {
        let cases = [
            ("ada@b.example", None, "ada@b.example"),
            ("<ada@b.example>", None, "ada@b.example"),
            (
                "Ada Lovelace <ada@b.example>",
                Some("Ada Lovelace"),
                "\"Ada Lovelace\" <ada@b.example>",
            ),
            (
                "\"Lovelace, Ada\" <ada@b.example>",
                Some("Lovelace, Ada"),
                "\"Lovelace, Ada\" <ada@b.example>",
            ),
            (
                "\"Say \\\"hi\\\"\" <ada@b.example>",
                Some("Say \"hi\""),
                "\"Say \\\"hi\\\"\" <ada@b.example>",
            ),
            (
                "Zoë <zoe@b.example>",
                Some("Zoë"),
                "\"Zoë\" <zoe@b.example>",
            ),
        ];
        for (input, name, canonical) in cases {
            let mailbox = Mailbox::parse(input).unwrap();
            assert_eq!(mailbox.name.as_ref().map(|n| n.as_ref()), name, "{input}");
            assert_eq!(
                mailbox.address.as_ref(),
                canonical
                    .rsplit(['<', '>'])
                    .find(|p| p.contains('@'))
                    .unwrap()
            );
            assert_eq!(mailbox.to_string(), canonical);
            assert_eq!(Mailbox::parse(canonical).unwrap(), mailbox);
        }
        for bad in [
            "Ada <ada@b.example",
            "Ada <>",
            "\"Ada <ada@b.example>",
            "A\"da <ada@b.example>",
            "Ada\r\nBcc: x@y <ada@b.example>",
            "Ada <ada@b.example>\r\n",
        ] {
            assert!(Mailbox::parse(bad).is_err(), "{bad:?} was accepted");
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
