//! The storage conformance suite: behaviour every `Store` implementation must show.
//!
//! Each case is an `async fn` taking a [`Fixture`]; the `conformance!` macro at
//! the end runs every case once on SQLite (`sqlite::…`) and once on PostgreSQL
//! (`postgres::…`), each on a fresh database of its own. PostgreSQL is reached
//! at `HERALD_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`); each case
//! creates a database `herald_test_<random>` there (`herald_testkit::TestDatabase`),
//! dropped afterwards even when the case panics. Without a server the PostgreSQL
//! cases are skipped with one line each, except when `HERALD_REQUIRE` names
//! `postgres` or `CI` is set, where they fail.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use herald_core::webhook::{EventSet, EventType};
use herald_core::{
    AccountId, EmailAddress, GatewayId, HeaderName, HeaderValue, Mailbox, Mechanism, MessageId,
    NodeRole, PersonId, PersonRole, Port, ProviderId, RecipientId, RecipientStatus, Role, Security,
    ServerId, SmtpCredentialId, SmtpHost, Subject, TenantId, TenantSlug, TokenId, WebhookId,
};
use herald_store::{
    AttemptRecord, AuditEntry, BootstrapOutcome, Captured, ClaimRequest, Claimed, Completed,
    GatewayClaim, HandoffLease, MessageSummary, MessageView, NewAccount, NewCapture, NewMessage,
    NewSmtpCredential, NewToken, NextRun, NextState, NodeRecord, OAuth2Client, OnBehalf, Outcome,
    Person, PgStore, Provider, ProviderSettings, RecipientKind, ServerSettings, SmtpAccount,
    SmtpServer, SqliteStore, Store, StoreError, Submitted, Tenant, TokenRecord,
};
use herald_store::{
    AttemptResult, ClaimedEvent, DisabledWebhook, EventLease, NewWebhook, Webhook, WebhookAttempt,
    WebhookChange, WebhookClaim, WebhookDeliveryStatus, WebhookNext, WebhookOutcome,
    WebhookTestRecord,
};
use herald_store::{Gateway, GatewayInstance, GatewaySeen, NewGateway, gateway_lease_owner};
use herald_testkit::TestDatabase;

mod builders;
use builders::*;
use serde_json::json;

/// A store on a fresh database, and what keeps that database alive.
struct Fixture {
    store: Arc<dyn Store>,
    backend: Backend,
}

enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

impl Fixture {
    /// Another store on the same database, as a second node would open it.
    async fn reopen(&self) -> Arc<dyn Store> {
        match &self.backend {
            Backend::Sqlite(dir) => {
                Arc::new(SqliteStore::open(&dir.path().join("herald.db")).unwrap())
            }
            Backend::Postgres(database) => {
                Arc::new(PgStore::connect(database.url()).await.unwrap())
            }
        }
    }
}

/// Declares `Fixture` methods that make the store call of the same name and
/// unwrap its answer: for the calls a case expects to succeed, so that a
/// failure fails the case with the store's error.
macro_rules! unwrapped {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $answer:ty;)*) => {
        impl Fixture {
            $(async fn $name(&self, $($arg: $ty),*) -> $answer {
                self.store.$name($($arg),*).await.unwrap()
            })*
        }
    };
}

unwrapped! {
    submit(message: NewMessage) -> Submitted;
    claim(request: ClaimRequest) -> Vec<Claimed>;
    create_server(tenant: TenantId, settings: ServerSettings) -> SmtpServer;
    update_server(tenant: TenantId, id: ServerId, settings: ServerSettings) -> SmtpServer;
    create_account(tenant: TenantId, account: NewAccount) -> SmtpAccount;
    create_provider(tenant: TenantId, settings: ProviderSettings) -> Provider;
    create_person(tenant: TenantId, person: Person) -> Person;
    create_token(token: NewToken) -> TokenRecord;
    set_bootstrap_token(token: NewToken) -> BootstrapOutcome;
    token_by_hash(hash: &str) -> Option<TokenRecord>;
    account(tenant: TenantId, server: ServerId, id: AccountId) -> SmtpAccount;
    set_active_provider(tenant: TenantId, provider: Option<ProviderId>, effective_from: i64) -> Tenant;
    message(tenant: TenantId, id: MessageId) -> MessageView;
    list_messages(tenant: TenantId, limit: u32) -> Vec<MessageSummary>;
    list_captured(tenant: TenantId, limit: u32) -> Vec<Captured>;
    next_due(exclude_tenants: &[TenantId]) -> Option<i64>;
    heartbeat(node: NodeRecord) -> ();
    list_servers(tenant: TenantId) -> Vec<SmtpServer>;
    list_tokens(tenant: TenantId) -> Vec<TokenRecord>;
    release_stale_nodes(stale_before: i64, now: i64) -> Vec<(String, u64)>;
    claim_for_gateway(claim: GatewayClaim) -> Vec<Claimed>;
    repin(leases: Vec<(RecipientId, i64)>, gateway: Option<GatewayId>, now: i64) -> u64;
    server(tenant: TenantId, id: ServerId) -> SmtpServer;
    update_provider(tenant: TenantId, id: ProviderId, settings: ProviderSettings) -> Provider;
    refresh_properties(tenant: TenantId, now: i64) -> Tenant;
    create_gateway(gateway: NewGateway) -> Gateway;
    gateway(tenant: TenantId, id: GatewayId) -> Gateway;
    list_gateways(tenant: TenantId) -> Vec<Gateway>;
    delete_gateway(tenant: TenantId, id: GatewayId) -> ();
    gateway_by_token(hash: &str) -> Option<Gateway>;
    gateway_seen(seen: GatewaySeen) -> ();
    count_gateway_outcomes(gateway: GatewayId, instance: &str, delivered: u32, failed: u32, at: i64) -> ();
    release_stale_gateway_instances(stale_before: i64, now: i64) -> Vec<(String, u64)>;
    webhook(tenant: TenantId, id: WebhookId) -> Webhook;
    webhook_deliveries(tenant: TenantId, id: WebhookId, limit: u32) -> Vec<herald_store::WebhookDelivery>;
    webhook_secrets(tenant: TenantId, id: WebhookId, now: i64) -> (String, Option<String>);
    next_webhook_due() -> Option<i64>;
    release_webhook_leases(node: &str, incarnation: &str, now: i64) -> u64;
    schedule(tenant: TenantId, id: herald_core::ScheduleId) -> herald_store::Schedule;
    update_schedule(tenant: TenantId, id: herald_core::ScheduleId, fields: herald_store::ScheduleFields, next_run: NextRun, now: i64) -> herald_store::Schedule;
    delete_schedule(tenant: TenantId, id: herald_core::ScheduleId) -> ();
    due_schedules(now: i64, limit: u32) -> Vec<herald_store::Schedule>;
    schedule_runs(tenant: TenantId, id: herald_core::ScheduleId, limit: u32) -> Vec<herald_store::ScheduleRun>;
    list_nodes() -> Vec<NodeRecord>;
    release_earlier_incarnations(node: &str, incarnation: &str, now: i64) -> u64;
    submit_batch(messages: Vec<NewMessage>) -> Vec<Submitted>;
    smtp_credential(tenant: TenantId, id: SmtpCredentialId) -> Option<herald_store::SmtpCredential>;
    smtp_connector(tenant: TenantId, id: herald_core::SmtpConnectorId) -> Option<herald_store::SmtpConnector>;
    revoke_smtp_credential(tenant: TenantId, id: SmtpCredentialId) -> ();
    delete_smtp_connector(tenant: TenantId, id: herald_core::SmtpConnectorId) -> ();
    person(tenant: TenantId, id: PersonId) -> Person;
    list_persons(tenant: TenantId) -> Vec<Person>;
    person_by_email(tenant: TenantId, email: &EmailAddress) -> Option<Person>;
    operator_token_exists() -> bool;
    list_operator_tokens() -> Vec<TokenRecord>;
    revoke_operator_token(id: TokenId) -> ();
    list_audit(tenant: TenantId, limit: u32) -> Vec<AuditEntry>;
    provider(tenant: TenantId, id: ProviderId) -> Provider;
    list_providers(tenant: TenantId) -> Vec<Provider>;
    delete_server(tenant: TenantId, id: ServerId) -> ();
    delete_account(tenant: TenantId, server: ServerId, id: AccountId) -> ();
    list_webhooks(tenant: TenantId) -> Vec<Webhook>;
    update_webhook(tenant: TenantId, id: WebhookId, change: WebhookChange, now: i64) -> Webhook;
    rotate_webhook_secret(tenant: TenantId, id: WebhookId, sealed_secret: String, previous_until: i64, now: i64) -> Webhook;
    delete_webhook(tenant: TenantId, id: WebhookId) -> ();
    template(tenant: TenantId, id: herald_core::TemplateId) -> herald_store::Template;
    list_templates(tenant: TenantId) -> Vec<herald_store::Template>;
    list_schedules(tenant: TenantId) -> Vec<herald_store::Schedule>;
    next_schedule_due() -> Option<i64>;
}

impl Fixture {
    /// The store's answer to outcomes, unwrapped.
    async fn complete_all(&self, outcomes: Vec<Outcome>, captures: Vec<NewCapture>) -> Completed {
        self.store.complete(outcomes, captures).await.unwrap()
    }

    /// Which outcomes the store recorded.
    async fn complete(&self, outcomes: Vec<Outcome>, captures: Vec<NewCapture>) -> Vec<bool> {
        self.complete_all(outcomes, captures).await.accepted
    }
}

impl Fixture {
    /// This store and another on the same database, as two nodes use it.
    async fn two_nodes(&self) -> [Arc<dyn Store>; 2] {
        [self.store.clone(), self.reopen().await]
    }

    /// The first recipient the claim leases (the claim must lease one).
    async fn claim_one(&self, request: ClaimRequest) -> Claimed {
        self.claim(request).await.remove(0)
    }
}

/// What makes a database refuse writes for a while: on SQLite another
/// connection holding the write lock (writes fail once the busy timeout
/// passes), on PostgreSQL read-only sessions.
enum WriteBlock {
    Sqlite(rusqlite::Connection),
    Postgres,
}

impl Fixture {
    /// Makes the database refuse writes until [`Fixture::accept_writes`].
    async fn refuse_writes(&self) -> WriteBlock {
        match &self.backend {
            Backend::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("herald.db")).unwrap();
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                WriteBlock::Sqlite(conn)
            }
            Backend::Postgres(database) => {
                database.set_read_only(true).await;
                WriteBlock::Postgres
            }
        }
    }

    /// Runs `statement` on the database beside the store, as an older
    /// version of Herald or an operator could have.
    async fn execute(&self, statement: &str) {
        match &self.backend {
            Backend::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("herald.db")).unwrap();
                conn.execute_batch(statement).unwrap();
            }
            Backend::Postgres(database) => {
                database
                    .client()
                    .await
                    .batch_execute(statement)
                    .await
                    .unwrap();
            }
        }
    }

    /// Lets the database take writes again.
    async fn accept_writes(&self, block: WriteBlock) {
        match (block, &self.backend) {
            (WriteBlock::Sqlite(conn), _) => conn.execute_batch("ROLLBACK").unwrap(),
            (WriteBlock::Postgres, Backend::Postgres(database)) => {
                database.set_read_only(false).await
            }
            (WriteBlock::Postgres, Backend::Sqlite(_)) => {
                unreachable!("a block of its own backend")
            }
        }
    }
}

fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("herald.db")).unwrap();
    Fixture {
        store: Arc::new(store),
        backend: Backend::Sqlite(dir),
    }
}

/// A PostgreSQL store on a database of its own, or `None` when the PostgreSQL
/// cases are skipped because no server answers.
async fn postgres() -> Option<Fixture> {
    let database = TestDatabase::create().await?;
    let store = PgStore::connect(database.url()).await.unwrap();
    Some(Fixture {
        store: Arc::new(store),
        backend: Backend::Postgres(database),
    })
}

fn conflict<T: std::fmt::Debug>(result: herald_store::Result<T>) -> String {
    match result {
        Err(StoreError::Conflict(message)) => message,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn invalid_field<T: std::fmt::Debug>(result: herald_store::Result<T>) -> String {
    match result {
        Err(StoreError::Invalid(e)) => e.field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

fn not_found<T: std::fmt::Debug>(result: herald_store::Result<T>) {
    assert!(
        matches!(result, Err(StoreError::NotFound)),
        "expected not found, got {result:?}"
    );
}

async fn a_claim_leases_each_recipient_once_until_the_lease_expires(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    f.submit(message(t, &["a@x.example", "b@x.example"], None, 1_000))
        .await;

    let first = f.claim(claim("n1", 2_000, 10_000)).await;
    assert_eq!(first.len(), 2);
    assert!(
        f.claim(claim("n2", 3_000, 10_000)).await.is_empty(),
        "leased rows are not claimed twice"
    );
    let again = f.claim(claim("n2", 12_001, 10_000)).await;
    assert_eq!(again.len(), 2, "an expired lease is claimed again");
    assert!(again.iter().all(|c| c.attempt == 2));
    assert!(again.iter().all(|c| c.lease_until == 22_001));
}

/// A claim of `gateway`'s instance `gw-1` of the tenant's pinned mail at `now`.
fn gateway_claim(gateway: GatewayId, tenant: TenantId, now: i64) -> GatewayClaim {
    GatewayClaim {
        gateway,
        tenant,
        owner: "gw-1".into(),
        incarnation: "gw-1-first".into(),
        now,
        lease_ms: 10_000,
        limit: 100,
    }
}

async fn pinned_mail_is_claimed_by_its_gateway_only(f: Fixture) {
    let acme = tenant(&*f.store, "acme").await;
    let globex = tenant(&*f.store, "globex").await;
    let (gateway, other) = (GatewayId::new(), GatewayId::new());
    let pinned = f
        .submit(NewMessage {
            gateway_id: Some(gateway),
            ..message(acme, &["in@acme.example"], None, 1_000)
        })
        .await;
    f.submit(message(acme, &["out@acme.example"], None, 1_000))
        .await;

    // Nodes take the unpinned mail only, and a pinned backlog that is due
    // does not make them wake: their next due time is their own lease's end.
    let by_node = f.claim(claim("n1", 2_000, 10_000)).await;
    assert_eq!(by_node.len(), 1);
    assert_eq!(by_node[0].address.as_ref(), "out@acme.example");
    assert!(f.claim(claim("n2", 2_000, 10_000)).await.is_empty());
    assert_eq!(f.next_due(&[]).await, Some(12_000));
    assert_eq!(f.next_due(&[globex]).await, Some(12_000));

    // Another gateway, or the gateway on another tenant's behalf, finds nothing.
    assert!(
        f.claim_for_gateway(gateway_claim(other, acme, 2_000))
            .await
            .is_empty()
    );
    assert!(
        f.claim_for_gateway(gateway_claim(gateway, globex, 2_000))
            .await
            .is_empty()
    );
    let by_gateway = f
        .claim_for_gateway(gateway_claim(gateway, acme, 2_000))
        .await;
    assert_eq!(by_gateway.len(), 1);
    assert_eq!(by_gateway[0].message, pinned.id);
    assert_eq!(by_gateway[0].tenant, acme);
    assert_eq!(by_gateway[0].lease_until, 12_000);
    assert!(
        f.claim_for_gateway(gateway_claim(gateway, acme, 3_000))
            .await
            .is_empty()
    );

    // An instance that died: its lease runs out, and the gateway (never a node) takes it again.
    assert!(
        f.claim(claim("n1", 30_000, 10_000))
            .await
            .iter()
            .all(|c| c.message != pinned.id)
    );
    let again = f
        .claim_for_gateway(gateway_claim(gateway, acme, 12_001))
        .await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    let view = f.message(acme, pinned.id).await;
    assert_eq!(view.recipients[0].status, RecipientStatus::Sending);

    // What a gateway may report outcomes for: its own pinned recipients only.
    let ids = [again[0].recipient, by_node[0].recipient, RecipientId::new()];
    assert_eq!(
        f.store.pinned_to_gateway(gateway, &ids).await.unwrap(),
        [true, false, false]
    );
    assert_eq!(
        f.store.pinned_to_gateway(other, &ids).await.unwrap(),
        [false, false, false]
    );
}

async fn a_route_found_pinned_is_handed_over_without_an_attempt(f: Fixture) {
    let acme = tenant(&*f.store, "acme").await;
    let gateway = GatewayId::new();
    f.submit(message(acme, &["a@acme.example"], None, 1_000))
        .await;
    let held = f.claim_one(claim("n1", 2_000, 10_000)).await;

    // A stale lease hands nothing over.
    assert_eq!(
        f.repin(
            vec![(held.recipient, held.lease_token - 1)],
            Some(gateway),
            2_500
        )
        .await,
        0
    );
    assert_eq!(
        f.repin(
            vec![(held.recipient, held.lease_token)],
            Some(gateway),
            2_500
        )
        .await,
        1
    );
    assert!(f.claim(claim("n1", 3_000, 10_000)).await.is_empty());
    let taken = f
        .claim_for_gateway(gateway_claim(gateway, acme, 3_000))
        .await;
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].attempt, 1, "the node's claim counted no attempt");

    // The gateway finds its route no longer pinned: back to the nodes.
    assert_eq!(
        f.repin(
            vec![(taken[0].recipient, taken[0].lease_token)],
            None,
            3_500
        )
        .await,
        1
    );
    assert!(
        f.claim_for_gateway(gateway_claim(gateway, acme, 4_000))
            .await
            .is_empty()
    );
    let back = f.claim_one(claim("n1", 4_000, 10_000)).await;
    assert_eq!(back.recipient, held.recipient);
    assert_eq!(back.attempt, 1);
}

/// A message stored under a hand-off lease is claimed in the transaction
/// that stores it: its recipients come back claimed (lease token 1, first
/// attempt), no claim takes them while the lease lasts, their outcome is
/// accepted, and what the worker is given is what would be read back.
/// A duplicate is handed nothing; an expired hand-off lease is claimed again,
/// and a restarted node gets its earlier process's hand-offs back.
async fn a_handed_message_is_claimed_as_it_is_stored(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let lease = HandoffLease {
        node: "n1".into(),
        incarnation: "n1-first".into(),
        until: 11_000,
    };
    let mut m = message(t, &["a@x.example", "b@x.example"], Some("k"), 1_000);
    m.cc = vec![Mailbox::parse("Cy <c@x.example>").unwrap()];
    m.handoff = Some(lease.clone());
    let content = m.content();
    let stored = f.submit(m.clone()).await;
    assert_eq!(stored.handed.len(), 3, "every recipient, Cc included");
    for c in &stored.handed {
        assert_eq!((c.message, c.tenant), (stored.id, t));
        assert_eq!((c.lease_token, c.lease_until, c.attempt), (1, 11_000, 1));
    }
    let addresses: Vec<&str> = stored.handed.iter().map(|c| c.address.as_ref()).collect();
    assert_eq!(addresses, ["a@x.example", "b@x.example", "c@x.example"]);

    let read = f.store.message_contents(&[stored.id]).await.unwrap();
    assert_eq!(format!("{:?}", read[0]), format!("{content:?}"));
    let view = f.message(t, stored.id).await;
    assert!(
        view.recipients
            .iter()
            .all(|r| r.status == RecipientStatus::Sending)
    );
    assert!(
        f.claim(claim("n2", 2_000, 10_000)).await.is_empty(),
        "handed recipients are leased already"
    );

    let again = f.submit(m).await;
    assert!(again.duplicate && again.handed.is_empty());

    let outcome = Outcome {
        recipient: stored.handed[0].recipient,
        lease_token: 1,
        next: NextState::Sent,
        attempt: attempt(RecipientStatus::Sent),
    };
    // No webhook of the tenant wants events: none written, none to look for.
    let completed = f.complete_all(vec![outcome], vec![]).await;
    assert_eq!(
        completed,
        Completed {
            accepted: vec![true],
            events: 0,
            handed: vec![]
        }
    );
    let late = f.claim(claim("n2", 11_001, 10_000)).await;
    assert_eq!(late.len(), 2, "the unsent ones, once the lease ended");
    assert!(late.iter().all(|c| c.attempt == 2 && c.lease_token == 2));

    let mut next = message(t, &["d@x.example"], None, 12_000);
    next.handoff = Some(HandoffLease {
        until: 600_000,
        ..lease
    });
    let next = f.submit(next).await;
    let released = f
        .release_earlier_incarnations("n1", "n1-second", 13_000)
        .await;
    assert_eq!(released, 1);
    let view = f.message(t, next.id).await;
    assert_eq!(view.recipients[0].status, RecipientStatus::Queued);
}

async fn a_stale_lease_cannot_record_its_outcome(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let m = f.submit(message(t, &["a@x.example"], None, 1_000)).await;
    let stale = f.claim_one(claim("n1", 2_000, 1_000)).await;
    let fresh = f.claim_one(claim("n2", 3_001, 1_000)).await;
    assert!(fresh.lease_token > stale.lease_token);

    let outcome = |c: &herald_store::Claimed, next| Outcome {
        recipient: c.recipient,
        lease_token: c.lease_token,
        next,
        attempt: attempt(RecipientStatus::Sent),
    };
    let late = f
        .complete(
            vec![outcome(&stale, NextState::Deferred { until: 9_999 })],
            vec![],
        )
        .await;
    assert_eq!(late, vec![false]);
    let current = f
        .complete(vec![outcome(&fresh, NextState::Sent)], vec![])
        .await;
    assert_eq!(current, vec![true]);
    let again = f
        .complete(vec![outcome(&fresh, NextState::Failed)], vec![])
        .await;
    assert_eq!(
        again,
        vec![false],
        "a finished recipient takes no second outcome"
    );

    let view = f.message(t, m.id).await;
    assert_eq!(view.status, RecipientStatus::Sent);
    assert_eq!(view.recipients[0].attempts.len(), 1);
}

async fn many_outcomes_in_one_call_each_keep_their_own_attempt(f: Fixture) {
    // 45 outcomes: SQLite inserts their attempts 32, 8 and 1 to a statement.
    let t = tenant(&*f.store, "acme").await;
    let mut ids = Vec::new();
    for i in 0..45 {
        let to = format!("r{i}@x.example");
        ids.push(f.submit(message(t, &[to.as_str()], None, 1_000)).await.id);
    }
    let claimed = f.claim(claim("n1", 1_000, 60_000)).await;
    assert_eq!(claimed.len(), 45);
    let by_message: HashMap<MessageId, &Claimed> = claimed.iter().map(|c| (c.message, c)).collect();
    let provider = ProviderId::new();
    let outcomes: Vec<Outcome> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let c = by_message[id];
            let next = if i % 2 == 0 {
                NextState::Sent
            } else {
                NextState::Deferred { until: 90_000 }
            };
            let mut o = outcome_at(c, next, 2_000 + i as i64);
            o.attempt.response = format!("reply {i}");
            o.attempt.provider_id = (i % 3 == 0).then_some(provider);
            o.attempt.diagnosis = (i % 5 == 0).then(|| serde_json::json!({"n": i}));
            if i == 10 {
                // A lease another claim took over: refused, and no attempt.
                o.lease_token -= 1;
            }
            o
        })
        .collect();
    let accepted = f.complete(outcomes, vec![]).await;
    assert_eq!(
        accepted,
        (0..45).map(|i| i != 10).collect::<Vec<_>>(),
        "each outcome answered in its place"
    );
    for (i, id) in ids.iter().enumerate() {
        let view = f.message(t, *id).await;
        let attempts = &view.recipients[0].attempts;
        if i == 10 {
            assert!(attempts.is_empty(), "{attempts:?}");
            continue;
        }
        assert_eq!(attempts.len(), 1, "message {i}: {attempts:?}");
        let a = &attempts[0];
        assert_eq!(
            (a.at, a.response.as_str()),
            (2_000 + i as i64, &*format!("reply {i}"))
        );
        assert_eq!(
            a.provider_id,
            (i % 3 == 0).then_some(provider),
            "message {i}"
        );
        assert_eq!(
            a.diagnosis,
            (i % 5 == 0).then(|| serde_json::json!({"n": i})),
            "message {i}"
        );
        let status = if i % 2 == 0 {
            RecipientStatus::Sent
        } else {
            RecipientStatus::Deferred
        };
        assert_eq!(a.outcome, status, "message {i}");
    }
}

async fn deferred_recipients_come_back_at_their_time(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    f.submit(message(t, &["a@x.example"], None, 1_000)).await;
    let c = f.claim_one(claim("n1", 1_000, 60_000)).await;
    let o = Outcome {
        recipient: c.recipient,
        lease_token: c.lease_token,
        next: NextState::Deferred { until: 5_000 },
        attempt: attempt(RecipientStatus::Deferred),
    };
    assert_eq!(f.complete(vec![o], vec![]).await, vec![true]);
    assert_eq!(f.next_due(&[]).await, Some(5_000));
    assert_eq!(
        f.next_due(&[t]).await,
        None,
        "an excluded tenant's mail is not due"
    );
    assert!(f.claim(claim("n1", 4_999, 60_000)).await.is_empty());
    assert_eq!(f.claim(claim("n1", 5_000, 60_000)).await.len(), 1);
}

