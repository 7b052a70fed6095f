//! Herald's storage interface and its SQLite and PostgreSQL implementations.
//!
//! Everything durable goes through [`Store`]; only this crate contains SQL.
//! Both implementations pass the same conformance suite (`tests/conformance.rs`).

mod access;
pub mod handoff;
pub mod migrate;
pub mod model;
mod outbox;
mod postgres;
mod rows;
mod rules;
mod sql;
mod sqlite;
mod walk;

use async_trait::async_trait;
use herald_core::{
    AccountId, EmailAddress, FieldError, GatewayId, MessageId, PersonId, ProviderId, RecipientId,
    ScheduleId, ServerId, SmtpConnectorId, SmtpCredentialId, TemplateId, TenantId, TenantSlug,
    TokenId, WebhookId,
};

/// Connectors' networks are `ipnet::IpNet`s.
pub use ipnet;
pub use model::*;
pub use outbox::event_body;

/// The store's traits, for code that calls its methods:
/// `use herald_store::prelude::*;` brings every capability into scope.
pub mod prelude {
    pub use crate::{
        Configuration, DeliveryStore, Gateways, Ingress, Queue, Schedules, Sessions, Store,
        Templates, Tenants, Webhooks,
    };
}

/// The most tenants one claim looks at (beyond those it passes over for
/// having no room): with more tenants that have mail waiting but none due,
/// the next claim goes on from where this one stopped.
pub(crate) const CLAIM_WALK: usize = 1_000;

/// What a foreign-key violation means to the caller, on both backends: the
/// change raced with another (what it refers to was deleted meanwhile, or
/// something came to refer to what it deletes).
pub(crate) const REFERENCE_CONFLICT: &str = "another change made at the same time conflicts with this one: something it refers to was deleted, or something now refers to it";

