//! The storage conformance suite: behaviour every `Store` implementation must show.
//! Each test gets a fresh database; PostgreSQL will run the same functions.

use std::sync::Arc;

use herald_core::{EmailAddress, MessageId, RecipientStatus, Subject, TenantId, TenantSlug};
use herald_store::{
    AttemptRecord, ClaimRequest, NewMessage, NextState, Outcome, SqliteStore, Store, StoreError,
};

struct Fixture {
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("herald.db")).unwrap();
    Fixture {
        store: Arc::new(store),
        _dir: dir,
    }
}

fn address(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

fn message(tenant: TenantId, to: &[&str], key: Option<&str>, at: i64) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        tenant_id: tenant,
        idempotency_key: key.map(str::to_owned),
        subject: Subject::parse("subject").unwrap(),
        text: Some("body".into()),
        html: None,
        reply_to: None,
        headers: vec![],
        to: to.iter().map(|a| address(a)).collect(),
        cc: vec![],
        bcc: vec![],
        used_fallback: false,
        created_at: at,
    }
}

fn claim(node: &str, now: i64, lease_ms: i64) -> ClaimRequest {
    ClaimRequest {
        node: node.into(),
        now,
        lease_ms,
        limit: 100,
        exclude_tenants: vec![],
    }
}

fn attempt(outcome: RecipientStatus) -> AttemptRecord {
    AttemptRecord {
        at: 0,
        node: "n".into(),
        server: "s".into(),
        outcome,
        step: Some("data".into()),
        code: Some(250),
        enhanced_code: None,
        response: "250 ok".into(),
        duration_ms: 1,
        remote_addr: None,
        tls_version: None,
        tls_cipher: None,
    }
}

async fn tenant(store: &dyn Store, slug: &str) -> TenantId {
    store
        .create_tenant(TenantSlug::parse(slug).unwrap(), slug.into())
        .await
        .unwrap()
        .id
}

#[tokio::test]
async fn a_claim_leases_each_recipient_once_until_the_lease_expires() {
    let f = sqlite();
    let t = tenant(&*f.store, "acme").await;
    f.store
        .submit(message(t, &["a@x.example", "b@x.example"], None, 1_000))
        .await
        .unwrap();

    let first = f.store.claim(claim("n1", 2_000, 10_000)).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(
        f.store
            .claim(claim("n2", 3_000, 10_000))
            .await
            .unwrap()
            .is_empty(),
        "leased rows are not claimed twice"
    );
    let again = f.store.claim(claim("n2", 12_001, 10_000)).await.unwrap();
    assert_eq!(again.len(), 2, "an expired lease is claimed again");
    assert!(again.iter().all(|c| c.attempt == 2));
}

