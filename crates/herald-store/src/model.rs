//! The records the store takes and gives: configuration objects, messages, claims and outcomes.
//!
//! Times are milliseconds since the Unix epoch.

use herald_core::webhook::EventSet;
use herald_core::{
    AccountId, DisplayName, EmailAddress, GatewayId, HeaderName, HeaderValue, Mailbox, Mechanism,
    MessageId, NodeRole, PersonId, PersonRole, Port, ProviderId, RecipientId, RecipientStatus,
    Role, Security, SenderPolicy, ServerId, SmtpConnectorId, SmtpCredentialId, SmtpHost, Subject,
    TenantId, TenantSlug, TokenId, WebhookId,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

mod gateways;
mod schedules;
pub use gateways::*;
pub use schedules::*;

/// A tenant.
#[derive(Clone, Debug, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: TenantSlug,
    pub name: String,
    /// Whether the operator allows this tenant to store passwords and tokens.
    pub credential_storage: bool,
    /// The active notification provider; `None` means the system default.
    pub notification_provider_id: Option<ProviderId>,
    /// What was active before the latest change, until that change is in effect everywhere.
    pub previous_provider_id: Option<ProviderId>,
    /// From when the latest change of the active provider is in effect on every node.
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub properties_effective_from: i64,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub created_at: i64,
}

/// A person of a tenant.
#[derive(Clone, Debug, Serialize)]
pub struct Person {
    pub id: PersonId,
    pub tenant_id: TenantId,
    pub name: String,
    pub email: EmailAddress,
    pub role: PersonRole,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub created_at: i64,
}

/// One entry of the audit log. Details never hold a secret value.
#[derive(Clone, Debug, Serialize)]
pub struct AuditEntry {
    /// `None` for installation-wide changes.
    pub tenant_id: Option<TenantId>,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub at: i64,
    /// Who: the token's name, and its person when it has one.
    pub actor: String,
    pub token_id: Option<TokenId>,
    /// The client's address as the node saw it.
    pub remote_addr: Option<String>,
    /// What, such as `smtp_server.update`.
    pub action: String,
    /// The object changed, when there is one.
    pub object_id: Option<String>,
    pub details: serde_json::Value,
}

/// A token to store: only its hash.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub id: TokenId,
    /// `None` for an operator token.
    pub tenant_id: Option<TenantId>,
    pub name: String,
    pub role: Role,
    /// The person a personal token acts as; `None` for service and operator tokens.
    pub person_id: Option<PersonId>,
    /// SHA-256 of the token, hex.
    pub hash: String,
}

/// A stored token, without its hash.
#[derive(Clone, Debug, Serialize)]
pub struct TokenRecord {
    pub id: TokenId,
    pub tenant_id: Option<TenantId>,
    pub name: String,
    pub role: Role,
    pub person_id: Option<PersonId>,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub created_at: i64,
    #[serde(serialize_with = "herald_core::timestamp::serialize_opt")]
    pub last_used_at: Option<i64>,
    /// True for the operator token that came from `HERALD_BOOTSTRAP_TOKEN`.
    /// Only the operator's token list shows it.
    #[serde(skip)]
    pub bootstrap: bool,
}

/// What [`Tenants::set_bootstrap_token`](crate::Tenants::set_bootstrap_token) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootstrapOutcome {
    /// The token is the bootstrap token now (`created` when it was not stored
    /// before); `replaced` earlier bootstrap tokens were revoked.
    Installed { created: bool, replaced: u64 },
    /// The token was revoked earlier and stays revoked; `replaced` bootstrap
    /// tokens in force until now were revoked all the same, because they no
    /// longer match the configured value. With none left, there is no valid
    /// bootstrap token.
    Revoked { replaced: u64 },
}

/// An SMTP server's settings, as created or replaced.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ServerSettings {
    pub name: String,
    pub host: SmtpHost,
    pub port: Port,
    pub security: Security,
    pub requires_auth: bool,
    /// AUTH may go over a session without TLS (`security: none`): the
    /// administrator accepts that the password travels unencrypted.
    pub allow_plaintext_auth: bool,
    pub tls_verify: bool,
    pub tls_ca_pem: Option<String>,
    pub tls_server_name: Option<SmtpHost>,
    pub helo_name: Option<SmtpHost>,
    /// Connections Herald opens to this server at once (the pool's size).
    pub max_connections: u32,
    /// Messages sent over one connection before it is closed and a new one opened.
    pub max_messages_per_connection: u32,
    /// How long an idle pooled connection is kept open.
    pub idle_timeout_secs: u32,
    /// Messages per minute at most; mail over the limit waits, it is never dropped.
    pub rate_limit_per_minute: Option<u32>,
    /// Timeout of each SMTP command; the node's default when unset.
    pub command_timeout_secs: Option<u32>,
    /// The tenant's gateway that delivers this server's mail from inside the
    /// tenant's network; `None` for delivery from Herald's own nodes.
    pub gateway_id: Option<GatewayId>,
}

impl ServerSettings {
    /// The settings the API gives a server of which only these are said: no
    /// AUTH, the certificate verified (where there is TLS), no CA, server or
    /// HELO name of its own, 4 connections of up to 100 messages kept idle
    /// for 30 seconds, no rate limit or command timeout, no gateway.
    pub fn new(name: impl Into<String>, host: SmtpHost, port: Port, security: Security) -> Self {
        ServerSettings {
            name: name.into(),
            host,
            port,
            security,
            requires_auth: false,
            allow_plaintext_auth: false,
            tls_verify: security != Security::None,
            tls_ca_pem: None,
            tls_server_name: None,
            helo_name: None,
            max_connections: 4,
            max_messages_per_connection: 100,
            idle_timeout_secs: 30,
            rate_limit_per_minute: None,
            command_timeout_secs: None,
            gateway_id: None,
        }
    }

