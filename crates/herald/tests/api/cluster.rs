//! Many nodes on one PostgreSQL database: a SIGKILLed node loses no mail and
//! doubles at most what it had in flight; api-only and worker-only nodes share
//! the queue, and NOTIFY wakes the worker; `/v1/nodes` sees a node die; a
//! token revoked through one node is refused by every node.
//!
//! The tests find PostgreSQL through `HERALD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and each work on a database
//! of their own (`herald_testkit::TestDatabase`), dropped when the test ends,
//! also after a panic. Without a server they are skipped with one line; when
//! `HERALD_REQUIRE` names `postgres` (or `CI` is set) they fail instead.

use std::collections::HashMap;

use herald_testkit::TestDatabase;
use herald_testsmtp::TestSmtpServer;
use serde_json::json;

use crate::helpers::*;

/// One node process on the shared database, with a data directory of its own
/// that is removed with it.
pub(crate) async fn node(db: &TestDatabase, name: &str, extra: &[&str]) -> NodeProcess {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--database-url",
        db.url(),
        "--node-name",
        name,
        "--heartbeat",
        "300ms",
    ];
    args.extend_from_slice(extra);
    // Every node needs the same keyring to open the secrets the others stored.
    start_process(
        dir.path(),
        &args,
        &[("HERALD_MASTER_KEY", MASTER_KEY), ("HERALD_LOG", "warn")],
    )
    .await
    .keeping(dir)
}

