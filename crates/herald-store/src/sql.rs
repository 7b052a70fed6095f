//! Statements both backends run as written: PostgreSQL's `$n` placeholders,
//! which SQLite reads as parameters named `$1`, `$2`, … and numbers in order of
//! first appearance, so each statement names them first in increasing order
//! (a test in the SQLite backend checks every one).

use herald_core::{ProviderId, ScheduleId, ServerId, SmtpHost, TenantId, WebhookId};

use crate::model::{
    GatewaySeen, NewSchedule, NewWebhook, NextRun, ProviderSettings, ScheduleFields,
    ServerSettings, WebhookChange,
};
use crate::rows;

/// One value to bind, for statements whose values are gathered once for
/// both backends ([`server_values`], [`provider_values`], [`new_schedule_values`],
/// [`new_webhook_values`] …).
#[derive(Debug)]
pub(crate) enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Flag(Option<bool>),
    /// JSON text, for a column that is JSONB on PostgreSQL and TEXT on SQLite.
    Json(String),
}

impl Value {
    fn text(s: Option<&str>) -> Value {
        Value::Text(s.map(str::to_owned))
    }

    fn count(n: Option<u32>) -> Value {
        Value::Int(n.map(i64::from))
    }

    fn json<T: serde::Serialize + ?Sized>(value: &T) -> Value {
        Value::Json(serde_json::to_string(value).expect("JSON values serialise"))
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Value::Text(t) => t.to_sql(),
            Value::Int(i) => i.to_sql(),
            Value::Flag(b) => b.to_sql(),
            Value::Json(j) => j.to_sql(),
        }
    }
}

impl tokio_postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use tokio_postgres::types::Type;
        match self {
            Value::Text(t) => t.to_sql(ty, out),
            // PostgreSQL's integer columns are `integer` (ports) or `bigint`.
            Value::Int(Some(i)) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            Value::Int(i) => i.to_sql(ty, out),
            Value::Flag(b) => b.to_sql(ty, out),
            Value::Json(j) => {
                // JSONB's binary form is a version byte before the text.
                if *ty == Type::JSONB {
                    bytes::BufMut::put_u8(out, 1);
                }
                out.extend_from_slice(j.as_bytes());
                Ok(tokio_postgres::types::IsNull::No)
            }
        }
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        use tokio_postgres::types::Type;
        <String as tokio_postgres::types::ToSql>::accepts(ty)
            || <i64 as tokio_postgres::types::ToSql>::accepts(ty)
            || <i32 as tokio_postgres::types::ToSql>::accepts(ty)
            || <bool as tokio_postgres::types::ToSql>::accepts(ty)
            || matches!(*ty, Type::JSON | Type::JSONB)
    }

    tokio_postgres::types::to_sql_checked!();
}

// The columns each entity's mapper in `rows.rs` reads, and the reads of whole rows.

macro_rules! tenant_columns {
    () => {
        "id, slug, name, credential_storage, notification_provider_id, previous_provider_id, properties_effective_from, created_at"
    };
}

macro_rules! token_columns {
    () => {
        "id, tenant_id, name, role, person_id, created_at, last_used_at, bootstrap"
    };
}

macro_rules! person_columns {
    () => {
        "id, tenant_id, name, email, role, created_at"
    };
}

macro_rules! account_columns {
    () => {
        "id, server_id, tenant_id, username, mechanism, sealed_secret, oauth2_token_url, oauth2_client_id, oauth2_scope, person_id, created_at"
    };
}

macro_rules! provider_columns {
    () => {
        "id, tenant_id, name, smtp_server_id, account_id, from_address, from_name, reply_to, fallback_recipient, sender_policy, created_at, updated_at"
    };
}

pub(crate) const TENANT_COLUMNS: &str = tenant_columns!();

pub(crate) const TENANT_BY_ID: &str =
    concat!("SELECT ", tenant_columns!(), " FROM tenants WHERE id = $1");
pub(crate) const TENANT_BY_SLUG: &str = concat!(
    "SELECT ",
    tenant_columns!(),
    " FROM tenants WHERE slug = $1"
);
pub(crate) const TENANTS: &str = concat!(
    "SELECT ",
    tenant_columns!(),
    " FROM tenants ORDER BY created_at, id"
);
pub(crate) const PERSON_BY_ID: &str = concat!(
    "SELECT ",
    person_columns!(),
    " FROM persons WHERE id = $1 AND tenant_id = $2"
);
pub(crate) const SESSION_PERSON: &str =
    concat!("SELECT ", person_columns!(), " FROM persons WHERE id = $1");
pub(crate) const PERSONS: &str = concat!(
    "SELECT ",
    person_columns!(),
    " FROM persons WHERE tenant_id = $1 ORDER BY created_at, email, id"
);
/// Persons whose address is this one but for case: the tenant's few rows
/// walked by its index; the caller compares exactly (PostgreSQL's `lower`
/// folds beyond ASCII).
pub(crate) const PERSONS_BY_EMAIL: &str = concat!(
    "SELECT ",
    person_columns!(),
    " FROM persons WHERE tenant_id = $1 AND lower(email) = lower($2) ORDER BY created_at, email, id"
);
pub(crate) const TOKEN_BY_HASH: &str = concat!(
    "SELECT ",
    token_columns!(),
    " FROM tokens WHERE hash = $1 AND revoked_at IS NULL"
);
pub(crate) const TOKENS: &str = concat!(
    "SELECT ",
    token_columns!(),
    " FROM tokens WHERE tenant_id = $1 ORDER BY created_at, id"
);
pub(crate) const OPERATOR_TOKENS: &str = concat!(
    "SELECT ",
    token_columns!(),
    " FROM tokens WHERE tenant_id IS NULL AND role = 'operator' AND revoked_at IS NULL ORDER BY created_at, id"
);
pub(crate) const ACCOUNT_BY_ID: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM smtp_accounts WHERE id = $1 AND server_id = $2 AND tenant_id = $3"
);
pub(crate) const ACCOUNTS: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM smtp_accounts WHERE server_id = $1 AND tenant_id = $2 ORDER BY created_at, username"
);
pub(crate) const PROVIDER_BY_ID: &str = concat!(
    "SELECT ",
    provider_columns!(),
    " FROM providers WHERE id = $1 AND tenant_id = $2"
);
pub(crate) const PROVIDERS: &str = concat!(
    "SELECT ",
    provider_columns!(),
    " FROM providers WHERE tenant_id = $1 ORDER BY created_at, name"
);

// Tenants, tokens, persons and audit.

pub(crate) const INSERT_TENANT: &str = concat!(
    "INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4) RETURNING ",
    tenant_columns!()
);
pub(crate) const SET_CREDENTIAL_STORAGE: &str = concat!(
    "UPDATE tenants SET credential_storage = $1 WHERE id = $2 RETURNING ",
    tenant_columns!()
);
/// What applies until the change is in effect is the provider in effect at
/// `$1` (now): the previous one while an earlier change is still pending.
pub(crate) const SET_ACTIVE_PROVIDER: &str = concat!(
    "UPDATE tenants SET previous_provider_id = CASE WHEN properties_effective_from <= $1 \
     THEN notification_provider_id ELSE previous_provider_id END, \
     notification_provider_id = $2, properties_effective_from = $3 WHERE id = $4 RETURNING ",
    tenant_columns!()
);
pub(crate) const INSERT_TOKEN: &str = concat!(
    "INSERT INTO tokens (id, tenant_id, name, role, person_id, hash, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
    token_columns!()
);
pub(crate) const INSERT_PERSON: &str = concat!(
    "INSERT INTO persons (id, tenant_id, name, email, role, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
    person_columns!()
);

