//! Property-based proof of the header-injection acceptance line: arbitrary strings in every
//! header and address field never put CR, LF or NUL into what Herald stores or sends.
//!
//! One node, one test SMTP server and one tenant serve every case, so the cases are cheap
//! enough to run by the hundred. proptest's runner is synchronous, so the test leaves its
//! worker thread to the runtime with `block_in_place` and drives each case with
//! `Handle::block_on`. Each case is checked completely before the next one starts (stored
//! object, SMTP envelope and header section), so that a failure shrinks to a minimal input.
//! Every field group runs to its end and the test fails once with all the minimal inputs.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use herald_testsmtp::{ReceivedMessage, TestSmtpServer};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::runtime::Handle;

use crate::helpers::*;

/// Cases per field group. An accepted case waits for a real SMTP delivery, which takes about
/// ten milliseconds on a small machine, so both groups together take a few seconds, and well
/// under 30 even when a failure has to be shrunk.
const CASES: u32 = 256;

/// The fixed address, display name and fallback recipient `use_smtp_server` configures.
const FROM: &str = "alerts@acme.example";
const FALLBACK: &str = "ops@acme.example";

/// Fragments that end a header line or an SMTP command early, alone and as the start of an
/// injection.
const BREAKS: &[&str] = &[
    "\r",
    "\n",
    "\r\n",
    "\0",
    "\n\r",
    "\r\n ",
    "\r\nBcc: victim@evil.example",
    "\r\n\r\n",
    "\r\n.\r\n",
    "\nRCPT TO:<victim@evil.example>",
    "a@b.example>\r\nRCPT TO:<victim@evil.example",
];

/// Fragments without CR, LF or NUL that still look like syntax to a mail parser: address
/// punctuation, header and SMTP lookalikes, Unicode line separators and non-ASCII text.
/// Herald must accept these as literal text where the field allows them and must never
/// turn them into a line break.
const LOOKALIKES: &[&str] = &[
    ".",
    "a@b.example",
    ">",
    "<",
    ":",
    " ",
    "\t",
    ",",
    ";",
    "\"",
    "\\",
    "(",
    ")",
    "@",
    "RCPT TO:<x@y.example>",
    "Bcc: victim@evil.example",
    "%0D%0A",
    "\\r\\n",
    "\u{2028}",
    "\u{2029}",
    "é",
    "日本語",
    "🕴",
    "\u{202e}",
    "\u{feff}",
];

/// Fragments without CR, LF or NUL that header text must not hold all the same: other
/// control characters, and encoded words (which decode to CRLF here).
const REFUSED_LOOKALIKES: &[&str] = &[
    "=?utf-8?q?=0D=0A?=",
    "=?utf-8?b?DQpCY2M6IHZpY3RpbUBldmlsLmV4YW1wbGU=?=",
    "=?utf-8?q?=0D=0ABcc:_victim@evil.example?=",
    "\u{85}",
    "\u{b}",
    "\u{c}",
    "\u{1b}",
    "\u{7f}",
];

/// Header names that are valid or almost valid and could confuse the writer.
const NAME_LOOKALIKES: &[&str] = &[
    "Bcc",
    "bcc",
    "X-A\r\nBcc",
    "X-A\nBcc",
    "X-\0",
    "X A",
    "X:A",
    "",
    "Reply-To",
    "From",
    "MIME-Version",
    "Mime-Version",
    "Content-Disposition",
    "X-É",
    "RCPT TO",
];

fn has_break(s: &str) -> bool {
    s.contains(['\r', '\n', '\0'])
}

/// A control character other than TAB (ESC, VT, FF, DEL, C1 …), which no header field may hold.
/// Property 2 for an accepted request: none of its fields held a line break
/// (CR, LF) or another control character; the error names the first that did.
fn no_break_or_control<'a>(fields: impl Iterator<Item = &'a String>) -> Result<(), String> {
    let fields: Vec<&String> = fields.collect();
    if let Some(field) = fields.iter().find(|f| has_break(f)) {
        return Err(format!("accepted a field holding a line break: {field:?}"));
    }
    if let Some(field) = fields.iter().find(|f| has_control(f)) {
        return Err(format!(
            "accepted a field holding a control character: {field:?}"
        ));
    }
    Ok(())
}

