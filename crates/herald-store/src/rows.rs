//! Stored rows back into domain values, once for both backends: each entity
//! has one mapper over [`Columns`], which each backend implements for its rows.

use std::str::FromStr;

use herald_core::{
    DisplayName, EmailAddress, HeaderName, HeaderValue, Invalid, Mailbox, Mechanism, NodeRole,
    PersonRole, Port, RecipientStatus, Role, Security, SenderPolicy, SmtpHost, TenantSlug,
};

use herald_core::webhook::EventSet;

use crate::model::*;
use crate::{Result, StoreError};

/// Reading a row's columns by name, whatever the backend. A column whose
/// type does not match means the database is not Herald's: the backend's
/// own error.
pub(crate) trait Columns {
    fn text(&self, column: &str) -> Result<String>;
    fn opt_text(&self, column: &str) -> Result<Option<String>>;
    fn int(&self, column: &str) -> Result<i64>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>>;
    fn flag(&self, column: &str) -> Result<bool>;
}

/// Parses a stored value back into its domain type; failure means the data
/// was changed behind Herald's back.
pub(crate) fn stored<T, E: std::fmt::Display>(
    what: &str,
    parsed: std::result::Result<T, E>,
) -> Result<T> {
    parsed.map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(crate) fn id<T: FromStr<Err = Invalid>>(s: String) -> Result<T> {
    stored("id", T::from_str(&s))
}

pub(crate) fn opt_id<T: FromStr<Err = Invalid>>(s: Option<String>) -> Result<Option<T>> {
    s.map(id).transpose()
}

pub(crate) fn address(s: String) -> Result<EmailAddress> {
    stored("address", EmailAddress::parse(&s))
}

/// A Reply-To, stored as the mailbox's canonical string; rows from before
/// Reply-To took a display name hold the bare address, which parses too.
pub(crate) fn reply_to_mailbox(s: String) -> Result<Mailbox> {
    stored("reply_to", Mailbox::from_stored(&s))
}

/// A message's extra headers, stored as name and value pairs.
pub(crate) fn headers(pairs: Vec<(String, String)>) -> Result<Vec<(HeaderName, HeaderValue)>> {
    pairs
        .into_iter()
        .map(|(n, v)| {
            Ok((
                stored("header name", HeaderName::parse(&n))?,
                stored("header value", HeaderValue::from_stored(&v))?,
            ))
        })
        .collect()
}

/// A message's extra headers as the name and value pairs stored.
pub(crate) fn header_pairs(headers: &[(HeaderName, HeaderValue)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_ref(), v.as_ref()))
        .collect()
}

pub(crate) fn status(s: &str) -> Result<RecipientStatus> {
    RecipientStatus::from_stored(s).ok_or_else(|| StoreError::Corrupt(format!("status {s:?}")))
}

/// A stored count or limit, which no valid row makes negative or huge.
fn count(r: &impl Columns, column: &str) -> Result<u32> {
    stored(column, u32::try_from(r.int(column)?))
}

fn opt_count(r: &impl Columns, column: &str) -> Result<Option<u32>> {
    r.opt_int(column)?
        .map(|v| stored(column, u32::try_from(v)))
        .transpose()
}

fn opt_host(r: &impl Columns, column: &str) -> Result<Option<SmtpHost>> {
    r.opt_text(column)?
        .map(|h| stored(column, SmtpHost::from_stored(&h)))
        .transpose()
}

/// A session, from [`crate::sql::SESSION_BY_HASH`]'s columns and the person
/// its `person_id` names (loaded from [`crate::sql::SESSION_PERSON`]).
pub(crate) fn session(r: &impl Columns, person: Option<Person>) -> Result<Session> {
    Ok(Session {
        id: id(r.text("id")?)?,
        principal: principal(r.opt_text("operator_email")?, person)?,
        created_at: r.int("created_at")?,
        expires_at: r.int("expires_at")?,
    })
}

/// The values of a session's `operator_email` and `person_id` columns.
pub(crate) fn session_subject_values(subject: &SessionSubject) -> (Option<String>, Option<String>) {
    match subject {
        SessionSubject::Operator(email) => (Some(email.to_lowercase()), None),
        SessionSubject::Person(id) => (None, Some(id.to_string())),
    }
}

