//! Delivering a message received over SMTP: the client's bytes as they came,
//! but for the header fields that say who sent it.
//!
//! The header section is split into fields on the bytes themselves (a field
//! goes on over lines that start with a space or a tab) and spliced: fields
//! Herald writes replace or join the client's, fields it removes are left
//! out, every other field and everything after the header section are copied
//! byte for byte. mail-parser only reads the addresses out of From.

use herald_core::{EmailAddress, SenderPolicy};
use herald_store::MessageContent;
use mail_builder::headers::date::Date;
use mail_parser::{Address, MessageParser};

use crate::Route;
use crate::header::{NamedAddress, address_field};
use crate::render::Rendered;

/// The sender policy a raw message was sent under, as attempts record it.
pub(crate) mod policy {
    /// The header From was already the provider's address.
    pub const AS_RECEIVED: &str = "as received";
    /// The client's From (a person of the tenant) kept, the provider as Sender.
    pub const ON_BEHALF: &str = "on_behalf";
    /// From rewritten to the provider's; the client's Reply-To, if any, kept.
    pub const FIXED: &str = "fixed";
    /// From rewritten to the provider's, and the client's From made the Reply-To.
    pub const FIXED_REPLY_TO: &str = "fixed, reply-to the original From";
}

/// One field of the header section as received: its bytes, line endings
/// and continuation lines included.
struct RawField<'a> {
    bytes: &'a [u8],
    /// The field name in lower case; `None` for a line that is not a field.
    name: Option<String>,
}

impl RawField<'_> {
    fn is(&self, name: &str) -> bool {
        self.name.as_deref() == Some(name)
    }

    /// The value: what follows the colon, up to the field's end.
    fn value(&self) -> &[u8] {
        let colon = self.bytes.iter().position(|&b| b == b':').unwrap_or(0);
        &self.bytes[colon + 1..]
    }
}

/// The header section as fields, and the rest of the message from the empty
/// line that ends the section (empty when there is none: a header-only
/// message). A line that is neither a field nor a continuation ends the
/// section too, as it does for a receiving server: the rest then starts with
/// that line, and [`render`] puts the empty line before it.
fn split(raw: &[u8]) -> (Vec<RawField<'_>>, &[u8]) {
    let mut fields: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let end = raw[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| pos + i + 1);
        let line = &raw[pos..end];
        if line == b"\r\n" || line == b"\n" {
            return (fields_of(raw, &fields), &raw[pos..]);
        }
        match fields.last_mut() {
            Some((_, last_end)) if line.starts_with(b" ") || line.starts_with(b"\t") => {
                *last_end = end;
            }
            _ if field_name(line).is_none() => return (fields_of(raw, &fields), &raw[pos..]),
            _ => fields.push((pos, end)),
        }
        pos = end;
    }
    (fields_of(raw, &fields), &raw[raw.len()..])
}

fn fields_of<'a>(raw: &'a [u8], spans: &[(usize, usize)]) -> Vec<RawField<'a>> {
    spans
        .iter()
        .map(|&(start, end)| {
            let bytes = &raw[start..end];
            RawField {
                bytes,
                name: field_name(bytes),
            }
        })
        .collect()
}

