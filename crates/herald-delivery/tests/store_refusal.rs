//! Outcomes the store refuses to record (a full disk) are kept by the worker
//! and committed once the store takes writes again, so nothing is sent twice;
//! and a node whose heartbeats are late starts no send another node may repeat.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use herald_core::timestamp::now_ms;
use herald_core::*;
use herald_delivery::{DefaultProvider, ProviderCache, Worker, WorkerConfig, WorkerStats};
use herald_smtp::{Target, Timeouts, TlsSettings};
use herald_store::*;
use herald_testsmtp::TestSmtpServer;

/// How long the test waits for a condition before it fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// The real SQLite store, except that `complete` fails as a full disk makes
/// it fail while `refuse` is on; every other call goes to the real store.
struct Refusing {
    inner: SqliteStore,
    refuse: AtomicBool,
    /// Every recipient whose outcome was refused at least once.
    refused: Mutex<HashSet<RecipientId>>,
}

#[async_trait]
impl Store for Refusing {
    fn refusing_writes(&self) -> bool {
        self.refuse.load(Ordering::SeqCst) || self.inner.refusing_writes()
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
}

#[async_trait]
impl Tenants for Refusing {
    async fn create_tenant(&self, slug: TenantSlug, name: String) -> Result<Tenant> {
        self.inner.create_tenant(slug, name).await
    }

    async fn tenant_by_slug(&self, slug: &str) -> Result<Tenant> {
        self.inner.tenant_by_slug(slug).await
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.inner.list_tenants().await
    }

    async fn set_entitlements(&self, tenant: TenantId, credential_storage: bool) -> Result<Tenant> {
        self.inner
            .set_entitlements(tenant, credential_storage)
            .await
    }

    async fn set_active_provider(
        &self,
        tenant: TenantId,
        provider: Option<ProviderId>,
        effective_from: i64,
    ) -> Result<Tenant> {
        self.inner
            .set_active_provider(tenant, provider, effective_from)
            .await
    }

    async fn refresh_properties(&self, tenant: TenantId, now: i64) -> Result<Tenant> {
        self.inner.refresh_properties(tenant, now).await
    }

    async fn create_token(&self, token: NewToken) -> Result<TokenRecord> {
        self.inner.create_token(token).await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        self.inner.token_by_hash(hash).await
    }

    async fn list_tokens(&self, tenant: TenantId) -> Result<Vec<TokenRecord>> {
        self.inner.list_tokens(tenant).await
    }

    async fn revoke_token(&self, tenant: TenantId, id: TokenId) -> Result<()> {
        self.inner.revoke_token(tenant, id).await
    }

    async fn operator_token_exists(&self) -> Result<bool> {
        self.inner.operator_token_exists().await
    }

    async fn create_person(&self, tenant: TenantId, person: Person) -> Result<Person> {
        self.inner.create_person(tenant, person).await
    }

    async fn person(&self, tenant: TenantId, id: PersonId) -> Result<Person> {
        self.inner.person(tenant, id).await
    }

    async fn list_persons(&self, tenant: TenantId) -> Result<Vec<Person>> {
        self.inner.list_persons(tenant).await
    }

    async fn delete_person(&self, tenant: TenantId, id: PersonId) -> Result<()> {
        self.inner.delete_person(tenant, id).await
    }

    async fn audit(&self, entry: AuditEntry) -> Result<()> {
        self.inner.audit(entry).await
    }

    async fn list_audit(&self, tenant: TenantId, limit: u32) -> Result<Vec<AuditEntry>> {
        self.inner.list_audit(tenant, limit).await
    }

    async fn list_operator_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.inner.list_operator_tokens().await
    }

    async fn revoke_operator_token(&self, id: TokenId) -> Result<()> {
        self.inner.revoke_operator_token(id).await
    }

    async fn set_bootstrap_token(&self, token: NewToken) -> Result<BootstrapOutcome> {
        self.inner.set_bootstrap_token(token).await
    }
}

#[async_trait]
impl Configuration for Refusing {
    async fn reseal_secrets(&self, reseal: Resealer) -> Result<usize> {
        self.inner.reseal_secrets(reseal).await
    }

    async fn create_server(
        &self,
        tenant: TenantId,
        settings: ServerSettings,
    ) -> Result<SmtpServer> {
        self.inner.create_server(tenant, settings).await
    }

    async fn server(&self, tenant: TenantId, id: ServerId) -> Result<SmtpServer> {
        self.inner.server(tenant, id).await
    }

    async fn list_servers(&self, tenant: TenantId) -> Result<Vec<SmtpServer>> {
        self.inner.list_servers(tenant).await
    }

    async fn update_server(
        &self,
        tenant: TenantId,
        id: ServerId,
        settings: ServerSettings,
    ) -> Result<SmtpServer> {
        self.inner.update_server(tenant, id, settings).await
    }

