//! The administrator's flows: settings that take effect within the staleness
//! bound or at once on refresh, test messages with a step-by-step diagnosis,
//! `herald smtp-check`, the sender policy, presets and nodes.

use std::time::Duration;

use herald_testsmtp::TestSmtpServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Creates a provider through a plain server on `port` and returns its id.
async fn provider(app: &TestApp, tenant: &TestTenant, name: &str, port: u16) -> String {
    let server = app
        .create_as_admin(
            tenant,
            "smtp-servers",
            json!({"name": name, "host": "127.0.0.1", "port": port, "security": "none"}),
        )
        .await;
    let body = json!({"name": name, "smtp_server_id": server["id"], "from_address": "alerts@acme.example",
                      "fallback_recipient": "ops@acme.example"});
    let provider = app.create_as_admin(tenant, "providers", body).await;
    provider["id"].as_str().unwrap().to_owned()
}

/// Submits a message with no recipient, for the provider's fallback
/// recipient, and waits until it is sent; the message.
async fn sent_to_fallback(app: &TestApp, tenant: &TestTenant, subject: &str) -> Value {
    let id = app
        .submit(tenant, json!({"subject": subject, "text": "x"}))
        .await;
    app.wait_for_status(tenant, &id, "sent").await
}

async fn activate(app: &TestApp, tenant: &TestTenant, provider: &str) -> Value {
    app.activate_provider(tenant, &json!(provider)).await
}

#[tokio::test]
async fn a_provider_change_waits_for_the_staleness_bound_or_a_refresh() {
    let a = TestSmtpServer::start().await;
    let b = TestSmtpServer::start().await;
    // A bound far longer than the test: only the refresh can make B effective.
    let app = spawn_app_with(|s| s.provider_staleness = Duration::from_secs(3600)).await;
    let acme = app.tenant("acme").await;
    let provider_a = provider(&app, &acme, "a", a.port()).await;
    let provider_b = provider(&app, &acme, "b", b.port()).await;
    activate(&app, &acme, &provider_a).await;
    app.refresh(&acme).await;

    let sent = sent_to_fallback(&app, &acme, "one").await;
    let attempt = first_attempt_of(&sent);
    assert_eq!(attempt["provider_id"], provider_a.as_str());
    let version_a = attempt["config_version"]
        .as_i64()
        .expect("a configuration version");

    // Switch to B: the answer says it is pending, and mail still goes to A.
    let props = activate(&app, &acme, &provider_b).await;
    assert_eq!(props["notification_provider_id"], provider_b.as_str());
    assert_eq!(
        props["effective"]["provider_id"],
        provider_a.as_str(),
        "{props}"
    );
    assert_eq!(
        props["pending"]["provider_id"],
        provider_b.as_str(),
        "{props}"
    );
    assert!(props["pending"]["takes_effect_by"].is_string());
    let sent = sent_to_fallback(&app, &acme, "two").await;
    assert_eq!(
        sent["recipients"][0]["attempts"][0]["provider_id"],
        provider_a.as_str()
    );
    assert_eq!(a.messages().len(), 2);
    assert!(b.messages().is_empty());

    // Refresh: B at once, and the properties show nothing pending.
    let (status, props) = app
        .post_as_admin(&acme, "properties/refresh", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{props}");
    assert_eq!(
        props["effective"]["provider_id"],
        provider_b.as_str(),
        "{props}"
    );
    assert!(props["pending"].is_null());
    let sent = sent_to_fallback(&app, &acme, "three").await;
    let attempt = first_attempt_of(&sent);
    assert_eq!(attempt["provider_id"], provider_b.as_str());
    assert!(attempt["config_version"].as_i64().unwrap() > 0);
    assert_eq!(b.messages().len(), 1);
    let _ = version_a;
}

#[tokio::test]
async fn a_changed_provider_shows_a_new_configuration_version() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_with_acme().await;
    let id = provider(&app, &acme, "main", smtp.port()).await;
    activate(&app, &acme, &id).await;
    app.refresh(&acme).await;
    let v1 = sent_to_fallback(&app, &acme, "one").await["recipients"][0]["attempts"][0]["config_version"].clone();

    let (status, _) = app
        .patch_as_admin(
            &acme,
            &format!("providers/{id}"),
            json!({"from_name": "Renamed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.refresh(&acme).await;
    let v2 = sent_to_fallback(&app, &acme, "two").await["recipients"][0]["attempts"][0]["config_version"].clone();
    assert!(
        v2.as_i64().unwrap() > v1.as_i64().unwrap(),
        "{v1} then {v2}"
    );
}

/// Waits for the test message and returns the diagnosis of its attempt.
async fn diagnosis(app: &TestApp, tenant: &TestTenant, message_id: &str) -> (Value, Vec<Value>) {
    let message = app.wait_for_attempts(tenant, message_id, 1).await;
    let attempt = message["recipients"][0]["attempts"][0].clone();
    let steps = attempt["diagnosis"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no diagnosis: {message}"));
    (attempt, steps)
}

fn step<'a>(steps: &'a [Value], name: &str) -> &'a Value {
    steps
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no {name} step: {steps:?}"))
}

/// What the step named `name` reports.
fn detail<'a>(steps: &'a [Value], name: &str) -> &'a str {
    step(steps, name)["detail"].as_str().unwrap()
}

