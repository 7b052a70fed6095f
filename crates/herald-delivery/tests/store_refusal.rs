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
use herald_delivery::{Worker, WorkerConfig, WorkerStats};
use herald_store::*;
use herald_testsmtp::TestSmtpServer;

mod common;
use common::DEADLINE;

/// The real SQLite store, except that `complete` fails as a full disk makes
/// it fail while `refuse` is on; every other call goes to the real store.
struct Refusing {
    inner: SqliteStore,
    refuse: AtomicBool,
    /// Every recipient whose outcome was refused at least once.
    refused: Mutex<HashSet<RecipientId>>,
}

/// Implements one of the store's traits for [`Refusing`]: each listed method
/// passes its call to the real store unchanged; the methods after `and` are
/// written out.
macro_rules! forward_to_inner {
    (
        impl $capability:ident {
            $($name:ident($($arg:ident: $ty:ty),*) -> $answer:ty;)*
        }
        $(and { $($own:tt)* })?
    ) => {
        #[async_trait]
        impl $capability for Refusing {
            $(async fn $name(&self, $($arg: $ty),*) -> Result<$answer> {
                $capability::$name(&self.inner, $($arg),*).await
            })*
            $($($own)*)?
        }
    };
}

forward_to_inner! {
    impl Store {
        ping() -> ();
    }
    and {
        fn refusing_writes(&self) -> bool {
            self.refuse.load(Ordering::SeqCst) || self.inner.refusing_writes()
        }
    }
}

forward_to_inner! {
    impl Tenants {
        create_tenant(slug: TenantSlug, name: String) -> Tenant;
        tenant_by_slug(slug: &str) -> Tenant;
        list_tenants() -> Vec<Tenant>;
        set_entitlements(tenant: TenantId, credential_storage: bool) -> Tenant;
        set_active_provider(tenant: TenantId, provider: Option<ProviderId>, effective_from: i64) -> Tenant;
        refresh_properties(tenant: TenantId, now: i64) -> Tenant;
        create_token(token: NewToken) -> TokenRecord;
        token_by_hash(hash: &str) -> Option<TokenRecord>;
        list_tokens(tenant: TenantId) -> Vec<TokenRecord>;
        revoke_token(tenant: TenantId, id: TokenId) -> ();
        operator_token_exists() -> bool;
        create_person(tenant: TenantId, person: Person) -> Person;
        person(tenant: TenantId, id: PersonId) -> Person;
        list_persons(tenant: TenantId) -> Vec<Person>;
        person_by_email(tenant: TenantId, email: &EmailAddress) -> Option<Person>;
        delete_person(tenant: TenantId, id: PersonId) -> ();
        audit(entry: AuditEntry) -> ();
        list_audit(tenant: TenantId, limit: u32) -> Vec<AuditEntry>;
        list_operator_tokens() -> Vec<TokenRecord>;
        revoke_operator_token(id: TokenId) -> ();
        set_bootstrap_token(token: NewToken) -> BootstrapOutcome;
    }
}

forward_to_inner! {
    impl Configuration {
        reseal_secrets(reseal: Resealer) -> usize;
        create_server(tenant: TenantId, settings: ServerSettings) -> SmtpServer;
        server(tenant: TenantId, id: ServerId) -> SmtpServer;
        list_servers(tenant: TenantId) -> Vec<SmtpServer>;
        update_server(tenant: TenantId, id: ServerId, settings: ServerSettings) -> SmtpServer;
        delete_server(tenant: TenantId, id: ServerId) -> ();
        create_account(tenant: TenantId, account: NewAccount) -> SmtpAccount;
        account(tenant: TenantId, server: ServerId, id: AccountId) -> SmtpAccount;
        list_accounts(tenant: TenantId, server: ServerId) -> Vec<SmtpAccount>;
        delete_account(tenant: TenantId, server: ServerId, id: AccountId) -> ();
        create_provider(tenant: TenantId, settings: ProviderSettings) -> Provider;
        provider(tenant: TenantId, id: ProviderId) -> Provider;
        list_providers(tenant: TenantId) -> Vec<Provider>;
        update_provider(tenant: TenantId, id: ProviderId, settings: ProviderSettings) -> Provider;
        delete_provider(tenant: TenantId, id: ProviderId) -> ();
    }
}