    async fn delete_server(&self, tenant: TenantId, id: ServerId) -> Result<()> {
        self.inner.delete_server(tenant, id).await
    }

    async fn create_account(&self, tenant: TenantId, account: NewAccount) -> Result<SmtpAccount> {
        self.inner.create_account(tenant, account).await
    }

    async fn account(
        &self,
        tenant: TenantId,
        server: ServerId,
        id: AccountId,
    ) -> Result<SmtpAccount> {
        self.inner.account(tenant, server, id).await
    }

    async fn list_accounts(&self, tenant: TenantId, server: ServerId) -> Result<Vec<SmtpAccount>> {
        self.inner.list_accounts(tenant, server).await
    }

    async fn delete_account(
        &self,
        tenant: TenantId,
        server: ServerId,
        id: AccountId,
    ) -> Result<()> {
        self.inner.delete_account(tenant, server, id).await
    }

    async fn create_provider(
        &self,
        tenant: TenantId,
        settings: ProviderSettings,
    ) -> Result<Provider> {
        self.inner.create_provider(tenant, settings).await
    }

    async fn provider(&self, tenant: TenantId, id: ProviderId) -> Result<Provider> {
        self.inner.provider(tenant, id).await
    }

    async fn list_providers(&self, tenant: TenantId) -> Result<Vec<Provider>> {
        self.inner.list_providers(tenant).await
    }

    async fn update_provider(
        &self,
        tenant: TenantId,
        id: ProviderId,
        settings: ProviderSettings,
    ) -> Result<Provider> {
        self.inner.update_provider(tenant, id, settings).await
    }

    async fn delete_provider(&self, tenant: TenantId, id: ProviderId) -> Result<()> {
        self.inner.delete_provider(tenant, id).await
    }

    async fn active_provider(&self, tenant: TenantId) -> Result<Option<ProviderConfig>> {
        self.inner.active_provider(tenant).await
    }
}

#[async_trait]
impl Queue for Refusing {
    async fn complete(
        &self,
        outcomes: Vec<Outcome>,
        captures: Vec<NewCapture>,
    ) -> Result<Vec<bool>> {
        if self.refuse.load(Ordering::SeqCst) {
            let mut refused = self.refused.lock().unwrap();
            refused.extend(outcomes.iter().map(|o| o.recipient));
            return Err(StoreError::Unavailable("database or disk is full".into()));
        }
        self.inner.complete(outcomes, captures).await
    }

    async fn heartbeat(&self, node: NodeRecord) -> Result<()> {
        self.inner.heartbeat(node).await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        self.inner.list_nodes().await
    }

    async fn submit(&self, message: NewMessage) -> Result<Submitted> {
        self.inner.submit(message).await
    }

    async fn submit_batch(&self, messages: Vec<NewMessage>) -> Result<Vec<Submitted>> {
        self.inner.submit_batch(messages).await
    }

    async fn message(&self, tenant: TenantId, id: MessageId) -> Result<MessageView> {
        self.inner.message(tenant, id).await
    }

    async fn list_messages(&self, tenant: TenantId, limit: u32) -> Result<Vec<MessageSummary>> {
        self.inner.list_messages(tenant, limit).await
    }

    async fn count_messages(&self, tenant: TenantId, since: i64) -> Result<MessageCounts> {
        self.inner.count_messages(tenant, since).await
    }

    async fn search_messages(
        &self,
        tenant: TenantId,
        query: MessageQuery,
    ) -> Result<Vec<MessageSummary>> {
        self.inner.search_messages(tenant, query).await
    }

    async fn message_contents(&self, ids: &[MessageId]) -> Result<Vec<MessageContent>> {
        self.inner.message_contents(ids).await
    }

    async fn claim(&self, request: ClaimRequest) -> Result<Vec<Claimed>> {
        self.inner.claim(request).await
    }

    async fn release(&self, leases: Vec<(RecipientId, i64)>) -> Result<()> {
        self.inner.release(leases).await
    }

    async fn next_due(&self, exclude_tenants: &[TenantId]) -> Result<Option<i64>> {
        self.inner.next_due(exclude_tenants).await
    }

    async fn list_captured(&self, tenant: TenantId, limit: u32) -> Result<Vec<Captured>> {
        self.inner.list_captured(tenant, limit).await
    }

    async fn release_earlier_incarnations(
        &self,
        node: &str,
        incarnation: &str,
        now: i64,
    ) -> Result<u64> {
        self.inner
            .release_earlier_incarnations(node, incarnation, now)
            .await
    }

    async fn release_stale_nodes(&self, stale_before: i64, now: i64) -> Result<Vec<(String, u64)>> {
        self.inner.release_stale_nodes(stale_before, now).await
    }
}

