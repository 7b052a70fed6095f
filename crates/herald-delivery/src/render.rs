//! Turns a stored message and the route it takes into RFC 5322 bytes.

use herald_core::EmailAddress;
use herald_store::MessageContent;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::text::Text;

use crate::Route;

fn address_list(list: &[EmailAddress]) -> Address<'_> {
    Address::new_list(list.iter().map(|a| Address::from(a.as_ref())).collect())
}

/// Writes the message as the provider sends it: From is the provider's
/// address, Reply-To the message's own or else the provider's.
///
/// Every value was validated when the message was accepted, and mail-builder
/// encodes non-ASCII text as encoded words and long bodies as quoted-printable
/// or base64, so no line exceeds the RFC 5322 limit.
pub fn render(message: &MessageContent, route: &Route) -> Vec<u8> {
    let from = match &route.from_name {
        Some(name) => Address::new_address(Some(name.as_str()), route.from.as_ref()),
        None => Address::new_address(None::<&str>, route.from.as_ref()),
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
    if let Some(reply_to) = message.reply_to.as_ref().or(route.reply_to.as_ref()) {
        builder = builder.reply_to(Address::from(reply_to.as_ref()));
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
    builder
        .write_to_vec()
        .expect("writing a message into a Vec cannot fail")
}
