//! Delivery webhooks' words: the event types a tenant subscribes to, a set of
//! them as stored, and the signing secret's form (Standard Webhooks).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;

use crate::Invalid;

/// What happened, as a webhook event's `type` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// Every recipient of a message was sent.
    MessageSent,
    /// Every recipient of a message is final, and at least one failed.
    MessageFailed,
    /// No recipient of a message is queued or being sent, and at least one waits for a retry.
    MessageDeferred,
    /// One recipient was accepted by the provider's server.
    RecipientSent,
    /// One recipient was refused for good, or expired.
    RecipientFailed,
    /// One recipient's attempt failed for now; another is scheduled.
    RecipientDeferred,
    /// A test message reached its end, sent or failed.
    TestCompleted,
}

impl EventType {
    /// Every event type, in the order the API lists them.
    pub const ALL: [EventType; 7] = [
        EventType::MessageSent,
        EventType::MessageFailed,
        EventType::MessageDeferred,
        EventType::RecipientSent,
        EventType::RecipientFailed,
        EventType::RecipientDeferred,
        EventType::TestCompleted,
    ];

    /// The word in the API and in the event's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::MessageSent => "message.sent",
            EventType::MessageFailed => "message.failed",
            EventType::MessageDeferred => "message.deferred",
            EventType::RecipientSent => "recipient.sent",
            EventType::RecipientFailed => "recipient.failed",
            EventType::RecipientDeferred => "recipient.deferred",
            EventType::TestCompleted => "test.completed",
        }
    }

    /// Reads an event type's word.
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        EventType::ALL
            .into_iter()
            .find(|e| e.as_str() == input)
            .ok_or_else(|| {
                Invalid::new(format!(
                    "must be one of {}",
                    EventType::ALL.map(EventType::as_str).join(", ")
                ))
            })
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The event types a webhook subscribes to: never empty. Stored as a bit set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventSet(u32);

impl EventSet {
    /// The set of the given types; an empty list breaks a rule.
    pub fn of(types: impl IntoIterator<Item = EventType>) -> Result<Self, Invalid> {
        let bits = types.into_iter().fold(0, |bits, e| bits | e.bit());
        if bits == 0 {
            return Err(Invalid::new("must name at least one event type"));
        }
        Ok(EventSet(bits))
    }

    /// Every event type.
    pub fn all() -> Self {
        EventSet(EventType::ALL.iter().fold(0, |bits, e| bits | e.bit()))
    }

    /// Reads the stored bits; bits no type has are a corrupt value.
    pub fn from_bits(bits: i64) -> Result<Self, Invalid> {
        let all = i64::from(EventSet::all().0);
        if bits == 0 || bits & !all != 0 {
            return Err(Invalid::new("is not a set of event types"));
        }
        Ok(EventSet(bits as u32))
    }

    /// The stored bits.
    pub fn bits(self) -> i64 {
        i64::from(self.0)
    }

    pub fn contains(self, event: EventType) -> bool {
        self.0 & event.bit() != 0
    }

    /// The types in the set, in the API's order.
    pub fn types(self) -> impl Iterator<Item = EventType> {
        EventType::ALL
            .into_iter()
            .filter(move |e| self.contains(*e))
    }
}

impl serde::Serialize for EventSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.types().map(EventType::as_str))
    }
}

/// The prefix of a Standard Webhooks signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new signing secret: `whsec_` and 32 random bytes in standard base64, as
/// the Standard Webhooks libraries read it. Shown once.
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", B64.encode(key))
}

/// What a webhook's sealed secrets are bound to: its id, named as a webhook's.
pub fn seal_context(webhook_id: &str) -> String {
    format!("webhook:{webhook_id}")
}

/// The key bytes of a signing secret (`whsec_` and base64).
pub fn secret_key(secret: &str) -> Result<Vec<u8>, Invalid> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    B64.decode(encoded)
        .map_err(|_| Invalid::new("must be whsec_ followed by base64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_round_trip_and_sets_keep_order() {
        for e in EventType::ALL {
            assert_eq!(EventType::parse(e.as_str()).unwrap(), e);
        }
        let err = EventType::parse("message.bounced").unwrap_err();
        assert!(err.to_string().contains("message.sent"), "{err}");
        let set = EventSet::of([EventType::TestCompleted, EventType::MessageSent]).unwrap();
        assert_eq!(
            set.types().collect::<Vec<_>>(),
            [EventType::MessageSent, EventType::TestCompleted]
        );
        assert_eq!(EventSet::from_bits(set.bits()).unwrap(), set);
        assert!(EventSet::of([]).is_err());
        assert!(EventSet::from_bits(1 << 20).is_err());
        assert_eq!(
            serde_json::to_value(set).unwrap(),
            serde_json::json!(["message.sent", "test.completed"])
        );
    }

    #[test]
    fn secrets_are_whsec_and_32_bytes() {
        let s = generate_secret();
        assert!(s.starts_with("whsec_"));
        assert_eq!(secret_key(&s).unwrap().len(), 32);
        assert_ne!(generate_secret(), s);
    }
}