#[tokio::test]
async fn a_test_message_reports_every_step_in_the_servers_words() {
    let (tls, smtp) = starttls_server_with_auth("herald@acme.example", "right-pw").await;
    let app = spawn_app().await;
    let entry = json!({"name": "mx", "host": "127.0.0.1", "port": smtp.port(), "security": "starttls",
                       "tls_ca_pem": tls.ca_pem(), "requires_auth": true});
    let acme = app
        .configured_tenant("acme", entry, Some(account_with("right-pw")))
        .await;

    let message_id = app.send_test_message(&acme, json!({})).await;
    let (attempt, steps) = diagnosis(&app, &acme, &message_id).await;
    assert_eq!(attempt["outcome"], "sent", "{attempt}");
    assert!(detail(&steps, "dns").contains("127.0.0.1"));
    assert!(detail(&steps, "connect").contains(&smtp.port().to_string()));
    let tls_step = detail(&steps, "tls").to_owned();
    assert!(
        tls_step.contains("TLSv1.")
            && tls_step.contains("subject")
            && tls_step.contains("valid until"),
        "{tls_step}"
    );
    assert!(detail(&steps, "ehlo").contains("STARTTLS"));
    assert!(
        steps
            .iter()
            .any(|s| s["step"] == "auth" && s["detail"].as_str().unwrap().starts_with("235")),
        "{steps:?}"
    );
    assert!(detail(&steps, "mail").starts_with("250"));
    assert!(detail(&steps, "rcpt").starts_with("250"));
    assert!(
        steps
            .iter()
            .any(|s| s["step"] == "data" && s["detail"].as_str().unwrap().starts_with("354"))
    );
    assert!(steps.iter().all(|s| s["elapsed_ms"].is_u64()));
    let received = smtp.wait_for_messages(1, DEADLINE).await;
    assert_eq!(received[0].rcpt_to, vec!["ops@acme.example".to_owned()]);
    assert!(!attempt.to_string().contains("right-pw"));
}

#[tokio::test]
async fn a_test_message_with_a_wrong_password_names_the_failing_step() {
    let smtp = clear_auth_server("right-pw").await;
    let app = spawn_app().await;
    let acme = app.clear_auth_tenant(&smtp, true, "wrong-pw-42").await;
    let message_id = app
        .send_test_message(&acme, json!({"to": "someone@acme.example"}))
        .await;
    let (attempt, steps) = diagnosis(&app, &acme, &message_id).await;
    // A test message makes one attempt: its failure is final.
    assert_eq!(attempt["outcome"], "failed");
    let failed: Vec<&Value> = steps.iter().filter(|s| s["ok"] == false).collect();
    assert_eq!(failed.len(), 1, "{steps:?}");
    assert_eq!(failed[0]["step"], "auth");
    assert!(
        failed[0]["detail"].as_str().unwrap().contains("535 5.7.8"),
        "{failed:?}"
    );
    // AUTH in clear is allowed here, so a warning step comes before the mechanisms.
    assert!(
        steps.iter().any(|s| s["step"] == "auth"
            && s["detail"]
                .as_str()
                .unwrap()
                .contains("offered: PLAIN LOGIN XOAUTH2")),
        "{steps:?}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s["step"] == "auth"
                && s["detail"].as_str().unwrap().contains("travels in clear")),
        "{steps:?}"
    );
    assert!(!steps.iter().any(|s| s["step"] == "mail"));
    let everything = app.message(&acme, &message_id).await.to_string();
    assert!(!everything.contains("wrong-pw-42"));
}

