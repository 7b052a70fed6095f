//! The PostgreSQL store: many nodes on one database, claims with `SKIP LOCKED`.
//!
//! It behaves exactly like the SQLite store; the conformance suite runs the
//! same tests against both. Where SQLite serialises every write through one
//! writer thread, this store relies on transactions and row locks, and each
//! method says which rows it locks so that concurrent nodes see the same
//! outcomes a single SQLite writer would give.

mod db;
mod listen;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool};
use herald_core::status::message_status;
use herald_core::{
    AccountId, DisplayName, EmailAddress, HeaderName, HeaderValue, Invalid, Mailbox, Mechanism,
    MessageId, PersonId, PersonRole, Port, ProviderId, RecipientId, RecipientStatus, Role,
    Security, SenderPolicy, ServerId, SmtpHost, Subject, TenantId, TenantSlug, TokenId,
};
use tokio_postgres::types::{FromSql, Json};
use tokio_postgres::{IsolationLevel, Row};

use crate::model::*;
use crate::{Result, Store, StoreError};
use db::{client, execute, now_ms, pg, query, query_opt, unique};

/// Herald's store for many nodes: one PostgreSQL database.
pub struct PgStore {
    pool: Pool,
    events: tokio::sync::broadcast::Sender<StoreEvent>,
    /// Asks the mail notifier for one NOTIFY; a request made while one is
    /// waiting adds nothing.
    new_mail: tokio::sync::mpsc::Sender<()>,
    /// Whether the latest write that reached the database failed as unavailable.
    writes: crate::WriteHealth,
    /// The tenant this node's previous claim stopped at: the next one starts after it.
    claim_cursor: std::sync::Mutex<Option<String>>,
}

/// The condition of every unfinished recipient, as the partial indexes say it.
const UNFINISHED: &str = "status IN ('queued', 'deferred', 'sending')";

