//! Pools, isolation between providers, leases with fencing, and the maximum age.

use std::sync::atomic::Ordering;
use std::time::Duration;

use herald_testsmtp::{Action, Command, Rule, TestSmtpServer};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_pool_reuses_connections_within_its_limit() {
    let smtp = TestSmtpServer::start().await;
    let app = spawn_app().await;
    let entry = json!({"name": "mx", "host": "127.0.0.1", "port": smtp.port(), "security": "none", "max_connections": 2});
    let acme = app.configured_tenant("acme", entry, None).await;

    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            app.submit_to(&acme, &format!("u{i}@acme.example"), "pooled")
                .await,
        );
    }
    smtp.wait_for_messages(20, DEADLINE).await;
    for id in &ids {
        app.wait_for_status(&acme, id, "sent").await;
    }
    assert!(
        smtp.connections() <= 2,
        "{} connections for a pool of 2",
        smtp.connections()
    );
}

#[tokio::test]
async fn a_connection_is_replaced_after_its_message_cap() {
    let smtp = TestSmtpServer::start().await;
    let app = spawn_app().await;
    let entry = json!({
        "name": "mx", "host": "127.0.0.1", "port": smtp.port(), "security": "none",
        "max_connections": 1, "max_messages_per_connection": 2
    });
    let acme = app.configured_tenant("acme", entry, None).await;
    for i in 0..6 {
        let id = app
            .submit_to(&acme, &format!("u{i}@acme.example"), "capped")
            .await;
        app.wait_for_status(&acme, &id, "sent").await;
    }
    assert_eq!(smtp.connections(), 3, "six messages, two per connection");
}

#[tokio::test]
async fn a_stalled_provider_does_not_delay_another_tenants_mail() {
    let stalled = TestSmtpServer::start().await;
    stalled.script(Rule::new(Command::Connect, Action::Stall));
    let healthy = TestSmtpServer::start().await;
    // A small node: without isolation the stalled provider's mail would take every slot.
    let app = spawn_app_with(|s| {
        s.concurrency = 2;
        s.timeouts.command = Duration::from_secs(60);
        s.timeouts.connect = Duration::from_secs(60);
    })
    .await;
    let slow = app.tenant("slow").await;
    let fast = app.tenant("fast").await;
    let entry = |port: u16| json!({"name": "mx", "host": "127.0.0.1", "port": port, "security": "none", "max_connections": 1});
    app.configure(&slow, entry(stalled.port()), None).await;
    app.configure(&fast, entry(healthy.port()), None).await;

    let mut stuck = Vec::new();
    for i in 0..5 {
        stuck.push(
            app.submit_to(&slow, &format!("s{i}@slow.example"), "stuck")
                .await,
        );
    }
    eventually("the stalled server to be connected", || async {
        (stalled.connections() >= 1).then_some(())
    })
    .await;
    let id = app.submit_to(&fast, "ops@fast.example", "through").await;

    app.wait_for_status(&fast, &id, "sent").await;
    assert_eq!(healthy.messages().len(), 1);
    for id in &stuck {
        let status = app.message(&slow, id).await["status"].clone();
        assert!(status == "queued" || status == "sending", "{status}");
    }
    assert_eq!(
        stalled.connections(),
        1,
        "the stalled provider's pool holds one connection"
    );
}

#[tokio::test]
async fn an_expired_lease_is_claimed_again_and_the_stale_outcome_is_refused() {
    let smtp = TestSmtpServer::start().await;
    // The first session stalls after the message content: its worker holds
    // the recipient past the lease and only later learns of the failure.
    smtp.script(Rule::new(Command::DataEnd, Action::Stall).times(1));
    let app = spawn_app_with(|s| {
        s.lease = Duration::from_millis(1500);
        s.timeouts.command = Duration::from_secs(2);
        s.timeouts.data = Duration::from_secs(4);
    })
    .await;
    let entry = json!({"name": "mx", "host": "127.0.0.1", "port": smtp.port(), "security": "none"});
    let acme = app.configured_tenant("acme", entry, None).await;

    let id = app.submit_to(&acme, "a@acme.example", "Fenced").await;
    let message = app.wait_for_status(&acme, &id, "sent").await;
    assert_eq!(
        smtp.messages().len(),
        1,
        "delivered once, by the second claim"
    );

    let stats = app.node.as_ref().unwrap().worker_stats.clone();
    eventually("the stale worker's outcome to be refused", || async {
        (stats.refused.load(Ordering::Relaxed) >= 1).then_some(())
    })
    .await;
    let after = app.message(&acme, &id).await;
    assert_eq!(after["status"], "sent");
    assert_eq!(
        after["recipients"][0]["attempts"], message["recipients"][0]["attempts"],
        "the refused outcome left no attempt"
    );
    assert_eq!(attempts_of(&after).len(), 1);
}