/// The id a success answered with (`status` names it in the error).
fn id_in(reply: &Reply, status: &str) -> Result<String, String> {
    reply.body["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("a {status} without an id: {}", reply.body))
}

fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control() && c != '\t')
}

fn concat(pieces: Vec<String>) -> String {
    pieces.concat()
}

fn concat_strs(pieces: Vec<&str>) -> String {
    pieces.concat()
}

/// One fragment of text that contains no CR, LF or NUL.
fn safe_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(LOOKALIKES).prop_map(str::to_owned),
        3 => "[a-zA-Z0-9]{1,12}",
        // Control characters other than TAB are refused; `any_piece` tries them.
        2 => any::<char>()
            .prop_filter("no control character", |c| !c.is_control() || *c == '\t')
            .prop_map(String::from),
        // Long runs exercise the writer's folding and encoding decisions.
        1 => Just("x".repeat(80)),
        1 => Just("ab ".repeat(30)),
        1 => Just("é".repeat(40)),
    ]
}

/// One fragment of text that may hold CR, LF or NUL, or another control character or an
/// encoded word.
fn any_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => select(BREAKS).prop_map(str::to_owned),
        1 => select(REFUSED_LOOKALIKES).prop_map(str::to_owned),
        3 => safe_piece(),
        1 => any::<char>().prop_map(String::from),
    ]
}

/// Text for a subject, header value or display name: mostly free of line breaks (so that
/// most messages are accepted and reach the wire), sometimes carrying one.
fn text_field() -> impl Strategy<Value = String> {
    let safe = vec(safe_piece(), 0..8).prop_map(concat);
    let dangerous = prop_oneof![
        vec(any_piece(), 1..8).prop_map(concat),
        vec(any::<char>(), 0..24).prop_map(|cs| cs.into_iter().collect()),
        (
            vec(safe_piece(), 0..3),
            select(BREAKS),
            vec(safe_piece(), 0..3)
        )
            .prop_map(|(a, b, c)| format!("{}{b}{}", a.concat(), c.concat())),
        blank_with_break(),
    ];
    prop_oneof![12 => safe, 1 => dangerous]
}

/// Whitespace and line breaks only. Optional provider fields read a blank value as "none",
/// and a value holding a line break must be refused rather than read as blank.
fn blank_with_break() -> impl Strategy<Value = String> {
    vec(select(&[" ", "\t", "\r", "\n", "\r\n", "\0"][..]), 1..4)
        .prop_map(concat_strs)
        .prop_filter("holds a line break", |s| has_break(s))
}

/// A valid mailbox, sometimes padded with whitespace Herald trims.
fn valid_address() -> impl Strategy<Value = String> {
    (
        "[a-z0-9]{1,10}(\\.[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,6})?",
        "[a-z0-9]{1,10}(-[a-z0-9]{1,4})?\\.example",
        select(&["", "", "", " ", "\t", "\u{2028}"][..]),
    )
        .prop_map(|(local, domain, pad)| format!("{pad}{local}@{domain}{pad}"))
}

/// An address field: mostly valid, sometimes a valid address with a fragment spliced in,
/// sometimes arbitrary text.
fn address_field() -> impl Strategy<Value = String> {
    let spliced = (
        valid_address(),
        prop_oneof![select(BREAKS), select(LOOKALIKES)],
        any::<Index>(),
    )
        .prop_map(|(address, piece, at)| {
            let boundaries: Vec<usize> = (0..=address.len())
                .filter(|&i| address.is_char_boundary(i))
                .collect();
            let at = boundaries[at.index(boundaries.len())];
            format!("{}{piece}{}", &address[..at], &address[at..])
        });
    let dangerous = prop_oneof![
        vec(any_piece(), 1..6).prop_map(concat),
        vec(any::<char>(), 0..24).prop_map(|cs| cs.into_iter().collect()),
    ];
    prop_oneof![20 => valid_address(), 3 => spliced, 1 => dangerous, 1 => blank_with_break()]
}

