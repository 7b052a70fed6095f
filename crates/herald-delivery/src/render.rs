//! Turns a stored message and the route it takes into RFC 5322 bytes.

use std::borrow::Cow;

use herald_core::{EmailAddress, SenderPolicy};
use herald_store::MessageContent;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::mime::MimePart;

use crate::Route;
use crate::header::{NamedAddress, address_field, text_field};

/// A message ready for the wire, and which sender policy shaped its From.
pub struct Rendered {
    pub content: Vec<u8>,
    /// `fixed`; `fixed, reply-to the person`; or `on_behalf`. Mail received
    /// over SMTP also `as received` or `fixed, reply-to the original From`
    /// (see the `raw` module).
    pub sender_policy: &'static str,
}

fn named<'a>(name: Option<&'a str>, address: &'a EmailAddress) -> NamedAddress<'a> {
    NamedAddress { name, address }
}

/// Writes the message as the provider sends it.
///
/// From is the provider's address, Reply-To the message's own or else the
/// provider's. For a message sent on behalf of a person, the `on_behalf`
/// policy makes the person the From and the provider the Sender (RFC 5322
/// 3.6.2); the `fixed` policy keeps the provider's From and makes the person
/// the Reply-To, for relays that refuse foreign From addresses.
///
/// The header section is written by the `header` module (display names and
/// text encoded per RFC 2047, lines folded per RFC 5322); mail-builder writes
/// the MIME body, encoding long or non-ASCII bodies as quoted-printable or
/// base64, so no line exceeds the RFC 5322 limit. Mail carries
/// `Auto-Submitted: auto-generated` (RFC 3834) unless the submitter set that
/// header, so auto-responders do not answer it.
///
/// Attachments make the message multipart/mixed: the text and HTML first,
/// then each file; an attachment with a content id is an inline part beside
/// the HTML in multipart/related (RFC 2387), which refers to it as `cid:`.
///
/// A message received over SMTP is sent as it came but for the sender's
/// fields: see the `raw` module.
pub fn render(message: &MessageContent, route: &Route) -> Rendered {
    if let Some(raw) = &message.raw {
        return crate::raw::render(raw, message, route);
    }
    let provider = named(route.from_name.as_deref(), &route.from);
    let mut reply_to = message
        .reply_to
        .as_ref()
        .or(route.reply_to.as_ref())
        .map(NamedAddress::from);
    let (from, sender, sender_policy) = match (&message.on_behalf_of, route.sender_policy) {
        (None, _) => (provider, None, "fixed"),
        (Some(person), SenderPolicy::OnBehalf) => (
            named(Some(person.name.as_str()), &person.email),
            Some(provider),
            "on_behalf",
        ),
        (Some(person), SenderPolicy::Fixed) => {
            if message.reply_to.is_none() {
                reply_to = Some(named(Some(person.name.as_str()), &person.email));
            }
            (provider, None, "fixed, reply-to the person")
        }
    };
    let mut head = String::new();
    head.push_str(&address_field("From", [from]));
    if let Some(sender) = sender {
        head.push_str(&address_field("Sender", [sender]));
    }
    if !message.to.is_empty() {
        head.push_str(&address_field("To", message.to.iter().map(Into::into)));
    }
    if !message.cc.is_empty() {
        head.push_str(&address_field("Cc", message.cc.iter().map(Into::into)));
    }
    if let Some(reply_to) = reply_to {
        head.push_str(&address_field("Reply-To", [reply_to]));
    }
    head.push_str(&text_field("Subject", message.subject.as_ref()));
    head.push_str(&format!(
        "Date: {}\r\n",
        Date::new(message.due_from() / 1000).to_rfc822()
    ));
    head.push_str(&format!(
        "Message-ID: <{}@{}>\r\n",
        message.id,
        route.from.domain()
    ));
    let submitter_set_auto_submitted = message
        .headers
        .iter()
        .any(|(name, _)| name.as_ref().eq_ignore_ascii_case("auto-submitted"));
    if !submitter_set_auto_submitted {
        head.push_str("Auto-Submitted: auto-generated\r\n");
    }
    for (name, value) in &message.headers {
        head.push_str(&text_field(name.as_ref(), value.as_ref()));
    }
    head.push_str("MIME-Version: 1.0\r\n");

    let mut content = head.into_bytes();
    body(message)
        .write_part(&mut content)
        .expect("writing a message into a Vec cannot fail");
    Rendered {
        content,
        sender_policy,
    }
}