#[tokio::test]
async fn mail_still_deferred_at_the_maximum_age_fails_once_with_the_reason() {
    let smtp = TestSmtpServer::start().await;
    smtp.script(reply(Command::Rcpt, 452, "4.2.2 mailbox full"));
    let app = spawn_app_with(|s| s.retry.max_age = Duration::from_secs(1)).await;
    let entry = json!({"name": "mx", "host": "127.0.0.1", "port": smtp.port(), "security": "none"});
    let acme = app.configured_tenant("acme", entry, None).await;

    let id = app.submit_to(&acme, "a@acme.example", "Old").await;
    let message = app.wait_for_status(&acme, &id, "failed").await;
    let attempts = attempts_of(&message);
    let last = attempts.last().unwrap();
    assert_eq!(last["outcome"], "failed");
    assert_eq!(last["code"], 452);
    assert!(
        last["response"].as_str().unwrap().starts_with("expired"),
        "{last}"
    );
    assert!(
        last["response"]
            .as_str()
            .unwrap()
            .contains("452 4.2.2 mailbox full"),
        "{last}"
    );
    assert_eq!(
        attempts.iter().filter(|a| a["outcome"] == "failed").count(),
        1
    );
}

#[tokio::test]
async fn changing_the_host_clears_the_accounts_secret() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_with_acme().await;
    let entry = json!({"name": "mx", "host": "127.0.0.1", "port": smtp.port(), "security": "none", "requires_auth": true});
    let account = account_with("pw-before-move");
    let server = app.configure(&acme, entry, Some(account)).await;
    let server_id = server["id"].as_str().unwrap();
    let accounts = format!("/v1/tenants/acme/smtp-servers/{server_id}/accounts");
    assert_eq!(
        app.get(&accounts, &acme.admin).await.1[0]["secret_set"],
        true
    );

    let (status, _) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/tenants/acme/smtp-servers/{server_id}"),
            Some(&acme.admin),
            Some(json!({"host": "mail.elsewhere.example"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        app.get(&accounts, &acme.admin).await.1[0]["secret_set"],
        false
    );
}

#[tokio::test]
async fn a_rate_limit_spaces_messages_and_drops_none() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_with_acme().await;
    // 120 a minute: one start every 500 ms.
    let entry = json!({"name": "mx", "host": "127.0.0.1", "port": smtp.port(), "security": "none", "rate_limit_per_minute": 120});
    app.configure(&acme, entry, None).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            app.submit_to(&acme, &format!("u{i}@acme.example"), "paced")
                .await,
        );
    }
    let mut starts = Vec::new();
    for id in &ids {
        let message = app.wait_for_status(&acme, id, "sent").await;
        let attempt = first_attempt_of(&message);
        let at = ms(&attempt["at"]);
        starts.push(at - attempt["duration_ms"].as_i64().unwrap());
    }
    starts.sort();
    // Attempt times are rounded to milliseconds; allow that rounding and no more.
    assert!(
        starts[2] - starts[0] >= 1000 - 5,
        "three messages started within {} ms",
        starts[2] - starts[0]
    );
    assert_eq!(smtp.messages().len(), 3);
}

#[tokio::test]
async fn shutdown_finishes_the_deliveries_in_flight() {
    let smtp = TestSmtpServer::start().await;
    smtp.script(Rule::new(Command::Connect, Action::Stall));
    let mut app = spawn_app_with(|s| {
        s.timeouts.connect = Duration::from_secs(1);
        s.timeouts.command = Duration::from_secs(1);
        // The failed attempt's retry falls due long after the restart below,
        // however slow the machine: the restarted node must not claim it.
        s.retry.base = Duration::from_secs(3600);
        s.retry.max = Duration::from_secs(3600);
    })
    .await;
    let entry = json!({"name": "mx", "host": "127.0.0.1", "port": smtp.port(), "security": "none"});
    let acme = app.configured_tenant("acme", entry, None).await;
    let id = app.submit_to(&acme, "a@acme.example", "in flight").await;
    eventually("the worker to connect", || async {
        (smtp.connections() >= 1).then_some(())
    })
    .await;

    let base = app.base.clone();
    app.node.take().unwrap().shutdown().await;
    // The attempt that was in flight was recorded before the node stopped.
    let restarted = {
        let dir = std::mem::replace(&mut app.dir, tempfile::tempdir().unwrap());
        let mut settings = test_settings(&dir);
        settings.poll = Duration::from_secs(3600);
        settings.retry.base = Duration::from_secs(3600);
        let node = herald::node::start(settings).await.unwrap();
        TestApp {
            base: format!("http://{}", node.http_addr),
            client: reqwest::Client::new(),
            node: Some(node),
            dir,
        }
    };
    assert_ne!(restarted.base, base);
    let message = restarted.message(&acme, &id).await;
    let attempts = attempts_of(&message);
    assert_eq!(attempts.len(), 1, "{message}");
    assert_eq!(attempts[0]["step"], "greeting");
    assert_eq!(message["status"], "deferred");
}

