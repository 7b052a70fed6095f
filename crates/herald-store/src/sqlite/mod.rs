//! The SQLite store: WAL mode, `synchronous = FULL`, group commit through one writer thread.

mod config;
mod db;
mod gateways;
mod ingress;
mod queue;
mod schedules;
mod sessions;
mod templates;
mod tenants;
mod webhooks;

use herald_core::timestamp::now_ms;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use herald_core::status::message_status;
use herald_core::{
    AccountId, EmailAddress, GatewayId, Invalid, Mailbox, MessageId, PersonId, ProviderId,
    RecipientId, RecipientStatus, ServerId, SmtpConnectorId, SmtpCredentialId, Subject, TenantId,
    TenantSlug, TokenId,
};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::access::AccessCache;
use crate::model::*;
use crate::outbox;
use crate::rows::{self, Columns, address, id, opt_id, reply_to_mailbox, status, stored};
use crate::rules;
use crate::sql;
use crate::walk::TenantWalk;
use crate::{
    Configuration, DeliveryStore, Ingress, Queue, Result, Sessions, Store, StoreError, Tenants,
};
use db::Db;

impl Columns for Row<'_> {
    fn text(&self, column: &str) -> Result<String> {
        self.get(column).map_err(sql)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        self.get(column).map_err(sql)
    }
    fn int(&self, column: &str) -> Result<i64> {
        self.get(column).map_err(sql)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        self.get(column).map_err(sql)
    }
    fn flag(&self, column: &str) -> Result<bool> {
        self.get(column).map_err(sql)
    }
}

/// Herald's embedded store: one SQLite file.
pub struct SqliteStore {
    db: Db,
    /// The tenant the previous claim stopped at: the next one starts after it.
    claim_cursor: Arc<Mutex<Option<String>>>,
    /// The tokens and tenants looked up for API requests.
    access: Arc<AccessCache>,
}

impl SqliteStore {
    /// Opens or creates the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        Ok(SqliteStore {
            db: Db::open(path)?,
            claim_cursor: Arc::default(),
            access: Arc::new(AccessCache::counted()),
        })
    }
}

/// The condition of every unfinished recipient that nodes deliver (not
/// pinned to a gateway), word for word as the partial indexes say it (see
/// `0017_equality_predicates.sql` for why equalities and not `IN`).
const UNFINISHED: &str =
    "(status = 'queued' OR status = 'deferred' OR status = 'sending') AND gateway_id IS NULL";

/// The condition of every unfinished recipient pinned to a gateway, word
/// for word as `recipients_gateway_due` says it.
const PINNED: &str =
    "(status = 'queued' OR status = 'deferred' OR status = 'sending') AND gateway_id IS NOT NULL";

/// The tenants a claim serves, in turn: from the one after `cursor` around
/// to it, those with something due at `now` and room, up to the claim's
/// limit (see [`DeliveryStore::claim`]). Each step is an index lookup. Moves the
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
    let mut walk = TenantWalk::new(req, cursor.clone());
    while let Some(after) = walk.after() {
        let found: Option<String> = next
            .query_row([after], |r| r.get(0))
            .optional()
            .map_err(sql)?;
        if let Some((tenant, room)) = walk.found(found)? {
            let due: bool = has_due
                .query_row(params![tenant, req.now], |r| r.get(0))
                .map_err(sql)?;
            if due {
                walk.due(tenant, room);
            }
        }
    }
    let (due, last) = walk.finish();
    *cursor = last;
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
        _ => StoreError::Unavailable(crate::Cause::of(e.to_string(), e)),
    }
}

/// Maps a unique-constraint violation to a conflict that says what is taken.
fn unique(what: impl std::fmt::Display) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| match &e {
        // Only a unique or primary key violation means "taken"; a foreign key
        // violation is a race, a conflict of its own (see `sql`).
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::Conflict(what.to_string())
        }
        _ => sql(e),
    }
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

/// Reads a tenant row; the outer error is SQLite's, the inner one a value that no longer parses.
fn tenant_row(r: &Row) -> rusqlite::Result<Result<Tenant>> {
    Ok(rows::tenant(r))
}