#[tokio::test]
async fn a_test_message_with_no_worker_alive_answers_at_once() {
    let app = spawn_app_with(|s| s.worker = false).await;
    let acme = app.tenant("acme").await;
    let id = provider(&app, &acme, "main", 25).await;
    let (status, problem) = app.test_provider(&acme, &id, json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(problem["type"], "urn:herald:problem:no-worker-alive");
    assert_eq!(app.message_count(&acme).await, 0, "nothing was queued");
}

#[tokio::test]
async fn smtp_check_prints_the_steps_and_fails_with_a_non_zero_exit() {
    let (tls, smtp) = starttls_server_with_auth("herald@acme.example", "right-pw").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, tls.ca_pem()).unwrap();
    // The test SMTP server runs on this test's runtime, so the child is awaited, not waited for.
    let check = |password: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args([
                "smtp-check",
                "--host",
                "127.0.0.1",
                "--port",
                &smtp.port().to_string(),
                "--security",
                "starttls",
                // Like the node, the check reaches loopback only when allowed.
                "--egress-allow",
                "127.0.0.0/8",
            ])
            .args([
                "--user",
                "herald@acme.example",
                "--from",
                "alerts@acme.example",
                "--to",
                "ops@acme.example",
            ])
            .arg("--tls-ca-file")
            .arg(&ca)
            .env("HERALD_SMTP_PASSWORD", password)
            .env("HERALD_LOG", "warn")
            .output()
    };
    let good = check("right-pw").await.unwrap();
    let out = String::from_utf8_lossy(&good.stdout).into_owned();
    assert!(
        good.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&good.stderr)
    );
    for name in [
        "dns", "connect", "greeting", "ehlo", "starttls", "tls", "auth", "mail", "rcpt",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with("ok") && l.contains(name)),
            "no {name} step:\n{out}"
        );
    }
    assert!(!out.contains("right-pw"));

    let bad = check("wrong-pw").await.unwrap();
    let out = String::from_utf8_lossy(&bad.stdout).into_owned();
    assert!(!bad.status.success(), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("auth") && l.contains("535")),
        "{out}"
    );
    assert!(!out.contains("wrong-pw"));
    assert!(smtp.messages().is_empty(), "smtp-check sends no message");
}