    /// Whether replacing `self` by `new` must clear the secrets of the
    /// server's accounts: a password goes only to the destination it was
    /// entered for, and only under the same trust in that destination.
    ///
    /// A new host, port or security mode redirects it; turning certificate
    /// verification off (`tls_verify` true to false) weakens it; any change of
    /// the trusted CA (`tls_ca_pem`) or of the name the certificate must carry
    /// (`tls_server_name`) redirects it; allowing AUTH in clear
    /// (`allow_plaintext_auth` false to true) weakens it. Turning verification
    /// on, or plaintext AUTH off, only strengthens it, and the other settings
    /// do not touch trust. Without TLS (`security: none`) there is no
    /// certificate, so `tls_verify` means nothing there and changes nothing.
    /// Another gateway (or none instead of one, or one instead of none)
    /// redirects it too: the same host name may lead to another machine
    /// from another network.
    pub fn change_clears_secrets(&self, new: &ServerSettings) -> bool {
        let redirected = (&self.host, self.port, self.security, self.gateway_id)
            != (&new.host, new.port, new.security, new.gateway_id);
        let verifies = |s: &ServerSettings| s.tls_verify && s.security != Security::None;
        let weakened = (verifies(self) && !verifies(new))
            || (!self.allow_plaintext_auth && new.allow_plaintext_auth);
        let trust_changed =
            self.tls_ca_pem != new.tls_ca_pem || self.tls_server_name != new.tls_server_name;
        redirected || weakened || trust_changed
    }

    /// What is weak about these settings, for the administrator: the API's
    /// server answer, the console's server page and a test message's
    /// diagnosis all show these.
    pub fn warnings(&self) -> Vec<Warning> {
        let mut warnings = Vec::new();
        if self.security == Security::None && self.requires_auth {
            warnings.push(if self.allow_plaintext_auth {
                Warning::new(
                    "plaintext_auth",
                    "security is none and allow_plaintext_auth is true: the password travels unencrypted",
                )
            } else {
                Warning::new(
                    "plaintext_auth_refused",
                    "security is none and the server requires authentication: the password would travel unencrypted; AUTH is refused unless allow_plaintext_auth is true",
                )
            });
        }
        if self.security != Security::None && !self.tls_verify {
            warnings.push(Warning::new(
                "tls_not_verified",
                "tls_verify is false: the server's certificate is not checked, so anyone on the path can pose as the server and read the mail and the password",
            ));
        }
        warnings
    }
}

/// Something the administrator should know about an entry that was accepted
/// anyway: a stable `code` for programs and a `message` for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub code: &'static str,
    pub message: String,
}

impl Warning {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Warning {
            code,
            message: message.into(),
        }
    }
}

/// A stored SMTP server.
#[derive(Clone, Debug, Serialize)]
pub struct SmtpServer {
    pub id: ServerId,
    pub tenant_id: TenantId,
    #[serde(flatten)]
    pub settings: ServerSettings,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub created_at: i64,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub updated_at: i64,
}

/// OAuth2 client credentials from which Herald obtains XOAUTH2 access tokens.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OAuth2Client {
    pub token_url: String,
    pub client_id: String,
    pub scope: Option<String>,
}

/// An SMTP account to create; its secret already sealed.
#[derive(Clone, Debug)]
pub struct NewAccount {
    pub id: AccountId,
    pub server_id: ServerId,
    pub username: String,
    pub mechanism: Mechanism,
    /// The secret sealed by [`herald_core::Sealer`] with the account id as context.
    pub sealed_secret: Option<String>,
    /// For XOAUTH2 by client credentials; the sealed secret is then the client secret.
    pub oauth2: Option<OAuth2Client>,
    /// The person whose mailbox the account is.
    pub person_id: Option<PersonId>,
}

/// A stored SMTP account. The sealed secret is never serialised.
#[derive(Clone, Debug, Serialize)]
pub struct SmtpAccount {
    pub id: AccountId,
    pub server_id: ServerId,
    pub tenant_id: TenantId,
    pub username: String,
    pub mechanism: Mechanism,
    /// Whether a secret is stored (the secret itself is write-only).
    pub secret_set: bool,
    #[serde(skip)]
    pub sealed_secret: Option<String>,
    /// For XOAUTH2 by client credentials (the client secret is the write-only secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2Client>,
    pub person_id: Option<PersonId>,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub created_at: i64,
}

/// A notification provider's settings, as created or replaced.
#[derive(Clone, Debug, Serialize)]
pub struct ProviderSettings {
    pub name: String,
    pub smtp_server_id: ServerId,
    pub account_id: Option<AccountId>,
    pub from_address: EmailAddress,
    pub from_name: Option<DisplayName>,
    /// The Reply-To for the provider's mail, with an optional display name.
    pub reply_to: Option<Mailbox>,
    pub fallback_recipient: Option<EmailAddress>,
    pub sender_policy: SenderPolicy,
}

/// A stored notification provider.
#[derive(Clone, Debug, Serialize)]
pub struct Provider {
    pub id: ProviderId,
    pub tenant_id: TenantId,
    #[serde(flatten)]
    pub settings: ProviderSettings,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub created_at: i64,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub updated_at: i64,
}

/// A provider with the server and account it sends through.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub provider: Provider,
    pub server: SmtpServer,
    pub account: Option<SmtpAccount>,
}

/// Which header a recipient appears in, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientKind {
    To,
    Cc,
    Bcc,
}

impl RecipientKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RecipientKind::To => "to",
            RecipientKind::Cc => "cc",
            RecipientKind::Bcc => "bcc",
        }
    }

    pub(crate) fn from_stored(s: &str) -> RecipientKind {
        match s {
            "cc" => RecipientKind::Cc,
            "bcc" => RecipientKind::Bcc,
            _ => RecipientKind::To,
        }
    }
}