/// An operator who may sign in, from [`crate::sql::OPERATOR_CREDENTIALS`]'s columns.
pub(crate) fn operator_credential(r: &impl Columns) -> Result<Credential> {
    Ok(Credential {
        principal: Principal::Operator(r.text("email")?),
        password_hash: r.text("password_hash")?,
    })
}

/// A person who may sign in, from [`crate::sql::PERSON_CREDENTIALS`]'s columns.
pub(crate) fn person_credential(r: &impl Columns) -> Result<Credential> {
    Ok(Credential {
        principal: Principal::Person(person(r)?),
        password_hash: r.text("password_hash")?,
    })
}

/// Who a session is for, from its `operator_email` column and its person
/// (loaded by `person_id`): exactly one of them.
pub(crate) fn principal(
    operator_email: Option<String>,
    person: Option<Person>,
) -> Result<Principal> {
    match (operator_email, person) {
        (Some(email), None) => Ok(Principal::Operator(email)),
        (None, Some(person)) => Ok(Principal::Person(person)),
        _ => Err(StoreError::Corrupt(
            "a session is an operator's or a person's".into(),
        )),
    }
}

/// A node's roles as stored: their words joined by commas.
pub(crate) fn roles_text(roles: &[NodeRole]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// A node, from the columns `name, roles, version, started_at, heartbeat_at, incarnation`.
pub(crate) fn node(r: &impl Columns) -> Result<NodeRecord> {
    Ok(NodeRecord {
        name: r.text("name")?,
        roles: r
            .text("roles")?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|role| stored("roles", NodeRole::parse(role)))
            .collect::<Result<_>>()?,
        version: r.text("version")?,
        started_at: r.int("started_at")?,
        heartbeat_at: r.int("heartbeat_at")?,
        incarnation: r.opt_text("incarnation")?,
    })
}

/// A tenant, from the columns `id, slug, name, credential_storage,
/// notification_provider_id, previous_provider_id, properties_effective_from, created_at`.
///
/// A tenant whose provider never changed has the column at 0 ("always");
/// nothing about a tenant was in effect before it existed, so it reads as
/// its creation time.
pub(crate) fn tenant(r: &impl Columns) -> Result<Tenant> {
    let created_at = r.int("created_at")?;
    Ok(Tenant {
        id: id(r.text("id")?)?,
        slug: stored("slug", TenantSlug::parse(&r.text("slug")?))?,
        name: r.text("name")?,
        credential_storage: r.flag("credential_storage")?,
        notification_provider_id: opt_id(r.opt_text("notification_provider_id")?)?,
        previous_provider_id: opt_id(r.opt_text("previous_provider_id")?)?,
        properties_effective_from: r.int("properties_effective_from")?.max(created_at),
        created_at,
    })
}

/// An API token's record (never its value), from the columns `id, tenant_id,
/// name, role, person_id, created_at, last_used_at, bootstrap`.
pub(crate) fn token(r: &impl Columns) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: id(r.text("id")?)?,
        tenant_id: opt_id(r.opt_text("tenant_id")?)?,
        name: r.text("name")?,
        role: stored("role", Role::parse(&r.text("role")?))?,
        person_id: opt_id(r.opt_text("person_id")?)?,
        created_at: r.int("created_at")?,
        last_used_at: r.opt_int("last_used_at")?,
        bootstrap: r.flag("bootstrap")?,
    })
}

/// A person, from the columns `id, tenant_id, name, email, role, created_at`.
pub(crate) fn person(r: &impl Columns) -> Result<Person> {
    Ok(Person {
        id: id(r.text("id")?)?,
        tenant_id: id(r.text("tenant_id")?)?,
        name: r.text("name")?,
        email: address(r.text("email")?)?,
        role: stored("role", PersonRole::parse(&r.text("role")?))?,
        created_at: r.int("created_at")?,
    })
}

