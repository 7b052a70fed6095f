//! Validated configuration values: tenant slugs, SMTP hosts and ports, and the closed sets of modes.

use std::fmt;
use std::net::IpAddr;

use crate::Invalid;
use crate::address::is_domain;

/// A tenant's URL name: 2 to 63 lowercase letters, digits and hyphens, starting with a letter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct TenantSlug(String);

impl TenantSlug {
    /// Parses a slug, naming the rule it breaks.
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let ok_chars = input
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let starts = input.chars().next().is_some_and(|c| c.is_ascii_lowercase());
        if !(2..=63).contains(&input.len()) || !ok_chars || !starts || input.ends_with('-') {
            return Err(Invalid::new(
                "must be 2 to 63 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen",
            ));
        }
        Ok(TenantSlug(input.to_owned()))
    }
}

text_newtype_impls!(TenantSlug);

/// An SMTP server's address: a DNS name or an IP address (IPv6 without brackets).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct SmtpHost(String);

impl SmtpHost {
    /// Parses a host name or IP address.
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let s = input.trim_start_matches('[').trim_end_matches(']');
        if s.parse::<IpAddr>().is_ok() {
            return Ok(SmtpHost(s.to_ascii_lowercase()));
        }
        if is_domain(s) && ends_in_a_number(s) {
            // The system resolver reads these as IPv4 addresses in decimal,
            // octal or hex (2130706433, 0177.0.0.1, 0x7f.1 are 127.0.0.1); no
            // top-level domain is numeric, so none of them is a host name.
            return Err(Invalid::new(
                "must be a host name or an IP address written as a.b.c.d (a numeric last label such as 2130706433, 0177.0.0.1 or 0x7f.1 is not accepted)",
            ));
        }
        if is_domain(s) {
            return Ok(SmtpHost(s.to_ascii_lowercase()));
        }
        Err(Invalid::new(
            "must be a host name (letters, digits, hyphens and dots) or an IP address",
        ))
    }

    /// A host read back from the store under the rules it was stored with:
    /// a numeric last label, refused by [`SmtpHost::parse`] since, still loads,
    /// so the entry can be listed, fixed or deleted. The egress guard judges
    /// what such a name resolves to where it is connected to.
    pub fn from_stored(input: &str) -> Result<Self, Invalid> {
        let s = input.trim_start_matches('[').trim_end_matches(']');
        if s.parse::<IpAddr>().is_ok() || is_domain(s) {
            return Ok(SmtpHost(s.to_ascii_lowercase()));
        }
        Self::parse(input)
    }

    /// The address when the host is an IP literal rather than a name.
    pub fn ip(&self) -> Option<IpAddr> {
        self.0.parse().ok()
    }

    /// The host as EHLO names the client (RFC 5321, 4.1.3): a name as it is,
    /// an address as an address literal, `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
    pub fn ehlo_form(&self) -> String {
        match self.ip() {
            Some(IpAddr::V4(v4)) => format!("[{v4}]"),
            Some(IpAddr::V6(v6)) => format!("[IPv6:{v6}]"),
            None => self.0.clone(),
        }
    }
}

/// True when the last label is a number (decimal, or hex after `0x`), the
/// WHATWG URL standard's test for a host that is an IPv4 address.
fn ends_in_a_number(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    let last = s.rsplit('.').next().unwrap_or(s);
    match last.strip_prefix("0x").or_else(|| last.strip_prefix("0X")) {
        Some(hex) => hex.chars().all(|c| c.is_ascii_hexdigit()),
        None => !last.is_empty() && last.chars().all(|c| c.is_ascii_digit()),
    }
}

text_newtype_impls!(SmtpHost);

/// A TCP port, 1 to 65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Port(u16);

impl Port {
    /// Accepts 1 to 65535.
    pub fn new(port: i64) -> Result<Self, Invalid> {
        match u16::try_from(port) {
            Ok(p) if p != 0 => Ok(Port(p)),
            _ => Err(Invalid::new("must be a port from 1 to 65535")),
        }
    }

    /// The port number.
    pub fn get(self) -> u16 {
        self.0
    }
}