/// A message to store, already validated.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub id: MessageId,
    pub tenant_id: TenantId,
    pub idempotency_key: Option<String>,
    pub subject: Subject,
    pub text: Option<String>,
    pub html: Option<String>,
    /// The message's own Reply-To, with an optional display name.
    pub reply_to: Option<Mailbox>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The To and Cc mailboxes: each address is a recipient, and the header shows the names.
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<EmailAddress>,
    /// True when `to` is the provider's fallback recipient because none was given.
    pub used_fallback: bool,
    pub created_at: i64,
    /// The person the message is sent on behalf of.
    pub on_behalf_of: Option<OnBehalf>,
    /// For a test message: the provider to test, whatever the tenant's active one.
    pub test_provider: Option<ProviderId>,
    /// Higher goes first within the tenant: 0 for mail, [`TEST_PRIORITY`]
    /// for a test message. Claims know these two classes only.
    pub priority: i32,
    /// For a test message: the most test recipients the tenant may have
    /// queued or in flight, this one's included; `None` for no limit.
    pub max_pending_tests: Option<u32>,
    /// The most recipients the tenant may have queued, this message's
    /// included; `None` for no limit.
    pub max_queued: Option<u64>,
    /// Where the message came from: the API, or the SMTP listener and who sent it there.
    pub origin: Origin,
    /// For mail received over SMTP: the message as received, a `Received:`
    /// header first. It is sent as it is but for the sender's fields
    /// (see `herald_delivery::render`); `subject`, `to` and `cc` are read
    /// from it for lists and views.
    pub raw: Option<Vec<u8>>,
    /// Files sent with an API message (multipart/mixed), inline ones by content id.
    pub attachments: Vec<Attachment>,
    /// When to send it: its recipients are due then (shown `scheduled` until
    /// then) rather than at once. `None`: at once.
    pub send_at: Option<i64>,
    /// The template it was rendered from.
    pub template: Option<TemplateUse>,
    /// The gateway its route is pinned to when it is submitted: only that
    /// gateway's instances claim it. A lease holder that finds the route
    /// changed hands it over ([`DeliveryStore::repin`](crate::DeliveryStore::repin)).
    pub gateway_id: Option<GatewayId>,
    /// A lease this node's worker granted for the message (see
    /// [`crate::handoff`]): its recipients are stored `sending` under it,
    /// claimed in the transaction that stores them, and come back in
    /// [`Submitted::handed`]. `None`: stored queued, for any worker's claim.
    pub handoff: Option<HandoffLease>,
}

impl NewMessage {
    /// A message of `tenant` as the API stores the plainest one: `subject`
    /// and a text body to the `to` mailboxes, created at `created_at`, sent
    /// at once, with no limit, template or hand-off. Tests and the benchmark
    /// start from it and set what they need.
    pub fn plain(
        tenant: TenantId,
        to: Vec<Mailbox>,
        subject: Subject,
        text: &str,
        created_at: i64,
    ) -> NewMessage {
        NewMessage {
            id: MessageId::new(),
            tenant_id: tenant,
            idempotency_key: None,
            subject,
            text: Some(text.to_owned()),
            html: None,
            reply_to: None,
            headers: Vec::new(),
            to,
            cc: Vec::new(),
            bcc: Vec::new(),
            used_fallback: false,
            created_at,
            on_behalf_of: None,
            test_provider: None,
            priority: 0,
            max_pending_tests: None,
            max_queued: None,
            origin: Origin::Api,
            raw: None,
            attachments: Vec::new(),
            send_at: None,
            template: None,
            gateway_id: None,
            handoff: None,
        }
    }

    /// Every recipient's address with its kind, in order: To, then Cc, then
    /// Bcc. A mailbox named again (in any case, as mail systems compare
    /// addresses) is one recipient, of the kind it was first named with: it
    /// gets the message once.
    pub fn recipients(&self) -> impl Iterator<Item = (&EmailAddress, RecipientKind)> {
        let to = self.to.iter().map(|m| (&m.address, RecipientKind::To));
        let cc = self.cc.iter().map(|m| (&m.address, RecipientKind::Cc));
        let bcc = self.bcc.iter().map(|a| (a, RecipientKind::Bcc));
        // The one-recipient message, the common one, keeps nothing.
        let many = self.to.len() + self.cc.len() + self.bcc.len() > 1;
        let mut seen = std::collections::HashSet::new();
        to.chain(cc).chain(bcc).filter(move |(address, _)| {
            !many || seen.insert(address.to_string().to_ascii_lowercase())
        })
    }

    /// What a worker needs to render the message: what
    /// [`DeliveryStore::message_contents`](crate::DeliveryStore::message_contents) reads back
    /// once it is stored.
    pub fn content(&self) -> MessageContent {
        MessageContent {
            id: self.id,
            tenant_id: self.tenant_id,
            created_at: self.created_at,
            subject: self.subject.clone(),
            text: self.text.clone(),
            html: self.html.clone(),
            reply_to: self.reply_to.clone(),
            headers: self.headers.clone(),
            to: self.to.clone(),
            cc: self.cc.clone(),
            on_behalf_of: self.on_behalf_of.clone(),
            test_provider: self.test_provider,
            raw: self.raw.clone(),
            attachments: self.attachments.clone(),
            send_at: self.send_at,
        }
    }

    /// The recipients as claimed under `lease` in the transaction that
    /// stores them, with the ids they are stored under: their first attempt,
    /// lease token 1.
    pub fn handed_claims(&self, lease: &HandoffLease) -> Vec<Claimed> {
        self.recipients()
            .map(|(address, _)| Claimed {
                recipient: RecipientId::new(),
                message: self.id,
                tenant: self.tenant_id,
                address: address.clone(),
                lease_token: 1,
                lease_until: lease.until,
                attempt: 1,
            })
            .collect()
    }
}

