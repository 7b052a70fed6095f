//! PostgreSQL nodes keep the tokens and tenants they looked up for API
//! requests, and forget them as soon as any node changes a token, a person
//! or a tenant: a revoked token stops working on every node.
//!
//! Each test runs two stores (two nodes) on one fresh database from
//! `herald_testkit::TestDatabase`; without a PostgreSQL server they are
//! skipped with a line on stderr, or fail where `HERALD_REQUIRE` names it.

use std::time::Duration;

use herald_core::{PersonRole, Role, TenantId, TokenId};
use herald_store::prelude::*;
use herald_store::{NewToken, Person, PgStore};
use herald_testkit::{TestDatabase, eventually};

mod builders;
use builders::{person, tenant, token};

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

async fn two_nodes(database: &TestDatabase) -> (PgStore, PgStore) {
    let a = PgStore::connect(database.url()).await.unwrap();
    let b = PgStore::connect(database.url()).await.unwrap();
    (a, b)
}

async fn stored_token(store: &PgStore, new: NewToken) -> TokenId {
    store.create_token(new).await.unwrap().id
}

#[tokio::test]
async fn a_token_revoked_on_one_node_is_refused_by_the_other() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let (a, b) = two_nodes(&database).await;
    let acme = tenant(&a, "acme").await;
    let id = stored_token(&a, token(Some(acme), None, "h1")).await;
    kept_by(&a, &database, id, "h1", "acme").await;

    b.revoke_token(acme, id).await.unwrap();
    eventually(
        "node A to refuse the revoked token",
        HEARD_WITHIN,
        || async { name_seen(&a, "h1", "acme").await.is_none().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn the_node_that_revokes_refuses_at_once() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let (a, _b) = two_nodes(&database).await;
    let acme = tenant(&a, "acme").await;
    let id = stored_token(&a, token(Some(acme), None, "h1")).await;
    kept_by(&a, &database, id, "h1", "acme").await;

    a.revoke_token(acme, id).await.unwrap();
    assert!(name_seen(&a, "h1", "acme").await.is_none());
}

#[tokio::test]
async fn a_person_removed_on_one_node_takes_their_tokens_from_the_other() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let (a, b) = two_nodes(&database).await;
    let acme = tenant(&a, "acme").await;
    let ada = a
        .create_person(
            acme,
            Person {
                role: PersonRole::TenantAdmin,
                ..person("Ada", "ada@x.example")
            },
        )
        .await
        .unwrap();
    let personal = NewToken {
        role: Role::TenantAdmin,
        ..token(Some(acme), Some(ada.id), "h-ada")
    };
    let id = stored_token(&a, personal).await;
    kept_by(&a, &database, id, "h-ada", "acme").await;

    b.delete_person(acme, ada.id).await.unwrap();
    eventually(
        "node A to refuse the person's token",
        HEARD_WITHIN,
        || async { name_seen(&a, "h-ada", "acme").await.is_none().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_tenant_changed_on_one_node_is_read_again_by_the_other() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let (a, b) = two_nodes(&database).await;
    let acme: TenantId = tenant(&a, "acme").await;
    let id = stored_token(&a, token(Some(acme), None, "h1")).await;
    kept_by(&a, &database, id, "h1", "acme").await;

    b.set_entitlements(acme, true).await.unwrap();
    eventually("node A to read the tenant again", HEARD_WITHIN, || async {
        let (_, tenant) = a.token_and_tenant("h1", "acme").await.unwrap()?;
        tenant?.credential_storage.then_some(())
    })
    .await;
}
