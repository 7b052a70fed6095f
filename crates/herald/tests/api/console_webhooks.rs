//! The console's webhooks page over plain HTTP: a webhook created through
//! its form (its secret shown once), a refused URL beside its field, a test
//! event to a real receiver on loopback, turning it off and on, a new
//! secret, deleting it, a webhook Herald disabled, and who may use the forms.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::console::{
    ADA_PASSWORD, GLOBEX_PASSWORD, console_with_two_tenants, heading, member_is_refused, unescaped,
};
use crate::console_http::{HttpSession, Page, give_password, listed, shown_value};
use crate::helpers::{OPERATOR, eventually, spawn_app_with};
use crate::receiver::{Receiver, Reply};

const WEBHOOKS: &str = "/t/acme/webhooks";

/// The fields of the new-webhook form: a URL, event types ticked, on.
fn new_webhook<'a>(url: &'a str, events: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    let mut fields = vec![("url", url), ("enabled", "on")];
    fields.extend(events.iter().map(|e| ("events", *e)));
    fields
}

/// A tenant administrator's webhook, from its form to its deletion: refused
/// fields beside their fields with what was typed, the secret shown once
/// (and it is the one events are signed with), a test event delivered and
/// one refused by the endpoint, off and on again, a new secret, deleted
/// after its confirmation page; each change seen through the API.
#[tokio::test]
async fn a_tenant_administrator_manages_webhooks_in_the_console() {
    let c = console_with_two_tenants().await;
    let app = &c.app;
    let receiver = Receiver::start().await;
    let admin = HttpSession::sign_in(app, "admin@acme.example", ADA_PASSWORD, WEBHOOKS).await;
    let invalid = |html: &str, field: &str| html.contains(&format!("id=\"e-{field}\""));

    // The page is in the navigation, with every event type to tick.
    let html = admin.get_html(WEBHOOKS).await;
    let text = unescaped(&html);
    assert!(
        text.contains("<a href=\"/t/acme/webhooks\" aria-current=\"page\">Webhooks</a>"),
        "{text}"
    );
    for event in herald_core::webhook::EventType::ALL {
        assert!(
            html.contains(&format!("value=\"{}\"", event.as_str())),
            "{event}"
        );
    }

    // An ftp:// URL and no event: each error beside its field, what was typed kept.
    let html = admin
        .post_answered(
            WEBHOOKS,
            &new_webhook("ftp://127.0.0.1/hook", &[]),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(invalid(&html, "url") && invalid(&html, "events"), "{html}");
    assert!(
        unescaped(&html).contains("value=\"ftp://127.0.0.1/hook\""),
        "{html}"
    );
    assert_eq!(heading(&html), Some("Webhooks"));
    assert!(listed(app, "webhooks").await.is_empty());

    // Created: the secret on the answer, once.
    let html = admin
        .post_answered(
            WEBHOOKS,
            &new_webhook(&receiver.url, &["message.sent", "message.failed"]),
            StatusCode::OK,
        )
        .await;
    assert_eq!(heading(&html), Some("Webhook created"));
    assert!(html.contains("it will not be shown again"), "{html}");
    let secret = shown_value(&html, "webhook-secret");
    assert!(secret.starts_with("whsec_"), "{secret}");
    let all = listed(app, "webhooks").await;
    assert_eq!(all.len(), 1);
    let webhook = &all[0];
    assert_eq!(webhook["url"], receiver.url.as_str());
    assert_eq!(webhook["enabled"], true);
    assert_eq!(
        webhook["events"],
        serde_json::json!(["message.sent", "message.failed"])
    );
    assert!(!Value::Array(all.clone()).to_string().contains(&secret));
    let id = webhook["id"].as_str().unwrap().to_owned();
    let page = format!("{WEBHOOKS}/{id}");

    // Never shown again: the list has the webhook, not its secret.
    let text = admin.get(WEBHOOKS).await.text();
    assert!(
        text.contains(&receiver.url) && text.contains("enabled"),
        "{text}"
    );
    assert!(!text.contains(&secret), "{text}");
    let text = admin.get(&page).await.text();
    assert!(!text.contains(&secret), "{text}");

    // A test event reaches the receiver, signed with the secret shown.
    let Page { status, html, .. } = admin.post(&format!("{page}/test"), &[]).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Test event delivered"), "{html}");
    assert!(html.contains("HTTP 200"), "{html}");
    let received = receiver.wait_for(1).await;
    assert_eq!(received[0].event_type(), "webhook.test");
    assert!(received[0].signed_by(&secret));
    // Refused by the endpoint: said so, with its status, and listed.
    receiver.answer(Reply::Status(500));
    let html = admin
        .post_answered(&format!("{page}/test"), &[], StatusCode::OK)
        .await;
    assert!(
        html.contains("Test event not delivered") && html.contains("HTTP 500"),
        "{html}"
    );
    assert!(
        html.contains("<td>delivered</td>") && html.contains("<td>failed</td>"),
        "{html}"
    );
    receiver.answer(Reply::Status(200));

    // Off, then on again.
    let enabled = format!("{page}/enabled");
    let Page { html, .. } = admin
        .post_redirected(
            &enabled,
            &[("enabled", "false")],
            &format!("{page}?done=webhook-disabled"),
        )
        .await;
    assert!(
        html.contains("Webhook disabled") && html.contains("Enable the webhook"),
        "{html}"
    );
    assert_eq!(listed(app, "webhooks").await[0]["enabled"], false);
    let Page { html, .. } = admin.get(WEBHOOKS).await;
    assert!(html.contains("disabled"), "{html}");
    let Page {
        status, location, ..
    } = admin.post(&enabled, &[("enabled", "true")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.ends_with("?done=webhook-enabled"), "{location}");
    assert_eq!(listed(app, "webhooks").await[0]["enabled"], true);

    // A new secret, shown once, and events are signed with it.
    let html = admin
        .post_answered(&format!("{page}/rotate"), &[], StatusCode::OK)
        .await;
    assert!(html.contains("it will not be shown again"), "{html}");
    let rotated = shown_value(&html, "webhook-secret");
    assert!(rotated.starts_with("whsec_") && rotated != secret);
    let Page { html, .. } = admin.post(&format!("{page}/test"), &[]).await;
    assert!(html.contains("Test event delivered"), "{html}");
    let received = receiver.wait_for(3).await;
    assert!(received.last().unwrap().signed_by(&rotated));
    let text = admin.get(&page).await.text();
    assert!(!text.contains(&rotated), "{text}");

    // Deleting asks first, then the list says so.
    let delete = format!("{page}/delete");
    let html = admin.get_html(&delete).await;
    assert!(
        heading(&html).unwrap().starts_with("Delete the webhook"),
        "{html}"
    );
    let Page { html, .. } = admin
        .post_redirected(&delete, &[], &format!("{WEBHOOKS}?done=webhook-deleted"))
        .await;
    assert!(html.contains("Webhook deleted"), "{html}");
    assert!(!unescaped(&html).contains(&receiver.url), "{html}");
    assert!(listed(app, "webhooks").await.is_empty());
    assert_eq!(admin.get(&page).await.status, StatusCode::NOT_FOUND);
    assert_eq!(admin.post(&delete, &[]).await.status, StatusCode::NOT_FOUND);
}

/// The page and its forms are a tenant administrator's: acme's member is
/// refused (403) and has no link to it, another tenant's administrator is
/// told acme's webhook does not exist (404); none of them changes anything.
#[tokio::test]
async fn only_the_tenant_s_administrators_manage_its_webhooks() {
    let c = console_with_two_tenants().await;
    let app = &c.app;
    let receiver = Receiver::start().await;
    let admin = HttpSession::sign_in(app, "admin@acme.example", ADA_PASSWORD, WEBHOOKS).await;
    admin
        .post_answered(
            WEBHOOKS,
            &new_webhook(&receiver.url, &["message.sent"]),
            StatusCode::OK,
        )
        .await;
    let before = listed(app, "webhooks").await;
    let id = before[0]["id"].as_str().unwrap().to_owned();
    let page = format!("{WEBHOOKS}/{id}");
    let forms = [
        (
            WEBHOOKS.to_owned(),
            new_webhook(&receiver.url, &["message.failed"]),
        ),
        (format!("{page}/enabled"), vec![("enabled", "false")]),
        (format!("{page}/test"), vec![]),
        (format!("{page}/rotate"), vec![]),
        (format!("{page}/delete"), vec![]),
    ];

    let pages = [WEBHOOKS.to_owned(), page];
    member_is_refused(app, &pages, &forms, &[WEBHOOKS]).await;

    let stranger =
        HttpSession::sign_in(app, "admin@globex.example", GLOBEX_PASSWORD, "/t/globex").await;
    for (path, fields) in forms.iter().skip(1) {
        let Page { status, .. } = stranger.post(path, fields).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "globex's admin on {path}");
        let theirs = path.replace("/t/acme/", "/t/globex/");
        let Page { status, .. } = stranger.post(&theirs, fields).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "globex's admin on {theirs}");
    }
    assert!(receiver.received().is_empty(), "no test event was sent");
    assert_eq!(listed(app, "webhooks").await, before);
}

