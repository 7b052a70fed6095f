//! Findings of the adversarial review (issue 11) that belong to no other suite:
//! secrets cleared when trust weakens, who reads a test message's diagnosis,
//! and database URLs that never show their password.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// PATCHes a server and returns the answer's body.
async fn patch_server(app: &TestApp, tenant: &TestTenant, id: &str, body: Value) -> Value {
    let (status, answer) = app
        .call(
            Method::PATCH,
            &format!("/v1/tenants/{}/smtp-servers/{id}", tenant.slug),
            Some(&tenant.admin),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

#[tokio::test]
async fn changes_that_weaken_or_redirect_trust_clear_the_accounts_secrets() {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    app.grant_credential_storage("acme").await;
    let (status, server) = app
        .post(
            "/v1/tenants/acme/smtp-servers",
            &acme.admin,
            json!({"name": "relay", "host": "mail.acme.example", "port": 587,
                   "security": "starttls", "requires_auth": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{server}");
    let id = server["id"].as_str().unwrap().to_owned();
    let accounts = format!("/v1/tenants/acme/smtp-servers/{id}/accounts");
    let add_account = |name: &'static str| {
        let (app, accounts, admin) = (&app, &accounts, &acme.admin);
        async move {
            let (status, account) = app
                .post(
                    accounts,
                    admin,
                    json!({"username": name, "password": "pw-entered-under-tls"}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{account}");
            account["id"].as_str().unwrap().to_owned()
        }
    };
    let secret_set = |account: String| {
        let (app, accounts, admin) = (&app, &accounts, &acme.admin);
        async move { app.get(&format!("{accounts}/{account}"), admin).await.1["secret_set"].clone() }
    };
    let last_update = || async {
        let (_, audit) = app.get("/v1/tenants/acme/audit", &acme.admin).await;
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "smtp_server.update")
            .cloned()
            .unwrap()
    };

    let first = add_account("first").await;
    patch_server(&app, &acme, &id, json!({"tls_verify": false})).await;
    assert_eq!(
        secret_set(first).await,
        false,
        "tls_verify off kept the password"
    );
    assert_eq!(
        last_update().await["details"]["account_secrets_cleared"],
        true
    );

    // Turning verification back on only strengthens trust.
    let second = add_account("second").await;
    patch_server(&app, &acme, &id, json!({"tls_verify": true})).await;
    assert_eq!(secret_set(second.clone()).await, true);
    assert_eq!(
        last_update().await["details"]["account_secrets_cleared"],
        false
    );

    patch_server(
        &app,
        &acme,
        &id,
        json!({"tls_server_name": "relay.elsewhere.example"}),
    )
    .await;
    assert_eq!(
        secret_set(second).await,
        false,
        "a new tls_server_name kept the password"
    );
    let third = add_account("third").await;
    patch_server(&app, &acme, &id, json!({"tls_server_name": ""})).await;
    assert_eq!(
        secret_set(third).await,
        false,
        "removing tls_server_name kept the password"
    );
}