#[async_trait]
impl Sessions for Refusing {
    async fn set_operator_password(
        &self,
        email: EmailAddress,
        password_hash: String,
    ) -> Result<()> {
        self.inner.set_operator_password(email, password_hash).await
    }

    async fn set_person_password(
        &self,
        tenant: TenantId,
        person: PersonId,
        password_hash: String,
    ) -> Result<()> {
        self.inner
            .set_person_password(tenant, person, password_hash)
            .await
    }

    async fn credentials(&self, email: &str) -> Result<Vec<Credential>> {
        self.inner.credentials(email).await
    }

    async fn create_session(&self, session: NewSession) -> Result<()> {
        self.inner.create_session(session).await
    }

    async fn session_by_hash(&self, hash: &str, now: i64) -> Result<Option<Session>> {
        self.inner.session_by_hash(hash, now).await
    }

    async fn delete_session(&self, hash: &str) -> Result<()> {
        self.inner.delete_session(hash).await
    }
}

/// Polls `probe` until it returns `Some`, failing the test after [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn message(tenant: TenantId, to: &str) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        tenant_id: tenant,
        idempotency_key: None,
        subject: Subject::parse("refused outcome").unwrap(),
        text: Some("body".into()),
        html: None,
        reply_to: None,
        headers: vec![],
        to: vec![EmailAddress::parse(to).unwrap().into()],
        cc: vec![],
        bcc: vec![],
        used_fallback: false,
        created_at: now_ms(),
        on_behalf_of: None,
        test_provider: None,
        priority: 0,
        max_queued: None,
        max_pending_tests: None,
    }
}

/// A worker over `store` whose system default relay is `smtp`.
fn worker(store: Arc<Refusing>, smtp: &TestSmtpServer, lease: Duration) -> Worker {
    worker_standing(store, smtp, lease, None)
}

/// [`worker`], with the node's standing among the others (see `WorkerConfig::standing`).
fn worker_standing(
    store: Arc<Refusing>,
    smtp: &TestSmtpServer,
    lease: Duration,
    standing: Option<Arc<AtomicI64>>,
) -> Worker {
    let target = Target {
        host: SmtpHost::parse("127.0.0.1").unwrap(),
        port: Port::new(smtp.port().into()).unwrap(),
        security: Security::None,
        tls: TlsSettings::default(),
        helo_name: "herald.test".into(),
        timeouts: Timeouts::default(),
        egress: None,
        allow_plaintext_auth: false,
    };
    let default = DefaultProvider {
        transport: DefaultProvider::relay(target, None),
        from: EmailAddress::parse("herald@example.com").unwrap(),
        from_name: None,
        fallback: None,
    };
    Worker::new(
        store,
        Arc::new(Sealer::new(&Sealer::generate_key())),
        Arc::new(default),
        Arc::new(ProviderCache::new(Duration::from_secs(1))),
        WorkerConfig {
            lease,
            poll: Duration::from_millis(50),
            standing,
            ..WorkerConfig::default()
        },
    )
}

/// A store on a fresh database that refuses outcomes until told otherwise.
fn refusing_store(dir: &tempfile::TempDir) -> Arc<Refusing> {
    Arc::new(Refusing {
        inner: SqliteStore::open(&dir.path().join("herald.db")).unwrap(),
        refuse: AtomicBool::new(true),
        refused: Mutex::new(HashSet::new()),
    })
}

#[tokio::test]
async fn outcomes_refused_by_the_store_are_committed_once_it_accepts_writes_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = refusing_store(&dir);
    let tenant = store
        .create_tenant(TenantSlug::parse("acme").unwrap(), "Acme".into())
        .await
        .unwrap();
    let addresses = ["a@example.com", "b@example.com", "c@example.com"];
    let mut ids = Vec::new();
    for to in addresses {
        ids.push(store.submit(message(tenant.id, to)).await.unwrap().id);
    }

    let smtp = TestSmtpServer::start().await;
    // A lease far longer than the test: only a lost outcome could make a
    // recipient due again, and then it would be sent twice.
    let worker = worker(store.clone(), &smtp, Duration::from_secs(600));
    let stats = worker.stats();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(worker.run(shutdown));

    // Every message reaches the server, and the store refuses every outcome.
    smtp.wait_for_messages(addresses.len(), DEADLINE).await;
    eventually("every outcome refused at least once", || async {
        (store.refused.lock().unwrap().len() == addresses.len()).then_some(())
    })
    .await;
    assert!(store.refusing_writes(), "readiness sees the refusal");
    for id in &ids {
        let view = store.message(tenant.id, *id).await.unwrap();
        assert_eq!(view.recipients[0].status, RecipientStatus::Sending);
    }

    // The store takes writes again: the kept outcomes are committed.
    store.refuse.store(false, Ordering::SeqCst);
    for id in &ids {
        eventually("the recipient recorded as sent", || async {
            let view = store.message(tenant.id, *id).await.unwrap();
            (view.recipients[0].status == RecipientStatus::Sent).then_some(())
        })
        .await;
    }
    stop.send(true).unwrap();
    running.await.unwrap();

    // Each message went to the server exactly once.
    let received = smtp.messages();
    let mut rcpts: Vec<String> = received.iter().flat_map(|m| m.rcpt_to.clone()).collect();
    rcpts.sort();
    assert_eq!(rcpts, addresses.map(String::from).to_vec());
    assert!(WorkerStats::get(&stats.record_failures) >= 1);
    assert_eq!(WorkerStats::get(&stats.dropped), 0);
    assert_eq!(WorkerStats::get(&stats.recorded), addresses.len() as u64);
}