async fn released_recipients_are_due_again_without_an_attempt(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let m = f.submit(message(t, &["a@x.example"], None, 1_000)).await;
    let c = f.claim_one(claim("n1", 1_000, 60_000)).await;
    f.store
        .release(vec![(c.recipient, c.lease_token)])
        .await
        .unwrap();
    let view = f.message(t, m.id).await;
    assert_eq!(view.recipients[0].status, RecipientStatus::Queued);
    let again = f.claim(claim("n1", i64::MAX / 2, 60_000)).await;
    assert_eq!(again[0].attempt, 1, "a release gives the attempt back");

    // A release under a lease that was taken over changes nothing.
    f.store
        .release(vec![(again[0].recipient, again[0].lease_token - 1)])
        .await
        .unwrap();
    let view = f.message(t, m.id).await;
    assert_eq!(view.recipients[0].status, RecipientStatus::Sending);
}

async fn claims_skip_excluded_tenants(f: Fixture) {
    let busy = tenant(&*f.store, "busy").await;
    let idle = tenant(&*f.store, "idle").await;
    f.submit(message(busy, &["a@x.example"], None, 1_000)).await;
    f.submit(message(idle, &["b@x.example"], None, 1_000)).await;
    let mut request = claim("n1", 2_000, 60_000);
    request.rooms = HashMap::from([(busy, 0)]);
    let claimed = f.claim(request).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].tenant, idle);
}

/// A claim serves tenants in turn, not the oldest mail of everyone: a
/// tenant with a large, older backlog takes an equal part of the claim, and
/// another tenant's newer mail is claimed beside it. Claimed recipients come
/// tenant by tenant.
async fn claims_serve_tenants_in_turn(f: Fixture) {
    let backlog = tenant(&*f.store, "backlog").await;
    let alerts = tenant(&*f.store, "alerts").await;
    for i in 0..30 {
        f.submit(message(backlog, &[&format!("b{i}@x.example")], None, 1_000))
            .await;
    }
    for i in 0..3 {
        f.submit(message(alerts, &[&format!("a{i}@x.example")], None, 1_500))
            .await;
    }
    let claimed = f
        .claim(ClaimRequest {
            limit: 10,
            ..claim("n1", 2_000, 60_000)
        })
        .await;
    let of = |t: TenantId| claimed.iter().filter(|c| c.tenant == t).count();
    assert_eq!(
        of(alerts),
        3,
        "every alert is claimed beside the older backlog"
    );
    assert_eq!(of(backlog), 5, "the backlog takes its half of the claim");
    let tenants: Vec<TenantId> = claimed.iter().map(|c| c.tenant).collect();
    let mut runs = tenants.clone();
    runs.dedup();
    assert_eq!(runs.len(), 2, "tenant by tenant: {tenants:?}");
}

/// A tenant with room for two (its route can take no more now) gets two,
/// and the rest of the claim goes to others; with no room it is passed over.
async fn a_tenants_room_bounds_its_part_of_a_claim(f: Fixture) {
    let slow = tenant(&*f.store, "slow").await;
    let fast = tenant(&*f.store, "fast").await;
    for i in 0..10 {
        for t in [slow, fast] {
            f.submit(message(t, &[&format!("r{i}@x.example")], None, 1_000))
                .await;
        }
    }
    let claimed = f
        .claim(ClaimRequest {
            limit: 100,
            rooms: HashMap::from([(slow, 2)]),
            ..claim("n1", 2_000, 60_000)
        })
        .await;
    let of = |t: TenantId| claimed.iter().filter(|c| c.tenant == t).count();
    assert_eq!(of(slow), 2);
    assert_eq!(of(fast), 10);
}

/// Successive claims go round the tenants: with room for one recipient per
/// claim, three tenants with mail due are each served once in three claims.
async fn successive_claims_go_round_the_tenants(f: Fixture) {
    let mut tenants = HashSet::new();
    for name in ["one", "two", "three"] {
        let t = tenant(&*f.store, name).await;
        tenants.insert(t);
        for i in 0..3 {
            f.submit(message(t, &[&format!("r{i}@x.example")], None, 1_000))
                .await;
        }
    }
    let mut served = Vec::new();
    for _ in 0..6 {
        let claimed = f
            .claim(ClaimRequest {
                limit: 1,
                ..claim("n1", 2_000, 60_000)
            })
            .await;
        assert_eq!(claimed.len(), 1);
        served.push(claimed[0].tenant);
    }
    assert_eq!(
        served[..3].iter().collect::<HashSet<_>>().len(),
        3,
        "{served:?}"
    );
    assert_eq!(served[3..], served[..3], "the same turn again: {served:?}");
}

/// The next due time passes over excluded tenants, however much they have due.
async fn next_due_passes_over_excluded_tenants(f: Fixture) {
    let full = tenant(&*f.store, "full").await;
    let other = tenant(&*f.store, "other").await;
    assert_eq!(f.next_due(&[full]).await, None);
    for i in 0..20 {
        f.submit(message(
            full,
            &[&format!("r{i}@x.example")],
            None,
            1_000 + i,
        ))
        .await;
    }
    f.submit(message(other, &["o@x.example"], None, 5_000))
        .await;
    assert_eq!(f.next_due(&[]).await, Some(1_000));
    assert_eq!(f.next_due(&[full]).await, Some(5_000));
    assert_eq!(f.next_due(&[full, other]).await, None);
}

/// A tenant may have a bounded number of test messages queued or in flight;
/// one more is refused and stores nothing, another tenant is not affected,
/// and a test message that finished makes room again.
async fn test_messages_past_their_limit_are_refused(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let other = tenant(&*f.store, "other").await;
    let mut providers = HashMap::new();
    for tenant in [t, other] {
        let server = f
            .create_server(tenant, server_settings("relay", false))
            .await;
        let provider = f
            .create_provider(tenant, provider_settings("relay", server.id, None))
            .await;
        providers.insert(tenant, provider.id);
    }
    let test = |tenant: TenantId, to: &str| NewMessage {
        test_provider: Some(providers[&tenant]),
        priority: herald_store::TEST_PRIORITY,
        max_pending_tests: Some(2),
        ..message(tenant, &[to], None, 1_000)
    };
    f.submit(test(t, "a@x.example")).await;
    f.submit(test(t, "b@x.example")).await;
    let refused = f.store.submit(test(t, "c@x.example")).await;
    assert!(
        matches!(refused, Err(StoreError::TooManyTests { limit: 2 })),
        "{refused:?}"
    );
    assert_eq!(f.list_messages(t, 10).await.len(), 2);
    f.submit(test(other, "o@x.example")).await;
    // Ordinary mail is not counted.
    f.submit(message(t, &["m@x.example"], None, 1_000)).await;

    let claimed = f
        .claim(ClaimRequest {
            limit: 1,
            rooms: HashMap::from([(other, 0)]),
            ..claim("n1", 2_000, 60_000)
        })
        .await;
    assert_eq!(claimed[0].tenant, t);
    let outcome = Outcome {
        recipient: claimed[0].recipient,
        lease_token: claimed[0].lease_token,
        next: NextState::Sent,
        attempt: attempt(RecipientStatus::Sent),
    };
    assert_eq!(f.complete(vec![outcome], vec![]).await, [true]);
    f.submit(test(t, "d@x.example")).await;
}

async fn higher_priority_is_claimed_first(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    f.submit(message(t, &["old@x.example"], None, 1_000)).await;
    let urgent = NewMessage {
        priority: 10,
        max_queued: None,
        ..message(t, &["test@x.example"], None, 2_000)
    };
    f.submit(urgent).await;
    let first = f
        .claim(ClaimRequest {
            limit: 1,
            ..claim("n1", 3_000, 60_000)
        })
        .await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].address.as_ref(), "test@x.example");
}

async fn a_batch_is_stored_in_order_with_its_duplicates_answered(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let earlier = f
        .submit(message(t, &["a@x.example"], Some("k0"), 1_000))
        .await;
    let batch = vec![
        message(t, &["b@x.example", "c@x.example"], None, 2_000),
        message(t, &["d@x.example"], Some("k0"), 2_000),
        message(t, &["e@x.example"], Some("k1"), 2_000),
        message(t, &["f@x.example"], Some("k1"), 2_000),
    ];
    let new_ids = [batch[0].id, batch[2].id];
    let submitted = f.submit_batch(batch).await;
    assert_eq!(submitted.len(), 4);
    assert_eq!(
        (submitted[0].id, submitted[0].duplicate),
        (new_ids[0], false)
    );
    // A key used before the batch, and a key used twice within it.
    assert_eq!(
        (submitted[1].id, submitted[1].duplicate),
        (earlier.id, true)
    );
    assert_eq!(
        (submitted[2].id, submitted[2].duplicate),
        (new_ids[1], false)
    );
    assert_eq!(
        (submitted[3].id, submitted[3].duplicate),
        (new_ids[1], true)
    );
    assert_eq!(f.list_messages(t, 10).await.len(), 3);
    let mut claimed: Vec<String> = f
        .claim(claim("n1", 3_000, 60_000))
        .await
        .into_iter()
        .map(|c| c.address.to_string())
        .collect();
    claimed.sort();
    assert_eq!(
        claimed,
        ["a@x.example", "b@x.example", "c@x.example", "e@x.example"]
    );
    assert!(f.submit_batch(Vec::new()).await.is_empty());
}

async fn messages_are_counted_by_their_derived_status(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let other = tenant(&*f.store, "other").await;
    let submit = |tenant, to: &'static [&'static str], at| {
        let store = f.store.clone();
        async move { store.submit(message(tenant, to, None, at)).await.unwrap() }
    };
    submit(t, &["old@x.example"], 100).await;
    submit(other, &["else@x.example"], 1_000).await;
    // Claimed at 2,000, then: one recipient sent, its sibling failed (the
    // message failed); a lone recipient sent; a lone recipient deferred.
    let mixed = submit(t, &["a@x.example", "b@x.example"], 1_000).await;
    let sent = submit(t, &["c@x.example"], 1_000).await;
    let deferred = submit(t, &["d@x.example"], 1_000).await;
    let claimed = f.claim(claim("n1", 2_000, 60_000)).await;
    let outcome = |c: &herald_store::Claimed| Outcome {
        recipient: c.recipient,
        lease_token: c.lease_token,
        next: match c.address.as_ref() {
            "b@x.example" => NextState::Failed,
            "d@x.example" => NextState::Deferred { until: 99_999 },
            _ => NextState::Sent,
        },
        attempt: attempt(RecipientStatus::Sent),
    };
    let finished: Vec<Outcome> = claimed
        .iter()
        .filter(|c| [mixed.id, sent.id, deferred.id].contains(&c.message))
        .map(outcome)
        .collect();
    assert_eq!(finished.len(), 4);
    f.complete(finished, vec![]).await;
    // Queued after the claim: one message still waiting, one half sent.
    let waiting = submit(t, &["e@x.example"], 3_000).await;
    let half = submit(t, &["f@x.example", "g@x.example"], 3_000).await;
    let claimed = f.claim(claim("n1", 4_000, 60_000)).await;
    let f_recipient = claimed
        .iter()
        .find(|c| c.message == half.id && c.address.as_ref() == "f@x.example")
        .unwrap();
    f.complete(vec![outcome(f_recipient)], vec![]).await;
    let still_sending: Vec<_> = claimed
        .iter()
        .filter(|c| c.message == waiting.id)
        .map(|c| (c.recipient, c.lease_token))
        .collect();
    f.store.release(still_sending).await.unwrap();

    let counts = f.store.count_messages(t, 500).await.unwrap();
    assert_eq!(
        counts,
        herald_store::MessageCounts {
            // g@ is still under its lease, so its message is sending.
            sending: 1,
            queued: 1,
            deferred: 1,
            failed: 1,
            sent: 1,
            cancelled: 0,
        }
    );
    // The older message counts from an earlier time on; the first claim took it.
    assert_eq!(f.store.count_messages(t, 0).await.unwrap().sending, 2);
    // The installation's unfinished recipients, every tenant's: old@, else@
    // and g@ under their leases, e@ given back, d@ deferred.
    assert_eq!(
        f.store.queue_depth().await.unwrap(),
        herald_store::QueueDepth {
            queued: 1,
            scheduled: 0,
            deferred: 1,
            sending: 3,
        }
    );
}

async fn an_idempotency_key_returns_the_first_message(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let other = tenant(&*f.store, "other").await;
    let first = f
        .submit(message(t, &["a@x.example"], Some("k1"), 1_000))
        .await;
    let second = f
        .submit(message(t, &["a@x.example"], Some("k1"), 2_000))
        .await;
    assert_eq!(second.id, first.id);
    assert!(second.duplicate);
    assert_eq!(second.status, RecipientStatus::Queued);
    // Keys are per tenant.
    let elsewhere = f
        .submit(message(other, &["a@x.example"], Some("k1"), 2_000))
        .await;
    assert_ne!(elsewhere.id, first.id);
    assert_eq!(f.list_messages(t, 10).await.len(), 1);

    // The duplicate answers with the first message's status as it is now.
    let c = f
        .claim(claim("n1", 3_000, 60_000))
        .await
        .into_iter()
        .find(|c| c.message == first.id)
        .unwrap();
    f.complete(
        vec![Outcome {
            recipient: c.recipient,
            lease_token: c.lease_token,
            next: NextState::Sent,
            attempt: attempt(RecipientStatus::Sent),
        }],
        vec![],
    )
    .await;
    let third = f
        .submit(message(t, &["a@x.example"], Some("k1"), 4_000))
        .await;
    assert_eq!(third.id, first.id);
    assert_eq!(third.status, RecipientStatus::Sent);
}

async fn another_tenants_objects_are_not_found(f: Fixture) {
    let a = tenant(&*f.store, "acme").await;
    let b = tenant(&*f.store, "other").await;
    let m = f.submit(message(a, &["a@x.example"], None, 1_000)).await;
    assert!(matches!(
        f.store.message(b, m.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(f.list_messages(b, 10).await.is_empty());
    assert_eq!(
        conflict(
            f.store
                .create_tenant(TenantSlug::parse("acme").unwrap(), "again".into())
                .await
        ),
        "a tenant with this slug exists"
    );
}

/// The operator token a node installs from `HERALD_BOOTSTRAP_TOKEN`.
fn bootstrap(hash: &str) -> NewToken {
    NewToken {
        name: "HERALD_BOOTSTRAP_TOKEN".into(),
        ..token(None, None, hash)
    }
}

/// Refused as if the object did not exist: not found, or (for an id given
/// as a reference inside a request) an invalid field.
fn refused<T: std::fmt::Debug>(what: &str, result: herald_store::Result<T>) {
    assert!(
        matches!(result, Err(StoreError::NotFound | StoreError::Invalid(_))),
        "{what} with another tenant's id: {result:?}"
    );
}

/// Every tenant-scoped method, given another tenant's ids, finds nothing and
/// changes nothing: the tenant condition is in the statements themselves.
async fn every_tenant_scoped_method_refuses_another_tenants_ids(f: Fixture) {
    let a = tenant(&*f.store, "acme").await;
    let b = tenant(&*f.store, "other").await;
    let server = f.create_server(a, server_settings("relay", true)).await;
    let account = f
        .create_account(a, new_account(server.id, "alerts", Some("sealed")))
        .await;
    let provider = f
        .create_provider(a, provider_settings("relay", server.id, Some(account.id)))
        .await;
    let member = f
        .create_person(
            a,
            Person {
                tenant_id: a,
                ..person("Ann", "ann@x.example")
            },
        )
        .await;
    let sender = f.create_token(token(Some(a), None, "h-a")).await;
    let m = f.submit(message(a, &["r@x.example"], None, 1_000)).await;

    refused("server", f.store.server(b, server.id).await);
    refused(
        "update_server",
        f.store
            .update_server(b, server.id, server_settings("moved", false))
            .await,
    );
    refused("delete_server", f.store.delete_server(b, server.id).await);
    refused(
        "create_account",
        f.store
            .create_account(b, new_account(server.id, "x", None))
            .await,
    );
    refused("account", f.store.account(b, server.id, account.id).await);
    refused(
        "delete_account",
        f.store.delete_account(b, server.id, account.id).await,
    );
    refused(
        "create_provider",
        f.store
            .create_provider(b, provider_settings("theirs", server.id, Some(account.id)))
            .await,
    );
    refused("provider", f.store.provider(b, provider.id).await);
    refused(
        "update_provider",
        f.store
            .update_provider(
                b,
                provider.id,
                provider_settings("renamed", server.id, None),
            )
            .await,
    );
    refused(
        "delete_provider",
        f.store.delete_provider(b, provider.id).await,
    );
    refused(
        "set_active_provider",
        f.store
            .set_active_provider(b, Some(provider.id), 1_000)
            .await,
    );
    refused("person", f.store.person(b, member.id).await);
    refused("delete_person", f.store.delete_person(b, member.id).await);
    refused(
        "set_person_password",
        f.store
            .set_person_password(b, member.id, "hash".into())
            .await,
    );
    refused("revoke_token", f.store.revoke_token(b, sender.id).await);
    refused("message", f.store.message(b, m.id).await);
    assert!(f.list_persons(b).await.is_empty());
    assert!(f.list_tokens(b).await.is_empty());
    assert!(f.list_servers(b).await.is_empty());
    assert!(f.list_providers(b).await.is_empty());
    assert!(f.list_captured(b, 10).await.is_empty());

    // Tenant a's objects are all there, unchanged.
    assert_eq!(f.server(a, server.id).await.settings.name, "relay");
    assert!(f.account(a, server.id, account.id).await.secret_set);
    assert_eq!(f.provider(a, provider.id).await.settings.name, "relay");
    assert_eq!(f.person(a, member.id).await.name, "Ann");
    assert_eq!(f.list_tokens(a).await.len(), 1);
    assert_eq!(f.message(a, m.id).await.recipients.len(), 1);
    assert_eq!(
        f.store
            .tenant_by_slug("other")
            .await
            .unwrap()
            .notification_provider_id,
        None
    );
}

/// A change that races with a deletion (what it refers to is gone) is a
/// conflict on both backends, not an unavailable database.
async fn a_reference_to_something_deleted_is_a_conflict(f: Fixture) {
    let gone = TenantId::new();
    let result = f
        .store
        .submit(message(gone, &["r@x.example"], None, 1_000))
        .await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert!(
        !f.store.refusing_writes(),
        "a conflict is not a database refusing writes"
    );
}

async fn concurrent_submissions_all_commit(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .submit(message(
                    t,
                    &[&format!("u{i}@x.example")],
                    Some(&format!("k{i}")),
                    1_000,
                ))
                .await
        }));
    }
    for task in tasks {
        assert!(!task.await.unwrap().unwrap().duplicate);
    }
    assert_eq!(f.list_messages(t, 500).await.len(), 200);
    assert_eq!(
        f.claim(ClaimRequest {
            limit: 1000,
            ..claim("n", 2_000, 1_000)
        })
        .await
        .len(),
        200
    );
}

/// Submissions made at the same moment may be stored together (group commit
/// on PostgreSQL, the writer's transaction on SQLite), yet each is answered
/// on its own: one refused for its tenant's full queue stores nothing and
/// takes nothing from the others.
async fn concurrent_submissions_are_answered_each_on_its_own(f: Fixture) {
    let full = tenant(&*f.store, "globex").await;
    let open = tenant(&*f.store, "acme").await;
    for i in 0..3 {
        f.submit(message(full, &[&format!("b{i}@x.example")], None, 1_000))
            .await;
    }
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = f.store.clone();
        let (t, limit) = if i % 3 == 0 {
            (full, Some(3))
        } else {
            (open, None)
        };
        tasks.push(tokio::spawn(async move {
            let mut m = message(t, &[&format!("u{i}@x.example")], None, 2_000);
            m.max_queued = limit;
            (t, store.submit(m).await)
        }));
    }
    for task in tasks {
        match task.await.unwrap() {
            (t, answer) if t == full => assert!(
                matches!(answer, Err(StoreError::QueueFull { limit: 3 })),
                "{answer:?}"
            ),
            (_, answer) => assert!(!answer.unwrap().duplicate),
        }
    }
    assert_eq!(f.list_messages(open, 100).await.len(), 40);
    assert_eq!(f.list_messages(full, 100).await.len(), 3);
}

