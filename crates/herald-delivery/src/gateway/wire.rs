//! The JSON a gateway and a node exchange (`POST /v1/gateway/claim`,
//! `/outcomes`, `/release`), and its conversions from and to the store's
//! records.
//!
//! Domain values (addresses, mailboxes, subjects, host names, header names…)
//! cross as strings and are parsed back with their constructors: a value
//! that does not parse is a protocol error, so nothing unchecked reaches the
//! delivery code on the other side. Stored text goes through the same
//! `from_stored` readers the store uses, so mail stored under older rules
//! still travels. Bytes (raw messages, attachments) cross as base64, times
//! as milliseconds since the Unix epoch.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use herald_core::{
    AccountId, DisplayName, EmailAddress, GatewayId, HeaderName, HeaderValue, Invalid, Mailbox,
    Mechanism, MessageId, PersonId, Port, ProviderId, RecipientId, RecipientStatus, Security,
    SenderPolicy, ServerId, SmtpHost, Subject, TenantId,
};
use herald_store::{
    Attachment, AttemptRecord, Claimed, MessageContent, NextState, OAuth2Client, OnBehalf, Outcome,
    Provider, ProviderConfig, ProviderSettings, ServerSettings, SmtpAccount, SmtpServer,
};
use serde::{Deserialize, Serialize};

/// The most recipients one claim may ask for.
pub const MAX_CLAIM: u32 = 256;
/// The longest a claim may wait for mail, in seconds.
pub const MAX_WAIT_SECONDS: u32 = 25;

/// A value of the protocol that does not parse: the peer speaks another
/// version, or something is broken between the two.
#[derive(Debug, thiserror::Error)]
#[error("gateway protocol: {field} {rule}")]
pub struct WireError {
    pub field: String,
    pub rule: String,
}

impl WireError {
    fn new(field: &str, rule: impl Into<String>) -> Self {
        WireError {
            field: field.to_owned(),
            rule: rule.into(),
        }
    }
}

/// Names the field of a constructor's refusal.
fn parsed<T>(field: &str, result: Result<T, Invalid>) -> Result<T, WireError> {
    result.map_err(|e| WireError::new(field, e.to_string()))
}

fn bytes(field: &str, text: &str) -> Result<Vec<u8>, WireError> {
    B64.decode(text)
        .map_err(|_| WireError::new(field, "must be base64"))
}

fn opt<T>(
    value: Option<String>,
    read: impl FnOnce(&str) -> Result<T, WireError>,
) -> Result<Option<T>, WireError> {
    value.as_deref().map(read).transpose()
}

// ---------------------------------------------------------------------------
// Requests and answers.

/// `POST /v1/gateway/claim`: an instance asks for due mail. Its `Debug`
/// leaves the key out.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// The instance's name, unique within its gateway (its host name by default).
    pub instance: String,
    /// The gateway program's version.
    pub version: String,
    /// The instance's process: a random id of this run.
    pub incarnation: String,
    /// Recipients to claim at most, 1 to [`MAX_CLAIM`]; 0 claims nothing and
    /// answers at once, a report that the instance is alive (see
    /// `RemoteStore::report`).
    pub limit: u32,
    /// How long to wait when nothing is due, 0 to [`MAX_WAIT_SECONDS`].
    #[serde(default = "default_wait")]
    pub wait_seconds: u32,
    /// Base64 of the 32-byte key the instance made: the accounts' secrets
    /// come sealed under it.
    pub key: String,
}

impl std::fmt::Debug for ClaimBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimBody")
            .field("instance", &self.instance)
            .field("version", &self.version)
            .field("incarnation", &self.incarnation)
            .field("limit", &self.limit)
            .field("wait_seconds", &self.wait_seconds)
            .finish_non_exhaustive()
    }
}

fn default_wait() -> u32 {
    MAX_WAIT_SECONDS
}