/// A database that refuses writes (as with a full disk) makes submissions
/// answer 503 and the node not ready; once it takes writes again, both recover.
#[tokio::test]
async fn readiness_follows_a_database_that_refuses_writes() {
    let (app, acme) = app_with_acme().await;
    let ready = || async {
        let response = app
            .client
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .unwrap();
        response.status()
    };
    assert_eq!(ready().await, 200);

    // Another connection holds SQLite's write lock: every write of the node
    // fails once its busy timeout has passed, as writes to a full disk fail.
    let lock = rusqlite::Connection::open(app.dir.path().join("herald.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let body = json!({"to": ["a@acme.example"], "subject": "refused", "text": "x"});
    let (status, problem) = app.post_as_sender(&acme, "messages", body.clone()).await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(ready().await, 503, "not ready while writes are refused");

    lock.execute_batch("ROLLBACK").unwrap();
    let (status, answer) = app.post_as_sender(&acme, "messages", body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(ready().await, 200);
}

/// Past the node's limit of queued recipients per tenant, single and batch
/// submissions answer 429 with Retry-After and a problem naming the limit;
/// what was accepted is delivered, and then the tenant may submit again.
#[tokio::test]
async fn submissions_past_the_queue_limit_answer_429_and_accepted_mail_is_delivered() {
    let smtp = TestSmtpServer::start().await;
    // Every recipient is deferred until the script is cleared: they stay queued.
    smtp.script(reply(Command::Rcpt, 451, "4.3.0 try later"));
    let app = spawn_app_with(|s| s.limits.max_queued_per_tenant = 2).await;
    let acme = app.tenant("acme").await;
    let other = app.tenant("other").await;
    let entry = json!({"name": "mx", "host": "127.0.0.1", "port": smtp.port(), "security": "none"});
    app.configure(&acme, entry, None).await;
    let mail = |to: &str| json!({"to": [to], "subject": "limited", "text": "x"});
    let accepted = [
        app.submit(&acme, mail("a@acme.example")).await,
        app.submit(&acme, mail("b@acme.example")).await,
    ];

    let path = format!("{}/v1/tenants/acme/messages", app.base);
    for (url, body) in [
        (path.clone(), mail("c@acme.example")),
        (
            format!("{path}/batch"),
            json!({"messages": [mail("c@acme.example")]}),
        ),
    ] {
        let response = app
            .client
            .post(&url)
            .bearer_auth(&acme.sender)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 429, "{url}");
        assert_eq!(response.headers()["retry-after"], "30");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(problem["type"], "urn:herald:problem:queue-full");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("limit of 2 queued recipients"), "{detail}");
    }
    // Another tenant's queue is its own.
    app.submit(&other, mail("a@other.example")).await;

    smtp.clear_script();
    for id in &accepted {
        app.wait_for_status(&acme, id, "sent").await;
    }
    let id = app.submit(&acme, mail("c@acme.example")).await;
    app.wait_for_status(&acme, &id, "sent").await;
    let mut delivered: Vec<String> = smtp
        .messages()
        .iter()
        .flat_map(|m| m.rcpt_to.clone())
        .collect();
    delivered.sort();
    assert_eq!(
        delivered,
        ["a@acme.example", "b@acme.example", "c@acme.example"]
    );
}

/// Mail the node stores goes straight to its own worker, claimed in its
/// submission's transaction, while the worker has places for it: here 4
/// places, each tenant within three quarters of them, so a batch of ten
/// hands up to three over and queues the rest, which the worker claims.
/// Every message is delivered once either way.
#[tokio::test]
async fn the_worker_takes_mail_as_it_is_stored_and_claims_what_it_had_no_room_for() {
    let smtp = TestSmtpServer::start().await;
    let app = spawn_app_with(|s| s.concurrency = 4).await;
    let entry = json!({"name": "mx", "host": "127.0.0.1", "port": smtp.port(), "security": "none"});
    let acme = app.configured_tenant("acme", entry, None).await;
    let stats = app.node.as_ref().unwrap().worker_stats.clone();

    let single = app.submit_to(&acme, "one@acme.example", "Handed").await;
    app.wait_for_status(&acme, &single, "sent").await;
    assert_eq!(stats.handed.load(Ordering::Relaxed), 1);
    assert_eq!(stats.claimed.load(Ordering::Relaxed), 0, "no claim needed");

    let batch: Vec<_> = (0..10)
        .map(|i| json!({"to": [format!("u{i}@acme.example")], "subject": "batch", "text": "x"}))
        .collect();
    let (status, answer) = app.submit_batch(&acme, batch).await;
    assert_eq!(status, 200, "{answer}");
    for result in answer["results"].as_array().unwrap() {
        app.wait_for_status(&acme, result["id"].as_str().unwrap(), "sent")
            .await;
    }
    assert_eq!(smtp.messages().len(), 11, "each message once");
    // Three at most go straight over (the tenant's three quarters of four
    // places). A claim the worker has begun meanwhile (its poll) holds all
    // but a quarter of the places, so on a loaded machine as few as one
    // may; the rest are claimed, none twice.
    let handed = stats.handed.load(Ordering::Relaxed) - 1;
    let claimed = stats.claimed.load(Ordering::Relaxed);
    assert!((1..=3).contains(&handed), "{handed} handed over");
    assert_eq!(handed + claimed, 10, "{handed} handed, {claimed} claimed");
}
