//! Delivery webhooks end to end: events written with outcomes, posted signed
//! to a real HTTP receiver on loopback, retried, refused by the egress
//! policy at send, kept once through a SIGKILL, and an endpoint that keeps
//! failing disabled.

use std::time::Duration;

use herald_smtp::Egress;
use herald_testkit::{Dependency, require};
use herald_testsmtp::TestSmtpServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::receiver::{Received, Receiver, Reply};

const ALL_EVENTS: [&str; 7] = [
    "message.sent",
    "message.failed",
    "message.deferred",
    "recipient.sent",
    "recipient.failed",
    "recipient.deferred",
    "test.completed",
];

/// Creates a webhook for `events` to `url`; returns its id and secret.
async fn create_webhook(
    app: &TestApp,
    tenant: &TestTenant,
    url: &str,
    events: &[&str],
) -> (String, String) {
    let body = app
        .create_as_admin(tenant, "webhooks", json!({"url": url, "events": events}))
        .await;
    (
        body["id"].as_str().unwrap().to_owned(),
        body["secret"].as_str().unwrap().to_owned(),
    )
}

/// Verifies every request with the `standardwebhooks` Python package, the
/// specification's reference implementation; `None` when it is missing.
async fn verified_by_standardwebhooks(
    dir: &std::path::Path,
    secret: &str,
    received: &[Received],
) -> Option<()> {
    let found = std::process::Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .output()
        .map_err(|e| format!("python3 cannot run: {e}"))
        .and_then(|out| {
            out.status.success().then_some(()).ok_or_else(|| {
                "the standardwebhooks Python package is not installed (pip install standardwebhooks)"
                    .to_owned()
            })
        });
    require(Dependency::Python, found)?;
    let cases: Vec<Value> = received
        .iter()
        .map(|r| json!({"id": r.id, "timestamp": r.timestamp, "signature": r.signature, "body": r.body}))
        .collect();
    let file = dir.join("webhook-requests.json");
    std::fs::write(&file, Value::Array(cases).to_string()).unwrap();
    let script = "import json, sys\n\
        from standardwebhooks.webhooks import Webhook\n\
        hook = Webhook(sys.argv[1])\n\
        for c in json.load(open(sys.argv[2])):\n\
        \x20   hook.verify(c['body'], {'webhook-id': c['id'], 'webhook-timestamp': c['timestamp'], 'webhook-signature': c['signature']})\n\
        print('verified')\n";
    let args = ["-c", script, secret, file.to_str().unwrap()];
    python3("standardwebhooks refuses a signature", args).await;
    Some(())
}

