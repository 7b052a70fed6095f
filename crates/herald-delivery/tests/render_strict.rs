//! Renders messages with every kind of header Herald writes and parses each
//! with strict parsers: `mail-parser` with our own checks of the RFC 5322 and
//! RFC 2047 rules, and Python's `email` package under `policy.strict`.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use herald_core::{
    DisplayName, EmailAddress, HeaderName, HeaderValue, Mailbox, MessageId, SenderPolicy, Subject,
    TenantId,
};
use herald_delivery::{Route, Transport, render};
use herald_store::{Attachment, MessageContent, OnBehalf};
use herald_testkit::Dependency;
use serde_json::{Value, json};

/// A message to render and what its headers must decode to.
struct Case {
    name: &'static str,
    message: MessageContent,
    route: Route,
    expected: Expected,
}

/// Decoded values: (display name, address) per mailbox.
#[derive(Default)]
struct Expected {
    from: Vec<(Option<String>, String)>,
    sender: Vec<(Option<String>, String)>,
    to: Vec<(Option<String>, String)>,
    cc: Vec<(Option<String>, String)>,
    reply_to: Vec<(Option<String>, String)>,
    headers: Vec<(String, String)>,
}

fn address(s: &str) -> EmailAddress {
    EmailAddress::parse(s).expect("a valid address")
}

fn mailbox(name: Option<&str>, addr: &str) -> Mailbox {
    Mailbox {
        // `from_stored`: the writer must also handle what an earlier version
        // accepted and stored (an encoded word, a control character), which
        // `parse` now refuses in new input.
        name: name.map(|n| DisplayName::from_stored(n).expect("a valid display name")),
        address: address(addr),
    }
}

fn pair(name: Option<&str>, addr: &str) -> (Option<String>, String) {
    (name.map(str::to_owned), addr.to_owned())
}

fn pairs(list: &[Mailbox]) -> Vec<(Option<String>, String)> {
    list.iter()
        .map(|m| {
            (
                m.name.as_ref().map(|n| n.as_ref().to_owned()),
                m.address.as_ref().to_owned(),
            )
        })
        .collect()
}

fn message(subject: &str, to: Vec<Mailbox>) -> MessageContent {
    MessageContent {
        id: MessageId::new(),
        tenant_id: TenantId::new(),
        created_at: 1_764_500_000_000,
        subject: Subject::parse(subject).expect("a valid subject"),
        text: Some("Hello,\nthe disk is full.\n".into()),
        html: None,
        reply_to: None,
        headers: Vec::new(),
        to,
        cc: Vec::new(),
        on_behalf_of: None,
        test_provider: None,
        raw: None,
        attachments: Vec::new(),
        send_at: None,
    }
}

fn route(from_name: Option<&str>, from: &str) -> Route {
    Route {
        transport: Transport::Capture,
        from: address(from),
        from_name: from_name.map(str::to_owned),
        reply_to: None,
        provider: None,
        config_version: None,
        sender_policy: SenderPolicy::Fixed,
        warnings: Vec::new(),
    }
}

fn header(name: &str, value: &str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::parse(name).expect("a valid header name"),
        HeaderValue::from_stored(value).expect("a valid header value"),
    )
}