async fn concurrent_submissions_with_one_key_store_one_message(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let nodes = f.two_nodes().await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = nodes[i as usize % 2].clone();
        tasks.push(tokio::spawn(async move {
            store
                .submit(message(t, &["a@x.example"], Some("same"), 1_000 + i))
                .await
                .unwrap()
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    let first = answers.iter().find(|a| !a.duplicate).unwrap().id;
    assert!(answers.iter().all(|a| a.id == first));
    assert_eq!(answers.iter().filter(|a| !a.duplicate).count(), 1);
    assert_eq!(f.list_messages(t, 10).await.len(), 1);
    let view = f.message(t, first).await;
    assert_eq!(view.recipients.len(), 1);
}

async fn concurrent_claimers_take_every_recipient_exactly_once(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    for i in 0..50 {
        let to: Vec<String> = (0..10).map(|j| format!("u{i}-{j}@x.example")).collect();
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        f.submit(message(t, &to, None, 1_000 + i)).await;
    }
    // Two nodes, two claimers on each.
    let nodes = f.two_nodes().await;
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let store = nodes[worker as usize % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store
                    .claim(ClaimRequest {
                        limit: 10,
                        ..claim(&format!("n{worker}"), 2_000, 600_000)
                    })
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return mine;
                }
                assert!(batch.len() <= 10);
                mine.extend(batch.into_iter().map(|c| c.recipient));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "a recipient was claimed twice");
    assert_eq!(all.len(), 500, "a recipient was missed");
    assert!(f.claim(claim("n", 2_000, 600_000)).await.is_empty());
}

async fn a_second_store_on_the_same_database_sees_the_same_data(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let second_node = f.reopen().await;
    let tenants = second_node.list_tenants().await.unwrap();
    assert_eq!(tenants.len(), 1);
    assert_eq!(tenants[0].id, t);
    second_node.ping().await.unwrap();
}

async fn tenants_keep_their_properties(f: Fixture) {
    let t = f
        .store
        .create_tenant(TenantSlug::parse("acme").unwrap(), "Acme Corp".into())
        .await
        .unwrap();
    assert_eq!(t.slug.as_ref(), "acme");
    assert_eq!(t.name, "Acme Corp");
    assert!(!t.credential_storage);
    assert_eq!(t.notification_provider_id, None);
    assert_eq!(t.previous_provider_id, None);
    // Nothing was in effect before the tenant existed.
    assert_eq!(t.properties_effective_from, t.created_at);
    let second = tenant(&*f.store, "beta").await;
    let third = tenant(&*f.store, "gamma").await;
    let listed: Vec<TenantId> = f
        .store
        .list_tenants()
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, vec![t.id, second, third], "oldest first");
    assert_eq!(f.store.tenant_by_slug("acme").await.unwrap().id, t.id);
    not_found(f.store.tenant_by_slug("nobody").await);

    assert!(
        f.store
            .set_entitlements(t.id, true)
            .await
            .unwrap()
            .credential_storage
    );
    not_found(f.store.set_entitlements(TenantId::new(), true).await);

    let server = f.create_server(t.id, server_settings("relay", false)).await;
    let p1 = f
        .create_provider(t.id, provider_settings("one", server.id, None))
        .await
        .id;
    let p2 = f
        .create_provider(t.id, provider_settings("two", server.id, None))
        .await
        .id;
    let far = i64::MAX / 4;
    let changed = f.set_active_provider(t.id, Some(p1), far).await;
    assert_eq!(changed.notification_provider_id, Some(p1));
    assert_eq!(changed.previous_provider_id, None);
    assert_eq!(changed.properties_effective_from, far);
    // A second change while the first is pending keeps what applies now.
    let changed = f.set_active_provider(t.id, Some(p2), far).await;
    assert_eq!(changed.notification_provider_id, Some(p2));
    assert_eq!(changed.previous_provider_id, None);
    let soon = t.created_at + 5_000;
    let refreshed = f.refresh_properties(t.id, soon).await;
    assert_eq!(refreshed.properties_effective_from, soon);
    let refreshed = f.refresh_properties(t.id, soon + 4_000).await;
    assert_eq!(
        refreshed.properties_effective_from, soon,
        "a refresh never postpones"
    );
    // In effect everywhere now: the next change keeps it as the previous one.
    let refreshed = f.refresh_properties(t.id, t.created_at).await;
    assert_eq!(refreshed.properties_effective_from, t.created_at);
    let changed = f.set_active_provider(t.id, None, far).await;
    assert_eq!(changed.notification_provider_id, None);
    assert_eq!(changed.previous_provider_id, Some(p2));
    not_found(f.store.refresh_properties(TenantId::new(), 1).await);
    not_found(f.store.set_active_provider(TenantId::new(), None, 1).await);

    let other = tenant(&*f.store, "other").await;
    assert_eq!(
        invalid_field(f.store.set_active_provider(other, Some(p1), 1).await),
        "notification_provider_id"
    );
}

async fn servers_accounts_and_providers_keep_their_rules(f: Fixture) {
    let a = tenant(&*f.store, "acme").await;
    let b = tenant(&*f.store, "other").await;

    let mut settings = server_settings("relay", true);
    settings.max_connections = u32::MAX;
    settings.rate_limit_per_minute = Some(u32::MAX);
    settings.command_timeout_secs = Some(60);
    settings.tls_ca_pem = Some("-----BEGIN CERTIFICATE-----".into());
    settings.tls_server_name = Some(SmtpHost::parse("relay.x.example").unwrap());
    settings.helo_name = Some(SmtpHost::parse("herald.x.example").unwrap());
    settings.port = Port::new(65535).unwrap();
    let server = f.create_server(a, settings.clone()).await;
    assert_eq!(server.settings, settings);
    assert_eq!(server.tenant_id, a);
    assert_eq!(f.server(a, server.id).await.settings, settings);
    assert_eq!(
        conflict(
            f.store
                .create_server(a, server_settings("relay", false))
                .await
        ),
        "an SMTP server with this name exists"
    );
    // Names are per tenant.
    f.create_server(b, server_settings("relay", false)).await;
    not_found(f.store.server(b, server.id).await);
    not_found(
        f.store
            .update_server(b, server.id, server_settings("x", false))
            .await,
    );
    not_found(f.store.delete_server(b, server.id).await);
    not_found(f.store.list_accounts(b, server.id).await);

    let spare = f.create_server(a, server_settings("spare", false)).await;
    assert_eq!(
        conflict(
            f.store
                .update_server(a, spare.id, server_settings("relay", false))
                .await
        ),
        "an SMTP server with this name exists"
    );
    let listed: Vec<ServerId> = f.list_servers(a).await.iter().map(|s| s.id).collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&server.id) && listed.contains(&spare.id));

    let mut oauth = new_account(server.id, "oauth@x.example", Some("sealed-2"));
    oauth.mechanism = Mechanism::Xoauth2;
    oauth.oauth2 = Some(OAuth2Client {
        token_url: "https://login.x.example/token".into(),
        client_id: "client".into(),
        scope: Some("smtp".into()),
    });
    let oauth = f.create_account(a, oauth).await;
    assert_eq!(oauth.mechanism, Mechanism::Xoauth2);
    assert_eq!(oauth.oauth2.as_ref().unwrap().client_id, "client");
    assert_eq!(
        oauth.oauth2.as_ref().unwrap().scope.as_deref(),
        Some("smtp")
    );
    let account = f
        .create_account(
            a,
            new_account(server.id, "herald@x.example", Some("sealed-1")),
        )
        .await;
    assert!(account.secret_set);
    assert_eq!(account.sealed_secret.as_deref(), Some("sealed-1"));
    assert_eq!(account.oauth2, None);
    assert_eq!(
        conflict(
            f.store
                .create_account(a, new_account(server.id, "herald@x.example", None))
                .await
        ),
        "an account with this username exists on the server"
    );
    not_found(
        f.store
            .create_account(b, new_account(server.id, "x@x.example", None))
            .await,
    );
    let mut unknown_person = new_account(server.id, "y@x.example", None);
    unknown_person.person_id = Some(PersonId::new());
    assert_eq!(
        invalid_field(f.store.create_account(a, unknown_person).await),
        "person_id"
    );
    not_found(f.store.account(b, server.id, account.id).await);
    not_found(f.store.account(a, spare.id, account.id).await);
    assert_eq!(f.store.list_accounts(a, server.id).await.unwrap().len(), 2);

    assert_eq!(
        invalid_field(
            f.store
                .create_provider(a, provider_settings("p", server.id, None))
                .await
        ),
        "account_id"
    );
    assert_eq!(
        invalid_field(
            f.store
                .create_provider(a, provider_settings("p", ServerId::new(), None))
                .await
        ),
        "smtp_server_id"
    );
    assert_eq!(
        invalid_field(
            f.store
                .create_provider(a, provider_settings("p", spare.id, Some(account.id)))
                .await
        ),
        "account_id"
    );
    let provider = f
        .create_provider(
            a,
            provider_settings("corporate", server.id, Some(account.id)),
        )
        .await;
    assert_eq!(provider.settings.account_id, Some(account.id));
    assert_eq!(
        provider
            .settings
            .from_name
            .as_ref()
            .map(AsRef::<str>::as_ref),
        Some("Alerts")
    );
    assert_eq!(
        conflict(
            f.store
                .create_provider(a, provider_settings("corporate", spare.id, None))
                .await
        ),
        "a provider with this name exists"
    );
    not_found(f.store.provider(b, provider.id).await);
    not_found(
        f.store
            .update_provider(b, provider.id, provider_settings("x", spare.id, None))
            .await,
    );
    not_found(f.store.delete_provider(b, provider.id).await);
    assert!(f.list_providers(b).await.is_empty());

    assert_eq!(
        conflict(f.store.delete_server(a, server.id).await),
        "the SMTP server is used by the provider \"corporate\""
    );
    assert_eq!(
        conflict(f.store.delete_account(a, server.id, account.id).await),
        "the account is used by the provider \"corporate\""
    );

    f.set_active_provider(a, Some(provider.id), 0).await;
    let active = f.store.active_provider(a).await.unwrap().unwrap();
    assert_eq!(active.provider.id, provider.id);
    assert_eq!(active.server.id, server.id);
    assert_eq!(active.account.unwrap().id, account.id);
    assert!(f.store.active_provider(b).await.unwrap().is_none());
    assert_eq!(
        conflict(f.store.delete_provider(a, provider.id).await),
        "the provider is the tenant's active provider; choose another in the tenant properties first"
    );

    // The same destination keeps the secrets; a new one clears them.
    let mut renamed = settings.clone();
    renamed.name = "relay-2".into();
    renamed.max_connections = 2;
    let updated = f.update_server(a, server.id, renamed.clone()).await;
    assert_eq!(updated.settings, renamed);
    assert!(f.account(a, server.id, account.id).await.secret_set);
    let mut moved = renamed.clone();
    moved.host = SmtpHost::parse("elsewhere.x.example").unwrap();
    f.update_server(a, server.id, moved).await;
    for account in f.store.list_accounts(a, server.id).await.unwrap() {
        assert!(!account.secret_set, "{} kept its secret", account.username);
        assert_eq!(account.sealed_secret, None);
    }

    // A provider moved to a server without authentication needs no account.
    let moved = f
        .update_provider(
            a,
            provider.id,
            provider_settings("corporate", spare.id, None),
        )
        .await;
    assert_eq!(moved.settings.smtp_server_id, spare.id);
    assert_eq!(moved.settings.account_id, None);
    f.delete_account(a, server.id, account.id).await;
    not_found(f.store.delete_account(a, server.id, account.id).await);
    f.delete_server(a, server.id).await;
    not_found(f.store.account(a, server.id, oauth.id).await);
    f.set_active_provider(a, None, 0).await;
    f.store.delete_provider(a, provider.id).await.unwrap();
    not_found(f.store.provider(a, provider.id).await);
    assert_eq!(
        f.list_servers(a)
            .await
            .iter()
            .map(|s| s.id)
            .collect::<Vec<_>>(),
        vec![spare.id]
    );
}

async fn smtp_credentials_and_connectors_stand_within_their_tenant(f: Fixture) {
    let a = tenant(&*f.store, "acme").await;
    let b = tenant(&*f.store, "other").await;
    let credential = f
        .store
        .create_smtp_credential(NewSmtpCredential {
            id: SmtpCredentialId::new(),
            tenant_id: a,
            name: "grafana".into(),
            username: "acme-grafana".into(),
            password_hash: "hash".into(),
            rate_limit_per_minute: Some(60),
        })
        .await
        .unwrap();
    let connector = f
        .store
        .create_smtp_connector(
            a,
            "office".into(),
            vec!["192.0.2.0/24".parse().unwrap()],
            None,
        )
        .await
        .unwrap();

    let found = f.smtp_credential(a, credential.id).await;
    assert_eq!(found.map(|c| c.username), Some("acme-grafana".to_owned()));
    let found = f.smtp_connector(a, connector.id).await;
    assert_eq!(found.map(|c| c.name), Some("office".to_owned()));
    // Another tenant's ids are not found.
    assert!(f.smtp_credential(b, credential.id).await.is_none());
    assert!(f.smtp_connector(b, connector.id).await.is_none());

    // Revoked or deleted, they no longer stand.
    f.revoke_smtp_credential(a, credential.id).await;
    f.delete_smtp_connector(a, connector.id).await;
    assert!(f.smtp_credential(a, credential.id).await.is_none());
    assert!(f.smtp_connector(a, connector.id).await.is_none());
}

async fn persons_and_tokens_keep_their_rules(f: Fixture) {
    let a = tenant(&*f.store, "acme").await;
    let b = tenant(&*f.store, "other").await;
    let ada = f.create_person(a, person("Ada", "ada@x.example")).await;
    assert_eq!(ada.tenant_id, a);
    assert_eq!(
        conflict(
            f.store
                .create_person(a, person("Ada again", "ada@x.example"))
                .await
        ),
        "a person with this e-mail address exists"
    );
    f.create_person(b, person("Ada elsewhere", "ada@x.example"))
        .await;
    not_found(f.store.person(b, ada.id).await);
    not_found(f.store.delete_person(b, ada.id).await);
    assert_eq!(f.person(a, ada.id).await.name, "Ada");
    assert_eq!(f.list_persons(a).await.len(), 1);
    // Found by address, as mail received over SMTP is: case aside, within its tenant.
    let shouted = EmailAddress::parse("ADA@X.example").unwrap();
    let found = f.person_by_email(a, &shouted).await;
    assert_eq!(found.map(|p| p.id), Some(ada.id));
    let found = f.person_by_email(b, &shouted).await;
    assert_eq!(found.map(|p| p.name), Some("Ada elsewhere".to_owned()));
    let stranger = EmailAddress::parse("adam@x.example").unwrap();
    assert!(f.person_by_email(a, &stranger).await.is_none());

    assert!(!f.operator_token_exists().await);
    let operator = f.create_token(token(None, None, "h0")).await;
    assert_eq!(operator.role, Role::Operator);
    assert!(f.operator_token_exists().await);
    assert_eq!(
        conflict(f.store.create_token(token(Some(a), None, "h0")).await),
        "this token exists already"
    );
    not_found(
        f.store
            .create_token(token(Some(b), Some(ada.id), "h1"))
            .await,
    );
    let personal = f.create_token(token(Some(a), Some(ada.id), "h1")).await;
    assert_eq!(personal.person_id, Some(ada.id));
    let service = f.create_token(token(Some(a), None, "h2")).await;
    let listed: Vec<TokenId> = f.list_tokens(a).await.iter().map(|t| t.id).collect();
    assert_eq!(listed, vec![personal.id, service.id]);

    let found = f.token_by_hash("h1").await.unwrap();
    assert_eq!(found.id, personal.id);
    assert_eq!(
        found.last_used_at, None,
        "the use is recorded after the answer"
    );
    let found = f.token_by_hash("h1").await.unwrap();
    assert!(found.last_used_at.is_some());
    assert!(f.token_by_hash("nope").await.is_none());

    // A request's two lookups at once: the token, and the tenant of the
    // path, whichever tenant that is (the caller's checks come after).
    let both = |hash: &'static str, slug: &'static str| {
        let store = f.store.clone();
        async move { store.token_and_tenant(hash, slug).await.unwrap() }
    };
    let (record, tenant) = both("h1", "acme").await.expect("the token");
    assert_eq!(record.id, personal.id);
    assert_eq!(tenant.map(|t| t.id), Some(a));
    let (_, tenant) = both("h1", "other").await.expect("the token");
    assert_eq!(tenant.map(|t| t.id), Some(b));
    let (_, tenant) = both("h1", "missing").await.expect("the token");
    assert!(tenant.is_none());
    assert!(both("nope", "acme").await.is_none());
    let (record, _) = both("h2", "acme").await.expect("the token");
    assert_eq!(record.id, service.id);
    assert!(record.last_used_at.is_none(), "not used before this lookup");
    let (record, _) = both("h2", "acme").await.expect("the token");
    assert!(record.last_used_at.is_some(), "the lookup marked it used");

    not_found(f.store.revoke_token(b, service.id).await);
    f.store.revoke_token(a, service.id).await.unwrap();
    assert!(f.token_by_hash("h2").await.is_none());

    let server = f.create_server(a, server_settings("relay", true)).await;
    let mut bound = new_account(server.id, "ada@x.example", Some("sealed"));
    bound.person_id = Some(ada.id);
    let bound = f.create_account(a, bound).await;
    assert_eq!(bound.person_id, Some(ada.id));
    assert_eq!(
        conflict(f.store.delete_person(a, ada.id).await),
        "the SMTP account \"ada@x.example\" is bound to this person; delete the account first (another account can then be bound to someone else)"
    );
    f.delete_account(a, server.id, bound.id).await;
    f.store.delete_person(a, ada.id).await.unwrap();
    not_found(f.store.person(a, ada.id).await);
    assert!(
        f.token_by_hash("h1").await.is_none(),
        "a person's tokens go with them"
    );
}

/// Operator tokens are listed apart from tenants' tokens and can be revoked;
/// a bootstrap token that was replaced or revoked is never accepted again.
async fn operator_tokens_are_listed_revoked_and_replaced(f: Fixture) {
    let acme = tenant(&*f.store, "acme").await;
    let made_by_hand = f.create_token(token(None, None, "op")).await;
    let tenants_token = f.create_token(token(Some(acme), None, "sender")).await;
    let first = bootstrap("boot-1");
    assert_eq!(
        f.set_bootstrap_token(first.clone()).await,
        BootstrapOutcome::Installed {
            created: true,
            replaced: 0
        }
    );
    assert_eq!(
        f.set_bootstrap_token(bootstrap("boot-1")).await,
        BootstrapOutcome::Installed {
            created: false,
            replaced: 0
        },
        "the same value again changes nothing"
    );
    let listed = f.list_operator_tokens().await;
    let summary: Vec<(TokenId, bool)> = listed.iter().map(|t| (t.id, t.bootstrap)).collect();
    assert_eq!(summary, vec![(made_by_hand.id, false), (first.id, true)]);
    assert!(listed.iter().all(|t| t.tenant_id.is_none()));

    // A changed value replaces the earlier bootstrap token, and only that one.
    let second = bootstrap("boot-2");
    assert_eq!(
        f.set_bootstrap_token(second.clone()).await,
        BootstrapOutcome::Installed {
            created: true,
            replaced: 1
        }
    );
    assert!(f.token_by_hash("boot-1").await.is_none());
    assert!(f.token_by_hash("boot-2").await.unwrap().bootstrap);
    assert!(f.token_by_hash("op").await.is_some());

    // Revoking: a tenant's token is not an operator token; a revoked bootstrap
    // token stays revoked when a node starts with it again.
    not_found(f.store.revoke_operator_token(tenants_token.id).await);
    assert!(f.token_by_hash("sender").await.is_some());
    f.revoke_operator_token(second.id).await;
    not_found(f.store.revoke_operator_token(second.id).await);
    assert!(f.token_by_hash("boot-2").await.is_none());
    assert_eq!(
        f.set_bootstrap_token(second).await,
        BootstrapOutcome::Revoked { replaced: 0 }
    );
    f.revoke_operator_token(made_by_hand.id).await;
    assert!(f.token_by_hash("op").await.is_none());
    assert!(f.list_operator_tokens().await.is_empty());
    assert!(!f.operator_token_exists().await);
}

/// Going back to an earlier bootstrap value (T1, T2, then T1 again) keeps T1
/// revoked and revokes T2 as well, since it is no longer the configured value:
/// no bootstrap token is left, and the other operator tokens stay.
async fn returning_to_a_revoked_bootstrap_value_revokes_the_current_one(f: Fixture) {
    let made_by_hand = f.create_token(token(None, None, "op")).await;
    f.set_bootstrap_token(bootstrap("boot-1")).await;
    assert_eq!(
        f.set_bootstrap_token(bootstrap("boot-2")).await,
        BootstrapOutcome::Installed {
            created: true,
            replaced: 1
        }
    );
    assert_eq!(
        f.set_bootstrap_token(bootstrap("boot-1")).await,
        BootstrapOutcome::Revoked { replaced: 1 },
        "going back to the earlier value revokes the current bootstrap token"
    );
    assert!(f.token_by_hash("boot-1").await.is_none());
    assert!(f.token_by_hash("boot-2").await.is_none());
    let listed = f.list_operator_tokens().await;
    let summary: Vec<(TokenId, bool)> = listed.iter().map(|t| (t.id, t.bootstrap)).collect();
    assert_eq!(summary, vec![(made_by_hand.id, false)]);

    // Starting with the revoked value again changes nothing; a new value
    // makes a new bootstrap token.
    assert_eq!(
        f.set_bootstrap_token(bootstrap("boot-1")).await,
        BootstrapOutcome::Revoked { replaced: 0 }
    );
    assert_eq!(
        f.set_bootstrap_token(bootstrap("boot-3")).await,
        BootstrapOutcome::Installed {
            created: true,
            replaced: 0
        }
    );
    assert!(f.token_by_hash("boot-3").await.unwrap().bootstrap);
    assert!(f.token_by_hash("op").await.is_some());
}

/// A change that weakens or redirects trust in the server clears its accounts'
/// secrets; strengthening it, or changing anything else, keeps them.
async fn weakened_trust_clears_account_secrets(f: Fixture) {
    let a = tenant(&*f.store, "acme").await;
    let settings = server_settings("relay", true);
    let server = f.create_server(a, settings.clone()).await;
    let secret_set = |id| {
        let store = f.store.clone();
        async move { store.account(a, server.id, id).await.unwrap().secret_set }
    };
    let with_secret = |name: &str| new_account(server.id, name, Some("sealed"));

    let first = f.create_account(a, with_secret("one")).await;
    let unverified = ServerSettings {
        tls_verify: false,
        ..settings.clone()
    };
    f.update_server(a, server.id, unverified.clone()).await;
    assert!(
        !secret_set(first.id).await,
        "tls_verify off kept the secret"
    );

    let second = f.create_account(a, with_secret("two")).await;
    f.update_server(a, server.id, settings.clone()).await;
    assert!(
        secret_set(second.id).await,
        "tls_verify on cleared the secret"
    );

    for (what, changed) in [
        (
            "tls_ca_pem",
            ServerSettings {
                tls_ca_pem: Some("-----BEGIN CERTIFICATE-----".into()),
                ..settings.clone()
            },
        ),
        (
            "tls_server_name",
            ServerSettings {
                tls_server_name: Some(SmtpHost::parse("other.x.example").unwrap()),
                ..settings.clone()
            },
        ),
    ] {
        f.update_server(a, server.id, settings.clone()).await;
        let account = f.create_account(a, with_secret(what)).await;
        f.update_server(a, server.id, changed).await;
        assert!(
            !secret_set(account.id).await,
            "a new {what} kept the secret"
        );
    }
}

async fn audit_entries_read_back_as_written(f: Fixture) {
    let a = tenant(&*f.store, "acme").await;
    let b = tenant(&*f.store, "other").await;
    let details = json!({
        "name": "relay",
        "port": 587,
        "ratio": 0.5,
        "big": u64::MAX,
        "list": [1, "two", null, true],
        "nested": {"z": 1, "a": 2},
        "odd": "nul \u{0} and ✓",
    });
    for i in 0..3 {
        f.store
            .audit(AuditEntry {
                tenant_id: Some(a),
                at: 1_000 + i,
                actor: "admin".into(),
                token_id: Some(TokenId::new()),
                remote_addr: Some("192.0.2.1".into()),
                action: format!("smtp_server.update.{i}"),
                object_id: Some("x".into()),
                details: details.clone(),
            })
            .await
            .unwrap();
    }
    f.store
        .audit(AuditEntry {
            tenant_id: None,
            at: 2_000,
            actor: "operator".into(),
            token_id: None,
            remote_addr: None,
            action: "tenant.create".into(),
            object_id: None,
            details: json!({}),
        })
        .await
        .unwrap();
    let entries = f.list_audit(a, 2).await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].action, "smtp_server.update.2", "newest first");
    assert_eq!(entries[1].action, "smtp_server.update.1");
    assert_eq!(entries[0].details, details);
    assert_eq!(entries[0].details.to_string(), details.to_string());
    assert_eq!(entries[0].tenant_id, Some(a));
    assert_eq!(entries[0].remote_addr.as_deref(), Some("192.0.2.1"));
    assert!(f.list_audit(b, 10).await.is_empty());
}