pub(crate) const DELETE_PERSON: &str = "DELETE FROM persons WHERE id = $1 AND tenant_id = $2";
pub(crate) const DELETE_TOKEN: &str = "DELETE FROM tokens WHERE id = $1 AND tenant_id = $2";
pub(crate) const INSERT_AUDIT: &str = "INSERT INTO audit (tenant_id, at, actor, token_id, remote_addr, action, object_id, \
     details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
pub(crate) const TOKEN_REVOKED_AT: &str = "SELECT revoked_at FROM tokens WHERE hash = $1";
pub(crate) const AUDIT: &str = "SELECT tenant_id, at, actor, token_id, remote_addr, action, object_id, details FROM \
     audit WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2";
pub(crate) const ACCOUNT_OF_PERSON: &str =
    "SELECT username FROM smtp_accounts WHERE person_id = $1 AND tenant_id = $2 LIMIT 1";
/// SQLite's count of changes that can alter what a token may do (migration 0021).
pub(crate) const ACCESS_CHANGES: &str = "SELECT count FROM access_changes WHERE id = 1";
pub(crate) const TOKEN_USED: &str = "UPDATE tokens SET last_used_at = $1 WHERE id = $2";

pub(crate) const OPERATOR_TOKEN_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM tokens WHERE role = 'operator' AND revoked_at IS NULL) AS found";
pub(crate) const DELETE_OPERATOR_TOKEN: &str = "DELETE FROM tokens WHERE id = $1 AND tenant_id IS NULL AND role = 'operator' AND NOT bootstrap";
pub(crate) const MARK_BOOTSTRAP: &str = "UPDATE tokens SET bootstrap = TRUE WHERE hash = $1 AND tenant_id IS NULL AND role = 'operator'";
pub(crate) const INSERT_BOOTSTRAP_TOKEN: &str = "INSERT INTO tokens (id, tenant_id, name, role, person_id, hash, created_at, bootstrap) VALUES ($1, NULL, $2, 'operator', NULL, $3, $4, TRUE)";
pub(crate) const SEALED_SECRETS: &str =
    "SELECT id, sealed_secret FROM smtp_accounts WHERE sealed_secret IS NOT NULL ORDER BY id";
pub(crate) const SET_PERSON_PASSWORD: &str =
    "UPDATE persons SET password_hash = $1 WHERE id = $2 AND tenant_id = $3";
pub(crate) const REVOKE_BOOTSTRAP_TOKEN: &str = "UPDATE tokens SET revoked_at = $1 WHERE id = $2 \
     AND tenant_id IS NULL AND role = 'operator' AND bootstrap AND revoked_at IS NULL";
/// Revokes every bootstrap token but the configured one.
pub(crate) const REVOKE_OTHER_BOOTSTRAP_TOKENS: &str = "UPDATE tokens SET revoked_at = $1 \
     WHERE bootstrap AND revoked_at IS NULL AND hash <> $2";

// Configuration.

/// The columns of a server, as [`crate::rows::server`] reads them.
macro_rules! server_columns {
    () => {
        "id, tenant_id, name, host, port, security, requires_auth, allow_plaintext_auth, \
         tls_verify, tls_ca_pem, tls_server_name, helo_name, max_connections, \
         max_messages_per_connection, idle_timeout_secs, rate_limit_per_minute, \
         command_timeout_secs, gateway_id, created_at, updated_at"
    };
}

/// Binds [`server_values`].
pub(crate) const INSERT_SERVER: &str = concat!(
    "INSERT INTO smtp_servers (created_at, updated_at, name, host, port, security, requires_auth, \
     allow_plaintext_auth, tls_verify, tls_ca_pem, tls_server_name, helo_name, max_connections, \
     max_messages_per_connection, idle_timeout_secs, rate_limit_per_minute, command_timeout_secs, \
     gateway_id, id, tenant_id) \
     VALUES ($1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
     RETURNING ",
    server_columns!()
);

/// Binds [`server_values`].
pub(crate) const UPDATE_SERVER: &str = concat!(
    "UPDATE smtp_servers SET updated_at = $1, name = $2, host = $3, port = $4, security = $5, \
     requires_auth = $6, allow_plaintext_auth = $7, tls_verify = $8, tls_ca_pem = $9, \
     tls_server_name = $10, helo_name = $11, max_connections = $12, \
     max_messages_per_connection = $13, idle_timeout_secs = $14, rate_limit_per_minute = $15, \
     command_timeout_secs = $16, gateway_id = $17 WHERE id = $18 AND tenant_id = $19 RETURNING ",
    server_columns!()
);

/// PostgreSQL may append a lock clause.
pub(crate) const SERVER_BY_ID: &str = concat!(
    "SELECT ",
    server_columns!(),
    " FROM smtp_servers WHERE id = $1 AND tenant_id = $2"
);

/// Binds [`provider_values`].
pub(crate) const INSERT_PROVIDER: &str = concat!(
    "INSERT INTO providers (created_at, updated_at, name, smtp_server_id, account_id, \
     from_address, from_name, reply_to, fallback_recipient, sender_policy, id, tenant_id) \
     VALUES ($1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ",
    provider_columns!()
);

/// Binds [`provider_values`].
pub(crate) const UPDATE_PROVIDER: &str = concat!(
    "UPDATE providers SET updated_at = $1, name = $2, smtp_server_id = $3, account_id = $4, \
     from_address = $5, from_name = $6, reply_to = $7, fallback_recipient = $8, \
     sender_policy = $9 WHERE id = $10 AND tenant_id = $11 RETURNING ",
    provider_columns!()
);

pub(crate) const INSERT_ACCOUNT: &str = concat!(
    "INSERT INTO smtp_accounts (id, tenant_id, server_id, username, mechanism, sealed_secret, \
     oauth2_token_url, oauth2_client_id, oauth2_scope, person_id, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ",
    account_columns!()
);

pub(crate) const SERVERS: &str = concat!(
    "SELECT ",
    server_columns!(),
    " FROM smtp_servers WHERE tenant_id = $1 ORDER BY created_at, name"
);

/// What [`INSERT_PROVIDER`] and [`UPDATE_PROVIDER`] bind, in their order:
/// the time, the settings, the provider and its tenant.
pub(crate) fn provider_values(
    tenant: TenantId,
    provider: ProviderId,
    s: &ProviderSettings,
    now: i64,
) -> Vec<Value> {
    vec![
        Value::Int(Some(now)),
        Value::text(Some(&s.name)),
        Value::text(Some(&s.smtp_server_id.to_string())),
        Value::text(s.account_id.map(|a| a.to_string()).as_deref()),
        Value::text(Some(s.from_address.as_ref())),
        Value::text(s.from_name.as_ref().map(|n| n.as_ref())),
        Value::text(s.reply_to.as_ref().map(|r| r.to_string()).as_deref()),
        Value::text(s.fallback_recipient.as_ref().map(|a| a.as_ref())),
        Value::text(Some(s.sender_policy.as_str())),
        Value::text(Some(&provider.to_string())),
        Value::text(Some(&tenant.to_string())),
    ]
}