/// Repeats `word` with spaces between until the text has at least `chars` characters.
fn words(word: &str, chars: usize) -> String {
    let mut out = String::new();
    while out.chars().count() < chars {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The longest prefix of `text` that a display name may hold (200 octets),
/// without a trailing space.
fn at_most_200_octets(text: &str) -> String {
    let mut end = 200.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].trim_end().to_owned()
}

/// Every case: each address field, plain, quoted and encoded names, short
/// and long, and long subjects and header values.
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();

    // Names that are atoms, that need quoting, and that need encoding, in To and Cc.
    let to = vec![
        mailbox(Some("Ada Lovelace"), "ada@example.com"),
        mailbox(None, "bare@example.com"),
        mailbox(Some("Lovelace, Ada"), "comma@example.com"),
        mailbox(Some("ops@acme (on call)"), "at@example.com"),
        mailbox(Some("Say \"hi\" now"), "quote@example.com"),
        mailbox(Some("back\\slash"), "backslash@example.com"),
        mailbox(Some("Dr. Who; Jr."), "dot@example.com"),
    ];
    let cc = vec![
        mailbox(Some("Jürgen Müller"), "juergen@example.de"),
        mailbox(Some("山田太郎"), "yamada@example.jp"),
        mailbox(Some("Müller, \"Jürgen\" \\ @home"), "mixed@example.de"),
        mailbox(Some("=?utf-8?q?not_encoded?="), "literal@example.com"),
    ];
    let mut m = message("Disk full on db-1", to.clone());
    m.cc = cc.clone();
    cases.push(Case {
        name: "to-and-cc",
        expected: Expected {
            from: vec![pair(Some("Acme Alerts"), "alerts@acme.example")],
            to: pairs(&to),
            cc: pairs(&cc),
            ..Expected::default()
        },
        message: m,
        route: route(Some("Acme Alerts"), "alerts@acme.example"),
    });

    // The name from the issue, with the provider's Reply-To.
    let mut r = route(Some("Acme Überwachung – Alerts"), "alerts@acme.example");
    r.reply_to = Some(mailbox(Some("Acme Störungsdienst"), "support@acme.example"));
    let mut m = message(
        "Störung: Festplatte voll",
        vec![mailbox(Some("Jürgen"), "j@example.de")],
    );
    m.html = Some("<p>Grüße – die Festplatte ist voll.</p>".into());
    m.headers = vec![header("X-Control", "tab\there, bell\u{7}, =?not?= a word")];
    cases.push(Case {
        name: "non-ascii-from",
        expected: Expected {
            from: vec![pair(
                Some("Acme Überwachung – Alerts"),
                "alerts@acme.example",
            )],
            to: vec![pair(Some("Jürgen"), "j@example.de")],
            reply_to: vec![pair(Some("Acme Störungsdienst"), "support@acme.example")],
            headers: vec![(
                "X-Control".into(),
                "tab\there, bell\u{7}, =?not?= a word".into(),
            )],
            ..Expected::default()
        },
        message: m,
        route: r,
    });

    // Long names: 250 characters in From (the provider's name is not a
    // DisplayName), 200 octets in To; long subjects and header values.
    let long_ascii_from = words("Operations", 250);
    let long_ascii_to = at_most_200_octets(&words("Lovelace", 200));
    let long_subject = words("disk", 300);
    let long_value = words("value", 500);
    let long_token = "x".repeat(200);
    let long_quoted_to = at_most_200_octets(&words("Lovelace, Ada (Countess)", 200));
    let long_header_name = format!("X-{}", "N".repeat(62));
    let to = vec![
        mailbox(Some(&long_ascii_to), "long@example.com"),
        mailbox(Some("Short"), "short@example.com"),
        mailbox(Some(&long_quoted_to), "quoted@example.com"),
    ];
    let mut m = message(&long_subject, to.clone());
    m.headers = vec![
        header("X-Long-Value", &long_value),
        header("X-Long-Token", &long_token),
        header(&long_header_name, &long_value),
    ];
    cases.push(Case {
        name: "long-ascii",
        expected: Expected {
            from: vec![pair(Some(&long_ascii_from), "alerts@acme.example")],
            to: pairs(&to),
            headers: vec![
                ("X-Long-Value".into(), long_value.clone()),
                ("X-Long-Token".into(), long_token.clone()),
                (long_header_name.clone(), long_value.clone()),
            ],
            ..Expected::default()
        },
        message: m,
        route: route(Some(&long_ascii_from), "alerts@acme.example"),
    });

    let long_utf8_from = words("Überwachung–Störungsmeldung", 250);
    let long_utf8_to = "Ü".repeat(100);
    let long_utf8_subject = words("Festplatte voll – Störung", 400);
    let long_utf8_value = words("日本語のテキスト", 300);
    let long_mixed_value = format!("{} {}", "a".repeat(70), words("ä", 120));
    let to = vec![
        mailbox(Some(&long_utf8_to), "long@example.de"),
        mailbox(
            Some(&at_most_200_octets(&words("Jürgen Müller", 200))),
            "jm@example.de",
        ),
    ];
    let mut m = message(&long_utf8_subject, to.clone());
    m.headers = vec![
        header("X-Long-Utf8", &long_utf8_value),
        header("X-Mixed", &long_mixed_value),
    ];
    cases.push(Case {
        name: "long-non-ascii",
        expected: Expected {
            from: vec![pair(Some(&long_utf8_from), "alerts@acme.example")],
            to: pairs(&to),
            headers: vec![
                ("X-Long-Utf8".into(), long_utf8_value.clone()),
                ("X-Mixed".into(), long_mixed_value.clone()),
            ],
            ..Expected::default()
        },
        message: m,
        route: route(Some(&long_utf8_from), "alerts@acme.example"),
    });

    // On behalf of a person: the person in From, the provider in Sender.
    let mut r = route(Some("Acme Überwachung – Alerts"), "alerts@acme.example");
    r.sender_policy = SenderPolicy::OnBehalf;
    let person = words("Zoë Ågren-Łukasiewicz", 120);
    let mut m = message(
        "Ein Bericht für Sie",
        vec![mailbox(Some("Bob"), "bob@example.com")],
    );
    m.on_behalf_of = Some(OnBehalf {
        name: person.clone(),
        email: address("zoe@acme.example"),
    });
    m.reply_to = Some(mailbox(Some("Support Team"), "replies@acme.example"));
    cases.push(Case {
        name: "on-behalf",
        expected: Expected {
            from: vec![pair(Some(&person), "zoe@acme.example")],
            sender: vec![pair(
                Some("Acme Überwachung – Alerts"),
                "alerts@acme.example",
            )],
            to: vec![pair(Some("Bob"), "bob@example.com")],
            reply_to: vec![pair(Some("Support Team"), "replies@acme.example")],
            ..Expected::default()
        },
        message: m,
        route: r,
    });

    // The fixed policy: the person becomes the Reply-To.
    let mut m = message(
        "Report",
        vec![mailbox(Some("Bob \"the builder\""), "bob@example.com")],
    );
    m.on_behalf_of = Some(OnBehalf {
        name: "Renée O'Brien, PhD".into(),
        email: address("renee@acme.example"),
    });
    cases.push(Case {
        name: "fixed-policy",
        expected: Expected {
            from: vec![pair(None, "alerts@acme.example")],
            to: vec![pair(Some("Bob \"the builder\""), "bob@example.com")],
            reply_to: vec![pair(Some("Renée O'Brien, PhD"), "renee@acme.example")],
            ..Expected::default()
        },
        message: m,
        route: route(None, "alerts@acme.example"),
    });

    // An internationalised address: the header section is UTF-8 (RFC 6532).
    let to = vec![
        mailbox(Some("Jürgen Müller"), "jürgen@müller.example"),
        mailbox(Some("Plain"), "plain@example.com"),
    ];
    cases.push(Case {
        name: "international",
        expected: Expected {
            from: vec![pair(Some("Acme"), "alerts@acme.example")],
            to: pairs(&to),
            ..Expected::default()
        },
        message: message("Grüße", to),
        route: route(Some("Acme"), "alerts@acme.example"),
    });

    // Attachments: names in RFC 2231 parameters (long, non-ASCII, quoted),
    // an inline image beside the HTML.
    let to = vec![mailbox(None, "ops@acme.example")];
    let mut m = message("Monthly report", to.clone());
    m.html = Some("<p><img src=\"cid:logo@acme.example\"> the disk is full.</p>".into());
    m.attachments = vec![
        Attachment {
            filename: format!("Störungsbericht für {} (März).pdf", words("Jürgen", 120)),
            content_type: "application/pdf".into(),
            content_id: None,
            content: (0..=255u8).cycle().take(4000).collect(),
        },
        Attachment {
            filename: format!("{} \"quoted\" \\ name.txt", words("long", 100)),
            content_type: "text/plain".into(),
            content_id: None,
            content: b"plain\nlines\r\n".to_vec(),
        },
        Attachment {
            filename: "logo.png".into(),
            content_type: "image/png".into(),
            content_id: Some("logo@acme.example".into()),
            content: b"\x89PNG\r\n\x1a\n\x00\xff".to_vec(),
        },
    ];
    cases.push(Case {
        name: "attachments",
        expected: Expected {
            from: vec![pair(Some("Acme"), "alerts@acme.example")],
            to: pairs(&to),
            ..Expected::default()
        },
        message: m,
        route: route(Some("Acme"), "alerts@acme.example"),
    });

    // Mail received over SMTP under the fixed policy: From rewritten, the
    // client's folded, encoded From made the Reply-To, the rest as it came.
    let mut m = message("Disk full", Vec::new());
    m.raw = Some(
        b"Received: from app.example by herald; Mon, 30 Nov 2026 18:00:00 +0000\r\nFrom:\r\n =?utf-8?q?J=C3=BCrgen_M=C3=BCller?=\r\n\t<juergen@app.example>\r\nTo: Ops <ops@acme.example>\r\nBcc: hidden@acme.example\r\nSubject: Disk full\r\n\r\nHello,\r\nthe disk is full.\r\n"
            .to_vec(),
    );
    cases.push(Case {
        name: "received over SMTP",
        expected: Expected {
            from: vec![pair(Some("Acme Alerts"), "alerts@acme.example")],
            to: vec![pair(Some("Ops"), "ops@acme.example")],
            reply_to: vec![pair(Some("Jürgen Müller"), "juergen@app.example")],
            ..Expected::default()
        },
        message: m,
        route: route(Some("Acme Alerts"), "alerts@acme.example"),
    });

    cases
}