/// A lease a node's worker grants to a message at its submission: the node
/// and process that hold it, and when it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandoffLease {
    pub node: String,
    pub incarnation: String,
    pub until: i64,
}

/// The person a message is sent on behalf of.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct OnBehalf {
    pub name: String,
    pub email: EmailAddress,
}

/// The answer to a submission.
#[derive(Clone, Debug)]
pub struct Submitted {
    pub id: MessageId,
    pub status: RecipientStatus,
    /// True when the idempotency key matched an earlier message, which is returned instead.
    pub duplicate: bool,
    /// For a new message stored under its [`NewMessage::handoff`] lease:
    /// its recipients, claimed. Empty otherwise.
    pub handed: Vec<Claimed>,
}

/// What a worker needs to render a message.
#[derive(Clone, Debug)]
pub struct MessageContent {
    pub id: MessageId,
    pub tenant_id: TenantId,
    pub created_at: i64,
    pub subject: Subject,
    pub text: Option<String>,
    pub html: Option<String>,
    /// The message's own Reply-To, with an optional display name.
    pub reply_to: Option<Mailbox>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub on_behalf_of: Option<OnBehalf>,
    pub test_provider: Option<ProviderId>,
    /// For mail received over SMTP: the message as received.
    pub raw: Option<Vec<u8>>,
    pub attachments: Vec<Attachment>,
    /// When it was to be sent, for a scheduled message: its age (for the
    /// maximum age, and the latency measured) counts from then.
    pub send_at: Option<i64>,
}

impl MessageContent {
    /// When the message was due to go: its submission, or its `send_at`
    /// for a scheduled one. Its age (the maximum age, the latency measured)
    /// and its Date header count from then.
    pub fn due_from(&self) -> i64 {
        self.send_at
            .map_or(self.created_at, |at| at.max(self.created_at))
    }
}

/// A file sent with a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    /// Set for an inline part (an image the HTML refers to as `cid:<content_id>`).
    pub content_id: Option<String>,
    pub content: Vec<u8>,
}

/// Where a message came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Api,
    Smtp(SmtpOrigin),
    /// A firing of one of the tenant's recurring schedules.
    Schedule,
}

/// Who submitted a message over SMTP, and from where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SmtpOrigin {
    /// The credential the session authenticated with, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<SmtpCredentialId>,
    /// The connector whose networks hold the client's address, when the session did not authenticate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector_id: Option<SmtpConnectorId>,
    /// The client's IP address.
    pub client_addr: String,
}

impl Origin {
    /// `api`, `smtp` or `schedule`, as messages show it.
    pub fn source(&self) -> &'static str {
        match self {
            Origin::Api => "api",
            Origin::Smtp(_) => "smtp",
            Origin::Schedule => "schedule",
        }
    }

    /// Who sent the message over SMTP, if it came that way.
    pub fn smtp(self) -> Option<SmtpOrigin> {
        match self {
            Origin::Api | Origin::Schedule => None,
            Origin::Smtp(smtp) => Some(smtp),
        }
    }
}

/// A tenant's SMTP credential, without its password's hash.
#[derive(Clone, Debug, Serialize)]
pub struct SmtpCredential {
    pub id: SmtpCredentialId,
    #[serde(skip)]
    pub tenant_id: TenantId,
    pub name: String,
    /// What the client gives in AUTH; unique across the installation.
    pub username: String,
    /// Messages per minute the credential may submit; `None` for no limit.
    pub rate_limit_per_minute: Option<u32>,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub created_at: i64,
    #[serde(serialize_with = "herald_core::timestamp::serialize_opt")]
    pub last_used_at: Option<i64>,
}

/// A credential to store: the SHA-256 of its random password only.
#[derive(Clone, Debug)]
pub struct NewSmtpCredential {
    pub id: SmtpCredentialId,
    pub tenant_id: TenantId,
    pub name: String,
    pub username: String,
    pub password_hash: String,
    pub rate_limit_per_minute: Option<u32>,
}

/// A tenant's IP connector: mail from its networks needs no AUTH.
#[derive(Clone, Debug, Serialize)]
pub struct SmtpConnector {
    pub id: SmtpConnectorId,
    #[serde(skip)]
    pub tenant_id: TenantId,
    pub name: String,
    pub cidrs: Vec<ipnet::IpNet>,
    pub rate_limit_per_minute: Option<u32>,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub created_at: i64,
}

impl SmtpConnector {
    /// True when one of the connector's networks holds the address (an
    /// IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn covers(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.cidrs.iter().any(|net| net.contains(&ip))
    }
}

/// A list entry for a message.
#[derive(Clone, Debug, Serialize)]
pub struct MessageSummary {
    pub id: MessageId,
    pub status: RecipientStatus,
    pub subject: String,
    /// `api` or `smtp`.
    pub source: String,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub created_at: i64,
    /// When it is (or was) to be sent, for a scheduled message.
    #[serde(
        serialize_with = "herald_core::timestamp::serialize_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub send_at: Option<i64>,
}

/// One message with everything that happened to it.
#[derive(Clone, Debug, Serialize)]
pub struct MessageView {
    pub id: MessageId,
    pub status: RecipientStatus,
    pub subject: String,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub created_at: i64,
    pub idempotency_key: Option<String>,
    pub used_fallback: bool,
    pub on_behalf_of: Option<OnBehalf>,
    /// For a test message, the provider it tests.
    pub test_provider_id: Option<ProviderId>,
    /// `api` or `smtp`.
    pub source: String,
    /// For mail received over SMTP: the credential or connector, and the client's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpOrigin>,
    /// Files sent with the message (names, types and sizes; API mail only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentInfo>,
    /// When it is (or was) to be sent, for a scheduled message.
    #[serde(
        serialize_with = "herald_core::timestamp::serialize_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub send_at: Option<i64>,
    /// The template it was rendered from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateUse>,
    /// Why it is not being delivered now, when Herald knows (no instance of
    /// the gateway its recipients are pinned to is alive). Set by the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    pub recipients: Vec<RecipientView>,
}

