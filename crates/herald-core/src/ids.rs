//! Identifiers of stored objects: time-ordered UUIDs, one type per kind of object.

use std::fmt;
use std::str::FromStr;

macro_rules! id_type {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A new identifier, ordered by creation time.
            pub fn new() -> Self {
                $name(uuid::Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = crate::Invalid;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s)
                    .map($name)
                    .map_err(|_| crate::Invalid::new("must be an id as returned by the API"))
            }
        }
    )*};
}

id_type!(
    /// A tenant.
    TenantId,
    /// An API token.
    TokenId,
    /// An SMTP server of a tenant.
    ServerId,
    /// An SMTP account on a server.
    AccountId,
    /// A notification provider.
    ProviderId,
    /// A submitted message.
    MessageId,
    /// One recipient of one message.
    RecipientId,
    /// A person of a tenant.
    PersonId,
    /// A tenant's SMTP credential for the submission listener.
    SmtpCredentialId,
    /// A tenant's IP connector for the submission listener.
    SmtpConnectorId,
    /// A tenant's delivery webhook.
    WebhookId,
    /// A tenant's message template.
    TemplateId,
    /// A tenant's gateway: a process in the tenant's network that delivers its mail there.
    GatewayId,
    /// A tenant's recurring schedule.
    ScheduleId,
    /// One firing of a schedule.
    ScheduleRunId,
);

/// A new random id for one start of a node's process, its *incarnation*.
/// Leases carry it, so that a node started again can tell its earlier
/// processes' leases from its own and give them back.
pub fn new_incarnation() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}