impl Case {
    fn international(&self) -> bool {
        let Expected {
            from,
            sender,
            to,
            cc,
            reply_to,
            ..
        } = &self.expected;
        [from, sender, to, cc, reply_to]
            .into_iter()
            .flatten()
            .any(|(_, a)| !a.is_ascii())
    }

    fn expected_json(&self) -> Value {
        let list = |l: &[(Option<String>, String)]| -> Value {
            l.iter()
                .map(|(name, address)| json!({"name": name, "address": address}))
                .collect()
        };
        json!({
            "international": self.international(),
            "from": list(&self.expected.from),
            "sender": list(&self.expected.sender),
            "to": list(&self.expected.to),
            "cc": list(&self.expected.cc),
            "reply_to": list(&self.expected.reply_to),
            "subject": self.message.subject.as_ref(),
            "headers": self.expected.headers,
            "text": self.message.text,
        })
    }
}

/// The header fields Herald writes with addresses in them.
const ADDRESS_FIELDS: [&str; 5] = ["from", "sender", "to", "cc", "reply-to"];

/// Every way the rendered bytes break RFC 5322 (lines, CRLF, ASCII) or
/// RFC 2047 (encoded words).
fn rfc_defects(bytes: &[u8], international: bool) -> Vec<String> {
    let mut defects = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        let bare_lf = b == b'\n' && (i == 0 || bytes[i - 1] != b'\r');
        let bare_cr = b == b'\r' && bytes.get(i + 1) != Some(&b'\n');
        if bare_lf || bare_cr {
            defects.push(format!("bare CR or LF at byte {i}"));
            break;
        }
    }
    let text = String::from_utf8_lossy(bytes);
    let Some((head, _)) = text.split_once("\r\n\r\n") else {
        return vec!["no blank line after the header section".into()];
    };
    if !international && !head.is_ascii() {
        defects.push("non-ASCII header section without an internationalised address".into());
    }
    let mut fields: Vec<(String, Vec<&str>)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            match fields.last_mut() {
                Some((_, lines)) => lines.push(line),
                None => defects.push(format!("the header section starts with a fold: {line:?}")),
            }
        } else {
            match line.split_once(':') {
                Some((name, _)) => fields.push((name.to_ascii_lowercase(), vec![line])),
                None => defects.push(format!("a line that is no header field: {line:?}")),
            }
        }
    }
    for (name, lines) in &fields {
        for (n, line) in lines.iter().enumerate() {
            if line.len() > 998 {
                defects.push(format!("{name}: a line of {} octets", line.len()));
            }
            // A line may exceed 78 only when it has nowhere to fold: no
            // whitespace after its leading fold (or after the field name).
            let body = if n == 0 {
                line.split_once(':').map_or(*line, |(_, v)| v.trim_start())
            } else {
                line.trim_start()
            };
            if line.len() > 78 && body.contains([' ', '\t']) {
                defects.push(format!(
                    "{name}: a line of {} characters: {line:?}",
                    line.len()
                ));
            }
            if line.contains("=?") && line.len() > 76 && body.contains([' ', '\t']) {
                defects.push(format!(
                    "{name}: a line with encoded words of {} characters (RFC 2047 2)",
                    line.len()
                ));
            }
        }
        let value = lines.join("\r\n");
        let value = value.split_once(':').map_or("", |(_, v)| v);
        defects.extend(
            encoded_word_defects(value, ADDRESS_FIELDS.contains(&name.as_str()))
                .into_iter()
                .map(|d| format!("{name}: {d}")),
        );
    }
    defects
}