/// What [`INSERT_SERVER`] and [`UPDATE_SERVER`] bind, in their order:
/// the time, the settings, the server and its tenant.
pub(crate) fn server_values(
    tenant: TenantId,
    server: ServerId,
    s: &ServerSettings,
    now: i64,
) -> Vec<Value> {
    let host = |h: &Option<SmtpHost>| Value::text(h.as_ref().map(|h| h.as_ref()));
    vec![
        Value::Int(Some(now)),
        Value::text(Some(&s.name)),
        Value::text(Some(s.host.as_ref())),
        Value::Int(Some(i64::from(s.port.get()))),
        Value::text(Some(s.security.as_str())),
        Value::Flag(Some(s.requires_auth)),
        Value::Flag(Some(s.allow_plaintext_auth)),
        Value::Flag(Some(s.tls_verify)),
        Value::text(s.tls_ca_pem.as_deref()),
        host(&s.tls_server_name),
        host(&s.helo_name),
        Value::count(Some(s.max_connections)),
        Value::count(Some(s.max_messages_per_connection)),
        Value::count(Some(s.idle_timeout_secs)),
        Value::count(s.rate_limit_per_minute),
        Value::count(s.command_timeout_secs),
        Value::text(s.gateway_id.map(|g| g.to_string()).as_deref()),
        Value::text(Some(&server.to_string())),
        Value::text(Some(&tenant.to_string())),
    ]
}

pub(crate) const DELETE_PROVIDER: &str = "DELETE FROM providers WHERE id = $1 AND tenant_id = $2";
pub(crate) const DELETE_ACCOUNT: &str =
    "DELETE FROM smtp_accounts WHERE id = $1 AND tenant_id = $2";
pub(crate) const DELETE_SERVER: &str = "DELETE FROM smtp_servers WHERE id = $1 AND tenant_id = $2";
pub(crate) const PROVIDER_OF_ACCOUNT: &str =
    "SELECT name FROM providers WHERE account_id = $1 AND tenant_id = $2 LIMIT 1";
pub(crate) const PROVIDER_OF_SERVER: &str =
    "SELECT name FROM providers WHERE smtp_server_id = $1 AND tenant_id = $2 LIMIT 1";
// Gateways.

/// The columns of a gateway, as [`crate::rows::gateway`] reads them (never its token's hash).
macro_rules! gateway_columns {
    () => {
        "id, tenant_id, name, token_created_at, created_at"
    };
}

/// The columns of a gateway's instance, as [`crate::rows::gateway_instance`]
/// reads them: with its outcomes of the minutes after minute `$1`.
macro_rules! gateway_instance_columns {
    () => {
        "i.gateway_id, i.name, i.version, i.address, i.first_seen_at, i.last_seen_at, \
         CAST(COALESCE((SELECT SUM(m.delivered) FROM gateway_instance_minutes m \
         WHERE m.gateway_id = i.gateway_id AND m.name = i.name AND m.minute > $1), 0) AS BIGINT) \
         AS delivered, \
         CAST(COALESCE((SELECT SUM(m.failed) FROM gateway_instance_minutes m \
         WHERE m.gateway_id = i.gateway_id AND m.name = i.name AND m.minute > $1), 0) AS BIGINT) \
         AS failed"
    };
}

pub(crate) const INSERT_GATEWAY: &str = "INSERT INTO gateways \
     (id, tenant_id, name, token_hash, token_created_at, created_at) \
     VALUES ($1, $2, $3, $4, $5, $5)";

/// PostgreSQL may append a lock clause.
pub(crate) const GATEWAY_BY_ID: &str = concat!(
    "SELECT ",
    gateway_columns!(),
    " FROM gateways WHERE id = $1 AND tenant_id = $2"
);

pub(crate) const GATEWAYS: &str = concat!(
    "SELECT ",
    gateway_columns!(),
    " FROM gateways WHERE tenant_id = $1 ORDER BY name"
);

/// For authentication: names no tenant, the token says which.
pub(crate) const GATEWAY_BY_TOKEN: &str = concat!(
    "SELECT ",
    gateway_columns!(),
    " FROM gateways WHERE token_hash = $1"
);

/// The instances of one gateway (`$2`), newest seen first, with their
/// outcomes after minute `$1`.
pub(crate) const GATEWAY_INSTANCES: &str = concat!(
    "SELECT ",
    gateway_instance_columns!(),
    " FROM gateway_instances i WHERE i.gateway_id = $2 ORDER BY i.last_seen_at DESC, i.name"
);

/// The instances of every gateway of a tenant (`$2`), newest seen first,
/// with their outcomes after minute `$1`.
pub(crate) const TENANT_GATEWAY_INSTANCES: &str = concat!(
    "SELECT ",
    gateway_instance_columns!(),
    " FROM gateway_instances i JOIN gateways g ON g.id = i.gateway_id \
     WHERE g.tenant_id = $2 ORDER BY i.last_seen_at DESC, i.name"
);

pub(crate) const REPLACE_GATEWAY_TOKEN: &str = "UPDATE gateways \
     SET token_hash = $1, token_created_at = $2 WHERE id = $3 AND tenant_id = $4";

pub(crate) const DELETE_GATEWAY: &str = "DELETE FROM gateways WHERE id = $1 AND tenant_id = $2";

/// The servers that name a gateway, which keep it from being deleted.
pub(crate) const SERVERS_OF_GATEWAY: &str =
    "SELECT name FROM smtp_servers WHERE gateway_id = $1 AND tenant_id = $2 ORDER BY name";

/// Whether a recipient is pinned to a gateway (the gateway's tenant's, then).
pub(crate) const RECIPIENT_PINNED_TO: &str =
    "SELECT EXISTS (SELECT 1 FROM recipients WHERE id = $1 AND gateway_id = $2)";

/// Records that an instance reported. A report from another process of the
/// instance than the last one keeps that one as the previous incarnation,
/// with when it was last seen, for the stale sweep.
pub(crate) const UPSERT_GATEWAY_INSTANCE: &str = "INSERT INTO gateway_instances \
     (gateway_id, name, version, address, first_seen_at, last_seen_at, incarnation) \
     VALUES ($1, $2, $3, $4, $5, $5, $6) \
     ON CONFLICT (gateway_id, name) DO UPDATE SET version = excluded.version, \
     address = excluded.address, last_seen_at = excluded.last_seen_at, \
     previous_incarnation = CASE WHEN gateway_instances.incarnation IS NOT NULL \
     AND gateway_instances.incarnation <> excluded.incarnation \
     THEN gateway_instances.incarnation ELSE gateway_instances.previous_incarnation END, \
     previous_seen_at = CASE WHEN gateway_instances.incarnation IS NOT NULL \
     AND gateway_instances.incarnation <> excluded.incarnation \
     THEN gateway_instances.last_seen_at ELSE gateway_instances.previous_seen_at END, \
     incarnation = excluded.incarnation";