/// The MIME body: the text and HTML as alternatives, inline parts related
/// to the HTML, and the other attachments after them in multipart/mixed.
fn body(message: &MessageContent) -> MimePart<'_> {
    let text = message
        .text
        .as_deref()
        .map(|text| text_part("text/plain", text));
    let (inline, attached): (Vec<_>, Vec<_>) = message
        .attachments
        .iter()
        .partition(|a| a.content_id.is_some() && message.html.is_some());
    let html = message.html.as_deref().map(|html| {
        let html = text_part("text/html", html);
        if inline.is_empty() {
            return html;
        }
        let mut parts = vec![html];
        parts.extend(inline.iter().map(|a| crate::attachment::part(a, true)));
        MimePart::new(
            ContentType::new("multipart/related").attribute("type", "text/html"),
            parts,
        )
    });
    let body = match (text, html) {
        (Some(text), Some(html)) => Some(MimePart::new("multipart/alternative", vec![text, html])),
        (text, html) => text.or(html),
    };
    if attached.is_empty() {
        return body.unwrap_or_else(|| MimePart::new("text/plain", "\n"));
    }
    let mut parts: Vec<MimePart> = body.into_iter().collect();
    parts.extend(attached.iter().map(|a| crate::attachment::part(a, false)));
    MimePart::new("multipart/mixed", parts)
}

/// A text part, its line ends made CRLF: text's canonical form (RFC 2046
/// §4.1.1), which base64 keeps as it is given. Text that needs no encoding
/// is declared 7bit here, as mail_builder would do it, so that it is not
/// copied byte by byte (mail_builder's check and copy were 5 % of a node's
/// delivery time).
fn text_part<'x>(content_type: &'x str, text: &'x str) -> MimePart<'x> {
    let part = MimePart::new(content_type, crlf(text));
    if is_seven_bit(text.as_bytes()) {
        part.transfer_encoding("7bit")
    } else {
        part
    }
}