/// An SMTP server entry, from the server columns both backends select.
pub(crate) fn server(r: &impl Columns) -> Result<SmtpServer> {
    Ok(SmtpServer {
        id: id(r.text("id")?)?,
        tenant_id: id(r.text("tenant_id")?)?,
        settings: ServerSettings {
            name: r.text("name")?,
            host: stored("host", SmtpHost::from_stored(&r.text("host")?))?,
            port: stored("port", Port::new(r.int("port")?))?,
            security: stored("security", Security::parse(&r.text("security")?))?,
            requires_auth: r.flag("requires_auth")?,
            allow_plaintext_auth: r.flag("allow_plaintext_auth")?,
            tls_verify: r.flag("tls_verify")?,
            tls_ca_pem: r.opt_text("tls_ca_pem")?,
            tls_server_name: opt_host(r, "tls_server_name")?,
            helo_name: opt_host(r, "helo_name")?,
            max_connections: count(r, "max_connections")?,
            max_messages_per_connection: count(r, "max_messages_per_connection")?,
            idle_timeout_secs: count(r, "idle_timeout_secs")?,
            rate_limit_per_minute: opt_count(r, "rate_limit_per_minute")?,
            command_timeout_secs: opt_count(r, "command_timeout_secs")?,
            gateway_id: opt_id(r.opt_text("gateway_id")?)?,
        },
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

/// An SMTP account (its secret still sealed), from the account columns both backends select.
pub(crate) fn account(r: &impl Columns) -> Result<SmtpAccount> {
    let sealed = r.opt_text("sealed_secret")?;
    let oauth2 = match r.opt_text("oauth2_token_url")? {
        Some(token_url) => Some(OAuth2Client {
            token_url,
            client_id: r.opt_text("oauth2_client_id")?.unwrap_or_default(),
            scope: r.opt_text("oauth2_scope")?,
        }),
        None => None,
    };
    Ok(SmtpAccount {
        id: id(r.text("id")?)?,
        server_id: id(r.text("server_id")?)?,
        tenant_id: id(r.text("tenant_id")?)?,
        username: r.text("username")?,
        mechanism: stored("mechanism", Mechanism::parse(&r.text("mechanism")?))?,
        secret_set: sealed.is_some(),
        sealed_secret: sealed,
        oauth2,
        person_id: opt_id(r.opt_text("person_id")?)?,
        created_at: r.int("created_at")?,
    })
}

/// A notification provider, from the provider columns both backends select.
pub(crate) fn provider(r: &impl Columns) -> Result<Provider> {
    Ok(Provider {
        id: id(r.text("id")?)?,
        tenant_id: id(r.text("tenant_id")?)?,
        settings: ProviderSettings {
            name: r.text("name")?,
            smtp_server_id: id(r.text("smtp_server_id")?)?,
            account_id: opt_id(r.opt_text("account_id")?)?,
            from_address: address(r.text("from_address")?)?,
            from_name: r
                .opt_text("from_name")?
                .map(|n| stored("from_name", DisplayName::from_stored(&n)))
                .transpose()?,
            reply_to: r.opt_text("reply_to")?.map(reply_to_mailbox).transpose()?,
            fallback_recipient: r.opt_text("fallback_recipient")?.map(address).transpose()?,
            sender_policy: stored(
                "sender_policy",
                SenderPolicy::parse(&r.text("sender_policy")?),
            )?,
        },
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

/// One delivery attempt, from the attempt columns both backends select
/// (`at, node, server, outcome, step, code, enhanced_code, response,
/// duration_ms, remote_addr, tls_version, tls_cipher, provider_id,
/// config_version, sender_policy, diagnosis`).
pub(crate) fn attempt(r: &impl Columns) -> Result<AttemptRecord> {
    Ok(AttemptRecord {
        at: r.int("at")?,
        node: r.text("node")?,
        server: r.text("server")?,
        outcome: status(&r.text("outcome")?)?,
        step: r.opt_text("step")?,
        code: r
            .opt_int("code")?
            .map(|c| stored("code", u16::try_from(c)))
            .transpose()?,
        enhanced_code: r.opt_text("enhanced_code")?,
        response: r.text("response")?,
        duration_ms: r.int("duration_ms")?,
        remote_addr: r.opt_text("remote_addr")?,
        tls_version: r.opt_text("tls_version")?,
        tls_cipher: r.opt_text("tls_cipher")?,
        provider_id: opt_id(r.opt_text("provider_id")?)?,
        config_version: r.opt_int("config_version")?,
        sender_policy: r.opt_text("sender_policy")?,
        diagnosis: r
            .opt_text("diagnosis")?
            .map(|d| stored("diagnosis", serde_json::from_str(&d)))
            .transpose()?,
    })
}

/// An SMTP credential, from the columns `id, tenant_id, name, username,
/// rate_limit_per_minute, created_at, last_used_at`.
pub(crate) fn smtp_credential(r: &impl Columns) -> Result<SmtpCredential> {
    Ok(SmtpCredential {
        id: id(r.text("id")?)?,
        tenant_id: id(r.text("tenant_id")?)?,
        name: r.text("name")?,
        username: r.text("username")?,
        rate_limit_per_minute: opt_count(r, "rate_limit_per_minute")?,
        created_at: r.int("created_at")?,
        last_used_at: r.opt_int("last_used_at")?,
    })
}

/// An IP connector, from the columns `id, tenant_id, name, cidrs,
/// rate_limit_per_minute, created_at`; `cidrs` is a JSON list of networks.
pub(crate) fn smtp_connector(r: &impl Columns) -> Result<SmtpConnector> {
    Ok(SmtpConnector {
        id: id(r.text("id")?)?,
        tenant_id: id(r.text("tenant_id")?)?,
        name: r.text("name")?,
        cidrs: stored("cidrs", serde_json::from_str(&r.text("cidrs")?))?,
        rate_limit_per_minute: opt_count(r, "rate_limit_per_minute")?,
        created_at: r.int("created_at")?,
    })
}

/// A connector's networks as stored: a JSON list in CIDR notation.
pub(crate) fn cidrs_json(cidrs: &[ipnet::IpNet]) -> String {
    serde_json::to_string(cidrs).expect("networks serialise")
}

/// Where a message came from, from the columns `source, smtp_credential_id,
/// smtp_connector_id, client_addr`.
pub(crate) fn origin(r: &impl Columns) -> Result<Origin> {
    Ok(match r.text("source")?.as_str() {
        "smtp" => Origin::Smtp(SmtpOrigin {
            credential_id: opt_id(r.opt_text("smtp_credential_id")?)?,
            connector_id: opt_id(r.opt_text("smtp_connector_id")?)?,
            client_addr: r.opt_text("client_addr")?.unwrap_or_default(),
        }),
        "schedule" => Origin::Schedule,
        _ => Origin::Api,
    })
}

/// The template a message was rendered from (its `template_id` and `template_version` columns).
pub(crate) fn template_use(r: &impl Columns) -> Result<Option<TemplateUse>> {
    let Some(template) = opt_id(r.opt_text("template_id")?)? else {
        return Ok(None);
    };
    let version = r.opt_int("template_version")?.unwrap_or(1);
    Ok(Some(TemplateUse {
        id: template,
        version: stored("template_version", u32::try_from(version))?,
    }))
}

/// The values of an origin's four columns, in that order.
pub(crate) fn origin_values(
    origin: &Origin,
) -> (&'static str, Option<String>, Option<String>, Option<String>) {
    match origin {
        Origin::Api => ("api", None, None, None),
        Origin::Schedule => ("schedule", None, None, None),
        Origin::Smtp(smtp) => (
            "smtp",
            smtp.credential_id.map(|c| c.to_string()),
            smtp.connector_id.map(|c| c.to_string()),
            Some(smtp.client_addr.clone()),
        ),
    }
}

/// One stored attachment: the file's bytes in base64, inside a JSON list.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAttachment {
    filename: String,
    content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_id: Option<String>,
    content: String,
}

/// A message's attachments as stored: `None` when it has none.
pub(crate) fn attachments_json(attachments: &[Attachment]) -> Option<String> {
    use base64::Engine;
    if attachments.is_empty() {
        return None;
    }
    let stored: Vec<StoredAttachment> = attachments
        .iter()
        .map(|a| StoredAttachment {
            filename: a.filename.clone(),
            content_type: a.content_type.clone(),
            content_id: a.content_id.clone(),
            content: base64::engine::general_purpose::STANDARD.encode(&a.content),
        })
        .collect();
    Some(serde_json::to_string(&stored).expect("attachments serialise"))
}

/// A message's attachments, read back.
pub(crate) fn attachments(json: Option<String>) -> Result<Vec<Attachment>> {
    use base64::Engine;
    let Some(json) = json else {
        return Ok(Vec::new());
    };
    let list: Vec<StoredAttachment> = stored("attachments", serde_json::from_str(&json))?;
    list.into_iter()
        .map(|a| {
            Ok(Attachment {
                content: stored(
                    "attachment",
                    base64::engine::general_purpose::STANDARD.decode(a.content),
                )?,
                filename: a.filename,
                content_type: a.content_type,
                content_id: a.content_id,
            })
        })
        .collect()
}

/// What a message view shows of its attachments.
pub(crate) fn attachment_infos(json: Option<String>) -> Result<Vec<AttachmentInfo>> {
    Ok(attachments(json)?
        .into_iter()
        .map(|a| AttachmentInfo {
            size: a.content.len(),
            filename: a.filename,
            content_type: a.content_type,
            content_id: a.content_id,
        })
        .collect())
}

/// A webhook, from the columns `id, tenant_id, url, events, enabled,
/// disabled_reason, failing_since, previous_secret_until, created_at, updated_at`.
pub(crate) fn webhook(r: &impl Columns) -> Result<Webhook> {
    Ok(Webhook {
        id: id(r.text("id")?)?,
        tenant_id: id(r.text("tenant_id")?)?,
        url: r.text("url")?,
        events: stored("events", EventSet::from_bits(r.int("events")?))?,
        enabled: r.flag("enabled")?,
        disabled_reason: r.opt_text("disabled_reason")?,
        failing_since: r.opt_int("failing_since")?,
        previous_secret_until: r.opt_int("previous_secret_until")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

/// One event's delivery, from the columns `event_id, event_type, message_id,
/// status, attempts, created_at, last_attempt_at, response_status, error,
/// duration_ms, due_at`.
pub(crate) fn webhook_delivery(r: &impl Columns) -> Result<WebhookDelivery> {
    let status = r.text("status")?;
    let status = WebhookDeliveryStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown webhook delivery status {status}")))?;
    Ok(WebhookDelivery {
        event_id: r.text("event_id")?,
        event_type: r.text("event_type")?,
        message_id: opt_id(r.opt_text("message_id")?)?,
        status,
        attempts: count(r, "attempts")?,
        created_at: r.int("created_at")?,
        last_attempt_at: r.opt_int("last_attempt_at")?,
        response_status: r
            .opt_int("response_status")?
            .map(|s| u16::try_from(s).unwrap_or(0)),
        error: r.opt_text("error")?,
        duration_ms: r.opt_int("duration_ms")?,
        next_attempt_at: (status == WebhookDeliveryStatus::Pending)
            .then(|| r.int("due_at"))
            .transpose()?,
    })
}

/// A claimed event, from the columns of the PostgreSQL claim's read of it.
pub(crate) fn claimed_event(r: &impl Columns) -> Result<ClaimedEvent> {
    Ok(ClaimedEvent {
        seq: r.int("seq")?,
        lease_token: r.int("lease_token")?,
        webhook: id(r.text("webhook_id")?)?,
        tenant_id: id(r.text("tenant_id")?)?,
        url: r.text("url")?,
        sealed_secret: r.text("sealed_secret")?,
        previous_sealed_secret: r.opt_text("previous_sealed_secret")?,
        event_id: r.text("event_id")?,
        event_type: r.text("event_type")?,
        message_id: opt_id(r.opt_text("message_id")?)?,
        payload: r.text("payload")?,
        created_at: r.int("created_at")?,
        attempts: count(r, "attempts")?,
    })
}

/// A template at its current version, from [`crate::sql::TEMPLATE_BY_ID`]'s columns.
pub(crate) fn template(r: &impl Columns) -> Result<Template> {
    Ok(Template {
        id: id(r.text("id")?)?,
        tenant_id: id(r.text("tenant_id")?)?,
        name: r.text("name")?,
        description: r.opt_text("description")?,
        version: count(r, "version")?,
        content: TemplateContent {
            subject: r.text("subject")?,
            text: r.opt_text("text_body")?,
            html: r.opt_text("html_body")?,
        },
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

/// A gateway without its instances, from the gateway columns both backends select.
pub(crate) fn gateway(r: &impl Columns) -> Result<Gateway> {
    Ok(Gateway {
        id: id(r.text("id")?)?,
        tenant_id: id(r.text("tenant_id")?)?,
        name: r.text("name")?,
        created_at: r.int("created_at")?,
        token_created_at: r.int("token_created_at")?,
        instances: Vec::new(),
    })
}

/// One instance of a gateway, and the gateway it belongs to.
pub(crate) fn gateway_instance(
    r: &impl Columns,
) -> Result<(herald_core::GatewayId, GatewayInstance)> {
    let tally = |column: &str| -> Result<u64> { stored(column, u64::try_from(r.int(column)?)) };
    Ok((
        id(r.text("gateway_id")?)?,
        GatewayInstance {
            name: r.text("name")?,
            version: r.text("version")?,
            address: r.text("address")?,
            first_seen_at: r.int("first_seen_at")?,
            last_seen_at: r.int("last_seen_at")?,
            delivered_this_hour: tally("delivered")?,
            failed_this_hour: tally("failed")?,
        },
    ))
}

/// Gives each gateway its instances (given newest seen first, and kept so).
pub(crate) fn with_instances(
    mut gateways: Vec<Gateway>,
    instances: Vec<(herald_core::GatewayId, GatewayInstance)>,
) -> Vec<Gateway> {
    for (gateway_id, instance) in instances {
        if let Some(g) = gateways.iter_mut().find(|g| g.id == gateway_id) {
            g.instances.push(instance);
        }
    }
    gateways
}

/// A list of mailboxes stored as JSON text of their canonical strings.
fn mailbox_list(column: &str, json: &str) -> Result<Vec<Mailbox>> {
    let list: Vec<String> = stored(column, serde_json::from_str(json))?;
    list.iter()
        .map(|m| stored(column, Mailbox::from_stored(m)))
        .collect()
}

/// The canonical strings of mailboxes, as a schedule's `header_to` and
/// `header_cc` hold them.
pub(crate) fn mailbox_strings(list: &[Mailbox]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

/// The addresses of a schedule's `bcc`, as stored.
pub(crate) fn address_strings(list: &[EmailAddress]) -> Vec<String> {
    list.iter().map(|a| a.as_ref().to_owned()).collect()
}

/// A schedule, from [`crate::sql::SCHEDULE_BY_ID`]'s columns (JSON columns as text).
pub(crate) fn schedule(r: &impl Columns) -> Result<Schedule> {
    let bcc: Vec<String> = stored("bcc", serde_json::from_str(&r.text("bcc")?))?;
    Ok(Schedule {
        id: id(r.text("id")?)?,
        tenant_id: id(r.text("tenant_id")?)?,
        fields: ScheduleFields {
            name: r.text("name")?,
            cron: r.text("cron")?,
            timezone: r.text("timezone")?,
            template_id: id(r.text("template_id")?)?,
            data: stored("data", serde_json::from_str(&r.text("data")?))?,
            to: mailbox_list("header_to", &r.text("header_to")?)?,
            cc: mailbox_list("header_cc", &r.text("header_cc")?)?,
            bcc: bcc.into_iter().map(address).collect::<Result<_>>()?,
            enabled: r.flag("enabled")?,
        },
        next_run_at: r.opt_int("next_run_at")?,
        last_run_at: r.opt_int("last_run_at")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

/// One firing, from [`crate::sql::SCHEDULE_RUNS`]'s columns, with the
/// status of its message (read apart).
pub(crate) fn schedule_run(
    r: &impl Columns,
    status: Option<RecipientStatus>,
) -> Result<ScheduleRun> {
    let cause = r.text("cause")?;
    let missed = count(r, "missed")?;
    Ok(ScheduleRun {
        id: id(r.text("id")?)?,
        schedule_id: id(r.text("schedule_id")?)?,
        trigger: RunTrigger::from_stored(&cause)
            .ok_or_else(|| StoreError::Corrupt(format!("schedule run cause {cause:?}")))?,
        fire_at: r.int("fire_at")?,
        missed,
        caught_up: missed > 0,
        message_id: opt_id(r.opt_text("message_id")?)?,
        status,
        error: r.opt_text("error")?,
        node: r.text("node")?,
        created_at: r.int("created_at")?,
    })
}

/// A firing as just recorded, with its message's status.
pub(crate) fn recorded_run(
    f: &Firing,
    message_id: Option<herald_core::MessageId>,
    status: Option<RecipientStatus>,
) -> ScheduleRun {
    ScheduleRun {
        id: f.id,
        schedule_id: f.schedule_id,
        trigger: f.trigger,
        fire_at: f.fire_at,
        missed: f.missed,
        caught_up: f.missed > 0,
        message_id,
        status,
        error: f.error.clone(),
        node: f.node.clone(),
        created_at: f.created_at,
    }
}
