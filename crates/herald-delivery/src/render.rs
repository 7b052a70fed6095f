//! Turns a stored message and the route it takes into RFC 5322 bytes.

use herald_core::{EmailAddress, Mailbox, SenderPolicy};
use herald_store::MessageContent;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::text::Text;

use crate::Route;

fn address_list(list: &[Mailbox]) -> Address<'_> {
    Address::new_list(
        list.iter()
            .map(|m| mailbox(m.name.as_ref().map(AsRef::as_ref), &m.address))
            .collect(),
    )
}

/// A message ready for the wire, and which sender policy shaped its From.
pub struct Rendered {
    pub content: Vec<u8>,
    /// `fixed`; `fixed, reply-to the person`; or `on_behalf`.
    pub sender_policy: &'static str,
}

fn mailbox<'a>(name: Option<&'a str>, address: &'a EmailAddress) -> Address<'a> {
    Address::new_address(name, address.as_ref())
}

/// Writes the message as the provider sends it.
///
/// From is the provider's address, Reply-To the message's own or else the
/// provider's. For a message sent on behalf of a person, the `on_behalf`
/// policy makes the person the From and the provider the Sender (RFC 5322
/// 3.6.2); the `fixed` policy keeps the provider's From and makes the person
/// the Reply-To, for relays that refuse foreign From addresses.
///
/// Every value was validated when the message was accepted, and mail-builder
/// encodes non-ASCII text as encoded words and long bodies as quoted-printable
/// or base64, so no line exceeds the RFC 5322 limit.
pub fn render(message: &MessageContent, route: &Route) -> Rendered {
    let provider = mailbox(route.from_name.as_deref(), &route.from);
    let mut reply_to = message
        .reply_to
        .as_ref()
        .or(route.reply_to.as_ref())
        .map(|a| mailbox(None, a));
    let (from, sender, sender_policy) = match (&message.on_behalf_of, route.sender_policy) {
        (None, _) => (provider, None, "fixed"),
        (Some(person), SenderPolicy::OnBehalf) => (
            mailbox(Some(person.name.as_str()), &person.email),
            Some(provider),
            "on_behalf",
        ),
        (Some(person), SenderPolicy::Fixed) => {
            if message.reply_to.is_none() {
                reply_to = Some(mailbox(Some(person.name.as_str()), &person.email));
            }
            (provider, None, "fixed, reply-to the person")
        }
    };
    let mut builder = MessageBuilder::new()
        .from(from)
        .subject(message.subject.as_ref())
        .date(message.created_at / 1000)
        .message_id(format!("{}@{}", message.id, route.from.domain()));
    if !message.to.is_empty() {
        builder = builder.to(address_list(&message.to));
    }
    if !message.cc.is_empty() {
        builder = builder.cc(address_list(&message.cc));
    }
    if let Some(sender) = sender {
        builder = builder.sender(sender);
    }
    if let Some(reply_to) = reply_to {
        builder = builder.reply_to(reply_to);
    }
    for (name, value) in &message.headers {
        builder = builder.header(name.as_ref(), Text::new(value.as_ref()));
    }
    if let Some(text) = &message.text {
        builder = builder.text_body(text.as_str());
    }
    if let Some(html) = &message.html {
        builder = builder.html_body(html.as_str());
    }
    let content = builder
        .write_to_vec()
        .expect("writing a message into a Vec cannot fail");
    Rendered {
        content,
        sender_policy,
    }
}
