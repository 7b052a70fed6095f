//! The PostgreSQL store: many nodes on one database, claims with `SKIP LOCKED`.
//!
//! It behaves exactly like the SQLite store; the conformance suite runs the
//! same tests against both. Where SQLite serialises every write through one
//! writer thread, this store relies on transactions and row locks, and each
//! method says which rows it locks so that concurrent nodes see the same
//! outcomes a single SQLite writer would give.

mod config;
pub(crate) mod db;
mod gateways;
mod group;
mod ingress;
mod listen;
mod queue;
mod schedules;
mod sessions;
mod templates;
mod tenants;
mod webhooks;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool};
use herald_core::status::message_status;
use herald_core::{
    AccountId, EmailAddress, GatewayId, Invalid, Mailbox, MessageId, PersonId, ProviderId,
    RecipientId, RecipientStatus, ServerId, SmtpConnectorId, SmtpCredentialId, Subject, TenantId,
    TenantSlug, TokenId,
};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, Json, ToSql};

use crate::access::AccessCache;
use crate::model::*;
use crate::rows::{
    self, Columns, account, address, attempt, id, opt_id, person, provider, reply_to_mailbox,
    server, status, stored, tenant, token as token_record,
};
use crate::rules;
use crate::sql::{self, TENANT_COLUMNS};
use crate::walk::TenantWalk;
use crate::{
    Configuration, DeliveryStore, Ingress, Queue, Result, Sessions, Store, StoreError, Tenants,
};
use db::{
    client, execute, now_ms, pg, query, query_found, query_map, query_opt, snapshot, unique,
    write_found,
};

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
    /// Single submissions, stored in groups (see [`group`]).
    groups: group::Groups,
    /// The tokens and tenants this node looked up for API requests.
    access: std::sync::Arc<AccessCache>,
    /// Held while the store is open: the statistics task ends without it.
    _open: std::sync::Arc<()>,
}

/// The condition of every unfinished recipient that nodes deliver (not
/// pinned to a gateway), as the partial indexes say it.
const UNFINISHED: &str = "status IN ('queued', 'deferred', 'sending') AND gateway_id IS NULL";

/// The condition of every unfinished recipient pinned to a gateway, as
/// `recipients_gateway_due` says it.
const PINNED: &str = "status IN ('queued', 'deferred', 'sending') AND gateway_id IS NOT NULL";