/// A custom header name: usually valid, often at or just past the 64-character limit
/// (longer names once let the writer wrap before the value, which then started a line of
/// its own), sometimes reserved, malformed or broken by a line break.
fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => "X-[!-9;-~]{1,12}",
        3 => "X-[A-Za-z0-9]{58,62}",
        1 => "X-[A-Za-z0-9]{63,74}",
        1 => select(NAME_LOOKALIKES).prop_map(str::to_owned),
        1 => vec(any_piece(), 1..4).prop_map(concat),
    ]
}

/// A submission with every header and address field filled from the strategies above.
#[derive(Clone, Debug)]
struct MessageCase {
    subject: String,
    to: Vec<String>,
    cc: Vec<String>,
    bcc: Vec<String>,
    reply_to: Option<String>,
    on_behalf_of: Option<String>,
    headers: BTreeMap<String, String>,
}

impl MessageCase {
    /// Every header and address field of the case (header names included).
    fn fields(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.subject)
            .chain(&self.to)
            .chain(&self.cc)
            .chain(&self.bcc)
            .chain(&self.reply_to)
            .chain(&self.on_behalf_of)
            .chain(self.headers.iter().flat_map(|(n, v)| [n, v]))
    }

    fn body(&self) -> Value {
        let mut body = json!({
            "subject": self.subject, "cc": self.cc, "bcc": self.bcc,
            "headers": self.headers, "text": "fixed body",
        });
        if !self.to.is_empty() {
            body["to"] = json!(self.to);
        }
        if let Some(reply_to) = &self.reply_to {
            body["reply_to"] = json!(reply_to);
        }
        if let Some(on_behalf_of) = &self.on_behalf_of {
            body["on_behalf_of"] = json!(on_behalf_of);
        }
        body
    }
}

fn message_case() -> impl Strategy<Value = MessageCase> {
    (
        text_field(),
        vec(address_field(), 0..3),
        vec(address_field(), 0..2),
        vec(address_field(), 0..2),
        proptest::option::of(address_field()),
        proptest::option::of(address_field()),
        vec((header_name(), text_field()), 0..4),
    )
        .prop_map(
            |(subject, to, cc, bcc, reply_to, on_behalf_of, headers)| MessageCase {
                subject,
                to,
                cc,
                bcc,
                reply_to,
                on_behalf_of,
                headers: headers.into_iter().collect(),
            },
        )
}

/// A provider with every header and address field filled from the strategies above.
#[derive(Clone, Debug)]
struct ProviderCase {
    from_name: Option<String>,
    from_address: String,
    reply_to: Option<String>,
    fallback_recipient: Option<String>,
}

impl ProviderCase {
    fn fields(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.from_address)
            .chain(&self.from_name)
            .chain(&self.reply_to)
            .chain(&self.fallback_recipient)
    }
}

fn provider_case() -> impl Strategy<Value = ProviderCase> {
    (
        proptest::option::of(text_field()),
        address_field(),
        proptest::option::of(address_field()),
        proptest::option::of(address_field()),
    )
        .prop_map(
            |(from_name, from_address, reply_to, fallback_recipient)| ProviderCase {
                from_name,
                from_address,
                reply_to,
                fallback_recipient,
            },
        )
}

/// What one field group shares: the node, the server, the tenant, and counts for the summary.
struct Harness<'a> {
    app: &'a TestApp,
    smtp: &'a TestSmtpServer,
    tenant: &'a TestTenant,
    server_id: String,
    accepted: Cell<usize>,
    refused: Cell<usize>,
    delivered: Cell<usize>,
    created: Cell<usize>,
}