impl ClaimBody {
    /// The key the instance sent, when it is 32 bytes of base64.
    pub fn key(&self) -> Result<[u8; herald_core::Sealer::KEY_LEN], WireError> {
        bytes("key", &self.key)?
            .try_into()
            .map_err(|_| WireError::new("key", "must be 32 bytes"))
    }
}

/// The answer to a claim: the recipients claimed, their messages, and the
/// provider configurations they go through (accounts' secrets sealed under
/// the instance's key).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClaimAnswer {
    /// The lease each claim holds, in milliseconds.
    pub lease_ms: i64,
    /// The node's clock when it answered: a claimed recipient's lease has
    /// `lease_until - now` left then, whatever the gateway's clock says.
    pub now: i64,
    pub recipients: Vec<WireClaimed>,
    pub messages: Vec<WireMessage>,
    pub providers: Vec<WireProvider>,
}

/// A provider configuration: for a test message's provider
/// (`test_provider`), or the tenant's active one (`test_provider` null).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireProvider {
    pub test_provider: Option<ProviderId>,
    pub config: WireProviderConfig,
}

/// `POST /v1/gateway/outcomes`: what the instance's attempts came to.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomesBody {
    pub instance: String,
    pub outcomes: Vec<WireOutcome>,
}

/// Which outcomes the node accepted, in order (a refused one's lease was no
/// longer current).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutcomesAnswer {
    pub accepted: Vec<bool>,
}

/// `POST /v1/gateway/release`: claimed recipients given back unsent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    pub instance: String,
    pub leases: Vec<WireLease>,
}

/// A claimed recipient and its fencing token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLease {
    pub recipient: RecipientId,
    pub lease_token: i64,
}

// ---------------------------------------------------------------------------
// Claims.

/// A [`Claimed`] recipient.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireClaimed {
    pub recipient: RecipientId,
    pub message: MessageId,
    pub tenant: TenantId,
    pub address: String,
    pub lease_token: i64,
    pub lease_until: i64,
    pub attempt: u32,
}

impl From<&Claimed> for WireClaimed {
    fn from(c: &Claimed) -> Self {
        WireClaimed {
            recipient: c.recipient,
            message: c.message,
            tenant: c.tenant,
            address: c.address.to_string(),
            lease_token: c.lease_token,
            lease_until: c.lease_until,
            attempt: c.attempt,
        }
    }
}

impl TryFrom<WireClaimed> for Claimed {
    type Error = WireError;
    fn try_from(c: WireClaimed) -> Result<Self, WireError> {
        Ok(Claimed {
            recipient: c.recipient,
            message: c.message,
            tenant: c.tenant,
            address: parsed("address", EmailAddress::parse(&c.address))?,
            lease_token: c.lease_token,
            lease_until: c.lease_until,
            attempt: c.attempt,
        })
    }
}

// ---------------------------------------------------------------------------
// Messages.

/// A [`MessageContent`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireMessage {
    pub id: MessageId,
    pub tenant_id: TenantId,
    pub created_at: i64,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub reply_to: Option<String>,
    pub headers: Vec<(String, String)>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub on_behalf_of: Option<WireOnBehalf>,
    pub test_provider: Option<ProviderId>,
    /// Base64 of the message as received over SMTP.
    pub raw: Option<String>,
    pub attachments: Vec<WireAttachment>,
    pub send_at: Option<i64>,
}

/// An [`OnBehalf`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireOnBehalf {
    pub name: String,
    pub email: String,
}

/// An [`Attachment`], its content in base64.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireAttachment {
    pub filename: String,
    pub content_type: String,
    pub content_id: Option<String>,
    pub content: String,
}

