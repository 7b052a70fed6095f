//! The webhooks API: creating a webhook shows its signing secret once, URLs
//! and events are checked against their rules and the egress policy,
//! changes, rotations and deletions, and a test event that reaches a real
//! HTTP receiver on loopback signed as Standard Webhooks says.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use herald_smtp::Egress;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::receiver::{Receiver, Reply};

/// Creates a webhook; returns the answer.
async fn create(app: &TestApp, tenant: &TestTenant, body: Value) -> Value {
    app.create_as_admin(tenant, "webhooks", body).await
}

#[tokio::test]
async fn a_webhooks_secret_is_shown_once_and_nowhere_else() {
    let (app, acme) = app_with_acme().await;
    let created = create(
        &app,
        &acme,
        json!({"url": "http://127.0.0.1:9/hook", "events": ["message.sent", "recipient.failed"]}),
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    assert_eq!(B64.decode(&secret["whsec_".len()..]).unwrap().len(), 32);
    assert_eq!(created["url"], "http://127.0.0.1:9/hook");
    assert_eq!(
        created["events"],
        json!(["message.sent", "recipient.failed"])
    );
    assert_eq!(created["enabled"], true);
    assert_eq!(created["warnings"], json!([]));
    for field in ["disabled_reason", "failing_since", "previous_secret_until"] {
        assert!(created[field].is_null(), "{field}: {created}");
    }
    let id = created["id"].as_str().unwrap();

    let (status, shown) = app.get_as_admin(&acme, &format!("webhooks/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let (status, listed) = app.get_as_admin(&acme, "webhooks").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], id);
    let (status, changed) = app
        .patch_as_admin(
            &acme,
            &format!("webhooks/{id}"),
            json!({"events": ["test.completed"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let (status, audit) = app.get_as_admin(&acme, "audit").await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"webhook.create"), "{audit}");
    assert!(actions.contains(&"webhook.update"), "{audit}");
    for answer in [&shown, &listed, &changed, &audit] {
        assert!(answer.get("secret").is_none(), "{answer}");
        assert!(!answer.to_string().contains(&secret[6..]), "{answer}");
    }

    // Another tenant's webhook is not found, whatever it asks of it.
    let globex = app.tenant("globex").await;
    for rest in ["", "/deliveries"] {
        let (status, answer) = app
            .get_as_admin(&globex, &format!("webhooks/{id}{rest}"))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    }
    let (status, answer) = app
        .post_as_admin(&globex, &format!("webhooks/{id}/test"), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    // A sender may not read webhooks.
    let (status, answer) = app.get_as_sender(&acme, "webhooks").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
}

#[tokio::test]
async fn events_and_urls_break_their_rules_by_name() {
    let (app, acme) = app_with_acme().await;
    let refused = |body: Value| {
        let (app, acme) = (&app, &acme);
        async move {
            let (status, answer) = app.post_as_admin(acme, "webhooks", body).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
            field_errors(&answer)
        }
    };
    let https = "https://hooks.example/in";

    let errors =
        refused(json!({"url": https, "events": ["message.sent", "message.bounced"]})).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "events[1]");
    assert!(
        errors[0].1.contains("message.sent, message.failed"),
        "{errors:?}"
    );
    let errors = refused(json!({"url": https, "events": []})).await;
    assert_eq!(errors[0].0, "events", "{errors:?}");
    let errors = refused(json!({"url": https})).await;
    assert_eq!(errors, [("events".into(), "is required".into())]);
    let errors =
        refused(json!({"url": "ftp://hooks.example/in", "events": ["message.sent"]})).await;
    assert_eq!(errors[0].0, "url", "{errors:?}");
    assert!(errors[0].1.contains("https://"), "{errors:?}");
    // Plain http only to addresses the operator allows (here 127.0.0.0/8).
    let errors = refused(json!({"url": "http://203.0.113.7/in", "events": ["message.sent"]})).await;
    assert_eq!(errors[0].0, "url", "{errors:?}");
    assert!(errors[0].1.contains("--egress-allow"), "{errors:?}");
    let accepted = create(
        &app,
        &acme,
        json!({"url": "http://127.0.0.1:9/in", "events": ["message.sent"], "enabled": false}),
    )
    .await;
    assert_eq!(accepted["enabled"], false, "{accepted}");
    // Unknown fields are malformed, as everywhere.
    let (status, answer) = app
        .post_as_admin(
            &acme,
            "webhooks",
            json!({"url": https, "events": ["message.sent"], "secret": "mine"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    // A name that does not resolve is accepted with a warning: delivery judges it again.
    let unresolved = create(
        &app,
        &acme,
        json!({"url": "https://hooks.herald-test.invalid/in", "events": ["message.sent"]}),
    )
    .await;
    assert_eq!(
        unresolved["warnings"][0]["code"], "unresolved",
        "{unresolved}"
    );

    // Without an allow list, loopback is refused by the rule's own words.
    let strict = spawn_app_with(|s| s.egress = Egress::default()).await;
    let acme = strict.tenant("acme").await;
    for url in [
        "https://127.0.0.1/in",
        "http://127.0.0.1:9/in",
        "https://localhost/in",
    ] {
        let (status, answer) = strict
            .post_as_admin(
                &acme,
                "webhooks",
                json!({"url": url, "events": ["message.sent"]}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {answer}");
        let errors = field_errors(&answer);
        assert_eq!(errors[0].0, "url", "{url}: {errors:?}");
        assert!(
            errors[0].1.contains("egress policy forbids")
                && errors[0].1.contains("loopback addresses are refused"),
            "{url}: {errors:?}"
        );
    }
}

#[tokio::test]
async fn a_webhook_is_changed_rotated_and_deleted() {
    let (app, acme) = app_with_acme().await;
    let created = create(
        &app,
        &acme,
        json!({"url": "http://127.0.0.1:9/a", "events": ["message.sent"]}),
    )
    .await;
    let path = format!("webhooks/{}", created["id"].as_str().unwrap());

    let (status, changed) = app
        .patch_as_admin(
            &acme,
            &path,
            json!({"url": "http://127.0.0.1:9/b", "events": ["message.failed", "message.sent"], "enabled": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["url"], "http://127.0.0.1:9/b");
    assert_eq!(changed["events"], json!(["message.sent", "message.failed"]));
    assert_eq!(changed["enabled"], false);
    let (status, changed) = app
        .patch_as_admin(&acme, &path, json!({"enabled": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["enabled"], true);
    assert_eq!(changed["url"], "http://127.0.0.1:9/b", "kept: {changed}");
    let (status, answer) = app
        .patch_as_admin(&acme, &path, json!({"events": [], "url": "ftp://x/"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let fields: Vec<String> = field_errors(&answer).into_iter().map(|e| e.0).collect();
    assert_eq!(fields, ["url", "events"], "{answer}");
    let (status, answer) = app.patch_as_admin(&acme, &path, json!({"name": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    let secret = created["secret"].as_str().unwrap();
    let (status, rotated) = app
        .post_as_admin(&acme, &format!("{path}/rotate-secret"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap();
    assert!(
        new_secret.starts_with("whsec_") && new_secret != secret,
        "{rotated}"
    );
    assert!(rotated["previous_secret_until"].is_string(), "{rotated}");
    let (status, answer) = app
        .post_as_admin(
            &acme,
            &format!("{path}/rotate-secret"),
            json!({"overlap_seconds": 604_801}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(field_errors(&answer)[0].0, "overlap_seconds");
    let (status, audit) = app.get_as_admin(&acme, "audit").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        audit.to_string().contains("webhook.rotate_secret"),
        "{audit}"
    );
    assert!(!audit.to_string().contains(&new_secret[6..]), "{audit}");

    let (status, answer) = app.delete_as_admin(&acme, &path).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    for rest in ["", "/deliveries"] {
        let (status, answer) = app.get_as_admin(&acme, &format!("{path}{rest}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    }
    let (status, answer) = app.delete_as_admin(&acme, &path).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let (status, audit) = app.get_as_admin(&acme, "audit").await;
    assert_eq!(status, StatusCode::OK);
    assert!(audit.to_string().contains("webhook.delete"), "{audit}");
}

#[tokio::test]
async fn a_test_event_is_signed_sent_at_once_and_listed() {
    let receiver = Receiver::start().await;
    let (app, acme) = app_with_acme().await;
    let created = create(
        &app,
        &acme,
        json!({"url": receiver.url, "events": ["test.completed"]}),
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("webhooks/{id}");

    let (status, tested) = app
        .post_as_admin(&acme, &format!("{path}/test"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{tested}");
    assert_eq!(tested["delivered"], true, "{tested}");
    assert_eq!(tested["response_status"], 200, "{tested}");
    assert!(tested["error"].is_null(), "{tested}");
    let first_event = tested["event_id"].as_str().unwrap().to_owned();
    assert!(first_event.starts_with("evt_"), "{tested}");
    let received = receiver.last();
    assert_eq!(received.id, first_event);
    assert_eq!(received.content_type, "application/json");
    assert_eq!(
        received.signatures(),
        [received.expected_signature(&secret)]
    );
    let body: Value = serde_json::from_str(&received.body).unwrap();
    assert_eq!(body["type"], "webhook.test", "{body}");
    assert!(body["timestamp"].is_string(), "{body}");
    assert_eq!(body["data"]["webhook_id"], id.as_str(), "{body}");
    assert!(body["data"]["tenant_id"].is_string(), "{body}");
    assert_eq!(body["data"]["message"], "a test event from Herald");

    // A refusing endpoint, and a disabled webhook is tested all the same.
    receiver.answer(Reply::Status(500));
    let (status, answer) = app
        .patch_as_admin(&acme, &path, json!({"enabled": false}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, tested) = app
        .post_as_admin(&acme, &format!("{path}/test"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{tested}");
    assert_eq!(tested["delivered"], false, "{tested}");
    assert_eq!(tested["response_status"], 500, "{tested}");
    assert!(
        tested["error"].as_str().unwrap().contains("500"),
        "{tested}"
    );
    let second_event = tested["event_id"].as_str().unwrap().to_owned();

    let (status, deliveries) = app.get_as_admin(&acme, &format!("{path}/deliveries")).await;
    assert_eq!(status, StatusCode::OK, "{deliveries}");
    let listed: Vec<(&str, &str, &Value)> = deliveries
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["event_id"].as_str().unwrap(),
                d["status"].as_str().unwrap(),
                &d["response_status"],
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (second_event.as_str(), "failed", &json!(500)),
            (first_event.as_str(), "delivered", &json!(200)),
        ],
        "{deliveries}"
    );
    assert_eq!(deliveries[0]["type"], "webhook.test");
    assert_eq!(deliveries[0]["attempts"], 1);
    let (status, one) = app
        .get_as_admin(&acme, &format!("{path}/deliveries?limit=1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one.as_array().unwrap().len(), 1, "{one}");
    for limit in ["0", "501", "many"] {
        let (status, answer) = app
            .get_as_admin(&acme, &format!("{path}/deliveries?limit={limit}"))
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{limit}: {answer}"
        );
    }

    // During a rotation's overlap, events carry the new and the previous signature.
    receiver.answer(Reply::Status(204));
    let (status, rotated) = app
        .post_as_admin(&acme, &format!("{path}/rotate-secret"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap();
    let (status, tested) = app
        .post_as_admin(&acme, &format!("{path}/test"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{tested}");
    assert_eq!(tested["delivered"], true, "{tested}");
    let received = receiver.last();
    assert_eq!(
        received.signatures(),
        [
            received.expected_signature(new_secret),
            received.expected_signature(&secret)
        ]
    );
}