/// What a message view says of an attachment.
#[derive(Clone, Debug, Serialize)]
pub struct AttachmentInfo {
    pub filename: String,
    pub content_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_id: Option<String>,
    pub size: usize,
}

/// One recipient with its attempts.
#[derive(Clone, Debug, Serialize)]
pub struct RecipientView {
    pub id: RecipientId,
    pub address: String,
    pub kind: RecipientKind,
    pub status: RecipientStatus,
    #[serde(serialize_with = "herald_core::timestamp::serialize_opt")]
    pub next_attempt_at: Option<i64>,
    /// The gateway it is pinned to: only that gateway's instances deliver it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_id: Option<GatewayId>,
    pub attempts: Vec<AttemptRecord>,
}

/// One delivery attempt of one recipient.
#[derive(Clone, Debug, Serialize)]
pub struct AttemptRecord {
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub at: i64,
    /// The node that made the attempt.
    pub node: String,
    /// The server it spoke to, `host:port`, or `capture` for the capture mailbox.
    pub server: String,
    /// `sent`, `deferred` or `failed`.
    pub outcome: RecipientStatus,
    /// The SMTP step that decided the outcome, such as `rcpt` or `data`.
    pub step: Option<String>,
    pub code: Option<u16>,
    pub enhanced_code: Option<String>,
    /// The server's reply in its own words, or what went wrong when there was no reply.
    pub response: String,
    pub duration_ms: i64,
    /// The IP address and port connected to.
    pub remote_addr: Option<String>,
    pub tls_version: Option<String>,
    pub tls_cipher: Option<String>,
    /// The provider used; `None` for the system default.
    pub provider_id: Option<ProviderId>,
    /// The version of the provider's configuration used (its newest change, in ms).
    pub config_version: Option<i64>,
    /// How From and Sender were chosen: `fixed`, `fixed, reply-to the person` or
    /// `on_behalf`; for mail received over SMTP also `as received` and
    /// `fixed, reply-to the original From`.
    pub sender_policy: Option<String>,
    /// For test messages: every step of the session with the server's words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<serde_json::Value>,
}

impl AttemptRecord {
    /// An attempt at `at` by `node` on `server` that came to `outcome` with
    /// `response`, knowing nothing else yet: no SMTP step or code, no time
    /// taken, no TLS, provider or diagnosis. The caller sets what it knows
    /// with struct update syntax.
    pub fn new(
        at: i64,
        node: impl Into<String>,
        server: impl Into<String>,
        outcome: RecipientStatus,
        response: impl Into<String>,
    ) -> AttemptRecord {
        AttemptRecord {
            at,
            node: node.into(),
            server: server.into(),
            outcome,
            step: None,
            code: None,
            enhanced_code: None,
            response: response.into(),
            duration_ms: 0,
            remote_addr: None,
            tls_version: None,
            tls_cipher: None,
            provider_id: None,
            config_version: None,
            sender_policy: None,
            diagnosis: None,
        }
    }
}

/// A change another node made that this node should hear of at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreEvent {
    /// Mail was submitted: workers should look for due recipients.
    Mail,
    /// A tenant's properties were refreshed: forget the cached provider.
    Properties(TenantId),
}

/// A node as it reports itself.
#[derive(Clone, Debug, Serialize)]
pub struct NodeRecord {
    pub name: String,
    /// `api`, `worker`, or both.
    pub roles: Vec<NodeRole>,
    pub version: String,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub started_at: i64,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub heartbeat_at: i64,
    /// The random id of the node's current process (its incarnation); `None`
    /// once another node has taken over its leases because its heartbeat stopped.
    pub incarnation: Option<String>,
}

/// A gateway instance's request for the due recipients pinned to its gateway.
#[derive(Clone, Debug)]
pub struct GatewayClaim {
    pub gateway: GatewayId,
    /// The gateway's tenant.
    pub tenant: TenantId,
    /// Who holds the lease: the instance, as its attempts name it.
    pub owner: String,
    /// The instance's process, as a node's incarnation.
    pub incarnation: String,
    pub now: i64,
    pub lease_ms: i64,
    /// Recipients to claim at most.
    pub limit: u32,
}

/// A worker's request for due recipients.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    pub node: String,
    /// The claiming process's random id: a lease of an earlier process of the
    /// same node is known by it, and given back when the node starts again.
    pub incarnation: String,
    pub now: i64,
    pub lease_ms: i64,
    /// Recipients to claim at most, over all tenants.
    pub limit: u32,
    /// How many recipients each listed tenant may have claimed now: what its
    /// route can take soon, within its share of the node (less the places
    /// kept for its mail handed over, while it hands mail over). A tenant
    /// with room 0 is passed over (its provider is at its connection limit,
    /// or its share is full).
    pub rooms: HashMap<TenantId, u32>,
    /// The room of a tenant not listed in `rooms`.
    pub default_room: u32,
}

impl ClaimRequest {
    /// The tenants with no room at all: their mail is not even looked at.
    pub fn full_tenants(&self) -> Vec<TenantId> {
        self.rooms
            .iter()
            .filter(|(_, room)| **room == 0)
            .map(|(tenant, _)| *tenant)
            .collect()
    }

    /// The most recipients `tenant` may have claimed now.
    pub fn room_of(&self, tenant: TenantId) -> u32 {
        self.rooms
            .get(&tenant)
            .copied()
            .unwrap_or(self.default_room)
    }
}

/// The priority of a test message: first among its tenant's mail, and only there.
pub const TEST_PRIORITY: i32 = 100;

