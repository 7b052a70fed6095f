//! Mail whose route is an SMTP server pinned to a gateway: stored for that
//! gateway, never sent by a node (which hands over mail it finds pinned
//! after it was submitted), shown waiting while no instance of the gateway
//! is alive; a test message through it answers 503 naming the gateway; and
//! a deleted gateway's mail goes back to the nodes.

use herald_core::timestamp::{now_ms, rfc3339};
use herald_testsmtp::TestSmtpServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::gateways::instance_seen;
use crate::helpers::*;

/// A tenant whose active provider's server is 127.0.0.1:`port`, pinned to
/// a new gateway `office`; returns the tenant, the gateway's id and the server's.
async fn pinned_tenant(app: &TestApp, slug: &str, port: u16) -> (TestTenant, String, String) {
    let tenant = app.tenant(slug).await;
    let gateway = app
        .create_as_admin(&tenant, "gateways", json!({"name": "office"}))
        .await;
    let gateway = gateway["id"].as_str().unwrap().to_owned();
    let server = app
        .create_smtp_server(
            &tenant,
            json!({"name": "exchange", "host": "127.0.0.1", "port": port, "security": "none",
                   "gateway_id": gateway}),
        )
        .await;
    let provider = app
        .create_as_admin(
            &tenant,
            "providers",
            json!({"name": "on-premises", "smtp_server_id": server["id"],
                   "from_address": "alerts@acme.example", "fallback_recipient": "ops@acme.example"}),
        )
        .await;
    app.activate_provider(&tenant, &provider["id"]).await;
    app.refresh(&tenant).await;
    let server = server["id"].as_str().unwrap().to_owned();
    (tenant, gateway, server)
}

fn waiting(message: &Value) -> &str {
    message["waiting"].as_str().unwrap_or_default()
}

/// Has the node deliver a message of `other` to ops@globex.example, and
/// asserts that meanwhile the tenant's pinned message was neither sent nor tried.
async fn other_mail_goes_while_pinned_waits(
    app: &TestApp,
    other: &TestTenant,
    tenant: &TestTenant,
    pinned: &str,
) {
    let sent = app
        .submit_to(other, "ops@globex.example", "not pinned")
        .await;
    app.wait_for_status(other, &sent, "sent").await;
    let message = app.message(tenant, pinned).await;
    assert_eq!(message["recipients"][0]["status"], "queued", "{message}");
    assert!(attempts_of(&message).is_empty(), "{message}");
}