/// The tenants a claim serves, in turn: from the one after `start` around to
/// it, those with something due and room, up to the claim's limit (see
/// [`DeliveryStore::claim`]); and the last tenant looked at, where the next claim
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
    let mut walk = TenantWalk::new(req, start);
    while let Some(after) = walk.after() {
        let row = query_opt(c, &sql, &[&after, &req.now]).await?;
        let found = row.as_ref().map(|r| get(r, "tenant_id")).transpose()?;
        if let (Some(row), Some((tenant, room))) = (&row, walk.found(found)?) {
            if get(row, "due")? {
                walk.due(tenant, room);
            }
        }
    }
    Ok(walk.finish())
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/dbname`)
    /// and brings its schema up to date. Several nodes may do this at once.
    /// A listener hears other nodes' notifications (LISTEN/NOTIFY).
    pub async fn connect(url: &str) -> Result<PgStore> {
        let pool = db::open(url).await?;
        let (events, _) = tokio::sync::broadcast::channel(1024);
        let access = std::sync::Arc::new(AccessCache::default());
        tokio::spawn(listen::run(url.to_owned(), events.clone(), access.clone()));
        let (new_mail, requests) = tokio::sync::mpsc::channel(1);
        tokio::spawn(notify_new_mail(pool.clone(), requests));
        let open = std::sync::Arc::new(());
        tokio::spawn(gather_missing_statistics(
            pool.clone(),
            std::sync::Arc::downgrade(&open),
        ));
        Ok(PgStore {
            _open: open,
            events,
            new_mail,
            writes: crate::WriteHealth::default(),
            claim_cursor: std::sync::Mutex::default(),
            groups: group::Groups::start(pool.clone()),
            access,
            pool,
        })
    }

    /// Tells every node's worker, after the commit, that there is new mail.
    fn announce_mail(&self) {
        // Full means a NOTIFY is already due to be sent, which will do.
        let _ = self.new_mail.try_send(());
    }

    /// Runs a write to tokens, people or tenants, after which this node
    /// forgets the tokens and tenants it looked up (other nodes hear of it
    /// from the database's triggers, see [`crate::access`]).
    async fn access_write<T>(&self, write: impl Future<Output = Result<T>>) -> Result<T> {
        let result = write.await;
        self.access.forget();
        result
    }

    /// Runs a write and takes note of whether the database took it (see
    /// [`Store::refusing_writes`]).
    async fn noted<T>(&self, write: impl Future<Output = Result<T>>) -> Result<T> {
        let result = write.await;
        self.writes.note(&result);
        result
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

/// How often a node looks for busy tables PostgreSQL has no statistics for.
const STATISTICS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Rows changed in a table never analysed before this node analyses it.
const ANALYZE_AFTER_ROWS: i64 = 1_000;

/// Analyses the tables the claims and submissions read (recipients,
/// messages) when PostgreSQL has never gathered statistics for them
/// and they have grown. Without statistics the planner takes every
/// condition for a row or two, and picked the wrong index for the claim's
/// test messages: a walk of every due recipient, 60 ms a claim with 200,000
/// queued against 2 ms once analysed (BENCHMARKS.md, ninth session).
/// Autovacuum gathers them within its naptime (a minute by default), which
/// a new database under a burst of mail, or one just restored or upgraded
/// (`pg_upgrade` carries no statistics), would spend claiming slowly. Several
/// nodes doing it at once cost a little work twice. The webhook outbox is
/// left to autovacuum: analysed in the middle of a burst, its statistics
/// made event claims slower in one run, not faster. Ends with the store.
async fn gather_missing_statistics(pool: Pool, open: std::sync::Weak<()>) {
    let sql = "SELECT relname::text AS name FROM pg_stat_user_tables \
               WHERE schemaname = current_schema() \
               AND relname IN ('recipients', 'messages') \
               AND last_analyze IS NULL AND last_autoanalyze IS NULL AND n_mod_since_analyze >= $1";
    loop {
        tokio::time::sleep(STATISTICS_EVERY).await;
        if open.strong_count() == 0 {
            return;
        }
        let analysed = async {
            let c = client(&pool).await?;
            for row in query(&c, sql, &[&ANALYZE_AFTER_ROWS]).await? {
                // One of the three names above, never a value from outside.
                let table: String = get(&row, "name")?;
                c.batch_execute(&format!("ANALYZE {table}"))
                    .await
                    .map_err(pg)?;
                tracing::info!(%table, "gathered the table's statistics, which PostgreSQL had none of");
            }
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(error) = analysed {
            tracing::warn!(%error, "could not look for or gather missing table statistics");
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
    /// The row is relied on as it stands: it cannot be changed or deleted meanwhile.
    Share,
}

impl Lock {
    fn clause(self) -> &'static str {
        match self {
            Lock::None => "",
            Lock::Update => " FOR UPDATE",
            Lock::KeyShare => " FOR KEY SHARE",
            Lock::Share => " FOR SHARE",
        }
    }

    /// `statement` with this lock's clause added.
    fn on(self, statement: &str) -> String {
        format!("{statement}{}", self.clause())
    }
}

impl Columns for Row {
    fn text(&self, column: &str) -> Result<String> {
        get(self, column)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        get(self, column)
    }
    /// BIGINT or INTEGER columns alike.
    fn int(&self, column: &str) -> Result<i64> {
        self.try_get::<_, i64>(column)
            .or_else(|_| self.try_get::<_, i32>(column).map(i64::from))
            .map_err(pg)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        self.try_get::<_, Option<i64>>(column)
            .or_else(|_| {
                self.try_get::<_, Option<i32>>(column)
                    .map(|v| v.map(i64::from))
            })
            .map_err(pg)
    }
    fn flag(&self, column: &str) -> Result<bool> {
        get(self, column)
    }
}

/// Reads one column; a type that does not match the schema means the database is not Herald's.
fn get<'a, T: FromSql<'a>>(r: &'a Row, column: &str) -> Result<T> {
    r.try_get(column).map_err(pg)
}

/// A header's mailboxes, stored as a JSON list of their canonical strings.
fn mailboxes(list: Vec<String>) -> Result<Vec<Mailbox>> {
    list.iter()
        .map(|m| stored("mailbox", Mailbox::from_stored(m)))
        .collect()
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

async fn load_tenant(c: &impl GenericClient, tenant_id: TenantId, lock: Lock) -> Result<Tenant> {
    let statement = lock.on(sql::TENANT_BY_ID);
    query_found(c, &statement, &[&tenant_id.to_string()], tenant).await
}

async fn load_person(
    c: &impl GenericClient,
    tenant_id: TenantId,
    person_id: PersonId,
    lock: Lock,
) -> Result<Person> {
    query_found(
        c,
        &lock.on(sql::PERSON_BY_ID),
        &[&person_id.to_string(), &tenant_id.to_string()],
        person,
    )
    .await
}

/// Values gathered once for both backends, as PostgreSQL binds them.
fn bind(values: &[sql::Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

async fn load_server(
    c: &impl GenericClient,
    tenant_id: TenantId,
    server_id: ServerId,
    lock: Lock,
) -> Result<SmtpServer> {
    query_found(
        c,
        &lock.on(sql::SERVER_BY_ID),
        &[&server_id.to_string(), &tenant_id.to_string()],
        server,
    )
    .await
}

async fn load_account(
    c: &impl GenericClient,
    tenant_id: TenantId,
    server_id: ServerId,
    account_id: AccountId,
    lock: Lock,
) -> Result<SmtpAccount> {
    query_found(
        c,
        &lock.on(sql::ACCOUNT_BY_ID),
        &[
            &account_id.to_string(),
            &server_id.to_string(),
            &tenant_id.to_string(),
        ],
        account,
    )
    .await
}

async fn load_provider(
    c: &impl GenericClient,
    tenant_id: TenantId,
    provider_id: ProviderId,
    lock: Lock,
) -> Result<Provider> {
    query_found(
        c,
        &lock.on(sql::PROVIDER_BY_ID),
        &[&provider_id.to_string(), &tenant_id.to_string()],
        provider,
    )
    .await
}

/// Checks that a provider's server and account exist for the tenant and fit
/// together, and keeps them from being deleted until the caller's transaction ends.
async fn check_provider_references(
    c: &impl GenericClient,
    tenant_id: TenantId,
    settings: &ProviderSettings,
) -> Result<()> {
    let found = load_server(c, tenant_id, settings.smtp_server_id, Lock::KeyShare).await;
    let server = rules::provider_server(found)?;
    let account = match settings.account_id {
        Some(account_id) => {
            Some(load_account(c, tenant_id, server.id, account_id, Lock::KeyShare).await)
        }
        None => None,
    };
    rules::provider_account(&server, account)
}

/// Reads a JSONB column into `T`.
fn json<T: serde::de::DeserializeOwned>(r: &Row, column: &str) -> Result<T> {
    let Json(value): Json<serde_json::Value> = get(r, column)?;
    stored(column, serde_json::from_value(value))
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

/// Inserts the rows of `messages` in one statement; for each, `false` when
/// its tenant already has a message under the same idempotency key (nothing
/// is inserted for it then, as for the second of two in `messages` that share
/// one).
async fn insert_messages(tx: &impl GenericClient, messages: &[&NewMessage]) -> Result<Vec<bool>> {
    let mut columns = MessageColumns::default();
    for m in messages {
        columns.push(m);
    }
    let inserted: HashSet<String> =
        query_map(tx, &INSERT_MESSAGES, &columns.params(), |r| get(r, "id"))
            .await?
            .into_iter()
            .collect();
    Ok(columns.id.iter().map(|id| inserted.contains(id)).collect())
}

/// A message row for each of many messages at once (one array per column,
/// a row per message), answering the ids of the rows inserted.
static INSERT_MESSAGES: LazyLock<String> = LazyLock::new(|| insert_messages_where(""));

/// The columns of a message row, in the order of [`MessageColumns::params`].
const MESSAGE_COLUMNS: &str = "id, tenant_id, idempotency_key, subject, text_body, html_body, \
     reply_to, headers, header_to, header_cc, used_fallback, created_at, on_behalf_name, \
     on_behalf_email, test_provider_id, source, smtp_credential_id, smtp_connector_id, client_addr, \
     raw, attachments, send_at, template_id, template_version";

/// The statement that inserts the rows of [`MessageColumns`]' arrays (`$1`
/// to `$24`, a row `n` each) for which `filter` holds (a `WHERE` clause, or
/// nothing), skipping a taken idempotency key; answers the ids inserted.
fn insert_messages_where(filter: &str) -> String {
    format!(
        "INSERT INTO messages ({MESSAGE_COLUMNS}) SELECT * FROM unnest($1::text[], $2::text[], \
         $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::jsonb[], $9::jsonb[], \
         $10::jsonb[], $11::boolean[], $12::bigint[], $13::text[], $14::text[], $15::text[], \
         $16::text[], $17::text[], $18::text[], $19::text[], $20::bytea[], $21::text[], \
         $22::bigint[], $23::text[], $24::integer[]) AS n ({MESSAGE_COLUMNS}) {filter} \
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING id"
    )
}

/// The columns of new messages' rows, one array each, for [`INSERT_MESSAGES`].
#[derive(Default)]
struct MessageColumns<'m> {
    id: Vec<String>,
    tenant_id: Vec<String>,
    idempotency_key: Vec<Option<&'m str>>,
    subject: Vec<&'m str>,
    text: Vec<Option<&'m str>>,
    html: Vec<Option<&'m str>>,
    reply_to: Vec<Option<String>>,
    headers: Vec<Json<Vec<(&'m str, &'m str)>>>,
    to: Vec<Json<Vec<String>>>,
    cc: Vec<Json<Vec<String>>>,
    used_fallback: Vec<bool>,
    created_at: Vec<i64>,
    on_behalf_name: Vec<Option<&'m str>>,
    on_behalf_email: Vec<Option<&'m str>>,
    test_provider: Vec<Option<String>>,
    source: Vec<&'static str>,
    credential: Vec<Option<String>>,
    connector: Vec<Option<String>>,
    client_addr: Vec<Option<String>>,
    raw: Vec<Option<&'m [u8]>>,
    attachments: Vec<Option<String>>,
    send_at: Vec<Option<i64>>,
    template_id: Vec<Option<String>>,
    template_version: Vec<Option<i32>>,
}

impl<'m> MessageColumns<'m> {
    /// The arrays, in the order of [`INSERT_MESSAGES`]' parameters.
    fn params(&self) -> [&(dyn ToSql + Sync); 24] {
        [
            &self.id,
            &self.tenant_id,
            &self.idempotency_key,
            &self.subject,
            &self.text,
            &self.html,
            &self.reply_to,
            &self.headers,
            &self.to,
            &self.cc,
            &self.used_fallback,
            &self.created_at,
            &self.on_behalf_name,
            &self.on_behalf_email,
            &self.test_provider,
            &self.source,
            &self.credential,
            &self.connector,
            &self.client_addr,
            &self.raw,
            &self.attachments,
            &self.send_at,
            &self.template_id,
            &self.template_version,
        ]
    }

    fn push(&mut self, m: &'m NewMessage) {
        let (source, credential, connector, client_addr) = rows::origin_values(&m.origin);
        self.id.push(m.id.to_string());
        self.tenant_id.push(m.tenant_id.to_string());
        self.idempotency_key.push(m.idempotency_key.as_deref());
        self.subject.push(m.subject.as_ref());
        self.text.push(m.text.as_deref());
        self.html.push(m.html.as_deref());
        self.reply_to
            .push(m.reply_to.as_ref().map(ToString::to_string));
        self.headers.push(Json(rows::header_pairs(&m.headers)));
        self.to.push(Json(rows::mailbox_strings(&m.to)));
        self.cc.push(Json(rows::mailbox_strings(&m.cc)));
        self.used_fallback.push(m.used_fallback);
        self.created_at.push(m.created_at);
        self.on_behalf_name
            .push(m.on_behalf_of.as_ref().map(|p| p.name.as_str()));
        self.on_behalf_email
            .push(m.on_behalf_of.as_ref().map(|p| p.email.as_ref()));
        self.test_provider
            .push(m.test_provider.map(|p| p.to_string()));
        self.source.push(source);
        self.credential.push(credential);
        self.connector.push(connector);
        self.client_addr.push(client_addr);
        self.raw.push(m.raw.as_deref());
        self.attachments
            .push(rows::attachments_json(&m.attachments));
        self.send_at.push(m.send_at);
        self.template_id.push(m.template.map(|t| t.id.to_string()));
        self.template_version
            .push(m.template.map(|t| t.version as i32));
    }
}

/// Inserts one row per recipient of each of `messages` (new ones) in one
/// statement, queued and due at once (or at its `send_at`); or, for a
/// message handed to this node's worker, claimed under its lease (the state
/// a claim leaves). Answers each message's recipients as claimed (none for
/// a message not handed over).
async fn insert_recipients(
    tx: &impl GenericClient,
    messages: &[&NewMessage],
) -> Result<Vec<Vec<Claimed>>> {
    let mut columns = RecipientColumns::default();
    let mut handed = Vec::with_capacity(messages.len());
    for m in messages {
        handed.push(columns.push(m));
    }
    if columns.id.is_empty() {
        return Ok(handed);
    }
    execute(tx, &INSERT_RECIPIENTS, &columns.params())
        .await
        .map_err(pg)?;
    Ok(handed)
}

/// Inserts the rows of [`RecipientColumns`]' arrays, `$1` to `$14`.
static INSERT_RECIPIENTS: LazyLock<String> = LazyLock::new(|| insert_recipients_from(1));

/// The columns of a recipient row, in the order of [`RecipientColumns::params`].
const RECIPIENT_COLUMNS: &str = "id, message_id, tenant_id, address, kind, position, status, \
     due_at, priority, gateway_id, lease_owner, lease_incarnation, lease_token, sole";

/// The statement that inserts the rows of [`RecipientColumns`]' arrays, given
/// as the parameters from `$first` on.
fn insert_recipients_from(first: usize) -> String {
    const TYPES: [&str; 14] = [
        "text", "text", "text", "text", "text", "integer", "text", "bigint", "integer", "text",
        "text", "text", "integer", "boolean",
    ];
    let arrays: Vec<String> = (first..)
        .zip(TYPES)
        .map(|(n, t)| format!("${n}::{t}[]"))
        .collect();
    format!(
        "INSERT INTO recipients ({RECIPIENT_COLUMNS}, attempts) \
         SELECT r.*, r.lease_token FROM unnest({}) AS r ({RECIPIENT_COLUMNS})",
        arrays.join(", ")
    )
}

/// The columns of new recipients' rows, one array each, for [`insert_recipients`].
#[derive(Default)]
struct RecipientColumns<'m> {
    id: Vec<String>,
    message_id: Vec<String>,
    tenant_id: Vec<String>,
    address: Vec<&'m str>,
    kind: Vec<&'static str>,
    position: Vec<i32>,
    status: Vec<&'static str>,
    due_at: Vec<i64>,
    priority: Vec<i32>,
    gateway_id: Vec<Option<String>>,
    owner: Vec<Option<&'m str>>,
    incarnation: Vec<Option<&'m str>>,
    token: Vec<i32>,
    sole: Vec<bool>,
}

impl<'m> RecipientColumns<'m> {
    /// The arrays, in the order of [`insert_recipients_from`]'s parameters.
    fn params(&self) -> [&(dyn ToSql + Sync); 14] {
        [
            &self.id,
            &self.message_id,
            &self.tenant_id,
            &self.address,
            &self.kind,
            &self.position,
            &self.status,
            &self.due_at,
            &self.priority,
            &self.gateway_id,
            &self.owner,
            &self.incarnation,
            &self.token,
            &self.sole,
        ]
    }

    /// Adds the rows of `m`'s recipients; answers them as claimed when `m`
    /// is handed over.
    fn push(&mut self, m: &'m NewMessage) -> Vec<Claimed> {
        let handed = m
            .handoff
            .as_ref()
            .map(|lease| m.handed_claims(lease))
            .unwrap_or_default();
        let (status, due_at, owner, incarnation, token) = match &m.handoff {
            Some(lease) => (
                "sending",
                lease.until,
                Some(lease.node.as_str()),
                Some(lease.incarnation.as_str()),
                1,
            ),
            None => ("queued", m.send_at.unwrap_or(m.created_at), None, None, 0),
        };
        let (message_id, tenant_id, gateway_id) = (
            m.id.to_string(),
            m.tenant_id.to_string(),
            m.gateway_id.map(|g| g.to_string()),
        );
        let sole = m.recipients().nth(1).is_none();
        for (position, (address, kind)) in m.recipients().enumerate() {
            let id = handed
                .get(position)
                .map_or_else(RecipientId::new, |c| c.recipient);
            self.id.push(id.to_string());
            self.message_id.push(message_id.clone());
            self.tenant_id.push(tenant_id.clone());
            self.address.push(address.as_ref());
            self.kind.push(kind.as_str());
            self.position.push(position as i32);
            self.status.push(status);
            self.due_at.push(due_at);
            self.priority.push(m.priority);
            self.gateway_id.push(gateway_id.clone());
            self.owner.push(owner);
            self.incarnation.push(incarnation);
            self.token.push(token);
            self.sole.push(sole);
        }
        handed
    }
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
    for (tenant, (count, limit)) in queued_by_tenant(new.iter().copied()) {
        change_queued(tx, &tenant, count).await?;
        let Some(limit) = limit else { continue };
        let row = query_opt(tx, &TENANT_QUEUED, &[&tenant]).await?;
        let queued = row.map(|r| get::<i64>(&r, "queued")).transpose()?;
        if queued.is_some_and(|queued| queued.max(0) as u64 > limit) {
            return Err(StoreError::QueueFull { limit });
        }
    }
    Ok(())
}

/// Per tenant of `messages`: their recipients, and the least queue limit
/// of those messages (`None` when none has one).
fn queued_by_tenant<'a>(
    messages: impl Iterator<Item = &'a NewMessage>,
) -> BTreeMap<String, (i64, Option<u64>)> {
    let mut tenants: BTreeMap<String, (i64, Option<u64>)> = BTreeMap::new();
    for m in messages {
        let (count, limit) = tenants.entry(m.tenant_id.to_string()).or_default();
        *count += m.recipients().count() as i64;
        *limit = match (*limit, m.max_queued) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    tenants
}

/// A tenant `t`'s count of queued recipients: its row's count and its
/// shards' (see [`count_queued`]).
const QUEUED_OF_T: &str = "t.queued_recipients + coalesce((SELECT sum(s.queued) \
     FROM tenant_queue_shards s WHERE s.tenant_id = t.id), 0)";

/// The queued count of the tenant `$1`.
static TENANT_QUEUED: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT ({QUEUED_OF_T})::bigint AS queued FROM tenants t WHERE t.id = $1")
});

/// Adds the row's `queued` to its tenant's shard of this connection, when
/// the row is inserted into `tenant_queue_shards (tenant_id, shard, queued)`
/// with [`THIS_SHARD`] as its shard.
const ADD_TO_SHARD: &str = "ON CONFLICT (tenant_id, shard) \
     DO UPDATE SET queued = tenant_queue_shards.queued + excluded.queued";

/// The shard of this connection (see [`count_queued`]).
const THIS_SHARD: &str = "pg_backend_pid() % 16";

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
    execute(tx, &CHANGE_QUEUED, &[&tenant, &delta])
        .await
        .map_err(pg)?;
    Ok(())
}

/// Adds `$2` to the tenant `$1`'s count in this connection's shard.
static CHANGE_QUEUED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO tenant_queue_shards (tenant_id, shard, queued) \
         VALUES ($1, {THIS_SHARD}, $2) {ADD_TO_SHARD}"
    )
});

/// The message stored earlier under `m`'s idempotency key, as a duplicate
/// submission is answered; `None` when it has gone meanwhile.
async fn stored_earlier(tx: &impl GenericClient, m: &NewMessage) -> Result<Option<Submitted>> {
    let tenant_id = m.tenant_id.to_string();
    let earlier = query_opt(tx, sql::MESSAGE_BY_KEY, &[&tenant_id, &m.idempotency_key]).await?;
    let Some(earlier) = earlier else {
        return Ok(None);
    };
    let send_at: Option<i64> = get(&earlier, "send_at")?;
    let earlier: String = get(&earlier, "id")?;
    let statuses = statuses_of(tx, &tenant_id, &earlier).await?;
    Ok(Some(Submitted {
        id: id(earlier)?,
        status: rules::earlier_status(statuses, send_at),
        duplicate: true,
        handed: Vec::new(),
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
    query_map(
        c,
        sql::RECIPIENT_STATUSES,
        &[&message_id, &tenant_id],
        |r| status(&get::<String>(r, "status")?),
    )
    .await
}

/// The statement that gives back the leases of a process that is gone
/// (`$1` is now, `$2` the node, `$3` the incarnation `which` compares with):
/// unlike [`DeliveryStore::release`], the
/// attempt the process had begun keeps counting, since it may have reached
/// the server; the recipient is due at once. Rows are locked in id order, like `complete` and `release` lock
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
}