/// The instances with an incarnation, current or previous, not seen since
/// `$1` that may still hold leases: each such incarnation, NULL where it is
/// not stale; with the gateway's name (for the lease owner). PostgreSQL may
/// append a lock clause.
pub(crate) const STALE_GATEWAY_INSTANCES: &str = "SELECT i.gateway_id, g.name AS gateway_name, \
     i.name, CASE WHEN i.last_seen_at < $1 THEN i.incarnation END AS incarnation, \
     CASE WHEN i.previous_seen_at < $1 THEN i.previous_incarnation END AS previous_incarnation \
     FROM gateway_instances i JOIN gateways g ON g.id = i.gateway_id \
     WHERE (i.last_seen_at < $1 AND i.incarnation IS NOT NULL) \
     OR (i.previous_seen_at < $1 AND i.previous_incarnation IS NOT NULL) \
     ORDER BY i.gateway_id, i.name";

/// An instance's incarnations not seen since `$1` taken over: their
/// leases were given back; the next sweep passes them by.
pub(crate) const GATEWAY_INSTANCE_TAKEN_OVER: &str = "UPDATE gateway_instances SET \
     incarnation = CASE WHEN last_seen_at < $1 THEN NULL ELSE incarnation END, \
     previous_incarnation = CASE WHEN previous_seen_at < $1 THEN NULL ELSE previous_incarnation END \
     WHERE gateway_id = $2 AND name = $3";

/// Adds outcomes to an instance's minute `$1`; an instance not recorded
/// adds nothing.
/// What [`UPSERT_GATEWAY_INSTANCE`] binds, in its order.
pub(crate) fn gateway_seen_values(seen: &GatewaySeen) -> Vec<Value> {
    vec![
        Value::Text(Some(seen.gateway_id.to_string())),
        Value::text(Some(&seen.name)),
        Value::text(Some(&seen.version)),
        Value::text(Some(&seen.address)),
        Value::Int(Some(seen.at)),
        Value::text(Some(&seen.incarnation)),
    ]
}

pub(crate) const COUNT_GATEWAY_OUTCOMES: &str = "INSERT INTO gateway_instance_minutes \
     (gateway_id, name, minute, delivered, failed) \
     SELECT gateway_id, name, CAST($1 AS BIGINT), CAST($2 AS BIGINT), CAST($3 AS BIGINT) \
     FROM gateway_instances WHERE gateway_id = $4 AND name = $5 \
     ON CONFLICT (gateway_id, name, minute) DO UPDATE SET \
     delivered = gateway_instance_minutes.delivered + excluded.delivered, \
     failed = gateway_instance_minutes.failed + excluded.failed";

/// Forgets an instance's minutes up to minute `$3`, out of every window.
pub(crate) const PRUNE_GATEWAY_MINUTES: &str = "DELETE FROM gateway_instance_minutes \
     WHERE gateway_id = $1 AND name = $2 AND minute <= $3";

pub(crate) const RESEAL_ACCOUNT: &str = "UPDATE smtp_accounts SET sealed_secret = $1 WHERE id = $2";
pub(crate) const CLEAR_SERVER_SECRETS: &str =
    "UPDATE smtp_accounts SET sealed_secret = NULL WHERE server_id = $1 AND tenant_id = $2";

// Submission.

pub(crate) const MESSAGE_BY_KEY: &str =
    "SELECT id, send_at FROM messages WHERE tenant_id = $1 AND idempotency_key = $2";
pub(crate) const RECIPIENT_STATUSES: &str =
    "SELECT status FROM recipients WHERE message_id = $1 AND tenant_id = $2";

// Queue.

/// Every attempt of a message's recipients, in the order they were made.
pub(crate) const MESSAGE_ATTEMPTS: &str = "SELECT a.recipient_id, a.at, a.node, a.server, a.outcome, \
     a.step, a.code, a.enhanced_code, a.response, a.duration_ms, a.remote_addr, a.tls_version, \
     a.tls_cipher, a.provider_id, a.config_version, a.sender_policy, a.diagnosis \
     FROM attempts a JOIN recipients r ON r.id = a.recipient_id \
     WHERE r.message_id = $1 AND r.tenant_id = $2 ORDER BY a.id";

pub(crate) const INSERT_CAPTURE: &str = "INSERT INTO captured (message_id, tenant_id, envelope_from, recipients, content, at) \
     VALUES ($1, $2, $3, $4, $5, $6)";
pub(crate) const UPSERT_NODE: &str = "INSERT INTO nodes (name, roles, version, started_at, heartbeat_at, incarnation) VALUES \
     ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET roles = excluded.roles, \
     version = excluded.version, started_at = excluded.started_at, heartbeat_at = \
     excluded.heartbeat_at, incarnation = excluded.incarnation";
pub(crate) const MESSAGE_RECIPIENTS: &str = "SELECT id, address, kind, status, due_at, gateway_id FROM recipients WHERE message_id = $1 AND \
     tenant_id = $2 ORDER BY position";
pub(crate) const CAPTURED: &str = "SELECT message_id, at, envelope_from, recipients, content FROM captured WHERE tenant_id \
     = $1 ORDER BY id DESC LIMIT $2";
pub(crate) const NODES: &str = "SELECT name, roles, version, started_at, heartbeat_at, incarnation FROM nodes ORDER BY \
     heartbeat_at DESC, name";
/// Cancels a message's waiting recipients (`$1` the message, `$2` its tenant).
pub(crate) const CANCEL_RECIPIENTS: &str = "UPDATE recipients SET status = 'cancelled', due_at = NULL \
     WHERE message_id = $1 AND tenant_id = $2 AND status IN ('queued', 'deferred')";
pub(crate) const MESSAGE_HEAD: &str = "SELECT subject, created_at, idempotency_key, used_fallback, on_behalf_name, \
     on_behalf_email, test_provider_id, source, smtp_credential_id, smtp_connector_id, \
     client_addr, attachments, send_at, template_id, template_version FROM messages \
     WHERE id = $1 AND tenant_id = $2";
/// Unfinished recipients of the whole installation by status, for the
/// metrics' queue depth (read every few seconds by a node that exports them,
/// never per scrape). Only rows of the partial index `recipients_next_due`.
/// A queued recipient not due before `$1` (now) waits for its message's
/// `send_at`: it is counted as scheduled.
pub(crate) const QUEUE_DEPTH: &str = "SELECT CASE WHEN status = 'queued' AND due_at > $1 THEN 'scheduled' \
     ELSE status END AS status, count(*) AS n FROM recipients WHERE status IN \
     ('queued', 'deferred', 'sending') GROUP BY 1";
pub(crate) const RELEASE_NODE: &str = "UPDATE nodes SET incarnation = NULL WHERE name = $1";
pub(crate) const COMPLETE_RECIPIENT: &str = "UPDATE recipients SET status = $1, due_at = $2, lease_owner = NULL, lease_incarnation = \
     NULL WHERE id = $3 AND lease_token = $4 AND status = 'sending' RETURNING message_id, \
     tenant_id, address, priority, sole, attempts";
/// Gives a claimed recipient to a gateway (`$2`), or back to the nodes
/// (`$2` null), as a release does: no attempt counted, due at `$1`.
/// Gives a deleted gateway's waiting recipients back to the nodes (`$1` the
/// gateway, `$2` its tenant): nothing else would ever claim them.
pub(crate) const UNPIN_GATEWAY: &str = "UPDATE recipients SET gateway_id = NULL \
     WHERE gateway_id = $1 AND tenant_id = $2 AND status IN ('queued', 'deferred', 'sending')";