impl From<&MessageContent> for WireMessage {
    fn from(m: &MessageContent) -> Self {
        WireMessage {
            id: m.id,
            tenant_id: m.tenant_id,
            created_at: m.created_at,
            subject: m.subject.to_string(),
            text: m.text.clone(),
            html: m.html.clone(),
            reply_to: m.reply_to.as_ref().map(ToString::to_string),
            headers: m
                .headers
                .iter()
                .map(|(n, v)| (n.as_ref().to_owned(), v.to_string()))
                .collect(),
            to: m.to.iter().map(ToString::to_string).collect(),
            cc: m.cc.iter().map(ToString::to_string).collect(),
            on_behalf_of: m.on_behalf_of.as_ref().map(|o| WireOnBehalf {
                name: o.name.clone(),
                email: o.email.to_string(),
            }),
            test_provider: m.test_provider,
            raw: m.raw.as_ref().map(|r| B64.encode(r)),
            attachments: m
                .attachments
                .iter()
                .map(|a| WireAttachment {
                    filename: a.filename.clone(),
                    content_type: a.content_type.clone(),
                    content_id: a.content_id.clone(),
                    content: B64.encode(&a.content),
                })
                .collect(),
            send_at: m.send_at,
        }
    }
}

fn mailboxes(field: &str, list: &[String]) -> Result<Vec<Mailbox>, WireError> {
    list.iter()
        .map(|m| parsed(field, Mailbox::from_stored(m)))
        .collect()
}

impl TryFrom<WireMessage> for MessageContent {
    type Error = WireError;
    fn try_from(m: WireMessage) -> Result<Self, WireError> {
        Ok(MessageContent {
            id: m.id,
            tenant_id: m.tenant_id,
            created_at: m.created_at,
            subject: parsed("subject", Subject::from_stored(&m.subject))?,
            text: m.text,
            html: m.html,
            reply_to: opt(m.reply_to, |r| parsed("reply_to", Mailbox::from_stored(r)))?,
            headers: m
                .headers
                .iter()
                .map(|(n, v)| {
                    Ok((
                        parsed("header name", HeaderName::parse(n))?,
                        parsed("header value", HeaderValue::from_stored(v))?,
                    ))
                })
                .collect::<Result<_, WireError>>()?,
            to: mailboxes("to", &m.to)?,
            cc: mailboxes("cc", &m.cc)?,
            on_behalf_of: m
                .on_behalf_of
                .map(|o| {
                    Ok::<_, WireError>(OnBehalf {
                        name: o.name,
                        email: parsed("on_behalf_of.email", EmailAddress::parse(&o.email))?,
                    })
                })
                .transpose()?,
            test_provider: m.test_provider,
            raw: opt(m.raw, |r| bytes("raw", r))?,
            attachments: m
                .attachments
                .into_iter()
                .map(|a| {
                    Ok(Attachment {
                        content: bytes("attachment content", &a.content)?,
                        filename: a.filename,
                        content_type: a.content_type,
                        content_id: a.content_id,
                    })
                })
                .collect::<Result<_, WireError>>()?,
            send_at: m.send_at,
        })
    }
}

// ---------------------------------------------------------------------------
// Outcomes.

/// An [`Outcome`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireOutcome {
    pub recipient: RecipientId,
    pub lease_token: i64,
    pub next: NextState,
    pub attempt: WireAttempt,
}

/// An [`AttemptRecord`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireAttempt {
    pub at: i64,
    pub node: String,
    pub server: String,
    pub outcome: String,
    pub step: Option<String>,
    pub code: Option<u16>,
    pub enhanced_code: Option<String>,
    pub response: String,
    pub duration_ms: i64,
    pub remote_addr: Option<String>,
    pub tls_version: Option<String>,
    pub tls_cipher: Option<String>,
    pub provider_id: Option<ProviderId>,
    pub config_version: Option<i64>,
    pub sender_policy: Option<String>,
    pub diagnosis: Option<serde_json::Value>,
}