fn load_tenant(conn: &Connection, tenant_id: TenantId) -> Result<Tenant> {
    one(conn, sql::TENANT_BY_ID, [tenant_id.to_string()], tenant_row)
}

/// Reads a token row; the outer error is SQLite's, the inner one a value that no longer parses.
fn token_row(r: &Row) -> rusqlite::Result<Result<TokenRecord>> {
    Ok(rows::token(r))
}

/// Reads a person row; the outer error is SQLite's, the inner one a value that no longer parses.
fn person_row(r: &Row) -> rusqlite::Result<Result<Person>> {
    Ok(rows::person(r))
}

fn load_person(conn: &Connection, tenant_id: TenantId, person_id: PersonId) -> Result<Person> {
    let args = [person_id.to_string(), tenant_id.to_string()];
    one(conn, sql::PERSON_BY_ID, args, person_row)
}

/// Reads a server row; the outer error is SQLite's, the inner one a value that no longer parses.
fn server_row(r: &Row) -> rusqlite::Result<Result<SmtpServer>> {
    Ok(rows::server(r))
}

fn load_server(conn: &Connection, tenant_id: TenantId, server_id: ServerId) -> Result<SmtpServer> {
    let args = [server_id.to_string(), tenant_id.to_string()];
    one(conn, sql::SERVER_BY_ID, args, server_row)
}

/// Reads an account row; the outer error is SQLite's, the inner one a value that no longer parses.
fn account_row(r: &Row) -> rusqlite::Result<Result<SmtpAccount>> {
    Ok(rows::account(r))
}

fn load_account(
    conn: &Connection,
    tenant_id: TenantId,
    server_id: ServerId,
    account_id: AccountId,
) -> Result<SmtpAccount> {
    let args = [
        account_id.to_string(),
        server_id.to_string(),
        tenant_id.to_string(),
    ];
    one(conn, sql::ACCOUNT_BY_ID, args, account_row)
}

/// Reads a provider row; the outer error is SQLite's, the inner one a value that no longer parses.
fn provider_row(r: &Row) -> rusqlite::Result<Result<Provider>> {
    Ok(rows::provider(r))
}

fn load_provider(
    conn: &Connection,
    tenant_id: TenantId,
    provider_id: ProviderId,
) -> Result<Provider> {
    let args = [provider_id.to_string(), tenant_id.to_string()];
    one(conn, sql::PROVIDER_BY_ID, args, provider_row)
}