/// Gives a tenant's waiting pinned recipients back to the nodes after a
/// change of its routes (a server's gateway, a provider's server, the
/// active provider), due no earlier than `$1`, when the change is in
/// effect on every node. Only waiting ones: a lease in force keeps its
/// recipient. A node that claims one whose route is still pinned hands it
/// to the route's gateway, so this never sends pinned mail from a node.
pub(crate) const UNPIN_TENANT_WAITING: &str = "UPDATE recipients SET gateway_id = NULL, \
     due_at = CASE WHEN due_at < $1 THEN $1 ELSE due_at END \
     WHERE gateway_id IN (SELECT id FROM gateways WHERE tenant_id = $2) AND tenant_id = $2 \
     AND status IN ('queued', 'deferred')";
/// At a refresh of the tenant's properties (`$1` now): mail given back to
/// the nodes by a change of the active provider, due when that change would
/// have been in effect everywhere, is due now, since the change is.
pub(crate) const DUE_AT_REFRESH: &str = "UPDATE recipients SET due_at = $1 \
     WHERE tenant_id = $2 AND (status = 'queued' OR status = 'deferred' OR status = 'sending') \
     AND gateway_id IS NULL AND status <> 'sending' AND due_at > $1 \
     AND due_at = (SELECT properties_effective_from FROM tenants WHERE id = $2)";
pub(crate) const REPIN_RECIPIENT: &str = "UPDATE recipients SET status = CASE WHEN attempts > 1 THEN 'deferred' ELSE 'queued' END, \
     attempts = attempts - 1, due_at = $1, lease_owner = NULL, lease_incarnation = NULL, gateway_id = $2 \
     WHERE id = $3 AND lease_token = $4 AND status = 'sending'";
pub(crate) const RELEASE_RECIPIENT: &str = "UPDATE recipients SET status = CASE WHEN attempts > 1 THEN 'deferred' ELSE 'queued' END, \
     attempts = attempts - 1, due_at = $1, lease_owner = NULL, lease_incarnation = NULL WHERE \
     id = $2 AND lease_token = $3 AND status = 'sending'";

// SMTP ingress: credentials and connectors.

macro_rules! smtp_credential_columns {
    () => {
        "id, tenant_id, name, username, rate_limit_per_minute, created_at, last_used_at"
    };
}

macro_rules! smtp_connector_columns {
    () => {
        "id, tenant_id, name, cidrs, rate_limit_per_minute, created_at"
    };
}

pub(crate) const INSERT_SMTP_CREDENTIAL: &str = concat!(
    "INSERT INTO smtp_credentials (id, tenant_id, name, username, password_hash, \
     rate_limit_per_minute, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
    smtp_credential_columns!()
);
pub(crate) const SMTP_CREDENTIALS: &str = concat!(
    "SELECT ",
    smtp_credential_columns!(),
    " FROM smtp_credentials WHERE tenant_id = $1 ORDER BY created_at, id"
);
pub(crate) const SMTP_CREDENTIAL_BY_ID: &str = concat!(
    "SELECT ",
    smtp_credential_columns!(),
    " FROM smtp_credentials WHERE id = $1 AND tenant_id = $2"
);
/// A credential and its password's hash, by the username AUTH gives (no tenant is known yet).
pub(crate) const SMTP_LOGIN: &str = concat!(
    "SELECT ",
    smtp_credential_columns!(),
    ", password_hash FROM smtp_credentials WHERE username = $1"
);
pub(crate) const SMTP_CREDENTIAL_USED: &str =
    "UPDATE smtp_credentials SET last_used_at = $1 WHERE id = $2";
pub(crate) const DELETE_SMTP_CREDENTIAL: &str =
    "DELETE FROM smtp_credentials WHERE id = $1 AND tenant_id = $2";
pub(crate) const INSERT_SMTP_CONNECTOR: &str = concat!(
    "INSERT INTO smtp_connectors (id, tenant_id, name, cidrs, rate_limit_per_minute, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
    smtp_connector_columns!()
);
pub(crate) const SMTP_CONNECTORS: &str = concat!(
    "SELECT ",
    smtp_connector_columns!(),
    " FROM smtp_connectors WHERE tenant_id = $1 ORDER BY created_at, id"
);
pub(crate) const SMTP_CONNECTOR_BY_ID: &str = concat!(
    "SELECT ",
    smtp_connector_columns!(),
    " FROM smtp_connectors WHERE id = $1 AND tenant_id = $2"
);
/// Every tenant's connectors: the listener matches a client's address against them all.
pub(crate) const ALL_SMTP_CONNECTORS: &str = concat!(
    "SELECT ",
    smtp_connector_columns!(),
    " FROM smtp_connectors ORDER BY created_at, id"
);
pub(crate) const DELETE_SMTP_CONNECTOR: &str =
    "DELETE FROM smtp_connectors WHERE id = $1 AND tenant_id = $2";

// Console sign-in.

pub(crate) const DELETE_EXPIRED_SESSIONS: &str = "DELETE FROM sessions WHERE expires_at < $1";
pub(crate) const DELETE_SESSION: &str = "DELETE FROM sessions WHERE hash = $1";
pub(crate) const DELETE_OPERATOR_SESSIONS: &str = "DELETE FROM sessions WHERE operator_email = $1";
pub(crate) const DELETE_PERSON_SESSIONS: &str = "DELETE FROM sessions WHERE person_id = $1";
pub(crate) const UPSERT_OPERATOR: &str = "INSERT INTO operators (id, email, password_hash, updated_at) VALUES ($1, $2, $3, $4) ON \
     CONFLICT (email) DO UPDATE SET password_hash = excluded.password_hash, updated_at = \
     excluded.updated_at";
pub(crate) const INSERT_SESSION: &str = "INSERT INTO sessions (hash, id, operator_email, person_id, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6)";
pub(crate) const OPERATOR_CREDENTIALS: &str =
    "SELECT email, password_hash FROM operators WHERE email = $1";
pub(crate) const SESSION_BY_HASH: &str = "SELECT id, operator_email, person_id, created_at, expires_at FROM sessions WHERE hash = \
     $1 AND expires_at >= $2";
pub(crate) const PERSON_CREDENTIALS: &str = "SELECT p.id, p.tenant_id, p.name, p.email, p.role, p.created_at, p.password_hash FROM \
     persons p JOIN tenants t ON t.id = p.tenant_id WHERE lower(p.email) = $1 AND \
     p.password_hash IS NOT NULL ORDER BY t.created_at, t.id";

// Delivery webhooks and their outbox.

macro_rules! webhook_columns {
    () => {
        "id, tenant_id, url, events, enabled, disabled_reason, failing_since, previous_secret_until, created_at, updated_at"
    };
}

macro_rules! delivery_columns {
    () => {
        "event_id, event_type, message_id, status, attempts, created_at, last_attempt_at, response_status, error, duration_ms, due_at"
    };
}