/// Declares a closed set of words, with parsing that lists the accepted ones.
macro_rules! word_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $word)] $variant),+
        }

        impl $name {
            /// Every accepted word, in order.
            pub const WORDS: &'static [&'static str] = &[$($word),+];

            /// The word as written in the API and the database.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }

            /// Parses one of [`Self::WORDS`].
            pub fn parse(input: &str) -> Result<Self, Invalid> {
                match input {
                    $($word => Ok($name::$variant),)+
                    _ => Err(Invalid::new(format!("must be one of: {}", Self::WORDS.join(", ")))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

word_enum!(
    /// How the connection to an SMTP server is protected.
    Security {
        /// Plaintext for the whole session.
        None = "none",
        /// Plaintext greeting, then STARTTLS, which must succeed: never a fallback to plaintext.
        StartTls = "starttls",
        /// TLS from the first byte (implicit TLS, on any port).
        Tls = "tls",
    }
);

word_enum!(
    /// Whose address a provider's messages carry in From.
    SenderPolicy {
        /// Always the provider's From address.
        Fixed = "fixed",
        /// The person a message is sent on behalf of, with the provider's address in Sender.
        OnBehalf = "on_behalf",
    }
);

word_enum!(
    /// What an API token may do.
    Role {
        /// Runs the installation: tenants, entitlements, every tenant's objects.
        Operator = "operator",
        /// Configures one tenant: servers, accounts, providers, properties, tokens.
        TenantAdmin = "tenant_admin",
        /// Submits and reads one tenant's messages.
        Sender = "sender",
    }
);

word_enum!(
    /// What a node does: serve the API and console, deliver mail, or both.
    NodeRole {
        /// Serves the REST API and the console.
        Api = "api",
        /// Claims and delivers mail.
        Worker = "worker",
    }
);

word_enum!(
    /// What a person of a tenant may do.
    PersonRole {
        /// Configures the tenant; their personal tokens have the `tenant_admin` role.
        TenantAdmin = "tenant_admin",
        /// Sends and reads messages; their personal tokens have the `sender` role.
        Member = "member",
    }
);

word_enum!(
    /// How an SMTP account authenticates.
    Mechanism {
        /// AUTH PLAIN with a password.
        Plain = "plain",
        /// AUTH LOGIN with a password.
        Login = "login",
        /// AUTH XOAUTH2 with an OAuth2 access token.
        Xoauth2 = "xoauth2",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(TenantSlug::parse("acme").is_ok());
        let ehlo = |h: &str| SmtpHost::parse(h).unwrap().ehlo_form();
        assert_eq!(ehlo("herald.example.com"), "herald.example.com");
        assert_eq!(ehlo("192.0.2.10"), "[192.0.2.10]");
        assert_eq!(ehlo("[192.0.2.10]"), "[192.0.2.10]");
        assert_eq!(ehlo("2001:db8::1"), "[IPv6:2001:db8::1]");
        assert!(TenantSlug::parse("acme-2").is_ok());
        for bad in ["", "a", "Acme", "2acme", "acme-", "ac me", "acme/x"] {
            assert!(TenantSlug::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn hosts_and_ports() {
        assert_eq!(
            SmtpHost::parse("Mail.Acme.Example").unwrap().as_ref(),
            "mail.acme.example"
        );
        assert!(SmtpHost::parse("10.0.0.5").unwrap().ip().is_some());
        assert!(SmtpHost::parse("[::1]").unwrap().ip().is_some());
        assert!(SmtpHost::parse("mail.acme.example\r\n").is_err());
        assert!(SmtpHost::parse("http://x").is_err());
        // IPv4 addresses spelled so that a resolver reads them as 127.0.0.1.
        for numeric in [
            "2130706433",
            "0177.0.0.1",
            "0x7f.1",
            "0x7f000001",
            "127.1",
            "10.0.0.1.",
            "mail.0x10",
        ] {
            let error = SmtpHost::parse(numeric).unwrap_err().to_string();
            assert!(error.contains("numeric last label"), "{numeric}: {error}");
            // Stored before the rule, such a host still loads.
            assert_eq!(SmtpHost::from_stored(numeric).unwrap().as_ref(), numeric);
        }
        assert!(SmtpHost::from_stored("mail.acme.example\r\n").is_err());
        assert!(SmtpHost::parse("smtp1.acme.example").is_ok());
        assert!(SmtpHost::parse("0xdead.acme.example").is_ok());
        assert!(SmtpHost::parse("127.0.0.1").is_ok());
        assert!(Port::new(0).is_err());
        assert!(Port::new(65536).is_err());
        assert_eq!(Port::new(587).unwrap().get(), 587);
    }

    #[test]
    fn words_list_the_choices() {
        assert_eq!(Security::parse("starttls").unwrap(), Security::StartTls);
        assert_eq!(
            Security::parse("ssl").unwrap_err().to_string(),
            "must be one of: none, starttls, tls"
        );
    }
}