const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_message_once_a_sigkilled_node_aside() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let smtp = TestSmtpServer::start().await;
    // n2, which is killed, leases for 3 s, so that the others take its mail
    // soon; they lease for 30 s, so that a loaded machine that slows their
    // deliveries past a short lease makes no duplicates of its own (a lease
    // that ends mid-delivery is taken over and delivered again, as it must).
    let lease = |seconds: &'static str| {
        [
            "--lease",
            seconds,
            "--poll-interval",
            "200ms",
            "--concurrency",
            "16",
        ]
    };
    let mut nodes = [
        node(&db, "n1", &lease("30s")).await,
        node(&db, "n2", &lease("3s")).await,
        node(&db, "n3", &lease("30s")).await,
    ];
    let apps: Vec<TestApp> = nodes.iter().map(NodeProcess::app).collect();
    let acme = apps[0].tenant("acme").await;
    apps[0].use_smtp_server(&acme, smtp.port()).await;

    // 1,000 messages, spread over the three APIs, ten at a time; a client whose
    // node is gone submits to the next one, as a client behind a balancer would,
    // with the same idempotency key: a submission the killed node committed but
    // could not answer is then not stored twice.
    let total = 1000;
    let client = db.client().await;
    let held = "SELECT count(*) FROM recipients WHERE status = 'sending' AND lease_owner = 'n2'";
    let submit_all = async {
        for chunk in (0..total).collect::<Vec<usize>>().chunks(10) {
            let submissions = chunk.iter().map(|i| {
                let (apps, acme) = (&apps, &acme);
                async move {
                    let body = json!({"to": [format!("u{i}@acme.example")], "subject": format!("m{i}"), "text": "x", "idempotency_key": format!("m{i}")});
                    for attempt in 0..3 {
                        let app = &apps[(i + attempt) % 3];
                        let sent = app
                            .client
                            .post(format!("{}/v1/tenants/{}/messages", app.base, acme.slug))
                            .bearer_auth(&acme.sender)
                            .json(&body)
                            .send()
                            .await;
                        if let Ok(response) = sent {
                            assert_eq!(response.status(), 202);
                            return;
                        }
                    }
                    panic!("no node took message {i}");
                }
            });
            futures_util::future::join_all(submissions).await;
        }
    };
    // Mid-run, at a moment n2 holds leases: kill it and count what it held.
    let kill = async {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if count(&client, held).await > 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "n2 never held a lease"
            );
        }
        nodes[1].child.start_kill().unwrap();
        nodes[1].child.wait().await.unwrap();
        count(&client, held).await
    };
    let ((), in_flight) = tokio::join!(submit_all, kill);

    // Every recipient is recorded sent only after the server accepted it, so once the
    // database says all are sent, every copy (the duplicates included) has arrived.
    smtp.wait_for_messages(total, DEADLINE * 3).await;
    let unfinished: i64 = eventually("every recipient to be recorded sent", || async {
        let n = count(
            &client,
            "SELECT count(*) FROM recipients WHERE status <> 'sent'",
        )
        .await;
        (n == 0).then_some(n)
    })
    .await;
    assert_eq!(unfinished, 0);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for m in &smtp.messages() {
        *counts.entry(m.header("Subject").unwrap()).or_default() += 1;
    }
    assert_eq!(counts.len(), total, "every message arrived");
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!("n2 had {in_flight} in flight when killed; {duplicates} duplicates");
    assert!(
        duplicates as i64 <= in_flight,
        "{duplicates} duplicates, but n2 had only {in_flight} in flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_node_and_a_worker_node_share_the_queue_and_notify_wakes_the_worker() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let smtp = TestSmtpServer::start().await;
    // A poll far longer than the test: only NOTIFY can wake the worker in time.
    let api = node(&db, "api-1", &["--roles", "api", "--poll-interval", "1h"]).await;
    let mut worker = node(
        &db,
        "worker-1",
        &["--roles", "worker", "--poll-interval", "1h"],
    )
    .await;
    let app = api.app();
    let acme = app.tenant_sending_to("acme", smtp.port()).await;

    // The worker-only node serves health checks but not the API.
    let health = reqwest::get(format!("{}/healthz", worker.base))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let api_on_worker = reqwest::Client::new()
        .get(format!("{}/v1/tenants", worker.base))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(api_on_worker.status(), 404);

    let id = app.submit_to(&acme, "a@acme.example", "notified").await;
    let message = app.wait_for_status(&acme, &id, "sent").await;
    assert_eq!(message["recipients"][0]["attempts"][0]["node"], "worker-1");
    assert_eq!(smtp.messages().len(), 1);

    // The nodes list sees both, then the worker's death once its heartbeat lapses.
    let (_, nodes) = app.get("/v1/nodes", OPERATOR).await;
    let alive = |nodes: &serde_json::Value, name: &str| {
        nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .map(|n| n["alive"] == true)
    };
    assert_eq!(alive(&nodes, "worker-1"), Some(true), "{nodes}");
    assert_eq!(alive(&nodes, "api-1"), Some(true), "{nodes}");
    let (_, node_info) = app.get("/v1/nodes", OPERATOR).await;
    let roles = node_info["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "worker-1")
        .unwrap()["roles"]
        .clone();
    assert_eq!(roles, json!(["worker"]));
    worker.child.start_kill().unwrap();
    worker.child.wait().await.unwrap();
    eventually("the killed worker to be reported gone", || async {
        let (_, nodes) = app.get("/v1/nodes", OPERATOR).await;
        (alive(&nodes, "worker-1") == Some(false)).then_some(())
    })
    .await;

    // With no worker alive, a test message is refused at once.
    let provider = app.first_provider_id(&acme).await;
    let (status, problem) = app.test_provider(&acme, &provider, json!({})).await;
    assert_eq!(status, 503, "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_on_one_node_reaches_the_others_at_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = TestSmtpServer::start().await;
    let b = TestSmtpServer::start().await;
    let stale = ["--provider-staleness", "1h"];
    let api = node(
        &db,
        "front",
        &[&["--roles", "api"][..], &stale[..]].concat(),
    )
    .await;
    let _worker = node(
        &db,
        "back",
        &[&["--roles", "worker"][..], &stale[..]].concat(),
    )
    .await;
    let app = api.app();
    let acme = app.tenant_sending_to("acme", a.port()).await;
    let first = app.submit_to(&acme, "x@acme.example", "one").await;
    app.wait_for_status(&acme, &first, "sent").await;

    // Switch to B through the API node; the worker node only learns of it from the refresh.
    app.use_smtp_server(&acme, b.port()).await;
    let second = app.submit_to(&acme, "x@acme.example", "two").await;
    app.wait_for_status(&acme, &second, "sent").await;
    assert_eq!(b.messages().len(), 1, "the worker node heard the refresh");
    assert_eq!(a.messages().len(), 1);
}

/// A token revoked through one node is refused by the other within moments,
/// though that node had just accepted it (and keeps what it looked up): the
/// database announces the change to every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_through_one_node_is_refused_by_the_other() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let api = ["--roles", "api"];
    let first = node(&db, "first", &api).await;
    let second = node(&db, "second", &api).await;
    let (a, b) = (first.app(), second.app());
    let acme = a.tenant("acme").await;
    for _ in 0..3 {
        let (status, body) = b.get_as_sender(&acme, "messages").await;
        assert_eq!(status, 200, "{body}");
    }

    let (status, tokens) = a.get_as_admin(&acme, "tokens").await;
    assert_eq!(status, 200, "{tokens}");
    let sender = tokens
        .as_array()
        .and_then(|all| all.iter().find(|t| t["name"] == "sender"))
        .unwrap_or_else(|| panic!("the sender token is listed: {tokens}"));
    let path = format!("tokens/{}", sender["id"].as_str().unwrap());
    let (status, body) = a.delete_as_admin(&acme, &path).await;
    assert_eq!(status, 204, "{body}");

    let (status, _) = a.get_as_sender(&acme, "messages").await;
    assert_eq!(status, 401, "refused at once by the node that revoked it");
    // Well within the ten seconds a node may keep a lookup without hearing of a change.
    herald_testkit::eventually(
        "the other node to refuse the revoked token",
        std::time::Duration::from_secs(5),
        || async { (b.get_as_sender(&acme, "messages").await.0 == 401).then_some(()) },
    )
    .await;
}

/// A node killed mid-delivery, with leases far longer than the test: another
/// node gives its mail back once its heartbeat is stale and delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_mail_is_taken_over_once_its_heartbeat_is_stale() {
    use herald_testsmtp::{Action, Command, Rule};
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let smtp = TestSmtpServer::start().await;
    // Every DATA goes unanswered, so the messages stay `sending` until the node dies.
    smtp.script(Rule::new(Command::Data, Action::Stall));
    let args = [
        "--lease",
        "10m",
        "--smtp-timeout",
        "5m",
        "--node-stale-after",
        "1s",
    ];
    let mut victim = node(&db, "victim", &args).await;
    let app = victim.app();
    let acme = app.tenant_sending_to("acme", smtp.port()).await;
    let ids = submit_until_each_reaches_data(&app, &acme, &smtp, 3).await;
    let client = db.client().await;
    let held =
        "SELECT count(*) FROM recipients WHERE status = 'sending' AND lease_owner = 'victim'";
    let held = count(&client, held).await;
    assert_eq!(held, 3);
    let mut lease_ends = Vec::new();
    for id in &ids {
        let message = app.message(&acme, id).await;
        lease_ends.push(ms(&message["recipients"][0]["next_attempt_at"]));
    }

    let survivor = node(&db, "survivor", &args).await;
    victim.child.start_kill().unwrap();
    victim.child.wait().await.unwrap();
    smtp.clear_script();
    let last_beat: i64 = client
        .query_one("SELECT heartbeat_at FROM nodes WHERE name = 'victim'", &[])
        .await
        .unwrap()
        .get(0);

    let app = survivor.app();
    smtp.wait_for_messages(ids.len(), DEADLINE).await;
    for (id, lease_end) in ids.iter().zip(lease_ends) {
        let message = app.wait_for_status(&acme, id, "sent").await;
        let attempts = attempts_of(&message);
        assert_eq!(attempts.len(), 1, "{message}");
        assert_eq!(attempts[0]["node"], "survivor", "{message}");
        let at = ms(&attempts[0]["at"]);
        assert!(at < lease_end, "taken over while the lease held: {message}");
        assert!(
            at >= last_beat + 1_000,
            "taken over only once the heartbeat was stale: {message}"
        );
    }
    assert_eq!(smtp.messages().len(), ids.len(), "each delivered once");
    let (_, nodes) = app.get("/v1/nodes", OPERATOR).await;
    let victim = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "victim")
        .unwrap()
        .clone();
    assert_eq!(victim["alive"], false, "{nodes}");
    assert_eq!(victim["incarnation"], serde_json::Value::Null, "{nodes}");
}