/// The tenants a claim serves, in turn: from the one after `start` around to
/// it, those with something due and room, up to the claim's limit (see
/// [`Store::claim`]); and the last tenant looked at, where the next claim
/// starts. Each step is one statement: the next tenant in
/// `recipients_tenant_due` and whether it has something due.
async fn tenants_due(
    c: &impl GenericClient,
    req: &ClaimRequest,
    start: Option<String>,
) -> Result<(Vec<(String, u32)>, Option<String>)> {
    let sql = format!(
        "SELECT t.tenant_id, \
             EXISTS (SELECT 1 FROM recipients d WHERE d.tenant_id = t.tenant_id AND d.{UNFINISHED} \
                     AND d.priority = 0 AND d.due_at <= $2) \
             OR EXISTS (SELECT 1 FROM recipients d WHERE d.tenant_id = t.tenant_id AND d.{UNFINISHED} \
                     AND d.priority > 0 AND d.due_at <= $2) AS due \
         FROM (SELECT tenant_id FROM recipients WHERE {UNFINISHED} AND tenant_id > $1 \
               ORDER BY tenant_id LIMIT 1) t"
    );
    let mut at = start.clone().unwrap_or_default();
    let mut wrapped = start.is_none();
    let (mut due, mut looked, mut last) = (Vec::new(), 0, start.clone());
    while due.len() < req.limit as usize && looked < crate::CLAIM_WALK {
        let row = query_opt(c, &sql, &[&at, &req.now]).await?;
        let (tenant, has_due): (String, bool) = match row {
            Some(r) => (get(&r, "tenant_id")?, get(&r, "due")?),
            None if wrapped => break,
            None => {
                wrapped = true;
                at.clear();
                continue;
            }
        };
        // Around again: up to and including where this claim started.
        if wrapped && start.as_ref().is_some_and(|s| &tenant > s) {
            break;
        }
        at.clone_from(&tenant);
        last = Some(tenant.clone());
        let room = req.room_of(id(tenant.clone())?);
        if room == 0 {
            continue;
        }
        looked += 1;
        if has_due {
            due.push((tenant, room));
        }
    }
    Ok((due, last))
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/dbname`)
    /// and brings its schema up to date. Several nodes may do this at once.
    /// A listener hears other nodes' notifications (LISTEN/NOTIFY).
    pub async fn connect(url: &str) -> Result<PgStore> {
        let pool = db::open(url).await?;
        let (events, _) = tokio::sync::broadcast::channel(1024);
        tokio::spawn(listen::run(url.to_owned(), events.clone()));
        let (new_mail, requests) = tokio::sync::mpsc::channel(1);
        tokio::spawn(notify_new_mail(pool.clone(), requests));
        Ok(PgStore {
            pool,
            events,
            new_mail,
            writes: crate::WriteHealth::default(),
            claim_cursor: std::sync::Mutex::default(),
        })
    }

    /// Tells every node's worker, after the commit, that there is new mail.
    fn announce_mail(&self) {
        // Full means a NOTIFY is already due to be sent, which will do.
        let _ = self.new_mail.try_send(());
    }
}

/// Sends a NOTIFY for each request, outside the submitting transactions:
/// PostgreSQL serialises the commits of transactions that notify, which would
/// leave each submission waiting for its own flush. Requests that arrive while
/// one is sent are answered by the next one. Ends with the store.
async fn notify_new_mail(pool: Pool, mut requests: tokio::sync::mpsc::Receiver<()>) {
    let sql = format!("SELECT pg_notify('{}', '')", listen::MAIL);
    while requests.recv().await.is_some() {
        let sent = match client(&pool).await {
            Ok(c) => execute(&c, &sql, &[]).await.map_err(pg),
            Err(e) => Err(e),
        };
        if let Err(error) = sent {
            // The other nodes find the mail at their next poll.
            tracing::warn!(%error, "could not notify other nodes of new mail");
        }
    }
}

/// How a loader locks the row it reads, inside the caller's transaction.
#[derive(Clone, Copy)]
enum Lock {
    /// A plain read.
    None,
    /// The row is about to be changed or deleted: concurrent lockers wait.
    Update,
    /// The row is about to be referenced: it cannot be deleted meanwhile, but may be changed.
    KeyShare,
}

impl Lock {
    fn clause(self) -> &'static str {
        match self {
            Lock::None => "",
            Lock::Update => " FOR UPDATE",
            Lock::KeyShare => " FOR KEY SHARE",
        }
    }
}

/// Reads one column; a type that does not match the schema means the database is not Herald's.
fn get<'a, T: FromSql<'a>>(r: &'a Row, column: &str) -> Result<T> {
    r.try_get(column).map_err(pg)
}

/// Parses a stored value back into its domain type; failure means the data was changed behind Herald's back.
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
fn mailboxes(list: Vec<String>) -> Result<Vec<Mailbox>> {
    list.iter()
        .map(|m| stored("mailbox", Mailbox::from_stored(m)))
        .collect()
}

fn mailbox_strings(list: &[Mailbox]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

/// A count the store hands out as `u32`, stored as BIGINT.
fn count(what: &str, value: i64) -> Result<u32> {
    stored(what, u32::try_from(value))
}

fn status(s: &str) -> Result<RecipientStatus> {
    RecipientStatus::from_stored(s).ok_or_else(|| StoreError::Corrupt(format!("status {s:?}")))
}

/// PostgreSQL cannot store NUL in text, and a remote server's reply may hold
/// one: refusing the attempt would leave the recipient leased and send it
/// again, so the character is replaced.
fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

fn opt_text(s: &Option<String>) -> Option<std::borrow::Cow<'_, str>> {
    s.as_deref().map(text)
}

const TENANT_COLUMNS: &str = "id, slug, name, credential_storage, notification_provider_id, \
     previous_provider_id, properties_effective_from, created_at";

fn tenant(r: &Row) -> Result<Tenant> {
    Ok(Tenant {
        id: id(get(r, "id")?)?,
        slug: get(r, "slug")?,
        name: get(r, "name")?,
        credential_storage: get(r, "credential_storage")?,
        notification_provider_id: opt_id(get(r, "notification_provider_id")?)?,
        previous_provider_id: opt_id(get(r, "previous_provider_id")?)?,
        properties_effective_from: get(r, "properties_effective_from")?,
        created_at: get(r, "created_at")?,
    })
}

async fn load_tenant(c: &impl GenericClient, tenant_id: TenantId, lock: Lock) -> Result<Tenant> {
    let sql = format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1{}",
        lock.clause()
    );
    let row = query_opt(c, &sql, &[&tenant_id.to_string()])
        .await?
        .ok_or(StoreError::NotFound)?;
    tenant(&row)
}

const TOKEN_COLUMNS: &str =
    "id, tenant_id, name, role, person_id, created_at, last_used_at, bootstrap";

fn token_record(r: &Row) -> Result<TokenRecord> {
    let role: String = get(r, "role")?;
    Ok(TokenRecord {
        id: id(get(r, "id")?)?,
        tenant_id: opt_id(get(r, "tenant_id")?)?,
        name: get(r, "name")?,
        role: stored("role", Role::parse(&role))?,
        person_id: opt_id(get(r, "person_id")?)?,
        created_at: get(r, "created_at")?,
        last_used_at: get(r, "last_used_at")?,
        bootstrap: get(r, "bootstrap")?,
    })
}

const PERSON_COLUMNS: &str = "id, tenant_id, name, email, role, created_at";

fn person(r: &Row) -> Result<Person> {
    let role: String = get(r, "role")?;
    Ok(Person {
        id: id(get(r, "id")?)?,
        tenant_id: id(get(r, "tenant_id")?)?,
        name: get(r, "name")?,
        email: address(get(r, "email")?)?,
        role: stored("role", PersonRole::parse(&role))?,
        created_at: get(r, "created_at")?,
    })
}

async fn load_person(
    c: &impl GenericClient,
    tenant_id: TenantId,
    person_id: PersonId,
    lock: Lock,
) -> Result<Person> {
    let sql = format!(
        "SELECT {PERSON_COLUMNS} FROM persons WHERE id = $1 AND tenant_id = $2{}",
        lock.clause()
    );
    let row = query_opt(c, &sql, &[&person_id.to_string(), &tenant_id.to_string()])
        .await?
        .ok_or(StoreError::NotFound)?;
    person(&row)
}

const SERVER_COLUMNS: &str = "id, tenant_id, name, host, port, security, requires_auth, \
     allow_plaintext_auth, tls_verify, tls_ca_pem, tls_server_name, helo_name, max_connections, \
     max_messages_per_connection, idle_timeout_secs, rate_limit_per_minute, command_timeout_secs, \
     created_at, updated_at";

fn server(r: &Row) -> Result<SmtpServer> {
    let host: String = get(r, "host")?;
    let port: i32 = get(r, "port")?;
    let security: String = get(r, "security")?;
    let optional_count = |column: &str| -> Result<Option<u32>> {
        get::<Option<i64>>(r, column)?
            .map(|v| count(column, v))
            .transpose()
    };
    Ok(SmtpServer {
        id: id(get(r, "id")?)?,
        tenant_id: id(get(r, "tenant_id")?)?,
        settings: ServerSettings {
            name: get(r, "name")?,
            host: stored("host", SmtpHost::from_stored(&host))?,
            port: stored("port", Port::new(i64::from(port)))?,
            security: stored("security", Security::parse(&security))?,
            requires_auth: get(r, "requires_auth")?,
            allow_plaintext_auth: get(r, "allow_plaintext_auth")?,
            tls_verify: get(r, "tls_verify")?,
            tls_ca_pem: get(r, "tls_ca_pem")?,
            tls_server_name: get(r, "tls_server_name")?,
            helo_name: get(r, "helo_name")?,
            max_connections: count("max_connections", get(r, "max_connections")?)?,
            max_messages_per_connection: count(
                "max_messages_per_connection",
                get(r, "max_messages_per_connection")?,
            )?,
            idle_timeout_secs: count("idle_timeout_secs", get(r, "idle_timeout_secs")?)?,
            rate_limit_per_minute: optional_count("rate_limit_per_minute")?,
            command_timeout_secs: optional_count("command_timeout_secs")?,
        },
        created_at: get(r, "created_at")?,
        updated_at: get(r, "updated_at")?,
    })
}

async fn load_server(
    c: &impl GenericClient,
    tenant_id: TenantId,
    server_id: ServerId,
    lock: Lock,
) -> Result<SmtpServer> {
    let sql = format!(
        "SELECT {SERVER_COLUMNS} FROM smtp_servers WHERE id = $1 AND tenant_id = $2{}",
        lock.clause()
    );
    let row = query_opt(c, &sql, &[&server_id.to_string(), &tenant_id.to_string()])
        .await?
        .ok_or(StoreError::NotFound)?;
    server(&row)
}

const ACCOUNT_COLUMNS: &str = "id, server_id, tenant_id, username, mechanism, sealed_secret, \
     oauth2_token_url, oauth2_client_id, oauth2_scope, person_id, created_at";

fn account(r: &Row) -> Result<SmtpAccount> {
    let mechanism: String = get(r, "mechanism")?;
    let sealed: Option<String> = get(r, "sealed_secret")?;
    let oauth2 = match get::<Option<String>>(r, "oauth2_token_url")? {
        Some(token_url) => Some(OAuth2Client {
            token_url,
            client_id: get::<Option<String>>(r, "oauth2_client_id")?.unwrap_or_default(),
            scope: get(r, "oauth2_scope")?,
        }),
        None => None,
    };
    Ok(SmtpAccount {
        id: id(get(r, "id")?)?,
        server_id: id(get(r, "server_id")?)?,
        tenant_id: id(get(r, "tenant_id")?)?,
        username: get(r, "username")?,
        mechanism: stored("mechanism", Mechanism::parse(&mechanism))?,
        secret_set: sealed.is_some(),
        sealed_secret: sealed,
        oauth2,
        person_id: opt_id(get(r, "person_id")?)?,
        created_at: get(r, "created_at")?,
    })
}

async fn load_account(
    c: &impl GenericClient,
    tenant_id: TenantId,
    server_id: ServerId,
    account_id: AccountId,
    lock: Lock,
) -> Result<SmtpAccount> {
    let sql = format!(
        "SELECT {ACCOUNT_COLUMNS} FROM smtp_accounts WHERE id = $1 AND server_id = $2 AND tenant_id = $3{}",
        lock.clause()
    );
    let row = query_opt(
        c,
        &sql,
        &[
            &account_id.to_string(),
            &server_id.to_string(),
            &tenant_id.to_string(),
        ],
    )
    .await?
    .ok_or(StoreError::NotFound)?;
    account(&row)
}

const PROVIDER_COLUMNS: &str = "id, tenant_id, name, smtp_server_id, account_id, from_address, from_name, \
     reply_to, fallback_recipient, sender_policy, created_at, updated_at";

fn provider(r: &Row) -> Result<Provider> {
    let from_name: Option<String> = get(r, "from_name")?;
    let reply_to: Option<String> = get(r, "reply_to")?;
    let fallback: Option<String> = get(r, "fallback_recipient")?;
    let policy: String = get(r, "sender_policy")?;
    Ok(Provider {
        id: id(get(r, "id")?)?,
        tenant_id: id(get(r, "tenant_id")?)?,
        settings: ProviderSettings {
            name: get(r, "name")?,
            smtp_server_id: id(get(r, "smtp_server_id")?)?,
            account_id: opt_id(get(r, "account_id")?)?,
            from_address: address(get(r, "from_address")?)?,
            from_name: from_name
                .map(|n| stored("from_name", DisplayName::from_stored(&n)))
                .transpose()?,
            reply_to: reply_to.map(reply_to_mailbox).transpose()?,
            fallback_recipient: fallback.map(address).transpose()?,
            sender_policy: stored("sender_policy", SenderPolicy::parse(&policy))?,
        },
        created_at: get(r, "created_at")?,
        updated_at: get(r, "updated_at")?,
    })
}

async fn load_provider(
    c: &impl GenericClient,
    tenant_id: TenantId,
    provider_id: ProviderId,
    lock: Lock,
) -> Result<Provider> {
    let sql = format!(
        "SELECT {PROVIDER_COLUMNS} FROM providers WHERE id = $1 AND tenant_id = $2{}",
        lock.clause()
    );
    let row = query_opt(c, &sql, &[&provider_id.to_string(), &tenant_id.to_string()])
        .await?
        .ok_or(StoreError::NotFound)?;
    provider(&row)
}

/// Checks that a provider's server and account exist for the tenant and fit
/// together, and keeps them from being deleted until the caller's transaction ends.
async fn check_provider_references(
    c: &impl GenericClient,
    tenant_id: TenantId,
    settings: &ProviderSettings,
) -> Result<()> {
    let server = match load_server(c, tenant_id, settings.smtp_server_id, Lock::KeyShare).await {
        Err(StoreError::NotFound) => {
            return Err(StoreError::Invalid(
                Invalid::new("must name an SMTP server of this tenant").at("smtp_server_id"),
            ));
        }
        other => other?,
    };
    match settings.account_id {
        Some(account_id) => {
            match load_account(c, tenant_id, server.id, account_id, Lock::KeyShare).await {
                Err(StoreError::NotFound) => Err(StoreError::Invalid(
                    Invalid::new("must name an account of the provider's SMTP server")
                        .at("account_id"),
                )),
                other => other.map(drop),
            }
        }
        None if server.settings.requires_auth => Err(StoreError::Invalid(
            Invalid::new("is required because the SMTP server requires authentication")
                .at("account_id"),
        )),
        None => Ok(()),
    }
}

fn headers_from_json(pairs: Vec<(String, String)>) -> Result<Vec<(HeaderName, HeaderValue)>> {
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

/// Reads a JSONB column into `T`.
fn json<T: serde::de::DeserializeOwned>(r: &Row, column: &str) -> Result<T> {
    let Json(value): Json<serde_json::Value> = get(r, column)?;
    stored(column, serde_json::from_value(value))
}

fn attempt(r: &Row) -> Result<AttemptRecord> {
    let outcome: String = get(r, "outcome")?;
    Ok(AttemptRecord {
        at: get(r, "at")?,
        node: get(r, "node")?,
        server: get(r, "server")?,
        outcome: status(&outcome)?,
        step: get(r, "step")?,
        code: get::<Option<i32>>(r, "code")?
            .map(|c| stored("code", u16::try_from(c)))
            .transpose()?,
        enhanced_code: get(r, "enhanced_code")?,
        response: get(r, "response")?,
        duration_ms: get(r, "duration_ms")?,
        remote_addr: get(r, "remote_addr")?,
        tls_version: get(r, "tls_version")?,
        tls_cipher: get(r, "tls_cipher")?,
        provider_id: opt_id(get(r, "provider_id")?)?,
        config_version: get(r, "config_version")?,
        sender_policy: get(r, "sender_policy")?,
        diagnosis: get::<Option<String>>(r, "diagnosis")?
            .map(|d| stored("diagnosis", serde_json::from_str(&d)))
            .transpose()?,
    })
}

fn on_behalf_of(r: &Row) -> Result<Option<OnBehalf>> {
    match (get(r, "on_behalf_name")?, get(r, "on_behalf_email")?) {
        (Some(name), Some(email)) => Ok(Some(OnBehalf {
            name,
            email: address(email)?,
        })),
        _ => Ok(None),
    }
}

/// The statuses of a message's recipients.
/// Inserts a message's row; `false` when its tenant already has a message
/// under the same idempotency key (nothing is inserted then).
async fn insert_message(tx: &impl GenericClient, m: &NewMessage) -> Result<bool> {
    let headers: Vec<(&str, &str)> = m
        .headers
        .iter()
        .map(|(n, v)| (n.as_ref(), v.as_ref()))
        .collect();
    let inserted = execute(
        tx,
        "INSERT INTO messages (id, tenant_id, idempotency_key, subject, text_body, html_body, reply_to, \
         headers, header_to, header_cc, used_fallback, created_at, on_behalf_name, on_behalf_email, \
         test_provider_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
        &[
            &m.id.to_string(),
            &m.tenant_id.to_string(),
            &m.idempotency_key,
            &m.subject.as_ref(),
            &m.text,
            &m.html,
            &m.reply_to.as_ref().map(ToString::to_string),
            &Json(&headers),
            &Json(mailbox_strings(&m.to)),
            &Json(mailbox_strings(&m.cc)),
            &m.used_fallback,
            &m.created_at,
            &m.on_behalf_of.as_ref().map(|p| p.name.as_str()),
            &m.on_behalf_of.as_ref().map(|p| p.email.as_ref()),
            &m.test_provider.map(|p| p.to_string()),
        ],
    )
    .await
    .map_err(pg)?;
    Ok(inserted == 1)
}

/// Inserts one row per recipient of a new message, queued and due at once.
async fn insert_recipients(tx: &impl GenericClient, m: &NewMessage) -> Result<()> {
    let (mut ids, mut addrs, mut kinds, mut positions) = (vec![], vec![], vec![], vec![]);
    for (position, (addr, kind)) in m.recipients().enumerate() {
        ids.push(RecipientId::new().to_string());
        addrs.push(addr.as_ref());
        kinds.push(kind.as_str());
        positions.push(position as i32);
    }
    execute(
        tx,
        "INSERT INTO recipients (id, message_id, tenant_id, address, kind, position, status, due_at, priority) \
         SELECT r.id, $1, $2, r.address, r.kind, r.position, 'queued', $3, $4 \
         FROM unnest($5::text[], $6::text[], $7::text[], $8::integer[]) AS r (id, address, kind, position)",
        &[
            &m.id.to_string(),
            &m.tenant_id.to_string(),
            &m.created_at,
            &m.priority,
            &ids,
            &addrs,
            &kinds,
            &positions,
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// Adds new messages' recipients to their tenants' counts of queued ones, and
/// refuses them (the caller's transaction is rolled back) when that takes a
/// count past a message's limit. The count is `tenants.queued_recipients`
/// plus the tenant's `tenant_queue_shards`; a change goes to the shard of
/// this connection, so concurrent submissions of one tenant seldom wait for
/// each other. What other transactions have not committed yet is not seen:
/// the limit may be passed by what is being submitted at the same moment.
/// Run last before the commit, tenants in order, so that a shard row stays
/// locked only for the commit and two transactions cannot deadlock on them.
async fn count_queued(tx: &impl GenericClient, new: &[&NewMessage]) -> Result<()> {
    let mut tenants: BTreeMap<String, (i64, Option<u64>)> = BTreeMap::new();
    for m in new {
        let (count, limit) = tenants.entry(m.tenant_id.to_string()).or_default();
        *count += m.recipients().count() as i64;
        *limit = match (*limit, m.max_queued) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    for (tenant, (count, limit)) in tenants {
        change_queued(tx, &tenant, count).await?;
        let Some(limit) = limit else { continue };
        let row = query_opt(
            tx,
            "SELECT t.queued_recipients + coalesce((SELECT sum(s.queued) FROM tenant_queue_shards s \
             WHERE s.tenant_id = t.id), 0)::bigint AS queued FROM tenants t WHERE t.id = $1",
            &[&tenant],
        )
        .await?;
        let queued = row.map(|r| get::<i64>(&r, "queued")).transpose()?;
        if queued.is_some_and(|queued| queued.max(0) as u64 > limit) {
            return Err(StoreError::QueueFull { limit });
        }
    }
    Ok(())
}

/// Refuses a test message (the caller's transaction is rolled back) that
/// takes its tenant's test recipients queued or in flight past the message's
/// limit. Test messages of one tenant are counted one transaction at a time
/// (a transaction-scoped advisory lock on the tenant), so two sent at the
/// same moment cannot both pass.
async fn count_tests(tx: &impl GenericClient, m: &NewMessage) -> Result<()> {
    let (Some(limit), Some(_)) = (m.max_pending_tests, m.test_provider) else {
        return Ok(());
    };
    let tenant = m.tenant_id.to_string();
    execute(
        tx,
        "SELECT pg_advisory_xact_lock(hashtext('herald.tests:' || $1))",
        &[&tenant],
    )
    .await
    .map_err(pg)?;
    let row = query_opt(
        tx,
        &format!(
            "SELECT count(*) AS pending FROM recipients \
             WHERE tenant_id = $1 AND {UNFINISHED} AND priority > 0"
        ),
        &[&tenant],
    )
    .await?;
    let pending: i64 = row.map(|r| get(&r, "pending")).transpose()?.unwrap_or(0);
    if pending.max(0) as u64 > u64::from(limit) {
        return Err(StoreError::TooManyTests { limit });
    }
    Ok(())
}

/// Changes a tenant's count of queued recipients by `delta`, in the shard of
/// this connection (see [`count_queued`]).
async fn change_queued(tx: &impl GenericClient, tenant: &str, delta: i64) -> Result<()> {
    execute(
        tx,
        "INSERT INTO tenant_queue_shards (tenant_id, shard, queued) \
         VALUES ($1, pg_backend_pid() % 16, $2) \
         ON CONFLICT (tenant_id, shard) DO UPDATE SET queued = tenant_queue_shards.queued + excluded.queued",
        &[&tenant, &delta],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// The message stored earlier under `m`'s idempotency key, as a duplicate
/// submission is answered; `None` when it has gone meanwhile.
async fn stored_earlier(tx: &impl GenericClient, m: &NewMessage) -> Result<Option<Submitted>> {
    let tenant_id = m.tenant_id.to_string();
    let earlier = query_opt(
        tx,
        "SELECT id FROM messages WHERE tenant_id = $1 AND idempotency_key = $2",
        &[&tenant_id, &m.idempotency_key],
    )
    .await?;
    let Some(earlier) = earlier else {
        return Ok(None);
    };
    let earlier: String = get(&earlier, "id")?;
    let statuses = statuses_of(tx, &tenant_id, &earlier).await?;
    Ok(Some(Submitted {
        id: id(earlier)?,
        status: message_status(statuses),
        duplicate: true,
    }))
}

fn vanishing() -> StoreError {
    StoreError::Unavailable("the message stored under this idempotency key keeps vanishing".into())
}

async fn statuses_of(
    c: &impl GenericClient,
    tenant_id: &str,
    message_id: &str,
) -> Result<Vec<RecipientStatus>> {
    query(
        c,
        "SELECT status FROM recipients WHERE message_id = $1 AND tenant_id = $2",
        &[&message_id, &tenant_id],
    )
    .await?
    .iter()
    .map(|r| status(&get::<String>(r, "status")?))
    .collect()
}

/// The statement that gives back the leases of a process that is gone
/// (`$1` is now, `$2` the node, `$3` the incarnation `which` compares with):
/// unlike [`Store::release`], the attempt the process had begun keeps
/// counting, since it may have reached the server; the recipient is due at
/// once. Rows are locked in id order, like `complete` and `release` lock
/// them, so that none of them can deadlock with another.
fn release_crashed(which: &str) -> String {
    format!(
        "UPDATE recipients SET status = CASE WHEN attempts > 1 THEN 'deferred' ELSE 'queued' END, \
         due_at = $1, lease_owner = NULL, lease_incarnation = NULL \
         WHERE id IN (SELECT id FROM recipients \
                      WHERE status = 'sending' AND lease_owner = $2 AND {which} \
                      ORDER BY id FOR UPDATE) \
         AND status = 'sending' AND lease_owner = $2 AND {which}"
    )
}

#[async_trait]
impl Store for PgStore {
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        Some(self.events.subscribe())
    }

    fn refusing_writes(&self) -> bool {
        self.writes.refusing()
    }

    async fn ping(&self) -> Result<()> {
        let c = client(&self.pool).await?;
        c.simple_query("SELECT 1").await.map_err(pg).map(drop)
    }

    async fn create_tenant(&self, slug: TenantSlug, name: String) -> Result<Tenant> {
        let c = client(&self.pool).await?;
        let row = c
            .query_one(
                &c.prepare_cached(&format!(
                    "INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4) \
                     RETURNING {TENANT_COLUMNS}"
                ))
                .await
                .map_err(pg)?,
                &[
                    &TenantId::new().to_string(),
                    &slug.as_ref(),
                    &name,
                    &now_ms(),
                ],
            )
            .await
            .map_err(unique("a tenant with this slug exists"))?;
        tenant(&row)
    }

    async fn tenant_by_slug(&self, slug: &str) -> Result<Tenant> {
        let c = client(&self.pool).await?;
        let row = query_opt(
            &c,
            &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE slug = $1"),
            &[&slug],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
        tenant(&row)
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let c = client(&self.pool).await?;
        // Ties in time are broken by id, which is time-ordered too: creation order.
        query(
            &c,
            &format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY created_at, id"),
            &[],
        )
        .await?
        .iter()
        .map(tenant)
        .collect()
    }

    async fn set_entitlements(
        &self,
        tenant_id: TenantId,
        credential_storage: bool,
    ) -> Result<Tenant> {
        let c = client(&self.pool).await?;
        let row = query_opt(
            &c,
            &format!(
                "UPDATE tenants SET credential_storage = $1 WHERE id = $2 RETURNING {TENANT_COLUMNS}"
            ),
            &[&credential_storage, &tenant_id.to_string()],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
        tenant(&row)
    }

    async fn set_active_provider(
        &self,
        tenant_id: TenantId,
        provider_id: Option<ProviderId>,
        effective_from: i64,
    ) -> Result<Tenant> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        // The tenant's row is the lock delete_provider takes too: a provider
        // cannot be deleted between the check below and its activation.
        query_opt(
            &tx,
            "SELECT id FROM tenants WHERE id = $1 FOR UPDATE",
            &[&tenant_id.to_string()],
        )
        .await?;
        if let Some(pid) = provider_id {
            match load_provider(&tx, tenant_id, pid, Lock::None).await {
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
        let row = query_opt(
            &tx,
            &format!(
                "UPDATE tenants SET \
                 previous_provider_id = CASE WHEN properties_effective_from <= $3 \
                     THEN notification_provider_id ELSE previous_provider_id END, \
                 notification_provider_id = $1, properties_effective_from = $4 \
                 WHERE id = $2 RETURNING {TENANT_COLUMNS}"
            ),
            &[
                &provider_id.map(|p| p.to_string()),
                &tenant_id.to_string(),
                &now_ms(),
                &effective_from,
            ],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
        let tenant = tenant(&row)?;
        tx.commit().await.map_err(pg)?;
        Ok(tenant)
    }

    async fn refresh_properties(&self, tenant_id: TenantId, now: i64) -> Result<Tenant> {
        let c = client(&self.pool).await?;
        // The notification goes out with the update: every node forgets its cached provider.
        let row = query_opt(
            &c,
            &format!(
                "WITH notified AS (SELECT pg_notify('{}', $2)) \
                 UPDATE tenants SET properties_effective_from = LEAST(properties_effective_from, $1) \
                 WHERE id = $2 AND EXISTS (SELECT 1 FROM notified) RETURNING {TENANT_COLUMNS}",
                listen::PROPERTIES
            ),
            &[&now, &tenant_id.to_string()],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
        tenant(&row)
    }

    async fn heartbeat(&self, node: NodeRecord) -> Result<()> {
        let result = async {
            let c = client(&self.pool).await?;
            execute(
                &c,
                "INSERT INTO nodes (name, roles, version, started_at, heartbeat_at, incarnation) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (name) DO UPDATE SET roles = excluded.roles, version = excluded.version, \
                 started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, \
                 incarnation = excluded.incarnation",
                &[
                    &node.name,
                    &node.roles.join(","),
                    &node.version,
                    &node.started_at,
                    &node.heartbeat_at,
                    &node.incarnation,
                ],
            )
            .await
            .map_err(pg)
            .map(drop)
        }
        .await;
        self.writes.note(&result);
        result
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        let c = client(&self.pool).await?;
        query(
            &c,
            "SELECT name, roles, version, started_at, heartbeat_at, incarnation FROM nodes \
             ORDER BY heartbeat_at DESC, name",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(NodeRecord {
                name: get(r, "name")?,
                roles: get::<String>(r, "roles")?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                version: get(r, "version")?,
                started_at: get(r, "started_at")?,
                heartbeat_at: get(r, "heartbeat_at")?,
                incarnation: get(r, "incarnation")?,
            })
        })
        .collect()
    }

    async fn create_token(&self, token: NewToken) -> Result<TokenRecord> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        if let (Some(tenant_id), Some(person_id)) = (token.tenant_id, token.person_id) {
            load_person(&tx, tenant_id, person_id, Lock::KeyShare).await?;
        }
        let statement = tx
            .prepare_cached(&format!(
                "INSERT INTO tokens (id, tenant_id, name, role, person_id, hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {TOKEN_COLUMNS}"
            ))
            .await
            .map_err(pg)?;
        let row = tx
            .query_one(
                &statement,
                &[
                    &token.id.to_string(),
                    &token.tenant_id.map(|t| t.to_string()),
                    &token.name,
                    &token.role.as_str(),
                    &token.person_id.map(|p| p.to_string()),
                    &token.hash,
                    &now_ms(),
                ],
            )
            .await
            .map_err(unique("this token exists already"))?;
        let record = token_record(&row)?;
        tx.commit().await.map_err(pg)?;
        Ok(record)
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let c = client(&self.pool).await?;
        let Some(row) = query_opt(
            &c,
            &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1 AND revoked_at IS NULL"),
            &[&hash],
        )
        .await?
        else {
            return Ok(None);
        };
        let record = token_record(&row)?;
        // Recording every use would put a write on every request; a minute's precision is enough.
        let now = now_ms();
        if record.last_used_at.is_none_or(|t| now - t > 60_000) {
            execute(
                &c,
                "UPDATE tokens SET last_used_at = $1 WHERE id = $2",
                &[&now, &record.id.to_string()],
            )
            .await
            .map_err(pg)?;
        }
        Ok(Some(record))
    }

    async fn list_tokens(&self, tenant_id: TenantId) -> Result<Vec<TokenRecord>> {
        let c = client(&self.pool).await?;
        query(
            &c,
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE tenant_id = $1 ORDER BY created_at, id"
            ),
            &[&tenant_id.to_string()],
        )
        .await?
        .iter()
        .map(token_record)
        .collect()
    }

    async fn revoke_token(&self, tenant_id: TenantId, token_id: TokenId) -> Result<()> {
        let c = client(&self.pool).await?;
        let deleted = execute(
            &c,
            "DELETE FROM tokens WHERE id = $1 AND tenant_id = $2",
            &[&token_id.to_string(), &tenant_id.to_string()],
        )
        .await
        .map_err(pg)?;
        if deleted == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    async fn operator_token_exists(&self) -> Result<bool> {
        let c = client(&self.pool).await?;
        let row = query(
            &c,
            "SELECT EXISTS (SELECT 1 FROM tokens WHERE role = 'operator' AND revoked_at IS NULL) AS found",
            &[],
        )
        .await?;
        get(&row[0], "found")
    }

    async fn list_operator_tokens(&self) -> Result<Vec<TokenRecord>> {
        let c = client(&self.pool).await?;
        query(
            &c,
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE tenant_id IS NULL \
                 AND role = 'operator' AND revoked_at IS NULL ORDER BY created_at, id"
            ),
            &[],
        )
        .await?
        .iter()
        .map(token_record)
        .collect()
    }

    async fn revoke_operator_token(&self, token_id: TokenId) -> Result<()> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        let id = token_id.to_string();
        let revoked = execute(
            &tx,
            "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND tenant_id IS NULL \
             AND role = 'operator' AND bootstrap AND revoked_at IS NULL",
            &[&id, &now_ms()],
        )
        .await
        .map_err(pg)?;
        let deleted = execute(
            &tx,
            "DELETE FROM tokens WHERE id = $1 AND tenant_id IS NULL \
             AND role = 'operator' AND NOT bootstrap",
            &[&id],
        )
        .await
        .map_err(pg)?;
        if revoked + deleted == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await.map_err(pg)
    }

    async fn set_bootstrap_token(&self, token: NewToken) -> Result<BootstrapOutcome> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        // Nodes that start together with different values must not each keep
        // their own: one after the other, the last one wins.
        tx.execute("LOCK TABLE tokens IN SHARE ROW EXCLUSIVE MODE", &[])
            .await
            .map_err(pg)?;
        let now = now_ms();
        let stored = query_opt(
            &tx,
            "SELECT revoked_at FROM tokens WHERE hash = $1",
            &[&token.hash],
        )
        .await?;
        // `None` when the value was revoked before: it stays revoked.
        let created = match stored {
            Some(row) if get::<Option<i64>>(&row, "revoked_at")?.is_some() => None,
            Some(_) => {
                execute(
                    &tx,
                    "UPDATE tokens SET bootstrap = TRUE WHERE hash = $1 \
                     AND tenant_id IS NULL AND role = 'operator'",
                    &[&token.hash],
                )
                .await
                .map_err(pg)?;
                Some(false)
            }
            None => {
                execute(
                    &tx,
                    "INSERT INTO tokens (id, tenant_id, name, role, person_id, hash, created_at, bootstrap) \
                     VALUES ($1, NULL, $2, 'operator', NULL, $3, $4, TRUE)",
                    &[&token.id.to_string(), &token.name, &token.hash, &now],
                )
                .await
                .map_err(pg)?;
                Some(true)
            }
        };
        // Any other bootstrap token is no longer the configured one, even
        // when the configured value is itself revoked.
        let replaced = execute(
            &tx,
            "UPDATE tokens SET revoked_at = $2 WHERE bootstrap \
             AND revoked_at IS NULL AND hash <> $1",
            &[&token.hash, &now],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(match created {
            Some(created) => BootstrapOutcome::Installed { created, replaced },
            None => BootstrapOutcome::Revoked { replaced },
        })
    }

    async fn create_person(&self, tenant_id: TenantId, p: Person) -> Result<Person> {
        let c = client(&self.pool).await?;
        let statement = c
            .prepare_cached(&format!(
                "INSERT INTO persons (id, tenant_id, name, email, role, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {PERSON_COLUMNS}"
            ))
            .await
            .map_err(pg)?;
        let row = c
            .query_one(
                &statement,
                &[
                    &p.id.to_string(),
                    &tenant_id.to_string(),
                    &p.name,
                    &p.email.as_ref(),
                    &p.role.as_str(),
                    &p.created_at,
                ],
            )
            .await
            .map_err(unique("a person with this e-mail address exists"))?;
        person(&row)
    }

    async fn person(&self, tenant_id: TenantId, person_id: PersonId) -> Result<Person> {
        let c = client(&self.pool).await?;
        load_person(&c, tenant_id, person_id, Lock::None).await
    }

    async fn list_persons(&self, tenant_id: TenantId) -> Result<Vec<Person>> {
        let c = client(&self.pool).await?;
        // SQLite walks its (tenant_id, email) index and sorts stably, so ties in
        // time come by e-mail address there; the same order is asked for here.
        query(
            &c,
            &format!(
                "SELECT {PERSON_COLUMNS} FROM persons WHERE tenant_id = $1 ORDER BY created_at, email, id"
            ),
            &[&tenant_id.to_string()],
        )
        .await?
        .iter()
        .map(person)
        .collect()
    }

    async fn delete_person(&self, tenant_id: TenantId, person_id: PersonId) -> Result<()> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        // Locked so that no account is bound to the person between the check and the delete.
        load_person(&tx, tenant_id, person_id, Lock::Update).await?;
        let bound = query_opt(
            &tx,
            "SELECT username FROM smtp_accounts WHERE person_id = $1 AND tenant_id = $2 LIMIT 1",
            &[&person_id.to_string(), &tenant_id.to_string()],
        )
        .await?;
        if let Some(row) = bound {
            let username: String = get(&row, "username")?;
            return Err(StoreError::Conflict(format!(
                "the SMTP account {username:?} is bound to this person; delete it or bind it to another person first"
            )));
        }
        execute(
            &tx,
            "DELETE FROM persons WHERE id = $1 AND tenant_id = $2",
            &[&person_id.to_string(), &tenant_id.to_string()],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn set_operator_password(
        &self,
        email: EmailAddress,
        password_hash: String,
    ) -> Result<()> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        let email = email.as_ref().to_lowercase();
        execute(
            &tx,
            "INSERT INTO operators (id, email, password_hash, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (email) DO UPDATE SET password_hash = excluded.password_hash, \
             updated_at = excluded.updated_at",
            &[
                &uuid::Uuid::now_v7().to_string(),
                &email,
                &password_hash,
                &now_ms(),
            ],
        )
        .await
        .map_err(pg)?;
        execute(
            &tx,
            "DELETE FROM sessions WHERE operator_email = $1",
            &[&email],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn set_person_password(
        &self,
        tenant_id: TenantId,
        person_id: PersonId,
        password_hash: String,
    ) -> Result<()> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        load_person(&tx, tenant_id, person_id, Lock::Update).await?;
        let person = person_id.to_string();
        execute(
            &tx,
            "UPDATE persons SET password_hash = $1 WHERE id = $2",
            &[&password_hash, &person],
        )
        .await
        .map_err(pg)?;
        execute(&tx, "DELETE FROM sessions WHERE person_id = $1", &[&person])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn credentials(&self, email: &str) -> Result<Vec<Credential>> {
        let email = email.trim().to_lowercase();
        let c = client(&self.pool).await?;
        let mut found = Vec::new();
        for row in query(
            &c,
            "SELECT email, password_hash FROM operators WHERE email = $1",
            &[&email],
        )
        .await?
        {
            found.push(Credential {
                operator_email: Some(get(&row, "email")?),
                person: None,
                password_hash: get(&row, "password_hash")?,
            });
        }
        for row in query(
            &c,
            "SELECT p.id, p.tenant_id, p.name, p.email, p.role, p.created_at, p.password_hash \
             FROM persons p JOIN tenants t ON t.id = p.tenant_id \
             WHERE lower(p.email) = $1 AND p.password_hash IS NOT NULL \
             ORDER BY t.created_at, t.id",
            &[&email],
        )
        .await?
        {
            found.push(Credential {
                operator_email: None,
                person: Some(person(&row)?),
                password_hash: get(&row, "password_hash")?,
            });
        }
        Ok(found)
    }

    async fn create_session(&self, session: NewSession) -> Result<()> {
        let c = client(&self.pool).await?;
        execute(
            &c,
            "DELETE FROM sessions WHERE expires_at < $1",
            &[&session.created_at],
        )
        .await
        .map_err(pg)?;
        let (operator, person) = match &session.subject {
            SessionSubject::Operator(email) => (Some(email.to_lowercase()), None),
            SessionSubject::Person(id) => (None, Some(id.to_string())),
        };
        execute(
            &c,
            "INSERT INTO sessions (hash, id, operator_email, person_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &session.hash,
                &session.id.to_string(),
                &operator,
                &person,
                &session.created_at,
                &session.expires_at,
            ],
        )
        .await
        .map_err(pg)
        .map(drop)
    }

    async fn session_by_hash(&self, hash: &str, now: i64) -> Result<Option<Session>> {
        let c = client(&self.pool).await?;
        let Some(row) = query_opt(
            &c,
            "SELECT id, operator_email, person_id, created_at, expires_at \
             FROM sessions WHERE hash = $1 AND expires_at >= $2",
            &[&hash, &now],
        )
        .await?
        else {
            return Ok(None);
        };
        let person_id: Option<String> = get(&row, "person_id")?;
        let person = match person_id {
            Some(pid) => {
                let found = query_opt(
                    &c,
                    &format!("SELECT {PERSON_COLUMNS} FROM persons WHERE id = $1"),
                    &[&pid],
                )
                .await?
                .ok_or(StoreError::NotFound)?;
                Some(person(&found)?)
            }
            None => None,
        };
        Ok(Some(Session {
            id: id(get(&row, "id")?)?,
            operator_email: get(&row, "operator_email")?,
            person,
            created_at: get(&row, "created_at")?,
            expires_at: get(&row, "expires_at")?,
        }))
    }

    async fn delete_session(&self, hash: &str) -> Result<()> {
        let c = client(&self.pool).await?;
        execute(&c, "DELETE FROM sessions WHERE hash = $1", &[&hash])
            .await
            .map_err(pg)
            .map(drop)
    }

    async fn audit(&self, entry: AuditEntry) -> Result<()> {
        let c = client(&self.pool).await?;
        execute(
            &c,
            "INSERT INTO audit (tenant_id, at, actor, token_id, remote_addr, action, object_id, details) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &entry.tenant_id.map(|t| t.to_string()),
                &entry.at,
                &entry.actor,
                &entry.token_id.map(|t| t.to_string()),
                &entry.remote_addr,
                &entry.action,
                &entry.object_id,
                &entry.details.to_string(),
            ],
        )
        .await
        .map_err(pg)
        .map(drop)
    }

    async fn list_audit(&self, tenant_id: TenantId, limit: u32) -> Result<Vec<AuditEntry>> {
        let c = client(&self.pool).await?;
        query(
            &c,
            "SELECT tenant_id, at, actor, token_id, remote_addr, action, object_id, details FROM audit \
             WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2",
            &[&tenant_id.to_string(), &i64::from(limit)],
        )
        .await?
        .iter()
        .map(|r| {
            let details: String = get(r, "details")?;
            Ok(AuditEntry {
                tenant_id: opt_id(get(r, "tenant_id")?)?,
                at: get(r, "at")?,
                actor: get(r, "actor")?,
                token_id: opt_id(get(r, "token_id")?)?,
                remote_addr: get(r, "remote_addr")?,
                action: get(r, "action")?,
                object_id: get(r, "object_id")?,
                details: stored("audit details", serde_json::from_str(&details))?,
            })
        })
        .collect()
    }

    async fn reseal_secrets(&self, reseal: crate::Resealer) -> Result<usize> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        // No account may be created or changed while its neighbours are being
        // re-sealed: the count returned must cover every stored secret.
        tx.batch_execute("LOCK TABLE smtp_accounts IN EXCLUSIVE MODE")
            .await
            .map_err(pg)?;
        let sealed = query(
            &tx,
            "SELECT id, sealed_secret FROM smtp_accounts WHERE sealed_secret IS NOT NULL ORDER BY id",
            &[],
        )
        .await?;
        for row in &sealed {
            let account_id: String = get(row, "id")?;
            let value: String = get(row, "sealed_secret")?;
            let resealed = reseal(&value, &account_id).map_err(|e| {
                StoreError::Corrupt(format!("the secret of account {account_id}: {e}"))
            })?;
            execute(
                &tx,
                "UPDATE smtp_accounts SET sealed_secret = $1 WHERE id = $2",
                &[&resealed, &account_id],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        // Unlike SQLite with secure_delete and a checkpoint, PostgreSQL keeps
        // the replaced ciphertexts in dead row versions and its WAL until
        // vacuum and recycling remove them; they are sealed with the old key,
        // which the operator retires after the rotation.
        Ok(sealed.len())
    }

    async fn create_server(&self, tenant_id: TenantId, s: ServerSettings) -> Result<SmtpServer> {
        let c = client(&self.pool).await?;
        let now = now_ms();
        let statement = c
            .prepare_cached(&format!(
                "INSERT INTO smtp_servers (id, tenant_id, name, host, port, security, requires_auth, \
                 tls_verify, tls_ca_pem, tls_server_name, helo_name, max_connections, \
                 max_messages_per_connection, idle_timeout_secs, rate_limit_per_minute, \
                 command_timeout_secs, created_at, updated_at, allow_plaintext_auth) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17, $18) \
                 RETURNING {SERVER_COLUMNS}"
            ))
            .await
            .map_err(pg)?;
        let row = c
            .query_one(
                &statement,
                &[
                    &ServerId::new().to_string(),
                    &tenant_id.to_string(),
                    &s.name,
                    &s.host.as_ref(),
                    &i32::from(s.port.get()),
                    &s.security.as_str(),
                    &s.requires_auth,
                    &s.tls_verify,
                    &s.tls_ca_pem,
                    &s.tls_server_name,
                    &s.helo_name,
                    &i64::from(s.max_connections),
                    &i64::from(s.max_messages_per_connection),
                    &i64::from(s.idle_timeout_secs),
                    &s.rate_limit_per_minute.map(i64::from),
                    &s.command_timeout_secs.map(i64::from),
                    &now,
                    &s.allow_plaintext_auth,
                ],
            )
            .await
            .map_err(unique("an SMTP server with this name exists"))?;
        server(&row)
    }

    async fn server(&self, tenant_id: TenantId, server_id: ServerId) -> Result<SmtpServer> {
        let c = client(&self.pool).await?;
        load_server(&c, tenant_id, server_id, Lock::None).await
    }

    async fn list_servers(&self, tenant_id: TenantId) -> Result<Vec<SmtpServer>> {
        let c = client(&self.pool).await?;
        // Ties in time come by name, as SQLite gives them from its (tenant_id, name) index.
        query(
            &c,
            &format!(
                "SELECT {SERVER_COLUMNS} FROM smtp_servers WHERE tenant_id = $1 ORDER BY created_at, name"
            ),
            &[&tenant_id.to_string()],
        )
        .await?
        .iter()
        .map(server)
        .collect()
    }

    async fn update_server(
        &self,
        tenant_id: TenantId,
        server_id: ServerId,
        s: ServerSettings,
    ) -> Result<SmtpServer> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        // Locked so that two updates cannot both compare against the same old destination.
        let old = load_server(&tx, tenant_id, server_id, Lock::Update)
            .await?
            .settings;
        let statement = tx
            .prepare_cached(&format!(
                "UPDATE smtp_servers SET name = $1, host = $2, port = $3, security = $4, requires_auth = $5, \
                 tls_verify = $6, tls_ca_pem = $7, tls_server_name = $8, helo_name = $9, \
                 max_connections = $10, max_messages_per_connection = $11, idle_timeout_secs = $12, \
                 rate_limit_per_minute = $13, command_timeout_secs = $14, updated_at = $15, \
                 allow_plaintext_auth = $18 \
                 WHERE id = $16 AND tenant_id = $17 RETURNING {SERVER_COLUMNS}"
            ))
            .await
            .map_err(pg)?;
        let row = tx
            .query_one(
                &statement,
                &[
                    &s.name,
                    &s.host.as_ref(),
                    &i32::from(s.port.get()),
                    &s.security.as_str(),
                    &s.requires_auth,
                    &s.tls_verify,
                    &s.tls_ca_pem,
                    &s.tls_server_name,
                    &s.helo_name,
                    &i64::from(s.max_connections),
                    &i64::from(s.max_messages_per_connection),
                    &i64::from(s.idle_timeout_secs),
                    &s.rate_limit_per_minute.map(i64::from),
                    &s.command_timeout_secs.map(i64::from),
                    &now_ms(),
                    &server_id.to_string(),
                    &tenant_id.to_string(),
                    &s.allow_plaintext_auth,
                ],
            )
            .await
            .map_err(unique("an SMTP server with this name exists"))?;
        let updated = server(&row)?;
        // A stored password must never follow the server entry to a new
        // destination or to weaker trust (the rule is `change_clears_secrets`).
        if old.change_clears_secrets(&s) {
            execute(
                &tx,
                "UPDATE smtp_accounts SET sealed_secret = NULL WHERE server_id = $1 AND tenant_id = $2",
                &[&server_id.to_string(), &tenant_id.to_string()],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(updated)
    }

    async fn delete_server(&self, tenant_id: TenantId, server_id: ServerId) -> Result<()> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        // Locked so that no provider starts using the server between the check
        // and the delete: creating one takes a key-share lock on it first.
        load_server(&tx, tenant_id, server_id, Lock::Update).await?;
        let user = query_opt(
            &tx,
            "SELECT name FROM providers WHERE smtp_server_id = $1 AND tenant_id = $2 LIMIT 1",
            &[&server_id.to_string(), &tenant_id.to_string()],
        )
        .await?;
        if let Some(row) = user {
            let name: String = get(&row, "name")?;
            return Err(StoreError::Conflict(format!(
                "the SMTP server is used by the provider {name:?}"
            )));
        }
        execute(
            &tx,
            "DELETE FROM smtp_servers WHERE id = $1 AND tenant_id = $2",
            &[&server_id.to_string(), &tenant_id.to_string()],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn create_account(&self, tenant_id: TenantId, a: NewAccount) -> Result<SmtpAccount> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        load_server(&tx, tenant_id, a.server_id, Lock::KeyShare).await?;
        if let Some(person_id) = a.person_id {
            if matches!(
                load_person(&tx, tenant_id, person_id, Lock::KeyShare).await,
                Err(StoreError::NotFound)
            ) {
                return Err(StoreError::Invalid(
                    Invalid::new("must name a person of this tenant").at("person_id"),
                ));
            }
        }
        let statement = tx
            .prepare_cached(&format!(
                "INSERT INTO smtp_accounts (id, tenant_id, server_id, username, mechanism, sealed_secret, \
                 oauth2_token_url, oauth2_client_id, oauth2_scope, person_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {ACCOUNT_COLUMNS}"
            ))
            .await
            .map_err(pg)?;
        let row = tx
            .query_one(
                &statement,
                &[
                    &a.id.to_string(),
                    &tenant_id.to_string(),
                    &a.server_id.to_string(),
                    &a.username,
                    &a.mechanism.as_str(),
                    &a.sealed_secret,
                    &a.oauth2.as_ref().map(|o| o.token_url.as_str()),
                    &a.oauth2.as_ref().map(|o| o.client_id.as_str()),
                    &a.oauth2.as_ref().and_then(|o| o.scope.as_deref()),
                    &a.person_id.map(|p| p.to_string()),
                    &now_ms(),
                ],
            )
            .await
            .map_err(unique("an account with this username exists on the server"))?;
        let created = account(&row)?;
        tx.commit().await.map_err(pg)?;
        Ok(created)
    }

    async fn account(
        &self,
        tenant_id: TenantId,
        server_id: ServerId,
        account_id: AccountId,
    ) -> Result<SmtpAccount> {
        let c = client(&self.pool).await?;
        load_account(&c, tenant_id, server_id, account_id, Lock::None).await
    }

    async fn list_accounts(
        &self,
        tenant_id: TenantId,
        server_id: ServerId,
    ) -> Result<Vec<SmtpAccount>> {
        let c = client(&self.pool).await?;
        load_server(&c, tenant_id, server_id, Lock::None).await?;
        // Ties in time come by username, as SQLite gives them from its (server_id, username) index.
        query(
            &c,
            &format!(
                "SELECT {ACCOUNT_COLUMNS} FROM smtp_accounts WHERE server_id = $1 AND tenant_id = $2 \
                 ORDER BY created_at, username"
            ),
            &[&server_id.to_string(), &tenant_id.to_string()],
        )
        .await?
        .iter()
        .map(account)
        .collect()
    }

    async fn delete_account(
        &self,
        tenant_id: TenantId,
        server_id: ServerId,
        account_id: AccountId,
    ) -> Result<()> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        load_account(&tx, tenant_id, server_id, account_id, Lock::Update).await?;
        let user = query_opt(
            &tx,
            "SELECT name FROM providers WHERE account_id = $1 AND tenant_id = $2 LIMIT 1",
            &[&account_id.to_string(), &tenant_id.to_string()],
        )
        .await?;
        if let Some(row) = user {
            let name: String = get(&row, "name")?;
            return Err(StoreError::Conflict(format!(
                "the account is used by the provider {name:?}"
            )));
        }
        execute(
            &tx,
            "DELETE FROM smtp_accounts WHERE id = $1 AND tenant_id = $2",
            &[&account_id.to_string(), &tenant_id.to_string()],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn create_provider(&self, tenant_id: TenantId, s: ProviderSettings) -> Result<Provider> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        check_provider_references(&tx, tenant_id, &s).await?;
        let now = now_ms();
        let statement = tx
            .prepare_cached(&format!(
                "INSERT INTO providers (id, tenant_id, name, smtp_server_id, account_id, from_address, from_name, \
                 reply_to, fallback_recipient, sender_policy, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) RETURNING {PROVIDER_COLUMNS}"
            ))
            .await
            .map_err(pg)?;
        let row = tx
            .query_one(
                &statement,
                &[
                    &ProviderId::new().to_string(),
                    &tenant_id.to_string(),
                    &s.name,
                    &s.smtp_server_id.to_string(),
                    &s.account_id.map(|a| a.to_string()),
                    &s.from_address.as_ref(),
                    &s.from_name.as_ref().map(AsRef::<str>::as_ref),
                    &s.reply_to.as_ref().map(ToString::to_string),
                    &s.fallback_recipient.as_ref().map(AsRef::<str>::as_ref),
                    &s.sender_policy.as_str(),
                    &now,
                ],
            )
            .await
            .map_err(unique("a provider with this name exists"))?;
        let created = provider(&row)?;
        tx.commit().await.map_err(pg)?;
        Ok(created)
    }

    async fn provider(&self, tenant_id: TenantId, provider_id: ProviderId) -> Result<Provider> {
        let c = client(&self.pool).await?;
        load_provider(&c, tenant_id, provider_id, Lock::None).await
    }

    async fn list_providers(&self, tenant_id: TenantId) -> Result<Vec<Provider>> {
        let c = client(&self.pool).await?;
        // Ties in time come by name, as SQLite gives them from its (tenant_id, name) index.
        query(
            &c,
            &format!(
                "SELECT {PROVIDER_COLUMNS} FROM providers WHERE tenant_id = $1 ORDER BY created_at, name"
            ),
            &[&tenant_id.to_string()],
        )
        .await?
        .iter()
        .map(provider)
        .collect()
    }

    async fn update_provider(
        &self,
        tenant_id: TenantId,
        provider_id: ProviderId,
        s: ProviderSettings,
    ) -> Result<Provider> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        load_provider(&tx, tenant_id, provider_id, Lock::Update).await?;
        check_provider_references(&tx, tenant_id, &s).await?;
        let statement = tx
            .prepare_cached(&format!(
                "UPDATE providers SET name = $1, smtp_server_id = $2, account_id = $3, from_address = $4, \
                 from_name = $5, reply_to = $6, fallback_recipient = $7, sender_policy = $8, updated_at = $9 \
                 WHERE id = $10 AND tenant_id = $11 RETURNING {PROVIDER_COLUMNS}"
            ))
            .await
            .map_err(pg)?;
        let row = tx
            .query_one(
                &statement,
                &[
                    &s.name,
                    &s.smtp_server_id.to_string(),
                    &s.account_id.map(|a| a.to_string()),
                    &s.from_address.as_ref(),
                    &s.from_name.as_ref().map(AsRef::<str>::as_ref),
                    &s.reply_to.as_ref().map(ToString::to_string),
                    &s.fallback_recipient.as_ref().map(AsRef::<str>::as_ref),
                    &s.sender_policy.as_str(),
                    &now_ms(),
                    &provider_id.to_string(),
                    &tenant_id.to_string(),
                ],
            )
            .await
            .map_err(unique("a provider with this name exists"))?;
        let updated = provider(&row)?;
        tx.commit().await.map_err(pg)?;
        Ok(updated)
    }

    async fn delete_provider(&self, tenant_id: TenantId, provider_id: ProviderId) -> Result<()> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        // The tenant's row is locked first, as set_active_provider locks it, so
        // the provider cannot become active between the check and the delete.
        let tenant = load_tenant(&tx, tenant_id, Lock::Update).await;
        load_provider(&tx, tenant_id, provider_id, Lock::None).await?;
        if tenant?.notification_provider_id == Some(provider_id) {
            return Err(StoreError::Conflict(
                "the provider is the tenant's active provider; choose another in the tenant properties first".into(),
            ));
        }
        execute(
            &tx,
            "DELETE FROM providers WHERE id = $1 AND tenant_id = $2",
            &[&provider_id.to_string(), &tenant_id.to_string()],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn active_provider(&self, tenant_id: TenantId) -> Result<Option<ProviderConfig>> {
        let mut c = client(&self.pool).await?;
        // One snapshot for the four reads, so a provider deleted meanwhile
        // cannot turn into an error between reading the tenant and the provider.
        let tx = c
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let Some(provider_id) = load_tenant(&tx, tenant_id, Lock::None)
            .await?
            .notification_provider_id
        else {
            return Ok(None);
        };
        let provider = load_provider(&tx, tenant_id, provider_id, Lock::None).await?;
        let server =
            load_server(&tx, tenant_id, provider.settings.smtp_server_id, Lock::None).await?;
        let account = match provider.settings.account_id {
            Some(a) => Some(load_account(&tx, tenant_id, server.id, a, Lock::None).await?),
            None => None,
        };
        tx.commit().await.map_err(pg)?;
        Ok(Some(ProviderConfig {
            provider,
            server,
            account,
        }))
    }

    async fn submit(&self, m: NewMessage) -> Result<Submitted> {
        let result = async {
            let mut c = client(&self.pool).await?;
            // Another node may be storing the same idempotency key right now: the
            // insert then waits for that transaction. If it commits, the insert
            // does nothing and the earlier message is read back (each statement
            // sees what was committed before it began); if it rolls back, the
            // insert goes ahead. Only a message deleted between the insert and the
            // read leaves nothing to read, and then the insert is tried again.
            for _ in 0..3 {
                let tx = c.transaction().await.map_err(pg)?;
                let submitted = if insert_message(&tx, &m).await? {
                    insert_recipients(&tx, &m).await?;
                    count_tests(&tx, &m).await?;
                    count_queued(&tx, &[&m]).await?;
                    Submitted {
                        id: m.id,
                        status: RecipientStatus::Queued,
                        duplicate: false,
                    }
                } else {
                    match stored_earlier(&tx, &m).await? {
                        Some(earlier) => earlier,
                        None => continue,
                    }
                };
                tx.commit().await.map_err(pg)?;
                if !submitted.duplicate {
                    self.announce_mail();
                }
                return Ok(submitted);
            }
            Err(vanishing())
        }
        .await;
        self.writes.note(&result);
        result
    }

    async fn submit_batch(&self, messages: Vec<NewMessage>) -> Result<Vec<Submitted>> {
        let result = async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            // The statements are sent without waiting for each other's answers
            // (tokio-postgres pipelines what is polled at once on one connection),
            // and run in order: every message row, then the recipients of the new ones.
            let inserted =
                futures_util::future::try_join_all(messages.iter().map(|m| insert_message(&tx, m)))
                    .await?;
            let new = messages.iter().zip(&inserted).filter(|(_, new)| **new);
            futures_util::future::try_join_all(new.map(|(m, _)| insert_recipients(&tx, m))).await?;
            let mut submitted = Vec::with_capacity(messages.len());
            for (m, new) in messages.iter().zip(inserted) {
                submitted.push(if new {
                    Submitted {
                        id: m.id,
                        status: RecipientStatus::Queued,
                        duplicate: false,
                    }
                } else {
                    stored_earlier(&tx, m).await?.ok_or_else(vanishing)?
                });
            }
            let new: Vec<&NewMessage> = messages
                .iter()
                .zip(&submitted)
                .filter(|(_, s)| !s.duplicate)
                .map(|(m, _)| m)
                .collect();
            for m in &new {
                count_tests(&tx, m).await?;
            }
            count_queued(&tx, &new).await?;
            tx.commit().await.map_err(pg)?;
            if submitted.iter().any(|s| !s.duplicate) {
                self.announce_mail();
            }
            Ok(submitted)
        }
        .await;
        self.writes.note(&result);
        result
    }

    async fn message(&self, tenant_id: TenantId, message_id: MessageId) -> Result<MessageView> {
        let (mid, tid) = (message_id.to_string(), tenant_id.to_string());
        let mut c = client(&self.pool).await?;
        // One snapshot, so the recipients and their attempts agree with each other.
        let tx = c
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let row = query_opt(
            &tx,
            "SELECT subject, created_at, idempotency_key, used_fallback, on_behalf_name, on_behalf_email, \
             test_provider_id FROM messages WHERE id = $1 AND tenant_id = $2",
            &[&mid, &tid],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
        let rows = query(
            &tx,
            "SELECT id, address, kind, status, due_at FROM recipients \
             WHERE message_id = $1 AND tenant_id = $2 ORDER BY position",
            &[&mid, &tid],
        )
        .await?;
        let attempt_rows = query(
            &tx,
            "SELECT a.recipient_id, a.at, a.node, a.server, a.outcome, a.step, a.code, a.enhanced_code, \
             a.response, a.duration_ms, a.remote_addr, a.tls_version, a.tls_cipher, a.provider_id, \
             a.config_version, a.sender_policy, a.diagnosis \
             FROM attempts a JOIN recipients r ON r.id = a.recipient_id \
             WHERE r.message_id = $1 AND r.tenant_id = $2 ORDER BY a.id",
            &[&mid, &tid],
        )
        .await?;
        tx.commit().await.map_err(pg)?;
        let mut attempts: HashMap<String, Vec<AttemptRecord>> = HashMap::new();
        for r in &attempt_rows {
            attempts
                .entry(get(r, "recipient_id")?)
                .or_default()
                .push(attempt(r)?);
        }
        let mut recipients = Vec::with_capacity(rows.len());
        for r in &rows {
            let rid: String = get(r, "id")?;
            let st = status(&get::<String>(r, "status")?)?;
            let due_at: Option<i64> = get(r, "due_at")?;
            recipients.push(RecipientView {
                attempts: attempts.remove(&rid).unwrap_or_default(),
                id: id(rid)?,
                address: get(r, "address")?,
                kind: RecipientKind::from_stored(&get::<String>(r, "kind")?),
                status: st,
                next_attempt_at: if st.is_final() { None } else { due_at },
            });
        }
        Ok(MessageView {
            id: message_id,
            status: message_status(recipients.iter().map(|r| r.status)),
            subject: get(&row, "subject")?,
            created_at: get(&row, "created_at")?,
            idempotency_key: get(&row, "idempotency_key")?,
            used_fallback: get(&row, "used_fallback")?,
            on_behalf_of: on_behalf_of(&row)?,
            test_provider_id: opt_id(get(&row, "test_provider_id")?)?,
            recipients,
        })
    }

    async fn count_messages(&self, tenant_id: TenantId, since: i64) -> Result<MessageCounts> {
        let c = client(&self.pool).await?;
        let rows = query(
            &c,
            &format!(
                "SELECT rank, count(*) AS n FROM (SELECT min({STATUS_RANK}) AS rank FROM messages m \
                 JOIN recipients r ON r.message_id = m.id \
                 WHERE m.tenant_id = $1 AND m.created_at >= $2 GROUP BY m.id) AS per_message GROUP BY rank"
            ),
            &[&tenant_id.to_string(), &since],
        )
        .await?;
        let mut counts = MessageCounts::default();
        for row in &rows {
            let rank: i32 = get(row, "rank")?;
            let n: i64 = get(row, "n")?;
            counts.add(i64::from(rank), n as u64);
        }
        Ok(counts)
    }

    async fn search_messages(
        &self,
        tenant_id: TenantId,
        q: MessageQuery,
    ) -> Result<Vec<MessageSummary>> {
        let c = client(&self.pool).await?;
        let recipient = q.recipient.map(|r| r.trim().to_lowercase());
        query(
            &c,
            "SELECT m.id, m.subject, m.created_at, array_agg(r.status) AS statuses FROM messages m \
             JOIN recipients r ON r.message_id = m.id AND r.tenant_id = m.tenant_id \
             WHERE m.tenant_id = $1 \
             AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM recipients x \
                  WHERE x.message_id = m.id AND x.tenant_id = m.tenant_id AND lower(x.address) = $2)) \
             AND ($3::bigint IS NULL OR m.created_at >= $3) AND ($4::bigint IS NULL OR m.created_at < $4) \
             GROUP BY m.id ORDER BY m.created_at DESC, m.id DESC LIMIT $5",
            &[
                &tenant_id.to_string(),
                &recipient,
                &q.since,
                &q.until,
                &i64::from(q.limit),
            ],
        )
        .await?
        .iter()
        .map(|r| {
            let statuses = get::<Vec<String>>(r, "statuses")?
                .iter()
                .map(|s| status(s))
                .collect::<Result<Vec<_>>>()?;
            Ok(MessageSummary {
                id: id(get(r, "id")?)?,
                status: message_status(statuses),
                subject: get(r, "subject")?,
                created_at: get(r, "created_at")?,
            })
        })
        .collect()
    }

    async fn message_contents(&self, ids: &[MessageId]) -> Result<Vec<MessageContent>> {
        let wanted: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let c = client(&self.pool).await?;
        let rows = query(
            &c,
            "SELECT id, tenant_id, created_at, subject, text_body, html_body, reply_to, headers, \
             header_to, header_cc, on_behalf_name, on_behalf_email, test_provider_id \
             FROM messages WHERE id = ANY($1)",
            &[&wanted],
        )
        .await?;
        let mut found = HashMap::with_capacity(rows.len());
        for r in &rows {
            let reply_to: Option<String> = get(r, "reply_to")?;
            let subject: String = get(r, "subject")?;
            let content = MessageContent {
                id: id(get(r, "id")?)?,
                tenant_id: id(get(r, "tenant_id")?)?,
                created_at: get(r, "created_at")?,
                subject: stored("subject", Subject::from_stored(&subject))?,
                text: get(r, "text_body")?,
                html: get(r, "html_body")?,
                reply_to: reply_to.map(reply_to_mailbox).transpose()?,
                headers: headers_from_json(json(r, "headers")?)?,
                to: mailboxes(json(r, "header_to")?)?,
                cc: mailboxes(json(r, "header_cc")?)?,
                on_behalf_of: on_behalf_of(r)?,
                test_provider: opt_id(get(r, "test_provider_id")?)?,
            };
            found.insert(content.id, content);
        }
        // In the order asked for, skipping messages that do not exist, as SQLite answers.
        Ok(ids.iter().filter_map(|m| found.get(m).cloned()).collect())
    }

    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Claimed>> {
        let result = async {
            let lease_until = req.now + req.lease_ms;
            let c = client(&self.pool).await?;
            let start = self.claim_cursor.lock().expect("claim cursor lock").clone();
            let (tenants, stopped) = tenants_due(&c, &req, start).await?;
            *self.claim_cursor.lock().expect("claim cursor lock") = stopped;
            if tenants.is_empty() {
                return Ok(Vec::new());
            }
            let share = crate::claim_share(req.limit, tenants.len());
            let mut left = req.limit;
            let (mut names, mut counts) = (Vec::new(), Vec::new());
            for (tenant, room) in &tenants {
                let k = share.min(*room).min(left);
                if k == 0 {
                    break;
                }
                left -= k;
                names.push(tenant.clone());
                counts.push(i64::from(k));
            }
            // SKIP LOCKED lets every node claim at once: rows another claim is
            // taking are passed over instead of waited for, and a row whose claim
            // committed after this statement began is checked again against the
            // conditions (it is 'sending' with a future due_at then, so it is left).
            // The selection is a materialised CTE so that it runs exactly once,
            // whatever plan the update gets: a second run could lock other rows.
            // Each tenant's part is two ranges of `recipients_tenant_due`: its
            // test messages, then the rest by due time.
            let rows = query(
                &c,
                &format!(
                    "WITH want AS (SELECT * FROM unnest($5::text[], $6::bigint[]) AS w(tenant_id, k)), \
                     due AS MATERIALIZED ( \
                         SELECT x.id FROM want w CROSS JOIN LATERAL ( \
                             SELECT id FROM (SELECT id FROM recipients \
                              WHERE tenant_id = w.tenant_id AND {UNFINISHED} AND priority > 0 AND due_at <= $3 \
                              ORDER BY priority DESC, due_at LIMIT w.k FOR UPDATE SKIP LOCKED) tests \
                             UNION ALL \
                             SELECT id FROM (SELECT id FROM recipients \
                              WHERE tenant_id = w.tenant_id AND {UNFINISHED} AND priority = 0 AND due_at <= $3 \
                              ORDER BY due_at LIMIT w.k FOR UPDATE SKIP LOCKED) mail \
                             LIMIT w.k) x) \
                     UPDATE recipients SET status = 'sending', due_at = $1, lease_owner = $2, \
                     lease_incarnation = $4, lease_token = lease_token + 1, attempts = attempts + 1 \
                     WHERE id IN (SELECT id FROM due) \
                     RETURNING id, message_id, tenant_id, address, lease_token, attempts"
                ),
                &[&lease_until, &req.node, &req.now, &req.incarnation, &names, &counts],
            )
            .await?;
            let mut claimed = rows
                .iter()
                .map(|r| {
                    Ok(Claimed {
                        recipient: id(get(r, "id")?)?,
                        message: id(get(r, "message_id")?)?,
                        tenant: id(get(r, "tenant_id")?)?,
                        address: address(get(r, "address")?)?,
                        lease_token: get(r, "lease_token")?,
                        lease_until,
                        attempt: stored("attempts", u32::try_from(get::<i32>(r, "attempts")?))?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            // Tenant by tenant, in the order they were served.
            let order: HashMap<String, usize> =
                names.into_iter().enumerate().map(|(i, t)| (t, i)).collect();
            claimed.sort_by_key(|c| order.get(&c.tenant.to_string()).copied());
            Ok(claimed)
        }
        .await;
        self.writes.note(&result);
        result
    }

    async fn complete(
        &self,
        outcomes: Vec<Outcome>,
        captures: Vec<NewCapture>,
    ) -> Result<Vec<bool>> {
        let result = async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            // Rows are updated in id order, whatever order the outcomes come in,
            // so that two completions over the same rows cannot deadlock. The
            // statements are pipelined: sent at once, run in the order sent.
            let mut order: Vec<usize> = (0..outcomes.len()).collect();
            order.sort_by_key(|&i| outcomes[i].recipient);
            let updates = order.iter().map(|&i| {
                let o = &outcomes[i];
                let (st, due_at) = match o.next {
                    NextState::Sent => ("sent", None),
                    NextState::Failed => ("failed", None),
                    NextState::Deferred { until } => ("deferred", Some(until)),
                };
                let tx = &tx;
                async move {
                    // The fencing check: a lease taken over by another claim has a
                    // newer token. A claim running concurrently holds the row, so
                    // this waits for it and then sees the newer token.
                    let changed = query_opt(
                        tx,
                        "UPDATE recipients SET status = $1, due_at = $2, lease_owner = NULL, \
                         lease_incarnation = NULL WHERE id = $3 AND lease_token = $4 AND status = 'sending' \
                         RETURNING message_id, tenant_id",
                        &[&st, &due_at, &o.recipient.to_string(), &o.lease_token],
                    )
                    .await?;
                    changed
                        .map(|row| {
                            Ok((
                                get::<String>(&row, "message_id")?,
                                get::<String>(&row, "tenant_id")?,
                                due_at.is_none(),
                            ))
                        })
                        .transpose()
                }
            });
            let changed = futures_util::future::try_join_all(updates).await?;
            let mut accepted = vec![false; outcomes.len()];
            let mut recorded_messages = HashSet::new();
            // Recipients that reached a final state leave their tenant's queue.
            let mut finished: BTreeMap<String, i64> = BTreeMap::new();
            for (&i, row) in order.iter().zip(changed) {
                accepted[i] = row.is_some();
                if let Some((message, tenant, is_final)) = row {
                    recorded_messages.insert(message);
                    if is_final {
                        *finished.entry(tenant).or_default() += 1;
                    }
                }
            }
            let inserts = outcomes
                .iter()
                .zip(&accepted)
                .filter(|(_, current)| **current)
                .map(|(o, _)| {
                    let a = &o.attempt;
                    let tx = &tx;
                    async move {
                        execute(
                            tx,
                            "INSERT INTO attempts (recipient_id, at, node, server, outcome, step, code, enhanced_code, \
                             response, duration_ms, remote_addr, tls_version, tls_cipher, provider_id, config_version, \
                             sender_policy, diagnosis) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
                            &[
                                &o.recipient.to_string(),
                                &a.at,
                                &text(&a.node),
                                &text(&a.server),
                                &a.outcome.as_str(),
                                &opt_text(&a.step),
                                &a.code.map(i32::from),
                                &opt_text(&a.enhanced_code),
                                &text(&a.response),
                                &a.duration_ms,
                                &opt_text(&a.remote_addr),
                                &opt_text(&a.tls_version),
                                &opt_text(&a.tls_cipher),
                                &a.provider_id.map(|p| p.to_string()),
                                &a.config_version,
                                &opt_text(&a.sender_policy),
                                &a.diagnosis.as_ref().map(|d| d.to_string()),
                            ],
                        )
                        .await
                        .map_err(pg)
                    }
                });
            futures_util::future::try_join_all(inserts).await?;
            for cap in &captures {
                if recorded_messages.contains(&cap.message.to_string()) {
                    execute(
                        &tx,
                        "INSERT INTO captured (message_id, tenant_id, envelope_from, recipients, content, at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                        &[
                            &cap.message.to_string(),
                            &cap.tenant.to_string(),
                            &cap.envelope_from,
                            &Json(&cap.recipients),
                            &cap.content,
                            &cap.at,
                        ],
                    )
                    .await
                    .map_err(pg)?;
                }
            }
            // Last before the commit and in tenant order, as submissions do.
            for (tenant, count) in finished {
                change_queued(&tx, &tenant, -count).await?;
            }
            tx.commit().await.map_err(pg)?;
            Ok(accepted)
        }
        .await;
        self.writes.note(&result);
        result
    }

    async fn release(&self, mut leases: Vec<(RecipientId, i64)>) -> Result<()> {
        let result = async {
            // In id order, like complete, so that the two cannot deadlock.
            leases.sort();
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            let now = now_ms();
            for (rid, token) in leases {
                execute(
                    &tx,
                    "UPDATE recipients SET status = CASE WHEN attempts > 1 THEN 'deferred' ELSE 'queued' END, \
                     attempts = attempts - 1, due_at = $1, lease_owner = NULL, lease_incarnation = NULL \
                     WHERE id = $2 AND lease_token = $3 AND status = 'sending'",
                    &[&now, &rid.to_string(), &token],
                )
                .await
                .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)
        }
        .await;
        self.writes.note(&result);
        result
    }

    async fn release_earlier_incarnations(
        &self,
        node: &str,
        incarnation: &str,
        now: i64,
    ) -> Result<u64> {
        let result = async {
            let c = client(&self.pool).await?;
            // A lease from before incarnations were recorded has none: it is earlier too.
            execute(
                &c,
                &release_crashed("lease_incarnation IS DISTINCT FROM $3"),
                &[&now, &node, &incarnation],
            )
            .await
            .map_err(pg)
        }
        .await;
        self.writes.note(&result);
        result
    }

    async fn release_stale_nodes(&self, stale_before: i64, now: i64) -> Result<Vec<(String, u64)>> {
        let result = async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            // The node rows stay locked until the commit: a node that beats again
            // meanwhile waits, and then records its heartbeat and incarnation anew.
            // Rows another sweep holds are skipped: that sweep releases them.
            let stale = query(
                &tx,
                "SELECT name, incarnation FROM nodes \
                 WHERE heartbeat_at < $1 AND incarnation IS NOT NULL ORDER BY name \
                 FOR UPDATE SKIP LOCKED",
                &[&stale_before],
            )
            .await?;
            let mut released = Vec::with_capacity(stale.len());
            for row in &stale {
                let (name, incarnation): (String, String) =
                    (get(row, "name")?, get(row, "incarnation")?);
                let n = execute(
                    &tx,
                    &release_crashed("lease_incarnation = $3"),
                    &[&now, &name, &incarnation],
                )
                .await
                .map_err(pg)?;
                // Taken over: the next sweep passes this node by, until it beats again.
                execute(
                    &tx,
                    "UPDATE nodes SET incarnation = NULL WHERE name = $1",
                    &[&name],
                )
                .await
                .map_err(pg)?;
                released.push((name, n));
            }
            tx.commit().await.map_err(pg)?;
            Ok(released)
        }
        .await;
        self.writes.note(&result);
        result
    }

    async fn next_due(&self, exclude_tenants: &[TenantId]) -> Result<Option<i64>> {
        let excluded: Vec<String> = exclude_tenants.iter().map(ToString::to_string).collect();
        let c = client(&self.pool).await?;
        if excluded.is_empty() {
            let rows = query(
                &c,
                &format!("SELECT due_at AS due FROM recipients WHERE {UNFINISHED} ORDER BY due_at LIMIT 1"),
                &[],
            )
            .await?;
            return rows.first().map(|r| get(r, "due")).transpose();
        }
        // Tenant by tenant (a walk of `recipients_tenant_due`, each tenant's
        // earliest in each class), so that an excluded tenant's backlog is not walked.
        let rows = query(
            &c,
            &format!(
                "WITH RECURSIVE walk(tenant_id, n) AS ( \
                     (SELECT tenant_id, 1 FROM recipients WHERE {UNFINISHED} ORDER BY tenant_id LIMIT 1) \
                     UNION ALL \
                     SELECT (SELECT r.tenant_id FROM recipients r WHERE r.{UNFINISHED} \
                             AND r.tenant_id > w.tenant_id ORDER BY r.tenant_id LIMIT 1), w.n + 1 \
                     FROM walk w WHERE w.tenant_id IS NOT NULL AND w.n < $2) \
                 SELECT min(least( \
                     (SELECT due_at FROM recipients r WHERE r.tenant_id = w.tenant_id AND r.{UNFINISHED} \
                      AND r.priority = 0 ORDER BY due_at LIMIT 1), \
                     (SELECT due_at FROM recipients r WHERE r.tenant_id = w.tenant_id AND r.{UNFINISHED} \
                      AND r.priority > 0 ORDER BY due_at LIMIT 1))) AS due \
                 FROM walk w WHERE w.tenant_id IS NOT NULL AND NOT (w.tenant_id = ANY($1))"
            ),
            &[&excluded, &((crate::CLAIM_WALK + excluded.len()) as i32)],
        )
        .await?;
        Ok(rows.first().map(|r| get(r, "due")).transpose()?.flatten())
    }

    async fn list_captured(&self, tenant_id: TenantId, limit: u32) -> Result<Vec<Captured>> {
        let c = client(&self.pool).await?;
        query(
            &c,
            "SELECT message_id, at, envelope_from, recipients, content FROM captured \
             WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2",
            &[&tenant_id.to_string(), &i64::from(limit)],
        )
        .await?
        .iter()
        .map(|r| {
            let content: Vec<u8> = get(r, "content")?;
            Ok(Captured {
                message_id: id(get(r, "message_id")?)?,
                captured_at: get(r, "at")?,
                envelope_from: get(r, "envelope_from")?,
                recipients: json(r, "recipients")?,
                content: String::from_utf8_lossy(&content).into_owned(),
            })
        })
        .collect()
    }
}