/// An answer as a client sees it, with its content type.
struct Reply {
    status: StatusCode,
    content_type: String,
    body: Value,
}

async fn send(app: &TestApp, method: Method, path: &str, token: &str, body: &Value) -> Reply {
    let response = app
        .client
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("the request reaches the node");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.unwrap_or_default();
    Reply {
        status,
        content_type,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

/// Property 1: the answer is the expected success or a 400/422 problem, never anything else.
/// Returns whether the request was accepted.
fn classify(reply: &Reply, success: StatusCode) -> Result<bool, String> {
    if reply.status == success {
        return Ok(true);
    }
    if reply.status != StatusCode::BAD_REQUEST && reply.status != StatusCode::UNPROCESSABLE_ENTITY {
        return Err(format!(
            "answered {} (expected {success}, 400 or 422): {}",
            reply.status, reply.body
        ));
    }
    let is_problem = reply.content_type.starts_with("application/problem+json")
        && reply.body["status"] == reply.status.as_u16()
        && reply.body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:herald:problem:"));
    if !is_problem {
        return Err(format!(
            "answered {} without a problem+json body ({}): {}",
            reply.status, reply.content_type, reply.body
        ));
    }
    Ok(false)
}

/// Property 3: no string in a stored object read back over the API holds CR, LF or NUL.
/// Attempt responses and bodies are not header fields, so they are not examined.
fn find_breaks(value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::String(s) if has_break(s) => found.push(format!("{path} = {s:?}")),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                find_breaks(item, &format!("{path}[{i}]"), found);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                if has_break(key) {
                    found.push(format!("{path} has the key {key:?}"));
                }
                if !matches!(key.as_str(), "response" | "text" | "html") {
                    find_breaks(item, &format!("{path}.{key}"), found);
                }
            }
        }
        _ => {}
    }
}

fn stored_without_breaks(what: &str, value: &Value) -> Result<(), String> {
    let mut found = Vec::new();
    find_breaks(value, "", &mut found);
    if found.is_empty() {
        Ok(())
    } else {
        Err(format!("the stored {what} holds a line break: {found:?}"))
    }
}

/// What the wire must show for one accepted message.
struct Expected {
    mail_from: String,
    recipients: BTreeSet<String>,
    /// Header fields that must appear exactly once, lower-cased.
    required: BTreeSet<String>,
    /// Header fields that may appear at most once, lower-cased (the required ones included).
    allowed: BTreeSet<String>,
    /// The provider's address, which the From field must carry in angle brackets.
    from: String,
}