async fn secrets_are_resealed_all_at_once(f: Fixture) {
    let a = tenant(&*f.store, "acme").await;
    let b = tenant(&*f.store, "other").await;
    let sa = f.create_server(a, server_settings("relay", true)).await;
    let sb = f.create_server(b, server_settings("relay", true)).await;
    let one = f
        .create_account(a, new_account(sa.id, "one@x.example", Some("old:one")))
        .await;
    f.create_account(a, new_account(sa.id, "none@x.example", None))
        .await;
    let two = f
        .create_account(b, new_account(sb.id, "two@x.example", Some("old:two")))
        .await;

    // A failure part-way leaves every secret as it was.
    let failing: herald_store::Resealer = Box::new(|sealed: &str, _context: &str| {
        if sealed == "old:two" {
            Err("wrong key".into())
        } else {
            Ok(sealed.replace("old:", "new:"))
        }
    });
    assert!(matches!(
        f.store.reseal_secrets(failing).await,
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(
        f.account(a, sa.id, one.id).await.sealed_secret.as_deref(),
        Some("old:one")
    );

    let expected = [one.id.to_string(), two.id.to_string()];
    let resealer: herald_store::Resealer = Box::new(move |sealed: &str, context: &str| {
        assert!(expected.iter().any(|id| id == context), "context {context}");
        Ok(sealed.replace("old:", "new:"))
    });
    assert_eq!(f.store.reseal_secrets(resealer).await.unwrap(), 2);
    assert_eq!(
        f.account(a, sa.id, one.id).await.sealed_secret.as_deref(),
        Some("new:one")
    );
    assert_eq!(
        f.account(b, sb.id, two.id).await.sealed_secret.as_deref(),
        Some("new:two")
    );
}

/// Mail stored before the header text rules became stricter (a control
/// character, an encoded word) is still read back whole, so it can be sent.
async fn text_stored_under_earlier_rules_is_read_back(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let old = "Alert \u{1b}[1m =?utf-8?B?SGk=?=";
    let mailbox = Mailbox::from_stored(&format!("\"{old}\" <ops@x.example>")).unwrap();
    let m = NewMessage {
        subject: Subject::from_stored(old).unwrap(),
        headers: vec![(
            HeaderName::parse("X-Old").unwrap(),
            HeaderValue::from_stored(old).unwrap(),
        )],
        to: vec![mailbox.clone()],
        reply_to: Some(mailbox.clone()),
        ..message(t, &[], None, 1_000)
    };
    f.submit(m.clone()).await;
    let contents = f.store.message_contents(&[m.id]).await.unwrap();
    assert_eq!(contents[0].subject.as_ref(), old);
    assert_eq!(contents[0].headers[0].1.as_ref(), old);
    assert_eq!(contents[0].to, vec![mailbox.clone()]);
    assert_eq!(contents[0].reply_to, Some(mailbox));
    assert_eq!(f.message(t, m.id).await.subject, old);
}

/// Reply-To keeps its display name, on a message and on a provider; one
/// without a name is stored as the bare address, as rows were before names.
async fn reply_to_keeps_its_display_name(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let named = Mailbox::parse(r#""Support \"Team\", Störung" <support@x.example>"#).unwrap();
    let bare: Mailbox = address("reply@x.example").into();
    let with_name = NewMessage {
        reply_to: Some(named.clone()),
        ..message(t, &["a@x.example"], None, 1_000)
    };
    let without = NewMessage {
        reply_to: Some(bare.clone()),
        ..message(t, &["a@x.example"], None, 1_000)
    };
    f.submit(with_name.clone()).await;
    f.submit(without.clone()).await;
    let contents = f
        .store
        .message_contents(&[with_name.id, without.id])
        .await
        .unwrap();
    let reply_to = |id| {
        contents
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| c.reply_to.clone())
    };
    assert_eq!(reply_to(with_name.id), Some(named.clone()));
    assert_eq!(reply_to(without.id), Some(bare));

    let server = f.create_server(t, server_settings("relay", false)).await;
    let settings = ProviderSettings {
        reply_to: Some(named.clone()),
        ..provider_settings("named", server.id, None)
    };
    let provider = f.create_provider(t, settings).await;
    let read = f.provider(t, provider.id).await;
    assert_eq!(read.settings.reply_to, Some(named));
}

async fn messages_read_back_with_everything_that_happened(f: Fixture) {
    let a = tenant(&*f.store, "acme").await;
    let b = tenant(&*f.store, "other").await;
    let test_provider = ProviderId::new();
    let m = NewMessage {
        cc: vec![address("c@x.example").into()],
        bcc: vec![address("d@x.example")],
        html: Some("<p>body</p>".into()),
        reply_to: Some(address("reply@x.example").into()),
        headers: vec![
            (
                HeaderName::parse("X-Tag").unwrap(),
                HeaderValue::parse("one").unwrap(),
            ),
            (
                HeaderName::parse("X-Another").unwrap(),
                HeaderValue::parse("two ✓").unwrap(),
            ),
        ],
        used_fallback: true,
        on_behalf_of: Some(OnBehalf {
            name: "Ada Lovelace".into(),
            email: address("ada@x.example"),
        }),
        test_provider: Some(test_provider),
        ..message(a, &["a@x.example", "b@x.example"], Some("key-1"), 1_000)
    };
    let submitted = f.submit(m.clone()).await;
    assert_eq!(submitted.id, m.id);
    assert_eq!(submitted.status, RecipientStatus::Queued);
    assert!(!submitted.duplicate);

    let view = f.message(a, m.id).await;
    assert_eq!(view.status, RecipientStatus::Queued);
    assert_eq!(view.subject, "subject");
    assert_eq!(view.created_at, 1_000);
    assert_eq!(view.idempotency_key.as_deref(), Some("key-1"));
    assert!(view.used_fallback);
    assert_eq!(view.on_behalf_of, m.on_behalf_of);
    assert_eq!(view.test_provider_id, Some(test_provider));
    let recipients: Vec<(&str, RecipientKind)> = view
        .recipients
        .iter()
        .map(|r| (r.address.as_str(), r.kind))
        .collect();
    assert_eq!(
        recipients,
        vec![
            ("a@x.example", RecipientKind::To),
            ("b@x.example", RecipientKind::To),
            ("c@x.example", RecipientKind::Cc),
            ("d@x.example", RecipientKind::Bcc),
        ]
    );
    assert!(
        view.recipients
            .iter()
            .all(|r| r.next_attempt_at == Some(1_000) && r.attempts.is_empty())
    );

    let contents = f
        .store
        .message_contents(&[MessageId::new(), m.id])
        .await
        .unwrap();
    assert_eq!(contents.len(), 1, "unknown messages are skipped");
    let content = &contents[0];
    assert_eq!(content.tenant_id, a);
    assert_eq!(content.headers, m.headers);
    assert_eq!(content.to, m.to);
    assert_eq!(content.cc, m.cc);
    assert_eq!(content.reply_to, m.reply_to);
    assert_eq!(content.html, m.html);
    assert_eq!(content.text, m.text);
    assert_eq!(content.on_behalf_of, m.on_behalf_of);
    assert_eq!(content.test_provider, Some(test_provider));

    let claimed = f.claim(claim("n1", 2_000, 60_000)).await;
    assert_eq!(claimed.len(), 4);
    let view = f.message(a, m.id).await;
    assert_eq!(view.status, RecipientStatus::Sending);
    assert!(
        view.recipients
            .iter()
            .all(|r| r.next_attempt_at == Some(62_000))
    );

    let provider = ProviderId::new();
    let diagnosis =
        json!({"steps": [{"step": "ehlo", "reply": "250 hello", "ms": 3}], "ok": false});
    let detailed = AttemptRecord {
        at: 2_500,
        node: "node-1".into(),
        server: "mail.x.example:587".into(),
        outcome: RecipientStatus::Failed,
        step: Some("rcpt".into()),
        code: Some(550),
        enhanced_code: Some("5.1.1".into()),
        response: "550 5.1.1 no such user".into(),
        duration_ms: 42,
        remote_addr: Some("192.0.2.7:587".into()),
        tls_version: Some("TLSv1.3".into()),
        tls_cipher: Some("TLS13_AES_256_GCM_SHA384".into()),
        provider_id: Some(provider),
        config_version: Some(1_234),
        sender_policy: Some("fixed".into()),
        diagnosis: Some(diagnosis.clone()),
    };
    let by_address = |addr: &str| claimed.iter().find(|c| c.address.as_ref() == addr).unwrap();
    let outcomes = vec![
        Outcome {
            recipient: by_address("a@x.example").recipient,
            lease_token: by_address("a@x.example").lease_token,
            next: NextState::Failed,
            attempt: detailed.clone(),
        },
        Outcome {
            recipient: by_address("b@x.example").recipient,
            lease_token: by_address("b@x.example").lease_token,
            next: NextState::Deferred { until: 9_000 },
            attempt: AttemptRecord {
                // A remote server's reply may hold any byte.
                response: "451 try\0later".into(),
                ..attempt(RecipientStatus::Deferred)
            },
        },
        Outcome {
            recipient: by_address("c@x.example").recipient,
            lease_token: by_address("c@x.example").lease_token + 1,
            next: NextState::Sent,
            attempt: attempt(RecipientStatus::Sent),
        },
    ];
    assert_eq!(
        f.complete(outcomes, vec![]).await,
        vec![true, true, false],
        "each outcome is fenced on its own"
    );
    let view = f.message(a, m.id).await;
    assert_eq!(view.status, RecipientStatus::Sending);
    let failed = &view.recipients[0];
    assert_eq!(failed.status, RecipientStatus::Failed);
    assert_eq!(failed.next_attempt_at, None);
    assert_eq!(failed.attempts.len(), 1);
    let recorded = &failed.attempts[0];
    assert_eq!(recorded.at, detailed.at);
    assert_eq!(recorded.node, detailed.node);
    assert_eq!(recorded.server, detailed.server);
    assert_eq!(recorded.outcome, detailed.outcome);
    assert_eq!(recorded.step, detailed.step);
    assert_eq!(recorded.code, detailed.code);
    assert_eq!(recorded.enhanced_code, detailed.enhanced_code);
    assert_eq!(recorded.response, detailed.response);
    assert_eq!(recorded.duration_ms, detailed.duration_ms);
    assert_eq!(recorded.remote_addr, detailed.remote_addr);
    assert_eq!(recorded.tls_version, detailed.tls_version);
    assert_eq!(recorded.tls_cipher, detailed.tls_cipher);
    assert_eq!(recorded.provider_id, Some(provider));
    assert_eq!(recorded.config_version, Some(1_234));
    assert_eq!(recorded.sender_policy.as_deref(), Some("fixed"));
    assert_eq!(recorded.diagnosis, Some(diagnosis));
    let deferred = &view.recipients[1];
    assert_eq!(deferred.status, RecipientStatus::Deferred);
    assert_eq!(deferred.next_attempt_at, Some(9_000));
    // PostgreSQL cannot store NUL in text and keeps a replacement character.
    assert_eq!(
        deferred.attempts[0].response.replace('\0', "\u{fffd}"),
        "451 try\u{fffd}later"
    );
    assert_eq!(view.recipients[2].status, RecipientStatus::Sending);

    not_found(f.store.message(b, m.id).await);
}

async fn message_lists_are_newest_first(f: Fixture) {
    let a = tenant(&*f.store, "acme").await;
    let first = f.submit(message(a, &["a@x.example"], None, 1_000)).await;
    let second = f
        .submit(message(a, &["a@x.example", "b@x.example"], None, 2_000))
        .await;
    let third = f.submit(message(a, &["a@x.example"], None, 2_000)).await;
    let claimed = f.claim_one(claim("n1", 1_500, 60_000)).await;
    assert_eq!(claimed.message, first.id);
    f.complete(
        vec![Outcome {
            recipient: claimed.recipient,
            lease_token: claimed.lease_token,
            next: NextState::Sent,
            attempt: attempt(RecipientStatus::Sent),
        }],
        vec![],
    )
    .await;
    let listed = f.list_messages(a, 10).await;
    let ids: Vec<MessageId> = listed.iter().map(|m| m.id).collect();
    // Ties in time are broken by id, newest first too.
    let (newer, older) = if third.id > second.id {
        (third.id, second.id)
    } else {
        (second.id, third.id)
    };
    assert_eq!(ids, vec![newer, older, first.id]);
    assert_eq!(listed[2].status, RecipientStatus::Sent);
    assert_eq!(listed[0].status, RecipientStatus::Queued);
    assert_eq!(listed[0].subject, "subject");
    assert_eq!(f.list_messages(a, 2).await.len(), 2);
}

async fn captures_are_kept_only_with_an_accepted_outcome(f: Fixture) {
    let a = tenant(&*f.store, "acme").await;
    let b = tenant(&*f.store, "other").await;
    let m = f.submit(message(a, &["a@x.example"], None, 1_000)).await;
    let c = f.claim_one(claim("n1", 2_000, 60_000)).await;
    let capture = |at: i64, content: &[u8]| NewCapture {
        message: m.id,
        tenant: a,
        envelope_from: "alerts@x.example".into(),
        recipients: vec!["a@x.example".into(), "b@x.example".into()],
        content: content.to_vec(),
        at,
    };
    let outcome = |token: i64| Outcome {
        recipient: c.recipient,
        lease_token: token,
        next: NextState::Sent,
        attempt: attempt(RecipientStatus::Sent),
    };
    assert_eq!(
        f.complete(
            vec![outcome(c.lease_token + 1)],
            vec![capture(3_000, b"stale")]
        )
        .await,
        vec![false]
    );
    assert!(f.list_captured(a, 10).await.is_empty());
    assert_eq!(
        f.complete(
            vec![outcome(c.lease_token)],
            vec![
                capture(3_000, b"Subject: one\r\n\r\nbody\r\n"),
                capture(3_001, b"Subject: two\r\n\r\n\xff\r\n"),
            ]
        )
        .await,
        vec![true]
    );
    let captured = f.list_captured(a, 10).await;
    assert_eq!(captured.len(), 2);
    assert_eq!(captured[0].captured_at, 3_001, "newest first");
    assert_eq!(captured[0].content, "Subject: two\r\n\r\n\u{fffd}\r\n");
    assert_eq!(captured[1].content, "Subject: one\r\n\r\nbody\r\n");
    assert_eq!(captured[1].message_id, m.id);
    assert_eq!(captured[1].envelope_from, "alerts@x.example");
    assert_eq!(captured[1].recipients, vec!["a@x.example", "b@x.example"]);
    assert_eq!(f.list_captured(a, 1).await.len(), 1);

    // One call with two deliveries: the capture of the one whose lease is
    // gone is dropped, the other's is kept.
    let (kept, dropped) = (
        f.submit(message(a, &["k@x.example"], None, 4_000)).await,
        f.submit(message(a, &["d@x.example"], None, 4_000)).await,
    );
    let claimed = f.claim(claim("n1", 5_000, 60_000)).await;
    let of = |id: MessageId| claimed.iter().find(|c| c.message == id).unwrap();
    let outcome = |c: &herald_store::Claimed, token: i64| Outcome {
        recipient: c.recipient,
        lease_token: token,
        next: NextState::Sent,
        attempt: attempt(RecipientStatus::Sent),
    };
    let copy = |id: MessageId, content: &[u8]| NewCapture {
        message: id,
        content: content.to_vec(),
        ..capture(6_000, b"")
    };
    let recorded = f
        .complete(
            vec![
                outcome(of(dropped.id), of(dropped.id).lease_token + 1),
                outcome(of(kept.id), of(kept.id).lease_token),
            ],
            vec![copy(dropped.id, b"dropped"), copy(kept.id, b"kept")],
        )
        .await;
    assert_eq!(recorded, vec![false, true]);
    let captured = f.list_captured(a, 10).await;
    assert_eq!(captured.len(), 3);
    assert_eq!(
        (captured[0].message_id, captured[0].content.as_str()),
        (kept.id, "kept")
    );
    assert!(f.list_captured(b, 10).await.is_empty());
}

async fn nodes_report_their_heartbeats(f: Fixture) {
    let node = |name: &str, roles: &[&str], at: i64| NodeRecord {
        name: name.into(),
        roles: roles.iter().map(|r| NodeRole::parse(r).unwrap()).collect(),
        version: "0.1.0".into(),
        started_at: 500,
        heartbeat_at: at,
        incarnation: Some(format!("{name}-first")),
    };
    assert!(f.list_nodes().await.is_empty());
    f.heartbeat(node("n1", &["api"], 1_000)).await;
    f.heartbeat(node("n2", &["worker"], 2_000)).await;
    f.heartbeat(node("n1", &["api", "worker"], 3_000)).await;
    f.heartbeat(node("n3", &[], 1_500)).await;
    let nodes = f.list_nodes().await;
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, vec!["n1", "n2", "n3"], "newest heartbeat first");
    assert_eq!(nodes[0].roles, [NodeRole::Api, NodeRole::Worker]);
    assert_eq!(nodes[0].heartbeat_at, 3_000);
    assert_eq!(nodes[0].started_at, 500);
    assert!(nodes[2].roles.is_empty());
    assert_eq!(nodes[0].incarnation.as_deref(), Some("n1-first"));
}

/// A node started again gives back what its earlier processes held, and only
/// that: the recipients are due at once with their attempt count kept and no
/// attempt recorded, and the old process's late outcome is refused.
async fn a_restarted_node_gets_back_the_leases_of_its_earlier_processes(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let m = f
        .submit(message(t, &["a@x.example", "b@x.example"], None, 1_000))
        .await;
    let old = f.claim(claim("n1", 2_000, 600_000)).await;
    assert_eq!(old.len(), 2);
    // Another node's lease, and the restarted process's own, are not touched.
    let other = f.submit(message(t, &["c@x.example"], None, 2_500)).await;
    let theirs = f.claim(claim("n2", 3_000, 600_000)).await;
    assert_eq!(theirs.len(), 1);

    let released = f
        .release_earlier_incarnations("n1", "n1-second", 4_000)
        .await;
    assert_eq!(released, 2);
    let view = f.message(t, m.id).await;
    for r in &view.recipients {
        assert_eq!(r.status, RecipientStatus::Queued, "{r:?}");
        assert_eq!(r.next_attempt_at, Some(4_000), "due at once");
        assert!(r.attempts.is_empty(), "a release is no attempt");
    }
    let view = f.message(t, other.id).await;
    assert_eq!(view.recipients[0].status, RecipientStatus::Sending);

    let again = f
        .claim(ClaimRequest {
            incarnation: "n1-second".into(),
            ..claim("n1", 4_000, 600_000)
        })
        .await;
    assert_eq!(again.len(), 2, "long before the old lease ends");
    assert!(
        again.iter().all(|c| c.attempt == 2),
        "the interrupted attempt counts"
    );
    assert_eq!(
        f.release_earlier_incarnations("n1", "n1-second", 5_000)
            .await,
        0,
        "a process keeps its own leases"
    );

    // The old process's outcome comes too late: its lease was taken over.
    let late = Outcome {
        recipient: old[0].recipient,
        lease_token: old[0].lease_token,
        next: NextState::Sent,
        attempt: attempt(RecipientStatus::Sent),
    };
    assert_eq!(f.complete(vec![late], vec![]).await, vec![false]);
}

/// Leases of a node whose heartbeat stopped are given back by whoever looks,
/// once; a live node's leases, and those of a node that never reported, stay.
async fn leases_of_a_node_whose_heartbeat_stopped_are_given_back(f: Fixture) {
    let beat = |name: &str, at: i64| NodeRecord {
        name: name.into(),
        roles: vec![NodeRole::Worker],
        version: "0.1.0".into(),
        started_at: 500,
        heartbeat_at: at,
        incarnation: Some(format!("{name}-first")),
    };
    let t = tenant(&*f.store, "acme").await;
    f.heartbeat(beat("dead", 1_000)).await;
    f.heartbeat(beat("live", 5_000)).await;
    let mut held = Vec::new();
    for (node, to) in [
        ("dead", "a@x.example"),
        ("live", "b@x.example"),
        ("unknown", "c@x.example"),
    ] {
        let m = f.submit(message(t, &[to], None, 1_000)).await;
        assert_eq!(
            f.claim(ClaimRequest {
                limit: 1,
                ..claim(node, 2_000, 600_000)
            })
            .await
            .len(),
            1
        );
        held.push(m.id);
    }

    let released = f.release_stale_nodes(3_000, 6_000).await;
    assert_eq!(released, vec![("dead".to_owned(), 1)]);
    let status = |view: herald_store::MessageView| {
        (
            view.recipients[0].status,
            view.recipients[0].next_attempt_at,
        )
    };
    assert_eq!(
        status(f.message(t, held[0]).await),
        (RecipientStatus::Queued, Some(6_000))
    );
    for id in &held[1..] {
        assert_eq!(status(f.message(t, *id).await).0, RecipientStatus::Sending);
    }
    let nodes = f.list_nodes().await;
    let dead = nodes.iter().find(|n| n.name == "dead").unwrap();
    assert_eq!(dead.incarnation, None, "marked as taken over");
    assert!(
        f.release_stale_nodes(3_000, 7_000).await.is_empty(),
        "a node is taken over once"
    );

    // The node starts again and beats: its new process's leases are its own.
    f.heartbeat(NodeRecord {
        incarnation: Some("dead-second".into()),
        ..beat("dead", 8_000)
    })
    .await;
    let retaken = f
        .claim(ClaimRequest {
            incarnation: "dead-second".into(),
            ..claim("dead", 8_000, 600_000)
        })
        .await;
    assert_eq!(retaken.len(), 1);
    assert_eq!(retaken[0].attempt, 2, "the interrupted attempt counts");
    assert!(
        f.release_stale_nodes(3_000, 9_000).await.is_empty(),
        "a node that beats again is alive"
    );
}

/// Console sign-in: passwords are found by e-mail address (any case), a new
/// password ends the sessions made with the old one, sessions expire, and a
/// person's session follows the person's current role and disappears with them.
async fn passwords_and_sessions_keep_their_rules(f: Fixture) {
    let s = &*f.store;
    let acme = tenant(s, "acme").await;
    let other = tenant(s, "other").await;
    let mut ada = person("Ada", "Ada@acme.example");
    ada.role = PersonRole::TenantAdmin;
    let ada = s.create_person(acme, ada).await.unwrap();
    let twin = s
        .create_person(other, person("Ada", "ada@acme.example"))
        .await
        .unwrap();
    let nobody = s
        .create_person(acme, person("No Password", "nobody@acme.example"))
        .await
        .unwrap();

    // No password yet: nobody signs in.
    assert!(s.credentials("ada@acme.example").await.unwrap().is_empty());
    s.set_operator_password(address("ada@acme.example"), "hash-operator".into())
        .await
        .unwrap();
    s.set_person_password(acme, ada.id, "hash-ada".into())
        .await
        .unwrap();
    s.set_person_password(other, twin.id, "hash-twin".into())
        .await
        .unwrap();
    // Another tenant's person is not found through this tenant.
    assert!(matches!(
        s.set_person_password(acme, twin.id, "x".into()).await,
        Err(StoreError::NotFound)
    ));
    let found = s.credentials("ADA@acme.example ").await.unwrap();
    let hashes: Vec<&str> = found.iter().map(|c| c.password_hash.as_str()).collect();
    assert_eq!(hashes, ["hash-operator", "hash-ada", "hash-twin"]);
    assert_eq!(
        found[0].principal.operator_email(),
        Some("ada@acme.example")
    );
    assert_eq!(found[1].principal.person().unwrap().id, ada.id);
    assert!(
        s.credentials("nobody@acme.example")
            .await
            .unwrap()
            .is_empty()
    );

    let session = |subject, hash: &str, expires_at| herald_store::NewSession {
        hash: hash.into(),
        id: TokenId::new(),
        subject,
        created_at: 1_000,
        expires_at,
    };
    use herald_store::SessionSubject;
    s.create_session(session(SessionSubject::Person(ada.id), "s-ada", 5_000))
        .await
        .unwrap();
    s.create_session(session(
        SessionSubject::Operator("ada@acme.example".into()),
        "s-op",
        5_000,
    ))
    .await
    .unwrap();
    s.create_session(session(
        SessionSubject::Person(nobody.id),
        "s-nobody",
        5_000,
    ))
    .await
    .unwrap();
    let found = s.session_by_hash("s-ada", 4_000).await.unwrap().unwrap();
    assert_eq!(found.principal.person().unwrap().id, ada.id);
    assert_eq!(found.role(), Role::TenantAdmin);
    let op = s.session_by_hash("s-op", 4_000).await.unwrap().unwrap();
    assert_eq!(op.principal.operator_email(), Some("ada@acme.example"));
    assert_eq!(op.role(), Role::Operator);
    // Expired, unknown.
    assert!(s.session_by_hash("s-ada", 5_001).await.unwrap().is_none());
    assert!(s.session_by_hash("s-unknown", 0).await.unwrap().is_none());

    // A new password ends the person's sessions, and only theirs.
    s.set_person_password(acme, ada.id, "hash-ada-2".into())
        .await
        .unwrap();
    assert!(s.session_by_hash("s-ada", 4_000).await.unwrap().is_none());
    assert!(s.session_by_hash("s-op", 4_000).await.unwrap().is_some());
    s.set_operator_password(address("ada@acme.example"), "hash-operator-2".into())
        .await
        .unwrap();
    assert!(s.session_by_hash("s-op", 4_000).await.unwrap().is_none());

    // Sign-out; deleting the person ends their sessions too.
    s.delete_session("s-nobody-not-there").await.unwrap();
    assert!(
        s.session_by_hash("s-nobody", 4_000)
            .await
            .unwrap()
            .is_some()
    );
    s.delete_person(acme, nobody.id).await.unwrap();
    assert!(
        s.session_by_hash("s-nobody", 4_000)
            .await
            .unwrap()
            .is_none()
    );
    s.create_session(session(SessionSubject::Person(ada.id), "s-ada-2", 5_000))
        .await
        .unwrap();
    s.delete_session("s-ada-2").await.unwrap();
    assert!(s.session_by_hash("s-ada-2", 4_000).await.unwrap().is_none());
}

/// Message searches filter by recipient (any case), by time, by the provider
/// a test message tests, and stay within the tenant.
async fn message_searches_filter_by_recipient_and_time(f: Fixture) {
    let s = &*f.store;
    let acme = tenant(s, "acme").await;
    let other = tenant(s, "other").await;
    let a = s
        .submit(message(acme, &["ops@acme.example"], None, 1_000))
        .await
        .unwrap();
    let b = s
        .submit(message(
            acme,
            &["dev@acme.example", "ops@acme.example"],
            None,
            2_000,
        ))
        .await
        .unwrap();
    let c = s
        .submit(message(acme, &["dev@acme.example"], None, 3_000))
        .await
        .unwrap();
    s.submit(message(other, &["ops@acme.example"], None, 2_500))
        .await
        .unwrap();
    let ids = |found: Vec<herald_store::MessageSummary>| -> Vec<MessageId> {
        found.into_iter().map(|m| m.id).collect()
    };
    let query = |recipient: Option<&str>, since, until| herald_store::MessageQuery {
        recipient: recipient.map(str::to_owned),
        since,
        until,
        test_provider: None,
        limit: 10,
        ..herald_store::MessageQuery::default()
    };
    assert_eq!(
        ids(s
            .search_messages(acme, query(None, None, None))
            .await
            .unwrap()),
        [c.id, b.id, a.id]
    );
    assert_eq!(
        ids(s
            .search_messages(acme, query(Some("OPS@acme.example"), None, None))
            .await
            .unwrap()),
        [b.id, a.id]
    );
    assert_eq!(
        ids(s
            .search_messages(acme, query(None, Some(2_000), Some(3_000)))
            .await
            .unwrap()),
        [b.id]
    );
    let found = s
        .search_messages(acme, query(Some("dev@acme.example"), None, None))
        .await
        .unwrap();
    assert_eq!(found[0].status, RecipientStatus::Queued);
    assert!(
        s.search_messages(acme, query(Some("nobody@acme.example"), None, None))
            .await
            .unwrap()
            .is_empty()
    );
    // A provider's test messages, and no other message.
    let tested = ProviderId::new();
    let test = s
        .submit(NewMessage {
            test_provider: Some(tested),
            ..message(acme, &["ops@acme.example"], None, 4_000)
        })
        .await
        .unwrap();
    s.submit(NewMessage {
        test_provider: Some(ProviderId::new()),
        ..message(acme, &["ops@acme.example"], None, 5_000)
    })
    .await
    .unwrap();
    let of = |provider| herald_store::MessageQuery {
        test_provider: Some(provider),
        ..query(None, None, None)
    };
    assert_eq!(
        ids(s.search_messages(acme, of(tested)).await.unwrap()),
        [test.id]
    );
    assert!(
        s.search_messages(other, of(tested))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Pages of a long history: the status filter finds messages past the newest
/// thousand, pages follow one another by (created time, id) without a gap or
/// a repeat (ties included), and source and status stay within the tenant.
async fn message_pages_filter_by_status_and_source_across_a_long_history(f: Fixture) {
    let s = &*f.store;
    let acme = tenant(s, "acme").await;
    let other = tenant(s, "other").await;
    // Twelve old messages that fail, then 1,200 newer ones, ten of them at the same instant.
    let old: Vec<NewMessage> = (0..12)
        .map(|i| message(acme, &["old@acme.example"], None, 100 + i))
        .collect();
    let old_ids: Vec<MessageId> = old.iter().map(|m| m.id).collect();
    s.submit_batch(old).await.unwrap();
    let claimed = s.claim(claim("n1", 1_000, 60_000)).await.unwrap();
    assert_eq!(claimed.len(), 12, "the oldest are due first");
    let outcomes = claimed
        .iter()
        .map(|c| Outcome {
            recipient: c.recipient,
            lease_token: c.lease_token,
            next: NextState::Failed,
            attempt: attempt(RecipientStatus::Failed),
        })
        .collect();
    s.complete(outcomes, vec![]).await.unwrap();
    let newer: Vec<NewMessage> = (0..1_200)
        .map(|i| message(acme, &["new@acme.example"], None, 10_000 + i.max(10)))
        .collect();
    s.submit_batch(newer).await.unwrap();
    let smtp = |at| NewMessage {
        origin: herald_store::Origin::Smtp(herald_store::SmtpOrigin {
            credential_id: None,
            connector_id: None,
            client_addr: "192.0.2.1".into(),
        }),
        raw: Some(b"Subject: s\r\n\r\nbody\r\n".to_vec()),
        ..message(acme, &["new@acme.example"], None, at)
    };
    let received = s
        .submit_batch(vec![smtp(20_000), smtp(20_001)])
        .await
        .unwrap();
    s.submit(message(other, &["old@acme.example"], None, 100))
        .await
        .unwrap();

    let page = |status, source: Option<&str>, before, limit| herald_store::MessageQuery {
        status,
        source: source.map(str::to_owned),
        before,
        limit,
        ..herald_store::MessageQuery::default()
    };
    // Every failed message, in pages of five, though all are older than the newest thousand.
    let mut failed = Vec::new();
    let mut before = None;
    loop {
        let found = s
            .search_messages(acme, page(Some(RecipientStatus::Failed), None, before, 5))
            .await
            .unwrap();
        assert!(found.iter().all(|m| m.status == RecipientStatus::Failed));
        let Some(last) = found.last() else { break };
        before = Some((last.created_at, last.id));
        failed.extend(found.iter().map(|m| m.id));
    }
    let mut expected = old_ids.clone();
    expected.reverse();
    assert_eq!(failed, expected, "newest first, each once");

    // The whole history in pages of 500: strictly descending, nothing twice or missing.
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let found = s
            .search_messages(acme, page(None, None, before, 500))
            .await
            .unwrap();
        let Some(last) = found.last() else { break };
        before = Some((last.created_at, last.id));
        all.extend(found.iter().map(|m| (m.created_at, m.id)));
    }
    assert_eq!(all.len(), 12 + 1_200 + 2);
    assert!(all.windows(2).all(|w| w[0] > w[1]), "strictly newest first");

    // Source and status together, and nothing of another tenant.
    let smtp_only = s
        .search_messages(acme, page(None, Some("smtp"), None, 10))
        .await
        .unwrap();
    let mut smtp_ids: Vec<MessageId> = smtp_only.iter().map(|m| m.id).collect();
    smtp_ids.sort();
    let mut sent_ids: Vec<MessageId> = received.iter().map(|m| m.id).collect();
    sent_ids.sort();
    assert_eq!(smtp_ids, sent_ids);
    assert!(smtp_only.iter().all(|m| m.source == "smtp"));
    let queued_api = s
        .search_messages(
            acme,
            page(Some(RecipientStatus::Queued), Some("api"), None, 500),
        )
        .await
        .unwrap();
    assert_eq!(queued_api.len(), 500);
    assert!(queued_api.iter().all(|m| m.source == "api"));
    assert!(
        s.search_messages(other, page(Some(RecipientStatus::Failed), None, None, 10))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Runs every case on SQLite (`sqlite::<case>`) and on PostgreSQL (`postgres::<case>`).
/// `allow_plaintext_auth` is stored, changed and read back, off unless set.
async fn plaintext_auth_is_allowed_only_where_the_server_entry_says_so(f: Fixture) {
    let a = tenant(&*f.store, "acme").await;
    let mut settings = server_settings("relay", true);
    settings.security = Security::None;
    let server = f.create_server(a, settings.clone()).await;
    assert!(!server.settings.allow_plaintext_auth);
    assert_eq!(server.settings.warnings().len(), 1, "{:?}", server.settings);

    settings.allow_plaintext_auth = true;
    let updated = f.update_server(a, server.id, settings.clone()).await;
    assert!(updated.settings.allow_plaintext_auth);
    let read = f.server(a, server.id).await;
    assert_eq!(read.settings, settings);
    assert!(f.list_servers(a).await[0].settings.allow_plaintext_auth);

    settings.allow_plaintext_auth = false;
    f.update_server(a, server.id, settings).await;
    assert!(!f.server(a, server.id).await.settings.allow_plaintext_auth);
}

/// A message with a limit on its tenant's queued recipients.
fn limited(tenant: TenantId, to: &[&str], key: Option<&str>, max_queued: u64) -> NewMessage {
    NewMessage {
        max_queued: Some(max_queued),
        ..message(tenant, to, key, 1_000)
    }
}

/// A submission past the tenant's limit of queued recipients is refused and
/// stores nothing; recipients that reach a final state make room again,
/// deferred ones do not, and other tenants are not affected.
async fn submissions_past_the_queue_limit_are_refused(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let other = tenant(&*f.store, "other").await;
    f.submit(limited(t, &["a@x.example", "b@x.example"], None, 3))
        .await;
    let refused = f
        .store
        .submit(limited(t, &["c@x.example", "d@x.example"], Some("k"), 3))
        .await;
    assert!(
        matches!(refused, Err(StoreError::QueueFull { limit: 3 })),
        "{refused:?}"
    );
    assert_eq!(f.list_messages(t, 10).await.len(), 1, "nothing half-stored");
    // The refused message's idempotency key was not taken.
    f.submit(limited(t, &["c@x.example"], Some("k"), 3)).await;
    // A duplicate adds no recipients, so it is answered even at the limit.
    let again = f.submit(limited(t, &["c@x.example"], Some("k"), 3)).await;
    assert!(again.duplicate);
    // A batch that would pass the limit is refused whole.
    let batch = f
        .store
        .submit_batch(vec![limited(t, &["e@x.example"], None, 3)])
        .await;
    assert!(
        matches!(batch, Err(StoreError::QueueFull { limit: 3 })),
        "{batch:?}"
    );
    // Another tenant has a queue of its own.
    f.submit(limited(
        other,
        &["a@x.example", "b@x.example", "c@x.example"],
        None,
        3,
    ))
    .await;

    // One recipient deferred, one sent, one failed: two places free.
    let mut claimed = f.claim(claim("n1", 1_000, 60_000)).await;
    claimed.retain(|c| c.tenant == t);
    assert_eq!(claimed.len(), 3);
    let next = [
        NextState::Deferred { until: 5_000 },
        NextState::Sent,
        NextState::Failed,
    ];
    let outcomes = claimed
        .iter()
        .zip(next)
        .map(|(c, next)| Outcome {
            recipient: c.recipient,
            lease_token: c.lease_token,
            next,
            attempt: attempt(RecipientStatus::Sent),
        })
        .collect();
    f.complete(outcomes, vec![]).await;
    f.submit_batch(vec![
        limited(t, &["f@x.example"], None, 3),
        limited(t, &["g@x.example"], None, 3),
    ])
    .await;
    let full = f.store.submit(limited(t, &["h@x.example"], None, 3)).await;
    assert!(
        matches!(full, Err(StoreError::QueueFull { limit: 3 })),
        "{full:?}"
    );
    // Without a limit nothing is refused.
    f.submit(message(t, &["h@x.example"], None, 1_000)).await;
}

fn node_record(name: &str) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        roles: vec![NodeRole::Worker],
        version: "test".into(),
        started_at: 1,
        heartbeat_at: 2,
        incarnation: None,
    }
}

/// A store remembers whether the database took its latest write, for a
/// node's readiness; reads go on while writes are refused.
async fn a_store_says_while_the_database_refuses_writes(f: Fixture) {
    let store = &f.store;
    store.heartbeat(node_record("a")).await.unwrap();
    assert!(!store.refusing_writes());

    let block = f.refuse_writes().await;
    // On PostgreSQL the write may meet a connection that was just ended;
    // either way the database did not take it.
    match store.heartbeat(node_record("a")).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("a refused write is unavailable, not {other:?}"),
    }
    assert!(store.refusing_writes());

    f.accept_writes(block).await;
    let mut accepted = false;
    for _ in 0..5 {
        if store.heartbeat(node_record("a")).await.is_ok() {
            accepted = true;
            break;
        }
    }
    assert!(accepted, "the database takes writes again");
    assert!(!store.refusing_writes());
    assert_eq!(store.list_nodes().await.unwrap().len(), 1);
}

// Delivery webhooks.

fn new_webhook(tenant: TenantId, events: &[EventType], at: i64) -> NewWebhook {
    NewWebhook {
        id: WebhookId::new(),
        tenant_id: tenant,
        url: "https://hooks.example/herald".into(),
        events: EventSet::of(events.iter().copied()).unwrap(),
        enabled: true,
        sealed_secret: "sealed:one".into(),
        created_at: at,
    }
}

fn webhook_claim(now: i64, limit: u32) -> WebhookClaim {
    WebhookClaim {
        node: "node-a".into(),
        incarnation: "first".into(),
        now,
        lease_until: now + 60_000,
        limit,
        exclude: vec![],
    }
}

fn webhook_attempt(event: &ClaimedEvent, at: i64, next: WebhookNext) -> WebhookAttempt {
    WebhookAttempt {
        seq: event.seq,
        lease_token: event.lease_token,
        webhook: event.webhook,
        outcome: WebhookOutcome::Attempted(AttemptResult {
            at,
            response_status: Some(if next == WebhookNext::Delivered {
                204
            } else {
                503
            }),
            error: (next != WebhookNext::Delivered).then(|| "unavailable".into()),
            duration_ms: 7,
            next,
        }),
    }
}

fn given_back(event: &ClaimedEvent, due_at: i64) -> WebhookAttempt {
    WebhookAttempt {
        seq: event.seq,
        lease_token: event.lease_token,
        webhook: event.webhook,
        outcome: WebhookOutcome::GivenBack { due_at },
    }
}

fn outcome_at(c: &Claimed, next: NextState, at: i64) -> Outcome {
    let status = match next {
        NextState::Sent => RecipientStatus::Sent,
        NextState::Failed => RecipientStatus::Failed,
        NextState::Deferred { .. } => RecipientStatus::Deferred,
    };
    Outcome {
        recipient: c.recipient,
        lease_token: c.lease_token,
        next,
        attempt: AttemptRecord {
            at,
            ..attempt(status)
        },
    }
}

impl Fixture {
    /// The types of a webhook's events, oldest first.
    async fn event_types(&self, tenant: TenantId, webhook: WebhookId) -> Vec<String> {
        let mut deliveries = self
            .store
            .webhook_deliveries(tenant, webhook, 100)
            .await
            .unwrap();
        deliveries.reverse();
        deliveries.into_iter().map(|d| d.event_type).collect()
    }

    async fn create_webhook(&self, webhook: NewWebhook) -> Webhook {
        self.store.create_webhook(webhook).await.unwrap()
    }

    /// The tenant "acme" with a webhook for `recipient.sent` and `message.sent`.
    async fn tenant_sent_to_a_webhook(&self) -> (TenantId, Webhook) {
        let t = tenant(&*self.store, "acme").await;
        let events = [EventType::RecipientSent, EventType::MessageSent];
        (t, self.create_webhook(new_webhook(t, &events, 0)).await)
    }

    async fn claim_events(&self, claim: WebhookClaim) -> Vec<ClaimedEvent> {
        self.store.claim_webhook_events(claim).await.unwrap()
    }

    async fn finish_events(
        &self,
        attempts: Vec<WebhookAttempt>,
        disable_failing_before: i64,
    ) -> Vec<DisabledWebhook> {
        self.store
            .finish_webhook_events(attempts, disable_failing_before)
            .await
            .unwrap()
    }

    /// Submits a message to `to` and sends every recipient at `at`.
    async fn send_message(&self, tenant: TenantId, to: &[&str], at: i64) -> MessageId {
        let m = self.submit(message(tenant, to, None, at)).await;
        let claimed = self.claim(claim("n1", i64::MAX / 4, 60_000)).await;
        let outcomes = claimed
            .iter()
            .map(|c| outcome_at(c, NextState::Sent, at))
            .collect();
        self.complete(outcomes, vec![]).await;
        m.id
    }
}

fn event_names(events: &[ClaimedEvent]) -> Vec<(Option<MessageId>, &str)> {
    events
        .iter()
        .map(|e| (e.message_id, e.event_type.as_str()))
        .collect()
}

/// A batch of attempts may hold a late one of an earlier lease beside the
/// current lease's attempt of the same event: only the current one is
/// recorded, and the late one's retry puts nothing of the chain off.
async fn a_late_attempt_beside_the_current_one_changes_nothing(f: Fixture) {
    let (t, hook) = f.tenant_sent_to_a_webhook().await;
    let m = f.submit(message(t, &["a@x.example"], None, 1_000)).await.id;
    let claimed = f.claim(claim("n1", 1_000, 60_000)).await;
    f.complete(
        vec![outcome_at(&claimed[0], NextState::Sent, 2_000)],
        vec![],
    )
    .await;
    // The recipient's event, leased for a minute; the message's waits behind it.
    let first = f.claim_events(webhook_claim(10_000, 1)).await;
    assert_eq!(event_names(&first), [(Some(m), "recipient.sent")]);
    // The lease ran out, and a later claim took the event again.
    let again = f.claim_events(webhook_claim(80_000, 1)).await;
    assert_eq!(again[0].seq, first[0].seq);
    assert!(again[0].lease_token > first[0].lease_token);
    let late = webhook_attempt(&first[0], 80_500, WebhookNext::Retry { at: 900_000 });
    let current = webhook_attempt(&again[0], 81_000, WebhookNext::Delivered);
    assert!(f.finish_events(vec![late, current], 0).await.is_empty());
    let deliveries = f.webhook_deliveries(t, hook.id, 100).await;
    let event = deliveries
        .iter()
        .find(|d| d.event_id == first[0].event_id)
        .unwrap();
    assert_eq!(event.status, WebhookDeliveryStatus::Delivered);
    assert_eq!(event.attempts, 1);
    // The message's event is due as it was, not put off to the late retry.
    let next = f.claim_events(webhook_claim(81_000, 10)).await;
    assert_eq!(event_names(&next), [(Some(m), "message.sent")]);
}

async fn webhooks_are_kept_per_tenant(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let other = tenant(&*f.store, "other").await;
    let first = f
        .create_webhook(new_webhook(t, &[EventType::MessageSent], 1_000))
        .await;
    assert_eq!(first.tenant_id, t);
    assert!(first.enabled);
    assert_eq!(
        first.events,
        EventSet::of([EventType::MessageSent]).unwrap()
    );
    assert_eq!((first.created_at, first.updated_at), (1_000, 1_000));
    assert_eq!(first.disabled_reason, None);
    let second = f
        .create_webhook(NewWebhook {
            enabled: false,
            ..new_webhook(t, &EventType::ALL, 2_000)
        })
        .await;
    f.create_webhook(new_webhook(other, &EventType::ALL, 500))
        .await;
    let listed: Vec<WebhookId> = f.list_webhooks(t).await.iter().map(|w| w.id).collect();
    assert_eq!(listed, vec![first.id, second.id], "oldest first");
    assert_eq!(f.webhook(t, second.id).await.url, second.url);

    // A change keeps what it does not name.
    let changed = f
        .update_webhook(
            t,
            first.id,
            WebhookChange {
                url: Some("https://hooks.example/v2".into()),
                ..WebhookChange::default()
            },
            3_000,
        )
        .await;
    assert_eq!(changed.url, "https://hooks.example/v2");
    assert_eq!(changed.events, first.events);
    assert!(changed.enabled);
    assert_eq!((changed.created_at, changed.updated_at), (1_000, 3_000));
    let changed = f
        .update_webhook(
            t,
            first.id,
            WebhookChange {
                events: Some(EventSet::all()),
                enabled: Some(false),
                ..WebhookChange::default()
            },
            4_000,
        )
        .await;
    assert_eq!(changed.url, "https://hooks.example/v2");
    assert_eq!(changed.events, EventSet::all());
    assert!(!changed.enabled);

    let rotated = f
        .rotate_webhook_secret(t, first.id, "sealed:two".into(), 90_000, 5_000)
        .await;
    assert_eq!(rotated.previous_secret_until, Some(90_000));
    assert_eq!(rotated.updated_at, 5_000);

    // Another tenant's id is not found, and nothing of it changes.
    not_found(f.store.webhook(other, first.id).await);
    not_found(
        f.store
            .update_webhook(other, first.id, WebhookChange::default(), 6_000)
            .await,
    );
    not_found(
        f.store
            .rotate_webhook_secret(other, first.id, "sealed:x".into(), 1, 6_000)
            .await,
    );
    not_found(f.store.webhook_deliveries(other, first.id, 10).await);
    not_found(f.store.delete_webhook(other, first.id).await);
    not_found(
        f.store
            .record_webhook_test(WebhookTestRecord {
                tenant_id: other,
                webhook: first.id,
                event_id: "evt_test".into(),
                event_type: "webhook.test".into(),
                payload: "{}".into(),
                result: AttemptResult {
                    at: 6_000,
                    response_status: Some(204),
                    error: None,
                    duration_ms: 3,
                    next: WebhookNext::Delivered,
                },
            })
            .await,
    );
    assert!(f.webhook_deliveries(t, first.id, 10).await.is_empty());
    assert_eq!(f.webhook(t, first.id).await.updated_at, 5_000);

    f.delete_webhook(t, first.id).await;
    not_found(f.store.webhook(t, first.id).await);
    not_found(f.store.delete_webhook(t, first.id).await);
    assert_eq!(f.list_webhooks(t).await.len(), 1);
    assert_eq!(f.list_webhooks(other).await.len(), 1);
}

/// An outcome `complete` records writes the events it causes for each
/// enabled webhook of its tenant that subscribes to them, one row per
/// webhook and event; an outcome refused for a stale lease writes none.
async fn outcomes_write_events_for_subscribed_webhooks(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let other = tenant(&*f.store, "other").await;
    let all = f.create_webhook(new_webhook(t, &EventType::ALL, 0)).await;
    let recipients = f
        .create_webhook(new_webhook(
            t,
            &[EventType::RecipientSent, EventType::RecipientDeferred],
            0,
        ))
        .await;
    let disabled = f
        .create_webhook(NewWebhook {
            enabled: false,
            ..new_webhook(t, &EventType::ALL, 0)
        })
        .await;
    let elsewhere = f
        .create_webhook(new_webhook(other, &EventType::ALL, 0))
        .await;

    let m = f
        .submit(message(t, &["a@x.example", "b@x.example"], None, 1_000))
        .await;
    let claimed = f.claim(claim("n1", 1_000, 60_000)).await;
    let [a, b] = [0, 1].map(|i| {
        claimed
            .iter()
            .find(|c| c.address.as_ref() == ["a@x.example", "b@x.example"][i])
            .unwrap()
            .clone()
    });

    // One recipient sent, the other still being sent: no message event yet.
    // The answer counts the rows written: one for each webhook that wants it.
    let completed = f
        .complete_all(vec![outcome_at(&a, NextState::Sent, 2_000)], vec![])
        .await;
    assert_eq!(completed.events, 2);
    assert_eq!(f.event_types(t, all.id).await, ["recipient.sent"]);

    // A stale lease's outcome is refused and causes nothing.
    let stale = Outcome {
        lease_token: b.lease_token - 1,
        ..outcome_at(&b, NextState::Sent, 2_500)
    };
    let completed = f.complete_all(vec![stale], vec![]).await;
    assert_eq!(
        completed,
        Completed {
            accepted: vec![false],
            events: 0,
            handed: vec![]
        }
    );
    assert_eq!(f.event_types(t, all.id).await, ["recipient.sent"]);

    let completed = f
        .complete_all(
            vec![outcome_at(&b, NextState::Deferred { until: 5_000 }, 3_000)],
            vec![],
        )
        .await;
    assert_eq!(completed.events, 3);
    assert_eq!(
        f.event_types(t, all.id).await,
        ["recipient.sent", "recipient.deferred", "message.deferred"]
    );
    let again = f.claim_one(claim("n1", 5_000, 60_000)).await;
    f.complete(vec![outcome_at(&again, NextState::Sent, 6_000)], vec![])
        .await;
    assert_eq!(
        f.event_types(t, all.id).await,
        [
            "recipient.sent",
            "recipient.deferred",
            "message.deferred",
            "recipient.sent",
            "message.sent"
        ]
    );
    assert_eq!(
        f.event_types(t, recipients.id).await,
        ["recipient.sent", "recipient.deferred", "recipient.sent"]
    );
    assert!(f.event_types(t, disabled.id).await.is_empty());
    assert!(f.event_types(other, elsewhere.id).await.is_empty());

    // Both webhooks got the same events under the same ids, pending.
    let deliveries = |w: WebhookId| {
        let store = f.store.clone();
        async move { store.webhook_deliveries(t, w, 100).await.unwrap() }
    };
    let to_all = deliveries(all.id).await;
    let to_recipients = deliveries(recipients.id).await;
    let recipient_ids: HashSet<&str> = to_recipients.iter().map(|d| d.event_id.as_str()).collect();
    let shared = to_all
        .iter()
        .filter(|d| recipient_ids.contains(d.event_id.as_str()))
        .count();
    assert_eq!(shared, 3);
    let unique: HashSet<&str> = to_all.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(unique.len(), 5, "one row per event");
    for d in &to_all {
        assert_eq!(d.message_id, Some(m.id));
        assert_eq!(d.status, WebhookDeliveryStatus::Pending);
        assert_eq!(d.attempts, 0);
        assert_eq!(d.next_attempt_at, Some(d.created_at));
    }
    assert_eq!(
        to_all[0].created_at, 6_000,
        "an event takes its outcome's time"
    );

    // The bodies are what the events say.
    let events = f.claim_events(webhook_claim(10_000, 100)).await;
    let sent = events
        .iter()
        .find(|e| e.webhook == all.id && e.event_type == "message.sent")
        .unwrap();
    assert_eq!(sent.tenant_id, t);
    assert_eq!(sent.url, all.url);
    assert_eq!(sent.sealed_secret, "sealed:one");
    let body: serde_json::Value = serde_json::from_str(&sent.payload).unwrap();
    assert_eq!(body["type"], "message.sent");
    assert_eq!(body["data"]["message_id"], m.id.to_string());
    assert_eq!(body["data"]["recipients"].as_array().unwrap().len(), 2);
}

/// A test message causes no recipient events, and one `test.completed`
/// once it is final.
async fn test_messages_cause_only_test_completed(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let server = f.create_server(t, server_settings("relay", false)).await;
    let provider = f
        .create_provider(t, provider_settings("relay", server.id, None))
        .await;
    let all = f.create_webhook(new_webhook(t, &EventType::ALL, 0)).await;
    f.submit(NewMessage {
        test_provider: Some(provider.id),
        priority: herald_store::TEST_PRIORITY,
        ..message(t, &["a@x.example"], None, 1_000)
    })
    .await;
    let c = f.claim_one(claim("n1", 1_000, 60_000)).await;
    f.complete(
        vec![outcome_at(&c, NextState::Deferred { until: 2_000 }, 1_500)],
        vec![],
    )
    .await;
    assert!(f.event_types(t, all.id).await.is_empty());
    let c = f.claim_one(claim("n1", 2_000, 60_000)).await;
    f.complete(vec![outcome_at(&c, NextState::Failed, 2_500)], vec![])
        .await;
    assert_eq!(f.event_types(t, all.id).await, ["test.completed"]);
}

impl Fixture {
    /// Submits `messages` messages of `tenant` to a@ and b@x.example and
    /// claims them; answers two nodes ("node-a", "node-b"), each with the
    /// outcomes (sent, at 2,000) of one address's recipients.
    async fn two_nodes_sending_one_each(
        &self,
        tenant: TenantId,
        messages: usize,
    ) -> [(Arc<dyn Store>, Vec<Outcome>, &'static str); 2] {
        for _ in 0..messages {
            self.submit(message(
                tenant,
                &["a@x.example", "b@x.example"],
                None,
                1_000,
            ))
            .await;
        }
        let claimed = self.claim(claim("n1", 1_000, 60_000)).await;
        assert_eq!(claimed.len(), 2 * messages);
        let outcomes = |address: &str| -> Vec<Outcome> {
            claimed
                .iter()
                .filter(|c| c.address.as_ref() == address)
                .map(|c| outcome_at(c, NextState::Sent, 2_000))
                .collect()
        };
        let [one, two] = self.two_nodes().await;
        [
            (one, outcomes("a@x.example"), "node-a"),
            (two, outcomes("b@x.example"), "node-b"),
        ]
    }
}

/// Two nodes completing the last two recipients of a message at the same
/// moment: exactly one of them writes the message's event.
async fn concurrent_outcomes_write_one_message_event(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let hook = f
        .create_webhook(new_webhook(t, &[EventType::MessageSent], 0))
        .await;
    let messages = 8;
    let mut tasks = Vec::new();
    for (store, outcomes, _) in f.two_nodes_sending_one_each(t, messages).await {
        tasks.push(tokio::spawn(async move {
            for o in outcomes {
                assert_eq!(
                    store.complete(vec![o], vec![]).await.unwrap().accepted,
                    [true]
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let events = f.event_types(t, hook.id).await;
    assert_eq!(events, vec!["message.sent"; messages]);
}

/// Two nodes recording outcomes of one message's two recipients at the same
/// moment, each with its dispatcher's lease: the chain goes to one
/// dispatcher, whichever commits first; the other's event waits for a claim
/// behind it, so the two are never posted side by side.
async fn concurrent_outcomes_hand_a_chain_to_one_dispatcher(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let hook = f
        .create_webhook(new_webhook(t, &[EventType::RecipientSent], 0))
        .await;
    let messages = 16;
    let mut tasks = Vec::new();
    for (store, outcomes, node) in f.two_nodes_sending_one_each(t, messages).await {
        tasks.push(tokio::spawn(async move {
            let mut handed = Vec::new();
            for o in outcomes {
                let lease = EventLease {
                    node: node.into(),
                    ..event_lease(100)
                };
                let done = store.complete_and_lease_events(vec![o], vec![], lease);
                let done = done.await.unwrap();
                assert_eq!((done.accepted.as_slice(), done.events), (&[true][..], 1));
                handed.extend(done.handed);
            }
            handed
        }));
    }
    let mut handed = Vec::new();
    for task in tasks {
        handed.extend(task.await.unwrap());
    }
    let mut chains: Vec<Option<MessageId>> = handed.iter().map(|e| e.message_id).collect();
    chains.sort_unstable();
    chains.dedup();
    assert_eq!(
        (handed.len(), chains.len()),
        (messages, messages),
        "one event of each message's chain handed over, to one dispatcher"
    );
    // The other events wait behind the handed ones until those are finished.
    assert!(f.claim_events(webhook_claim(10_000, 100)).await.is_empty());
    f.finish_events(
        handed
            .iter()
            .map(|e| webhook_attempt(e, 11_000, WebhookNext::Delivered))
            .collect(),
        0,
    )
    .await;
    let rest = f.claim_events(webhook_claim(12_000, 100)).await;
    assert_eq!(rest.len(), messages);
    for e in &rest {
        let first = handed
            .iter()
            .find(|h| h.message_id == e.message_id)
            .unwrap();
        assert!(first.seq < e.seq, "{first:?} before {e:?}");
        assert_eq!(e.webhook, hook.id);
    }
}

/// Events are claimed oldest first under a lease; a message's later event
/// waits while an earlier one is pending and not due; lease tokens fence
/// the attempts; an event given back is due again with no attempt counted.
async fn webhook_events_go_out_in_order_per_message(f: Fixture) {
    let (t, hook) = f.tenant_sent_to_a_webhook().await;
    f.submit(message(t, &["a@x.example", "b@x.example"], None, 1_000))
        .await;
    let m2 = f.submit(message(t, &["c@x.example"], None, 1_000)).await.id;
    let claimed = f.claim(claim("n1", 1_000, 60_000)).await;
    let by = |to: &str| claimed.iter().find(|c| c.address.as_ref() == to).unwrap();
    for to in ["a@x.example", "c@x.example", "b@x.example"] {
        f.complete(vec![outcome_at(by(to), NextState::Sent, 2_000)], vec![])
            .await;
    }
    let m1 = by("a@x.example").message;
    // e1 (m1 recipient), e2 and e3 (m2), e4 and e5 (m1).
    let first = f.claim_events(webhook_claim(10_000, 1)).await;
    assert_eq!(event_names(&first), [(Some(m1), "recipient.sent")]);
    let e1 = first[0].clone();
    assert_eq!(e1.attempts, 0);

    // m1's later events wait behind e1, leased and so not due.
    let next = f.claim_events(webhook_claim(10_000, 100)).await;
    assert_eq!(
        event_names(&next),
        [(Some(m2), "recipient.sent"), (Some(m2), "message.sent")]
    );
    assert!(next.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(f.claim_events(webhook_claim(10_000, 100)).await.is_empty());

    // A failed attempt puts e1 off; what follows it waits until then.
    let mut finish = vec![webhook_attempt(
        &e1,
        11_000,
        WebhookNext::Retry { at: 200_000 },
    )];
    finish.extend(
        next.iter()
            .map(|e| webhook_attempt(e, 11_000, WebhookNext::Delivered)),
    );
    assert!(f.finish_events(finish, 0).await.is_empty());
    assert!(f.claim_events(webhook_claim(100_000, 100)).await.is_empty());
    let excluded = WebhookClaim {
        exclude: vec![hook.id],
        ..webhook_claim(200_000, 100)
    };
    assert!(f.claim_events(excluded).await.is_empty());
    let retried = f.claim_events(webhook_claim(200_000, 100)).await;
    assert_eq!(
        event_names(&retried),
        [
            (Some(m1), "recipient.sent"),
            (Some(m1), "recipient.sent"),
            (Some(m1), "message.sent")
        ]
    );
    assert_eq!(retried[0].seq, e1.seq);
    assert_eq!(retried[0].attempts, 1);
    assert!(retried[0].lease_token > e1.lease_token);

    // The first lease's attempt comes too late and changes nothing.
    f.finish_events(
        vec![webhook_attempt(&e1, 200_500, WebhookNext::Delivered)],
        0,
    )
    .await;
    let deliveries = f.webhook_deliveries(t, hook.id, 100).await;
    let e1_now = deliveries
        .iter()
        .find(|d| d.event_id == e1.event_id)
        .unwrap();
    assert_eq!(e1_now.status, WebhookDeliveryStatus::Pending);
    assert_eq!(e1_now.attempts, 1);

    // Delivered under the current lease; the two behind it given back.
    f.finish_events(
        vec![
            webhook_attempt(&retried[0], 201_000, WebhookNext::Delivered),
            given_back(&retried[1], 300_000),
            given_back(&retried[2], 300_000),
        ],
        0,
    )
    .await;
    assert_eq!(f.next_webhook_due().await, Some(300_000));
    assert!(f.claim_events(webhook_claim(299_999, 100)).await.is_empty());
    let back = f.claim_events(webhook_claim(300_000, 100)).await;
    assert_eq!(back.len(), 2);
    assert!(back.iter().all(|e| e.attempts == 0), "no attempt counted");
    f.finish_events(
        back.iter()
            .map(|e| webhook_attempt(e, 301_000, WebhookNext::Delivered))
            .collect(),
        0,
    )
    .await;
    let deliveries = f.webhook_deliveries(t, hook.id, 100).await;
    assert_eq!(deliveries.len(), 5);
    for d in &deliveries {
        assert_eq!(d.status, WebhookDeliveryStatus::Delivered);
        assert_eq!(d.next_attempt_at, None);
        assert_eq!(d.response_status, Some(204));
    }
    assert_eq!(f.next_webhook_due().await, None);
}

fn event_lease(room: usize) -> EventLease {
    EventLease {
        node: "node-a".into(),
        incarnation: "first".into(),
        now: 2_500,
        until: 70_000,
        room,
        exclude: vec![],
    }
}

/// Outcomes recorded with a dispatcher's lease hand it their events leased
/// in the same commit: each event goes out once, and none before an
/// earlier one of its message. A chain with an event already pending, a webhook the
/// dispatcher has no room for, and events past its room wait for claims.
async fn outcomes_lease_their_events_to_the_dispatcher_offered(f: Fixture) {
    let (t, hook) = f.tenant_sent_to_a_webhook().await;
    let quiet = f
        .create_webhook(new_webhook(t, &[EventType::MessageSent], 0))
        .await;
    for to in [&["a@x.example", "b@x.example"][..], &["c@x.example"]] {
        f.submit(message(t, to, None, 1_000)).await;
    }
    let claimed = f.claim(claim("n1", 1_000, 60_000)).await;
    let by = |to: &str| claimed.iter().find(|c| c.address.as_ref() == to).unwrap();
    let m1 = by("a@x.example").message;
    let m2 = by("c@x.example").message;
    let complete = |outcomes: Vec<Outcome>, lease: EventLease| {
        let store = f.store.clone();
        async move {
            store
                .complete_and_lease_events(outcomes, vec![], lease)
                .await
                .unwrap()
        }
    };

    // a: m1's recipient.sent for `hook`, leased; c: m2's recipient.sent
    // and message.sent for `hook` and message.sent for `quiet`, which the
    // dispatcher has no room for.
    let first = complete(
        vec![outcome_at(by("a@x.example"), NextState::Sent, 2_000)],
        event_lease(10),
    )
    .await;
    assert_eq!(first.accepted, [true]);
    assert_eq!(first.events, 1);
    let second = complete(
        vec![outcome_at(by("c@x.example"), NextState::Sent, 2_000)],
        EventLease {
            exclude: vec![quiet.id],
            ..event_lease(10)
        },
    )
    .await;
    assert_eq!(second.events, 3);
    assert_eq!(event_names(&first.handed), [(Some(m1), "recipient.sent")]);
    let e = &first.handed[0];
    assert_eq!((e.webhook, e.tenant_id, e.attempts), (hook.id, t, 0));
    assert_eq!(e.url, "https://hooks.example/herald");
    assert_eq!(e.sealed_secret, "sealed:one");
    assert!(e.payload.starts_with(r#"{"type":"recipient.sent""#));
    assert_eq!(
        event_names(&second.handed),
        [(Some(m2), "recipient.sent"), (Some(m2), "message.sent")]
    );
    assert!(second.handed.iter().all(|e| e.webhook == hook.id));
    assert!(second.handed[0].seq < second.handed[1].seq);

    // b, with room for one event: m1's chain for `hook` has one pending
    // (leased or not), so its new events wait for it, whatever the room.
    // `quiet`'s secret was rotated: its old one signs too until 3,000, and
    // so for a lease offered before then, as for a claim.
    f.rotate_webhook_secret(t, quiet.id, "sealed:two".into(), 3_000, 2_200)
        .await;
    let third = complete(
        vec![outcome_at(by("b@x.example"), NextState::Sent, 2_500)],
        event_lease(1),
    )
    .await;
    assert_eq!(third.events, 3, "recipient.sent, and message.sent for both");
    assert_eq!(
        event_names(&third.handed),
        [(Some(m1), "message.sent")],
        "quiet's chain of m1 had nothing pending; room for one"
    );
    assert_eq!(third.handed[0].webhook, quiet.id);
    assert_eq!(third.handed[0].sealed_secret, "sealed:two");
    assert_eq!(
        third.handed[0].previous_sealed_secret.as_deref(),
        Some("sealed:one"),
        "the lease (offered at 2,500) falls in the overlap"
    );

    // Claims take what was not handed, and nothing of a chain behind a
    // leased event: every event once.
    let mut handed: Vec<ClaimedEvent> = [first, second, third]
        .into_iter()
        .flat_map(|c| c.handed)
        .collect();
    let mut claimed_events = f.claim_events(webhook_claim(10_000, 100)).await;
    for e in &claimed_events {
        assert!(!handed.iter().any(|h| h.seq == e.seq), "{e:?} was handed");
    }
    // Until the leased events are finished, m1's later events for `hook` wait.
    let mut finish: Vec<WebhookAttempt> = handed
        .iter()
        .chain(&claimed_events)
        .map(|e| webhook_attempt(e, 11_000, WebhookNext::Delivered))
        .collect();
    f.finish_events(std::mem::take(&mut finish), 0).await;
    let rest = f.claim_events(webhook_claim(12_000, 100)).await;
    f.finish_events(
        rest.iter()
            .map(|e| webhook_attempt(e, 13_000, WebhookNext::Delivered))
            .collect(),
        0,
    )
    .await;
    assert!(f.claim_events(webhook_claim(14_000, 100)).await.is_empty());
    handed.append(&mut claimed_events);
    handed.extend(rest);
    assert_eq!(handed.len(), 7, "every event went out once: {handed:?}");
    let mut seqs: Vec<i64> = handed.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 7);
    for webhook in [hook.id, quiet.id] {
        let deliveries = f.webhook_deliveries(t, webhook, 100).await;
        assert!(
            deliveries
                .iter()
                .all(|d| d.status == WebhookDeliveryStatus::Delivered && d.attempts == 1),
            "{deliveries:?}"
        );
    }
    // m1's events for `hook` went out in their order: the recipient's
    // first (in the first round), then the second recipient's and the
    // message's (in the last).
    let m1_hook: Vec<i64> = handed
        .iter()
        .filter(|e| e.webhook == hook.id && e.message_id == Some(m1))
        .map(|e| e.seq)
        .collect();
    assert_eq!(m1_hook.len(), 3);
    assert!(m1_hook.windows(2).all(|w| w[0] < w[1]), "{m1_hook:?}");
}

/// A message with one recipient writes its first outcome's events as one
/// whose store must read them, byte for byte but for its ids (the store
/// knows them without reading the message's recipients or its chains: its
/// recipient's row says it is the only one; a row stored before that was
/// kept does not), and once an outcome of it is recorded, its later events
/// wait behind the pending ones.
async fn a_lone_recipients_events_are_those_a_read_would_give(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let everything = [
        EventType::RecipientDeferred,
        EventType::RecipientSent,
        EventType::MessageDeferred,
        EventType::MessageSent,
    ];
    f.create_webhook(new_webhook(t, &everything, 0)).await;
    let mut handed = message(t, &["a@x.example"], None, 1_000);
    handed.handoff = Some(HandoffLease {
        node: "n1".into(),
        incarnation: "n1-first".into(),
        until: 60_000,
    });
    let handed = f.submit(handed).await;
    let lone = handed.handed[0].clone();
    let older = f.submit(message(t, &["a@x.example"], None, 1_000)).await;
    f.execute(&format!(
        "UPDATE recipients SET sole = FALSE WHERE message_id = '{}'",
        older.id
    ))
    .await;
    let claimed = f.claim_one(claim("n1", 1_000, 60_000)).await;
    assert_ne!(claimed.message, lone.message, "the handed one is leased");

    let complete = |store: Arc<dyn Store>, outcome: Outcome| async move {
        store
            .complete_and_lease_events(vec![outcome], vec![], event_lease(10))
            .await
            .unwrap()
    };
    let deferred = NextState::Deferred { until: 5_000 };
    let mut events = Vec::new();
    for c in [&lone, &claimed] {
        let done = complete(f.store.clone(), outcome_at(c, deferred, 2_000)).await;
        assert_eq!((done.accepted.as_slice(), done.events), (&[true][..], 2));
        events.extend(done.handed);
    }
    events.extend(f.claim_events(webhook_claim(3_000, 100)).await);
    assert_eq!(events.len(), 4, "{events:?}");
    // Each message's events, its ids replaced by the same words.
    let written = |c: &Claimed| -> Vec<(String, String)> {
        let mut of: Vec<&ClaimedEvent> = events
            .iter()
            .filter(|e| e.message_id == Some(c.message))
            .collect();
        of.sort_by_key(|e| e.seq);
        of.iter()
            .map(|e| {
                let payload = e
                    .payload
                    .replace(&c.message.to_string(), "MESSAGE")
                    .replace(&c.recipient.to_string(), "RECIPIENT");
                (e.event_type.clone(), payload)
            })
            .collect()
    };
    let lone_events = written(&lone);
    let names: Vec<&str> = lone_events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["recipient.deferred", "message.deferred"]);
    assert!(lone_events[1].1.contains(
        r#""recipients":[{"address":"a@x.example","id":"RECIPIENT","status":"deferred"}]"#
    ));
    assert_eq!(lone_events, written(&claimed));

    // Its retry: the deferred events are still pending, so the new ones
    // are not handed to the dispatcher past them.
    let again = f.claim(claim("n1", 6_000, 60_000)).await;
    let retry = again
        .iter()
        .find(|c| c.recipient == lone.recipient)
        .unwrap();
    let sent = complete(f.store.clone(), outcome_at(retry, NextState::Sent, 6_000)).await;
    assert_eq!((sent.accepted.as_slice(), sent.events), (&[true][..], 2));
    assert!(sent.handed.is_empty(), "{:?}", sent.handed);
}

/// A lone recipient handed to the node that stored it, whose lease ran out
/// and whose first outcome another node recorded: the first node's later
/// outcome of it is not taken for the message's first, so its events wait
/// behind the pending one instead of going to the dispatcher past it.
async fn a_lone_recipient_another_node_recorded_is_read(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let events = [
        EventType::RecipientDeferred,
        EventType::RecipientSent,
        EventType::MessageSent,
    ];
    f.create_webhook(new_webhook(t, &events, 0)).await;
    let mut m = message(t, &["a@x.example"], None, 1_000);
    m.handoff = Some(HandoffLease {
        node: "n1".into(),
        incarnation: "n1-first".into(),
        until: 60_000,
    });
    let lone = f.submit(m).await.handed.remove(0);
    let [here, there] = f.two_nodes().await;
    let record = |store: &Arc<dyn Store>, c: &Claimed, next: NextState, at: i64| {
        let (store, outcome) = (store.clone(), outcome_at(c, next, at));
        async move {
            store
                .complete_and_lease_events(vec![outcome], vec![], event_lease(10))
                .await
                .unwrap()
        }
    };

    let taken_over = there.claim(claim("n2", 61_000, 60_000)).await.unwrap();
    assert_eq!(taken_over.len(), 1);
    assert_eq!(taken_over[0].recipient, lone.recipient);
    let deferred = NextState::Deferred { until: 62_000 };
    let done = record(&there, &taken_over[0], deferred, 61_500).await;
    assert_eq!((done.accepted.as_slice(), done.events), (&[true][..], 1));

    let again = here.claim(claim("n1", 62_000, 60_000)).await.unwrap();
    assert_eq!(again.len(), 1);
    let sent = record(&here, &again[0], NextState::Sent, 62_500).await;
    assert_eq!((sent.accepted.as_slice(), sent.events), (&[true][..], 2));
    assert!(
        sent.handed.is_empty(),
        "behind the pending recipient.deferred: {:?}",
        sent.handed
    );
}

/// Two nodes claiming at once never take one event twice, nor a message's
/// later event while its earlier one is leased by the other: a claim takes a
/// message's later event only beside its earlier one.
async fn concurrent_webhook_claims_keep_each_messages_order(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    f.create_webhook(new_webhook(
        t,
        &[EventType::RecipientSent, EventType::MessageSent],
        0,
    ))
    .await;
    let messages = 12;
    for _ in 0..messages {
        f.send_message(t, &["a@x.example"], 2_000).await;
    }
    let mut tasks = Vec::new();
    for store in f.two_nodes().await {
        tasks.push(tokio::spawn(async move {
            let mut claims = Vec::new();
            loop {
                let got = store
                    .claim_webhook_events(webhook_claim(10_000, 3))
                    .await
                    .unwrap();
                if got.is_empty() {
                    return claims;
                }
                claims.push(got);
            }
        }));
    }
    let mut claims = Vec::new();
    for task in tasks {
        claims.extend(task.await.unwrap());
    }
    let mut seen = HashSet::new();
    for claim in &claims {
        for e in claim {
            assert!(seen.insert(e.seq), "event {} is claimed twice", e.seq);
            if e.event_type == "message.sent" {
                assert!(
                    claim
                        .iter()
                        .any(|earlier| earlier.message_id == e.message_id
                            && earlier.event_type == "recipient.sent"
                            && earlier.seq < e.seq),
                    "a message.sent is claimed without its recipient.sent"
                );
            }
        }
    }
    let recipient_events = claims
        .iter()
        .flatten()
        .filter(|e| e.event_type == "recipient.sent")
        .count();
    assert_eq!(recipient_events, messages, "every first event is claimed");
}

/// A webhook with a success is no longer failing; one failing since before
/// the cut-off is disabled, with the reason and an audit entry; enabling it
/// again forgets both.
async fn a_webhook_failing_too_long_is_disabled(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let hook = f
        .create_webhook(new_webhook(t, &[EventType::MessageSent], 0))
        .await;
    f.send_message(t, &["a@x.example"], 1_000).await;
    f.send_message(t, &["b@x.example"], 1_000).await;
    let events = f.claim_events(webhook_claim(1_000, 100)).await;
    assert_eq!(events.len(), 2);
    f.finish_events(
        vec![
            webhook_attempt(&events[0], 2_000, WebhookNext::Retry { at: 10_000 }),
            webhook_attempt(&events[1], 2_000, WebhookNext::Delivered),
        ],
        i64::MAX,
    )
    .await;
    assert_eq!(f.webhook(t, hook.id).await.failing_since, None);

    let events = f.claim_events(webhook_claim(10_000, 100)).await;
    let disabled = f
        .finish_events(
            vec![webhook_attempt(
                &events[0],
                10_000,
                WebhookNext::Retry { at: 20_000 },
            )],
            5_000,
        )
        .await;
    assert!(disabled.is_empty(), "failing only since after the cut-off");
    let failing = f.webhook(t, hook.id).await;
    assert_eq!(failing.failing_since, Some(10_000));
    assert!(failing.enabled);

    // An event written while it is enabled, still waiting when it is disabled.
    f.send_message(t, &["d@x.example"], 20_000).await;
    let events = f.claim_events(webhook_claim(20_000, 1)).await;
    let disabled = f
        .finish_events(
            vec![webhook_attempt(&events[0], 20_000, WebhookNext::GiveUp)],
            10_000,
        )
        .await;
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0].id, hook.id);
    assert_eq!(disabled[0].tenant_id, t);
    assert_eq!(disabled[0].failing_since, 10_000);
    let off = f.webhook(t, hook.id).await;
    assert!(!off.enabled);
    let reason = off.disabled_reason.clone().expect("a reason");
    assert!(reason.contains("failed"), "{reason}");
    let audit = f.list_audit(t, 10).await;
    assert_eq!(audit[0].action, "webhook.disable");
    assert_eq!(
        audit[0].object_id.as_deref(),
        Some(hook.id.to_string().as_str())
    );
    assert_eq!(audit[0].actor, "herald");
    assert_eq!(audit[0].details["reason"], reason);
    let deliveries = f.webhook_deliveries(t, hook.id, 10).await;
    let given_up = deliveries.iter().find(|d| d.attempts == 3).unwrap();
    assert_eq!(given_up.status, WebhookDeliveryStatus::Failed);
    assert_eq!(given_up.error.as_deref(), Some("unavailable"));
    // What was still waiting is given up with it, unattempted.
    let waiting = &deliveries[0];
    assert_eq!(
        waiting.status,
        WebhookDeliveryStatus::Failed,
        "{deliveries:?}"
    );
    assert_eq!(waiting.attempts, 0);
    assert_eq!(
        waiting.error.as_deref(),
        Some("given up: the webhook was disabled")
    );

    // A disabled webhook's events are neither due nor claimed, and
    // outcomes write none for it.
    assert_eq!(f.next_webhook_due().await, None);
    assert!(f.claim_events(webhook_claim(40_000, 100)).await.is_empty());
    f.send_message(t, &["c@x.example"], 30_000).await;
    assert_eq!(f.event_types(t, hook.id).await.len(), 3);

    let enabled = f
        .update_webhook(
            t,
            hook.id,
            WebhookChange {
                enabled: Some(true),
                ..WebhookChange::default()
            },
            50_000,
        )
        .await;
    assert!(enabled.enabled);
    assert_eq!(enabled.disabled_reason, None);
    assert_eq!(enabled.failing_since, None);
    // Enabled again, it starts afresh: what was given up stays given up.
    assert_eq!(f.next_webhook_due().await, None);
}

/// Test events show among the deliveries; finished events are pruned by
/// age, pending ones kept; deleting a webhook deletes its events.
async fn webhook_deliveries_are_recorded_pruned_and_deleted(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let hook = f
        .create_webhook(new_webhook(t, &[EventType::MessageSent], 0))
        .await;
    assert_eq!(f.next_webhook_due().await, None);
    f.send_message(t, &["a@x.example"], 1_000).await;
    assert_eq!(f.next_webhook_due().await, Some(1_000));

    f.store
        .record_webhook_test(WebhookTestRecord {
            tenant_id: t,
            webhook: hook.id,
            event_id: "evt_test".into(),
            event_type: "webhook.test".into(),
            payload: "{\"type\":\"webhook.test\"}".into(),
            result: AttemptResult {
                at: 2_000,
                response_status: Some(500),
                error: Some("the endpoint answered 500".into()),
                duration_ms: 12,
                next: WebhookNext::Retry { at: 9_000 },
            },
        })
        .await
        .unwrap();
    let deliveries = f.webhook_deliveries(t, hook.id, 10).await;
    assert_eq!(deliveries.len(), 2);
    let test = &deliveries[0];
    assert_eq!(test.event_id, "evt_test");
    assert_eq!(test.event_type, "webhook.test");
    assert_eq!(test.message_id, None);
    assert_eq!(
        test.status,
        WebhookDeliveryStatus::Failed,
        "one attempt only"
    );
    assert_eq!(test.attempts, 1);
    assert_eq!(test.created_at, 2_000);
    assert_eq!(test.last_attempt_at, Some(2_000));
    assert_eq!(test.response_status, Some(500));
    assert_eq!(test.duration_ms, Some(12));
    assert_eq!(test.next_attempt_at, None);
    assert_eq!(deliveries[1].event_type, "message.sent");
    assert_eq!(f.webhook_deliveries(t, hook.id, 1).await.len(), 1);
    assert!(
        f.claim_events(webhook_claim(5_000, 100))
            .await
            .iter()
            .all(|e| e.event_type == "message.sent"),
        "a test event is not sent again"
    );

    // Only finished events are pruned.
    assert_eq!(f.store.prune_webhook_events(i64::MAX).await.unwrap(), 1);
    assert_eq!(f.event_types(t, hook.id).await, ["message.sent"]);

    f.send_message(t, &["b@x.example"], 3_000).await;
    f.delete_webhook(t, hook.id).await;
    not_found(f.store.webhook_deliveries(t, hook.id, 10).await);
    assert_eq!(f.next_webhook_due().await, None);
    // Nothing of it is left to prune either.
    assert_eq!(f.store.prune_webhook_events(i64::MAX).await.unwrap(), 0);
}

/// Webhooks' signing secrets, current and previous, are resealed with the
/// rest, each bound to its webhook.
async fn webhook_secrets_are_resealed(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let hook = f
        .create_webhook(NewWebhook {
            sealed_secret: "old:current".into(),
            ..new_webhook(t, &[EventType::MessageSent], 0)
        })
        .await;
    f.rotate_webhook_secret(t, hook.id, "old:next".into(), i64::MAX, 1_000)
        .await;
    let context = herald_core::webhook::seal_context(&hook.id.to_string());
    let resealer: herald_store::Resealer = Box::new(move |sealed: &str, ctx: &str| {
        assert_eq!(ctx, context);
        Ok(sealed.replace("old:", "new:"))
    });
    assert_eq!(f.store.reseal_secrets(resealer).await.unwrap(), 1);
    f.send_message(t, &["a@x.example"], 2_000).await;
    let events = f.claim_events(webhook_claim(2_000, 100)).await;
    assert_eq!(events[0].sealed_secret, "new:next");
    assert_eq!(
        events[0].previous_sealed_secret.as_deref(),
        Some("new:current")
    );
}

fn new_gateway(tenant: TenantId, name: &str, hash: &str, at: i64) -> NewGateway {
    NewGateway {
        id: GatewayId::new(),
        tenant_id: tenant,
        name: name.into(),
        token_hash: hash.into(),
        created_at: at,
    }
}

/// Two tenants, acme and globex, each with a gateway named "office": for the
/// cases where one tenant's gateway must not touch what is the other's.
async fn two_tenants_offices(f: &Fixture) -> [(TenantId, Gateway); 2] {
    let mut offices = Vec::new();
    for slug in ["acme", "globex"] {
        let t = tenant(&*f.store, slug).await;
        let hash = format!("hash-{slug}");
        let office = f
            .create_gateway(new_gateway(t, "office", &hash, 1_000))
            .await;
        offices.push((t, office));
    }
    offices.try_into().unwrap()
}

fn seen(gateway: GatewayId, name: &str, version: &str, at: i64) -> GatewaySeen {
    GatewaySeen {
        gateway_id: gateway,
        name: name.into(),
        version: version.into(),
        address: "192.0.2.10".into(),
        at,
        incarnation: format!("{name}-first"),
    }
}

async fn gateways_keep_their_names_tokens_and_tenants(f: Fixture) {
    let a = tenant(&*f.store, "acme").await;
    let b = tenant(&*f.store, "other").await;
    let office = f
        .create_gateway(new_gateway(a, "office", "hash-office", 1_000))
        .await;
    assert_eq!(office.name, "office");
    assert_eq!((office.created_at, office.token_created_at), (1_000, 1_000));
    assert!(office.instances.is_empty());
    let json = serde_json::to_string(&office).unwrap();
    assert!(!json.contains("hash-office"), "the hash is never shown");

    let taken = conflict(
        f.store
            .create_gateway(new_gateway(a, "office", "hash-2", 1_100))
            .await,
    );
    assert!(taken.contains("office"), "{taken}");
    // Another tenant may use the same name.
    let theirs = f
        .create_gateway(new_gateway(b, "office", "hash-b", 1_200))
        .await;
    let lab = f
        .create_gateway(new_gateway(a, "lab", "hash-lab", 1_300))
        .await;
    let names = |list: Vec<Gateway>| list.into_iter().map(|g| g.name).collect::<Vec<_>>();
    assert_eq!(names(f.list_gateways(a).await), ["lab", "office"]);
    assert_eq!(names(f.list_gateways(b).await), ["office"]);

    // The token finds its gateway, of whichever tenant.
    let found = f.gateway_by_token("hash-b").await.unwrap();
    assert_eq!((found.id, found.tenant_id), (theirs.id, b));
    assert!(f.gateway_by_token("nothing").await.is_none());

    // A new token: the old one finds nothing at once.
    let replaced = f
        .store
        .replace_gateway_token(a, office.id, "hash-office-2".into(), 5_000)
        .await
        .unwrap();
    assert_eq!(
        (replaced.created_at, replaced.token_created_at),
        (1_000, 5_000)
    );
    assert!(f.gateway_by_token("hash-office").await.is_none());
    assert_eq!(
        f.gateway_by_token("hash-office-2").await.unwrap().id,
        office.id
    );

    // Another tenant's ids are not found, and change nothing.
    not_found(f.store.gateway(b, office.id).await);
    not_found(f.store.delete_gateway(b, office.id).await);
    not_found(
        f.store
            .replace_gateway_token(b, office.id, "hash-stolen".into(), 6_000)
            .await,
    );
    assert!(f.gateway_by_token("hash-stolen").await.is_none());

    f.delete_gateway(a, lab.id).await;
    not_found(f.store.gateway(a, lab.id).await);
    not_found(f.store.delete_gateway(a, lab.id).await);
    assert_eq!(names(f.list_gateways(a).await), ["office"]);
    assert!(f.gateway_by_token("hash-lab").await.is_none());
}

async fn a_changed_route_gives_waiting_pinned_mail_back_to_the_nodes(f: Fixture) {
    let [(acme, office), (globex, theirs)] = two_tenants_offices(&f).await;
    let pinned = |t: TenantId, g: GatewayId, at: i64| NewMessage {
        gateway_id: Some(g),
        ..message(t, &["in@x.example"], None, at)
    };
    let via = |g: Option<GatewayId>| ServerSettings {
        gateway_id: g,
        ..server_settings("relay", false)
    };
    let server = f.create_server(acme, via(Some(office.id))).await;
    let held = f.submit(pinned(acme, office.id, 1_000)).await;
    let waiting = f.submit(pinned(acme, office.id, 1_500)).await;
    let other = f.submit(pinned(globex, theirs.id, 1_000)).await;
    let taken = f
        .claim_for_gateway(GatewayClaim {
            limit: 1,
            ..gateway_claim(office.id, acme, 2_000)
        })
        .await;
    assert_eq!(taken[0].message, held.id);

    // The server leaves the gateway: the waiting recipient is the nodes'
    // again, due now; the one an instance holds and the other tenant's stay.
    f.update_server(acme, server.id, via(None)).await;
    let now = herald_core::timestamp::now_ms();
    let by_node = f.claim(claim("n1", now + 1_000, 600_000)).await;
    assert_eq!(by_node.len(), 1, "{by_node:?}");
    assert_eq!(by_node[0].message, waiting.id);
    assert!(
        f.message(acme, waiting.id).await.recipients[0]
            .gateway_id
            .is_none()
    );
    assert_eq!(
        f.message(acme, held.id).await.recipients[0].gateway_id,
        Some(office.id)
    );
    assert_eq!(
        f.message(globex, other.id).await.recipients[0].gateway_id,
        Some(theirs.id)
    );

    // Pinned again, a provider's server change gives mail back as well ...
    f.update_server(acme, server.id, via(Some(office.id))).await;
    let plain = f.create_server(acme, server_settings("plain", false)).await;
    let provider = f
        .create_provider(acme, provider_settings("relay", server.id, None))
        .await;
    let second = f.submit(pinned(acme, office.id, 1_000)).await;
    f.update_provider(
        acme,
        provider.id,
        provider_settings("relay", plain.id, None),
    )
    .await;
    assert!(
        f.message(acme, second.id).await.recipients[0]
            .gateway_id
            .is_none()
    );

    // ... and a change of the active provider, due once it is in effect everywhere.
    let third = f.submit(pinned(acme, office.id, 1_000)).await;
    let by = herald_core::timestamp::now_ms() + 60_000;
    f.set_active_provider(acme, Some(provider.id), by).await;
    let recipient = &f.message(acme, third.id).await.recipients[0];
    assert!(recipient.gateway_id.is_none());
    let due: Vec<MessageId> = f
        .claim(claim("n2", by - 1, 10_000))
        .await
        .iter()
        .map(|c| c.message)
        .collect();
    assert_eq!(
        due,
        [second.id],
        "the provider's change is not in effect yet"
    );
    let later = f.claim(claim("n2", by, 10_000)).await;
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].message, third.id);
    // Choosing the provider in force again changes nothing.
    let fourth = f.submit(pinned(acme, office.id, 1_000)).await;
    f.set_active_provider(acme, Some(provider.id), by).await;
    assert_eq!(
        f.message(acme, fourth.id).await.recipients[0].gateway_id,
        Some(office.id)
    );
    // A refresh puts the change in effect at once: the mail it gave back is due now.
    let far = by + 600_000;
    f.set_active_provider(acme, None, far).await;
    let now = herald_core::timestamp::now_ms();
    f.refresh_properties(acme, now).await;
    let due: Vec<MessageId> = f
        .claim(claim("n3", now + 1, 10_000))
        .await
        .iter()
        .map(|c| c.message)
        .collect();
    assert_eq!(due, [fourth.id]);
}

async fn a_gateway_instances_restart_or_silence_gives_its_leases_back(f: Fixture) {
    // Another tenant's gateway of the same name, with an instance of the same name.
    let [(acme, office), (globex, theirs)] = two_tenants_offices(&f).await;
    let pinned = |t: TenantId, g: GatewayId| NewMessage {
        gateway_id: Some(g),
        ..message(t, &["in@x.example"], None, 1_000)
    };
    let (one, two) = (
        f.submit(pinned(acme, office.id)).await,
        f.submit(pinned(acme, office.id)).await,
    );
    let other = f.submit(pinned(globex, theirs.id)).await;
    let instance = |g: &Gateway, name: &str, incarnation: &str, at: i64| GatewaySeen {
        incarnation: incarnation.into(),
        ..seen(g.id, name, "1.0", at)
    };
    let claim_as =
        |g: &Gateway, t: TenantId, name: &str, incarnation: &str, now: i64| GatewayClaim {
            owner: gateway_lease_owner(&g.name, name),
            incarnation: incarnation.into(),
            limit: 1,
            ..gateway_claim(g.id, t, now)
        };
    let seen_by = |s: GatewaySeen| {
        let store = f.store.clone();
        async move { store.gateway_seen(s).await.unwrap() }
    };
    seen_by(instance(&office, "gw-1", "a", 2_000)).await;
    seen_by(instance(&office, "gw-2", "b", 2_000)).await;
    seen_by(instance(&theirs, "gw-1", "c", 2_000)).await;
    let held_by_one = f
        .claim_for_gateway(claim_as(&office, acme, "gw-1", "a", 2_000))
        .await;
    let held_by_two = f
        .claim_for_gateway(claim_as(&office, acme, "gw-2", "b", 2_000))
        .await;
    let held_by_theirs = f
        .claim_for_gateway(claim_as(&theirs, globex, "gw-1", "c", 2_000))
        .await;
    assert_eq!(
        [&held_by_one, &held_by_two, &held_by_theirs].map(|h| h.len()),
        [1, 1, 1]
    );
    assert_eq!(held_by_theirs[0].message, other.id);
    let status_of = |t: TenantId, id: MessageId| {
        let f = &f;
        async move { f.message(t, id).await.recipients[0].status }
    };

    // A second process of gw-1 reports (a restart, or two on one host):
    // it takes nothing from the first, which may still be sending.
    seen_by(instance(&office, "gw-1", "a2", 3_000)).await;
    assert!(
        f.claim_for_gateway(claim_as(&office, acme, "gw-1", "a2", 3_000))
            .await
            .is_empty()
    );
    assert_eq!(
        status_of(acme, held_by_one[0].message).await,
        RecipientStatus::Sending
    );
    // Both report by turns: neither is stale, whichever reported last.
    seen_by(instance(&office, "gw-1", "a", 3_500)).await;
    seen_by(instance(&office, "gw-1", "a2", 3_600)).await;

    // gw-2 and the other tenant's gw-1 fall silent: their leases come back.
    let mut released = f.release_stale_gateway_instances(3_200, 3_700).await;
    released.sort();
    assert_eq!(
        released,
        [("office/gw-1".to_owned(), 1), ("office/gw-2".to_owned(), 1)],
        "the other tenant's gw-1 and acme's gw-2, not acme's gw-1"
    );
    assert_eq!(status_of(globex, other.id).await, RecipientStatus::Queued);
    assert_eq!(
        status_of(acme, held_by_one[0].message).await,
        RecipientStatus::Sending
    );
    let taken = f
        .claim_for_gateway(claim_as(&office, acme, "gw-1", "a2", 3_700))
        .await;
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].recipient, held_by_two[0].recipient);

    // gw-1's first process stops (killed); the second reports on. Once the
    // first has not been seen for the stale-after period, its lease comes back.
    seen_by(instance(&office, "gw-1", "a2", 6_000)).await;
    let released = f.release_stale_gateway_instances(5_000, 6_000).await;
    assert_eq!(released, [("office/gw-1".to_owned(), 1)]);
    let again = f
        .claim_for_gateway(claim_as(&office, acme, "gw-1", "a2", 6_000))
        .await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].recipient, held_by_one[0].recipient);
    assert!([one.id, two.id].contains(&again[0].message), "{again:?}");
    // Taken over: the next sweep passes them by.
    assert!(
        f.release_stale_gateway_instances(5_000, 6_500)
            .await
            .is_empty()
    );
}

async fn gateway_instances_are_upserted_and_count_their_last_hour(f: Fixture) {
    let a = tenant(&*f.store, "acme").await;
    let g = f
        .create_gateway(new_gateway(a, "office", "hash-office", 1_000))
        .await;
    f.gateway_seen(seen(g.id, "gw-1", "1.0", 10_000)).await;
    f.gateway_seen(seen(g.id, "gw-2", "1.0", 20_000)).await;
    // Seen again: a new version and time, the first sighting kept.
    f.gateway_seen(GatewaySeen {
        address: "192.0.2.11".into(),
        ..seen(g.id, "gw-1", "1.1", 30_000)
    })
    .await;
    let instances = f.gateway(a, g.id).await.instances;
    let names: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["gw-1", "gw-2"], "newest seen first");
    let one = &instances[0];
    assert_eq!(
        (one.version.as_str(), one.address.as_str()),
        ("1.1", "192.0.2.11")
    );
    assert_eq!((one.first_seen_at, one.last_seen_at), (10_000, 30_000));
    assert_eq!((one.delivered_this_hour, one.failed_this_hour), (0, 0));

    // Outcomes count by minute, and an instance shows those of the last hour
    // (the sixty minutes up to now's): older ones are left out ...
    let now = herald_core::timestamp::now_ms();
    let minute = 60_000;
    for (delivered, failed, at) in [
        (3, 1, now),
        (2, 0, now - 58 * minute),
        (7, 7, now - 61 * minute),
        (9, 9, now - 24 * 60 * minute),
    ] {
        f.count_gateway_outcomes(g.id, "gw-1", delivered, failed, at)
            .await;
    }
    let counts = |list: &[GatewayInstance], name: &str| {
        let i = list.iter().find(|i| i.name == name).unwrap();
        (i.delivered_this_hour, i.failed_this_hour)
    };
    let listed = f.list_gateways(a).await;
    assert_eq!(counts(&listed[0].instances, "gw-1"), (5, 1));
    assert_eq!(counts(&listed[0].instances, "gw-2"), (0, 0));
    // ... and later outcomes add to their minute.
    f.count_gateway_outcomes(g.id, "gw-1", 1, 4, now).await;
    let after = f.gateway(a, g.id).await.instances;
    assert_eq!(counts(&after, "gw-1"), (6, 5));
    // An instance whose outcomes are all older than an hour shows none.
    f.count_gateway_outcomes(g.id, "gw-2", 8, 8, now - 90 * minute)
        .await;
    let by_token = f.gateway_by_token("hash-office").await.unwrap();
    assert_eq!(counts(&by_token.instances, "gw-2"), (0, 0));

    // An instance never seen, or a gateway that does not exist, is not found.
    not_found(
        f.store
            .count_gateway_outcomes(g.id, "gw-9", 1, 0, 50_000)
            .await,
    );
    not_found(
        f.store
            .gateway_seen(seen(GatewayId::new(), "gw-1", "1.0", 50_000))
            .await,
    );
    // The token lookup brings the instances too.
    let by_token = f.gateway_by_token("hash-office").await.unwrap();
    assert_eq!(by_token.instances.len(), 2);

    // Deleting the gateway deletes its instances.
    f.delete_gateway(a, g.id).await;
    not_found(
        f.store
            .count_gateway_outcomes(g.id, "gw-1", 1, 0, 60_000)
            .await,
    );
}