pub(crate) const INSERT_WEBHOOK: &str = concat!(
    "INSERT INTO webhooks (id, tenant_id, url, events, enabled, sealed_secret, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING ",
    webhook_columns!()
);
pub(crate) const WEBHOOK_BY_ID: &str = concat!(
    "SELECT ",
    webhook_columns!(),
    " FROM webhooks WHERE id = $1 AND tenant_id = $2"
);
pub(crate) const WEBHOOKS: &str = concat!(
    "SELECT ",
    webhook_columns!(),
    " FROM webhooks WHERE tenant_id = $1 ORDER BY created_at, id"
);
/// `$3` is the new `enabled` or NULL: enabling forgets why Herald disabled it.
pub(crate) const UPDATE_WEBHOOK: &str = concat!(
    "UPDATE webhooks SET url = COALESCE($1, url), events = COALESCE($2, events), \
     enabled = COALESCE($3, enabled), \
     disabled_reason = CASE WHEN $3 THEN NULL ELSE disabled_reason END, \
     failing_since = CASE WHEN $3 THEN NULL ELSE failing_since END, \
     updated_at = $4 WHERE id = $5 AND tenant_id = $6 RETURNING ",
    webhook_columns!()
);
pub(crate) const ROTATE_WEBHOOK_SECRET: &str = concat!(
    "UPDATE webhooks SET previous_sealed_secret = sealed_secret, sealed_secret = $1, \
     previous_secret_until = $2, updated_at = $3 WHERE id = $4 AND tenant_id = $5 RETURNING ",
    webhook_columns!()
);
/// What [`INSERT_WEBHOOK`] binds, in its order.
pub(crate) fn new_webhook_values(w: &NewWebhook) -> Vec<Value> {
    vec![
        Value::Text(Some(w.id.to_string())),
        Value::Text(Some(w.tenant_id.to_string())),
        Value::text(Some(&w.url)),
        Value::Int(Some(w.events.bits())),
        Value::Flag(Some(w.enabled)),
        Value::text(Some(&w.sealed_secret)),
        Value::Int(Some(w.created_at)),
    ]
}

/// What [`UPDATE_WEBHOOK`] binds, in its order: the change (`NULL` keeps a
/// field), the time, the webhook and its tenant.
pub(crate) fn webhook_update_values(
    tenant: TenantId,
    id: WebhookId,
    change: &WebhookChange,
    now: i64,
) -> Vec<Value> {
    vec![
        Value::text(change.url.as_deref()),
        Value::Int(change.events.map(|e| e.bits())),
        Value::Flag(change.enabled),
        Value::Int(Some(now)),
        Value::Text(Some(id.to_string())),
        Value::Text(Some(tenant.to_string())),
    ]
}

/// What [`ROTATE_WEBHOOK_SECRET`] binds, in its order.
pub(crate) fn webhook_rotation_values(
    tenant: TenantId,
    id: WebhookId,
    sealed_secret: String,
    previous_until: i64,
    now: i64,
) -> Vec<Value> {
    vec![
        Value::Text(Some(sealed_secret)),
        Value::Int(Some(previous_until)),
        Value::Int(Some(now)),
        Value::Text(Some(id.to_string())),
        Value::Text(Some(tenant.to_string())),
    ]
}

pub(crate) const DELETE_WEBHOOK_EVENTS: &str =
    "DELETE FROM webhook_outbox WHERE webhook_id = $1 AND tenant_id = $2";
pub(crate) const DELETE_WEBHOOK: &str = "DELETE FROM webhooks WHERE id = $1 AND tenant_id = $2";
pub(crate) const WEBHOOK_DELIVERIES: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    " FROM webhook_outbox WHERE webhook_id = $1 AND tenant_id = $2 ORDER BY seq DESC LIMIT $3"
);
pub(crate) const WEBHOOK_SECRETS: &str = "SELECT sealed_secret, CASE WHEN previous_secret_until > $1 THEN \
     previous_sealed_secret END AS previous_sealed_secret FROM webhooks WHERE id = $2 AND tenant_id = $3";
/// A test event's one attempt, for a webhook of the tenant only.
pub(crate) const INSERT_WEBHOOK_TEST: &str = "INSERT INTO webhook_outbox (webhook_id, tenant_id, event_id, event_type, payload, \
     status, due_at, attempts, created_at, last_attempt_at, response_status, error, duration_ms) \
     SELECT id, tenant_id, $1, $2, $3, $4, $5, 1, $5, $5, $6, $7, $8 FROM webhooks \
     WHERE id = $9 AND tenant_id = $10";
/// The enabled webhooks of a tenant, for the events an outcome causes, with
/// where those events go (see [`crate::outbox::Subscriber::from_row`]).
pub(crate) const SUBSCRIBERS: &str = "SELECT id, events, url, sealed_secret, previous_sealed_secret, \
     previous_secret_until FROM webhooks WHERE tenant_id = $1 AND enabled ORDER BY id";
/// A message's recipients as they stand, for the event about the whole message.
pub(crate) const RECIPIENT_STATES: &str = "SELECT id, address, status FROM recipients WHERE message_id = $1 AND tenant_id = $2 \
     ORDER BY position";
/// Where a claimed event goes and what signs it: a webhook's URL and secrets.
pub(crate) const WEBHOOK_TARGET: &str = "SELECT url, sealed_secret, CASE WHEN previous_secret_until > $1 THEN \
     previous_sealed_secret END AS previous_sealed_secret FROM webhooks WHERE id = $2";
pub(crate) const GIVE_BACK_EVENT: &str = "UPDATE webhook_outbox SET due_at = CASE WHEN due_at < $1 THEN $1 ELSE due_at END, \
     lease_until = NULL, lease_owner = NULL, lease_incarnation = NULL \
     WHERE seq = $2 AND lease_token = $3 AND status = 'pending'";
/// A retried event puts off the pending events after it in its chain, so
/// none falls due before it.
pub(crate) const PUT_OFF_CHAIN: &str = "UPDATE webhook_outbox SET due_at = $1 WHERE status = 'pending' AND due_at < $1 \
     AND seq > $2 AND webhook_id = (SELECT webhook_id FROM webhook_outbox WHERE seq = $2) \
     AND message_id = (SELECT message_id FROM webhook_outbox WHERE seq = $2)";
/// A disabled webhook's pending events are given up: none is written for it
/// while it is disabled either.
pub(crate) const GIVE_UP_WEBHOOK_EVENTS: &str = "UPDATE webhook_outbox SET status = 'failed', error = $1, lease_until = NULL, \
     lease_owner = NULL, lease_incarnation = NULL WHERE webhook_id = $2 AND tenant_id = $3 \
     AND status = 'pending'";
/// Gives back every event whose lease ran out (its holder died or hangs; a
/// late attempt of the holder is refused by the lease token).
pub(crate) const RELEASE_EXPIRED_LEASES: &str = "UPDATE webhook_outbox SET lease_until = NULL, lease_owner = NULL, lease_incarnation = NULL \
     WHERE lease_until <= $1 AND status = 'pending'";
/// Gives back the events earlier processes of a node held, due at once.
pub(crate) const RELEASE_WEBHOOK_LEASES: &str = "UPDATE webhook_outbox SET lease_until = NULL, lease_owner = NULL, lease_incarnation = NULL \
     WHERE status = 'pending' AND lease_until > $1 AND lease_owner = $2 AND lease_incarnation <> $3";
pub(crate) const WEBHOOK_SUCCEEDED: &str =
    "UPDATE webhooks SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL";
pub(crate) const WEBHOOK_FAILED: &str =
    "UPDATE webhooks SET failing_since = COALESCE(failing_since, $1) WHERE id = $2";