#[tokio::test]
async fn pinned_mail_waits_for_its_gateway_and_no_node_sends_it() {
    let smtp = TestSmtpServer::start().await;
    let app = spawn_app().await;
    let (acme, gateway, _) = pinned_tenant(&app, "acme", smtp.port()).await;
    let globex = app.tenant_sending_to("globex", smtp.port()).await;

    let pinned = app.submit_to(&acme, "ops@acme.example", "pinned").await;
    let message = app.message(&acme, &pinned).await;
    assert_eq!(message["status"], "queued", "{message}");
    assert_eq!(message["recipients"][0]["gateway_id"], gateway.as_str());
    assert!(
        waiting(&message).contains(r#"no instance of gateway "office" is alive (never seen"#),
        "{message}"
    );

    // The node delivers other mail meanwhile, and none of the pinned.
    other_mail_goes_while_pinned_waits(&app, &globex, &acme, &pinned).await;
    assert!(
        smtp.messages()
            .iter()
            .all(|m| m.rcpt_to == ["ops@globex.example"])
    );

    // A test message through the pinned server answers 503 naming the gateway.
    let provider = app.first_provider_id(&acme).await;
    let (status, problem) = app.test_provider(&acme, &provider, json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(problem["type"], "urn:herald:problem:no-gateway-alive");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(r#"gateway "office""#),
        "{problem}"
    );

    // An instance seen just now: the message no longer says it waits for one.
    instance_seen(&app, &gateway, "office-1", "test", now_ms()).await;
    let message = app.message(&acme, &pinned).await;
    assert!(message["waiting"].is_null(), "{message}");
}

/// Pins the tenant's server to `gateway` (`""` for none) and makes the
/// change effective on the node at once.
async fn pin(app: &TestApp, tenant: &TestTenant, server: &str, gateway: &str) {
    patch_gateway(app, tenant, server, gateway).await;
    app.refresh(tenant).await;
}

#[tokio::test]
async fn a_node_hands_mail_it_finds_pinned_to_the_gateway_and_a_deleted_gateways_mail_comes_back() {
    let smtp = TestSmtpServer::start().await;
    let app = spawn_app().await;
    let (acme, gateway, server) = pinned_tenant(&app, "acme", smtp.port()).await;
    // Unpinned while the message is submitted (a few seconds ahead), pinned
    // again before it is due: the node that claims it finds the route pinned.
    pin(&app, &acme, &server, "").await;
    let id = app
        .submit(
            &acme,
            json!({"to": ["ops@acme.example"], "subject": "later", "text": "x",
                   "send_at": rfc3339(now_ms() + 2_000)}),
        )
        .await;
    assert!(app.message(&acme, &id).await["recipients"][0]["gateway_id"].is_null());
    pin(&app, &acme, &server, &gateway).await;
    let handed = eventually("the node to hand the message to the gateway", || async {
        let message = app.message(&acme, &id).await;
        (message["recipients"][0]["gateway_id"] == gateway.as_str()).then_some(message)
    })
    .await;
    assert_eq!(handed["recipients"][0]["status"], "queued", "{handed}");
    assert!(
        attempts_of(&handed).is_empty(),
        "handed over unsent: {handed}"
    );
    assert!(smtp.messages().is_empty());

    // The gateway goes: the server first names none, then the gateway is
    // deleted, and its mail is the nodes' again.
    let (status, answer) = app
        .delete_as_admin(&acme, &format!("gateways/{gateway}"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    pin(&app, &acme, &server, "").await;
    let (status, answer) = app
        .delete_as_admin(&acme, &format!("gateways/{gateway}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    app.wait_for_status(&acme, &id, "sent").await;
    smtp.wait_for_messages(1, DEADLINE).await;
}

/// Changes the gateway the server names (`""` for none) through the API,
/// and nothing else: no refresh of the tenant's properties.
async fn patch_gateway(app: &TestApp, tenant: &TestTenant, server: &str, gateway: &str) {
    let (status, answer) = app
        .patch_as_admin(
            tenant,
            &format!("smtp-servers/{server}"),
            json!({"gateway_id": gateway}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn mail_waiting_for_a_gateway_goes_back_to_the_nodes_when_the_server_leaves_it() {
    let smtp = TestSmtpServer::start().await;
    let app = spawn_app().await;
    let (acme, gateway, server) = pinned_tenant(&app, "acme", smtp.port()).await;
    // No instance of the gateway ever runs: the mail waits for one.
    let id = app.submit_to(&acme, "ops@acme.example", "stuck").await;
    let message = app.message(&acme, &id).await;
    assert_eq!(message["recipients"][0]["gateway_id"], gateway.as_str());

    // The server leaves the gateway; the node delivers the waiting mail.
    patch_gateway(&app, &acme, &server, "").await;
    let message = app.wait_for_status(&acme, &id, "sent").await;
    assert!(
        message["recipients"][0]["gateway_id"].is_null(),
        "{message}"
    );
    assert_eq!(first_attempt_of(&message)["node"], "test-node", "{message}");
    smtp.wait_for_messages(1, DEADLINE).await;
}

#[tokio::test]
async fn mail_submitted_right_after_its_server_is_pinned_is_never_sent_by_a_node() {
    let smtp = TestSmtpServer::start().await;
    let app = spawn_app().await;
    let (acme, gateway, server) = pinned_tenant(&app, "acme", smtp.port()).await;
    let globex = app.tenant_sending_to("globex", smtp.port()).await;
    // The node delivers acme's mail itself, so its cache holds the route unpinned.
    pin(&app, &acme, &server, "").await;
    let before = app.submit_to(&acme, "ops@acme.example", "before").await;
    app.wait_for_status(&acme, &before, "sent").await;

    // Pinned, and mail submitted at once: it is the gateway's.
    patch_gateway(&app, &acme, &server, &gateway).await;
    let pinned = app.submit_to(&acme, "ops@acme.example", "pinned").await;
    let message = app.message(&acme, &pinned).await;
    assert_eq!(message["recipients"][0]["gateway_id"], gateway.as_str());
    // The node delivers later mail meanwhile, and none of the pinned.
    other_mail_goes_while_pinned_waits(&app, &globex, &acme, &pinned).await;
    let subjects: Vec<String> = smtp
        .messages()
        .iter()
        .map(|m| m.header("Subject").unwrap_or_default())
        .collect();
    assert_eq!(subjects, ["before", "not pinned"]);
}