async fn a_server_names_a_gateway_of_its_tenant_which_then_stays(f: Fixture) {
    let [(a, ours), (_, theirs)] = two_tenants_offices(&f).await;
    let via = |name: &str, g: GatewayId| ServerSettings {
        gateway_id: Some(g),
        ..server_settings(name, false)
    };

    assert_eq!(
        invalid_field(f.store.create_server(a, via("relay", theirs.id)).await),
        "gateway_id"
    );
    assert_eq!(
        invalid_field(
            f.store
                .create_server(a, via("relay", GatewayId::new()))
                .await
        ),
        "gateway_id"
    );
    let relay = f.create_server(a, via("relay", ours.id)).await;
    assert_eq!(relay.settings.gateway_id, Some(ours.id));
    assert_eq!(
        f.server(a, relay.id).await.settings.gateway_id,
        Some(ours.id)
    );
    let backup = f.create_server(a, via("backup", ours.id)).await;
    let plain = f.create_server(a, server_settings("plain", false)).await;
    assert_eq!(
        invalid_field(
            f.store
                .update_server(a, plain.id, via("plain", theirs.id))
                .await
        ),
        "gateway_id"
    );
    assert_eq!(f.server(a, plain.id).await.settings.gateway_id, None);

    let refused = conflict(f.store.delete_gateway(a, ours.id).await);
    assert!(
        refused.contains("\"backup\"") && refused.contains("\"relay\""),
        "{refused}"
    );
    f.gateway(a, ours.id).await;

    // Once no server names it, it goes.
    f.update_server(a, relay.id, server_settings("relay", false))
        .await;
    let refused = conflict(f.store.delete_gateway(a, ours.id).await);
    assert!(refused.contains("\"backup\"") && !refused.contains("\"relay\""));
    f.delete_server(a, backup.id).await;
    f.delete_gateway(a, ours.id).await;
}

