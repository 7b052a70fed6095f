//! The SQLite store: WAL mode, `synchronous = FULL`, group commit through one writer thread.

mod db;

use herald_core::timestamp::now_ms;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use herald_core::status::message_status;
use herald_core::{
    AccountId, DisplayName, EmailAddress, HeaderName, HeaderValue, Invalid, Mailbox, Mechanism,
    MessageId, PersonId, PersonRole, Port, ProviderId, RecipientId, RecipientStatus, Role,
    Security, SenderPolicy, ServerId, SmtpHost, Subject, TenantId, TenantSlug, TokenId,
};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::model::*;
use crate::{Result, Store, StoreError};
use db::{Db, unavailable};

/// Herald's embedded store: one SQLite file.
pub struct SqliteStore {
    db: Db,
    /// The tenant the previous claim stopped at: the next one starts after it.
    claim_cursor: Arc<Mutex<Option<String>>>,
}

impl SqliteStore {
    /// Opens or creates the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        Ok(SqliteStore {
            db: Db::open(path)?,
            claim_cursor: Arc::default(),
        })
    }
}

/// The condition of every unfinished recipient, as the partial indexes say it.
const UNFINISHED: &str = "status IN ('queued', 'deferred', 'sending')";

/// The tenants a claim serves, in turn: from the one after `cursor` around
/// to it, those with something due at `now` and room, up to the claim's
/// limit (see [`Store::claim`]). Each step is an index lookup. Moves the
/// cursor to the last tenant looked at.
fn tenants_due(
    c: &Connection,
    req: &ClaimRequest,
    cursor: &mut Option<String>,
) -> Result<Vec<(String, u32)>> {
    let mut next = c
        .prepare_cached(&format!(
            "SELECT tenant_id FROM recipients INDEXED BY recipients_tenant_due \
             WHERE {UNFINISHED} AND tenant_id > ?1 ORDER BY tenant_id LIMIT 1"
        ))
        .map_err(sql)?;
    let mut has_due = c
        .prepare_cached(&format!(
            "SELECT EXISTS (SELECT 1 FROM recipients INDEXED BY recipients_tenant_due \
                            WHERE tenant_id = ?1 AND {UNFINISHED} AND priority = 0 AND due_at <= ?2) \
                 OR EXISTS (SELECT 1 FROM recipients INDEXED BY recipients_tenant_due \
                            WHERE tenant_id = ?1 AND {UNFINISHED} AND priority > 0 AND due_at <= ?2)"
        ))
        .map_err(sql)?;
    let start = cursor.clone();
    let mut at = start.clone().unwrap_or_default();
    let mut wrapped = start.is_none();
    let (mut due, mut looked) = (Vec::new(), 0);
    while due.len() < req.limit as usize && looked < crate::CLAIM_WALK {
        let found: Option<String> = next
            .query_row([&at], |r| r.get(0))
            .optional()
            .map_err(sql)?;
        let tenant = match found {
            // Around again: up to and including where this claim started.
            Some(t) if wrapped && start.as_ref().is_some_and(|s| &t > s) => break,
            Some(t) => t,
            None if wrapped => break,
            None => {
                wrapped = true;
                at.clear();
                continue;
            }
        };
        at.clone_from(&tenant);
        *cursor = Some(tenant.clone());
        let room = req.room_of(id(tenant.clone())?);
        if room == 0 {
            continue;
        }
        looked += 1;
        if has_due
            .query_row(params![tenant, req.now], |r| r.get(0))
            .map_err(sql)?
        {
            due.push((tenant, room));
        }
    }
    Ok(due)
}

/// The earliest due time of a tenant's unfinished recipients, if any.
fn earliest_of(c: &Connection, tenant: &str) -> Result<Option<i64>> {
    let mut earliest = None;
    for class in ["priority = 0", "priority > 0"] {
        let due: Option<i64> = c
            .prepare_cached(&format!(
                "SELECT due_at FROM recipients INDEXED BY recipients_tenant_due \
                 WHERE tenant_id = ?1 AND {UNFINISHED} AND {class} ORDER BY due_at LIMIT 1"
            ))
            .map_err(sql)?
            .query_row([tenant], |r| r.get(0))
            .optional()
            .map_err(sql)?;
        earliest = crate::earlier(earliest, due);
    }
    Ok(earliest)
}

/// Any database error the caller cannot do anything about, but for a
/// foreign-key violation, which is a conflict ([`crate::REFERENCE_CONFLICT`]),
/// as on PostgreSQL.
fn sql(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
        {
            StoreError::Conflict(crate::REFERENCE_CONFLICT.to_owned())
        }
        _ => unavailable(e),
    }
}

/// Maps a unique-constraint violation to a conflict that says what is taken.
fn unique(what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| match &e {
        // Only a unique or primary key violation means "taken"; a foreign key
        // violation is a race, a conflict of its own (see `sql`).
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::Conflict(what.to_owned())
        }
        _ => sql(e),
    }
}