/// The earlier of two optional times.
pub(crate) fn earlier(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The part of a claim's `limit` each of `tenants` tenants may take.
pub(crate) fn claim_share(limit: u32, tenants: usize) -> u32 {
    limit.div_ceil(u32::try_from(tenants.max(1)).unwrap_or(u32::MAX))
}
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// What made the store unavailable, in words fit for a log, and the
/// database driver's own error beneath it when there is one (as the error's
/// source, for code that needs to look at it). PostgreSQL's errors are kept
/// as their code and message only: their detail repeats a row's values.
#[derive(Clone, Debug)]
pub struct Cause {
    /// What could not be reached: the database, or for a gateway, the node
    /// that keeps the store for it.
    unavailable: &'static str,
    what: String,
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl Cause {
    /// A cause with the database's error beneath it.
    pub fn of(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Cause {
        Cause {
            source: Some(std::sync::Arc::new(source)),
            ..Cause::from(what.into())
        }
    }

    /// A gateway's store: the node it claims from could not be reached or
    /// understood.
    pub fn node(what: impl Into<String>) -> Cause {
        Cause {
            unavailable: "node unavailable",
            ..Cause::from(what.into())
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.unavailable, self.what)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<String> for Cause {
    fn from(what: String) -> Cause {
        Cause {
            unavailable: "database unavailable",
            what,
            source: None,
        }
    }
}

impl From<&str> for Cause {
    fn from(what: &str) -> Cause {
        what.to_owned().into()
    }
}

/// Why a storage operation did not happen.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist, or belongs to another tenant.
    #[error("not found")]
    NotFound,
    /// The change conflicts with what is stored (a duplicate name, an object still in use).
    #[error("{0}")]
    Conflict(String),
    /// A field refers to something that does not exist for this tenant.
    #[error("{0}")]
    Invalid(FieldError),
    /// The database could not be reached or written (disk full, locked,
    /// gone); for a gateway, the node.
    #[error(transparent)]
    Unavailable(Cause),
    /// The tenant has as many recipients waiting as it may: nothing was stored.
    #[error("the tenant has reached its limit of {limit} queued recipients")]
    QueueFull {
        /// The most recipients the tenant may have queued.
        limit: u64,
    },
    /// The tenant has as many test messages queued or in flight as it may: nothing was stored.
    #[error("the tenant already has {limit} test messages waiting to be sent")]
    TooManyTests {
        /// The most test recipients a tenant may have waiting.
        limit: u32,
    },
    /// Stored data could not be read back as valid domain values.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Whether the latest write that reached a database failed because the
/// database could not take it (a full disk, a lost connection): what a node's
/// readiness reports, without writing anything itself. A write that commits
/// clears it; a write refused for what it contains (a conflict, a missing
/// object) says nothing about the database and leaves it as it was.
#[derive(Debug, Default)]
pub(crate) struct WriteHealth {
    refusing: std::sync::atomic::AtomicBool,
}

impl WriteHealth {
    /// Takes note of a write's result.
    pub(crate) fn note<T>(&self, result: &Result<T>) {
        use std::sync::atomic::Ordering;
        match result {
            Ok(_) => self.refusing.store(false, Ordering::Relaxed),
            Err(StoreError::Unavailable(_)) => self.refusing.store(true, Ordering::Relaxed),
            Err(_) => {}
        }
    }

    /// True when the latest write that reached the database was refused by it.
    pub(crate) fn refusing(&self) -> bool {
        self.refusing.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Re-seals one secret given its sealed value and its context (the row it belongs to).
pub type Resealer = Box<dyn Fn(&str, &str) -> std::result::Result<String, String> + Send + 'static>;

/// The result of a storage operation.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Durable state of a Herald installation. Tenant-scoped methods take the
/// tenant's id and never return another tenant's objects.
#[async_trait]
pub trait Store:
    Tenants
    + Configuration
    + Queue
    + Sessions
    + Ingress
    + Webhooks
    + Templates
    + Schedules
    + Gateways
    + Send
    + Sync
    + 'static
{
    /// True when the database answers.
    async fn ping(&self) -> Result<()>;

    /// True while the database refuses writes: the latest write that reached
    /// it failed as unavailable (a full disk, a lost connection). Answered
    /// from memory, so a readiness probe costs nothing; the node's heartbeat
    /// and its worker write often enough to keep it current.
    fn refusing_writes(&self) -> bool;

    /// What other nodes published: new mail, refreshed properties. `None`
    /// for a store only one node uses (SQLite), where the node tells itself.
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        None
    }
}

/// What delivering mail needs of a store, and nothing more: claims under
/// leases, the claimed messages' contents, outcomes, and the tenants'
/// providers. Every [`Store`] is one (each backend implements it once, and
/// [`Queue`] builds on it), and so is an `Arc` of one; a gateway's worker
/// has one that reaches the central node over HTTP.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Claims due recipients under a lease: queued or deferred ones whose time
    /// has come, and sending ones whose lease expired.
    ///
    /// Tenants are served in turn, never "the oldest of everyone": the store
    /// walks the tenants that have unfinished mail in id order, from the one
    /// after where its previous claim stopped and around, passes over those
    /// with no room, and takes the first `limit` that have something due.
    /// Each takes at most an equal part of `limit` (and at most its room):
    /// within a tenant, test messages first, then by due time. Finding the
    /// next tenant and what it has due are index lookups, so a claim costs
    /// the same whether a tenant passed over has ten recipients waiting or a
    /// million. Claimed recipients come back tenant by tenant, in that order.
    async fn claim(&self, request: ClaimRequest) -> Result<Vec<Claimed>>;

    /// What is needed to render messages for sending.
    async fn message_contents(&self, ids: &[MessageId]) -> Result<Vec<MessageContent>>;

    /// Records attempts and new states; an outcome whose lease token is no
    /// longer current is refused (`false` at its index) and changes nothing.
    /// A capture is kept only when an outcome of its own message was accepted,
    /// so one call may carry the outcomes of many deliveries. The answer also
    /// says how many webhook events the outcomes wrote.
    async fn complete(
        &self,
        outcomes: Vec<Outcome>,
        captures: Vec<NewCapture>,
    ) -> Result<Completed> {
        self.record_outcomes(outcomes, captures, None).await
    }

    /// As [`DeliveryStore::complete`], and the events the outcomes write are leased
    /// at once to the dispatcher `lease` names, up to its room, and come back
    /// in [`Completed::handed`]. An event goes only with the rest of its
    /// chain (its webhook's events of its message): never while an earlier
    /// one of the chain is pending, so the order per message holds. A store
    /// that cannot lease them so leases none, and the dispatcher claims them.
    async fn complete_and_lease_events(
        &self,
        outcomes: Vec<Outcome>,
        captures: Vec<NewCapture>,
        lease: EventLease,
    ) -> Result<Completed> {
        self.record_outcomes(outcomes, captures, Some(lease)).await
    }

    /// What [`DeliveryStore::complete`] and, with a dispatcher's `lease`,
    /// [`DeliveryStore::complete_and_lease_events`] do: the one a store implements.
    async fn record_outcomes(
        &self,
        outcomes: Vec<Outcome>,
        captures: Vec<NewCapture>,
        lease: Option<EventLease>,
    ) -> Result<Completed>;

    /// Gives claimed recipients back without an attempt (at shutdown).
    async fn release(&self, leases: Vec<(RecipientId, i64)>) -> Result<()>;

    /// Gives claimed recipients to `gateway`, or back to the nodes with
    /// `None`, without an attempt, due at `now`: their lease holder found
    /// that their route is pinned to a gateway (or no longer to its own).
    /// A lease that is no longer current changes nothing. Returns how many
    /// were handed over.
    async fn repin(
        &self,
        leases: Vec<(RecipientId, i64)>,
        gateway: Option<GatewayId>,
        now: i64,
    ) -> Result<u64>;

    /// The time of the earliest pending recipient of a tenant not excluded, if
    /// any. With tenants excluded it looks at each tenant's earliest, so an
    /// excluded tenant's backlog is not walked.
    async fn next_due(&self, exclude_tenants: &[TenantId]) -> Result<Option<i64>>;

    /// The tenant's active provider with its server and account, or `None` for the system default.
    async fn active_provider(&self, tenant: TenantId) -> Result<Option<ProviderConfig>>;

    /// A provider of the tenant with its server and account (a test
    /// message's, whatever the tenant's active one).
    async fn provider_config(
        &self,
        tenant: TenantId,
        provider: ProviderId,
    ) -> Result<ProviderConfig>;
}

#[async_trait]
impl<T: DeliveryStore + ?Sized> DeliveryStore for std::sync::Arc<T> {
    async fn claim(&self, request: ClaimRequest) -> Result<Vec<Claimed>> {
        (**self).claim(request).await
    }

    async fn message_contents(&self, ids: &[MessageId]) -> Result<Vec<MessageContent>> {
        (**self).message_contents(ids).await
    }

    async fn record_outcomes(
        &self,
        outcomes: Vec<Outcome>,
        captures: Vec<NewCapture>,
        lease: Option<EventLease>,
    ) -> Result<Completed> {
        (**self).record_outcomes(outcomes, captures, lease).await
    }

    async fn release(&self, leases: Vec<(RecipientId, i64)>) -> Result<()> {
        (**self).release(leases).await
    }

    async fn repin(
        &self,
        leases: Vec<(RecipientId, i64)>,
        gateway: Option<GatewayId>,
        now: i64,
    ) -> Result<u64> {
        (**self).repin(leases, gateway, now).await
    }

    async fn next_due(&self, exclude_tenants: &[TenantId]) -> Result<Option<i64>> {
        (**self).next_due(exclude_tenants).await
    }

    async fn active_provider(&self, tenant: TenantId) -> Result<Option<ProviderConfig>> {
        (**self).active_provider(tenant).await
    }

    async fn provider_config(
        &self,
        tenant: TenantId,
        provider: ProviderId,
    ) -> Result<ProviderConfig> {
        (**self).provider_config(tenant, provider).await
    }
}

/// The store's tenants and access: tenants and their properties, API tokens, persons, the audit log.
#[async_trait]
pub trait Tenants: Send + Sync {
    /// Creates a tenant; a taken slug is a conflict.
    async fn create_tenant(&self, slug: TenantSlug, name: String) -> Result<Tenant>;

    /// The tenant with this slug.
    async fn tenant_by_slug(&self, slug: &str) -> Result<Tenant>;

    /// Every tenant, oldest first.
    async fn list_tenants(&self) -> Result<Vec<Tenant>>;

    /// Grants or withdraws the credential storage entitlement.
    async fn set_entitlements(&self, tenant: TenantId, credential_storage: bool) -> Result<Tenant>;

    /// Makes a provider (or, with `None`, the system default) the tenant's
    /// active one, in effect on every node from `effective_from`. A change
    /// gives the tenant's waiting mail pinned to a gateway back to the nodes,
    /// due no earlier than `effective_from`.
    async fn set_active_provider(
        &self,
        tenant: TenantId,
        provider: Option<ProviderId>,
        effective_from: i64,
    ) -> Result<Tenant>;

    /// Makes the latest change of the active provider in effect from `now`
    /// (after a refresh); mail that change gave back to the nodes is due now.
    async fn refresh_properties(&self, tenant: TenantId, now: i64) -> Result<Tenant>;

    /// Stores a token's hash.
    async fn create_token(&self, token: NewToken) -> Result<TokenRecord>;

    /// The token with this hash, marking it used.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>>;

    /// A request's two lookups together: the token with this hash (as
    /// [`Tenants::token_by_hash`], marking it used) and the tenant with this
    /// slug. `None` when no token has the hash; the tenant is `None` when no
    /// tenant has the slug. A store may make them in one go: SQLite on one
    /// reader, one after the other, PostgreSQL in one round trip.
    async fn token_and_tenant(
        &self,
        hash: &str,
        slug: &str,
    ) -> Result<Option<(TokenRecord, Option<Tenant>)>> {
        let Some(token) = self.token_by_hash(hash).await? else {
            return Ok(None);
        };
        let tenant = match self.tenant_by_slug(slug).await {
            Err(StoreError::NotFound) => None,
            other => Some(other?),
        };
        Ok(Some((token, tenant)))
    }

    /// The tenant's tokens (never their hashes).
    async fn list_tokens(&self, tenant: TenantId) -> Result<Vec<TokenRecord>>;

    /// Revokes (deletes) a token of the tenant.
    async fn revoke_token(&self, tenant: TenantId, id: TokenId) -> Result<()>;

    /// True when any operator token is in force (the database is not new).
    async fn operator_token_exists(&self) -> Result<bool>;

    /// The operator tokens in force (never their hashes), oldest first.
    async fn list_operator_tokens(&self) -> Result<Vec<TokenRecord>>;

    /// Revokes an operator token. A bootstrap token is kept as revoked, so a
    /// node started again with the same `HERALD_BOOTSTRAP_TOKEN` does not
    /// bring it back; any other is deleted.
    async fn revoke_operator_token(&self, id: TokenId) -> Result<()>;

    /// Makes `token` (an operator token) the bootstrap token, in one
    /// transaction: stores it unless it is stored already, and revokes every
    /// earlier bootstrap token. A token revoked before stays revoked, and
    /// the bootstrap token in force is revoked all the same, since it is no
    /// longer the configured one: the node is then left without one.
    async fn set_bootstrap_token(&self, token: NewToken) -> Result<BootstrapOutcome>;

    /// Creates a person; a taken e-mail address is a conflict.
    async fn create_person(&self, tenant: TenantId, person: Person) -> Result<Person>;

    /// One person.
    async fn person(&self, tenant: TenantId, id: PersonId) -> Result<Person>;

    /// The tenant's persons.
    async fn list_persons(&self, tenant: TenantId) -> Result<Vec<Person>>;

    /// The tenant's person with this e-mail address, ASCII case aside (the
    /// earliest, should two differ only in case): who a message received
    /// over SMTP is from.
    async fn person_by_email(
        &self,
        tenant: TenantId,
        email: &EmailAddress,
    ) -> Result<Option<Person>>;

    /// Deletes a person and their tokens; a conflict while an account is bound to them.
    async fn delete_person(&self, tenant: TenantId, id: PersonId) -> Result<()>;

    /// Appends to the audit log.
    async fn audit(&self, entry: AuditEntry) -> Result<()>;

    /// The tenant's newest audit entries.
    async fn list_audit(&self, tenant: TenantId, limit: u32) -> Result<Vec<AuditEntry>>;
}

/// Who may submit mail over SMTP: tenants' credentials and IP connectors.
#[async_trait]
pub trait Ingress: Send + Sync {
    async fn create_smtp_credential(&self, credential: NewSmtpCredential)
    -> Result<SmtpCredential>;

    async fn list_smtp_credentials(&self, tenant: TenantId) -> Result<Vec<SmtpCredential>>;

    /// The tenant's credential with this id, while it stands (not revoked):
    /// asked for each message of a session that logged in with it.
    async fn smtp_credential(
        &self,
        tenant: TenantId,
        id: SmtpCredentialId,
    ) -> Result<Option<SmtpCredential>>;

    /// Deletes the credential: the next AUTH with it fails.
    async fn revoke_smtp_credential(&self, tenant: TenantId, id: SmtpCredentialId) -> Result<()>;

    /// The credential with this username and its password's hash, for AUTH.
    async fn smtp_login(&self, username: &str) -> Result<Option<(SmtpCredential, String)>>;

    /// Records that the credential logged in at `now` (once its password matched).
    async fn smtp_credential_used(&self, id: SmtpCredentialId, now: i64) -> Result<()>;

    /// Stores a connector; `Conflict` when its networks overlap any other connector's.
    async fn create_smtp_connector(
        &self,
        tenant: TenantId,
        name: String,
        cidrs: Vec<ipnet::IpNet>,
        rate_limit_per_minute: Option<u32>,
    ) -> Result<SmtpConnector>;

    async fn list_smtp_connectors(&self, tenant: TenantId) -> Result<Vec<SmtpConnector>>;

    /// The tenant's connector with this id, while it stands: asked for each
    /// message of a session it let in.
    async fn smtp_connector(
        &self,
        tenant: TenantId,
        id: SmtpConnectorId,
    ) -> Result<Option<SmtpConnector>>;

    async fn delete_smtp_connector(&self, tenant: TenantId, id: SmtpConnectorId) -> Result<()>;

    /// Every tenant's connectors, for matching a client's address.
    async fn all_smtp_connectors(&self) -> Result<Vec<SmtpConnector>>;
}

/// The store's configuration: SMTP servers, their accounts, notification providers, the sealed secrets.
#[async_trait]
pub trait Configuration: Send + Sync {
    /// Re-seals every stored secret with `reseal(sealed, context)`, all in one
    /// transaction; returns how many were re-sealed.
    async fn reseal_secrets(&self, reseal: Resealer) -> Result<usize>;

    /// Creates an SMTP server.
    async fn create_server(&self, tenant: TenantId, settings: ServerSettings)
    -> Result<SmtpServer>;

    /// One SMTP server.
    async fn server(&self, tenant: TenantId, id: ServerId) -> Result<SmtpServer>;

    /// The tenant's SMTP servers.
    async fn list_servers(&self, tenant: TenantId) -> Result<Vec<SmtpServer>>;

    /// Replaces a server's settings; a change that redirects or weakens trust
    /// ([`ServerSettings::change_clears_secrets`]) clears its accounts' secrets.
    /// A change of its gateway gives the tenant's waiting mail pinned to a
    /// gateway back to the nodes, and makes every node forget its cached
    /// provider of the tenant.
    async fn update_server(
        &self,
        tenant: TenantId,
        id: ServerId,
        settings: ServerSettings,
    ) -> Result<SmtpServer>;

    /// Deletes a server and its accounts; a conflict while a provider uses it.
    async fn delete_server(&self, tenant: TenantId, id: ServerId) -> Result<()>;

    /// Creates an SMTP account on a server.
    async fn create_account(&self, tenant: TenantId, account: NewAccount) -> Result<SmtpAccount>;

    /// One account of a server.
    async fn account(
        &self,
        tenant: TenantId,
        server: ServerId,
        id: AccountId,
    ) -> Result<SmtpAccount>;

    /// The accounts of a server.
    async fn list_accounts(&self, tenant: TenantId, server: ServerId) -> Result<Vec<SmtpAccount>>;

    /// Deletes an account; a conflict while a provider uses it.
    async fn delete_account(&self, tenant: TenantId, server: ServerId, id: AccountId)
    -> Result<()>;

    /// Creates a notification provider.
    async fn create_provider(
        &self,
        tenant: TenantId,
        settings: ProviderSettings,
    ) -> Result<Provider>;

    /// One provider.
    async fn provider(&self, tenant: TenantId, id: ProviderId) -> Result<Provider>;

    /// The tenant's providers.
    async fn list_providers(&self, tenant: TenantId) -> Result<Vec<Provider>>;

    /// Replaces a provider's settings. A change of its server gives the
    /// tenant's waiting mail pinned to a gateway back to the nodes, and makes
    /// every node forget its cached provider of the tenant.
    async fn update_provider(
        &self,
        tenant: TenantId,
        id: ProviderId,
        settings: ProviderSettings,
    ) -> Result<Provider>;

    /// Deletes a provider; a conflict while it is the tenant's active one.
    async fn delete_provider(&self, tenant: TenantId, id: ProviderId) -> Result<()>;
}

/// The store's messages and the queue: submissions, claims under leases, outcomes, the nodes that hold leases, captures.
#[async_trait]
pub trait Queue: DeliveryStore {
    /// Records that a node is alive.
    async fn heartbeat(&self, node: NodeRecord) -> Result<()>;

    /// Every node that ever reported, newest heartbeat first.
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>>;

    /// The installation's unfinished recipients by status: one query over
    /// the unfinished rows only, for the metrics' periodic queue depth.
    async fn queue_depth(&self) -> Result<QueueDepth>;

    /// Stores a message and its recipients durably, or returns the message
    /// stored earlier under the same idempotency key. A new message that
    /// would take the tenant's queued recipients (queued, deferred or
    /// sending) past the message's `max_queued` is refused with
    /// [`StoreError::QueueFull`].
    async fn submit(&self, message: NewMessage) -> Result<Submitted>;

    /// Stores many messages in one transaction, each answered as [`Queue::submit`]
    /// would answer it, in order; all are stored, or none (and the error says why).
    async fn submit_batch(&self, messages: Vec<NewMessage>) -> Result<Vec<Submitted>>;

    /// One message with its recipients and attempts.
    async fn message(&self, tenant: TenantId, id: MessageId) -> Result<MessageView>;

    /// The tenant's newest messages.
    async fn list_messages(&self, tenant: TenantId, limit: u32) -> Result<Vec<MessageSummary>> {
        let query = MessageQuery {
            limit,
            ..MessageQuery::default()
        };
        self.search_messages(tenant, query).await
    }

    /// How many of the tenant's messages created since `since` (ms) are in each
    /// status, as [`message_status`](herald_core::status::message_status) derives it.
    async fn count_messages(&self, tenant: TenantId, since: i64) -> Result<MessageCounts>;

    /// The tenant's newest messages that match `query`.
    async fn search_messages(
        &self,
        tenant: TenantId,
        query: MessageQuery,
    ) -> Result<Vec<MessageSummary>>;

    /// Claims, for one instance of a gateway, due recipients pinned to that
    /// gateway under a lease, as [`DeliveryStore::claim`] does for a node: queued
    /// or deferred ones whose time has come and sending ones whose lease
    /// expired (an instance that died), test messages first, then by due
    /// time. Only the gateway's tenant's recipients.
    async fn claim_for_gateway(&self, claim: GatewayClaim) -> Result<Vec<Claimed>>;

    /// Gives back the leases that earlier processes of `node` held (any
    /// incarnation but `incarnation`), at start: those recipients are due at
    /// `now`, keep their attempt count, and get no attempt recorded. A late
    /// outcome of the old process is refused, as after any new claim.
    /// Returns how many were given back.
    async fn release_earlier_incarnations(
        &self,
        node: &str,
        incarnation: &str,
        now: i64,
    ) -> Result<u64>;

    /// Gives back the leases of every node whose latest heartbeat is older
    /// than `stale_before`, as [`Queue::release_earlier_incarnations`] does,
    /// and marks those nodes as taken over so they are passed over next time.
    /// Returns each such node with how many recipients it held.
    async fn release_stale_nodes(&self, stale_before: i64, now: i64) -> Result<Vec<(String, u64)>>;

    /// The newest messages in the tenant's capture mailbox.
    async fn list_captured(&self, tenant: TenantId, limit: u32) -> Result<Vec<Captured>>;

    /// Cancels a message none of whose recipients is `sending` or final yet:
    /// every recipient becomes `cancelled` (final, never attempted) and
    /// leaves the tenant's queued count. A message with a recipient being
    /// sent or already final is a conflict, and nothing changes.
    async fn cancel_message(&self, tenant: TenantId, id: MessageId) -> Result<()>;
}

/// The store's message templates: each change is a new version, and every
/// version is kept (a message records the one it was rendered from).
#[async_trait]
pub trait Templates: Send + Sync {
    /// Stores a template as its version 1; a taken name is a conflict.
    async fn create_template(&self, template: NewTemplate) -> Result<Template>;

    /// One template of the tenant, at its current version.
    async fn template(&self, tenant: TenantId, id: TemplateId) -> Result<Template>;

    /// The tenant's template with this name.
    async fn template_named(&self, tenant: TenantId, name: &str) -> Result<Template>;

    /// The tenant's templates, by name.
    async fn list_templates(&self, tenant: TenantId) -> Result<Vec<Template>>;

    /// Replaces a template's fields at `now` as its next version; a taken
    /// name is a conflict.
    async fn update_template(
        &self,
        tenant: TenantId,
        id: TemplateId,
        fields: TemplateFields,
        now: i64,
    ) -> Result<Template>;

    /// Deletes a template and its versions; a conflict while a schedule uses it.
    async fn delete_template(&self, tenant: TenantId, id: TemplateId) -> Result<()>;
}

/// The store's recurring schedules and their firings. A scheduled firing is
/// recorded only while the schedule's `next_run_at` is still the one it
/// consumes, in the transaction that stores its message and moves
/// `next_run_at` on: however many nodes try, one occurrence makes one message.
#[async_trait]
pub trait Schedules: Send + Sync {
    /// Stores a schedule; a taken name is a conflict, a template not the tenant's is invalid.
    async fn create_schedule(&self, schedule: NewSchedule) -> Result<Schedule>;

    /// One schedule of the tenant.
    async fn schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<Schedule>;

    /// The tenant's schedules, by name.
    async fn list_schedules(&self, tenant: TenantId) -> Result<Vec<Schedule>>;

    /// Replaces a schedule's fields at `now`, and its next firing unless `next_run` keeps it.
    async fn update_schedule(
        &self,
        tenant: TenantId,
        id: ScheduleId,
        fields: ScheduleFields,
        next_run: NextRun,
        now: i64,
    ) -> Result<Schedule>;

    /// Deletes a schedule and its firings (their messages stay).
    async fn delete_schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<()>;

    /// Enabled schedules of every tenant whose `next_run_at` is at or before
    /// `now`, earliest first, at most `limit`.
    async fn due_schedules(&self, now: i64, limit: u32) -> Result<Vec<Schedule>>;

    /// The earliest `next_run_at` of an enabled schedule, if any.
    async fn next_schedule_due(&self) -> Result<Option<i64>>;

    /// Records a firing and stores its message, in one transaction. A
    /// scheduled firing also moves the schedule's `next_run_at` from
    /// `expected_next_run_at` to `next_run_at`; when the schedule no longer
    /// expects it (another node fired that occurrence, or the schedule was
    /// changed, disabled or deleted), nothing is stored and the answer is
    /// `None`. A message the queue refuses (a full queue) is an error, and
    /// nothing is stored.
    async fn fire_schedule(
        &self,
        firing: Firing,
        message: Option<NewMessage>,
    ) -> Result<Option<ScheduleRun>>;

    /// The schedule's newest firings, newest first, with their messages' statuses.
    async fn schedule_runs(
        &self,
        tenant: TenantId,
        id: ScheduleId,
        limit: u32,
    ) -> Result<Vec<ScheduleRun>>;
}

/// The store's gateways: processes inside a tenant's network that fetch the
/// tenant's mail and deliver it there, each with one token (stored as its
/// SHA-256) and the instances that reported with it.
#[async_trait]
pub trait Gateways: Send + Sync {
    /// Stores a gateway; a taken name is a conflict.
    async fn create_gateway(&self, gateway: NewGateway) -> Result<Gateway>;

    /// One gateway of the tenant, with its instances.
    async fn gateway(&self, tenant: TenantId, id: GatewayId) -> Result<Gateway>;

    /// The tenant's gateways by name, each with its instances, newest seen first.
    async fn list_gateways(&self, tenant: TenantId) -> Result<Vec<Gateway>>;

    /// Deletes a gateway and its instances; a conflict while an SMTP server
    /// names it. Mail still pinned to it goes back to the nodes.
    async fn delete_gateway(&self, tenant: TenantId, id: GatewayId) -> Result<()>;

    /// Replaces the gateway's token: the old one stops working at once.
    async fn replace_gateway_token(
        &self,
        tenant: TenantId,
        id: GatewayId,
        token_hash: String,
        now: i64,
    ) -> Result<Gateway>;

    /// The gateway whose token has this hash, of any tenant: for authentication.
    async fn gateway_by_token(&self, hash: &str) -> Result<Option<Gateway>>;

    /// Records that an instance of a gateway reported (creating it when
    /// new); a gateway that no longer exists is not found. A report from
    /// another process (incarnation) than the last one takes nothing from
    /// that one: two processes may share an instance's name (a rolling
    /// restart, two on one host). The one before is kept as the previous
    /// incarnation, whose leases [`Gateways::release_stale_gateway_instances`]
    /// gives back once it has not been seen for the stale-after period.
    async fn gateway_seen(&self, seen: GatewaySeen) -> Result<()>;

    /// Gives back the leases of every gateway instance's incarnation,
    /// current or previous, not seen since `stale_before`, as
    /// [`Queue::release_stale_nodes`] does for nodes, and marks those
    /// incarnations as taken over so they are passed over next time. Returns each such instance's lease owner
    /// ([`gateway_lease_owner`]) with how many recipients it held.
    async fn release_stale_gateway_instances(
        &self,
        stale_before: i64,
        now: i64,
    ) -> Result<Vec<(String, u64)>>;

    /// For each recipient, whether it is pinned to `gateway` (and so is of
    /// the gateway's tenant): what a gateway may report outcomes for.
    async fn pinned_to_gateway(
        &self,
        gateway: GatewayId,
        recipients: &[RecipientId],
    ) -> Result<Vec<bool>>;

    /// Adds outcomes to an instance's counts of the minute `at` falls in,
    /// and forgets its minutes that no window includes any more (see
    /// [`GatewayInstance`]); an instance never seen is not found.
    async fn count_gateway_outcomes(
        &self,
        gateway: GatewayId,
        instance: &str,
        delivered: u32,
        failed: u32,
        at: i64,
    ) -> Result<()>;
}

/// The store's console sign-in: passwords and sessions.
#[async_trait]
pub trait Sessions: Send + Sync {
    /// Sets an operator's console password (an argon2 hash), creating the
    /// operator if new; ends the operator's sessions.
    async fn set_operator_password(&self, email: EmailAddress, password_hash: String)
    -> Result<()>;

    /// Sets a person's console password (an argon2 hash); ends their sessions.
    async fn set_person_password(
        &self,
        tenant: TenantId,
        person: PersonId,
        password_hash: String,
    ) -> Result<()>;

    /// Everyone who may sign in with this e-mail address (compared without
    /// regard to case): operators first, then persons, oldest tenant first.
    async fn credentials(&self, email: &str) -> Result<Vec<Credential>>;

    /// Stores a console session, and forgets sessions that expired.
    async fn create_session(&self, session: NewSession) -> Result<()>;

    /// The session with this hash, unless it expired before `now`.
    async fn session_by_hash(&self, hash: &str, now: i64) -> Result<Option<Session>>;

    /// Ends a session (sign-out); ending one that does not exist is not an error.
    async fn delete_session(&self, hash: &str) -> Result<()>;
}

/// The store's delivery webhooks: tenants' endpoints, and the outbox of
/// events for them. [`DeliveryStore::complete`] writes the events an outcome causes
/// in the outcome's own transaction; a dispatcher claims them under a lease
/// and records each attempt.
#[async_trait]
pub trait Webhooks: Send + Sync {
    /// Stores a webhook.
    async fn create_webhook(&self, webhook: NewWebhook) -> Result<Webhook>;

    /// One webhook of the tenant.
    async fn webhook(&self, tenant: TenantId, id: WebhookId) -> Result<Webhook>;

    /// The tenant's webhooks, oldest first.
    async fn list_webhooks(&self, tenant: TenantId) -> Result<Vec<Webhook>>;

    /// Changes a webhook's URL, events or state at `now`.
    async fn update_webhook(
        &self,
        tenant: TenantId,
        id: WebhookId,
        change: WebhookChange,
        now: i64,
    ) -> Result<Webhook>;

    /// Replaces the signing secret; the previous one keeps signing beside it
    /// until `previous_until`.
    async fn rotate_webhook_secret(
        &self,
        tenant: TenantId,
        id: WebhookId,
        sealed_secret: String,
        previous_until: i64,
        now: i64,
    ) -> Result<Webhook>;

    /// Deletes a webhook and its events, sent or not.
    async fn delete_webhook(&self, tenant: TenantId, id: WebhookId) -> Result<()>;

    /// The webhook's newest event deliveries, newest first.
    async fn webhook_deliveries(
        &self,
        tenant: TenantId,
        id: WebhookId,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>>;

    /// The webhook's sealed signing secret, and the previous one while its
    /// overlap lasts at `now`: for a test event sent at once.
    async fn webhook_secrets(
        &self,
        tenant: TenantId,
        id: WebhookId,
        now: i64,
    ) -> Result<(String, Option<String>)>;

    /// Records a test event's one attempt among the webhook's deliveries.
    async fn record_webhook_test(&self, record: WebhookTestRecord) -> Result<()>;

    /// Claims due events under a lease, oldest first. An event is due only
    /// when no earlier event of its message for the same webhook is still
    /// pending: a message's events reach each webhook in the order written.
    /// A claim takes a message's due events for a webhook together.
    async fn claim_webhook_events(&self, claim: WebhookClaim) -> Result<Vec<ClaimedEvent>>;

    /// Records attempts (an attempt whose lease token is no longer current
    /// changes nothing). A webhook with a success is no longer failing; one
    /// whose attempts all failed is failing from the first of them, and is
    /// disabled when it has been failing since before `disable_failing_before`,
    /// with an entry in its tenant's audit log in the same transaction.
    async fn finish_webhook_events(
        &self,
        attempts: Vec<WebhookAttempt>,
        disable_failing_before: i64,
    ) -> Result<Vec<DisabledWebhook>>;

    /// Gives back the events that earlier processes of `node` held (any
    /// incarnation but `incarnation`), at start: due at `now`, no attempt
    /// counted. Returns how many.
    async fn release_webhook_leases(&self, node: &str, incarnation: &str, now: i64) -> Result<u64>;

    /// When the earliest pending event is due, if any.
    async fn next_webhook_due(&self) -> Result<Option<i64>>;

    /// Forgets delivered and failed events created before `before`; returns how many.
    async fn prune_webhook_events(&self, before: i64) -> Result<u64>;
}