impl From<&Outcome> for WireOutcome {
    fn from(o: &Outcome) -> Self {
        let a = &o.attempt;
        WireOutcome {
            recipient: o.recipient,
            lease_token: o.lease_token,
            next: o.next,
            attempt: WireAttempt {
                at: a.at,
                node: a.node.clone(),
                server: a.server.clone(),
                outcome: a.outcome.as_str().to_owned(),
                step: a.step.clone(),
                code: a.code,
                enhanced_code: a.enhanced_code.clone(),
                response: a.response.clone(),
                duration_ms: a.duration_ms,
                remote_addr: a.remote_addr.clone(),
                tls_version: a.tls_version.clone(),
                tls_cipher: a.tls_cipher.clone(),
                provider_id: a.provider_id,
                config_version: a.config_version,
                sender_policy: a.sender_policy.clone(),
                diagnosis: a.diagnosis.clone(),
            },
        }
    }
}

impl TryFrom<WireOutcome> for Outcome {
    type Error = WireError;
    fn try_from(o: WireOutcome) -> Result<Self, WireError> {
        let a = o.attempt;
        // An attempt ends sent, deferred or failed, nothing else.
        let outcome = RecipientStatus::from_stored(&a.outcome)
            .filter(|s| {
                matches!(
                    s,
                    RecipientStatus::Sent | RecipientStatus::Deferred | RecipientStatus::Failed
                )
            })
            .ok_or_else(|| WireError::new("attempt.outcome", "must be sent, deferred or failed"))?;
        Ok(Outcome {
            recipient: o.recipient,
            lease_token: o.lease_token,
            next: o.next,
            attempt: AttemptRecord {
                at: a.at,
                node: a.node,
                server: a.server,
                outcome,
                step: a.step,
                code: a.code,
                enhanced_code: a.enhanced_code,
                response: a.response,
                duration_ms: a.duration_ms,
                remote_addr: a.remote_addr,
                tls_version: a.tls_version,
                tls_cipher: a.tls_cipher,
                provider_id: a.provider_id,
                config_version: a.config_version,
                sender_policy: a.sender_policy,
                diagnosis: a.diagnosis,
            },
        })
    }
}

// ---------------------------------------------------------------------------
// Provider configurations.

/// A [`ProviderConfig`]: the provider, its server, and its account with the
/// secret sealed for the instance that claimed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireProviderConfig {
    pub provider: WireProviderRecord,
    pub server: WireServer,
    pub account: Option<WireAccount>,
}

/// A [`Provider`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireProviderRecord {
    pub id: ProviderId,
    pub tenant_id: TenantId,
    pub name: String,
    pub smtp_server_id: ServerId,
    pub account_id: Option<AccountId>,
    pub from_address: String,
    pub from_name: Option<String>,
    pub reply_to: Option<String>,
    pub fallback_recipient: Option<String>,
    pub sender_policy: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An [`SmtpServer`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireServer {
    pub id: ServerId,
    pub tenant_id: TenantId,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub security: String,
    pub requires_auth: bool,
    pub allow_plaintext_auth: bool,
    pub tls_verify: bool,
    pub tls_ca_pem: Option<String>,
    pub tls_server_name: Option<String>,
    pub helo_name: Option<String>,
    pub max_connections: u32,
    pub max_messages_per_connection: u32,
    pub idle_timeout_secs: u32,
    pub rate_limit_per_minute: Option<u32>,
    pub command_timeout_secs: Option<u32>,
    pub gateway_id: Option<GatewayId>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An [`SmtpAccount`]; `sealed_secret` is sealed for the claiming instance.
#[derive(Clone, Serialize, Deserialize)]
pub struct WireAccount {
    pub id: AccountId,
    pub server_id: ServerId,
    pub tenant_id: TenantId,
    pub username: String,
    pub mechanism: String,
    pub sealed_secret: Option<String>,
    pub oauth2: Option<OAuth2Client>,
    pub person_id: Option<PersonId>,
    pub created_at: i64,
}

impl std::fmt::Debug for WireAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Even sealed, a secret stays out of logs.
        f.debug_struct("WireAccount")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("mechanism", &self.mechanism)
            .field("secret_set", &self.sealed_secret.is_some())
            .finish_non_exhaustive()
    }
}

