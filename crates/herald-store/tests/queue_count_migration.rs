//! The migration that adds each tenant's count of queued recipients counts
//! the recipients a database already holds, on both backends.

use herald_core::{TenantId, TenantSlug};
use herald_store::{NewMessage, PgStore, SqliteStore, Store, StoreError};
use herald_testkit::TestDatabase;

mod builders;
use builders::message;

/// A message, with a limit on its tenant's queued recipients when given.
fn limited(tenant: TenantId, to: &[&str], max_queued: Option<u64>) -> NewMessage {
    NewMessage {
        max_queued,
        ..message(tenant, to, None, 1_000)
    }
}

/// Queues three recipients for a tenant; returns the tenant.
async fn queue_three(store: &dyn Store) -> TenantId {
    let t = store
        .create_tenant(TenantSlug::parse("acme").unwrap(), "Acme".into())
        .await
        .unwrap()
        .id;
    store
        .submit(limited(t, &["a@x.example", "b@x.example"], None))
        .await
        .unwrap();
    store
        .submit(limited(t, &["c@x.example"], None))
        .await
        .unwrap();
    t
}

/// The migrated count is three: a fourth recipient passes a limit of three.
async fn assert_counts_three(store: &dyn Store, t: TenantId) {
    let refused = store.submit(limited(t, &["d@x.example"], Some(3))).await;
    assert!(
        matches!(refused, Err(StoreError::QueueFull { limit: 3 })),
        "{refused:?}"
    );
    store
        .submit(limited(t, &["d@x.example"], Some(4)))
        .await
        .unwrap();
}

#[tokio::test]
async fn sqlite_counts_the_recipients_already_queued() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let t = queue_three(&SqliteStore::open(&path).unwrap()).await;
    // Back to the schema before the migration (0009, then 0010 to 0021
    // after it), with the recipients kept.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 21, "a migration was added: revert it here too");
    conn.execute_batch(
        "DROP TRIGGER tokens_changed; DROP TRIGGER tokens_deleted; \
         DROP TRIGGER persons_changed; DROP TRIGGER persons_deleted; \
         DROP TRIGGER tenants_changed; DROP TRIGGER tenants_deleted; \
         DROP TABLE access_changes; \
         ALTER TABLE recipients DROP COLUMN sole; \
         DROP INDEX recipients_gateway_due; DROP INDEX recipients_next_due; \
         CREATE INDEX recipients_next_due ON recipients (due_at, tenant_id) \
         WHERE status IN ('queued', 'deferred', 'sending'); \
         DROP INDEX smtp_servers_by_gateway; ALTER TABLE smtp_servers DROP COLUMN gateway_id; \
         DROP TABLE gateway_instance_minutes; DROP TABLE gateway_instances; DROP TABLE gateways; \
         DROP TABLE schedule_runs; DROP TABLE schedules; DROP TABLE template_versions; \
         DROP TABLE templates; ALTER TABLE messages DROP COLUMN send_at; \
         ALTER TABLE messages DROP COLUMN template_id; ALTER TABLE messages DROP COLUMN template_version; \
         DROP TABLE webhook_outbox; DROP TABLE webhooks; \
         DROP TABLE smtp_credentials; DROP TABLE smtp_connectors; \
         ALTER TABLE messages DROP COLUMN source; ALTER TABLE messages DROP COLUMN smtp_credential_id; \
         ALTER TABLE messages DROP COLUMN smtp_connector_id; ALTER TABLE messages DROP COLUMN client_addr; \
         ALTER TABLE messages DROP COLUMN raw; ALTER TABLE messages DROP COLUMN attachments; \
         DROP INDEX recipients_tenant_due; \
         CREATE INDEX recipients_due ON recipients (priority DESC, due_at) \
         WHERE status IN ('queued', 'deferred', 'sending'); \
         ALTER TABLE recipients DROP COLUMN lease_incarnation; \
         ALTER TABLE nodes DROP COLUMN incarnation; \
         ALTER TABLE tenants DROP COLUMN queued_recipients; \
         ALTER TABLE recipients DROP COLUMN gateway_id; PRAGMA user_version = 8;",
    )
    .unwrap();
    drop(conn);
    assert_counts_three(&SqliteStore::open(&path).unwrap(), t).await;
}

#[tokio::test]
async fn postgres_counts_the_recipients_already_queued() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let t = queue_three(&PgStore::connect(database.url()).await.unwrap()).await;
    let admin = database.client().await;
    admin
        .batch_execute(
            "ALTER TABLE tenants DROP COLUMN queued_recipients; DROP TABLE tenant_queue_shards; \
             DELETE FROM herald_migrations WHERE name = '0006_queued_recipients';",
        )
        .await
        .unwrap();
    assert_counts_three(&PgStore::connect(database.url()).await.unwrap(), t).await;
}
