//! Delivery statuses of recipients, and the message status derived from them.

use std::fmt;

/// Where one recipient of one message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientStatus {
    /// Stored, waiting for its first attempt.
    Queued,
    /// Claimed by a worker under a lease.
    Sending,
    /// An attempt failed temporarily; another is scheduled.
    Deferred,
    /// The provider's server accepted it (or the capture mailbox stored it).
    Sent,
    /// Refused permanently, or still undelivered at the maximum age.
    Failed,
    /// Cancelled by the tenant before any attempt: never sent.
    Cancelled,
    /// Queued for a later time (`send_at`) that has not come yet. Never
    /// stored: such a recipient is stored `queued`, due at that time, and
    /// shown `scheduled` until then.
    Scheduled,
}

impl RecipientStatus {
    /// The word stored in the database and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientStatus::Queued => "queued",
            RecipientStatus::Sending => "sending",
            RecipientStatus::Deferred => "deferred",
            RecipientStatus::Sent => "sent",
            RecipientStatus::Failed => "failed",
            RecipientStatus::Cancelled => "cancelled",
            RecipientStatus::Scheduled => "scheduled",
        }
    }

    /// Reads a stored word.
    pub fn from_stored(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => RecipientStatus::Queued,
            "sending" => RecipientStatus::Sending,
            "deferred" => RecipientStatus::Deferred,
            "sent" => RecipientStatus::Sent,
            "failed" => RecipientStatus::Failed,
            "cancelled" => RecipientStatus::Cancelled,
            "scheduled" => RecipientStatus::Scheduled,
            _ => return None,
        })
    }

    /// True once no further attempt will be made.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RecipientStatus::Sent | RecipientStatus::Failed | RecipientStatus::Cancelled
        )
    }

    /// How a stored `queued` status is shown: `scheduled` while the
    /// message's `send_at` is still ahead of `now`.
    pub fn as_of(self, send_at: Option<i64>, now: i64) -> Self {
        match (self, send_at) {
            (RecipientStatus::Queued, Some(at)) if at > now => RecipientStatus::Scheduled,
            (status, _) => status,
        }
    }
}

impl fmt::Display for RecipientStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message's status, derived from its recipients'.
pub type MessageStatus = RecipientStatus;

/// Derives a message's status: the least advanced of its unfinished recipients
/// (`sending`, then `scheduled`, `queued`, then `deferred`); once all are
/// final, `sent` when every one was sent, `failed` when any failed, and
/// `cancelled` when the message was cancelled.
pub fn message_status(recipients: impl IntoIterator<Item = RecipientStatus>) -> MessageStatus {
    let mut seen = [false; 7];
    for status in recipients {
        seen[status as usize] = true;
    }
    let has = |s: RecipientStatus| seen[s as usize];
    [
        RecipientStatus::Sending,
        RecipientStatus::Scheduled,
        RecipientStatus::Queued,
        RecipientStatus::Deferred,
        RecipientStatus::Failed,
        RecipientStatus::Cancelled,
    ]
    .into_iter()
    .find(|s| has(*s))
    .unwrap_or(RecipientStatus::Sent)
}

#[cfg(test)]
mod tests {
    use super::RecipientStatus::*;
    use super::*;

    #[test]
    fn derives_message_status() {
        assert_eq!(message_status([Sent, Sent]), Sent);
        assert_eq!(message_status([Sent, Failed]), Failed);
        assert_eq!(message_status([Sent, Deferred]), Deferred);
        assert_eq!(message_status([Queued, Deferred]), Queued);
        assert_eq!(message_status([Deferred, Sending]), Sending);
        assert_eq!(message_status([Cancelled, Cancelled]), Cancelled);
        assert_eq!(message_status([Scheduled, Scheduled]), Scheduled);
    }

    #[test]
    fn queued_is_shown_scheduled_until_its_time() {
        assert_eq!(Queued.as_of(Some(2_000), 1_000), Scheduled);
        assert_eq!(Queued.as_of(Some(1_000), 1_000), Queued);
        assert_eq!(Queued.as_of(None, 1_000), Queued);
        assert_eq!(Sending.as_of(Some(2_000), 1_000), Sending);
    }
}
