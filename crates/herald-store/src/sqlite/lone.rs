//! What the writer remembers of the messages it stored with one recipient,
//! so that their first outcome's webhook events need no read.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use herald_core::RecipientId;

/// How many lone recipients are remembered at most; when that many are, the
/// set starts afresh (those forgotten have their outcomes' events read, as
/// any other's). It holds the one-recipient messages waiting to be sent, so
/// it fills only under a backlog that large, or with messages cancelled.
const MOST: usize = 100_000;

/// Recipients stored as their message's only one, with no outcome recorded since.
///
/// An outcome is recorded only by the writer, which takes its recipient out
/// of this set in the same job (a node opens one store on its database, and
/// no other process opens it: `herald.lock`). So while a recipient is in it, no outcome of
/// its message was recorded: the message has no webhook event yet, and once
/// its outcome is recorded the message's state is that outcome. Knowing both,
/// the outcome's job reads neither the message's recipients nor its chains.
/// A recipient not in it (forgotten, noted by a job rolled back, or stored
/// before this process started) is read as before: never a wrong event.
#[derive(Clone, Debug, Default)]
pub(super) struct LoneRecipients(Arc<Mutex<HashSet<RecipientId>>>);

impl LoneRecipients {
    /// Notes the only recipient of a message being stored.
    pub fn note(&self, recipient: RecipientId) {
        let mut set = self.0.lock().expect("lone recipients lock");
        if set.len() >= MOST {
            set.clear();
        }
        set.insert(recipient);
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

    #[test]
    fn a_noted_recipient_is_taken_once_and_a_full_set_starts_afresh() {
        let lone = LoneRecipients::default();
        let first = RecipientId::new();
        lone.note(first);
        assert!(!lone.take(RecipientId::new()), "never noted");
        assert!(lone.take(first));
        assert!(!lone.take(first), "taken once");

        let oldest = RecipientId::new();
        lone.note(oldest);
        for _ in 1..MOST {
            lone.note(RecipientId::new());
        }
        assert!(lone.take(oldest), "still there when the set is just full");
        let last_in = RecipientId::new();
        lone.note(last_in);
        let newest = RecipientId::new();
        lone.note(newest);
        assert!(!lone.take(last_in), "the full set started afresh");
        assert!(lone.take(newest));
        assert!(lone.0.lock().unwrap().is_empty());
    }
}