/// An outcome the store still refuses when its lease ends is given up with a
/// warning: the recipient is due again, claimed again and sent again (what a
/// lease's expiry means), and the outcome of the latest claim is the one kept.
#[tokio::test]
async fn an_outcome_still_refused_when_its_lease_ends_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = refusing_store(&dir);
    let tenant = store
        .create_tenant(TenantSlug::parse("acme").unwrap(), "Acme".into())
        .await
        .unwrap();
    let id = store
        .submit(message(tenant.id, "a@example.com"))
        .await
        .unwrap()
        .id;
    let smtp = TestSmtpServer::start().await;
    let worker = worker(store.clone(), &smtp, Duration::from_secs(2));
    let stats = worker.stats();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(worker.run(shutdown));

    eventually("an outcome dropped at the end of its lease", || async {
        (WorkerStats::get(&stats.dropped) >= 1).then_some(())
    })
    .await;
    store.refuse.store(false, Ordering::SeqCst);
    eventually("the recipient recorded as sent", || async {
        let view = store.message(tenant.id, id).await.unwrap();
        (view.recipients[0].status == RecipientStatus::Sent).then_some(())
    })
    .await;
    stop.send(true).unwrap();
    running.await.unwrap();

    // Every send's outcome was recorded, dropped, or (offered late for the
    // first time) refused by the fence; only the latest claim's was recorded.
    let sends = smtp.messages().len() as u64;
    assert_eq!(
        sends,
        WorkerStats::get(&stats.dropped)
            + WorkerStats::get(&stats.refused)
            + WorkerStats::get(&stats.recorded)
    );
    assert_eq!(WorkerStats::get(&stats.recorded), 1);
    let view = store.message(tenant.id, id).await.unwrap();
    assert_eq!(
        view.recipients[0].attempts.len(),
        1,
        "only the kept outcome is recorded"
    );
}

/// Once this node's last heartbeat is older than the others' patience, they
/// may give its leases back and send its mail: it starts no send of its own
/// then (the mail is given back, untried), and sends again once its standing
/// is renewed.
#[tokio::test]
async fn a_node_whose_heartbeats_are_late_starts_no_send() {
    let dir = tempfile::tempdir().unwrap();
    let store = refusing_store(&dir);
    store.refuse.store(false, Ordering::SeqCst);
    let tenant = store
        .create_tenant(TenantSlug::parse("acme").unwrap(), "Acme".into())
        .await
        .unwrap();
    let id = store
        .submit(message(tenant.id, "a@example.com"))
        .await
        .unwrap()
        .id;

    let smtp = TestSmtpServer::start().await;
    // The others took this node for gone a minute ago.
    let standing = Arc::new(AtomicI64::new(now_ms() - 60_000));
    let worker = worker_standing(
        store.clone(),
        &smtp,
        Duration::from_secs(600),
        Some(standing.clone()),
    );
    let stats = worker.stats();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(worker.run(shutdown));

    // The worker claims nothing while it stands so, though its every turn
    // would otherwise have claimed the due message.
    eventually("a few turns of the worker's loop", || async {
        (WorkerStats::get(&stats.late_turns) >= 3).then_some(())
    })
    .await;
    assert_eq!(WorkerStats::get(&stats.claimed), 0, "nothing was claimed");
    assert_eq!(smtp.connections(), 0, "nothing was sent");
    let view = store.message(tenant.id, id).await.unwrap();
    assert!(view.recipients[0].attempts.is_empty(), "{view:?}");

    // A heartbeat is recorded again: the mail goes out.
    standing.store(now_ms() + 600_000, Ordering::SeqCst);
    smtp.wait_for_messages(1, DEADLINE).await;
    eventually("the recipient recorded as sent", || async {
        let view = store.message(tenant.id, id).await.unwrap();
        (view.recipients[0].status == RecipientStatus::Sent).then_some(())
    })
    .await;
    stop.send(true).unwrap();
    running.await.unwrap();
}