/// A webhook Herald disabled for failing: the list and its page say so, with
/// Herald's reason and since when it fails; enabled from its page, it starts
/// afresh.
#[tokio::test]
async fn a_webhook_herald_disabled_shows_why_and_is_enabled_again() {
    let app = spawn_app_with(|s| {
        // Every failure is already "too long": the first one disables it.
        s.webhooks.disable_after = Duration::ZERO;
        s.webhooks.retry_delays = vec![Duration::from_millis(100)];
    })
    .await;
    let acme = app.tenant("acme").await;
    give_password(&app, "acme", "admin@acme.example", ADA_PASSWORD).await;
    let receiver = Receiver::start().await;
    receiver.answer(Reply::Status(503));
    let (status, webhook) = app
        .post(
            "/v1/tenants/acme/webhooks",
            OPERATOR,
            json!({"url": receiver.url, "events": ["message.sent"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{webhook}");
    let id = webhook["id"].as_str().unwrap().to_owned();
    let message = app.submit_to(&acme, "a@acme.example", "Unheard").await;
    app.wait_for_status(&acme, &message, "sent").await;
    eventually("the webhook to be disabled", || async {
        (listed(&app, "webhooks").await[0]["enabled"] == false).then_some(())
    })
    .await;
    let reason = listed(&app, "webhooks").await[0]["disabled_reason"]
        .as_str()
        .unwrap()
        .to_owned();

    let admin = HttpSession::sign_in(&app, "admin@acme.example", ADA_PASSWORD, WEBHOOKS).await;
    let page = format!("{WEBHOOKS}/{id}");
    for path in [WEBHOOKS, page.as_str()] {
        let text = admin.get(path).await.text();
        assert!(
            text.contains(&format!("by Herald: {reason}")),
            "{path}: {text}"
        );
        assert!(!text.contains("not failing"), "{path}: {text}");
    }
    let Page { html, .. } = admin.get(&page).await;
    assert!(
        html.contains("<td>failed</td>") && html.contains("HTTP 503"),
        "{html}"
    );

    let Page { status, .. } = admin
        .post(&format!("{page}/enabled"), &[("enabled", "true")])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let text = admin.get(WEBHOOKS).await.text();
    assert!(
        !text.contains(&reason) && text.contains("not failing"),
        "{text}"
    );
    let webhook = &listed(&app, "webhooks").await[0];
    assert_eq!(webhook["enabled"], true);
    assert!(webhook["disabled_reason"].is_null(), "{webhook}");
}