/// A recipient claimed under a lease.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub recipient: RecipientId,
    pub message: MessageId,
    pub tenant: TenantId,
    pub address: EmailAddress,
    /// The fencing token: only an outcome carrying it is accepted.
    pub lease_token: i64,
    /// When the lease ends; after that the outcome will be refused, so nothing may be sent.
    pub lease_until: i64,
    /// Attempts made so far, this one included.
    pub attempt: u32,
}

/// The state a recipient moves to after an attempt. Its JSON, as the
/// gateway protocol carries it, is `{"state": "deferred", "until": …}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NextState {
    Sent,
    Deferred { until: i64 },
    Failed,
}

/// What [`DeliveryStore::complete`](crate::DeliveryStore::complete) did with the outcomes it was offered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Completed {
    /// One per outcome, in order: true when it was recorded (its lease was
    /// still the current one), false when it changed nothing.
    pub accepted: Vec<bool>,
    /// Webhook events the recorded outcomes wrote to the outbox: none when
    /// no webhook of their tenants wants them, and then no dispatcher need look.
    pub events: usize,
    /// Of those, the events leased in the same commit to the dispatcher whose
    /// [`EventLease`] came with the outcomes, in their order: its to post,
    /// as if it had claimed them. Empty without a lease.
    pub handed: Vec<ClaimedEvent>,
}

/// A node's webhook dispatcher, offered the events that outcomes write: the
/// store leases them to it in the outcomes' own commit, so the dispatcher
/// posts them without a claim of its own (see
/// [`DeliveryStore::complete_and_lease_events`](crate::DeliveryStore::complete_and_lease_events)).
#[derive(Clone, Debug)]
pub struct EventLease {
    pub node: String,
    pub incarnation: String,
    /// When the lease is offered: a webhook's previous secret signs its
    /// events too if its overlap lasts past this time, as for a claim now.
    pub now: i64,
    pub until: i64,
    /// How many events the dispatcher takes at most.
    pub room: usize,
    /// Webhooks it has no room for now: their events wait for a claim.
    pub exclude: Vec<WebhookId>,
}

/// The result of one attempt for one claimed recipient.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub recipient: RecipientId,
    pub lease_token: i64,
    pub next: NextState,
    pub attempt: AttemptRecord,
}

/// A message stored in the capture mailbox.
#[derive(Clone, Debug)]
pub struct NewCapture {
    pub message: MessageId,
    pub tenant: TenantId,
    pub envelope_from: String,
    pub recipients: Vec<String>,
    pub content: Vec<u8>,
    pub at: i64,
}

/// A message in the capture mailbox, as read back.
#[derive(Clone, Debug, Serialize)]
pub struct Captured {
    pub message_id: MessageId,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub captured_at: i64,
    pub envelope_from: String,
    pub recipients: Vec<String>,
    /// The message exactly as it would have gone on the wire, before dot-stuffing.
    pub content: String,
}

/// Someone who may sign in to the console with a password: an operator, or a
/// person of a tenant whose password has been set.
#[derive(Clone, Debug)]
pub struct Credential {
    pub principal: Principal,
    /// The argon2 hash (PHC string) of the password; never the password.
    pub password_hash: String,
}

/// Who signs in or holds a console session, as stored now.
#[derive(Clone, Debug)]
pub enum Principal {
    /// An operator, by e-mail address.
    Operator(String),
    /// A person of a tenant, with their role and tenant as stored now.
    Person(Person),
}

impl Principal {
    /// The operator's e-mail address, when it is an operator.
    pub fn operator_email(&self) -> Option<&str> {
        match self {
            Principal::Operator(email) => Some(email),
            Principal::Person(_) => None,
        }
    }

    /// The person, when it is one.
    pub fn person(&self) -> Option<&Person> {
        match self {
            Principal::Operator(_) => None,
            Principal::Person(p) => Some(p),
        }
    }
}

/// Who a console session acts for: an operator, or a person of a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionSubject {
    /// An operator, by e-mail address.
    Operator(String),
    /// A person of a tenant.
    Person(PersonId),
}

/// A console session to store. Only a hash of the session id is kept.
#[derive(Clone, Debug)]
pub struct NewSession {
    /// SHA-256 of the session id the browser holds in its cookie.
    pub hash: String,
    /// The session's public id, recorded in the audit log as what acted.
    pub id: TokenId,
    pub subject: SessionSubject,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A stored console session, with the person it acts for as they are now.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: TokenId,
    pub principal: Principal,
    pub created_at: i64,
    pub expires_at: i64,
}

impl Session {
    /// The role the session acts with: the person's role as it is now.
    pub fn role(&self) -> Role {
        match &self.principal {
            Principal::Operator(_) => Role::Operator,
            Principal::Person(p) if p.role == PersonRole::TenantAdmin => Role::TenantAdmin,
            Principal::Person(_) => Role::Sender,
        }
    }
}

/// Messages counted by their derived status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MessageCounts {
    pub sending: u64,
    pub queued: u64,
    pub deferred: u64,
    pub failed: u64,
    pub sent: u64,
    pub cancelled: u64,
}

/// The installation's unfinished recipients by status ([`Queue::queue_depth`](crate::Queue::queue_depth)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub queued: u64,
    /// Queued for a later `send_at`.
    pub scheduled: u64,
    pub deferred: u64,
    pub sending: u64,
}

impl QueueDepth {
    /// Adds `count` recipients in `status` (as stored); other statuses are not unfinished.
    pub(crate) fn add(&mut self, status: &str, count: i64) {
        let slot = match status {
            "queued" => &mut self.queued,
            "scheduled" => &mut self.scheduled,
            "deferred" => &mut self.deferred,
            "sending" => &mut self.sending,
            _ => return,
        };
        *slot += u64::try_from(count).unwrap_or(0);
    }
}