/// Checks that a provider's server and account exist for the tenant and fit together.
fn check_provider_references(
    conn: &Connection,
    tenant_id: TenantId,
    settings: &ProviderSettings,
) -> Result<()> {
    let server = rules::provider_server(load_server(conn, tenant_id, settings.smtp_server_id))?;
    let account = settings
        .account_id
        .map(|account_id| load_account(conn, tenant_id, server.id, account_id));
    rules::provider_account(&server, account)
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

/// The one row `query` finds, mapped in two steps as [`list_parsed`] maps
/// them; not found when there is none.
fn one<T>(
    conn: &Connection,
    query: &str,
    args: impl rusqlite::Params,
    map: impl FnOnce(&Row) -> rusqlite::Result<Result<T>>,
) -> Result<T> {
    maybe_one(conn, query, args, map)?.ok_or(StoreError::NotFound)
}

/// The row `query` finds, if any, mapped as [`one`] maps it; the statement
/// is prepared once (for the lookups every request makes).
fn maybe_one<T>(
    conn: &Connection,
    query: &str,
    args: impl rusqlite::Params,
    map: impl FnOnce(&Row) -> rusqlite::Result<Result<T>>,
) -> Result<Option<T>> {
    conn.prepare_cached(query)
        .map_err(sql)?
        .query_row(args, map)
        .optional()
        .map_err(sql)?
        .transpose()
}

/// [`list`] whose rows are mapped in two steps, the second of which can fail
/// (a stored value that no longer parses): every row, or the first failure.
fn list_parsed<T>(
    conn: &Connection,
    query: &str,
    args: impl rusqlite::Params,
    map: impl Fn(&Row) -> rusqlite::Result<Result<T>>,
) -> Result<Vec<T>> {
    list(conn, query, args, map)?.into_iter().collect()
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

/// The statuses of a message's recipients, in their order.
fn recipient_statuses(c: &Connection, message: &str, tenant: &str) -> Result<Vec<RecipientStatus>> {
    list(c, sql::RECIPIENT_STATUSES, [message, tenant], |r| {
        r.get::<_, String>(0)
    })?
    .iter()
    .map(|s| status(s))
    .collect()
}

/// The message stored earlier under `m`'s idempotency key, as a duplicate's answer.
fn earlier_by_key(c: &Connection, m: &NewMessage) -> Result<Option<Submitted>> {
    let Some(key) = &m.idempotency_key else {
        return Ok(None);
    };
    let tenant = m.tenant_id.to_string();
    let earlier: Option<(String, Option<i64>)> = c
        .prepare_cached(sql::MESSAGE_BY_KEY)
        .map_err(sql)?
        .query_row(params![tenant, key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(sql)?;
    let Some((earlier, send_at)) = earlier else {
        return Ok(None);
    };
    let statuses = recipient_statuses(c, &earlier, &tenant)?;
    Ok(Some(Submitted {
        id: id(earlier)?,
        status: rules::earlier_status(statuses, send_at),
        duplicate: true,
        handed: Vec::new(),
    }))
}

/// Stores a message and its recipients, or answers with the message stored
/// earlier under the same idempotency key.
fn insert_message(c: &Connection, m: &NewMessage) -> Result<Submitted> {
    if let Some(earlier) = earlier_by_key(c, m)? {
        return Ok(earlier);
    }
    // Refused before anything of it is written: a refusal leaves the
    // transaction as it found it, so the jobs beside it need not run again
    // (see `Db::write_repeatable`).
    check_limits(c, m)?;
    let (source, credential, connector, client_addr) = rows::origin_values(&m.origin);
    let headers = rows::header_pairs(&m.headers);
    let inserted = c
        .prepare_cached(INSERT_MESSAGE)
        .map_err(sql)?
        .execute(params![
            m.id.to_string(),
            m.tenant_id.to_string(),
            m.idempotency_key,
            m.subject.as_ref(),
            m.text,
            m.html,
            m.reply_to.as_ref().map(ToString::to_string),
            serde_json::to_string(&headers).expect("header pairs serialise"),
            mailboxes_json(&m.to),
            mailboxes_json(&m.cc),
            m.used_fallback,
            m.created_at,
            m.on_behalf_of.as_ref().map(|p| p.name.as_str()),
            m.on_behalf_of.as_ref().map(|p| p.email.as_ref()),
            m.test_provider.map(|p| p.to_string()),
            source,
            credential,
            connector,
            client_addr,
            m.raw,
            rows::attachments_json(&m.attachments),
            m.send_at,
            m.template.map(|t| t.id.to_string()),
            m.template.map(|t| t.version)
        ])
        .map_err(sql)?;
    if inserted == 0 {
        return earlier_by_key(c, m)?
            .ok_or_else(|| db::unavailable("the message's insert changed nothing"));
    }
    // Handed to this node's worker: claimed under its lease at once (the
    // state a claim leaves: sending, due when the lease ends, attempt 1).
    let handed = m
        .handoff
        .as_ref()
        .map(|lease| (lease, m.handed_claims(lease)));
    let mut insert = c
        .prepare_cached(
            "INSERT INTO recipients (id, message_id, tenant_id, address, kind, position, status, due_at, priority, \
             gateway_id, lease_owner, lease_incarnation, lease_token, attempts, sole) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?14)",
        )
        .map_err(sql)?;
    let sole = m.recipients().nth(1).is_none();
    for (position, (addr, kind)) in m.recipients().enumerate() {
        let (recipient, status, due_at, owner, incarnation, token) = match &handed {
            Some((lease, claims)) => (
                claims[position].recipient,
                "sending",
                lease.until,
                Some(lease.node.as_str()),
                Some(lease.incarnation.as_str()),
                1,
            ),
            None => (
                RecipientId::new(),
                "queued",
                m.send_at.unwrap_or(m.created_at),
                None,
                None,
                0,
            ),
        };
        insert
            .execute(params![
                recipient.to_string(),
                m.id.to_string(),
                m.tenant_id.to_string(),
                addr.as_ref(),
                kind.as_str(),
                position as i64,
                status,
                due_at,
                m.priority,
                m.gateway_id.map(|g| g.to_string()),
                owner,
                incarnation,
                token,
                sole
            ])
            .map_err(sql)?;
    }
    count_queued(c, m)?;
    Ok(Submitted {
        id: m.id,
        status: rules::accepted_status(m),
        duplicate: false,
        handed: handed.map(|(_, claims)| claims).unwrap_or_default(),
    })
}

/// Refuses a message that would take its tenant's queued recipients past
/// the message's limit, or (a test message) its test recipients queued or
/// in flight past its limit. The writer runs one job at a time, so jobs of
/// one transaction see each other's counts.
fn check_limits(c: &Connection, m: &NewMessage) -> Result<()> {
    let recipients = m.recipients().count() as u64;
    let tenant = m.tenant_id.to_string();
    if let Some(limit) = m.max_queued {
        let queued: Option<i64> = c
            .prepare_cached("SELECT queued_recipients FROM tenants WHERE id = ?1")
            .map_err(sql)?
            .query_row([&tenant], |r| r.get(0))
            .optional()
            .map_err(sql)?;
        if queued.unwrap_or(0).max(0) as u64 + recipients > limit {
            return Err(StoreError::QueueFull { limit });
        }
    }
    if let (Some(limit), Some(_)) = (m.max_pending_tests, m.test_provider) {
        let pending: i64 = c
            .prepare_cached(&format!(
                "SELECT count(*) FROM recipients INDEXED BY recipients_tenant_due \
                 WHERE tenant_id = ?1 AND {UNFINISHED} AND priority > 0"
            ))
            .map_err(sql)?
            .query_row([&tenant], |r| r.get(0))
            .map_err(sql)?;
        // The message's own recipients count once stored, as the query
        // would find them: waiting for the nodes, with a priority.
        let own = if m.priority > 0 && m.gateway_id.is_none() {
            recipients
        } else {
            0
        };
        if pending.max(0) as u64 + own > u64::from(limit) {
            return Err(StoreError::TooManyTests { limit });
        }
    }
    Ok(())
}

/// Adds a stored message's recipients to its tenant's count of queued ones.
fn count_queued(c: &Connection, m: &NewMessage) -> Result<()> {
    c.prepare_cached("UPDATE tenants SET queued_recipients = queued_recipients + ?1 WHERE id = ?2")
        .map_err(sql)?
        .execute(params![
            m.recipients().count() as i64,
            m.tenant_id.to_string()
        ])
        .map_err(sql)?;
    Ok(())
}

/// Gives back a lease whose process is gone (`?1` is now): unlike
/// [`DeliveryStore::release`], the attempt
/// the process had begun keeps counting, since it may have reached the
/// server; the recipient is due at once.
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
}

/// A new message's row; nothing when its tenant already has a message under
/// the same idempotency key (PostgreSQL inserts many at once, see its
/// `insert_messages`).
const INSERT_MESSAGE: &str = "INSERT INTO messages (id, tenant_id, idempotency_key, subject, text_body, html_body, \
     reply_to, headers, header_to, header_cc, used_fallback, created_at, on_behalf_name, \
     on_behalf_email, test_provider_id, source, smtp_credential_id, smtp_connector_id, \
     client_addr, raw, attachments, send_at, template_id, template_version) VALUES ($1, $2, $3, \
     $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, \
     $23, $24) \
     ON CONFLICT (tenant_id, idempotency_key) DO NOTHING";

#[cfg(test)]
mod tests {
    #[test]
    fn a_refused_statement_keeps_sqlites_error_as_its_source() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let refused = conn.execute_batch("SELECT * FROM missing").unwrap_err();
        let error = super::sql(refused);
        assert!(error.to_string().contains("no such table"), "{error}");
        // The cause's words are the error's own; SQLite's error is beneath them.
        let driver = std::error::Error::source(&error).expect("SQLite's error as the source");
        assert!(driver.downcast_ref::<rusqlite::Error>().is_some());
    }
}
