//! Nodes keep the tokens and tenants they looked up for API requests, and
//! forget them as soon as anything changes a token, a person or a tenant: a
//! revoked token stops working at once.
//!
//! The PostgreSQL tests run two stores (two nodes) on one fresh database
//! from `herald_testkit::TestDatabase`; without a PostgreSQL server they are
//! skipped with a line on stderr, or fail where `HERALD_REQUIRE` names it.
//! The SQLite tests run two stores on one file: the node, and another
//! process beside it (`herald operator token revoke` opens the file so).

use std::time::Duration;

use herald_core::{PersonRole, Role, TenantId, TokenId};
use herald_store::prelude::*;
use herald_store::{NewToken, Person, PgStore, SqliteStore};
use herald_testkit::{TestDatabase, eventually};

mod builders;
use builders::{message, person, tenant, token};

/// Long enough for a notification on a loaded machine (it usually takes a
/// millisecond), and shorter than the cache's own maximum age, so that only
/// the notification can make a node forget in time.
const HEARD_WITHIN: Duration = Duration::from_secs(5);

/// The token's name as node `store` answers for it in the tenant `slug`.
async fn name_seen(store: &PgStore, hash: &str, slug: &str) -> Option<String> {
    let (record, tenant) = store.token_and_tenant(hash, slug).await.unwrap()?;
    tenant.expect("the tenant");
    Some(record.name)
}

/// Waits until `store` answers from what it keeps: the token is renamed
/// behind the triggers' back (so no node hears of it), and the node still
/// answers with the name it looked up.
async fn kept_by(store: &PgStore, database: &TestDatabase, token: TokenId, hash: &str, slug: &str) {
    let admin = database.client().await;
    admin
        .batch_execute("SET session_replication_role = replica")
        .await
        .unwrap();
    let mut round = 0;
    eventually("the node to keep what it looked up", HEARD_WITHIN, || {
        round += 1;
        let (admin, renamed) = (&admin, format!("renamed {round}"));
        async move {
            let looked_up = name_seen(store, hash, slug).await.expect("the token");
            admin
                .execute(
                    "UPDATE tokens SET name = $1 WHERE id = $2",
                    &[&renamed, &token.to_string()],
                )
                .await
                .unwrap();
            let again = name_seen(store, hash, slug).await.expect("the token");
            (again == looked_up).then_some(())
        }
    })
    .await;
}

/// Two nodes on one database, the tenant "acme", and a token of it that the
/// first node, `a`, keeps.
struct Nodes {
    a: PgStore,
    b: PgStore,
    acme: TenantId,
    token: TokenId,
}

/// [`Nodes`] on `database`, the token made by `new` (given node `a` and the
/// tenant) with hash `hash`.
async fn nodes_keeping(
    database: &TestDatabase,
    hash: &str,
    new: impl AsyncFnOnce(&PgStore, TenantId) -> NewToken,
) -> Nodes {
    let a = PgStore::connect(database.url()).await.unwrap();
    let b = PgStore::connect(database.url()).await.unwrap();
    let acme = tenant(&a, "acme").await;
    let token = a.create_token(new(&a, acme).await).await.unwrap().id;
    kept_by(&a, database, token, hash, "acme").await;
    Nodes { a, b, acme, token }
}

/// A sender token of the tenant with hash "h1".
async fn service_token(_: &PgStore, acme: TenantId) -> NewToken {
    token(Some(acme), None, "h1")
}

/// Waits until node `a` refuses the token with `hash`.
async fn refused_by(a: &PgStore, hash: &str) {
    eventually("node A to refuse the token", HEARD_WITHIN, || async {
        name_seen(a, hash, "acme").await.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_token_revoked_on_one_node_is_refused_by_the_other() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let n = nodes_keeping(&database, "h1", service_token).await;
    n.b.revoke_token(n.acme, n.token).await.unwrap();
    refused_by(&n.a, "h1").await;
}

#[tokio::test]
async fn the_node_that_revokes_refuses_at_once() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let n = nodes_keeping(&database, "h1", service_token).await;
    n.a.revoke_token(n.acme, n.token).await.unwrap();
    assert!(name_seen(&n.a, "h1", "acme").await.is_none());
}

#[tokio::test]
async fn a_person_removed_on_one_node_takes_their_tokens_from_the_other() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let personal = async |a: &PgStore, acme: TenantId| {
        let ada = Person {
            role: PersonRole::TenantAdmin,
            ..person("Ada", "ada@x.example")
        };
        let ada = a.create_person(acme, ada).await.unwrap();
        NewToken {
            role: Role::TenantAdmin,
            ..token(Some(acme), Some(ada.id), "h-ada")
        }
    };
    let n = nodes_keeping(&database, "h-ada", personal).await;
    let ada = n.a.list_persons(n.acme).await.unwrap()[0].id;
    n.b.delete_person(n.acme, ada).await.unwrap();
    refused_by(&n.a, "h-ada").await;
}

