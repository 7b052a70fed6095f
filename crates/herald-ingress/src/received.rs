//! The `Received:` header the listener puts in front of each message
//! (RFC 5321 §4.4, with the `with` words of RFC 3848).

use std::net::IpAddr;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

/// What the header says about the session.
pub(crate) struct Trace<'a> {
    /// The EHLO or HELO argument, as the client gave it.
    pub helo: &'a str,
    /// Whether the client said EHLO.
    pub esmtp: bool,
    pub ip: IpAddr,
    /// This server's name.
    pub by: &'a str,
    /// The TLS version and cipher suite, when under TLS.
    pub tls: Option<(&'a str, &'a str)>,
    pub authenticated: bool,
    /// This transaction's id, also in the logs.
    pub id: &'a str,
}

impl Trace<'_> {
    /// The header, CRLF-terminated, folded as Postfix folds it.
    pub fn header(&self, now: OffsetDateTime) -> String {
        let with = match (self.esmtp, self.tls.is_some(), self.authenticated) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let address = match self.ip {
            IpAddr::V4(v4) => format!("[{v4}]"),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => format!("[{v4}]"),
                None => format!("[IPv6:{v6}]"),
            },
        };
        let tls = match self.tls {
            Some((version, cipher)) => format!("\r\n\t(using {version} with cipher {cipher})"),
            None => String::new(),
        };
        let date = now
            .format(&Rfc2822)
            .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".into());
        format!(
            "Received: from {} ({address})\r\n\tby {} (Herald) with {with} id {}{tls};\r\n\t{date}\r\n",
            token(self.helo),
            token(self.by),
            self.id,
        )
    }
}

/// The client's words made safe for a header: printable ASCII other than
/// the characters that would end a comment or the clause, at most 255 long.
fn token(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .take(255)
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '(' | ')' | ';' | '\\' | '"') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "unknown".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header() {
        let trace = Trace {
            helo: "client.example (evil)\r\nX: y",
            esmtp: true,
            ip: "192.0.2.7".parse().unwrap(),
            by: "mx.example",
            tls: Some(("TLSv1.3", "TLS13_AES_256_GCM_SHA384")),
            authenticated: true,
            id: "abc",
        };
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(
            trace.header(now),
            "Received: from client.example__evil___X:_y ([192.0.2.7])\r\n\tby mx.example (Herald) with ESMTPSA id abc\r\n\t(using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384);\r\n\tTue, 14 Nov 2023 22:13:20 +0000\r\n"
        );
        let plain = Trace {
            helo: "h",
            esmtp: false,
            ip: "2001:db8::1".parse().unwrap(),
            tls: None,
            authenticated: false,
            ..trace
        };
        assert!(plain.header(now).starts_with(
            "Received: from h ([IPv6:2001:db8::1])\r\n\tby mx.example (Herald) with SMTP id abc;\r\n"
        ));
    }
}