/// Reply-To takes a display name like To and Cc, on the message and on the
/// provider; the message's own wins.
#[tokio::test]
async fn reply_to_takes_a_display_name() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_sending_to(&smtp).await;
    let id = app.first_provider_id(&acme).await;
    let (status, provider) = app
        .patch_as_admin(
            &acme,
            &format!("providers/{id}"),
            json!({"reply_to": "Acme Störungsdienst <support@acme.example>"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{provider}");
    assert_eq!(
        provider["reply_to"],
        "\"Acme Störungsdienst\" <support@acme.example>"
    );
    app.refresh(&acme).await;

    let own = app
        .submit(
            &acme,
            json!({"to": ["a@acme.example"], "subject": "own", "text": "x",
                   "reply_to": "Support Team <team@acme.example>"}),
        )
        .await;
    app.wait_for_status(&acme, &own, "sent").await;
    let providers_own = app.submit_to(&acme, "a@acme.example", "provider's").await;
    app.wait_for_status(&acme, &providers_own, "sent").await;
    let received = smtp.wait_for_messages(2, DEADLINE).await;
    let reply_to = |subject: &str| {
        received
            .iter()
            .find(|m| m.header("Subject").as_deref() == Some(subject))
            .and_then(|m| m.header("Reply-To"))
    };
    assert_eq!(
        reply_to("own").as_deref(),
        Some("Support Team <team@acme.example>")
    );
    assert_eq!(
        reply_to("provider's").as_deref(),
        Some("Acme =?utf-8?q?St=C3=B6rungsdienst?= <support@acme.example>")
    );

    let (status, body) = app
        .post_as_sender(
            &acme,
            "messages",
            json!({"to": ["a@acme.example"], "subject": "p", "text": "x",
                   "reply_to": "Support Team <nobody>"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "reply_to");
}

/// Mail carries Auto-Submitted: auto-generated (RFC 3834) unless the
/// submitter set the header, whose value is then the only one.
#[tokio::test]
async fn mail_is_marked_auto_submitted_unless_the_submitter_says_otherwise() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_sending_to(&smtp).await;
    for (subject, headers) in [
        ("default", json!({})),
        ("not automatic", json!({"Auto-Submitted": "no"})),
        ("replied", json!({"auto-submitted": "auto-replied"})),
    ] {
        let id = app
            .submit(
                &acme,
                json!({"to": ["a@acme.example"], "subject": subject, "text": "x", "headers": headers}),
            )
            .await;
        app.wait_for_status(&acme, &id, "sent").await;
    }
    let received = smtp.wait_for_messages(3, DEADLINE).await;
    for (subject, expected) in [
        ("default", "Auto-Submitted: auto-generated"),
        ("not automatic", "Auto-Submitted: no"),
        ("replied", "auto-submitted: auto-replied"),
    ] {
        let m = received
            .iter()
            .find(|m| m.header("Subject").as_deref() == Some(subject))
            .unwrap();
        let head = String::from_utf8_lossy(&m.data);
        let fields: Vec<&str> = head
            .split("\r\n\r\n")
            .next()
            .unwrap()
            .split("\r\n")
            .filter(|l| l.to_ascii_lowercase().starts_with("auto-submitted:"))
            .collect();
        assert_eq!(fields, [expected], "{subject}");
    }
}

#[tokio::test]
async fn sender_policies_shape_from_sender_and_reply_to() {
    for (policy, expected_from, expected_sender, expected_reply_to) in [
        (
            "on_behalf",
            "Mia Member <mia@acme.example>",
            Some("Acme Alerts <alerts@acme.example>"),
            None,
        ),
        (
            "fixed",
            "Acme Alerts <alerts@acme.example>",
            None,
            Some("Mia Member <mia@acme.example>"),
        ),
    ] {
        let smtp = TestSmtpServer::start().await;
        let (app, acme) = app_sending_to(&smtp).await;
        let id = app.first_provider_id(&acme).await;
        let (status, _) = app
            .patch_as_admin(
                &acme,
                &format!("providers/{id}"),
                json!({"sender_policy": policy}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        app.refresh(&acme).await;
        app.create_as_admin(
            &acme,
            "persons",
            json!({"name": "Mia Member", "email": "mia@acme.example"}),
        )
        .await;

        let message = app.submit(&acme, json!({"to": ["a@acme.example"], "subject": "p", "text": "x", "on_behalf_of": "mia@acme.example"})).await;
        let sent = app.wait_for_status(&acme, &message, "sent").await;
        let received = smtp.wait_for_messages(1, DEADLINE).await;
        let m = &received[0];
        assert_eq!(m.header("From").as_deref(), Some(expected_from), "{policy}");
        assert_eq!(m.header("Sender").as_deref(), expected_sender, "{policy}");
        assert_eq!(
            m.header("Reply-To").as_deref(),
            expected_reply_to,
            "{policy}"
        );
        assert_eq!(
            m.mail_from, "alerts@acme.example",
            "the envelope stays the provider's"
        );
        let applied = sent["recipients"][0]["attempts"][0]["sender_policy"]
            .as_str()
            .unwrap();
        assert!(applied.starts_with(policy), "{policy}: {applied}");
        assert_eq!(sent["on_behalf_of"]["email"], "mia@acme.example");

        // A stranger is not a person of the tenant.
        let request = json!({"to": ["a@acme.example"], "subject": "p", "text": "x", "on_behalf_of": "stranger@else.example"});
        let (status, body) = app.post_as_sender(&acme, "messages", request).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["errors"][0]["field"], "on_behalf_of");
    }
}

#[tokio::test]
async fn presets_cover_the_common_setups_and_nodes_report_heartbeats() {
    let (app, acme) = app_with_acme().await;
    let (status, presets) = app.get("/v1/presets", &acme.sender).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = presets
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    for id in [
        "exchange-account",
        "gateway-relay",
        "m365-connector",
        "m365-submission",
        "google-relay-ip",
        "google-relay-auth",
    ] {
        assert!(ids.contains(&id), "{ids:?}");
    }
    assert!(presets.as_array().unwrap().iter().all(|p| {
        p["mail_service_setup"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    }));
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("presets")
        .output()
        .unwrap();
    let printed: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(printed, presets);

    let (status, nodes) = app.get("/v1/nodes", OPERATOR).await;
    assert_eq!(status, StatusCode::OK);
    let node = &nodes["nodes"][0];
    assert_eq!(node["name"], "test-node");
    assert_eq!(node["alive"], true);
    assert_eq!(node["roles"], json!(["api", "worker"]));
    assert_eq!(
        app.get("/v1/nodes", &acme.admin).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn smtp_check_diagnoses_a_stored_server_with_its_account() {
    let smtp = clear_auth_server("stored-pw").await;
    let (app, acme) = app_with_acme().await;
    let entry = clear_auth_entry(smtp.port(), true);
    let server = app
        .configure(&acme, entry, Some(account_with("stored-pw")))
        .await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "smtp-check",
            "--tenant",
            "acme",
            "--server",
            server["id"].as_str().unwrap(),
        ])
        .arg("--data-dir")
        .arg(app.dir.path())
        .env("HERALD_EGRESS_ALLOW", "127.0.0.0/8")
        .env("HERALD_LOG", "warn")
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok") && l.contains("auth") && l.contains("235")),
        "{out}"
    );
    assert!(!out.contains("stored-pw"));
}