/// Changing the gateway a server's mail goes through clears its accounts'
/// secrets: the password must not follow the mail into another network.
async fn a_changed_gateway_clears_account_secrets(f: Fixture) {
    let a = tenant(&*f.store, "acme").await;
    let office = f
        .create_gateway(new_gateway(a, "office", "hash-a", 1_000))
        .await;
    let settings = server_settings("relay", true);
    let server = f.create_server(a, settings.clone()).await;
    let account = f
        .create_account(a, new_account(server.id, "one", Some("sealed")))
        .await;
    f.update_server(
        a,
        server.id,
        ServerSettings {
            name: "renamed".into(),
            ..settings.clone()
        },
    )
    .await;
    assert!(f.account(a, server.id, account.id).await.secret_set);
    f.update_server(
        a,
        server.id,
        ServerSettings {
            gateway_id: Some(office.id),
            ..settings
        },
    )
    .await;
    assert!(!f.account(a, server.id, account.id).await.secret_set);
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::sqlite()).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(fixture) = super::postgres().await {
                        super::$case(fixture).await;
                    }
                }
            )*

            /// Nodes that start together on a new database migrate it once,
            /// one after the other, and all of them come up.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn several_nodes_migrate_a_new_database_at_once() {
                let Some(database) = super::TestDatabase::create().await else {
                    return;
                };
                let mut starting = Vec::new();
                for _ in 0..4 {
                    let url = database.url().to_owned();
                    starting.push(tokio::spawn(async move {
                        herald_store::PgStore::connect(&url).await.unwrap()
                    }));
                }
                let mut nodes = Vec::new();
                for node in starting {
                    nodes.push(node.await.unwrap());
                }
                use herald_store::prelude::*;
                nodes[0]
                    .create_tenant(herald_core::TenantSlug::parse("acme").unwrap(), "Acme".into())
                    .await
                    .unwrap();
                assert_eq!(nodes[3].list_tenants().await.unwrap().len(), 1);

                let admin = database.client().await;
                let row = admin
                    .query_one(
                        "SELECT count(*) AS applied, count(DISTINCT version) AS versions FROM herald_migrations",
                        &[],
                    )
                    .await
                    .unwrap();
                let (applied, versions): (i64, i64) = (row.get("applied"), row.get("versions"));
                assert!(applied > 0);
                assert_eq!(applied, versions, "a migration was applied twice");
            }
        }
    };
}

