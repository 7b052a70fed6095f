//! The kit's own promise about databases: a test's database is gone once the
//! test ended, whether it passed or panicked, with connections still open on it.

use std::sync::{Arc, Mutex};

use herald_testkit::{TestDatabase, connect, server_url};

/// Whether the server still has a database called `name`.
async fn exists(name: &str) -> bool {
    let admin = connect(&server_url()).await.unwrap();
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap();
    row.get::<_, i64>(0) == 1
}

#[tokio::test]
async fn a_database_is_dropped_with_its_guard_despite_open_connections() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let name = database.name().to_owned();
    let client = database.client().await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    assert!(exists(&name).await);
    drop(database);
    assert!(!exists(&name).await, "{name} is left");
    assert!(client.is_closed() || client.query_one("SELECT 1", &[]).await.is_err());
}

#[test]
fn a_database_is_dropped_when_its_test_panics() {
    let created: Arc<Mutex<Option<String>>> = Arc::default();
    let test = {
        let created = created.clone();
        move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let Some(database) = TestDatabase::create().await else {
                    return;
                };
                *created.lock().unwrap() = Some(database.name().to_owned());
                let _client = database.client().await;
                panic!("the test fails with its database in use");
            })
        }
    };
    // On a thread of its own, as the harness runs a test.
    let outcome = std::thread::spawn(test).join();
    let Some(name) = created.lock().unwrap().clone() else {
        assert!(outcome.is_ok(), "skipped tests do not panic");
        return;
    };
    assert!(outcome.is_err(), "the test panicked");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(!runtime.block_on(exists(&name)), "{name} is left");
}