/// Ranks recipient statuses in SQL so that a message's least rank is its
/// derived status: `message_status` takes the first present of sending,
/// queued, deferred and failed, and else sent.
pub(crate) const STATUS_RANK: &str = "CASE r.status WHEN 'sending' THEN 0 WHEN 'queued' THEN 1 \
     WHEN 'deferred' THEN 2 WHEN 'failed' THEN 3 WHEN 'cancelled' THEN 5 ELSE 4 END";

/// For a status filter, whether the message's `send_at` must be ahead of
/// now (`scheduled`) or not (`queued`): both have the rank of `queued`.
pub(crate) fn scheduled_filter(status: Option<RecipientStatus>) -> Option<bool> {
    match status? {
        RecipientStatus::Scheduled => Some(true),
        RecipientStatus::Queued => Some(false),
        _ => None,
    }
}

/// The rank [`STATUS_RANK`] gives the messages of this status.
pub(crate) fn status_rank(status: RecipientStatus) -> i64 {
    match status {
        RecipientStatus::Sending => 0,
        // A scheduled message is a queued one whose time has not come.
        RecipientStatus::Queued | RecipientStatus::Scheduled => 1,
        RecipientStatus::Deferred => 2,
        RecipientStatus::Failed => 3,
        RecipientStatus::Sent => 4,
        RecipientStatus::Cancelled => 5,
    }
}

impl MessageCounts {
    /// Adds `count` messages whose least recipient rank (see [`STATUS_RANK`]) is `rank`.
    pub(crate) fn add(&mut self, rank: i64, count: u64) {
        let slot = match rank {
            0 => &mut self.sending,
            1 => &mut self.queued,
            2 => &mut self.deferred,
            3 => &mut self.failed,
            5 => &mut self.cancelled,
            _ => &mut self.sent,
        };
        *slot += count;
    }
}

/// Which of a tenant's messages to list, newest first (by creation time, then
/// id): one page of them, the next page starting `before` the last one given.
#[derive(Clone, Debug, Default)]
pub struct MessageQuery {
    /// Only messages whose status (derived from their recipients') is this.
    pub status: Option<RecipientStatus>,
    /// Only messages from this source, `api` or `smtp`.
    pub source: Option<String>,
    /// Only messages after this one in the list's order: its creation time and id.
    pub before: Option<(i64, MessageId)>,
    /// Only messages with this recipient (to, cc or bcc; compared without regard to case).
    pub recipient: Option<String>,
    /// Only messages created at or after this time.
    pub since: Option<i64>,
    /// Only messages created before this time.
    pub until: Option<i64>,
    /// Only test messages of this provider.
    pub test_provider: Option<ProviderId>,
    /// At most this many.
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    fn host(h: &str) -> SmtpHost {
        SmtpHost::parse(h).unwrap()
    }

    use super::*;

    fn settings() -> ServerSettings {
        ServerSettings {
            requires_auth: true,
            ..ServerSettings::new(
                "relay",
                host("mail.acme.example"),
                Port::new(587).unwrap(),
                Security::StartTls,
            )
        }
    }

    /// A server's mail going through another gateway, or through one
    /// instead of none or none instead of one, reaches another network: the
    /// password must not follow it there.
    #[test]
    fn a_changed_gateway_clears_secrets() {
        let direct = settings();
        let via = |g: GatewayId| ServerSettings {
            gateway_id: Some(g),
            ..settings()
        };
        let (a, b) = (GatewayId::new(), GatewayId::new());
        assert!(direct.change_clears_secrets(&via(a)), "none to a gateway");
        assert!(via(a).change_clears_secrets(&direct), "a gateway to none");
        assert!(via(a).change_clears_secrets(&via(b)), "another gateway");
        assert!(!via(a).change_clears_secrets(&via(a)), "the same gateway");
    }

    /// Every change that redirects or weakens trust clears the secrets; the
    /// others, and strengthening trust, keep them.
    #[test]
    fn only_changes_that_weaken_or_redirect_trust_clear_secrets() {
        let base = settings();
        let changed = |f: fn(&mut ServerSettings)| {
            let mut new = base.clone();
            f(&mut new);
            new
        };
        let clears: [(&str, ServerSettings); 9] = [
            (
                "plaintext AUTH allowed",
                changed(|s| s.allow_plaintext_auth = true),
            ),
            (
                "host",
                changed(|s| s.host = SmtpHost::parse("evil.example").unwrap()),
            ),
            ("port", changed(|s| s.port = Port::new(25).unwrap())),
            ("security to none", changed(|s| s.security = Security::None)),
            ("security to tls", changed(|s| s.security = Security::Tls)),
            ("tls_verify off", changed(|s| s.tls_verify = false)),
            (
                "a CA set",
                changed(|s| s.tls_ca_pem = Some("-----BEGIN CERTIFICATE-----".into())),
            ),
            (
                "a server name set",
                changed(|s| s.tls_server_name = Some(host("other.example"))),
            ),
            (
                "a server name changed",
                ServerSettings {
                    tls_server_name: Some(host("b.example")),
                    ..changed(|s| s.tls_server_name = Some(host("a.example")))
                },
            ),
        ];
        for (what, new) in &clears {
            assert!(
                base.change_clears_secrets(new),
                "{what} must clear the secrets"
            );
        }
        // From a server whose CA and name are set, removing them redirects trust too.
        let pinned = changed(|s| {
            s.tls_ca_pem = Some("-----BEGIN CERTIFICATE-----".into());
            s.tls_server_name = Some(host("a.example"));
        });
        assert!(pinned.change_clears_secrets(&base));

        let unverified = changed(|s| s.tls_verify = false);
        let plaintext = changed(|s| s.allow_plaintext_auth = true);
        let cleartext = changed(|s| s.security = Security::None);
        let keeps: [(&str, &ServerSettings, ServerSettings); 7] = [
            ("nothing", &base, base.clone()),
            (
                "tls_verify off without TLS",
                &cleartext,
                ServerSettings {
                    tls_verify: false,
                    ..cleartext.clone()
                },
            ),
            ("tls_verify on", &unverified, base.clone()),
            ("plaintext AUTH refused again", &plaintext, base.clone()),
            ("the name", &base, changed(|s| s.name = "renamed".into())),
            ("the pool size", &base, changed(|s| s.max_connections = 9)),
            (
                "the HELO name",
                &base,
                changed(|s| s.helo_name = Some(host("h.example"))),
            ),
        ];
        for (what, old, new) in &keeps {
            assert!(
                !old.change_clears_secrets(new),
                "{what} must keep the secrets"
            );
        }
    }
}