/// Checks every encoded word in a field body: its length, what surrounds it,
/// whether it sits in a quoted string, its characters, and that it decodes
/// to whole UTF-8 characters.
fn encoded_word_defects(value: &str, structured: bool) -> Vec<String> {
    let mut defects = Vec::new();
    let bytes = value.as_bytes();
    let mut in_quotes = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quotes => {
                i += 2;
                continue;
            }
            b'"' if structured => in_quotes = !in_quotes,
            b'=' if bytes.get(i + 1) == Some(&b'?') => {
                if let Some(len) = encoded_word_at(&value[i..]) {
                    let word = &value[i..i + len];
                    if in_quotes {
                        defects.push(format!("encoded word inside a quoted string: {word}"));
                    }
                    if len > 75 {
                        defects.push(format!("encoded word of {len} characters: {word}"));
                    }
                    let before = if i == 0 { b' ' } else { bytes[i - 1] };
                    if !matches!(before, b' ' | b'\t' | b'\n') {
                        defects.push(format!("encoded word not preceded by whitespace: {word}"));
                    }
                    let after = bytes.get(i + len).copied().unwrap_or(b' ');
                    if !matches!(after, b' ' | b'\t' | b'\r') {
                        defects.push(format!("encoded word not followed by whitespace: {word}"));
                    }
                    if let Err(defect) = decode_word(word, structured) {
                        defects.push(format!("{defect}: {word}"));
                    }
                    i += len;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    defects
}

/// The length of the encoded word `=?charset?enc?text?=` at the start of `s`.
fn encoded_word_at(s: &str) -> Option<usize> {
    let rest = s.strip_prefix("=?")?;
    let (charset, rest) = rest.split_once('?')?;
    let (encoding, rest) = rest.split_once('?')?;
    let end = rest.find("?=")?;
    let text = &rest[..end];
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\"/[]?.=".contains(&b))
    };
    (token(charset)
        && matches!(encoding, "q" | "Q" | "b" | "B")
        && !text.contains([' ', '\t', '\r', '\n']))
    .then(|| 2 + charset.len() + 1 + encoding.len() + 1 + end + 2)
}