async fn deliveries(app: &TestApp, tenant: &TestTenant, webhook: &str) -> Vec<Value> {
    let (status, body) = app
        .get_as_admin(tenant, &format!("webhooks/{webhook}/deliveries"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list = body.get("deliveries").unwrap_or(&body);
    list.as_array().expect("a list of deliveries").clone()
}

#[tokio::test]
async fn a_messages_events_arrive_in_order_signed_per_the_specification() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_sending_to(&smtp).await;
    let receiver = Receiver::start().await;
    let (webhook, secret) = create_webhook(&app, &acme, &receiver.url, &ALL_EVENTS).await;

    let id = app
        .submit(
            &acme,
            json!({"to": ["a@acme.example", "b@acme.example"], "subject": "Hooked", "text": "x"}),
        )
        .await;
    let received = receiver.wait_for(3).await;
    let types: Vec<String> = received.iter().map(Received::event_type).collect();
    assert_eq!(
        types,
        ["recipient.sent", "recipient.sent", "message.sent"],
        "the message's event comes after its recipients'"
    );
    for r in &received {
        assert!(r.signed_by(&secret), "{r:?}");
        assert_eq!(r.content_type, "application/json");
        assert!(r.id.starts_with("evt_"), "{r:?}");
        assert_eq!(r.json()["data"]["message_id"], id.as_str());
        let at: i64 = r.timestamp.parse().unwrap();
        assert!((at - time::OffsetDateTime::now_utc().unix_timestamp()).abs() < 600);
    }
    let mut addresses: Vec<String> = received[..2]
        .iter()
        .map(|r| r.json()["data"]["address"].as_str().unwrap().to_owned())
        .collect();
    addresses.sort();
    assert_eq!(addresses, ["a@acme.example", "b@acme.example"]);
    assert_eq!(received[2].json()["data"]["status"], "sent");
    let mut ids: Vec<&str> = received.iter().map(|r| r.id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "each event has its own webhook-id");

    verified_by_standardwebhooks(app.dir.path(), &secret, &received).await;

    let listed = eventually("the deliveries to be recorded", || async {
        let listed = deliveries(&app, &acme, &webhook).await;
        (listed.len() == 3 && listed.iter().all(|d| d["status"] == "delivered")).then_some(listed)
    })
    .await;
    for d in &listed {
        assert_eq!(d["response_status"], 200, "{d}");
        assert_eq!(d["attempts"], 1, "{d}");
    }
    assert_eq!(smtp.messages().len(), 1);
}

#[tokio::test]
async fn an_event_is_retried_after_a_500_and_a_timeout_before_the_next_one() {
    let smtp = TestSmtpServer::start().await;
    let app = spawn_app_with(|s| {
        s.webhooks.timeout = Duration::from_millis(500);
        s.webhooks.retry_delays = vec![Duration::from_millis(100)];
    })
    .await;
    let acme = app.tenant_sending_to("acme", smtp.port()).await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500), Reply::Hang]);
    let (webhook, _) = create_webhook(
        &app,
        &acme,
        &receiver.url,
        &["recipient.sent", "message.sent"],
    )
    .await;

    app.submit_to(&acme, "a@acme.example", "Retried").await;
    let received = receiver.wait_for(4).await;
    let seen: Vec<(String, String)> = received
        .iter()
        .map(|r| (r.event_type(), r.id.clone()))
        .collect();
    assert_eq!(seen[0].0, "recipient.sent");
    assert_eq!(
        seen[0], seen[1],
        "the same event, the same webhook-id: {seen:?}"
    );
    assert_eq!(seen[0], seen[2], "{seen:?}");
    assert_eq!(
        seen[3].0, "message.sent",
        "the message's event waits for the retried one: {seen:?}"
    );
    let listed = eventually("both deliveries recorded", || async {
        let listed = deliveries(&app, &acme, &webhook).await;
        (listed.len() == 2 && listed.iter().all(|d| d["status"] == "delivered")).then_some(listed)
    })
    .await;
    let recipient = listed
        .iter()
        .find(|d| d["type"] == "recipient.sent")
        .unwrap();
    assert_eq!(recipient["attempts"], 3, "{recipient}");
    assert_eq!(recipient["response_status"], 200, "{recipient}");
    assert_eq!(
        receiver.received().len(),
        4,
        "nothing was posted twice once delivered"
    );
}

#[tokio::test]
async fn an_endpoint_the_egress_policy_forbids_is_refused_when_sending() {
    // Made while loopback was allowed, the webhook meets a node that forbids it.
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let first = herald::node::start(test_settings(&dir)).await.unwrap();
    let app = TestApp {
        base: format!("http://{}", first.http_addr),
        client: reqwest::Client::new(),
        node: None,
        dir: tempfile::tempdir().unwrap(),
    };
    // No provider: the capture mailbox takes the mail, so nothing else needs loopback.
    let acme = app.tenant("acme").await;
    let (webhook, _) = create_webhook(&app, &acme, &receiver.url, &["message.sent"]).await;
    first.shutdown().await;

    let mut settings = test_settings(&dir);
    settings.egress = Egress::new(Vec::new(), Vec::new());
    let second = herald::node::start(settings).await.unwrap();
    let app = TestApp {
        base: format!("http://{}", second.http_addr),
        client: reqwest::Client::new(),
        node: Some(second),
        dir,
    };
    let id = app.submit_to(&acme, "a@acme.example", "Captured").await;
    app.wait_for_status(&acme, &id, "sent").await;
    let refused = eventually("the refused attempt to be recorded", || async {
        let listed = deliveries(&app, &acme, &webhook).await;
        listed
            .into_iter()
            .find(|d| d["attempts"].as_u64() >= Some(1))
    })
    .await;
    let error = refused["error"].as_str().unwrap();
    assert!(error.contains("egress policy"), "{refused}");
    assert!(error.contains("loopback"), "{refused}");
    assert!(refused["response_status"].is_null(), "{refused}");
    assert_eq!(refused["status"], "pending", "retried later: {refused}");
    assert!(
        receiver.received().is_empty(),
        "nothing reached the endpoint"
    );
}