async fn a_retry_puts_off_the_rest_of_its_chain_and_claims_follow_due_times(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    f.create_webhook(new_webhook(
        t,
        &[EventType::RecipientSent, EventType::MessageSent],
        0,
    ))
    .await;
    f.submit(message(t, &["a@x.example", "b@x.example"], None, 1_000))
        .await;
    let claimed = f.claim(claim("n1", 1_000, 60_000)).await;
    let by = |to: &str| claimed.iter().find(|c| c.address.as_ref() == to).unwrap();
    f.complete(
        vec![outcome_at(by("a@x.example"), NextState::Sent, 1_000)],
        vec![],
    )
    .await;
    let m1 = by("a@x.example").message;
    let first = f.claim_events(webhook_claim(2_000, 10)).await;
    assert_eq!(event_names(&first), [(Some(m1), "recipient.sent")]);
    // Its retry is far off; what m1 writes meanwhile is due no earlier.
    f.finish_events(
        vec![webhook_attempt(
            &first[0],
            2_000,
            WebhookNext::Retry { at: 50_000 },
        )],
        0,
    )
    .await;
    f.complete(
        vec![outcome_at(by("b@x.example"), NextState::Sent, 3_000)],
        vec![],
    )
    .await;
    let m2 = f.send_message(t, &["c@x.example"], 4_000).await;
    assert_eq!(f.next_webhook_due().await, Some(4_000));
    let before = f.claim_events(webhook_claim(10_000, 10)).await;
    assert_eq!(
        event_names(&before),
        [(Some(m2), "recipient.sent"), (Some(m2), "message.sent")],
        "m1's later events wait for its retry"
    );
    f.finish_events(
        before
            .iter()
            .map(|e| webhook_attempt(e, 10_000, WebhookNext::Delivered))
            .collect(),
        0,
    )
    .await;
    assert_eq!(f.next_webhook_due().await, Some(50_000));
    // A claim cut short still takes the chain from its start.
    let one = f.claim_events(webhook_claim(50_000, 1)).await;
    assert_eq!(one[0].seq, first[0].seq);
    assert!(f.claim_events(webhook_claim(50_000, 10)).await.is_empty());
    f.finish_events(
        vec![webhook_attempt(&one[0], 50_000, WebhookNext::Delivered)],
        0,
    )
    .await;
    let rest = f.claim_events(webhook_claim(50_000, 10)).await;
    assert_eq!(
        event_names(&rest),
        [(Some(m1), "recipient.sent"), (Some(m1), "message.sent")]
    );
}

async fn a_restarted_node_gets_its_earlier_processes_events_back(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    f.create_webhook(new_webhook(t, &[EventType::MessageSent], 0))
        .await;
    f.submit(message(t, &["a@x.example"], None, 1_000)).await;
    let claimed = f.claim(claim("n1", 1_000, 60_000)).await;
    f.complete(
        vec![outcome_at(&claimed[0], NextState::Sent, 2_000)],
        vec![],
    )
    .await;
    let leased = f.claim_events(webhook_claim(10_000, 10)).await;
    assert_eq!(leased.len(), 1);
    assert!(f.claim_events(webhook_claim(10_000, 10)).await.is_empty());
    // The same process, or another node, gives nothing back.
    assert_eq!(f.release_webhook_leases("node-a", "first", 11_000).await, 0);
    assert_eq!(
        f.release_webhook_leases("node-b", "second", 11_000).await,
        0
    );
    assert_eq!(
        f.release_webhook_leases("node-a", "second", 11_000).await,
        1
    );
    let again = f.claim_events(webhook_claim(11_000, 10)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].seq, leased[0].seq);
    assert_eq!(again[0].attempts, 0, "giving back counts no attempt");
    assert!(again[0].lease_token > leased[0].lease_token);

    // A lease that ran out (its holder hangs) is taken by the next claim,
    // and the late holder's attempt changes nothing.
    assert!(f.claim_events(webhook_claim(70_000, 10)).await.is_empty());
    let taken = f.claim_events(webhook_claim(71_000, 10)).await;
    assert_eq!(taken.len(), 1);
    assert!(taken[0].lease_token > again[0].lease_token);
    f.finish_events(
        vec![webhook_attempt(&again[0], 72_000, WebhookNext::Delivered)],
        0,
    )
    .await;
    let listed = f.webhook_deliveries(t, taken[0].webhook, 10).await;
    assert_eq!(listed[0].status, WebhookDeliveryStatus::Pending);
    assert_eq!(listed[0].attempts, 0);
}

async fn a_rotated_secret_signs_beside_the_new_one_until_its_time(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let other = tenant(&*f.store, "other").await;
    let hook = f
        .create_webhook(new_webhook(t, &[EventType::MessageSent], 0))
        .await;
    assert_eq!(
        f.webhook_secrets(t, hook.id, 1_000).await,
        ("sealed:one".to_owned(), None)
    );
    not_found(f.store.webhook_secrets(other, hook.id, 1_000).await);
    f.rotate_webhook_secret(t, hook.id, "sealed:two".into(), 50_000, 2_000)
        .await;
    assert_eq!(
        f.webhook_secrets(t, hook.id, 49_999).await,
        ("sealed:two".to_owned(), Some("sealed:one".to_owned()))
    );
    assert_eq!(
        f.webhook_secrets(t, hook.id, 50_000).await,
        ("sealed:two".to_owned(), None)
    );
}