impl Expected {
    fn new(mail_from: &str, recipients: BTreeSet<String>) -> Self {
        // Auto-Submitted is Herald's unless the submitter set it: once either way.
        let required: BTreeSet<String> = [
            "from",
            "subject",
            "date",
            "message-id",
            "mime-version",
            "auto-submitted",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        let mut allowed = required.clone();
        allowed.extend(
            [
                "to",
                "cc",
                "reply-to",
                "content-type",
                "content-transfer-encoding",
            ]
            .into_iter()
            .map(str::to_owned),
        );
        Expected {
            mail_from: mail_from.to_owned(),
            recipients,
            required,
            allowed,
            from: mail_from.to_owned(),
        }
    }

    fn require(&mut self, name: &str) {
        self.required.insert(name.to_ascii_lowercase());
        self.allowed.insert(name.to_ascii_lowercase());
    }
}

/// Characters that must never appear in an envelope path, which Herald writes inside `<>`.
fn bad_path(s: &str) -> bool {
    s.contains(['\r', '\n', '\0', '<', '>'])
}

/// Property 4: the header section is CRLF-terminated lines, each a continuation or one of
/// the fields Herald writes or was asked to write, each field at most once, and the envelope
/// carries exactly the accepted addresses and nothing that could end a command.
fn check_wire(received: &[ReceivedMessage], expected: &Expected) -> Result<(), String> {
    let mut rcpt = BTreeSet::new();
    for message in received {
        if bad_path(&message.mail_from) || message.mail_from != expected.mail_from {
            return Err(format!(
                "MAIL FROM:<{:?}>, expected {:?}",
                message.mail_from, expected.mail_from
            ));
        }
        for address in &message.rcpt_to {
            if bad_path(address) || !expected.recipients.contains(address) {
                return Err(format!(
                    "RCPT TO:<{address:?}> is not one of {:?}",
                    expected.recipients
                ));
            }
            rcpt.insert(address.clone());
        }
        check_header_section(message, expected)?;
    }
    if rcpt != expected.recipients {
        return Err(format!(
            "the envelope reached {rcpt:?}, expected {:?}",
            expected.recipients
        ));
    }
    Ok(())
}

fn check_header_section(message: &ReceivedMessage, expected: &Expected) -> Result<(), String> {
    let raw = &message.raw_data;
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err("no blank line ends the header section".into());
    };
    let head = &raw[..end + 2];
    let shown = String::from_utf8_lossy(head);
    if head.contains(&0) {
        return Err(format!("the header section holds NUL: {shown:?}"));
    }
    for (i, &b) in head.iter().enumerate() {
        let bare_cr = b == b'\r' && head.get(i + 1) != Some(&b'\n');
        let bare_lf = b == b'\n' && (i == 0 || head[i - 1] != b'\r');
        if bare_cr || bare_lf {
            return Err(format!(
                "the header section holds a bare CR or LF at {i}: {shown:?}"
            ));
        }
    }
    // UTF-8 in the header section (an internationalised address) is allowed
    // only in a transaction opened with SMTPUTF8 (RFC 6531, RFC 6532).
    if !head.is_ascii() && !message.smtputf8 {
        return Err(format!(
            "the header section is not 7-bit, and SMTPUTF8 was not used: {shown:?}"
        ));
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut from = String::new();
    let mut current = None::<String>;
    for line in shown[..shown.len() - 2].split("\r\n") {
        if line.len() > 998 {
            return Err(format!("a header line is longer than 998 octets: {line:?}"));
        }
        if line.starts_with([' ', '\t']) {
            if current.is_none() {
                return Err(format!(
                    "the header section starts with a continuation: {shown:?}"
                ));
            }
            if current.as_deref() == Some("from") {
                from.push_str(line);
            }
            continue;
        }
        let name = line
            .split_once(':')
            .map(|(name, _)| name)
            .filter(|name| !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b)))
            .ok_or_else(|| {
                format!("the line {line:?} is neither a header field nor a continuation: {shown:?}")
            })?
            .to_ascii_lowercase();
        if !expected.allowed.contains(&name) {
            return Err(format!("an unexpected header field {line:?}: {shown:?}"));
        }
        *seen.entry(name.clone()).or_default() += 1;
        if name == "from" {
            from.push_str(&line[5..]);
        }
        current = Some(name);
    }
    if let Some((name, _)) = seen.iter().find(|(_, count)| **count > 1) {
        return Err(format!(
            "the field {name:?} appears more than once: {shown:?}"
        ));
    }
    if let Some(missing) = expected.required.iter().find(|n| !seen.contains_key(*n)) {
        return Err(format!(
            "the field {missing:?} is missing from the header section: {shown:?}"
        ));
    }
    if !from.trim_end().ends_with(&format!("<{}>", expected.from)) {
        return Err(format!(
            "From does not end with <{}>: {from:?}",
            expected.from
        ));
    }
    Ok(())
}