/// Parses a stored value back into its domain type; failure means the file was changed behind Herald's back.
fn stored<T, E: std::fmt::Display>(what: &str, parsed: std::result::Result<T, E>) -> Result<T> {
    parsed.map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn id<T: FromStr<Err = Invalid>>(s: String) -> Result<T> {
    stored("id", T::from_str(&s))
}

fn opt_id<T: FromStr<Err = Invalid>>(s: Option<String>) -> Result<Option<T>> {
    s.map(id).transpose()
}

fn address(s: String) -> Result<EmailAddress> {
    stored("address", EmailAddress::parse(&s))
}

/// A Reply-To, stored as the mailbox's canonical string; rows from before
/// Reply-To took a display name hold the bare address, which parses too.
fn reply_to_mailbox(s: String) -> Result<Mailbox> {
    stored("reply_to", Mailbox::from_stored(&s))
}

/// A header's mailboxes, stored as a JSON list of their canonical strings.
fn mailboxes(json: &str) -> Result<Vec<Mailbox>> {
    let list: Vec<String> = stored("mailbox list", serde_json::from_str(json))?;
    list.iter()
        .map(|m| stored("mailbox", Mailbox::from_stored(m)))
        .collect()
}

fn mailboxes_json(list: &[Mailbox]) -> String {
    serde_json::to_string(
        &list
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<String>>(),
    )
    .expect("a list of strings serialises")
}

const TENANT_COLUMNS: &str = "id, slug, name, credential_storage, notification_provider_id, \
     previous_provider_id, properties_effective_from, created_at";

/// Reads a tenant row; the outer error is SQLite's, the inner one a value that no longer parses.
fn tenant_row(r: &Row) -> rusqlite::Result<Result<Tenant>> {
    let (tid, slug, name, credential_storage): (String, String, String, bool) =
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
    let (provider, previous): (Option<String>, Option<String>) = (r.get(4)?, r.get(5)?);
    let (properties_effective_from, created_at) = (r.get(6)?, r.get(7)?);
    Ok((|| {
        Ok(Tenant {
            id: id(tid)?,
            slug,
            name,
            credential_storage,
            notification_provider_id: opt_id(provider)?,
            previous_provider_id: opt_id(previous)?,
            properties_effective_from,
            created_at,
        })
    })())
}

fn load_tenant(conn: &Connection, tenant_id: TenantId) -> Result<Tenant> {
    conn.query_row(
        &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1"),
        [tenant_id.to_string()],
        tenant_row,
    )
    .optional()
    .map_err(sql)?
    .ok_or(StoreError::NotFound)?
}

const TOKEN_COLUMNS: &str =
    "id, tenant_id, name, role, person_id, created_at, last_used_at, bootstrap";

/// Reads a token row; the outer error is SQLite's, the inner one a value that no longer parses.
fn token_row(r: &Row) -> rusqlite::Result<Result<TokenRecord>> {
    let (tid, tenant, name, role, person): (
        String,
        Option<String>,
        String,
        String,
        Option<String>,
    ) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
    let (created_at, last_used_at, bootstrap) = (r.get(5)?, r.get(6)?, r.get(7)?);
    Ok((|| {
        Ok(TokenRecord {
            id: id(tid)?,
            tenant_id: opt_id(tenant)?,
            name,
            role: stored("role", Role::parse(&role))?,
            person_id: opt_id(person)?,
            created_at,
            last_used_at,
            bootstrap,
        })
    })())
}

const PERSON_COLUMNS: &str = "id, tenant_id, name, email, role, created_at";

/// Reads a person row; the outer error is SQLite's, the inner one a value that no longer parses.
fn person_row(r: &Row) -> rusqlite::Result<Result<Person>> {
    let (pid, tid, name, email, role): (String, String, String, String, String) =
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
    let created_at = r.get(5)?;
    Ok((|| {
        Ok(Person {
            id: id(pid)?,
            tenant_id: id(tid)?,
            name,
            email: address(email)?,
            role: stored("role", PersonRole::parse(&role))?,
            created_at,
        })
    })())
}

fn load_person(conn: &Connection, tenant_id: TenantId, person_id: PersonId) -> Result<Person> {
    conn.query_row(
        &format!("SELECT {PERSON_COLUMNS} FROM persons WHERE id = ?1 AND tenant_id = ?2"),
        [person_id.to_string(), tenant_id.to_string()],
        person_row,
    )
    .optional()
    .map_err(sql)?
    .ok_or(StoreError::NotFound)?
}

const SERVER_COLUMNS: &str = "id, tenant_id, name, host, port, security, requires_auth, \
     allow_plaintext_auth, tls_verify, tls_ca_pem, tls_server_name, helo_name, max_connections, \
     max_messages_per_connection, idle_timeout_secs, rate_limit_per_minute, command_timeout_secs, \
     created_at, updated_at";

/// Reads a server row; the outer error is SQLite's, the inner one a value that no longer parses.
fn server_row(r: &Row) -> rusqlite::Result<Result<SmtpServer>> {
    let host: String = r.get("host")?;
    let port: i64 = r.get("port")?;
    let security: String = r.get("security")?;
    let settings = || -> Result<ServerSettings> {
        Ok(ServerSettings {
            name: r.get("name").map_err(sql)?,
            host: stored("host", SmtpHost::from_stored(&host))?,
            port: stored("port", Port::new(port))?,
            security: stored("security", Security::parse(&security))?,
            requires_auth: r.get("requires_auth").map_err(sql)?,
            allow_plaintext_auth: r.get("allow_plaintext_auth").map_err(sql)?,
            tls_verify: r.get("tls_verify").map_err(sql)?,
            tls_ca_pem: r.get("tls_ca_pem").map_err(sql)?,
            tls_server_name: r.get("tls_server_name").map_err(sql)?,
            helo_name: r.get("helo_name").map_err(sql)?,
            max_connections: r.get("max_connections").map_err(sql)?,
            max_messages_per_connection: r.get("max_messages_per_connection").map_err(sql)?,
            idle_timeout_secs: r.get("idle_timeout_secs").map_err(sql)?,
            rate_limit_per_minute: r.get("rate_limit_per_minute").map_err(sql)?,
            command_timeout_secs: r.get("command_timeout_secs").map_err(sql)?,
        })
    };
    let (sid, tid): (String, String) = (r.get("id")?, r.get("tenant_id")?);
    let (created_at, updated_at) = (r.get("created_at")?, r.get("updated_at")?);
    Ok((|| {
        Ok(SmtpServer {
            id: id(sid)?,
            tenant_id: id(tid)?,
            settings: settings()?,
            created_at,
            updated_at,
        })
    })())
}

fn load_server(conn: &Connection, tenant_id: TenantId, server_id: ServerId) -> Result<SmtpServer> {
    conn.query_row(
        &format!("SELECT {SERVER_COLUMNS} FROM smtp_servers WHERE id = ?1 AND tenant_id = ?2"),
        [server_id.to_string(), tenant_id.to_string()],
        server_row,
    )
    .optional()
    .map_err(sql)?
    .ok_or(StoreError::NotFound)?
}

const ACCOUNT_COLUMNS: &str = "id, server_id, tenant_id, username, mechanism, sealed_secret, \
     oauth2_token_url, oauth2_client_id, oauth2_scope, person_id, created_at";

/// Reads an account row; the outer error is SQLite's, the inner one a value that no longer parses.
fn account_row(r: &Row) -> rusqlite::Result<Result<SmtpAccount>> {
    let (aid, sid, tid): (String, String, String) =
        (r.get("id")?, r.get("server_id")?, r.get("tenant_id")?);
    let mechanism: String = r.get("mechanism")?;
    let sealed: Option<String> = r.get("sealed_secret")?;
    let token_url: Option<String> = r.get("oauth2_token_url")?;
    let oauth2 = match token_url {
        Some(token_url) => Some(OAuth2Client {
            token_url,
            client_id: r
                .get::<_, Option<String>>("oauth2_client_id")?
                .unwrap_or_default(),
            scope: r.get("oauth2_scope")?,
        }),
        None => None,
    };
    let username: String = r.get("username")?;
    let person: Option<String> = r.get("person_id")?;
    let created_at: i64 = r.get("created_at")?;
    Ok((|| {
        Ok(SmtpAccount {
            id: id(aid)?,
            server_id: id(sid)?,
            tenant_id: id(tid)?,
            username,
            mechanism: stored("mechanism", Mechanism::parse(&mechanism))?,
            secret_set: sealed.is_some(),
            sealed_secret: sealed,
            oauth2,
            person_id: opt_id(person)?,
            created_at,
        })
    })())
}

fn load_account(
    conn: &Connection,
    tenant_id: TenantId,
    server_id: ServerId,
    account_id: AccountId,
) -> Result<SmtpAccount> {
    conn
        .query_row(
            &format!("SELECT {ACCOUNT_COLUMNS} FROM smtp_accounts WHERE id = ?1 AND server_id = ?2 AND tenant_id = ?3"),
            [account_id.to_string(), server_id.to_string(), tenant_id.to_string()],
            account_row,
        )
        .optional()
        .map_err(sql)?
        .ok_or(StoreError::NotFound)?
}

const PROVIDER_COLUMNS: &str = "id, tenant_id, name, smtp_server_id, account_id, from_address, from_name, \
     reply_to, fallback_recipient, sender_policy, created_at, updated_at";

type ProviderRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    i64,
    i64,
);

fn provider_row(r: &Row) -> rusqlite::Result<ProviderRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
    ))
}

fn provider(raw: ProviderRow) -> Result<Provider> {
    let (pid, tid, name, sid, aid, from, from_name, reply_to, fallback, policy, created, updated) =
        raw;
    Ok(Provider {
        id: id(pid)?,
        tenant_id: id(tid)?,
        settings: ProviderSettings {
            name,
            smtp_server_id: id(sid)?,
            account_id: opt_id(aid)?,
            from_address: address(from)?,
            from_name: from_name
                .map(|n| stored("from_name", DisplayName::from_stored(&n)))
                .transpose()?,
            reply_to: reply_to.map(reply_to_mailbox).transpose()?,
            fallback_recipient: fallback.map(address).transpose()?,
            sender_policy: stored("sender_policy", SenderPolicy::parse(&policy))?,
        },
        created_at: created,
        updated_at: updated,
    })
}

fn load_provider(
    conn: &Connection,
    tenant_id: TenantId,
    provider_id: ProviderId,
) -> Result<Provider> {
    let raw = conn
        .query_row(
            &format!("SELECT {PROVIDER_COLUMNS} FROM providers WHERE id = ?1 AND tenant_id = ?2"),
            [provider_id.to_string(), tenant_id.to_string()],
            provider_row,
        )
        .optional()
        .map_err(sql)?
        .ok_or(StoreError::NotFound)?;
    provider(raw)
}

/// Checks that a provider's server and account exist for the tenant and fit together.
fn check_provider_references(
    conn: &Connection,
    tenant_id: TenantId,
    settings: &ProviderSettings,
) -> Result<()> {
    let server = match load_server(conn, tenant_id, settings.smtp_server_id) {
        Err(StoreError::NotFound) => {
            return Err(StoreError::Invalid(
                Invalid::new("must name an SMTP server of this tenant").at("smtp_server_id"),
            ));
        }
        other => other?,
    };
    match settings.account_id {
        Some(account_id) => match load_account(conn, tenant_id, server.id, account_id) {
            Err(StoreError::NotFound) => Err(StoreError::Invalid(
                Invalid::new("must name an account of the provider's SMTP server").at("account_id"),
            )),
            other => other.map(drop),
        },
        None if server.settings.requires_auth => Err(StoreError::Invalid(
            Invalid::new("is required because the SMTP server requires authentication")
                .at("account_id"),
        )),
        None => Ok(()),
    }
}

fn list<T>(
    conn: &Connection,
    query: &str,
    args: impl rusqlite::Params,
    map: impl Fn(&Row) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(query).map_err(sql)?;
    let rows = stmt.query_map(args, map).map_err(sql)?;
    rows.collect::<rusqlite::Result<Vec<T>>>().map_err(sql)
}