// Templates, schedules and their firings; scheduled and cancelled messages.

impl Fixture {
    async fn create_template(&self, template: herald_store::NewTemplate) -> herald_store::Template {
        self.store.create_template(template).await.unwrap()
    }

    async fn create_schedule(&self, schedule: herald_store::NewSchedule) -> herald_store::Schedule {
        self.store.create_schedule(schedule).await.unwrap()
    }

    async fn fire(
        &self,
        firing: herald_store::Firing,
        message: Option<NewMessage>,
    ) -> Option<herald_store::ScheduleRun> {
        self.store.fire_schedule(firing, message).await.unwrap()
    }
}

fn template_names(templates: &[herald_store::Template]) -> Vec<&str> {
    templates.iter().map(|t| t.name.as_str()).collect()
}

async fn templates_keep_every_version_and_their_names_per_tenant(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let other = tenant(&*f.store, "other").await;
    let welcome = f.create_template(new_template(t, "welcome", 1_000)).await;
    assert_eq!(welcome.tenant_id, t);
    assert_eq!(welcome.version, 1);
    assert_eq!((welcome.created_at, welcome.updated_at), (1_000, 1_000));
    assert_eq!(welcome.name, "welcome");
    assert_eq!(welcome.description.as_deref(), Some("the welcome template"));
    assert_eq!(
        welcome.content,
        template_fields("x", "Hello {{ name }}").content
    );
    f.create_template(new_template(t, "alpha", 1_100)).await;
    // Names are the tenant's own: another tenant may use the same.
    f.create_template(new_template(other, "welcome", 1_200))
        .await;

    let taken = conflict(
        f.store
            .create_template(new_template(t, "welcome", 1_300))
            .await,
    );
    assert_eq!(taken, "a template named \"welcome\" already exists");
    assert_eq!(
        template_names(&f.list_templates(t).await),
        ["alpha", "welcome"]
    );
    let named = f.store.template_named(t, "welcome").await.unwrap();
    assert_eq!(named.id, welcome.id);
    not_found(f.store.template_named(t, "Welcome").await);

    // A change is the next version.
    let changed = f
        .store
        .update_template(
            t,
            welcome.id,
            template_fields("greeting", "Hi again"),
            2_000,
        )
        .await
        .unwrap();
    assert_eq!(changed.version, 2);
    assert_eq!(changed.name, "greeting");
    assert_eq!(changed.content.subject, "Hi again");
    assert_eq!((changed.created_at, changed.updated_at), (1_000, 2_000));
    let read = f.template(t, welcome.id).await;
    assert_eq!(
        (read.version, read.content.subject.as_str()),
        (2, "Hi again")
    );
    let again = f
        .store
        .update_template(t, welcome.id, template_fields("greeting", "Third"), 3_000)
        .await
        .unwrap();
    assert_eq!(again.version, 3);
    // A taken name changes nothing.
    let taken = conflict(
        f.store
            .update_template(t, welcome.id, template_fields("alpha", "x"), 4_000)
            .await,
    );
    assert_eq!(taken, "a template named \"alpha\" already exists");
    assert_eq!(f.template(t, welcome.id).await.version, 3);

    // Another tenant's id is not found, whatever the call.
    not_found(f.store.template(other, welcome.id).await);
    not_found(
        f.store
            .update_template(other, welcome.id, template_fields("x", "x"), 5_000)
            .await,
    );
    not_found(f.store.delete_template(other, welcome.id).await);
    not_found(f.store.template_named(other, "greeting").await);
    assert_eq!(template_names(&f.list_templates(other).await), ["welcome"]);

    // A template a schedule uses stays.
    let daily = f
        .create_schedule(new_schedule(t, "daily", welcome.id, Some(10_000), 5_000))
        .await;
    let used = conflict(f.store.delete_template(t, welcome.id).await);
    assert!(used.contains("\"daily\""), "{used}");
    f.create_schedule(new_schedule(t, "weekly", welcome.id, None, 5_000))
        .await;
    let used = conflict(f.store.delete_template(t, welcome.id).await);
    assert!(used.contains("\"daily\", \"weekly\""), "{used}");
    assert_eq!(f.template(t, welcome.id).await.version, 3);
    f.delete_schedule(t, daily.id).await;
    let weekly = f.list_schedules(t).await.remove(0);
    f.delete_schedule(t, weekly.id).await;
    f.store.delete_template(t, welcome.id).await.unwrap();
    not_found(f.store.template(t, welcome.id).await);
    not_found(f.store.delete_template(t, welcome.id).await);
    // The name is free again.
    f.create_template(new_template(t, "greeting", 6_000)).await;
}

async fn schedules_keep_their_fields_and_name_a_template_of_their_tenant(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let other = tenant(&*f.store, "other").await;
    let template = f.create_template(new_template(t, "report", 1_000)).await;
    let others = f
        .create_template(new_template(other, "report", 1_000))
        .await;

    let created = f
        .create_schedule(new_schedule(t, "morning", template.id, Some(10_000), 2_000))
        .await;
    assert_eq!(created.tenant_id, t);
    assert_eq!(created.fields, schedule_fields("morning", template.id));
    assert_eq!(created.next_run_at, Some(10_000));
    assert_eq!(created.last_run_at, None);
    assert_eq!((created.created_at, created.updated_at), (2_000, 2_000));
    let read = f.schedule(t, created.id).await;
    assert_eq!(read.fields, created.fields);
    assert_eq!(
        read.fields.to[0].to_string(),
        "\"Ada Lovelace\" <ada@acme.example>"
    );

    // The template must be the tenant's.
    for wrong in [others.id, herald_core::TemplateId::new()] {
        let refused = f
            .store
            .create_schedule(new_schedule(t, "wrong", wrong, None, 2_000))
            .await;
        assert_eq!(invalid_field(refused), "template");
    }
    let taken = conflict(
        f.store
            .create_schedule(new_schedule(t, "morning", template.id, None, 2_000))
            .await,
    );
    assert_eq!(taken, "a schedule named \"morning\" already exists");
    f.create_schedule(new_schedule(t, "evening", template.id, None, 2_100))
        .await;
    let names: Vec<String> = f
        .list_schedules(t)
        .await
        .into_iter()
        .map(|s| s.fields.name)
        .collect();
    assert_eq!(names, ["evening", "morning"]);
    assert!(f.list_schedules(other).await.is_empty());

    // An update replaces every field and the next firing.
    let fields = herald_store::ScheduleFields {
        cron: "*/5 * * * *".into(),
        enabled: false,
        data: json!({}),
        cc: vec![],
        bcc: vec![],
        ..schedule_fields("noon", template.id)
    };
    let updated = f
        .update_schedule(t, created.id, fields.clone(), NextRun::At(None), 3_000)
        .await;
    assert_eq!(updated.fields, fields);
    assert_eq!(updated.next_run_at, None);
    assert_eq!((updated.created_at, updated.updated_at), (2_000, 3_000));
    assert_eq!(f.schedule(t, created.id).await.fields, fields);
    let refused = f
        .store
        .update_schedule(
            t,
            created.id,
            schedule_fields("noon", others.id),
            NextRun::Keep,
            3_000,
        )
        .await;
    assert_eq!(invalid_field(refused), "template");
    let taken = conflict(
        f.store
            .update_schedule(
                t,
                created.id,
                schedule_fields("evening", template.id),
                NextRun::Keep,
                3_000,
            )
            .await,
    );
    assert_eq!(taken, "a schedule named \"evening\" already exists");

    // Another tenant's id is not found.
    not_found(f.store.schedule(other, created.id).await);
    not_found(
        f.store
            .update_schedule(
                other,
                created.id,
                schedule_fields("x", others.id),
                NextRun::Keep,
                4_000,
            )
            .await,
    );
    not_found(f.store.schedule_runs(other, created.id, 10).await);
    not_found(f.store.delete_schedule(other, created.id).await);
    not_found(
        f.store
            .fire_schedule(manual_firing(other, created.id, 4_000), None)
            .await,
    );
    f.delete_schedule(t, created.id).await;
    not_found(f.store.schedule(t, created.id).await);
    not_found(f.store.delete_schedule(t, created.id).await);
}

async fn due_schedules_are_the_enabled_ones_whose_time_came(f: Fixture) {
    assert_eq!(f.next_schedule_due().await, None);
    let t = tenant(&*f.store, "acme").await;
    let other = tenant(&*f.store, "other").await;
    let mine = f.create_template(new_template(t, "report", 1_000)).await;
    let theirs = f
        .create_template(new_template(other, "report", 1_000))
        .await;
    let late = f
        .create_schedule(new_schedule(t, "late", mine.id, Some(5_000), 1_000))
        .await;
    let early = f
        .create_schedule(new_schedule(other, "early", theirs.id, Some(3_000), 1_000))
        .await;
    f.create_schedule(new_schedule(t, "later", mine.id, Some(8_000), 1_000))
        .await;
    f.create_schedule(new_schedule(t, "never", mine.id, None, 1_000))
        .await;
    f.create_schedule(herald_store::NewSchedule {
        fields: herald_store::ScheduleFields {
            enabled: false,
            ..schedule_fields("off", mine.id)
        },
        ..new_schedule(t, "off", mine.id, Some(1_000), 1_000)
    })
    .await;

    assert_eq!(f.next_schedule_due().await, Some(3_000));
    let ids = |due: Vec<herald_store::Schedule>| due.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(f.due_schedules(5_000, 10).await), [early.id, late.id]);
    assert_eq!(ids(f.due_schedules(5_000, 1).await), [early.id]);
    assert!(f.due_schedules(2_999, 10).await.is_empty());
    let due = f.due_schedules(3_000, 10).await;
    assert_eq!(due[0].tenant_id, other);
    assert_eq!(due[0].fields, schedule_fields("early", theirs.id));
}

async fn a_scheduled_occurrence_is_recorded_once_with_its_message(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let template = f.create_template(new_template(t, "report", 1_000)).await;
    let s = f
        .create_schedule(new_schedule(t, "daily", template.id, Some(10_000), 1_000))
        .await;
    let first = message(t, &["a@x.example"], None, 10_005);
    let run = f
        .fire(firing(t, s.id, 10_000, Some(20_000)), Some(first.clone()))
        .await
        .expect("the occurrence is recorded");
    assert_eq!(run.message_id, Some(first.id));
    assert_eq!(run.status, Some(RecipientStatus::Queued));
    assert_eq!(run.trigger, herald_store::RunTrigger::Schedule);
    assert_eq!((run.fire_at, run.missed, run.caught_up), (10_000, 0, false));
    let moved = f.schedule(t, s.id).await;
    assert_eq!(
        (moved.next_run_at, moved.last_run_at),
        (Some(20_000), Some(10_005))
    );

    // The same occurrence again (another node, late): nothing is stored.
    let second = message(t, &["b@x.example"], None, 10_006);
    assert!(
        f.fire(firing(t, s.id, 10_000, Some(20_000)), Some(second.clone()))
            .await
            .is_none()
    );
    not_found(f.store.message(t, second.id).await);
    assert_eq!(f.list_messages(t, 10).await.len(), 1);
    let unchanged = f.schedule(t, s.id).await;
    assert_eq!(unchanged.last_run_at, Some(10_005));

    // A firing with no message says why; one after downtime caught up.
    let run = f
        .fire(
            herald_store::Firing {
                missed: 3,
                error: Some("the template did not render".into()),
                ..firing(t, s.id, 20_000, Some(30_000))
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!((run.message_id, run.status), (None, None));
    assert!(run.caught_up);

    // A manual run moves nothing on.
    let manual = message(t, &["m@x.example"], None, 25_000);
    let run = f
        .fire(manual_firing(t, s.id, 25_000), Some(manual.clone()))
        .await
        .unwrap();
    assert_eq!(run.trigger, herald_store::RunTrigger::Manual);
    assert_eq!(run.message_id, Some(manual.id));
    let after = f.schedule(t, s.id).await;
    assert_eq!(
        (after.next_run_at, after.last_run_at),
        (Some(30_000), Some(25_000))
    );

    // An occurrence recorded already is not recorded again, even when the
    // schedule was set back to it: nothing of that firing stays, but the
    // schedule moves on past it (else it would be due again at once, for ever).
    f.update_schedule(t, s.id, s.fields.clone(), NextRun::At(Some(10_000)), 25_500)
        .await;
    let third = message(t, &["c@x.example"], None, 25_600);
    assert!(
        f.fire(firing(t, s.id, 10_000, Some(20_000)), Some(third.clone()))
            .await
            .is_none()
    );
    not_found(f.store.message(t, third.id).await);
    assert_eq!(f.schedule(t, s.id).await.next_run_at, Some(20_000));

    // A change that keeps the next firing leaves it as stored, whatever
    // the caller read before.
    let kept = f
        .update_schedule(t, s.id, s.fields.clone(), NextRun::Keep, 25_700)
        .await;
    assert_eq!((kept.next_run_at, kept.updated_at), (Some(20_000), 25_700));

    // A disabled, deleted or changed schedule expects no occurrence.
    f.update_schedule(t, s.id, s.fields.clone(), NextRun::At(Some(40_000)), 26_000)
        .await;
    assert!(
        f.fire(firing(t, s.id, 30_000, Some(40_000)), None)
            .await
            .is_none()
    );
    let off = herald_store::ScheduleFields {
        enabled: false,
        ..s.fields.clone()
    };
    f.update_schedule(t, s.id, off, NextRun::At(Some(40_000)), 26_000)
        .await;
    assert!(
        f.fire(firing(t, s.id, 40_000, Some(50_000)), None)
            .await
            .is_none()
    );
    assert!(
        f.fire(
            firing(t, herald_core::ScheduleId::new(), 40_000, None),
            None
        )
        .await
        .is_none()
    );

    // The runs, newest first, with their messages' statuses now.
    let claimed = f.claim(claim("n1", 10_010, 60_000)).await;
    let sent = claimed.iter().find(|c| c.message == first.id).unwrap();
    f.complete(vec![outcome_at(sent, NextState::Sent, 10_020)], vec![])
        .await;
    let runs = f.schedule_runs(t, s.id, 10).await;
    let listed: Vec<(i64, Option<MessageId>, Option<RecipientStatus>)> = runs
        .iter()
        .map(|r| (r.fire_at, r.message_id, r.status))
        .collect();
    assert_eq!(
        listed,
        [
            // Not due yet at the claim's time.
            (25_000, Some(manual.id), Some(RecipientStatus::Queued)),
            (20_000, None, None),
            (10_000, Some(first.id), Some(RecipientStatus::Sent)),
        ]
    );
    assert_eq!(
        runs[1].error.as_deref(),
        Some("the template did not render")
    );
    assert_eq!((runs[1].missed, runs[1].caught_up), (3, true));
    assert_eq!(runs[0].node, "n1");
    assert_eq!(f.schedule_runs(t, s.id, 1).await.len(), 1);

    // Deleting the schedule deletes its runs, not their messages.
    f.delete_schedule(t, s.id).await;
    f.message(t, first.id).await;
}

async fn a_firing_whose_message_is_refused_stores_nothing(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let template = f.create_template(new_template(t, "report", 1_000)).await;
    let s = f
        .create_schedule(new_schedule(t, "daily", template.id, Some(10_000), 1_000))
        .await;
    let refused = f
        .store
        .fire_schedule(
            firing(t, s.id, 10_000, Some(20_000)),
            Some(limited(t, &["a@x.example", "b@x.example"], None, 1)),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::QueueFull { limit: 1 })),
        "{refused:?}"
    );
    let kept = f.schedule(t, s.id).await;
    assert_eq!((kept.next_run_at, kept.last_run_at), (Some(10_000), None));
    assert!(f.schedule_runs(t, s.id, 10).await.is_empty());
    assert!(f.list_messages(t, 10).await.is_empty());
    // The occurrence can still be fired.
    let later = herald_core::timestamp::now_ms() + 86_400_000;
    let scheduled = NewMessage {
        send_at: Some(later),
        ..message(t, &["a@x.example"], None, 10_005)
    };
    let run = f
        .fire(firing(t, s.id, 10_000, Some(20_000)), Some(scheduled))
        .await
        .unwrap();
    assert_eq!(run.status, Some(RecipientStatus::Scheduled));
    let runs = f.schedule_runs(t, s.id, 10).await;
    assert_eq!(runs[0].status, Some(RecipientStatus::Scheduled));
}

async fn concurrent_firings_of_one_occurrence_store_one_message(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let template = f.create_template(new_template(t, "report", 1_000)).await;
    let s = f
        .create_schedule(new_schedule(t, "daily", template.id, Some(10_000), 1_000))
        .await;
    let nodes = f.two_nodes().await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = nodes[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let m = message(t, &["a@x.example"], None, 10_005);
            store
                .fire_schedule(
                    herald_store::Firing {
                        node: format!("n{i}"),
                        ..firing(t, s.id, 10_000, Some(20_000))
                    },
                    Some(m),
                )
                .await
                .unwrap()
        }));
    }
    let mut recorded = Vec::new();
    for task in tasks {
        recorded.extend(task.await.unwrap());
    }
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let messages = f.list_messages(t, 10).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(Some(messages[0].id), recorded[0].message_id);
    assert_eq!(f.schedule_runs(t, s.id, 10).await.len(), 1);
    assert_eq!(f.schedule(t, s.id).await.next_run_at, Some(20_000));
}

async fn a_message_to_send_later_waits_for_its_time(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    // Ahead of the clock, so that reading it shows it scheduled.
    let at = herald_core::timestamp::now_ms() + 86_400_000;
    let later = f
        .submit(NewMessage {
            send_at: Some(at),
            ..message(t, &["a@x.example"], None, 1_000)
        })
        .await;
    let view = f.message(t, later.id).await;
    assert_eq!(view.status, RecipientStatus::Scheduled);
    assert_eq!(view.send_at, Some(at));
    assert!(f.claim(claim("n1", at - 1, 60_000)).await.is_empty());
    assert_eq!(f.next_due(&[]).await, Some(at));
    let claimed = f.claim(claim("n1", at, 60_000)).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].message, later.id);
}

async fn a_waiting_message_can_be_cancelled_until_it_is_sent(f: Fixture) {
    let t = tenant(&*f.store, "acme").await;
    let other = tenant(&*f.store, "other").await;
    let first = f
        .submit(limited(t, &["a@x.example", "b@x.example"], None, 2))
        .await;
    let full = f.store.submit(limited(t, &["c@x.example"], None, 2)).await;
    assert!(
        matches!(full, Err(StoreError::QueueFull { limit: 2 })),
        "{full:?}"
    );

    not_found(f.store.cancel_message(other, first.id).await);
    not_found(f.store.cancel_message(t, MessageId::new()).await);
    f.store.cancel_message(t, first.id).await.unwrap();
    let view = f.message(t, first.id).await;
    assert_eq!(view.status, RecipientStatus::Cancelled);
    // Its recipients left the queue: there is room again, and nothing to claim of it.
    let second = f.submit(limited(t, &["c@x.example"], None, 2)).await;
    let claimed = f.claim(claim("n1", 2_000, 60_000)).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].message, second.id);
    // Being sent, it can no longer be cancelled.
    let busy = conflict(f.store.cancel_message(t, second.id).await);
    assert!(busy.contains("sending"), "{busy}");
    assert_eq!(
        f.message(t, second.id).await.status,
        RecipientStatus::Sending
    );
    // Once cancelled, a message is final.
    conflict(f.store.cancel_message(t, first.id).await);
}

conformance!(
    a_handed_message_is_claimed_as_it_is_stored,
    concurrent_submissions_are_answered_each_on_its_own,
    gateways_keep_their_names_tokens_and_tenants,
    gateway_instances_are_upserted_and_count_their_last_hour,
    a_server_names_a_gateway_of_its_tenant_which_then_stays,
    a_changed_gateway_clears_account_secrets,
    templates_keep_every_version_and_their_names_per_tenant,
    schedules_keep_their_fields_and_name_a_template_of_their_tenant,
    due_schedules_are_the_enabled_ones_whose_time_came,
    a_scheduled_occurrence_is_recorded_once_with_its_message,
    a_firing_whose_message_is_refused_stores_nothing,
    concurrent_firings_of_one_occurrence_store_one_message,
    a_message_to_send_later_waits_for_its_time,
    a_waiting_message_can_be_cancelled_until_it_is_sent,
    a_retry_puts_off_the_rest_of_its_chain_and_claims_follow_due_times,
    a_restarted_node_gets_its_earlier_processes_events_back,
    a_rotated_secret_signs_beside_the_new_one_until_its_time,
    webhooks_are_kept_per_tenant,
    outcomes_write_events_for_subscribed_webhooks,
    test_messages_cause_only_test_completed,
    concurrent_outcomes_write_one_message_event,
    webhook_events_go_out_in_order_per_message,
    a_late_attempt_beside_the_current_one_changes_nothing,
    outcomes_lease_their_events_to_the_dispatcher_offered,
    concurrent_outcomes_hand_a_chain_to_one_dispatcher,
    a_lone_recipients_events_are_those_a_read_would_give,
    a_lone_recipient_another_node_recorded_is_read,
    concurrent_webhook_claims_keep_each_messages_order,
    a_webhook_failing_too_long_is_disabled,
    webhook_deliveries_are_recorded_pruned_and_deleted,
    webhook_secrets_are_resealed,
    message_pages_filter_by_status_and_source_across_a_long_history,
    reply_to_keeps_its_display_name,
    a_store_says_while_the_database_refuses_writes,
    submissions_past_the_queue_limit_are_refused,
    a_claim_leases_each_recipient_once_until_the_lease_expires,
    a_stale_lease_cannot_record_its_outcome,
    many_outcomes_in_one_call_each_keep_their_own_attempt,
    pinned_mail_is_claimed_by_its_gateway_only,
    a_route_found_pinned_is_handed_over_without_an_attempt,
    a_changed_route_gives_waiting_pinned_mail_back_to_the_nodes,
    a_gateway_instances_restart_or_silence_gives_its_leases_back,
    deferred_recipients_come_back_at_their_time,
    released_recipients_are_due_again_without_an_attempt,
    claims_skip_excluded_tenants,
    claims_serve_tenants_in_turn,
    a_tenants_room_bounds_its_part_of_a_claim,
    successive_claims_go_round_the_tenants,
    next_due_passes_over_excluded_tenants,
    test_messages_past_their_limit_are_refused,
    higher_priority_is_claimed_first,
    an_idempotency_key_returns_the_first_message,
    a_batch_is_stored_in_order_with_its_duplicates_answered,
    messages_are_counted_by_their_derived_status,
    another_tenants_objects_are_not_found,
    every_tenant_scoped_method_refuses_another_tenants_ids,
    a_reference_to_something_deleted_is_a_conflict,
    concurrent_submissions_all_commit,
    concurrent_submissions_with_one_key_store_one_message,
    concurrent_claimers_take_every_recipient_exactly_once,
    a_second_store_on_the_same_database_sees_the_same_data,
    tenants_keep_their_properties,
    servers_accounts_and_providers_keep_their_rules,
    persons_and_tokens_keep_their_rules,
    smtp_credentials_and_connectors_stand_within_their_tenant,
    operator_tokens_are_listed_revoked_and_replaced,
    returning_to_a_revoked_bootstrap_value_revokes_the_current_one,
    weakened_trust_clears_account_secrets,
    text_stored_under_earlier_rules_is_read_back,
    audit_entries_read_back_as_written,
    secrets_are_resealed_all_at_once,
    messages_read_back_with_everything_that_happened,
    message_lists_are_newest_first,
    captures_are_kept_only_with_an_accepted_outcome,
    nodes_report_their_heartbeats,
    a_restarted_node_gets_back_the_leases_of_its_earlier_processes,
    leases_of_a_node_whose_heartbeat_stopped_are_given_back,
    passwords_and_sessions_keep_their_rules,
    message_searches_filter_by_recipient_and_time,
    plaintext_auth_is_allowed_only_where_the_server_entry_says_so,
);

/// PostgreSQL only: a busy table it has never gathered statistics for (the
/// planner then took the wrong index for claims) gets them from the node
/// within seconds, not at autovacuum's next visit; autovacuum is off for the
/// table here, so only the node can have done it.
#[tokio::test]
async fn postgres_gathers_the_statistics_of_a_busy_table_it_has_none_of() {
    let Some(f) = postgres().await else { return };
    let Backend::Postgres(database) = &f.backend else {
        unreachable!("a PostgreSQL fixture")
    };
    let (client, connection) = tokio_postgres::connect(database.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("ALTER TABLE recipients SET (autovacuum_enabled = false)")
        .await
        .unwrap();
    let t = tenant(&*f.store, "acme").await;
    for _ in 0..3 {
        let batch = (0..500)
            .map(|_| message(t, &["a@x.example"], None, 1_000))
            .collect();
        f.store.submit_batch(batch).await.unwrap();
    }
    let analysed = "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables \
                    WHERE schemaname = current_schema() AND relname = 'recipients'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !client
        .query_one(analysed, &[])
        .await
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "1,500 recipients and still no statistics after a minute"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