pub(crate) const DISABLE_FAILING_WEBHOOK: &str = "UPDATE webhooks SET enabled = FALSE, updated_at = $1 WHERE id = $2 AND enabled \
     AND failing_since <= $3 RETURNING tenant_id, failing_since";
pub(crate) const SET_DISABLED_REASON: &str =
    "UPDATE webhooks SET disabled_reason = $1 WHERE id = $2";
/// When the earliest ready event is due (a disabled webhook has none).
pub(crate) const NEXT_WEBHOOK_DUE: &str =
    "SELECT MIN(due_at) FROM webhook_outbox WHERE status = 'pending' AND lease_until IS NULL";
pub(crate) const PRUNE_WEBHOOK_EVENTS: &str =
    "DELETE FROM webhook_outbox WHERE status <> 'pending' AND created_at < $1";
pub(crate) const SEALED_WEBHOOK_SECRETS: &str =
    "SELECT id, sealed_secret, previous_sealed_secret FROM webhooks ORDER BY id";
pub(crate) const RESEAL_WEBHOOK: &str =
    "UPDATE webhooks SET sealed_secret = $1, previous_sealed_secret = $2 WHERE id = $3";

// Templates and their versions.

/// A template at its current version: `t` the template, `v` that version.
macro_rules! template_columns {
    () => {
        "t.id, t.tenant_id, t.name, t.description, t.version, v.subject, v.text_body, v.html_body, \
         t.created_at, t.updated_at FROM templates t JOIN template_versions v \
         ON v.template_id = t.id AND v.version = t.version"
    };
}

pub(crate) const INSERT_TEMPLATE: &str = "INSERT INTO templates (id, tenant_id, name, description, version, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, 1, $5, $5)";
/// Moves a template to its next version; returns that version.
pub(crate) const UPDATE_TEMPLATE: &str = "UPDATE templates SET name = $1, description = $2, version = version + 1, updated_at = $3 \
     WHERE id = $4 AND tenant_id = $5 RETURNING version";
pub(crate) const INSERT_TEMPLATE_VERSION: &str = "INSERT INTO template_versions (template_id, version, name, description, subject, text_body, \
     html_body, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
pub(crate) const TEMPLATE_BY_ID: &str = concat!(
    "SELECT ",
    template_columns!(),
    " WHERE t.id = $1 AND t.tenant_id = $2"
);
pub(crate) const TEMPLATE_BY_NAME: &str = concat!(
    "SELECT ",
    template_columns!(),
    " WHERE t.tenant_id = $1 AND t.name = $2"
);
pub(crate) const TEMPLATES: &str = concat!(
    "SELECT ",
    template_columns!(),
    " WHERE t.tenant_id = $1 ORDER BY t.name"
);
/// The names of the schedules that use a template.
pub(crate) const SCHEDULES_OF_TEMPLATE: &str =
    "SELECT name FROM schedules WHERE template_id = $1 AND tenant_id = $2 ORDER BY name";
/// Deletes a template; its versions go with it.
pub(crate) const DELETE_TEMPLATE: &str = "DELETE FROM templates WHERE id = $1 AND tenant_id = $2";

// Recurring schedules and their firings.

/// A schedule's columns; the JSON ones as text, which both backends read alike.
macro_rules! schedule_columns {
    () => {
        "id, tenant_id, name, cron, timezone, template_id, CAST(data AS TEXT) AS data, \
         CAST(header_to AS TEXT) AS header_to, CAST(header_cc AS TEXT) AS header_cc, \
         CAST(bcc AS TEXT) AS bcc, enabled, next_run_at, last_run_at, created_at, updated_at"
    };
}
pub(crate) use schedule_columns;

pub(crate) const INSERT_SCHEDULE: &str = concat!(
    "INSERT INTO schedules (id, tenant_id, name, cron, timezone, template_id, data, header_to, \
     header_cc, bcc, enabled, next_run_at, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) RETURNING ",
    schedule_columns!()
);
pub(crate) const UPDATE_SCHEDULE: &str = concat!(
    "UPDATE schedules SET name = $1, cron = $2, timezone = $3, template_id = $4, data = $5, \
     header_to = $6, header_cc = $7, bcc = $8, enabled = $9, \
     next_run_at = CASE WHEN $10 THEN $11 ELSE next_run_at END, updated_at = $12 \
     WHERE id = $13 AND tenant_id = $14 RETURNING ",
    schedule_columns!()
);
/// What [`INSERT_SCHEDULE`] binds, in its order: the schedule and its
/// tenant, its fields, its next run and the time.
pub(crate) fn new_schedule_values(s: &NewSchedule) -> Vec<Value> {
    let mut values = vec![
        Value::text(Some(&s.id.to_string())),
        Value::text(Some(&s.tenant_id.to_string())),
    ];
    values.extend(schedule_field_values(&s.fields));
    values.extend([Value::Int(s.next_run_at), Value::Int(Some(s.created_at))]);
    values
}

/// What [`UPDATE_SCHEDULE`] binds, in its order: the fields, whether the
/// next run is set and to what, the time, the schedule and its tenant.
pub(crate) fn schedule_update_values(
    tenant: TenantId,
    id: ScheduleId,
    fields: &ScheduleFields,
    next_run: NextRun,
    now: i64,
) -> Vec<Value> {
    let (set_next, next_run_at) = match next_run {
        NextRun::Keep => (false, None),
        NextRun::At(at) => (true, at),
    };
    let mut values = schedule_field_values(fields);
    values.extend([
        Value::Flag(Some(set_next)),
        Value::Int(next_run_at),
        Value::Int(Some(now)),
        Value::text(Some(&id.to_string())),
        Value::text(Some(&tenant.to_string())),
    ]);
    values
}

/// A schedule's fields, in the order both statements name them.
fn schedule_field_values(f: &ScheduleFields) -> Vec<Value> {
    vec![
        Value::text(Some(&f.name)),
        Value::text(Some(&f.cron)),
        Value::text(Some(&f.timezone)),
        Value::text(Some(&f.template_id.to_string())),
        Value::json(&f.data),
        Value::json(&rows::mailbox_strings(&f.to)),
        Value::json(&rows::mailbox_strings(&f.cc)),
        Value::json(&rows::address_strings(&f.bcc)),
        Value::Flag(Some(f.enabled)),
    ]
}
pub(crate) const SCHEDULE_BY_ID: &str = concat!(
    "SELECT ",
    schedule_columns!(),
    " FROM schedules WHERE id = $1 AND tenant_id = $2"
);
pub(crate) const SCHEDULES: &str = concat!(
    "SELECT ",
    schedule_columns!(),
    " FROM schedules WHERE tenant_id = $1 ORDER BY name"
);
/// Deletes a schedule; its firings go with it (their messages stay).
pub(crate) const DELETE_SCHEDULE: &str = "DELETE FROM schedules WHERE id = $1 AND tenant_id = $2";
/// Consumes a scheduled occurrence: only while the schedule is enabled and
/// still expects it (`$5`), so that of several nodes firing it one does.
pub(crate) const CONSUME_OCCURRENCE: &str = "UPDATE schedules SET next_run_at = $1, last_run_at = $2 \
     WHERE id = $3 AND tenant_id = $4 AND enabled AND next_run_at = $5";