/// `text` with a CR before every LF that has none.
fn crlf(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let bare = (0..bytes.len()).any(|i| bytes[i] == b'\n' && (i == 0 || bytes[i - 1] != b'\r'));
    if !bare {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    for line in text.split_inclusive('\n') {
        match line.strip_suffix('\n') {
            Some(content) if !content.ends_with('\r') => {
                out.push_str(content);
                out.push_str("\r\n");
            }
            _ => out.push_str(line),
        }
    }
    Cow::Owned(out)
}

/// Whether mail_builder would send `body` as it is (7bit): every byte
/// below 127, no line longer than 76 characters before its LF (77 without
/// one, at the end), and no space or tab at the end of a line or of the text.
fn is_seven_bit(body: &[u8]) -> bool {
    if !body.is_ascii() || body.contains(&127) {
        return false;
    }
    let mut lines = body.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        let longest = if last { 77 } else { 76 };
        let content = if last {
            line
        } else {
            line.strip_suffix(b"\r").unwrap_or(line)
        };
        if line.len() > longest || content.ends_with(b" ") || content.ends_with(b"\t") {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use herald_core::{EmailAddress, MessageId, Subject, TenantId};
    use herald_store::Attachment;
    use mail_parser::{MessageParser, MimeHeaders, PartType};

    use super::*;
    use crate::Transport;

    fn message(html: bool, attachments: Vec<Attachment>) -> MessageContent {
        MessageContent {
            id: MessageId::new(),
            tenant_id: TenantId::new(),
            created_at: 1_764_500_000_000,
            subject: Subject::parse("Report").unwrap(),
            text: Some("See the report.".into()),
            html: html.then(|| "<p><img src=\"cid:logo\"> See the report.</p>".into()),
            reply_to: None,
            headers: Vec::new(),
            to: Vec::new(),
            cc: Vec::new(),
            on_behalf_of: None,
            test_provider: None,
            raw: None,
            attachments,
            send_at: None,
        }
    }

    fn route() -> Route {
        Route {
            transport: Transport::Capture,
            from: EmailAddress::parse("alerts@acme.example").unwrap(),
            from_name: None,
            reply_to: None,
            provider: None,
            config_version: None,
            sender_policy: SenderPolicy::Fixed,
            warnings: Vec::new(),
        }
    }

    fn file(name: &str, content_id: Option<&str>) -> Attachment {
        Attachment {
            filename: name.into(),
            content_type: "application/octet-stream".into(),
            content_id: content_id.map(str::to_owned),
            content: vec![0, 1, 0xfe, 0xff, b'\n', b'\r', b'.'],
        }
    }

    /// The tree of content types, depth first: `type/subtype` indented by depth.
    fn structure(content: &[u8]) -> Vec<String> {
        let parsed = MessageParser::new().parse(content).unwrap();
        let mut out = Vec::new();
        let mut stack = vec![(0u32, 0usize)];
        while let Some((id, depth)) = stack.pop() {
            let part = &parsed.parts[id as usize];
            let ct = part.content_type().unwrap();
            out.push(format!(
                "{}{}/{}",
                "  ".repeat(depth),
                ct.c_type,
                ct.c_subtype.as_deref().unwrap_or("")
            ));
            if let PartType::Multipart(children) = &part.body {
                stack.extend(children.iter().rev().map(|&c| (c, depth + 1)));
            }
        }
        out
    }

    #[test]
    fn attachments_follow_the_alternatives_and_inline_parts_go_with_the_html() {
        let rendered = render(
            &message(
                true,
                vec![file("a.bin", None), file("logo.png", Some("logo"))],
            ),
            &route(),
        );
        assert_eq!(
            structure(&rendered.content),
            [
                "multipart/mixed",
                "  multipart/alternative",
                "    text/plain",
                "    multipart/related",
                "      text/html",
                "      application/octet-stream",
                "  application/octet-stream",
            ]
        );
        let parsed = MessageParser::new().parse(&rendered.content).unwrap();
        for part in parsed.attachments() {
            assert_eq!(part.contents(), file("", None).content);
        }
    }

    /// The parts declared 7bit here are written as mail_builder writes
    /// them when it decides on its own.
    #[test]
    fn seven_bit_text_is_written_as_mail_builder_writes_it() {
        let long = "x".repeat(76);
        let longer = "x".repeat(77);
        let cases = [
            "plain\nlines\r\nmixed\rends".to_owned(),
            format!("{long}\n{}\r\n{long}x", "x".repeat(75)),
            format!("{long}\r\nnext"),
            format!("{longer}\nnext"),
            format!("last line of 77: {}", "y".repeat(60)),
            format!("last line of 78: {}", "y".repeat(61)),
            "trailing space \nnext".to_owned(),
            "trailing tab\t\r\nnext".to_owned(),
            "space at the end ".to_owned(),
            "space before a bare CR \rnext".to_owned(),
            "\nstarts with LF\n\n".to_owned(),
            "equals = and dots\n.\n..".to_owned(),
            "DEL \u{7f}".to_owned(),
            "non-ASCII é".to_owned(),
            String::new(),
        ];
        assert!(is_seven_bit(cases[0].as_bytes()) && is_seven_bit(cases[1].as_bytes()));
        assert!(!is_seven_bit(cases[2].as_bytes()) && !is_seven_bit(cases[5].as_bytes()));
        for text in &cases {
            let ours = {
                let mut out = Vec::new();
                text_part("text/plain", text).write_part(&mut out).unwrap();
                out
            };
            let theirs = {
                let mut out = Vec::new();
                MimePart::new("text/plain", text.as_str())
                    .write_part(&mut out)
                    .unwrap();
                out
            };
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs),
                "{text:?}"
            );
        }
    }

    /// Text that mail_builder encodes in base64 keeps CRLF line ends
    /// inside, text's canonical form (RFC 2046 §4.1.1); base64 would keep
    /// a bare LF as it is.
    #[test]
    fn encoded_text_has_crlf_line_ends_inside() {
        let mut out = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n".to_vec();
        text_part("text/plain", "Привет\nмир\r\nи всё\n")
            .write_part(&mut out)
            .unwrap();
        out.extend_from_slice(b"\r\n--b--\r\n");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("base64"), "{text}");
        let parsed = MessageParser::new().parse(&out).unwrap();
        let part = parsed.parts.iter().find(|p| p.is_text()).unwrap();
        assert_eq!(part.contents(), "Привет\r\nмир\r\nи всё\r\n".as_bytes());
    }

    #[test]
    fn without_attachments_the_body_is_as_before() {
        let rendered = render(&message(true, Vec::new()), &route());
        assert_eq!(
            structure(&rendered.content),
            ["multipart/alternative", "  text/plain", "  text/html"]
        );
        let rendered = render(&message(false, vec![file("a.bin", None)]), &route());
        assert_eq!(
            structure(&rendered.content),
            [
                "multipart/mixed",
                "  text/plain",
                "  application/octet-stream"
            ]
        );
        // Without HTML to show it, a part with a content id is attached.
        let rendered = render(
            &message(false, vec![file("logo.png", Some("logo"))]),
            &route(),
        );
        assert_eq!(
            structure(&rendered.content),
            [
                "multipart/mixed",
                "  text/plain",
                "  application/octet-stream"
            ]
        );
        let content = String::from_utf8(rendered.content).unwrap();
        assert!(
            content.contains("Content-Disposition: attachment; filename=\"logo.png\"\r\n"),
            "{content}"
        );
    }
}