impl From<&ProviderConfig> for WireProviderConfig {
    /// The configuration as stored; the account's secret as it is sealed
    /// in the record (the node re-seals it for the instance first).
    fn from(c: &ProviderConfig) -> Self {
        let p = &c.provider.settings;
        let s = &c.server.settings;
        WireProviderConfig {
            provider: WireProviderRecord {
                id: c.provider.id,
                tenant_id: c.provider.tenant_id,
                name: p.name.clone(),
                smtp_server_id: p.smtp_server_id,
                account_id: p.account_id,
                from_address: p.from_address.to_string(),
                from_name: p.from_name.as_ref().map(ToString::to_string),
                reply_to: p.reply_to.as_ref().map(ToString::to_string),
                fallback_recipient: p.fallback_recipient.as_ref().map(ToString::to_string),
                sender_policy: p.sender_policy.as_str().to_owned(),
                created_at: c.provider.created_at,
                updated_at: c.provider.updated_at,
            },
            server: WireServer {
                id: c.server.id,
                tenant_id: c.server.tenant_id,
                name: s.name.clone(),
                host: s.host.to_string(),
                port: s.port.get(),
                security: s.security.as_str().to_owned(),
                requires_auth: s.requires_auth,
                allow_plaintext_auth: s.allow_plaintext_auth,
                tls_verify: s.tls_verify,
                tls_ca_pem: s.tls_ca_pem.clone(),
                tls_server_name: s.tls_server_name.as_ref().map(ToString::to_string),
                helo_name: s.helo_name.as_ref().map(ToString::to_string),
                max_connections: s.max_connections,
                max_messages_per_connection: s.max_messages_per_connection,
                idle_timeout_secs: s.idle_timeout_secs,
                rate_limit_per_minute: s.rate_limit_per_minute,
                command_timeout_secs: s.command_timeout_secs,
                gateway_id: s.gateway_id,
                created_at: c.server.created_at,
                updated_at: c.server.updated_at,
            },
            account: c.account.as_ref().map(|a| WireAccount {
                id: a.id,
                server_id: a.server_id,
                tenant_id: a.tenant_id,
                username: a.username.clone(),
                mechanism: a.mechanism.as_str().to_owned(),
                sealed_secret: a.sealed_secret.clone(),
                oauth2: a.oauth2.clone(),
                person_id: a.person_id,
                created_at: a.created_at,
            }),
        }
    }
}

fn host(field: &str, value: &str) -> Result<SmtpHost, WireError> {
    parsed(field, SmtpHost::from_stored(value))
}