/// Whether a schedule's occurrence (`$2`) was recorded already (`schedule_runs_once`).
pub(crate) const OCCURRENCE_RECORDED: &str = "SELECT EXISTS (SELECT 1 FROM schedule_runs \
     WHERE schedule_id = $1 AND fire_at = $2 AND cause = 'schedule')";
/// Notes a manual firing on its schedule.
pub(crate) const NOTE_MANUAL_RUN: &str =
    "UPDATE schedules SET last_run_at = $1 WHERE id = $2 AND tenant_id = $3";
/// Records a firing; nothing when its occurrence was recorded already
/// (`schedule_runs_once`).
pub(crate) const INSERT_SCHEDULE_RUN: &str = "INSERT INTO schedule_runs (id, schedule_id, tenant_id, cause, fire_at, missed, message_id, \
     error, node, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING";
/// A schedule's newest firings with their messages' `send_at` (NULL without one).
pub(crate) const SCHEDULE_RUNS: &str = "SELECT r.id, r.schedule_id, r.cause, r.fire_at, r.missed, r.message_id, r.error, r.node, \
     r.created_at, m.send_at FROM schedule_runs r \
     LEFT JOIN messages m ON m.id = r.message_id AND m.tenant_id = r.tenant_id \
     WHERE r.schedule_id = $1 AND r.tenant_id = $2 ORDER BY r.created_at DESC, r.id DESC LIMIT $3";

/// Every statement above, for the test that checks their placeholders.
#[cfg(test)]
pub(crate) const ALL: &[&str] = &[
    MESSAGE_ATTEMPTS,
    INSERT_TENANT,
    SET_CREDENTIAL_STORAGE,
    SET_ACTIVE_PROVIDER,
    INSERT_TOKEN,
    INSERT_PERSON,
    REVOKE_BOOTSTRAP_TOKEN,
    REVOKE_OTHER_BOOTSTRAP_TOKENS,
    OPERATOR_TOKEN_EXISTS,
    DELETE_OPERATOR_TOKEN,
    MARK_BOOTSTRAP,
    INSERT_BOOTSTRAP_TOKEN,
    SEALED_SECRETS,
    SET_PERSON_PASSWORD,
    TENANT_BY_ID,
    TENANT_BY_SLUG,
    TENANTS,
    PERSON_BY_ID,
    SESSION_PERSON,
    PERSONS,
    PERSONS_BY_EMAIL,
    TOKEN_BY_HASH,
    TOKENS,
    OPERATOR_TOKENS,
    ACCOUNT_BY_ID,
    ACCOUNTS,
    PROVIDER_BY_ID,
    PROVIDERS,
    INSERT_SERVER,
    INSERT_PROVIDER,
    UPDATE_PROVIDER,
    INSERT_ACCOUNT,
    UPDATE_SERVER,
    SERVERS,
    SERVER_BY_ID,
    DELETE_PERSON,
    DELETE_TOKEN,
    INSERT_AUDIT,
    TOKEN_REVOKED_AT,
    AUDIT,
    ACCOUNT_OF_PERSON,
    TOKEN_USED,
    DELETE_PROVIDER,
    DELETE_ACCOUNT,
    DELETE_SERVER,
    PROVIDER_OF_ACCOUNT,
    PROVIDER_OF_SERVER,
    RESEAL_ACCOUNT,
    CLEAR_SERVER_SECRETS,
    MESSAGE_BY_KEY,
    RECIPIENT_STATUSES,
    INSERT_CAPTURE,
    UPSERT_NODE,
    MESSAGE_RECIPIENTS,
    CAPTURED,
    NODES,
    QUEUE_DEPTH,
    MESSAGE_HEAD,
    CANCEL_RECIPIENTS,
    RELEASE_NODE,
    COMPLETE_RECIPIENT,
    RELEASE_RECIPIENT,
    REPIN_RECIPIENT,
    UNPIN_GATEWAY,
    UNPIN_TENANT_WAITING,
    DUE_AT_REFRESH,
    STALE_GATEWAY_INSTANCES,
    GATEWAY_INSTANCE_TAKEN_OVER,
    DELETE_EXPIRED_SESSIONS,
    DELETE_SESSION,
    DELETE_OPERATOR_SESSIONS,
    DELETE_PERSON_SESSIONS,
    UPSERT_OPERATOR,
    INSERT_SESSION,
    OPERATOR_CREDENTIALS,
    SESSION_BY_HASH,
    PERSON_CREDENTIALS,
    INSERT_SMTP_CREDENTIAL,
    SMTP_CREDENTIALS,
    SMTP_CREDENTIAL_BY_ID,
    SMTP_LOGIN,
    SMTP_CREDENTIAL_USED,
    DELETE_SMTP_CREDENTIAL,
    INSERT_SMTP_CONNECTOR,
    SMTP_CONNECTORS,
    SMTP_CONNECTOR_BY_ID,
    ALL_SMTP_CONNECTORS,
    DELETE_SMTP_CONNECTOR,
    INSERT_WEBHOOK,
    WEBHOOK_BY_ID,
    WEBHOOKS,
    UPDATE_WEBHOOK,
    ROTATE_WEBHOOK_SECRET,
    DELETE_WEBHOOK_EVENTS,
    DELETE_WEBHOOK,
    WEBHOOK_DELIVERIES,
    INSERT_WEBHOOK_TEST,
    WEBHOOK_SECRETS,
    SUBSCRIBERS,
    RECIPIENT_STATES,
    WEBHOOK_TARGET,
    GIVE_BACK_EVENT,
    PUT_OFF_CHAIN,
    GIVE_UP_WEBHOOK_EVENTS,
    RELEASE_WEBHOOK_LEASES,
    RELEASE_EXPIRED_LEASES,
    WEBHOOK_SUCCEEDED,
    WEBHOOK_FAILED,
    DISABLE_FAILING_WEBHOOK,
    SET_DISABLED_REASON,
    NEXT_WEBHOOK_DUE,
    PRUNE_WEBHOOK_EVENTS,
    SEALED_WEBHOOK_SECRETS,
    RESEAL_WEBHOOK,
    INSERT_TEMPLATE,
    UPDATE_TEMPLATE,
    INSERT_TEMPLATE_VERSION,
    TEMPLATE_BY_ID,
    TEMPLATE_BY_NAME,
    TEMPLATES,
    SCHEDULES_OF_TEMPLATE,
    DELETE_TEMPLATE,
    INSERT_SCHEDULE,
    UPDATE_SCHEDULE,
    SCHEDULE_BY_ID,
    SCHEDULES,
    DELETE_SCHEDULE,
    CONSUME_OCCURRENCE,
    OCCURRENCE_RECORDED,
    NOTE_MANUAL_RUN,
    INSERT_SCHEDULE_RUN,
    SCHEDULE_RUNS,
    INSERT_GATEWAY,
    GATEWAY_BY_ID,
    GATEWAYS,
    GATEWAY_BY_TOKEN,
    GATEWAY_INSTANCES,
    TENANT_GATEWAY_INSTANCES,
    REPLACE_GATEWAY_TOKEN,
    DELETE_GATEWAY,
    SERVERS_OF_GATEWAY,
    RECIPIENT_PINNED_TO,
    UPSERT_GATEWAY_INSTANCE,
    COUNT_GATEWAY_OUTCOMES,
    PRUNE_GATEWAY_MINUTES,
];