/// A tenant's delivery webhook as the API shows it: never its secret.
#[derive(Clone, Debug, Serialize)]
pub struct Webhook {
    pub id: WebhookId,
    #[serde(skip)]
    pub tenant_id: TenantId,
    pub url: String,
    pub events: EventSet,
    pub enabled: bool,
    /// Why Herald disabled it (every attempt failed for 24 hours); `None`
    /// while enabled, or when the tenant disabled it.
    pub disabled_reason: Option<String>,
    /// Since when every attempt to it failed; `None` after a success.
    #[serde(serialize_with = "herald_core::timestamp::serialize_opt")]
    pub failing_since: Option<i64>,
    /// After a rotation: until when events carry the previous secret's
    /// signature beside the new one's.
    #[serde(serialize_with = "herald_core::timestamp::serialize_opt")]
    pub previous_secret_until: Option<i64>,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub created_at: i64,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub updated_at: i64,
}

/// A webhook to store, its signing secret sealed (bound to its id).
#[derive(Clone, Debug)]
pub struct NewWebhook {
    pub id: WebhookId,
    pub tenant_id: TenantId,
    pub url: String,
    pub events: EventSet,
    pub enabled: bool,
    pub sealed_secret: String,
    pub created_at: i64,
}

/// What a PATCH changes; `None` keeps the stored value. Enabling a webhook
/// clears `disabled_reason` and `failing_since`.
#[derive(Clone, Debug, Default)]
pub struct WebhookChange {
    pub url: Option<String>,
    pub events: Option<EventSet>,
    pub enabled: Option<bool>,
}

/// Where one event stands on its way to one webhook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookDeliveryStatus {
    /// Waiting for its first attempt or a retry (or being attempted).
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Given up: still failing 24 hours after the event, or a test event's one attempt failed.
    Failed,
}

impl WebhookDeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookDeliveryStatus::Pending => "pending",
            WebhookDeliveryStatus::Delivered => "delivered",
            WebhookDeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            WebhookDeliveryStatus::Pending,
            WebhookDeliveryStatus::Delivered,
            WebhookDeliveryStatus::Failed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// One event's delivery to one webhook, with its latest attempt, as listed.
#[derive(Clone, Debug, Serialize)]
pub struct WebhookDelivery {
    /// The `webhook-id` header: the same on every attempt.
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub message_id: Option<MessageId>,
    pub status: WebhookDeliveryStatus,
    pub attempts: u32,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub created_at: i64,
    #[serde(serialize_with = "herald_core::timestamp::serialize_opt")]
    pub last_attempt_at: Option<i64>,
    /// The endpoint's HTTP status at the latest attempt, when it answered.
    pub response_status: Option<u16>,
    /// Why the latest attempt failed, when it did.
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
    /// When the next attempt is due, while pending.
    #[serde(serialize_with = "herald_core::timestamp::serialize_opt")]
    pub next_attempt_at: Option<i64>,
}

/// What a webhook dispatcher asks for: due events, leased until `lease_until`.
#[derive(Clone, Debug)]
pub struct WebhookClaim {
    /// The node and process that will hold the leases.
    pub node: String,
    pub incarnation: String,
    pub now: i64,
    pub lease_until: i64,
    pub limit: u32,
    /// Webhooks this node has no room for now.
    pub exclude: Vec<WebhookId>,
}

/// One event claimed for one webhook, with what sending it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedEvent {
    /// The outbox row: events of one message go to one webhook in this order.
    pub seq: i64,
    pub lease_token: i64,
    pub webhook: WebhookId,
    pub tenant_id: TenantId,
    pub url: String,
    pub sealed_secret: String,
    /// The previous secret while its overlap lasts.
    pub previous_sealed_secret: Option<String>,
    pub event_id: String,
    pub event_type: String,
    pub message_id: Option<MessageId>,
    /// The request body, exactly as signed.
    pub payload: String,
    pub created_at: i64,
    /// Attempts before this one.
    pub attempts: u32,
}

/// What became of one claimed event.
#[derive(Clone, Debug)]
pub struct WebhookAttempt {
    pub seq: i64,
    pub lease_token: i64,
    pub webhook: WebhookId,
    pub outcome: WebhookOutcome,
}

/// An attempt, or an event given back unattempted (an earlier event of its
/// message for the same webhook failed in the same run): due again at
/// `due_at`, no attempt counted.
#[derive(Clone, Debug)]
pub enum WebhookOutcome {
    Attempted(AttemptResult),
    GivenBack { due_at: i64 },
}

/// One attempt's result.
#[derive(Clone, Debug)]
pub struct AttemptResult {
    pub at: i64,
    pub response_status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub next: WebhookNext,
}

/// What follows an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookNext {
    Delivered,
    Retry { at: i64 },
    GiveUp,
}

/// A webhook Herald disabled because every attempt failed for too long.
#[derive(Clone, Debug)]
pub struct DisabledWebhook {
    pub id: WebhookId,
    pub tenant_id: TenantId,
    pub failing_since: i64,
}

/// A test event's one attempt, recorded among the webhook's deliveries.
#[derive(Clone, Debug)]
pub struct WebhookTestRecord {
    pub tenant_id: TenantId,
    pub webhook: WebhookId,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    pub result: AttemptResult,
}