impl Harness<'_> {
    /// Waits for the message to be sent or failed, then returns its stored view and what the
    /// test server received for it (found by the message id Herald writes into Message-ID).
    async fn delivered(&self, id: &str) -> Result<(Value, Vec<ReceivedMessage>), String> {
        let start = tokio::time::Instant::now();
        let message = loop {
            let message = self.app.message(self.tenant, id).await;
            if message["status"] == "sent" || message["status"] == "failed" {
                break message;
            }
            if start.elapsed() > DEADLINE {
                return Err(format!("message {id} is still {}", message["status"]));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if message["status"] != "sent" {
            return Err(format!(
                "the test server accepts everything, yet the message failed: {message}"
            ));
        }
        let received: Vec<ReceivedMessage> = self
            .smtp
            .messages()
            .into_iter()
            .filter(|m| m.raw_data.windows(id.len()).any(|w| w == id.as_bytes()))
            .collect();
        if received.is_empty() {
            return Err(format!(
                "message {id} is sent but did not reach the test server"
            ));
        }
        self.delivered.set(self.delivered.get() + 1);
        Ok((message, received))
    }

    fn count(&self, accepted: bool) {
        let counter = if accepted {
            &self.accepted
        } else {
            &self.refused
        };
        counter.set(counter.get() + 1);
    }

    async fn message_case(&self, case: MessageCase) -> Result<(), String> {
        let path = format!("/v1/tenants/{}/messages", self.tenant.slug);
        let reply = send(
            self.app,
            Method::POST,
            &path,
            &self.tenant.sender,
            &case.body(),
        )
        .await;
        let accepted = classify(&reply, StatusCode::ACCEPTED)?;
        self.count(accepted);
        if !accepted {
            return Ok(());
        }
        // Property 2: a field with CR, LF or NUL is refused, whatever else the request holds.
        no_break_or_control(case.fields())?;
        let id = id_in(&reply, "202")?;
        stored_without_breaks("message", &self.app.message(self.tenant, &id).await)?;
        let (stored, received) = self.delivered(&id).await?;
        stored_without_breaks("message", &stored)?;

        let mut recipients: BTreeSet<String> = case
            .to
            .iter()
            .chain(&case.cc)
            .chain(&case.bcc)
            .map(|a| a.trim().to_owned())
            .collect();
        let mut expected = Expected::new(FROM, BTreeSet::new());
        if recipients.is_empty() {
            recipients.insert(FALLBACK.to_owned());
            expected.require("to");
        }
        expected.recipients = recipients;
        if !case.to.is_empty() {
            expected.require("to");
        }
        if !case.cc.is_empty() {
            expected.require("cc");
        }
        if case.reply_to.is_some() {
            expected.require("reply-to");
        }
        for name in case.headers.keys() {
            expected.require(name);
        }
        check_wire(&received, &expected)
    }

    async fn provider_case(&self, case: ProviderCase) -> Result<(), String> {
        let n = self.created.get();
        self.created.set(n + 1);
        let mut body = json!({
            "name": format!("fuzz-{n}"), "smtp_server_id": self.server_id,
            "from_address": case.from_address,
        });
        for (field, value) in [
            ("from_name", &case.from_name),
            ("reply_to", &case.reply_to),
            ("fallback_recipient", &case.fallback_recipient),
        ] {
            if let Some(value) = value {
                body[field] = json!(value);
            }
        }
        let path = format!("/v1/tenants/{}/providers", self.tenant.slug);
        let reply = send(self.app, Method::POST, &path, &self.tenant.admin, &body).await;
        let accepted = classify(&reply, StatusCode::CREATED)?;
        self.count(accepted);
        if !accepted {
            return Ok(());
        }
        // Property 2, as for messages. This includes the optional fields, where Herald
        // reads a blank value as "none": a line break is not blank, it is a refusal.
        no_break_or_control(case.fields())?;
        let id = id_in(&reply, "201")?;
        let (status, provider) = self
            .app
            .get(&format!("{path}/{id}"), &self.tenant.admin)
            .await;
        if status != StatusCode::OK {
            return Err(format!(
                "reading the provider back answered {status}: {provider}"
            ));
        }
        stored_without_breaks("provider", &provider)?;

        // Send one message through the provider, to its fallback recipient when it has one,
        // so that every provider field that reaches the wire is checked there too.
        let (status, props) = self
            .app
            .put_as_admin(
                self.tenant,
                "properties",
                json!({"notification_provider_id": id}),
            )
            .await;
        if status != StatusCode::OK {
            return Err(format!(
                "activating the provider answered {status}: {props}"
            ));
        }
        // A change of provider reaches the nodes within the staleness bound;
        // the refresh makes it effective at once.
        let (status, props) = self
            .app
            .call(
                Method::POST,
                &format!("/v1/tenants/{}/properties/refresh", self.tenant.slug),
                Some(&self.tenant.admin),
                None,
            )
            .await;
        if status != StatusCode::OK {
            return Err(format!(
                "refreshing the properties answered {status}: {props}"
            ));
        }
        let from_address = provider["from_address"].as_str().unwrap_or_default();
        let fallback = provider["fallback_recipient"].as_str();
        let mut message = json!({"subject": "Provider case", "text": "fixed body"});
        let recipient = match fallback {
            Some(fallback) => fallback.to_owned(),
            None => {
                message["to"] = json!(["user@acme.example"]);
                "user@acme.example".to_owned()
            }
        };
        let message_id = self.app.submit(self.tenant, message).await;
        let (_, received) = self.delivered(&message_id).await?;
        let mut expected = Expected::new(from_address, [recipient].into());
        expected.require("to");
        if provider["reply_to"].is_string() {
            expected.require("reply-to");
        }
        check_wire(&received, &expected)
    }

    fn summary(&self, group: &str) -> String {
        format!(
            "{group}: {} accepted and {} refused runs (shrinking included), \
             {} delivered and checked on the wire",
            self.accepted.get(),
            self.refused.get(),
            self.delivered.get()
        )
    }
}

/// Runs one field group with its own deterministic runner; returns the minimal failure.
fn run_group<S: Strategy>(
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), String>,
) -> Option<String> {
    let config = Config {
        cases: CASES,
        max_shrink_iters: 512,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    match runner.run(&strategy, |case| test(case).map_err(TestCaseError::fail)) {
        Ok(()) => None,
        Err(TestError::Fail(why, case)) => Some(format!("{why}\nminimal input: {case:#?}")),
        Err(TestError::Abort(why)) => Some(format!("aborted: {why}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_header_or_address_field_stores_or_sends_a_line_break() {
    let app = spawn_app().await;
    let smtp = TestSmtpServer::start().await;
    let tenant = app.tenant("fuzz").await;
    let provider = app.use_smtp_server(&tenant, smtp.port()).await;
    let (_, provider) = app
        .get(
            &format!("/v1/tenants/fuzz/providers/{provider}"),
            &tenant.admin,
        )
        .await;
    let server_id = provider["smtp_server_id"].as_str().unwrap().to_owned();
    let harness = || Harness {
        app: &app,
        smtp: &smtp,
        tenant: &tenant,
        server_id: server_id.clone(),
        accepted: Cell::new(0),
        refused: Cell::new(0),
        delivered: Cell::new(0),
        created: Cell::new(0),
    };
    let handle = Handle::current();
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut summaries = Vec::new();

    // The message group runs first: the provider group changes the tenant's active provider.
    let messages = harness();
    tokio::task::block_in_place(|| {
        if let Some(failure) = run_group(message_case(), |case| {
            handle.block_on(messages.message_case(case))
        }) {
            failures.push(format!("messages: {failure}"));
        }
    });
    summaries.push(messages.summary("messages"));

    let providers = harness();
    tokio::task::block_in_place(|| {
        if let Some(failure) = run_group(provider_case(), |case| {
            handle.block_on(providers.provider_case(case))
        }) {
            failures.push(format!("providers: {failure}"));
        }
    });
    summaries.push(providers.summary("providers"));

    println!("{} in {:.1?}", summaries.join("; "), started.elapsed());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // A strategy that only ever produced refusals, or only acceptances, would prove little.
    for group in [&messages, &providers] {
        assert!(
            group.accepted.get() >= CASES as usize / 5
                && group.refused.get() >= CASES as usize / 10,
            "{}",
            summaries.join("; ")
        );
    }
}