/// Decodes one encoded word on its own, which must give whole UTF-8
/// characters; in a phrase, Q text may only use RFC 2047 5(3)'s characters.
fn decode_word(word: &str, phrase: bool) -> Result<String, String> {
    let inner = &word[2..word.len() - 2];
    let mut parts = inner.splitn(3, '?');
    let (charset, encoding, text) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if !["utf-8", "us-ascii"].contains(&charset.to_ascii_lowercase().as_str()) {
        return Err(format!("unexpected charset {charset}"));
    }
    let decoded = if encoding.eq_ignore_ascii_case("b") {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("bad base64 ({e})"))?
    } else {
        let mut out = Vec::new();
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'=' => {
                    let hex = text.get(i + 1..i + 3).ok_or("a truncated =XX")?;
                    out.push(u8::from_str_radix(hex, 16).map_err(|_| "a bad =XX")?);
                    i += 3;
                    continue;
                }
                b'_' => out.push(b' '),
                c if phrase && !(c.is_ascii_alphanumeric() || b"!*+-/".contains(&c)) => {
                    return Err(format!(
                        "Q text in a phrase with {:?}, outside RFC 2047 5(3)",
                        c as char
                    ));
                }
                c if !c.is_ascii_graphic() || c == b'?' => {
                    return Err(format!("Q text with {:?}", c as char));
                }
                c => out.push(c),
            }
            i += 1;
        }
        out
    };
    String::from_utf8(decoded).map_err(|_| "an encoded word that splits a UTF-8 character".into())
}