impl TryFrom<WireProviderConfig> for ProviderConfig {
    type Error = WireError;
    fn try_from(c: WireProviderConfig) -> Result<Self, WireError> {
        let p = c.provider;
        let s = c.server;
        let provider = Provider {
            id: p.id,
            tenant_id: p.tenant_id,
            settings: ProviderSettings {
                name: p.name,
                smtp_server_id: p.smtp_server_id,
                account_id: p.account_id,
                from_address: parsed("from_address", EmailAddress::parse(&p.from_address))?,
                from_name: opt(p.from_name, |n| {
                    parsed("from_name", DisplayName::from_stored(n))
                })?,
                reply_to: opt(p.reply_to, |r| parsed("reply_to", Mailbox::from_stored(r)))?,
                fallback_recipient: opt(p.fallback_recipient, |r| {
                    parsed("fallback_recipient", EmailAddress::parse(r))
                })?,
                sender_policy: parsed("sender_policy", SenderPolicy::parse(&p.sender_policy))?,
            },
            created_at: p.created_at,
            updated_at: p.updated_at,
        };
        let server = SmtpServer {
            id: s.id,
            tenant_id: s.tenant_id,
            settings: ServerSettings {
                name: s.name,
                host: host("host", &s.host)?,
                port: parsed("port", Port::new(i64::from(s.port)))?,
                security: parsed("security", Security::parse(&s.security))?,
                requires_auth: s.requires_auth,
                allow_plaintext_auth: s.allow_plaintext_auth,
                tls_verify: s.tls_verify,
                tls_ca_pem: s.tls_ca_pem,
                tls_server_name: opt(s.tls_server_name, |h| host("tls_server_name", h))?,
                helo_name: opt(s.helo_name, |h| host("helo_name", h))?,
                max_connections: s.max_connections,
                max_messages_per_connection: s.max_messages_per_connection,
                idle_timeout_secs: s.idle_timeout_secs,
                rate_limit_per_minute: s.rate_limit_per_minute,
                command_timeout_secs: s.command_timeout_secs,
                gateway_id: s.gateway_id,
            },
            created_at: s.created_at,
            updated_at: s.updated_at,
        };
        let account = c
            .account
            .map(|a| {
                Ok::<_, WireError>(SmtpAccount {
                    id: a.id,
                    server_id: a.server_id,
                    tenant_id: a.tenant_id,
                    username: a.username,
                    mechanism: parsed("mechanism", Mechanism::parse(&a.mechanism))?,
                    secret_set: a.sealed_secret.is_some(),
                    sealed_secret: a.sealed_secret,
                    oauth2: a.oauth2,
                    person_id: a.person_id,
                    created_at: a.created_at,
                })
            })
            .transpose()?;
        Ok(ProviderConfig {
            provider,
            server,
            account,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Through JSON and back, as the other side reads it.
    fn across<W: Serialize + serde::de::DeserializeOwned>(wire: W) -> W {
        serde_json::from_str(&serde_json::to_string(&wire).unwrap()).unwrap()
    }

    #[test]
    fn a_claim_crosses() {
        let claimed = Claimed {
            recipient: RecipientId::new(),
            message: MessageId::new(),
            tenant: TenantId::new(),
            address: EmailAddress::parse("ada@example.com").unwrap(),
            lease_token: 7,
            lease_until: 1_000,
            attempt: 2,
        };
        let back = Claimed::try_from(across(WireClaimed::from(&claimed))).unwrap();
        assert_eq!(
            (back.recipient, back.message, back.tenant, &back.address),
            (
                claimed.recipient,
                claimed.message,
                claimed.tenant,
                &claimed.address
            )
        );
        assert_eq!(
            (back.lease_token, back.lease_until, back.attempt),
            (7, 1_000, 2)
        );
    }

    fn message() -> MessageContent {
        MessageContent {
            id: MessageId::new(),
            tenant_id: TenantId::new(),
            created_at: 5,
            subject: Subject::parse("Disk full – ünïcode").unwrap(),
            text: Some("body".into()),
            html: Some("<p>body</p>".into()),
            reply_to: Some(Mailbox::parse("\"Lovelace, Ada\" <ada@example.com>").unwrap()),
            headers: vec![(
                HeaderName::parse("X-Alert-Id").unwrap(),
                HeaderValue::parse("42").unwrap(),
            )],
            to: vec![Mailbox::parse("Bob <bob@example.com>").unwrap()],
            cc: vec![Mailbox::parse("carol@example.com").unwrap()],
            on_behalf_of: Some(OnBehalf {
                name: "Dee".into(),
                email: EmailAddress::parse("dee@example.com").unwrap(),
            }),
            test_provider: Some(ProviderId::new()),
            raw: Some(vec![0, 1, 2, 255, b'\r', b'\n']),
            attachments: vec![Attachment {
                filename: "a.bin".into(),
                content_type: "application/octet-stream".into(),
                content_id: Some("img1".into()),
                content: vec![9, 8, 7, 0],
            }],
            send_at: Some(9),
        }
    }

    #[test]
    fn a_message_crosses_with_its_bytes() {
        let m = message();
        let back = MessageContent::try_from(across(WireMessage::from(&m))).unwrap();
        assert_eq!(back.id, m.id);
        assert_eq!(back.tenant_id, m.tenant_id);
        assert_eq!(back.created_at, m.created_at);
        assert_eq!(back.subject, m.subject);
        assert_eq!((&back.text, &back.html), (&m.text, &m.html));
        assert_eq!(back.reply_to, m.reply_to);
        assert_eq!(back.headers, m.headers);
        assert_eq!((&back.to, &back.cc), (&m.to, &m.cc));
        assert_eq!(back.on_behalf_of, m.on_behalf_of);
        assert_eq!(back.test_provider, m.test_provider);
        assert_eq!(back.raw, m.raw);
        assert_eq!(back.attachments, m.attachments);
        assert_eq!(back.send_at, m.send_at);
    }

    #[test]
    fn a_value_that_does_not_parse_is_a_protocol_error() {
        let mut wire = WireMessage::from(&message());
        wire.to = vec!["not an address".into()];
        assert_eq!(MessageContent::try_from(wire).unwrap_err().field, "to");
        let mut wire = WireMessage::from(&message());
        wire.headers = vec![("Bcc".into(), "x@example.com".into())];
        assert!(MessageContent::try_from(wire).is_err());
        let mut wire = WireMessage::from(&message());
        wire.raw = Some("%%%".into());
        assert_eq!(MessageContent::try_from(wire).unwrap_err().field, "raw");
        let mut wire = WireMessage::from(&message());
        wire.subject = "two\r\nlines".into();
        assert!(MessageContent::try_from(wire).is_err());
    }

    #[test]
    fn an_outcome_crosses() {
        for next in [
            NextState::Sent,
            NextState::Deferred { until: 77 },
            NextState::Failed,
        ] {
            let outcome = Outcome {
                recipient: RecipientId::new(),
                lease_token: 3,
                next,
                attempt: AttemptRecord {
                    at: 11,
                    node: "gw:office/host1".into(),
                    server: "mail.example.com:587".into(),
                    outcome: RecipientStatus::Sent,
                    step: Some("data".into()),
                    code: Some(250),
                    enhanced_code: Some("2.0.0".into()),
                    response: "ok".into(),
                    duration_ms: 12,
                    remote_addr: Some("10.0.0.1:587".into()),
                    tls_version: Some("TLSv1.3".into()),
                    tls_cipher: None,
                    provider_id: Some(ProviderId::new()),
                    config_version: Some(4),
                    sender_policy: Some("fixed".into()),
                    diagnosis: Some(serde_json::json!({"steps": []})),
                },
            };
            let back = Outcome::try_from(across(WireOutcome::from(&outcome))).unwrap();
            assert_eq!(back.next, outcome.next);
            assert_eq!((back.recipient, back.lease_token), (outcome.recipient, 3));
            assert_eq!(
                serde_json::to_value(&back.attempt).unwrap(),
                serde_json::to_value(&outcome.attempt).unwrap()
            );
        }
    }

    #[test]
    fn an_attempt_ends_sent_deferred_or_failed() {
        let mut wire = WireOutcome {
            recipient: RecipientId::new(),
            lease_token: 1,
            next: NextState::Sent,
            attempt: serde_json::from_value(serde_json::json!({
                "at": 1, "node": "gw", "server": "s", "outcome": "cancelled", "step": null,
                "code": null, "enhanced_code": null, "response": "", "duration_ms": 0,
                "remote_addr": null, "tls_version": null, "tls_cipher": null,
                "provider_id": null, "config_version": null, "sender_policy": null,
                "diagnosis": null
            }))
            .unwrap(),
        };
        assert!(Outcome::try_from(wire.clone()).is_err());
        wire.attempt.outcome = "sent".into();
        assert!(Outcome::try_from(wire).is_ok());
    }

    fn config() -> ProviderConfig {
        let tenant = TenantId::new();
        let server = ServerId::new();
        let account = AccountId::new();
        ProviderConfig {
            provider: Provider {
                id: ProviderId::new(),
                tenant_id: tenant,
                settings: ProviderSettings {
                    name: "office".into(),
                    smtp_server_id: server,
                    account_id: Some(account),
                    from_address: EmailAddress::parse("alerts@example.com").unwrap(),
                    from_name: Some(DisplayName::parse("Alerts").unwrap()),
                    reply_to: Some(Mailbox::parse("Ops <ops@example.com>").unwrap()),
                    fallback_recipient: Some(EmailAddress::parse("fb@example.com").unwrap()),
                    sender_policy: SenderPolicy::OnBehalf,
                },
                created_at: 1,
                updated_at: 2,
            },
            server: SmtpServer {
                id: server,
                tenant_id: tenant,
                settings: ServerSettings {
                    name: "exchange".into(),
                    host: SmtpHost::parse("mail.corp.example").unwrap(),
                    port: Port::new(587).unwrap(),
                    security: Security::StartTls,
                    requires_auth: true,
                    allow_plaintext_auth: false,
                    tls_verify: true,
                    tls_ca_pem: Some("-----BEGIN CERTIFICATE-----".into()),
                    tls_server_name: Some(SmtpHost::parse("mx.corp.example").unwrap()),
                    helo_name: Some(SmtpHost::parse("herald.corp.example").unwrap()),
                    max_connections: 4,
                    max_messages_per_connection: 100,
                    idle_timeout_secs: 30,
                    rate_limit_per_minute: Some(60),
                    command_timeout_secs: Some(20),
                    gateway_id: Some(GatewayId::new()),
                },
                created_at: 3,
                updated_at: 4,
            },
            account: Some(SmtpAccount {
                id: account,
                server_id: server,
                tenant_id: tenant,
                username: "svc".into(),
                mechanism: Mechanism::Xoauth2,
                secret_set: true,
                sealed_secret: Some("hk1.abcd.xyz".into()),
                oauth2: Some(OAuth2Client {
                    token_url: "https://login.example/token".into(),
                    client_id: "client".into(),
                    scope: Some("smtp".into()),
                }),
                person_id: Some(PersonId::new()),
                created_at: 5,
            }),
        }
    }

    #[test]
    fn a_provider_config_crosses() {
        let c = config();
        let back = ProviderConfig::try_from(across(WireProviderConfig::from(&c))).unwrap();
        assert_eq!(
            serde_json::to_value(&back.provider).unwrap(),
            serde_json::to_value(&c.provider).unwrap()
        );
        assert_eq!(back.server.settings, c.server.settings);
        assert_eq!(
            (
                back.server.id,
                back.server.created_at,
                back.server.updated_at
            ),
            (c.server.id, 3, 4)
        );
        let (a, b) = (back.account.unwrap(), c.account.unwrap());
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::to_value(&b).unwrap()
        );
        assert_eq!(a.sealed_secret, b.sealed_secret);
    }

    #[test]
    fn a_sealed_secret_never_shows_in_debug() {
        let wire = WireProviderConfig::from(&config());
        assert!(!format!("{wire:?}").contains("hk1.abcd.xyz"));
    }

    #[test]
    fn a_claim_body_carries_a_32_byte_key() {
        let body = |key: &str| ClaimBody {
            instance: "i".into(),
            version: "v".into(),
            incarnation: "x".into(),
            limit: 1,
            wait_seconds: 0,
            key: key.into(),
        };
        let key = herald_core::Sealer::generate_key();
        assert_eq!(body(&B64.encode(key)).key().unwrap(), key);
        assert!(body(&B64.encode([0u8; 16])).key().is_err());
        assert!(body("not base64!").key().is_err());
        let shown = format!("{:?}", body(&B64.encode(key)));
        assert!(!shown.contains(&B64.encode(key)), "{shown}");
        let parsed: ClaimBody = serde_json::from_value(serde_json::json!({
            "instance": "i", "version": "v", "incarnation": "x", "limit": 3, "key": "AA=="
        }))
        .unwrap();
        assert_eq!(parsed.wait_seconds, MAX_WAIT_SECONDS);
    }
}