fn headers_from_json(json: &str) -> Result<Vec<(HeaderName, HeaderValue)>> {
    let pairs: Vec<(String, String)> = stored("headers", serde_json::from_str(json))?;
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

fn on_behalf_of(stored_pair: (Option<String>, Option<String>)) -> Result<Option<OnBehalf>> {
    match stored_pair {
        (Some(name), Some(email)) => Ok(Some(OnBehalf {
            name,
            email: address(email)?,
        })),
        _ => Ok(None),
    }
}

/// Stores a message and its recipients, or answers with the message stored
/// earlier under the same idempotency key.
fn insert_message(c: &Connection, m: &NewMessage) -> Result<Submitted> {
    let headers: Vec<(&str, &str)> = m
        .headers
        .iter()
        .map(|(n, v)| (n.as_ref(), v.as_ref()))
        .collect();
    let inserted = c
        .prepare_cached(
            "INSERT INTO messages (id, tenant_id, idempotency_key, subject, text_body, html_body, reply_to, \
             headers, header_to, header_cc, used_fallback, created_at, on_behalf_name, on_behalf_email, \
             test_provider_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
             ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
        )
        .map_err(sql)?
        .execute(params![
                m.id.to_string(), m.tenant_id.to_string(), m.idempotency_key, m.subject.as_ref(),
                m.text, m.html, m.reply_to.as_ref().map(ToString::to_string),
                serde_json::to_string(&headers).expect("header pairs serialise"),
                mailboxes_json(&m.to), mailboxes_json(&m.cc), m.used_fallback, m.created_at,
                m.on_behalf_of.as_ref().map(|p| p.name.as_str()),
                m.on_behalf_of.as_ref().map(|p| p.email.as_ref()),
                m.test_provider.map(|p| p.to_string())
            ])
        .map_err(sql)?;
    if inserted == 0 {
        let earlier: String = c
            .query_row(
                "SELECT id FROM messages WHERE tenant_id = ?1 AND idempotency_key = ?2",
                params![m.tenant_id.to_string(), m.idempotency_key],
                |r| r.get(0),
            )
            .map_err(sql)?;
        let statuses = list(
            c,
            "SELECT status FROM recipients WHERE message_id = ?1 AND tenant_id = ?2",
            [&earlier, &m.tenant_id.to_string()],
            |r| r.get::<_, String>(0),
        )?;
        let statuses = statuses
            .iter()
            .map(|s| status(s))
            .collect::<Result<Vec<_>>>()?;
        return Ok(Submitted {
            id: id(earlier)?,
            status: message_status(statuses),
            duplicate: true,
        });
    }
    let mut insert = c
        .prepare_cached(
            "INSERT INTO recipients (id, message_id, tenant_id, address, kind, position, status, due_at, priority) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?8)",
        )
        .map_err(sql)?;
    for (position, (addr, kind)) in m.recipients().enumerate() {
        insert
            .execute(params![
                RecipientId::new().to_string(),
                m.id.to_string(),
                m.tenant_id.to_string(),
                addr.as_ref(),
                kind.as_str(),
                position as i64,
                m.created_at,
                m.priority
            ])
            .map_err(sql)?;
    }
    count_queued(c, m)?;
    count_tests(c, m)?;
    Ok(Submitted {
        id: m.id,
        status: RecipientStatus::Queued,
        duplicate: false,
    })
}

/// Adds a new message's recipients to its tenant's count of queued ones, and
/// refuses the message (its job's savepoint is rolled back) when that takes
/// the count past the message's limit. The writer runs one job at a time, so
/// jobs of one transaction see each other's counts.
fn count_queued(c: &Connection, m: &NewMessage) -> Result<()> {
    let queued: Option<i64> = c
        .prepare_cached(
            "UPDATE tenants SET queued_recipients = queued_recipients + ?1 WHERE id = ?2 \
             RETURNING queued_recipients",
        )
        .map_err(sql)?
        .query_row(
            params![m.recipients().count() as i64, m.tenant_id.to_string()],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql)?;
    match (queued, m.max_queued) {
        (Some(queued), Some(limit)) if queued.max(0) as u64 > limit => {
            Err(StoreError::QueueFull { limit })
        }
        _ => Ok(()),
    }
}

/// Refuses a test message (its job's savepoint is rolled back) that takes
/// its tenant's test recipients queued or in flight past the message's limit.
fn count_tests(c: &Connection, m: &NewMessage) -> Result<()> {
    let (Some(limit), Some(_)) = (m.max_pending_tests, m.test_provider) else {
        return Ok(());
    };
    let pending: i64 = c
        .prepare_cached(&format!(
            "SELECT count(*) FROM recipients INDEXED BY recipients_tenant_due \
             WHERE tenant_id = ?1 AND {UNFINISHED} AND priority > 0"
        ))
        .map_err(sql)?
        .query_row([m.tenant_id.to_string()], |r| r.get(0))
        .map_err(sql)?;
    if pending.max(0) as u64 > u64::from(limit) {
        return Err(StoreError::TooManyTests { limit });
    }
    Ok(())
}

fn status(s: &str) -> Result<RecipientStatus> {
    RecipientStatus::from_stored(s).ok_or_else(|| StoreError::Corrupt(format!("status {s:?}")))
}

fn attempts_of(conn: &Connection, recipient: &str) -> Result<Vec<AttemptRecord>> {
    let rows = list(
        conn,
        "SELECT at, node, server, outcome, step, code, enhanced_code, response, duration_ms, \
         remote_addr, tls_version, tls_cipher, provider_id, config_version, sender_policy, diagnosis \
         FROM attempts WHERE recipient_id = ?1 ORDER BY id",
        [recipient],
        |r| {
            let outcome: String = r.get("outcome")?;
            let provider: Option<String> = r.get("provider_id")?;
            let diagnosis: Option<String> = r.get("diagnosis")?;
            let record = AttemptRecord {
                at: r.get("at")?,
                node: r.get("node")?,
                server: r.get("server")?,
                outcome: RecipientStatus::Queued,
                step: r.get("step")?,
                code: r.get("code")?,
                enhanced_code: r.get("enhanced_code")?,
                response: r.get("response")?,
                duration_ms: r.get("duration_ms")?,
                remote_addr: r.get("remote_addr")?,
                tls_version: r.get("tls_version")?,
                tls_cipher: r.get("tls_cipher")?,
                provider_id: None,
                config_version: r.get("config_version")?,
                sender_policy: r.get("sender_policy")?,
                diagnosis: None,
            };
            Ok((record, outcome, provider, diagnosis))
        },
    )?;
    rows.into_iter()
        .map(|(mut record, outcome, provider, diagnosis)| {
            record.outcome = status(&outcome)?;
            record.provider_id = opt_id(provider)?;
            record.diagnosis = diagnosis
                .map(|d| stored("diagnosis", serde_json::from_str(&d)))
                .transpose()?;
            Ok(record)
        })
        .collect()
}

/// Gives back a lease whose process is gone (`?1` is now): unlike
/// [`Store::release`], the attempt the process had begun keeps counting, since
/// it may have reached the server; the recipient is due at once.
const RELEASE_CRASHED: &str = "UPDATE recipients SET \
     status = CASE WHEN attempts > 1 THEN 'deferred' ELSE 'queued' END, \
     due_at = ?1, lease_owner = NULL, lease_incarnation = NULL";

#[async_trait]
impl Store for SqliteStore {
    fn refusing_writes(&self) -> bool {
        self.db.writes.refusing()
    }

    async fn ping(&self) -> Result<()> {
        self.db
            .read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(sql))
            .await
    }

    async fn create_tenant(&self, slug: TenantSlug, name: String) -> Result<Tenant> {
        self.db
            .write(move |c| {
                let tenant_id = TenantId::new();
                c.execute(
                    "INSERT INTO tenants (id, slug, name, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![tenant_id.to_string(), slug.as_ref(), name, now_ms()],
                )
                .map_err(unique("a tenant with this slug exists"))?;
                load_tenant(c, tenant_id)
            })
            .await
    }

    async fn tenant_by_slug(&self, slug: &str) -> Result<Tenant> {
        let slug = slug.to_owned();
        self.db
            .read(move |c| {
                c.query_row(
                    &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE slug = ?1"),
                    [slug],
                    tenant_row,
                )
                .optional()
                .map_err(sql)?
                .ok_or(StoreError::NotFound)?
            })
            .await
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.db
            .read(|c| {
                list(
                    c,
                    &format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY created_at"),
                    [],
                    tenant_row,
                )?
                .into_iter()
                .collect()
            })
            .await
    }

    async fn set_entitlements(
        &self,
        tenant_id: TenantId,
        credential_storage: bool,
    ) -> Result<Tenant> {
        self.db
            .write(move |c| {
                c.execute(
                    "UPDATE tenants SET credential_storage = ?1 WHERE id = ?2",
                    params![credential_storage, tenant_id.to_string()],
                )
                .map_err(sql)?;
                load_tenant(c, tenant_id)
            })
            .await
    }

    async fn set_active_provider(
        &self,
        tenant_id: TenantId,
        provider_id: Option<ProviderId>,
        effective_from: i64,
    ) -> Result<Tenant> {
        self.db
            .write(move |c| {
                if let Some(pid) = provider_id {
                    match load_provider(c, tenant_id, pid) {
                        Err(StoreError::NotFound) => {
                            return Err(StoreError::Invalid(
                                Invalid::new(
                                    "must name a notification provider of this tenant, or be null",
                                )
                                .at("notification_provider_id"),
                            ));
                        }
                        other => other?,
                    };
                }
                // What applies until this change is in effect: the provider in
                // effect now, which is the previous one while a change is pending.
                c.execute(
                    "UPDATE tenants SET \
                     previous_provider_id = CASE WHEN properties_effective_from <= ?3 \
                         THEN notification_provider_id ELSE previous_provider_id END, \
                     notification_provider_id = ?1, properties_effective_from = ?4 WHERE id = ?2",
                    params![
                        provider_id.map(|p| p.to_string()),
                        tenant_id.to_string(),
                        now_ms(),
                        effective_from
                    ],
                )
                .map_err(sql)?;
                load_tenant(c, tenant_id)
            })
            .await
    }

    async fn refresh_properties(&self, tenant_id: TenantId, now: i64) -> Result<Tenant> {
        self.db
            .write(move |c| {
                c.execute(
                    "UPDATE tenants SET properties_effective_from = MIN(properties_effective_from, ?1) WHERE id = ?2",
                    params![now, tenant_id.to_string()],
                )
                .map_err(sql)?;
                load_tenant(c, tenant_id)
            })
            .await
    }

    async fn heartbeat(&self, node: NodeRecord) -> Result<()> {
        self.db
            .write(move |c| {
                c.execute(
                    "INSERT INTO nodes (name, roles, version, started_at, heartbeat_at, incarnation) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (name) DO UPDATE SET roles = excluded.roles, version = excluded.version, \
                     started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, \
                     incarnation = excluded.incarnation",
                    params![
                        node.name, node.roles.join(","), node.version, node.started_at,
                        node.heartbeat_at, node.incarnation
                    ],
                )
                .map_err(sql)
                .map(drop)
            })
            .await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        self.db
            .read(|c| {
                list(
                    c,
                    "SELECT name, roles, version, started_at, heartbeat_at, incarnation FROM nodes \
                     ORDER BY heartbeat_at DESC",
                    [],
                    |r| {
                        Ok(NodeRecord {
                            name: r.get(0)?,
                            roles: r
                                .get::<_, String>(1)?
                                .split(',')
                                .filter(|s| !s.is_empty())
                                .map(str::to_owned)
                                .collect(),
                            version: r.get(2)?,
                            started_at: r.get(3)?,
                            heartbeat_at: r.get(4)?,
                            incarnation: r.get(5)?,
                        })
                    },
                )
            })
            .await
    }

    async fn create_token(&self, token: NewToken) -> Result<TokenRecord> {
        self.db
            .write(move |c| {
                if let (Some(tenant_id), Some(person_id)) = (token.tenant_id, token.person_id) {
                    load_person(c, tenant_id, person_id)?;
                }
                c.execute(
                    "INSERT INTO tokens (id, tenant_id, name, role, person_id, hash, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        token.id.to_string(),
                        token.tenant_id.map(|t| t.to_string()),
                        token.name,
                        token.role.as_str(),
                        token.person_id.map(|p| p.to_string()),
                        token.hash,
                        now_ms()
                    ],
                )
                .map_err(unique("this token exists already"))?;
                c.query_row(
                    &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"),
                    [token.id.to_string()],
                    token_row,
                )
                .map_err(sql)?
            })
            .await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let hash = hash.to_owned();
        let found = self
            .db
            .read(move |c| {
                c.query_row(
                    &format!(
                        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1 AND revoked_at IS NULL"
                    ),
                    [hash],
                    token_row,
                )
                .optional()
                .map_err(sql)
            })
            .await?;
        let Some(record) = found.transpose()? else {
            return Ok(None);
        };
        // Recording every use would put a write on every request; a minute's precision is enough.
        let now = now_ms();
        if record.last_used_at.is_none_or(|t| now - t > 60_000) {
            let token_id = record.id.to_string();
            self.db
                .write(move |c| {
                    c.execute(
                        "UPDATE tokens SET last_used_at = ?1 WHERE id = ?2",
                        params![now, token_id],
                    )
                    .map_err(sql)
                    .map(drop)
                })
                .await?;
        }
        Ok(Some(record))
    }

    async fn list_tokens(&self, tenant_id: TenantId) -> Result<Vec<TokenRecord>> {
        self.db
            .read(move |c| {
                list(
                    c,
                    &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE tenant_id = ?1 ORDER BY created_at"),
                    [tenant_id.to_string()],
                    token_row,
                )?
                .into_iter()
                .collect()
            })
            .await
    }

    async fn revoke_token(&self, tenant_id: TenantId, token_id: TokenId) -> Result<()> {
        self.db
            .write(move |c| {
                let deleted = c
                    .execute(
                        "DELETE FROM tokens WHERE id = ?1 AND tenant_id = ?2",
                        [token_id.to_string(), tenant_id.to_string()],
                    )
                    .map_err(sql)?;
                if deleted == 0 {
                    Err(StoreError::NotFound)
                } else {
                    Ok(())
                }
            })
            .await
    }

    async fn create_person(&self, tenant_id: TenantId, person: Person) -> Result<Person> {
        self.db
            .write(move |c| {
                c.execute(
                    "INSERT INTO persons (id, tenant_id, name, email, role, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        person.id.to_string(),
                        tenant_id.to_string(),
                        person.name,
                        person.email.as_ref(),
                        person.role.as_str(),
                        person.created_at
                    ],
                )
                .map_err(unique("a person with this e-mail address exists"))?;
                load_person(c, tenant_id, person.id)
            })
            .await
    }

    async fn person(&self, tenant_id: TenantId, person_id: PersonId) -> Result<Person> {
        self.db
            .read(move |c| load_person(c, tenant_id, person_id))
            .await
    }

    async fn list_persons(&self, tenant_id: TenantId) -> Result<Vec<Person>> {
        self.db
            .read(move |c| {
                list(
                    c,
                    &format!("SELECT {PERSON_COLUMNS} FROM persons WHERE tenant_id = ?1 ORDER BY created_at"),
                    [tenant_id.to_string()],
                    person_row,
                )?
                .into_iter()
                .collect()
            })
            .await
    }

    async fn delete_person(&self, tenant_id: TenantId, person_id: PersonId) -> Result<()> {
        self.db
            .write(move |c| {
                load_person(c, tenant_id, person_id)?;
                let bound: Option<String> = c
                    .query_row(
                        "SELECT username FROM smtp_accounts WHERE person_id = ?1 AND tenant_id = ?2 LIMIT 1",
                        [person_id.to_string(), tenant_id.to_string()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                if let Some(username) = bound {
                    return Err(StoreError::Conflict(format!(
                        "the SMTP account {username:?} is bound to this person; delete it or bind it to another person first"
                    )));
                }
                c.execute(
                    "DELETE FROM persons WHERE id = ?1 AND tenant_id = ?2",
                    [person_id.to_string(), tenant_id.to_string()],
                )
                .map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn set_operator_password(
        &self,
        email: EmailAddress,
        password_hash: String,
    ) -> Result<()> {
        self.db
            .write(move |c| {
                let email = email.as_ref().to_lowercase();
                c.execute(
                    "INSERT INTO operators (id, email, password_hash, updated_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (email) DO UPDATE SET password_hash = excluded.password_hash, \
                     updated_at = excluded.updated_at",
                    params![uuid::Uuid::now_v7().to_string(), email, password_hash, now_ms()],
                )
                .map_err(sql)?;
                c.execute("DELETE FROM sessions WHERE operator_email = ?1", [email])
                    .map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn set_person_password(
        &self,
        tenant_id: TenantId,
        person_id: PersonId,
        password_hash: String,
    ) -> Result<()> {
        self.db
            .write(move |c| {
                load_person(c, tenant_id, person_id)?;
                let person = person_id.to_string();
                c.execute(
                    "UPDATE persons SET password_hash = ?1 WHERE id = ?2 AND tenant_id = ?3",
                    params![password_hash, person, tenant_id.to_string()],
                )
                .map_err(sql)?;
                c.execute("DELETE FROM sessions WHERE person_id = ?1", [person])
                    .map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn credentials(&self, email: &str) -> Result<Vec<Credential>> {
        let email = email.trim().to_lowercase();
        self.db
            .read(move |c| {
                let mut found: Vec<Credential> = list(
                    c,
                    "SELECT email, password_hash FROM operators WHERE email = ?1",
                    [&email],
                    |r| {
                        Ok(Credential {
                            operator_email: Some(r.get(0)?),
                            person: None,
                            password_hash: r.get(1)?,
                        })
                    },
                )?;
                let persons = list(
                    c,
                    "SELECT p.id, p.tenant_id, p.name, p.email, p.role, p.created_at, p.password_hash \
                     FROM persons p JOIN tenants t ON t.id = p.tenant_id \
                     WHERE lower(p.email) = ?1 AND p.password_hash IS NOT NULL \
                     ORDER BY t.created_at, t.id",
                    [&email],
                    |r| Ok((person_row(r)?, r.get::<_, String>(6)?)),
                )?;
                for (person, password_hash) in persons {
                    found.push(Credential {
                        operator_email: None,
                        person: Some(person?),
                        password_hash,
                    });
                }
                Ok(found)
            })
            .await
    }

    async fn create_session(&self, session: NewSession) -> Result<()> {
        self.db
            .write(move |c| {
                c.execute(
                    "DELETE FROM sessions WHERE expires_at < ?1",
                    [session.created_at],
                )
                .map_err(sql)?;
                let (operator, person) = match &session.subject {
                    SessionSubject::Operator(email) => (Some(email.to_lowercase()), None),
                    SessionSubject::Person(id) => (None, Some(id.to_string())),
                };
                c.execute(
                    "INSERT INTO sessions (hash, id, operator_email, person_id, created_at, expires_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        session.hash,
                        session.id.to_string(),
                        operator,
                        person,
                        session.created_at,
                        session.expires_at
                    ],
                )
                .map_err(sql)
                .map(drop)
            })
            .await
    }

    async fn session_by_hash(&self, hash: &str, now: i64) -> Result<Option<Session>> {
        let hash = hash.to_owned();
        self.db
            .read(move |c| {
                let found = c
                    .query_row(
                        "SELECT id, operator_email, person_id, created_at, expires_at \
                         FROM sessions WHERE hash = ?1 AND expires_at >= ?2",
                        params![hash, now],
                        |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, Option<String>>(1)?,
                                r.get::<_, Option<String>>(2)?,
                                r.get::<_, i64>(3)?,
                                r.get::<_, i64>(4)?,
                            ))
                        },
                    )
                    .optional()
                    .map_err(sql)?;
                let Some((sid, operator_email, person_id, created_at, expires_at)) = found else {
                    return Ok(None);
                };
                let person = match person_id {
                    Some(pid) => Some(
                        c.query_row(
                            &format!("SELECT {PERSON_COLUMNS} FROM persons WHERE id = ?1"),
                            [pid],
                            person_row,
                        )
                        .map_err(sql)??,
                    ),
                    None => None,
                };
                Ok(Some(Session {
                    id: id(sid)?,
                    operator_email,
                    person,
                    created_at,
                    expires_at,
                }))
            })
            .await
    }

    async fn delete_session(&self, hash: &str) -> Result<()> {
        let hash = hash.to_owned();
        self.db
            .write(move |c| {
                c.execute("DELETE FROM sessions WHERE hash = ?1", [hash])
                    .map_err(sql)
                    .map(drop)
            })
            .await
    }

    async fn audit(&self, entry: AuditEntry) -> Result<()> {
        self.db
            .write(move |c| {
                c.execute(
                    "INSERT INTO audit (tenant_id, at, actor, token_id, remote_addr, action, object_id, details) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        entry.tenant_id.map(|t| t.to_string()),
                        entry.at,
                        entry.actor,
                        entry.token_id.map(|t| t.to_string()),
                        entry.remote_addr,
                        entry.action,
                        entry.object_id,
                        entry.details.to_string()
                    ],
                )
                .map_err(sql)
                .map(drop)
            })
            .await
    }

    async fn list_audit(&self, tenant_id: TenantId, limit: u32) -> Result<Vec<AuditEntry>> {
        self.db
            .read(move |c| {
                let rows = list(
                    c,
                    "SELECT tenant_id, at, actor, token_id, remote_addr, action, object_id, details FROM audit \
                     WHERE tenant_id = ?1 ORDER BY id DESC LIMIT ?2",
                    params![tenant_id.to_string(), limit],
                    |r| {
                        Ok((
                            r.get::<_, Option<String>>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, Option<String>>(4)?,
                            r.get::<_, String>(5)?,
                            r.get::<_, Option<String>>(6)?,
                            r.get::<_, String>(7)?,
                        ))
                    },
                )?;
                rows.into_iter()
                    .map(|(tid, at, actor, token_id, remote_addr, action, object_id, details)| {
                        Ok(AuditEntry {
                            tenant_id: opt_id(tid)?,
                            at,
                            actor,
                            token_id: opt_id(token_id)?,
                            remote_addr,
                            action,
                            object_id,
                            details: stored("audit details", serde_json::from_str(&details))?,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn reseal_secrets(&self, reseal: crate::Resealer) -> Result<usize> {
        let count = self
            .db
            .write(move |c| {
                let sealed = list(
                    c,
                    "SELECT id, sealed_secret FROM smtp_accounts WHERE sealed_secret IS NOT NULL",
                    [],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                )?;
                for (account_id, value) in &sealed {
                    let resealed = reseal(value, account_id).map_err(|e| {
                        StoreError::Corrupt(format!("the secret of account {account_id}: {e}"))
                    })?;
                    c.execute(
                        "UPDATE smtp_accounts SET sealed_secret = ?1 WHERE id = ?2",
                        [resealed, account_id.clone()],
                    )
                    .map_err(sql)?;
                }
                Ok(sealed.len())
            })
            .await?;
        // The old ciphertexts must not stay behind in the log.
        self.db.checkpoint().await?;
        Ok(count)
    }

    async fn operator_token_exists(&self) -> Result<bool> {
        self.db
            .read(|c| {
                c.query_row(
                    "SELECT EXISTS (SELECT 1 FROM tokens WHERE role = 'operator' AND revoked_at IS NULL)",
                    [],
                    |r| r.get(0),
                )
                .map_err(sql)
            })
            .await
    }

    async fn list_operator_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.db
            .read(move |c| {
                list(
                    c,
                    &format!(
                        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE tenant_id IS NULL \
                         AND role = 'operator' AND revoked_at IS NULL ORDER BY created_at, id"
                    ),
                    [],
                    token_row,
                )?
                .into_iter()
                .collect()
            })
            .await
    }

    async fn revoke_operator_token(&self, token_id: TokenId) -> Result<()> {
        self.db
            .write(move |c| {
                let id = token_id.to_string();
                let revoked = c
                    .execute(
                        "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND tenant_id IS NULL \
                         AND role = 'operator' AND bootstrap = 1 AND revoked_at IS NULL",
                        params![id, now_ms()],
                    )
                    .map_err(sql)?;
                let deleted = c
                    .execute(
                        "DELETE FROM tokens WHERE id = ?1 AND tenant_id IS NULL \
                         AND role = 'operator' AND bootstrap = 0",
                        [&id],
                    )
                    .map_err(sql)?;
                if revoked + deleted == 0 {
                    Err(StoreError::NotFound)
                } else {
                    Ok(())
                }
            })
            .await
    }

    async fn set_bootstrap_token(&self, token: NewToken) -> Result<BootstrapOutcome> {
        self.db
            .write(move |c| {
                let now = now_ms();
                let stored: Option<Option<i64>> = c
                    .query_row(
                        "SELECT revoked_at FROM tokens WHERE hash = ?1",
                        [&token.hash],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                // `None` when the value was revoked before: it stays revoked.
                let created = match stored {
                    Some(Some(_)) => None,
                    Some(None) => {
                        c.execute(
                            "UPDATE tokens SET bootstrap = 1 WHERE hash = ?1 \
                             AND tenant_id IS NULL AND role = 'operator'",
                            [&token.hash],
                        )
                        .map_err(sql)?;
                        Some(false)
                    }
                    None => {
                        c.execute(
                            "INSERT INTO tokens (id, tenant_id, name, role, person_id, hash, created_at, bootstrap) \
                             VALUES (?1, NULL, ?2, 'operator', NULL, ?3, ?4, 1)",
                            params![token.id.to_string(), token.name, token.hash, now],
                        )
                        .map_err(sql)?;
                        Some(true)
                    }
                };
                // Any other bootstrap token is no longer the configured one,
                // even when the configured value is itself revoked.
                let replaced = c
                    .execute(
                        "UPDATE tokens SET revoked_at = ?2 WHERE bootstrap = 1 \
                         AND revoked_at IS NULL AND hash <> ?1",
                        params![token.hash, now],
                    )
                    .map_err(sql)? as u64;
                Ok(match created {
                    Some(created) => BootstrapOutcome::Installed { created, replaced },
                    None => BootstrapOutcome::Revoked { replaced },
                })
            })
            .await
    }

    async fn create_server(&self, tenant_id: TenantId, s: ServerSettings) -> Result<SmtpServer> {
        self.db
            .write(move |c| {
                let server_id = ServerId::new();
                let now = now_ms();
                c.execute(
                    "INSERT INTO smtp_servers (id, tenant_id, name, host, port, security, requires_auth, \
                     tls_verify, tls_ca_pem, tls_server_name, helo_name, max_connections, \
                     max_messages_per_connection, idle_timeout_secs, rate_limit_per_minute, \
                     command_timeout_secs, allow_plaintext_auth, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?18)",
                    params![
                        server_id.to_string(), tenant_id.to_string(), s.name, s.host.as_ref(),
                        s.port.get(), s.security.as_str(), s.requires_auth, s.tls_verify,
                        s.tls_ca_pem, s.tls_server_name, s.helo_name, s.max_connections,
                        s.max_messages_per_connection, s.idle_timeout_secs, s.rate_limit_per_minute,
                        s.command_timeout_secs, s.allow_plaintext_auth, now
                    ],
                )
                .map_err(unique("an SMTP server with this name exists"))?;
                load_server(c, tenant_id, server_id)
            })
            .await
    }

    async fn server(&self, tenant_id: TenantId, server_id: ServerId) -> Result<SmtpServer> {
        self.db
            .read(move |c| load_server(c, tenant_id, server_id))
            .await
    }

    async fn list_servers(&self, tenant_id: TenantId) -> Result<Vec<SmtpServer>> {
        self.db
            .read(move |c| {
                list(
                    c,
                    &format!("SELECT {SERVER_COLUMNS} FROM smtp_servers WHERE tenant_id = ?1 ORDER BY created_at"),
                    [tenant_id.to_string()],
                    server_row,
                )?
                .into_iter()
                .collect()
            })
            .await
    }

    async fn update_server(
        &self,
        tenant_id: TenantId,
        server_id: ServerId,
        s: ServerSettings,
    ) -> Result<SmtpServer> {
        self.db
            .write(move |c| {
                let old = load_server(c, tenant_id, server_id)?.settings;
                c.execute(
                    "UPDATE smtp_servers SET name = ?1, host = ?2, port = ?3, security = ?4, requires_auth = ?5, \
                     tls_verify = ?6, tls_ca_pem = ?7, tls_server_name = ?8, helo_name = ?9, \
                     max_connections = ?10, max_messages_per_connection = ?11, idle_timeout_secs = ?12, \
                     rate_limit_per_minute = ?13, command_timeout_secs = ?14, updated_at = ?15, \
                     allow_plaintext_auth = ?18 \
                     WHERE id = ?16 AND tenant_id = ?17",
                    params![
                        s.name, s.host.as_ref(), s.port.get(), s.security.as_str(), s.requires_auth,
                        s.tls_verify, s.tls_ca_pem, s.tls_server_name, s.helo_name, s.max_connections,
                        s.max_messages_per_connection, s.idle_timeout_secs, s.rate_limit_per_minute,
                        s.command_timeout_secs, now_ms(), server_id.to_string(), tenant_id.to_string(),
                        s.allow_plaintext_auth
                    ],
                )
                .map_err(unique("an SMTP server with this name exists"))?;
                // A stored password must never follow the server entry to a new
                // destination or to weaker trust (the rule is `change_clears_secrets`).
                if old.change_clears_secrets(&s) {
                    c.execute(
                        "UPDATE smtp_accounts SET sealed_secret = NULL WHERE server_id = ?1 AND tenant_id = ?2",
                        [server_id.to_string(), tenant_id.to_string()],
                    )
                    .map_err(sql)?;
                }
                load_server(c, tenant_id, server_id)
            })
            .await
    }

    async fn delete_server(&self, tenant_id: TenantId, server_id: ServerId) -> Result<()> {
        self.db
            .write(move |c| {
                load_server(c, tenant_id, server_id)?;
                let user: Option<String> = c
                    .query_row(
                        "SELECT name FROM providers WHERE smtp_server_id = ?1 AND tenant_id = ?2 LIMIT 1",
                        [server_id.to_string(), tenant_id.to_string()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                if let Some(name) = user {
                    return Err(StoreError::Conflict(format!(
                        "the SMTP server is used by the provider {name:?}"
                    )));
                }
                c.execute(
                    "DELETE FROM smtp_servers WHERE id = ?1 AND tenant_id = ?2",
                    [server_id.to_string(), tenant_id.to_string()],
                )
                .map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn create_account(&self, tenant_id: TenantId, a: NewAccount) -> Result<SmtpAccount> {
        self.db
            .write(move |c| {
                load_server(c, tenant_id, a.server_id)?;
                if let Some(person_id) = a.person_id {
                    if matches!(load_person(c, tenant_id, person_id), Err(StoreError::NotFound)) {
                        return Err(StoreError::Invalid(
                            Invalid::new("must name a person of this tenant").at("person_id"),
                        ));
                    }
                }
                c.execute(
                    "INSERT INTO smtp_accounts (id, tenant_id, server_id, username, mechanism, sealed_secret, \
                     oauth2_token_url, oauth2_client_id, oauth2_scope, person_id, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    params![
                        a.id.to_string(), tenant_id.to_string(), a.server_id.to_string(), a.username,
                        a.mechanism.as_str(), a.sealed_secret,
                        a.oauth2.as_ref().map(|o| o.token_url.as_str()),
                        a.oauth2.as_ref().map(|o| o.client_id.as_str()),
                        a.oauth2.as_ref().and_then(|o| o.scope.as_deref()),
                        a.person_id.map(|p| p.to_string()), now_ms()
                    ],
                )
                .map_err(unique("an account with this username exists on the server"))?;
                load_account(c, tenant_id, a.server_id, a.id)
            })
            .await
    }

    async fn account(
        &self,
        tenant_id: TenantId,
        server_id: ServerId,
        account_id: AccountId,
    ) -> Result<SmtpAccount> {
        self.db
            .read(move |c| load_account(c, tenant_id, server_id, account_id))
            .await
    }

    async fn list_accounts(
        &self,
        tenant_id: TenantId,
        server_id: ServerId,
    ) -> Result<Vec<SmtpAccount>> {
        self.db
            .read(move |c| {
                load_server(c, tenant_id, server_id)?;
                list(
                    c,
                    &format!("SELECT {ACCOUNT_COLUMNS} FROM smtp_accounts WHERE server_id = ?1 AND tenant_id = ?2 ORDER BY created_at"),
                    [server_id.to_string(), tenant_id.to_string()],
                    account_row,
                )?
                .into_iter()
                .collect()
            })
            .await
    }

    async fn delete_account(
        &self,
        tenant_id: TenantId,
        server_id: ServerId,
        account_id: AccountId,
    ) -> Result<()> {
        self.db
            .write(move |c| {
                load_account(c, tenant_id, server_id, account_id)?;
                let user: Option<String> = c
                    .query_row(
                        "SELECT name FROM providers WHERE account_id = ?1 AND tenant_id = ?2 LIMIT 1",
                        [account_id.to_string(), tenant_id.to_string()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                if let Some(name) = user {
                    return Err(StoreError::Conflict(format!(
                        "the account is used by the provider {name:?}"
                    )));
                }
                c.execute(
                    "DELETE FROM smtp_accounts WHERE id = ?1 AND tenant_id = ?2",
                    [account_id.to_string(), tenant_id.to_string()],
                )
                .map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn create_provider(&self, tenant_id: TenantId, s: ProviderSettings) -> Result<Provider> {
        self.db
            .write(move |c| {
                check_provider_references(c, tenant_id, &s)?;
                let provider_id = ProviderId::new();
                c.execute(
                    "INSERT INTO providers (id, tenant_id, name, smtp_server_id, account_id, from_address, from_name, \
                     reply_to, fallback_recipient, sender_policy, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
                    params![
                        provider_id.to_string(), tenant_id.to_string(), s.name, s.smtp_server_id.to_string(),
                        s.account_id.map(|a| a.to_string()), s.from_address.as_ref(),
                        s.from_name.as_ref().map(AsRef::<str>::as_ref), s.reply_to.as_ref().map(ToString::to_string),
                        s.fallback_recipient.as_ref().map(AsRef::<str>::as_ref), s.sender_policy.as_str(), now_ms()
                    ],
                )
                .map_err(unique("a provider with this name exists"))?;
                load_provider(c, tenant_id, provider_id)
            })
            .await
    }

    async fn provider(&self, tenant_id: TenantId, provider_id: ProviderId) -> Result<Provider> {
        self.db
            .read(move |c| load_provider(c, tenant_id, provider_id))
            .await
    }

    async fn list_providers(&self, tenant_id: TenantId) -> Result<Vec<Provider>> {
        self.db
            .read(move |c| {
                list(
                    c,
                    &format!("SELECT {PROVIDER_COLUMNS} FROM providers WHERE tenant_id = ?1 ORDER BY created_at"),
                    [tenant_id.to_string()],
                    provider_row,
                )?
                .into_iter()
                .map(provider)
                .collect()
            })
            .await
    }

    async fn update_provider(
        &self,
        tenant_id: TenantId,
        provider_id: ProviderId,
        s: ProviderSettings,
    ) -> Result<Provider> {
        self.db
            .write(move |c| {
                load_provider(c, tenant_id, provider_id)?;
                check_provider_references(c, tenant_id, &s)?;
                c.execute(
                    "UPDATE providers SET name = ?1, smtp_server_id = ?2, account_id = ?3, from_address = ?4, \
                     from_name = ?5, reply_to = ?6, fallback_recipient = ?7, sender_policy = ?8, updated_at = ?9 \
                     WHERE id = ?10 AND tenant_id = ?11",
                    params![
                        s.name, s.smtp_server_id.to_string(), s.account_id.map(|a| a.to_string()),
                        s.from_address.as_ref(), s.from_name.as_ref().map(AsRef::<str>::as_ref),
                        s.reply_to.as_ref().map(ToString::to_string),
                        s.fallback_recipient.as_ref().map(AsRef::<str>::as_ref), s.sender_policy.as_str(),
                        now_ms(), provider_id.to_string(), tenant_id.to_string()
                    ],
                )
                .map_err(unique("a provider with this name exists"))?;
                load_provider(c, tenant_id, provider_id)
            })
            .await
    }

    async fn delete_provider(&self, tenant_id: TenantId, provider_id: ProviderId) -> Result<()> {
        self.db
            .write(move |c| {
                load_provider(c, tenant_id, provider_id)?;
                if load_tenant(c, tenant_id)?.notification_provider_id == Some(provider_id) {
                    return Err(StoreError::Conflict(
                        "the provider is the tenant's active provider; choose another in the tenant properties first".into(),
                    ));
                }
                c.execute(
                    "DELETE FROM providers WHERE id = ?1 AND tenant_id = ?2",
                    [provider_id.to_string(), tenant_id.to_string()],
                )
                .map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn active_provider(&self, tenant_id: TenantId) -> Result<Option<ProviderConfig>> {
        self.db
            .read(move |c| {
                let Some(provider_id) = load_tenant(c, tenant_id)?.notification_provider_id else {
                    return Ok(None);
                };
                let provider = load_provider(c, tenant_id, provider_id)?;
                let server = load_server(c, tenant_id, provider.settings.smtp_server_id)?;
                let account = provider
                    .settings
                    .account_id
                    .map(|a| load_account(c, tenant_id, server.id, a))
                    .transpose()?;
                Ok(Some(ProviderConfig {
                    provider,
                    server,
                    account,
                }))
            })
            .await
    }

    async fn submit(&self, m: NewMessage) -> Result<Submitted> {
        self.db.write(move |c| insert_message(c, &m)).await
    }

    async fn submit_batch(&self, messages: Vec<NewMessage>) -> Result<Vec<Submitted>> {
        self.db
            .write(move |c| messages.iter().map(|m| insert_message(c, m)).collect())
            .await
    }

    async fn message(&self, tenant_id: TenantId, message_id: MessageId) -> Result<MessageView> {
        self.db
            .read(move |c| {
                let (subject, created_at, idempotency_key, used_fallback, on_behalf, test_provider) = c
                    .query_row(
                        "SELECT subject, created_at, idempotency_key, used_fallback, on_behalf_name, on_behalf_email, \
                         test_provider_id FROM messages WHERE id = ?1 AND tenant_id = ?2",
                        [message_id.to_string(), tenant_id.to_string()],
                        |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, i64>(1)?,
                                r.get::<_, Option<String>>(2)?,
                                r.get::<_, bool>(3)?,
                                (r.get::<_, Option<String>>(4)?, r.get::<_, Option<String>>(5)?),
                                r.get::<_, Option<String>>(6)?,
                            ))
                        },
                    )
                    .optional()
                    .map_err(sql)?
                    .ok_or(StoreError::NotFound)?;
                let rows = list(
                    c,
                    "SELECT id, address, kind, status, due_at FROM recipients \
                     WHERE message_id = ?1 AND tenant_id = ?2 ORDER BY position",
                    [message_id.to_string(), tenant_id.to_string()],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get::<_, Option<i64>>(4)?)),
                )?;
                let mut recipients = Vec::with_capacity(rows.len());
                for (rid, address, kind, st, due_at) in rows {
                    let st = status(&st)?;
                    recipients.push(RecipientView {
                        attempts: attempts_of(c, &rid)?,
                        id: id(rid)?,
                        address,
                        kind: RecipientKind::from_stored(&kind),
                        status: st,
                        next_attempt_at: if st.is_final() { None } else { due_at },
                    });
                }
                Ok(MessageView {
                    id: message_id,
                    status: message_status(recipients.iter().map(|r| r.status)),
                    subject,
                    created_at,
                    idempotency_key,
                    used_fallback,
                    on_behalf_of: on_behalf_of(on_behalf)?,
                    test_provider_id: opt_id(test_provider)?,
                    recipients,
                })
            })
            .await
    }

    async fn count_messages(&self, tenant_id: TenantId, since: i64) -> Result<MessageCounts> {
        self.db
            .read(move |c| {
                let rows = list(
                    c,
                    &format!(
                        "SELECT rank, count(*) FROM (SELECT min({STATUS_RANK}) AS rank FROM messages m \
                         JOIN recipients r ON r.message_id = m.id \
                         WHERE m.tenant_id = ?1 AND m.created_at >= ?2 GROUP BY m.id) GROUP BY rank"
                    ),
                    params![tenant_id.to_string(), since],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )?;
                let mut counts = MessageCounts::default();
                for (rank, count) in rows {
                    counts.add(rank, count as u64);
                }
                Ok(counts)
            })
            .await
    }

    async fn search_messages(
        &self,
        tenant_id: TenantId,
        q: MessageQuery,
    ) -> Result<Vec<MessageSummary>> {
        self.db
            .read(move |c| {
                let rows = list(
                    c,
                    "SELECT m.id, m.subject, m.created_at, group_concat(r.status) FROM messages m \
                     JOIN recipients r ON r.message_id = m.id WHERE m.tenant_id = ?1 \
                     AND (?2 IS NULL OR EXISTS (SELECT 1 FROM recipients x \
                          WHERE x.message_id = m.id AND lower(x.address) = lower(?2))) \
                     AND (?3 IS NULL OR m.created_at >= ?3) AND (?4 IS NULL OR m.created_at < ?4) \
                     GROUP BY m.id ORDER BY m.created_at DESC, m.id DESC LIMIT ?5",
                    params![
                        tenant_id.to_string(),
                        q.recipient.map(|r| r.trim().to_owned()),
                        q.since,
                        q.until,
                        q.limit
                    ],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, String>(3)?,
                        ))
                    },
                )?;
                rows.into_iter()
                    .map(|(mid, subject, created_at, statuses)| {
                        let statuses = statuses
                            .split(',')
                            .map(status)
                            .collect::<Result<Vec<_>>>()?;
                        Ok(MessageSummary {
                            id: id(mid)?,
                            status: message_status(statuses),
                            subject,
                            created_at,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn message_contents(&self, ids: &[MessageId]) -> Result<Vec<MessageContent>> {
        let ids = ids.to_vec();
        self.db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT tenant_id, created_at, subject, text_body, html_body, reply_to, headers, header_to, header_cc, \
                         on_behalf_name, on_behalf_email, test_provider_id FROM messages WHERE id = ?1",
                    )
                    .map_err(sql)?;
                let mut out = Vec::with_capacity(ids.len());
                for message_id in ids {
                    let row = stmt
                        .query_row([message_id.to_string()], |r| {
                            Ok((
                                r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?,
                                r.get::<_, Option<String>>(3)?, r.get::<_, Option<String>>(4)?,
                                r.get::<_, Option<String>>(5)?, r.get::<_, String>(6)?,
                                r.get::<_, String>(7)?, r.get::<_, String>(8)?,
                                (r.get::<_, Option<String>>(9)?, r.get::<_, Option<String>>(10)?),
                                r.get::<_, Option<String>>(11)?,
                            ))
                        })
                        .optional()
                        .map_err(sql)?;
                    let Some((tid, created_at, subject, text, html, reply_to, headers, to, cc, on_behalf, test_provider)) = row else {
                        continue;
                    };
                    out.push(MessageContent {
                        id: message_id,
                        tenant_id: id(tid)?,
                        created_at,
                        subject: stored("subject", Subject::from_stored(&subject))?,
                        text,
                        html,
                        reply_to: reply_to.map(reply_to_mailbox).transpose()?,
                        headers: headers_from_json(&headers)?,
                        to: mailboxes(&to)?,
                        cc: mailboxes(&cc)?,
                        on_behalf_of: on_behalf_of(on_behalf)?,
                        test_provider: opt_id(test_provider)?,
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Claimed>> {
        let lease_until = req.now + req.lease_ms;
        let cursor = self.claim_cursor.clone();
        self.db
            .write(move |c| {
                let tenants = {
                    let mut cursor = cursor.lock().expect("claim cursor lock");
                    tenants_due(c, &req, &mut cursor)?
                };
                let share = crate::claim_share(req.limit, tenants.len());
                // One statement per tenant: its test messages, then the rest
                // by due time, each a range of `recipients_tenant_due`.
                let mut take = c
                    .prepare_cached(&format!(
                        "UPDATE recipients SET status = 'sending', due_at = ?1, lease_owner = ?2, \
                         lease_incarnation = ?3, lease_token = lease_token + 1, attempts = attempts + 1 \
                         WHERE id IN ( \
                             SELECT id FROM (SELECT id FROM recipients INDEXED BY recipients_tenant_due \
                                 WHERE tenant_id = ?4 AND {UNFINISHED} AND priority > 0 AND due_at <= ?5 \
                                 ORDER BY priority DESC, due_at LIMIT ?6) \
                             UNION ALL \
                             SELECT id FROM (SELECT id FROM recipients INDEXED BY recipients_tenant_due \
                                 WHERE tenant_id = ?4 AND {UNFINISHED} AND priority = 0 AND due_at <= ?5 \
                                 ORDER BY due_at LIMIT ?6) \
                             LIMIT ?6) \
                         RETURNING id, message_id, address, lease_token, attempts"
                    ))
                    .map_err(sql)?;
                let mut claimed = Vec::new();
                for (tenant, room) in tenants {
                    let left = req.limit.saturating_sub(claimed.len() as u32);
                    if left == 0 {
                        break;
                    }
                    let tenant_id: TenantId = id(tenant.clone())?;
                    let k = share.min(room).min(left);
                    let rows = take
                        .query_map(
                            params![lease_until, req.node, req.incarnation, tenant, req.now, k],
                            |r| {
                                Ok((
                                    r.get::<_, String>(0)?,
                                    r.get::<_, String>(1)?,
                                    r.get::<_, String>(2)?,
                                    r.get::<_, i64>(3)?,
                                    r.get::<_, u32>(4)?,
                                ))
                            },
                        )
                        .map_err(sql)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                        .map_err(sql)?;
                    for (rid, mid, addr, lease_token, attempt) in rows {
                        claimed.push(Claimed {
                            recipient: id(rid)?,
                            message: id(mid)?,
                            tenant: tenant_id,
                            address: address(addr)?,
                            lease_token,
                            lease_until,
                            attempt,
                        });
                    }
                }
                Ok(claimed)
            })
            .await
    }

    async fn complete(
        &self,
        outcomes: Vec<Outcome>,
        captures: Vec<NewCapture>,
    ) -> Result<Vec<bool>> {
        self.db
            .write(move |c| {
                let mut update = c
                    .prepare_cached(
                        "UPDATE recipients SET status = ?1, due_at = ?2, lease_owner = NULL, \
                         lease_incarnation = NULL WHERE id = ?3 AND lease_token = ?4 AND status = 'sending' \
                         RETURNING message_id, tenant_id",
                    )
                    .map_err(sql)?;
                let mut insert = c
                    .prepare_cached(
                        "INSERT INTO attempts (recipient_id, at, node, server, outcome, step, code, enhanced_code, \
                         response, duration_ms, remote_addr, tls_version, tls_cipher, provider_id, config_version, \
                         sender_policy, diagnosis) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                    )
                    .map_err(sql)?;
                let mut accepted = Vec::with_capacity(outcomes.len());
                let mut recorded_messages = HashSet::new();
                // Recipients that reached a final state leave their tenant's queue.
                let mut finished: HashMap<String, i64> = HashMap::new();
                for o in outcomes {
                    let (st, due_at) = match o.next {
                        NextState::Sent => ("sent", None),
                        NextState::Failed => ("failed", None),
                        NextState::Deferred { until } => ("deferred", Some(until)),
                    };
                    let rid = o.recipient.to_string();
                    // The fencing check: a lease taken over by another claim has a newer token.
                    let row: Option<(String, String)> = update
                        .query_row(params![st, due_at, rid, o.lease_token], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                        .optional()
                        .map_err(sql)?;
                    let current = row.is_some();
                    if let Some((message, tenant)) = row {
                        recorded_messages.insert(message);
                        if due_at.is_none() {
                            *finished.entry(tenant).or_default() += 1;
                        }
                    }
                    if current {
                        let a = &o.attempt;
                        insert
                            .execute(params![
                                rid, a.at, a.node, a.server, a.outcome.as_str(), a.step, a.code,
                                a.enhanced_code, a.response, a.duration_ms, a.remote_addr,
                                a.tls_version, a.tls_cipher, a.provider_id.map(|p| p.to_string()),
                                a.config_version, a.sender_policy, a.diagnosis.as_ref().map(|d| d.to_string())
                            ])
                            .map_err(sql)?;
                    }
                    accepted.push(current);
                }
                for cap in captures {
                    if recorded_messages.contains(&cap.message.to_string()) {
                        c.execute(
                            "INSERT INTO captured (message_id, tenant_id, envelope_from, recipients, content, at) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                            params![
                                cap.message.to_string(), cap.tenant.to_string(), cap.envelope_from,
                                serde_json::to_string(&cap.recipients).expect("strings serialise"),
                                cap.content, cap.at
                            ],
                        )
                        .map_err(sql)?;
                    }
                }
                let mut leave = c
                    .prepare_cached(
                        "UPDATE tenants SET queued_recipients = queued_recipients - ?1 WHERE id = ?2",
                    )
                    .map_err(sql)?;
                for (tenant, count) in finished {
                    leave.execute(params![count, tenant]).map_err(sql)?;
                }
                Ok(accepted)
            })
            .await
    }

    async fn release(&self, leases: Vec<(RecipientId, i64)>) -> Result<()> {
        self.db
            .write(move |c| {
                let now = now_ms();
                for (rid, token) in leases {
                    c.execute(
                        "UPDATE recipients SET status = CASE WHEN attempts > 1 THEN 'deferred' ELSE 'queued' END, \
                         attempts = attempts - 1, due_at = ?1, lease_owner = NULL, lease_incarnation = NULL \
                         WHERE id = ?2 AND lease_token = ?3 AND status = 'sending'",
                        params![now, rid.to_string(), token],
                    )
                    .map_err(sql)?;
                }
                Ok(())
            })
            .await
    }

    async fn release_earlier_incarnations(
        &self,
        node: &str,
        incarnation: &str,
        now: i64,
    ) -> Result<u64> {
        let (node, incarnation) = (node.to_owned(), incarnation.to_owned());
        self.db
            .write(move |c| {
                // A lease from before incarnations were recorded has none: it is earlier too.
                c.execute(
                    &format!(
                        "{RELEASE_CRASHED} WHERE status = 'sending' AND lease_owner = ?2 \
                         AND lease_incarnation IS NOT ?3"
                    ),
                    params![now, node, incarnation],
                )
                .map(|n| n as u64)
                .map_err(sql)
            })
            .await
    }

    async fn release_stale_nodes(&self, stale_before: i64, now: i64) -> Result<Vec<(String, u64)>> {
        self.db
            .write(move |c| {
                let stale = list(
                    c,
                    "SELECT name, incarnation FROM nodes \
                     WHERE heartbeat_at < ?1 AND incarnation IS NOT NULL ORDER BY name",
                    [stale_before],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                )?;
                let mut released = Vec::with_capacity(stale.len());
                for (name, incarnation) in stale {
                    let n = c
                        .execute(
                            &format!(
                                "{RELEASE_CRASHED} WHERE status = 'sending' AND lease_owner = ?2 \
                                 AND lease_incarnation = ?3"
                            ),
                            params![now, name, incarnation],
                        )
                        .map_err(sql)?;
                    // Taken over: the next sweep passes this node by, until it beats again.
                    c.execute(
                        "UPDATE nodes SET incarnation = NULL WHERE name = ?1",
                        [&name],
                    )
                    .map_err(sql)?;
                    released.push((name, n as u64));
                }
                Ok(released)
            })
            .await
    }

    async fn next_due(&self, exclude_tenants: &[TenantId]) -> Result<Option<i64>> {
        let excluded: HashSet<String> = exclude_tenants.iter().map(ToString::to_string).collect();
        self.db
            .read(move |c| {
                if excluded.is_empty() {
                    return c
                        .query_row(
                            &format!(
                                "SELECT due_at FROM recipients INDEXED BY recipients_next_due \
                                 WHERE {UNFINISHED} ORDER BY due_at LIMIT 1"
                            ),
                            [],
                            |r| r.get(0),
                        )
                        .optional()
                        .map_err(sql);
                }
                // Tenant by tenant, so that an excluded tenant's backlog is not walked.
                let mut next = c
                    .prepare_cached(&format!(
                        "SELECT tenant_id FROM recipients INDEXED BY recipients_tenant_due \
                         WHERE {UNFINISHED} AND tenant_id > ?1 ORDER BY tenant_id LIMIT 1"
                    ))
                    .map_err(sql)?;
                let (mut at, mut earliest) = (String::new(), None::<i64>);
                for _ in 0..crate::CLAIM_WALK + excluded.len() {
                    let found: Option<String> = next
                        .query_row([&at], |r| r.get(0))
                        .optional()
                        .map_err(sql)?;
                    let Some(tenant) = found else { break };
                    if !excluded.contains(&tenant) {
                        let due = earliest_of(c, &tenant)?;
                        earliest = crate::earlier(earliest, due);
                    }
                    at = tenant;
                }
                Ok(earliest)
            })
            .await
    }

    async fn list_captured(&self, tenant_id: TenantId, limit: u32) -> Result<Vec<Captured>> {
        self.db
            .read(move |c| {
                let rows = list(
                    c,
                    "SELECT message_id, at, envelope_from, recipients, content FROM captured \
                     WHERE tenant_id = ?1 ORDER BY id DESC LIMIT ?2",
                    params![tenant_id.to_string(), limit],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, Vec<u8>>(4)?,
                        ))
                    },
                )?;
                rows.into_iter()
                    .map(|(mid, at, from, rcpts, content)| {
                        Ok(Captured {
                            message_id: id(mid)?,
                            captured_at: at,
                            envelope_from: from,
                            recipients: stored("recipients", serde_json::from_str(&rcpts))?,
                            content: String::from_utf8_lossy(&content).into_owned(),
                        })
                    })
                    .collect()
            })
            .await
    }
}