#[tokio::test]
async fn a_stale_lease_cannot_record_its_outcome() {
    let f = sqlite();
    let t = tenant(&*f.store, "acme").await;
    let m = f
        .store
        .submit(message(t, &["a@x.example"], None, 1_000))
        .await
        .unwrap();
    let stale = f
        .store
        .claim(claim("n1", 2_000, 1_000))
        .await
        .unwrap()
        .remove(0);
    let fresh = f
        .store
        .claim(claim("n2", 3_001, 1_000))
        .await
        .unwrap()
        .remove(0);
    assert!(fresh.lease_token > stale.lease_token);

    let outcome = |c: &herald_store::Claimed, next| Outcome {
        recipient: c.recipient,
        lease_token: c.lease_token,
        next,
        attempt: attempt(RecipientStatus::Sent),
    };
    let late = f
        .store
        .complete(
            vec![outcome(&stale, NextState::Deferred { until: 9_999 })],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(late, vec![false]);
    let current = f
        .store
        .complete(vec![outcome(&fresh, NextState::Sent)], vec![])
        .await
        .unwrap();
    assert_eq!(current, vec![true]);
    let again = f
        .store
        .complete(vec![outcome(&fresh, NextState::Failed)], vec![])
        .await
        .unwrap();
    assert_eq!(
        again,
        vec![false],
        "a finished recipient takes no second outcome"
    );

    let view = f.store.message(t, m.id).await.unwrap();
    assert_eq!(view.status, RecipientStatus::Sent);
    assert_eq!(view.recipients[0].attempts.len(), 1);
}

#[tokio::test]
async fn deferred_recipients_come_back_at_their_time() {
    let f = sqlite();
    let t = tenant(&*f.store, "acme").await;
    f.store
        .submit(message(t, &["a@x.example"], None, 1_000))
        .await
        .unwrap();
    let c = f
        .store
        .claim(claim("n1", 1_000, 60_000))
        .await
        .unwrap()
        .remove(0);
    let o = Outcome {
        recipient: c.recipient,
        lease_token: c.lease_token,
        next: NextState::Deferred { until: 5_000 },
        attempt: attempt(RecipientStatus::Deferred),
    };
    assert_eq!(f.store.complete(vec![o], vec![]).await.unwrap(), vec![true]);
    assert_eq!(f.store.next_due(&[]).await.unwrap(), Some(5_000));
    assert_eq!(
        f.store.next_due(&[t]).await.unwrap(),
        None,
        "an excluded tenant's mail is not due"
    );
    assert!(
        f.store
            .claim(claim("n1", 4_999, 60_000))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        f.store
            .claim(claim("n1", 5_000, 60_000))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn released_recipients_are_due_again_without_an_attempt() {
    let f = sqlite();
    let t = tenant(&*f.store, "acme").await;
    let m = f
        .store
        .submit(message(t, &["a@x.example"], None, 1_000))
        .await
        .unwrap();
    let c = f
        .store
        .claim(claim("n1", 1_000, 60_000))
        .await
        .unwrap()
        .remove(0);
    f.store
        .release(vec![(c.recipient, c.lease_token)])
        .await
        .unwrap();
    let view = f.store.message(t, m.id).await.unwrap();
    assert_eq!(view.recipients[0].status, RecipientStatus::Queued);
    let again = f
        .store
        .claim(claim("n1", i64::MAX / 2, 60_000))
        .await
        .unwrap();
    assert_eq!(again[0].attempt, 1, "a release gives the attempt back");
}

#[tokio::test]
async fn claims_skip_excluded_tenants() {
    let f = sqlite();
    let busy = tenant(&*f.store, "busy").await;
    let idle = tenant(&*f.store, "idle").await;
    f.store
        .submit(message(busy, &["a@x.example"], None, 1_000))
        .await
        .unwrap();
    f.store
        .submit(message(idle, &["b@x.example"], None, 1_000))
        .await
        .unwrap();
    let mut request = claim("n1", 2_000, 60_000);
    request.exclude_tenants = vec![busy];
    let claimed = f.store.claim(request).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].tenant, idle);
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_message() {
    let f = sqlite();
    let t = tenant(&*f.store, "acme").await;
    let other = tenant(&*f.store, "other").await;
    let first = f
        .store
        .submit(message(t, &["a@x.example"], Some("k1"), 1_000))
        .await
        .unwrap();
    let second = f
        .store
        .submit(message(t, &["a@x.example"], Some("k1"), 2_000))
        .await
        .unwrap();
    assert_eq!(second.id, first.id);
    assert!(second.duplicate);
    // Keys are per tenant.
    let elsewhere = f
        .store
        .submit(message(other, &["a@x.example"], Some("k1"), 2_000))
        .await
        .unwrap();
    assert_ne!(elsewhere.id, first.id);
    assert_eq!(f.store.list_messages(t, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn another_tenants_objects_are_not_found() {
    let f = sqlite();
    let a = tenant(&*f.store, "acme").await;
    let b = tenant(&*f.store, "other").await;
    let m = f
        .store
        .submit(message(a, &["a@x.example"], None, 1_000))
        .await
        .unwrap();
    assert!(matches!(
        f.store.message(b, m.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(f.store.list_messages(b, 10).await.unwrap().is_empty());
    assert!(matches!(
        f.store
            .create_tenant(TenantSlug::parse("acme").unwrap(), "again".into())
            .await,
        Err(StoreError::Conflict(_))
    ));
}

#[tokio::test]
async fn concurrent_submissions_all_commit() {
    let f = sqlite();
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
    assert_eq!(f.store.list_messages(t, 500).await.unwrap().len(), 200);
    assert_eq!(
        f.store
            .claim(ClaimRequest {
                limit: 1000,
                ..claim("n", 2_000, 1_000)
            })
            .await
            .unwrap()
            .len(),
        200
    );
}