#[tokio::test]
async fn no_event_is_written_twice_when_the_node_is_killed_before_posting_it() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    // Every post hangs: the events are written and claimed, never delivered.
    receiver.answer(Reply::Hang);
    let mut node = start_process(dir.path(), &[], &[]).await;
    let app = node.app();
    let acme = app.tenant("acme").await;
    let (webhook, secret) = create_webhook(
        &app,
        &acme,
        &receiver.url,
        &["recipient.sent", "message.sent"],
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            app.submit_to(&acme, "a@acme.example", &format!("m{i}"))
                .await,
        );
    }
    for id in &ids {
        app.wait_for_status(&acme, id, "sent").await;
    }
    let posted_before = receiver.wait_for(1).await;
    node.child.start_kill().expect("SIGKILL");
    node.child.wait().await.unwrap();

    receiver.answer(Reply::Status(200));
    let restarted = start_process(dir.path(), &[], &[]).await;
    let received = eventually("every event delivered after the restart", || async {
        let received = receiver.received();
        let mut delivered: Vec<&str> = received
            .iter()
            .skip(posted_before.len())
            .map(|r| r.id.as_str())
            .collect();
        delivered.sort();
        delivered.dedup();
        (delivered.len() >= 6).then_some(received)
    })
    .await;
    for r in &received {
        assert!(r.signed_by(&secret), "{r:?}");
    }
    // What hung before the kill came again under its own webhook-id.
    let after: Vec<&str> = received[posted_before.len()..]
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    assert!(after.contains(&posted_before[0].id.as_str()));

    // Recorded before the node is stopped, so the rows below are final.
    let app = restarted.app();
    eventually("every event recorded as delivered", || async {
        let listed = deliveries(&app, &acme, &webhook).await;
        (listed.len() == 6 && listed.iter().all(|d| d["status"] == "delivered")).then_some(())
    })
    .await;
    drop(restarted);
    let db = rusqlite::Connection::open(dir.path().join("herald.db")).unwrap();
    let rows: Vec<(String, String, String)> = db
        .prepare("SELECT event_type, message_id, status FROM webhook_outbox ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 6, "one row per event: {rows:?}");
    for id in &ids {
        for kind in ["recipient.sent", "message.sent"] {
            let of_kind = rows.iter().filter(|(t, m, _)| t == kind && m == id).count();
            assert_eq!(of_kind, 1, "{kind} of {id}: {rows:?}");
        }
    }
    assert!(rows.iter().all(|(_, _, s)| s == "delivered"), "{rows:?}");
}

#[tokio::test]
async fn an_endpoint_failing_past_the_limit_is_disabled_and_audited() {
    let app = spawn_app_with(|s| {
        // Every failure is already "too long": the first one disables it.
        s.webhooks.disable_after = Duration::ZERO;
        s.webhooks.retry_delays = vec![Duration::from_millis(100)];
    })
    .await;
    let acme = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    receiver.answer(Reply::Status(503));
    let (webhook, _) = create_webhook(&app, &acme, &receiver.url, &["message.sent"]).await;
    let id = app.submit_to(&acme, "a@acme.example", "Unheard").await;
    app.wait_for_status(&acme, &id, "sent").await;

    let disabled = eventually("the webhook to be disabled", || async {
        let (_, body) = app
            .get_as_admin(&acme, &format!("webhooks/{webhook}"))
            .await;
        (body["enabled"] == false).then_some(body)
    })
    .await;
    let reason = disabled["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("failed"), "{disabled}");
    assert!(!disabled["failing_since"].is_null(), "{disabled}");
    let (status, audit) = app.get_as_admin(&acme, "audit").await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let entries = audit
        .get("entries")
        .unwrap_or(&audit)
        .as_array()
        .unwrap()
        .clone();
    let entry = entries
        .iter()
        .find(|e| e["action"] == "webhook.disable")
        .unwrap_or_else(|| panic!("no webhook.disable entry: {audit}"));
    assert_eq!(entry["object_id"], webhook.as_str());

    // Disabled, it is posted to no more; enabled again, it starts afresh.
    let before = receiver.received().len();
    let id = app
        .submit_to(&acme, "a@acme.example", "Still unheard")
        .await;
    app.wait_for_status(&acme, &id, "sent").await;
    let (status, body) = app
        .get_as_admin(&acme, &format!("webhooks/{webhook}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["enabled"], false);
    assert_eq!(receiver.received().len(), before);
    receiver.answer(Reply::Status(204));
    let (status, body) = app
        .patch_as_admin(
            &acme,
            &format!("webhooks/{webhook}"),
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["disabled_reason"].is_null(), "{body}");
    assert!(body["failing_since"].is_null(), "{body}");
    let id = app.submit_to(&acme, "a@acme.example", "Heard").await;
    let received = receiver.wait_for(before + 1).await;
    assert_eq!(received[before].json()["data"]["message_id"], id.as_str());
}
