//! Who is asking: the client's address (through proxies the operator trusts),
//! and whether a browser says the request came from the console's own pages.

use std::net::SocketAddr;

use axum::http::{HeaderMap, header};
use ipnet::IpNet;

pub use herald_api::client::client_ip;

/// True when the connection comes from a proxy the operator trusts.
pub fn from_trusted_proxy(peer: Option<SocketAddr>, trusted: &[IpNet]) -> bool {
    peer.is_some_and(|p| {
        let ip = p.ip().to_canonical();
        trusted.iter().any(|net| net.contains(&ip))
    })
}

/// Why a browser's request is refused as coming from another site.
pub type Refusal = &'static str;

/// Checks that a browser sent this request from the console's own pages.
///
/// `Sec-Fetch-Site`, which every current browser sends, decides when present:
/// `same-origin` and `none` (typed or bookmarked by the user) pass, `same-site`
/// and `cross-site` do not. Without it, `Origin` (older browsers send it on
/// every POST) must name the host the request was sent to: the `Host` header,
/// or `X-Forwarded-Host` (and `X-Forwarded-Proto`) from a trusted proxy.
/// A request with neither header is not from a browser, and only its CSRF
/// token is checked.
pub fn same_origin(headers: &HeaderMap, trusted_proxy: bool) -> Result<(), Refusal> {
    let text = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().trim().to_ascii_lowercase())
    };
    if let Some(site) = text("sec-fetch-site") {
        return match site.as_str() {
            "same-origin" | "none" => Ok(()),
            _ => Err("the browser says this form was sent from another site"),
        };
    }
    let Some(origin) = text(header::ORIGIN.as_str()) else {
        return Ok(());
    };
    let forwarded = |name: &str| {
        trusted_proxy
            .then(|| text(name))
            .flatten()
            .and_then(|v| v.split(',').next().map(|first| first.trim().to_owned()))
    };
    let Some(host) = forwarded("x-forwarded-host").or_else(|| text(header::HOST.as_str())) else {
        return Err("the request names no host to compare its origin with");
    };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return Err("the browser did not say which site sent this form");
    };
    if let Some(proto) = forwarded("x-forwarded-proto") {
        if proto != scheme {
            return Err("this form was sent from another origin");
        }
    }
    let default_port = match scheme {
        "http" => "80",
        "https" => "443",
        _ => return Err("this form was sent from another origin"),
    };
    let with_port = |authority: &str| {
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.contains(']'));
        if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:{default_port}")
        }
    };
    if with_port(authority) == with_port(&host) {
        Ok(())
    } else {
        Err("this form was sent from another origin")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::net::IpAddr;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 40_000))
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let forged = headers(&[("x-forwarded-for", "203.0.113.9")]);
        // Straight from a client: its own address, whatever it claims.
        assert_eq!(
            client_ip(peer("198.51.100.7"), &forged, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // Through a trusted proxy: the rightmost address the proxies did not add.
        let chain = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.2")]);
        assert_eq!(
            client_ip(peer("10.0.0.1"), &chain, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // Without the header, the proxy itself; IPv4-mapped addresses are IPv4.
        assert_eq!(
            client_ip(peer("::ffff:10.0.0.1"), &HeaderMap::new(), &trusted),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        let garbage = headers(&[("x-forwarded-for", "203.0.113.9, not-an-address")]);
        assert_eq!(
            client_ip(peer("10.0.0.1"), &garbage, &trusted),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn browsers_must_send_from_the_same_origin() {
        for site in ["same-origin", "none"] {
            let h = headers(&[("sec-fetch-site", site), ("origin", "https://evil.example")]);
            assert_eq!(same_origin(&h, false), Ok(()), "{site}");
        }
        for site in ["same-site", "cross-site", "bogus"] {
            let h = headers(&[("sec-fetch-site", site), ("host", "herald.example")]);
            assert!(same_origin(&h, false).is_err(), "{site}");
        }
        let origin = |origin: &'static str, host: &'static str| {
            same_origin(&headers(&[("origin", origin), ("host", host)]), false)
        };
        assert_eq!(origin("http://herald.example", "herald.example"), Ok(()));
        assert_eq!(
            origin("https://Herald.example", "herald.example:443"),
            Ok(())
        );
        assert_eq!(origin("http://127.0.0.1:8025", "127.0.0.1:8025"), Ok(()));
        assert!(origin("http://evil.example", "herald.example").is_err());
        assert!(origin("http://herald.example:8080", "herald.example").is_err());
        assert!(origin("null", "herald.example").is_err());
        // No browser header at all: left to the CSRF token.
        assert_eq!(same_origin(&HeaderMap::new(), false), Ok(()));
        // Behind a trusted proxy its forwarded host and protocol count.
        let proxied = headers(&[
            ("origin", "https://herald.example"),
            ("host", "127.0.0.1:8025"),
            ("x-forwarded-host", "herald.example"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(same_origin(&proxied, true), Ok(()));
        assert!(same_origin(&proxied, false).is_err());
    }
}