forward_to_inner! {
    impl Ingress {
        create_smtp_credential(credential: NewSmtpCredential) -> SmtpCredential;
        list_smtp_credentials(tenant: TenantId) -> Vec<SmtpCredential>;
        smtp_credential(tenant: TenantId, id: SmtpCredentialId) -> Option<SmtpCredential>;
        revoke_smtp_credential(tenant: TenantId, id: SmtpCredentialId) -> ();
        smtp_login(username: &str) -> Option<(SmtpCredential, String)>;
        smtp_credential_used(id: SmtpCredentialId, now: i64) -> ();
        create_smtp_connector(tenant: TenantId, name: String, cidrs: Vec<ipnet::IpNet>, rate_limit_per_minute: Option<u32>) -> SmtpConnector;
        list_smtp_connectors(tenant: TenantId) -> Vec<SmtpConnector>;
        smtp_connector(tenant: TenantId, id: SmtpConnectorId) -> Option<SmtpConnector>;
        delete_smtp_connector(tenant: TenantId, id: SmtpConnectorId) -> ();
        all_smtp_connectors() -> Vec<SmtpConnector>;
    }
}

forward_to_inner! {
    impl DeliveryStore {
        claim(request: ClaimRequest) -> Vec<Claimed>;
        message_contents(ids: &[MessageId]) -> Vec<MessageContent>;
        release(leases: Vec<(RecipientId, i64)>) -> ();
        repin(leases: Vec<(RecipientId, i64)>, gateway: Option<GatewayId>, now: i64) -> u64;
        next_due(exclude_tenants: &[TenantId]) -> Option<i64>;
        active_provider(tenant: TenantId) -> Option<ProviderConfig>;
        provider_config(tenant: TenantId, provider: ProviderId) -> ProviderConfig;
    }
    and {
        async fn record_outcomes(
            &self,
            outcomes: Vec<Outcome>,
            captures: Vec<NewCapture>,
            lease: Option<EventLease>,
        ) -> Result<Completed> {
            if self.refuse.load(Ordering::SeqCst) {
                let mut refused = self.refused.lock().unwrap();
                refused.extend(outcomes.iter().map(|o| o.recipient));
                return Err(StoreError::Unavailable("database or disk is full".into()));
            }
            DeliveryStore::record_outcomes(&self.inner, outcomes, captures, lease).await
        }
    }
}

forward_to_inner! {
    impl Queue {
        heartbeat(node: NodeRecord) -> ();
        list_nodes() -> Vec<NodeRecord>;
        queue_depth() -> QueueDepth;
        submit(message: NewMessage) -> Submitted;
        submit_batch(messages: Vec<NewMessage>) -> Vec<Submitted>;
        message(tenant: TenantId, id: MessageId) -> MessageView;
        list_messages(tenant: TenantId, limit: u32) -> Vec<MessageSummary>;
        count_messages(tenant: TenantId, since: i64) -> MessageCounts;
        search_messages(tenant: TenantId, query: MessageQuery) -> Vec<MessageSummary>;
        list_captured(tenant: TenantId, limit: u32) -> Vec<Captured>;
        cancel_message(tenant: TenantId, id: MessageId) -> ();
        claim_for_gateway(claim: GatewayClaim) -> Vec<Claimed>;
        release_earlier_incarnations(node: &str, incarnation: &str, now: i64) -> u64;
        release_stale_nodes(stale_before: i64, now: i64) -> Vec<(String, u64)>;
    }
}

forward_to_inner! {
    impl Webhooks {
        create_webhook(webhook: NewWebhook) -> Webhook;
        webhook(tenant: TenantId, id: WebhookId) -> Webhook;
        list_webhooks(tenant: TenantId) -> Vec<Webhook>;
        update_webhook(tenant: TenantId, id: WebhookId, change: WebhookChange, now: i64) -> Webhook;
        rotate_webhook_secret(tenant: TenantId, id: WebhookId, sealed_secret: String, previous_until: i64, now: i64) -> Webhook;
        delete_webhook(tenant: TenantId, id: WebhookId) -> ();
        webhook_deliveries(tenant: TenantId, id: WebhookId, limit: u32) -> Vec<WebhookDelivery>;
        webhook_secrets(tenant: TenantId, id: WebhookId, now: i64) -> (String, Option<String>);
        record_webhook_test(record: WebhookTestRecord) -> ();
        claim_webhook_events(claim: WebhookClaim) -> Vec<ClaimedEvent>;
        finish_webhook_events(attempts: Vec<WebhookAttempt>, disable_failing_before: i64) -> Vec<DisabledWebhook>;
        release_webhook_leases(node: &str, incarnation: &str, now: i64) -> u64;
        next_webhook_due() -> Option<i64>;
        prune_webhook_events(before: i64) -> u64;
    }
}