/// RFC 5322 3.6.8: printable ASCII but the colon, before the colon (the
/// obsolete syntax allows spaces between name and colon, RFC 5322 4.5).
fn field_name(field: &[u8]) -> Option<String> {
    let colon = field.iter().position(|&b| b == b':')?;
    let name = field[..colon].trim_ascii_end();
    let valid = !name.is_empty() && name.iter().all(|b| (0x21..=0x7e).contains(b));
    valid.then(|| String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// The mailboxes of a From field's value, with their decoded display names,
/// and whether the value is one mailbox outside any group.
struct Mailboxes {
    list: Vec<(Option<String>, String)>,
    single: bool,
}

fn mailboxes(value: &[u8]) -> Mailboxes {
    let mut field = b"From:".to_vec();
    field.extend_from_slice(value);
    if !field.ends_with(b"\n") {
        field.extend_from_slice(b"\r\n");
    }
    field.extend_from_slice(b"\r\n");
    let parsed = MessageParser::new().parse_headers(&field);
    let address = parsed.as_ref().and_then(|m| m.from());
    let list: Vec<(Option<String>, String)> = address
        .map(|a| {
            a.iter()
                .filter_map(|addr| {
                    let email = addr.address.as_deref()?;
                    let name = addr.name.as_deref().filter(|n| !n.trim().is_empty());
                    Some((name.map(str::to_owned), email.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default();
    let single = matches!(address, Some(Address::List(l)) if l.len() == 1) && list.len() == 1;
    Mailboxes { list, single }
}

/// A field that names hidden recipients: `Bcc`, and `Resent-Bcc`, which
/// means the same for a resent message (RFC 5322 §3.6.6).
fn is_bcc(field: &RawField<'_>) -> bool {
    field.is("bcc") || field.is("resent-bcc")
}

/// Addresses compare without regard to ASCII case: mail systems treat local
/// parts that way in practice, and domains are so by definition.
fn same_address(a: &str, b: &EmailAddress) -> bool {
    a.trim().eq_ignore_ascii_case(b.as_ref())
}

/// What is done with one field of the client's header section.
enum Step<'a> {
    Keep(&'a [u8]),
    Write(String),
}

/// Writes a message received over SMTP as the provider sends it.
///
/// The header From stays when its address is the provider's From address
/// (`as received`), or when the message is sent on behalf of a person of the
/// tenant and the provider's policy is `on_behalf`; the provider then
/// becomes the Sender, replacing any the client set. Otherwise From becomes
/// the provider's, the client's Sender goes, and the client's From becomes
/// the Reply-To unless the client set one. Bcc and Return-Path are removed
/// (RFC 5321 4.4: Return-Path is written at final delivery). Message-ID and
/// Date are added when missing (RFC 6409 8.3, 8.4), in the forms
/// `render` writes; Auto-Submitted is not: the mail is the client's.
pub(crate) fn render(raw: &[u8], message: &MessageContent, route: &Route) -> Rendered {
    let (fields, rest) = split(raw);
    let provider = NamedAddress {
        name: route.from_name.as_deref(),
        address: &route.from,
    };
    let has = |name: &str| fields.iter().any(|f| f.is(name));
    let first_from = fields.iter().position(|f| f.is("from"));
    let from = first_from.map(|i| mailboxes(fields[i].value()));
    let from_count = fields.iter().filter(|f| f.is("from")).count();
    let from_is_provider = from_count == 1
        && from
            .as_ref()
            .is_some_and(|m| m.single && same_address(&m.list[0].1, &route.from));
    // The person's own From only: one field, one mailbox, the person's
    // address, so no second From or mailbox rides along under the provider's Sender.
    let on_behalf = from_count == 1
        && route.sender_policy == SenderPolicy::OnBehalf
        && message.on_behalf_of.as_ref().is_some_and(|person| {
            from.as_ref()
                .is_some_and(|m| m.single && same_address(&m.list[0].1, &person.email))
        });

    let mut steps: Vec<Step> = Vec::with_capacity(fields.len() + 4);
    let mut added_at_end: Vec<String> = Vec::new();
    let policy = if from_is_provider {
        // A Sender other than the provider would show as "on behalf of" it.
        let foreign_sender = |field: &RawField<'_>| {
            field.is("sender")
                && !mailboxes(field.value())
                    .list
                    .first()
                    .is_some_and(|(_, address)| same_address(address, &route.from))
        };
        for field in &fields {
            if !(is_bcc(field) || field.is("return-path") || foreign_sender(field)) {
                steps.push(Step::Keep(field.bytes));
            }
        }
        policy::AS_RECEIVED
    } else if on_behalf {
        for (i, field) in fields.iter().enumerate() {
            if is_bcc(field) || field.is("return-path") || field.is("sender") {
                continue;
            }
            steps.push(Step::Keep(field.bytes));
            if Some(i) == first_from {
                steps.push(Step::Write(address_field("Sender", [provider])));
            }
        }
        policy::ON_BEHALF
    } else {
        // A client's DKIM signature covers the From it had: it would only
        // fail at the receiver, so it goes with that From.
        // The client's mailboxes that are addresses Herald can write again.
        let original: Vec<(Option<String>, EmailAddress)> = from
            .map(|m| m.list)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, email)| Some((name, EmailAddress::parse(&email).ok()?)))
            .collect();
        let reply_to = !has("reply-to") && !original.is_empty();
        let from_field = address_field("From", [provider]);
        for (i, field) in fields.iter().enumerate() {
            if Some(i) == first_from {
                steps.push(Step::Write(from_field.clone()));
                if reply_to {
                    let list = original.iter().map(|(name, address)| NamedAddress {
                        name: name.as_deref(),
                        address,
                    });
                    steps.push(Step::Write(address_field("Reply-To", list)));
                }
            } else if !(is_bcc(field)
                || ["return-path", "sender", "from", "dkim-signature"]
                    .iter()
                    .any(|name| field.is(name)))
            {
                steps.push(Step::Keep(field.bytes));
            }
        }
        if first_from.is_none() {
            added_at_end.push(from_field);
        }
        if reply_to {
            policy::FIXED_REPLY_TO
        } else {
            policy::FIXED
        }
    };
    if !has("message-id") {
        added_at_end.push(format!(
            "Message-ID: <{}@{}>\r\n",
            message.id,
            route.from.domain()
        ));
    }
    if !has("date") {
        added_at_end.push(format!(
            "Date: {}\r\n",
            Date::new(message.created_at / 1000).to_rfc822()
        ));
    }
    steps.extend(added_at_end.into_iter().map(Step::Write));

    let mut content = Vec::with_capacity(raw.len() + 512);
    for step in &steps {
        // A last field without a line ending (a header-only message) gets
        // one when a field follows it.
        if !content.is_empty() && !content.ends_with(b"\n") {
            content.extend_from_slice(b"\r\n");
        }
        match step {
            Step::Keep(bytes) => content.extend_from_slice(bytes),
            Step::Write(field) => content.extend_from_slice(field.as_bytes()),
        }
    }
    if !rest.is_empty() && !content.is_empty() && !content.ends_with(b"\n") {
        content.extend_from_slice(b"\r\n");
    }
    // The section ended at a line that is not a field: the empty line that
    // ends the header section goes before it.
    if !(rest.is_empty() || rest.starts_with(b"\r\n") || rest.starts_with(b"\n")) {
        content.extend_from_slice(b"\r\n");
    }
    content.extend_from_slice(rest);
    Rendered {
        content,
        sender_policy: policy,
    }
}

#[cfg(test)]
mod tests {
    use herald_core::{MessageId, Subject, TenantId};
    use herald_store::OnBehalf;

    use super::*;
    use crate::Transport;

    const BODY: &[u8] = b"\r\nHello,\r\n\r\nthe disk is full.\r\n";

    fn route(policy: SenderPolicy) -> Route {
        Route {
            transport: Transport::Capture,
            from: EmailAddress::parse("alerts@acme.example").unwrap(),
            from_name: Some("Acme Alerts".into()),
            reply_to: None,
            provider: None,
            config_version: None,
            sender_policy: policy,
            warnings: Vec::new(),
        }
    }

    fn message(raw: &[u8], on_behalf: bool) -> MessageContent {
        MessageContent {
            id: MessageId::new(),
            tenant_id: TenantId::new(),
            created_at: 1_764_500_000_000,
            subject: Subject::parse("x").unwrap(),
            text: None,
            html: None,
            reply_to: None,
            headers: Vec::new(),
            to: Vec::new(),
            cc: Vec::new(),
            on_behalf_of: on_behalf.then(|| OnBehalf {
                name: "Ada Lovelace".into(),
                email: EmailAddress::parse("ada@acme.example").unwrap(),
            }),
            test_provider: None,
            raw: Some(raw.to_vec()),
            attachments: Vec::new(),
            send_at: None,
        }
    }

    /// A received message: trace field, the given fields, Date and
    /// Message-ID, then [`BODY`].
    fn received(fields: &str) -> Vec<u8> {
        let mut raw = format!(
            "Received: from app.example ([192.0.2.7])\r\n\tby herald with ESMTPSA; Mon, 30 Nov 2026 18:00:00 +0000\r\n{fields}Date: Mon, 30 Nov 2026 17:59:59 +0000\r\nMessage-ID: <1@app.example>\r\nSubject: Disk full\r\n"
        )
        .into_bytes();
        raw.extend_from_slice(BODY);
        raw
    }

    fn send(raw: &[u8], on_behalf: bool, policy: SenderPolicy) -> (String, &'static str) {
        let rendered = render(raw, &message(raw, on_behalf), &route(policy));
        (
            String::from_utf8(rendered.content).unwrap(),
            rendered.sender_policy,
        )
    }

    /// The header section without the empty line, and what follows it.
    fn parts(content: &str) -> (&str, &str) {
        let at = content.find("\r\n\r\n").expect("an empty line");
        (&content[..at + 2], &content[at + 2..])
    }

    /// The fields of a header section, each with its continuation lines.
    fn fields(head: &str) -> Vec<&str> {
        split(head.as_bytes())
            .0
            .iter()
            .map(|f| std::str::from_utf8(f.bytes).unwrap())
            .collect()
    }

    /// What a mail reader shows for an address field: (name, address) pairs.
    fn decoded(content: &str, name: &str) -> Vec<(Option<String>, String)> {
        let parsed = MessageParser::new().parse(content.as_bytes()).unwrap();
        let value = parsed
            .header(name)
            .and_then(|h| h.as_address())
            .unwrap_or_else(|| panic!("no {name} in {content}"));
        value
            .iter()
            .map(|a| {
                (
                    a.name.as_deref().map(str::to_owned),
                    a.address.as_deref().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn pair(name: Option<&str>, address: &str) -> (Option<String>, String) {
        (name.map(str::to_owned), address.to_owned())
    }

    #[test]
    fn the_providers_own_from_is_sent_as_received_without_bcc_return_path_or_another_sender() {
        let raw = received(
            "Return-Path: <bounce@app.example>\r\nFrom: Alerts <ALERTS@acme.example>\r\nTo: ops@acme.example\r\nbcc: hidden@acme.example,\r\n  other@acme.example\r\nSender: app@acme.example\r\nResent-Bcc: audit@acme.example\r\n",
        );
        let (content, policy) = send(&raw, false, SenderPolicy::Fixed);
        assert_eq!(policy, "as received");
        let expected = String::from_utf8(raw)
            .unwrap()
            .replace("Return-Path: <bounce@app.example>\r\n", "")
            .replace("bcc: hidden@acme.example,\r\n  other@acme.example\r\n", "")
            .replace("Sender: app@acme.example\r\n", "")
            .replace("Resent-Bcc: audit@acme.example\r\n", "");
        assert_eq!(content, expected);
    }

    #[test]
    fn on_behalf_keeps_the_persons_from_and_makes_the_provider_the_only_sender() {
        let raw = received(
            "From: Ada Lovelace <ada@acme.example>\r\nSender: app@app.example\r\nTo: ops@acme.example\r\n",
        );
        let (content, policy) = send(&raw, true, SenderPolicy::OnBehalf);
        assert_eq!(policy, "on_behalf");
        let (head, body) = parts(&content);
        assert_eq!(body.as_bytes(), BODY);
        let fields = fields(head);
        assert!(fields[0].starts_with("Received: from app.example"));
        assert_eq!(fields[1], "From: Ada Lovelace <ada@acme.example>\r\n");
        assert_eq!(fields[2], "Sender: Acme Alerts <alerts@acme.example>\r\n");
        assert_eq!(fields[3], "To: ops@acme.example\r\n");
        assert_eq!(fields.len(), 7, "{head}");
    }

    #[test]
    fn under_the_fixed_policy_from_is_the_providers_and_the_original_the_reply_to() {
        let raw = received(
            "DKIM-Signature: v=1; a=rsa-sha256; d=acme.example; h=from;\r\n b=abc\r\nFrom: Ada Lovelace <ada@acme.example>\r\nSender: app@app.example\r\nTo: ops@acme.example\r\n",
        );
        // A person under the fixed policy, and mail from anyone else, alike;
        // the client's signature of the From it had goes with it.
        for on_behalf in [true, false] {
            let (content, policy) = send(&raw, on_behalf, SenderPolicy::Fixed);
            assert_eq!(policy, "fixed, reply-to the original From");
            let (head, body) = parts(&content);
            assert_eq!(body.as_bytes(), BODY);
            let fields = fields(head);
            assert!(fields[0].starts_with("Received: from app.example"));
            assert_eq!(fields[1], "From: Acme Alerts <alerts@acme.example>\r\n");
            assert_eq!(fields[2], "Reply-To: Ada Lovelace <ada@acme.example>\r\n");
            assert_eq!(fields[3], "To: ops@acme.example\r\n");
            assert!(!head.contains("Sender:"), "{head}");
            assert!(!head.contains("DKIM-Signature"), "{head}");
        }
    }

    #[test]
    fn the_clients_reply_to_is_kept() {
        let raw = received(
            "From: app@app.example\r\nREPLY-TO: Help Desk <help@app.example>\r\nTo: ops@acme.example\r\n",
        );
        let (content, policy) = send(&raw, false, SenderPolicy::OnBehalf);
        assert_eq!(policy, "fixed");
        let (head, _) = parts(&content);
        let fields = fields(head);
        assert_eq!(fields[1], "From: Acme Alerts <alerts@acme.example>\r\n");
        assert_eq!(fields[2], "REPLY-TO: Help Desk <help@app.example>\r\n");
        assert_eq!(head.to_lowercase().matches("reply-to").count(), 1, "{head}");
    }

    #[test]
    fn a_folded_encoded_from_is_read_whole_and_written_again_encoded() {
        let raw = received(
            "From:\r\n =?utf-8?q?J=C3=BCrgen_M=C3=BCller?=\r\n\t<juergen@app.example>\r\nTo: ops@acme.example\r\n",
        );
        let (content, policy) = send(&raw, false, SenderPolicy::Fixed);
        assert_eq!(policy, "fixed, reply-to the original From");
        let (head, _) = parts(&content);
        // No continuation line of the old field is left behind.
        assert!(!head.contains("\t<juergen"), "{head}");
        assert_eq!(
            decoded(&content, "Reply-To"),
            vec![pair(Some("Jürgen Müller"), "juergen@app.example")]
        );
        assert_eq!(
            decoded(&content, "From"),
            vec![pair(Some("Acme Alerts"), "alerts@acme.example")]
        );
        assert!(head.contains("Reply-To: =?utf-8?"), "{head}");
    }

    #[test]
    fn a_from_that_names_the_provider_among_others_is_not_the_providers() {
        for from in [
            "alerts@acme.example, ada@acme.example",
            "Team: alerts@acme.example;",
        ] {
            let raw = received(&format!("From: {from}\r\nTo: ops@acme.example\r\n"));
            let (content, policy) = send(&raw, false, SenderPolicy::Fixed);
            assert_eq!(policy, "fixed, reply-to the original From", "{from}");
            let (head, _) = parts(&content);
            assert_eq!(
                fields(head)[1],
                "From: Acme Alerts <alerts@acme.example>\r\n"
            );
            assert_eq!(decoded(&content, "From").len(), 1);
            assert!(!decoded(&content, "Reply-To").is_empty());
        }
    }

    #[test]
    fn a_message_without_from_gets_the_providers_message_id_and_date() {
        let raw = b"Received: from app.example by herald; Mon, 30 Nov 2026 18:00:00 +0000\r\nSubject: x\r\n\r\nbody\r\n";
        let message = message(raw, false);
        let rendered = render(raw, &message, &route(SenderPolicy::Fixed));
        assert_eq!(rendered.sender_policy, "fixed");
        let content = String::from_utf8(rendered.content).unwrap();
        let (head, body) = parts(&content);
        assert_eq!(body, "\r\nbody\r\n");
        let fields = fields(head);
        assert!(fields[0].starts_with("Received:"));
        assert_eq!(fields[1], "Subject: x\r\n");
        assert_eq!(fields[2], "From: Acme Alerts <alerts@acme.example>\r\n");
        assert_eq!(
            fields[3],
            format!("Message-ID: <{}@acme.example>\r\n", message.id)
        );
        assert_eq!(fields[4], "Date: Sun, 30 Nov 2025 10:53:20 +0000\r\n");
        assert_eq!(fields.len(), 5);
    }

    #[test]
    fn a_line_that_is_not_a_field_ends_the_header_section_before_the_new_fields() {
        let raw = received("hello no header\r\nFrom: ceo@bank.example\r\n\r\nbody\r\n");
        let (content, _) = send(&raw, false, SenderPolicy::Fixed);
        let (head, body) = content.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains("From: Acme Alerts <alerts@acme.example>"),
            "{head}"
        );
        assert!(
            head.contains("Message-ID:") && head.contains("Date:"),
            "{head}"
        );
        assert!(!head.contains("hello"), "{head}");
        assert!(
            body.starts_with("hello no header\r\nFrom: ceo@bank.example"),
            "{body}"
        );
    }

    #[test]
    fn a_second_from_or_mailbox_is_never_sent_on_behalf_of_a_person() {
        for froms in [
            "From: CEO <ceo@bank.example>\r\nFrom: ada@acme.example\r\n",
            "From: ada@acme.example\r\nFrom: CEO <ceo@bank.example>\r\n",
            "From: ada@acme.example, ceo@bank.example\r\n",
            "From: CEO <ceo@bank.example>\r\n",
        ] {
            let (content, policy) = send(&received(froms), true, SenderPolicy::OnBehalf);
            assert_ne!(policy, "on_behalf", "{froms}");
            let (head, _) = parts(&content);
            assert_eq!(
                fields(head)
                    .iter()
                    .filter(|f| f.starts_with("From:"))
                    .count(),
                1,
                "{head}"
            );
            assert!(
                head.contains("From: Acme Alerts <alerts@acme.example>"),
                "{head}"
            );
        }
    }

    #[test]
    fn the_providers_from_keeps_only_the_providers_sender() {
        let raw = received("From: alerts@acme.example\r\nSender: ceo@bank.example\r\n");
        let (content, policy) = send(&raw, false, SenderPolicy::Fixed);
        assert_eq!(policy, "as received");
        assert!(!content.contains("ceo@bank.example"), "{content}");
    }

    #[test]
    fn the_body_is_sent_byte_for_byte() {
        let mut raw =
            b"From: app@app.example\r\nContent-Type: text/plain; charset=latin1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                .to_vec();
        let mut body = b"Gr\xfc\xdfe \xff\xfe\x00 aus K\xf6ln\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'x', 5000));
        body.extend_from_slice(b"\r\n\r\nFrom: not a header\r\nBcc: nor this\r\n.\r\n\r\n");
        raw.extend_from_slice(&body);
        let rendered = render(&raw, &message(&raw, false), &route(SenderPolicy::Fixed));
        let content = rendered.content;
        let at = content.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        assert_eq!(&content[at + 4..], &body[..]);
        let head = std::str::from_utf8(&content[..at + 2]).unwrap();
        assert!(
            head.contains("Content-Transfer-Encoding: 8bit\r\n"),
            "{head}"
        );
        assert!(head.contains("Reply-To: <app@app.example>\r\n"), "{head}");
    }

    #[test]
    fn a_header_only_message_stays_without_an_empty_line() {
        for ending in ["", "\r\n"] {
            let raw = format!("From: alerts@acme.example\r\nSubject: ping{ending}");
            let (content, policy) = send(raw.as_bytes(), false, SenderPolicy::Fixed);
            assert_eq!(policy, "as received");
            assert!(!content.contains("\r\n\r\n"), "{content:?}");
            let fields = fields(&content);
            assert_eq!(fields[0], "From: alerts@acme.example\r\n");
            assert_eq!(fields[1], "Subject: ping\r\n");
            assert!(fields[2].starts_with("Message-ID: <"));
            assert!(fields[3].starts_with("Date: "));
            assert!(content.ends_with("\r\n"));
        }
    }

    #[test]
    fn a_client_message_id_and_date_are_kept_whatever_their_case() {
        let raw = b"from: alerts@acme.example\r\nmessage-id: <a@b>\r\nDATE: Mon, 30 Nov 2026 17:59:59 +0000\r\n\r\nx";
        let (content, _) = send(raw, false, SenderPolicy::Fixed);
        assert_eq!(content.as_bytes(), raw);
    }

    #[test]
    fn a_message_with_no_header_at_all_gets_the_providers_fields() {
        let raw = b"\r\njust a body\r\n";
        let (content, policy) = send(raw, false, SenderPolicy::Fixed);
        assert_eq!(policy, "fixed");
        assert!(content.starts_with("From: Acme Alerts <alerts@acme.example>\r\nMessage-ID: <"));
        assert!(content.ends_with("\r\n\r\njust a body\r\n"), "{content:?}");
    }
}
