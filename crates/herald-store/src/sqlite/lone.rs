//! What the writer remembers of the messages it handed to this node's
//! worker with one recipient, so that their outcome's events need no read.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use herald_core::RecipientId;

use crate::model::Submitted;

/// How many lone recipients are remembered at most. A node hands over only
/// what its worker has room for, far fewer; past it, more are not noted
/// (their outcomes read, as any other's).
const MOST: usize = 65_536;

/// Recipients handed to this node's worker at submission as their message's
/// only one, with no outcome recorded since.
///
/// An outcome is recorded only by the writer, which takes its recipient out
/// of this set in the same job. So while a recipient is in it, no outcome of
/// its message was recorded: the message has no webhook event yet, and once
/// its outcome is recorded the message's state is that outcome. Knowing both,
/// [`write_events`](super::queue) reads neither the message's recipients nor
/// its chains. What a rolled-back job noted or took is at worst a recipient
/// noted that never comes (it stays until the set is full) or one whose
/// outcome is read as before: never a wrong event.
#[derive(Clone, Debug, Default)]
pub(super) struct LoneRecipients(Arc<Mutex<HashSet<RecipientId>>>);

impl LoneRecipients {
    /// Notes the recipient of a message stored handed over, when it is the only one.
    pub fn note(&self, submitted: &Submitted) {
        if let [only] = submitted.handed.as_slice() {
            let mut set = self.0.lock().expect("lone recipients lock");
            if set.len() < MOST {
                set.insert(only.recipient);
            }
        }
    }

    /// Whether `recipient` was noted, forgetting it: its outcome is being recorded.
    pub fn take(&self, recipient: RecipientId) -> bool {
        self.0
            .lock()
            .expect("lone recipients lock")
            .remove(&recipient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Claimed;
    use herald_core::{EmailAddress, MessageId, RecipientStatus, TenantId};

    fn stored(recipients: usize) -> Submitted {
        let message = MessageId::new();
        Submitted {
            id: message,
            status: RecipientStatus::Sending,
            duplicate: false,
            handed: (0..recipients)
                .map(|_| Claimed {
                    recipient: RecipientId::new(),
                    message,
                    tenant: TenantId::new(),
                    address: EmailAddress::parse("a@x.example").unwrap(),
                    lease_token: 1,
                    lease_until: 1,
                    attempt: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn only_a_message_handed_with_one_recipient_is_noted_and_taken_once() {
        let lone = LoneRecipients::default();
        let one = stored(1);
        let two = stored(2);
        let none = stored(0);
        for s in [&one, &two, &none] {
            lone.note(s);
        }
        assert!(!lone.take(two.handed[0].recipient));
        assert!(!lone.take(two.handed[1].recipient));
        assert!(lone.take(one.handed[0].recipient));
        assert!(!lone.take(one.handed[0].recipient), "taken once");
    }
}
