//! Tenant fairness (issue 13): one tenant's backlog behind a slow server, or
//! its test messages stuck on a server that never answers, must not hold up
//! another tenant's mail on the same node.

use std::time::Duration;

use herald_testsmtp::{Action, Command, Rule, TestSmtpServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Messages tenant A has queued behind its slow server.
const BACKLOG: usize = 5_000;

/// The most submissions one batch request takes.
const BATCH: usize = 1_000;

/// Messages tenant B submits while A's backlog is queued.
const B_MESSAGES: usize = 10;

/// Of A's backlog, at least this many must still be undelivered when the last
/// of B's messages is sent: B's mail went ahead of most of A's, rather than
/// waiting its turn behind it.
const STILL_QUEUED: usize = 4_000;

/// Test messages a tenant may have unfinished at once.
const TEST_MESSAGE_LIMIT: usize = 5;

/// Whether a message's status is final: no further attempt will be made.
fn is_final(status: &Value) -> bool {
    status == "sent" || status == "failed"
}

/// Creates the tenant's server entry from `server`, a provider through it, and
/// makes that provider active; returns the provider's id.
async fn provider_through(app: &TestApp, tenant: &TestTenant, server: Value) -> String {
    app.configure(tenant, server, None).await;
    app.first_provider_id(tenant).await
}

/// A slow server holds up only its own tenant: while A's 5,000 messages drain
/// through the connections to a server that takes its time over each, B's
/// messages, submitted after all of A's, are sent before a fifth of A's are.
///
/// A's connections are enough to keep one always coming free, so A's route
/// never looks stalled to the worker: B's mail must get its turn while A's
/// is still being claimed, not only once A's has been set aside.
#[tokio::test]
async fn a_slow_tenants_backlog_does_not_hold_up_another_tenant() {
    // A's server answers every message, but only after a pause: A's backlog
    // takes far longer to drain than B's mail needs to be sent.
    let slow = TestSmtpServer::start().await;
    slow.script(Rule::new(
        Command::DataEnd,
        Action::Delay(Duration::from_millis(25)),
    ));
    let fast = TestSmtpServer::start().await;
    let (app, acme) = app_with_acme().await;
    let globex = app.tenant("globex").await;
    app.configure(
        &acme,
        json!({"name": "slow", "host": "127.0.0.1", "port": slow.port(), "security": "none",
               "max_connections": 10}),
        None,
    )
    .await;
    app.use_smtp_server(&globex, fast.port()).await;

    for first in (0..BACKLOG).step_by(BATCH) {
        let messages: Vec<Value> = (first..first + BATCH)
            .map(|i| json!({"to": [format!("user{i}@acme.example")], "subject": "backlog", "text": "x"}))
            .collect();
        let (status, answer) = app.submit_batch(&acme, messages).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["accepted"], BATCH, "{}", answer["results"][0]);
    }
    let mut ids = Vec::new();
    for i in 0..B_MESSAGES {
        ids.push(
            app.submit_to(&globex, &format!("user{i}@globex.example"), "on time")
                .await,
        );
    }

    // A's server records a message before it answers it, so its count is at
    // least what the node has sent of A's backlog.
    let delivered_of_a = || slow.messages().len();
    eventually("every message of tenant B to be sent", || async {
        let delivered = delivered_of_a();
        assert!(
            BACKLOG - delivered >= STILL_QUEUED,
            "tenant B's messages were not all sent when {delivered} of tenant A's \
             {BACKLOG} had been delivered: B waits behind A's backlog"
        );
        for id in &ids {
            if app.message(&globex, id).await["status"] != "sent" {
                return None;
            }
        }
        Some(())
    })
    .await;
    let delivered = delivered_of_a();
    assert!(
        BACKLOG - delivered >= STILL_QUEUED,
        "tenant A had {delivered} of {BACKLOG} delivered when B's last message was sent"
    );
    let received = fast.messages();
    assert_eq!(received.len(), B_MESSAGES, "B's server received each once");
}

/// Sends a test message through the provider as the tenant's administrator;
/// returns the whole response, headers included.
async fn send_test_message(
    app: &TestApp,
    tenant: &TestTenant,
    provider: &str,
) -> reqwest::Response {
    app.client
        .post(format!(
            "{}/v1/tenants/{}/providers/{provider}/test",
            app.base, tenant.slug
        ))
        .bearer_auth(&tenant.admin)
        .json(&json!({}))
        .send()
        .await
        .expect("the request reaches the node")
}

/// Sends the tenant's allowance of test messages, all accepted; returns their ids.
async fn send_allowed_test_messages(
    app: &TestApp,
    tenant: &TestTenant,
    provider: &str,
) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 1..=TEST_MESSAGE_LIMIT {
        let response = send_test_message(app, tenant, provider).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "test message {n} of {}: {body}",
            tenant.slug
        );
        ids.push(body["message_id"].as_str().unwrap().to_owned());
    }
    ids
}

/// A server that accepts connections and never answers keeps a tenant's test
/// messages unfinished; the tenant may have five such at once, the sixth is
/// refused with 429, and another tenant's mail is delivered meanwhile. The
/// limit is the tenant's own: a third tenant still has its five.
#[tokio::test]
async fn test_messages_to_a_silent_server_cannot_crowd_out_another_tenant() {
    // Never a greeting: each test message waits for it until the server
    // entry's command timeout, far longer than the test runs.
    let silent_a = TestSmtpServer::start().await;
    silent_a.script(Rule::new(Command::Connect, Action::Stall));
    let silent_c = TestSmtpServer::start().await;
    silent_c.script(Rule::new(Command::Connect, Action::Stall));
    let fast = TestSmtpServer::start().await;
    let (app, acme) = app_with_acme().await;
    let globex = app.tenant("globex").await;
    let initech = app.tenant("initech").await;
    let silent = |port: u16| {
        json!({"name": "silent", "host": "127.0.0.1", "port": port, "security": "none",
               "max_connections": 10, "command_timeout_secs": 600})
    };
    let provider_a = provider_through(&app, &acme, silent(silent_a.port())).await;
    let provider_c = provider_through(&app, &initech, silent(silent_c.port())).await;
    app.use_smtp_server(&globex, fast.port()).await;

    let tests_a = send_allowed_test_messages(&app, &acme, &provider_a).await;
    let refused = send_test_message(&app, &acme, &provider_a).await;
    assert_eq!(
        refused.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "test message {} of acme",
        TEST_MESSAGE_LIMIT + 1
    );
    let retry_after = refused
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        retry_after.parse::<u64>().is_ok_and(|s| s > 0),
        "Retry-After: {retry_after}"
    );
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(
        problem["type"], "urn:herald:problem:too-many-test-messages",
        "{problem}"
    );
    assert_eq!(
        app.message_count(&acme).await,
        TEST_MESSAGE_LIMIT,
        "the refused test message was not queued"
    );
    // Another tenant's allowance is its own.
    let tests_c = send_allowed_test_messages(&app, &initech, &provider_c).await;

    let id = app
        .submit_to(&globex, "ops@globex.example", "on time")
        .await;
    app.wait_for_status(&globex, &id, "sent").await;
    for (tenant, ids) in [(&acme, &tests_a), (&initech, &tests_c)] {
        for test in ids {
            let message = app.message(tenant, test).await;
            assert!(
                !is_final(&message["status"]),
                "{}'s test message finished before B's mail was sent: {message}",
                tenant.slug
            );
        }
    }
    assert_eq!(fast.wait_for_messages(1, DEADLINE).await.len(), 1);
}