#[tokio::test]
async fn a_tenant_changed_on_one_node_is_read_again_by_the_other() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let n = nodes_keeping(&database, "h1", service_token).await;
    n.b.set_entitlements(n.acme, true).await.unwrap();
    eventually("node A to read the tenant again", HEARD_WITHIN, || async {
        let (_, tenant) = n.a.token_and_tenant("h1", "acme").await.unwrap()?;
        tenant?.credential_storage.then_some(())
    })
    .await;
}

/// The token's name as the SQLite store `store` answers for it in "acme".
async fn name_in_file(store: &SqliteStore, hash: &str) -> Option<String> {
    let (record, tenant) = store.token_and_tenant(hash, "acme").await.unwrap()?;
    tenant.expect("the tenant");
    Some(record.name)
}

/// A node's store on a new SQLite file, another process's store on the same
/// file, the tenant "acme", a token of it with hash "h1" that the node has
/// looked up, and the file's path.
async fn file_with_a_token() -> (
    SqliteStore,
    SqliteStore,
    TenantId,
    TokenId,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let node = SqliteStore::open(&path).unwrap();
    let other = SqliteStore::open(&path).unwrap();
    let acme = tenant(&node, "acme").await;
    let token = node
        .create_token(token(Some(acme), None, "h1"))
        .await
        .unwrap()
        .id;
    assert_eq!(name_in_file(&node, "h1").await.as_deref(), Some("token h1"));
    (node, other, acme, token, dir)
}

#[tokio::test]
async fn sqlite_keeps_a_token_while_only_mail_changes_the_file() {
    let (node, _other, acme, token, dir) = file_with_a_token().await;
    // Renamed behind the triggers' back: only a node that kept what it
    // looked up still answers with the old name.
    let raw = rusqlite::Connection::open(dir.path().join("herald.db")).unwrap();
    raw.execute_batch("DROP TRIGGER tokens_changed").unwrap();
    raw.execute(
        "UPDATE tokens SET name = 'renamed' WHERE id = ?1",
        [token.to_string()],
    )
    .unwrap();
    assert_eq!(name_in_file(&node, "h1").await.as_deref(), Some("token h1"));
    // Mail changes the tenant's row (its count of queued recipients), which
    // changes nothing a token may do.
    node.submit(message(acme, &["a@acme.example"], None, 1_000))
        .await
        .unwrap();
    assert_eq!(name_in_file(&node, "h1").await.as_deref(), Some("token h1"));
    // Any other change of the tenant makes the node read both again.
    node.set_entitlements(acme, true).await.unwrap();
    assert_eq!(name_in_file(&node, "h1").await.as_deref(), Some("renamed"));
}

#[tokio::test]
async fn sqlite_refuses_at_once_a_token_another_process_revoked() {
    let (node, other, acme, token, _dir) = file_with_a_token().await;
    other.revoke_token(acme, token).await.unwrap();
    assert_eq!(name_in_file(&node, "h1").await, None);
}

#[tokio::test]
async fn sqlite_reads_again_a_tenant_or_person_another_process_changed() {
    let (node, other, acme, _, _dir) = file_with_a_token().await;
    other.set_entitlements(acme, true).await.unwrap();
    let (_, tenant) = node.token_and_tenant("h1", "acme").await.unwrap().unwrap();
    assert!(tenant.unwrap().credential_storage);

    let ada = Person {
        role: PersonRole::TenantAdmin,
        ..person("Ada", "ada@x.example")
    };
    let ada = node.create_person(acme, ada).await.unwrap();
    let personal = NewToken {
        role: Role::TenantAdmin,
        ..token(Some(acme), Some(ada.id), "h-ada")
    };
    node.create_token(personal).await.unwrap();
    assert!(name_in_file(&node, "h-ada").await.is_some());
    other.delete_person(acme, ada.id).await.unwrap();
    assert_eq!(name_in_file(&node, "h-ada").await, None);
}

#[tokio::test]
async fn sqlite_triggers_name_every_column_that_can_change_what_a_token_may_do() {
    // A later migration that adds a column to tokens or tenants, or rebuilds
    // either table (which drops its triggers), must keep the triggers whole.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    drop(SqliteStore::open(&path).unwrap());
    let raw = rusqlite::Connection::open(&path).unwrap();
    let trigger = |name: &str| -> String {
        raw.query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
            [name],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("no trigger {name}: {e}"))
    };
    for (table, left_out) in [("tokens", "last_used_at"), ("tenants", "queued_recipients")] {
        let changed = trigger(&format!("{table}_changed"));
        let listed = changed
            .split_once("UPDATE OF")
            .and_then(|(_, rest)| rest.split_once(" ON "))
            .map(|(columns, _)| {
                columns
                    .split(',')
                    .map(|c| c.trim().to_owned())
                    .collect::<Vec<_>>()
            })
            .expect("an UPDATE OF list");
        let mut columns = raw
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .unwrap();
        let columns: Vec<String> = columns
            .query_map([table], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for column in &columns {
            assert_eq!(
                listed.contains(column),
                column != left_out,
                "{table}.{column} in {table}_changed: {changed}"
            );
        }
        trigger(&format!("{table}_deleted"));
    }
    trigger("persons_changed");
    trigger("persons_deleted");
}