/// The mailboxes mail-parser decodes from an address field.
fn parsed_mailboxes(address: Option<&mail_parser::Address<'_>>) -> Vec<(Option<String>, String)> {
    address
        .into_iter()
        .flat_map(|a| a.iter())
        .map(|addr| {
            (
                addr.name.as_deref().map(str::to_owned),
                addr.address.as_deref().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// What mail-parser decodes that differs from what was rendered.
fn round_trip_defects(bytes: &[u8], case: &Case) -> Vec<String> {
    // Custom fields are unstructured text (RFC 5322 3.6.8), decoded as such;
    // naming any field replaces mail-parser's defaults, so all are named.
    let parser = mail_parser::MessageParser::new()
        .with_minimal_headers()
        .header_address(mail_parser::HeaderName::Sender);
    let parser = case.expected.headers.iter().fold(parser, |p, (name, _)| {
        p.header_text(mail_parser::HeaderName::Other(name.clone().into()))
    });
    let Some(parsed) = parser.parse(bytes) else {
        return vec!["mail-parser cannot parse the message".into()];
    };
    let mut defects = Vec::new();
    let e = &case.expected;
    for (field, got, want) in [
        ("From", parsed_mailboxes(parsed.from()), &e.from),
        ("Sender", parsed_mailboxes(parsed.sender()), &e.sender),
        ("To", parsed_mailboxes(parsed.to()), &e.to),
        ("Cc", parsed_mailboxes(parsed.cc()), &e.cc),
        ("Reply-To", parsed_mailboxes(parsed.reply_to()), &e.reply_to),
    ] {
        if &got != want {
            defects.push(format!("{field}: decoded {got:?}, expected {want:?}"));
        }
    }
    if parsed.subject() != Some(case.message.subject.as_ref()) {
        defects.push(format!(
            "Subject: decoded {:?}, expected {:?}",
            parsed.subject(),
            case.message.subject.as_ref()
        ));
    }
    for (name, want) in &e.headers {
        let got = parsed.header(name.as_str()).and_then(|v| v.as_text());
        if got != Some(want.as_str()) {
            defects.push(format!("{name}: decoded {got:?}, expected {want:?}"));
        }
    }
    let text = parsed.body_text(0).map(|t| t.replace("\r\n", "\n"));
    if text.as_deref() != case.message.text.as_deref() {
        defects.push(format!(
            "text body: decoded {text:?}, expected {:?}",
            case.message.text
        ));
    }
    defects
}

fn render_all(dir: &Path) -> Vec<(Case, Vec<u8>)> {
    cases()
        .into_iter()
        .map(|case| {
            let bytes = render(&case.message, &case.route).content;
            std::fs::write(dir.join(format!("{}.eml", case.name)), &bytes).expect("write eml");
            std::fs::write(
                dir.join(format!("{}.json", case.name)),
                case.expected_json().to_string(),
            )
            .expect("write json");
            (case, bytes)
        })
        .collect()
}

#[test]
fn rendered_headers_follow_the_rfcs_and_round_trip() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // HERALD_RENDER_DUMP=<dir> keeps the rendered messages for a look.
    if let Some(keep) = std::env::var_os("HERALD_RENDER_DUMP") {
        render_all(Path::new(&keep));
    }
    let mut failures = Vec::new();
    for (case, bytes) in render_all(dir.path()) {
        let defects = rfc_defects(&bytes, case.international())
            .into_iter()
            .chain(round_trip_defects(&bytes, &case));
        failures.extend(defects.map(|d| format!("{}: {d}", case.name)));
    }
    assert!(
        failures.is_empty(),
        "{} defects:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn python_strict_policy_finds_no_defect() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    render_all(dir.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/strict_parse.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(dir.path())
        .output()
        .map_err(|error| format!("python3 cannot be run ({error})"));
    let Some(output) = herald_testkit::require(Dependency::Python, output) else {
        return;
    };
    assert!(
        output.status.success(),
        "Python's email package (policy.strict) found defects:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