/// Two processes under one node name would each give back the other's leases
/// when they start: the first one sees the second's incarnation in its record
/// and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_under_a_node_name_is_reported() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let first = node(&db, "twin", &[]).await;
    let second = node(&db, "twin", &[]).await;
    eventually("a node to report the other under its name", || async {
        let said = |n: &NodeProcess| {
            n.output
                .lock()
                .unwrap()
                .contains("another herald runs under this node name")
        };
        (said(&first) || said(&second)).then_some(())
    })
    .await;
}

/// A node whose LISTEN connection the server ends logs why, in the server's
/// words (the driver's display of the error alone is "db error"), and
/// listens again on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_listen_connection_is_logged_in_the_servers_words_and_reopened() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let n = node(&db, "listener", &[]).await;
    let admin = db.client().await;
    let listener = || async {
        let rows = admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN %'",
                &[&db.name()],
            )
            .await
            .unwrap();
        rows.first().map(|r| r.get::<_, i32>(0))
    };
    let first = eventually("the node's LISTEN connection", listener).await;
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&first])
        .await
        .unwrap();
    let line = eventually("the warning about the LISTEN connection", || async {
        n.lines_with("the LISTEN connection failed").pop()
    })
    .await;
    assert!(
        line.contains("terminating connection due to administrator command"),
        "{line}"
    );
    eventually("a new LISTEN connection", || async {
        listener().await.filter(|pid| *pid != first)
    })
    .await;
}

/// A pooled database connection the server ends is logged in the server's
/// words, and the node goes on serving on new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_server_ends_is_logged_in_its_words() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let n = node(&db, "pooled", &[]).await;
    let app = n.app();
    let acme = app.tenant("acme").await;
    let admin = db.client().await;
    // Every connection of the node but its LISTEN one.
    let ended: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid() AND query NOT LIKE 'LISTEN %'",
            &[&db.name()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ended > 0, "the node had pooled connections");
    // One line for each connection ended.
    let lines = eventually("a warning for each pooled connection", || async {
        let lines = n.lines_with("a database connection of the pool failed");
        (lines.len() as i64 == ended).then_some(lines)
    })
    .await;
    for line in &lines {
        assert!(
            line.contains("terminating connection due to administrator command"),
            "{line}"
        );
    }
    assert!(n.lines_with("db error").is_empty());
    // The node goes on: a submission is stored through new connections.
    let (status, body) = app
        .post(
            &tenant_path(&acme, "messages"),
            &acme.sender,
            json!({"to": ["ops@acme.example"], "subject": "after", "text": "x"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}