forward_to_inner! {
    impl Templates {
        create_template(template: NewTemplate) -> Template;
        template(tenant: TenantId, id: TemplateId) -> Template;
        template_named(tenant: TenantId, name: &str) -> Template;
        list_templates(tenant: TenantId) -> Vec<Template>;
        update_template(tenant: TenantId, id: TemplateId, fields: TemplateFields, now: i64) -> Template;
        delete_template(tenant: TenantId, id: TemplateId) -> ();
    }
}

forward_to_inner! {
    impl Schedules {
        create_schedule(schedule: NewSchedule) -> Schedule;
        schedule(tenant: TenantId, id: ScheduleId) -> Schedule;
        list_schedules(tenant: TenantId) -> Vec<Schedule>;
        update_schedule(tenant: TenantId, id: ScheduleId, fields: ScheduleFields, next_run: NextRun, now: i64) -> Schedule;
        delete_schedule(tenant: TenantId, id: ScheduleId) -> ();
        due_schedules(now: i64, limit: u32) -> Vec<Schedule>;
        next_schedule_due() -> Option<i64>;
        fire_schedule(firing: Firing, message: Option<NewMessage>) -> Option<ScheduleRun>;
        schedule_runs(tenant: TenantId, id: ScheduleId, limit: u32) -> Vec<ScheduleRun>;
    }
}

forward_to_inner! {
    impl Gateways {
        create_gateway(gateway: NewGateway) -> Gateway;
        gateway(tenant: TenantId, id: GatewayId) -> Gateway;
        list_gateways(tenant: TenantId) -> Vec<Gateway>;
        delete_gateway(tenant: TenantId, id: GatewayId) -> ();
        replace_gateway_token(tenant: TenantId, id: GatewayId, token_hash: String, now: i64) -> Gateway;
        gateway_by_token(hash: &str) -> Option<Gateway>;
        gateway_seen(seen: GatewaySeen) -> ();
        release_stale_gateway_instances(stale_before: i64, now: i64) -> Vec<(String, u64)>;
        pinned_to_gateway(gateway: GatewayId, recipients: &[RecipientId]) -> Vec<bool>;
        count_gateway_outcomes(gateway: GatewayId, instance: &str, delivered: u32, failed: u32, at: i64) -> ();
    }
}

forward_to_inner! {
    impl Sessions {
        set_operator_password(email: EmailAddress, password_hash: String) -> ();
        set_person_password(tenant: TenantId, person: PersonId, password_hash: String) -> ();
        credentials(email: &str) -> Vec<Credential>;
        create_session(session: NewSession) -> ();
        session_by_hash(hash: &str, now: i64) -> Option<Session>;
        delete_session(hash: &str) -> ();
    }
}

/// Polls `probe` until it returns `Some`, failing the test after [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    herald_testkit::eventually(what, DEADLINE, probe).await
}

/// Tenant `acme` in the store.
async fn acme(store: &Refusing) -> Tenant {
    let slug = TenantSlug::parse("acme").unwrap();
    store.create_tenant(slug, "Acme".into()).await.unwrap()
}

/// Stores a message to `to` for the tenant; returns its id.
async fn submit(store: &Refusing, tenant: &Tenant, to: &str) -> MessageId {
    store
        .submit(common::message(tenant.id, to, "refused outcome"))
        .await
        .unwrap()
        .id
}

/// Waits until the message's first recipient is recorded as sent.
async fn wait_until_sent(store: &Refusing, tenant: &Tenant, id: MessageId) {
    eventually("the recipient recorded as sent", || async {
        let view = store.message(tenant.id, id).await.unwrap();
        (view.recipients[0].status == RecipientStatus::Sent).then_some(())
    })
    .await;
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
    let config = WorkerConfig {
        lease,
        standing,
        ..WorkerConfig::default()
    };
    common::worker(store, smtp, None, config)
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
    let tenant = acme(&store).await;
    let addresses = ["a@example.com", "b@example.com", "c@example.com"];
    let mut ids = Vec::new();
    for to in addresses {
        ids.push(submit(&store, &tenant, to).await);
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
        wait_until_sent(&store, &tenant, *id).await;
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
    let tenant = acme(&store).await;
    let id = submit(&store, &tenant, "a@example.com").await;
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
    wait_until_sent(&store, &tenant, id).await;
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
    let tenant = acme(&store).await;
    let id = submit(&store, &tenant, "a@example.com").await;

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
    wait_until_sent(&store, &tenant, id).await;
    stop.send(true).unwrap();
    running.await.unwrap();
}
