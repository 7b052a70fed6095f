//! Herald's domain: validated value types, identifiers, statuses and secrets, with no I/O.
//!
//! Every type here has one validating constructor, so a value that exists is
//! valid and nothing downstream checks it again.

/// `AsRef<str>` and `Display` for newtypes over a `String` whose validated
/// text is the value itself, shown as it is.
macro_rules! text_newtype_impls {
    ($($name:ident),+) => {$(
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    )+};
}

pub mod address;
pub mod endpoint;
pub mod ids;
pub mod invalid;
pub mod presets;
pub mod secret;
pub mod settings;
pub mod status;
pub mod terminal;
pub mod text;
pub mod timestamp;
pub mod token;
pub mod webhook;

pub use address::{EmailAddress, Mailbox};
pub use endpoint::EndpointUrl;
pub use ids::{
    AccountId, GatewayId, MessageId, PersonId, ProviderId, RecipientId, ScheduleId, ScheduleRunId,
    ServerId, SmtpConnectorId, SmtpCredentialId, TemplateId, TenantId, TokenId, WebhookId,
};
pub use invalid::{FieldError, Invalid};
pub use secret::{SealError, Sealer, Secret, redact_url};
pub use settings::{
    Mechanism, NodeRole, PersonRole, Port, Role, Security, SenderPolicy, SmtpHost, TenantSlug,
};
pub use status::{MessageStatus, RecipientStatus};
pub use text::{DisplayName, HeaderName, HeaderValue, Subject};
