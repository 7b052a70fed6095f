//! `EndpointUrl`: the URL of an HTTP endpoint a tenant makes Herald call (an
//! OAuth2 token endpoint, later a webhook), parsed with a real URL parser.

use std::fmt;

use url::{Host, Url};

use crate::Invalid;

/// An `https://` (or `http://`) URL with a host, and without user name,
/// password or fragment.
///
/// The URL is parsed as a browser would (WHATWG), so the host is the one a
/// client connects to: in `http://localhost:pw@169.254.169.254/` it is
/// `169.254.169.254`, and that form is refused outright. IPv4 hosts written
/// in decimal, octal or hex (`2130706433`, `0177.0.0.1`, `0x7f.1`) become
/// `127.0.0.1`. Whether plain `http` may be used, and to which addresses, is
/// the egress policy's decision at connect time, not this type's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointUrl(Url);

impl EndpointUrl {
    /// Parses and checks a URL.
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        // The parser silently drops tabs and line breaks and trims spaces;
        // refuse them instead, so what is stored is what was meant.
        if input.is_empty()
            || input.len() > 2048
            || input.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Invalid::new(
                "must be a URL of at most 2048 characters without spaces or control characters",
            ));
        }
        let url = Url::parse(input)
            .map_err(|e| Invalid::new(format!("must be an https:// URL ({e})")))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(Invalid::new("must be an https:// URL"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Invalid::new(
                "must not contain a user name or password (user:password@)",
            ));
        }
        if url.fragment().is_some() {
            return Err(Invalid::new("must not contain a fragment (#…)"));
        }
        if url.host().is_none() {
            return Err(Invalid::new("must name a host"));
        }
        Ok(EndpointUrl(url))
    }

    /// True for `https`; false for plain `http`.
    pub fn is_https(&self) -> bool {
        self.0.scheme() == "https"
    }

    /// The host connected to: a name, or an IP address.
    pub fn host(&self) -> Host<&str> {
        self.0.host().expect("an endpoint URL has a host")
    }

    /// The parsed URL.
    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// The URL as parsed (normalised: `HTTPS://Login.Example` is `https://login.example/`).
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn accepts_https_and_http_with_a_host() {
        let url =
            EndpointUrl::parse("https://login.microsoftonline.com/t/oauth2/v2.0/token").unwrap();
        assert!(url.is_https());
        assert_eq!(url.host(), Host::Domain("login.microsoftonline.com"));
        let url = EndpointUrl::parse("http://127.0.0.1:8080/token?x=1").unwrap();
        assert!(!url.is_https());
        assert_eq!(url.host(), Host::<&str>::Ipv4(Ipv4Addr::LOCALHOST));
        assert!(EndpointUrl::parse("http://[::1]:8080/token").is_ok());
    }

    #[test]
    fn refuses_userinfo_fragments_and_other_schemes() {
        for (bad, rule) in [
            (
                "http://localhost:pw@169.254.169.254/",
                "user name or password",
            ),
            ("https://user@login.example/token", "user name or password"),
            ("https://:pw@login.example/token", "user name or password"),
            ("https://login.example/token#frag", "fragment"),
            ("ftp://login.example/token", "https://"),
            ("file:///etc/passwd", "https://"),
            ("login.example/token", "https://"),
            ("https://", "https://"),
            ("https://login.example/to ken", "without spaces"),
            ("https://login.exa\nmple/token", "without spaces"),
            ("https://login.exa\tmple/token", "without spaces"),
            (" https://login.example/token", "without spaces"),
            ("", "at most 2048"),
        ] {
            let error = EndpointUrl::parse(bad).unwrap_err().to_string();
            assert!(error.contains(rule), "{bad:?}: {error}");
        }
    }

    #[test]
    fn numeric_ipv4_spellings_are_the_address_they_mean() {
        for spelling in ["2130706433", "0177.0.0.1", "0x7f.1", "0x7f000001", "127.1"] {
            let url = EndpointUrl::parse(&format!("http://{spelling}:9/token")).unwrap();
            assert_eq!(
                url.host(),
                Host::<&str>::Ipv4(Ipv4Addr::LOCALHOST),
                "{spelling}"
            );
        }
        let url = EndpointUrl::parse("https://[::ffff:a9fe:a9fe]/").unwrap();
        assert_eq!(
            url.host(),
            Host::<&str>::Ipv6("::ffff:169.254.169.254".parse().unwrap())
        );
    }
}
