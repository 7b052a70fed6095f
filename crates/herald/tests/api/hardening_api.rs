//! Findings of the adversarial review (issue 11) about the API and the store:
//! secrets cleared when trust weakens, who reads a test message's diagnosis,
//! database URLs that never show their password, and header text without
//! control characters or encoded words.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// PATCHes a server and returns the answer's body.
async fn patch_server(app: &TestApp, tenant: &TestTenant, id: &str, body: Value) -> Value {
    let (status, answer) = app
        .patch_as_admin(tenant, &format!("smtp-servers/{id}"), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

#[tokio::test]
async fn changes_that_weaken_or_redirect_trust_clear_the_accounts_secrets() {
    let (app, acme) = app_with_acme().await;
    app.grant_credential_storage("acme").await;
    let server = app
        .create_as_admin(
            &acme,
            "smtp-servers",
            json!({"name": "relay", "host": "mail.acme.example", "port": 587,
                   "security": "starttls", "requires_auth": true}),
        )
        .await;
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
        let (_, audit) = app.get_as_admin(&acme, "audit").await;
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

#[tokio::test]
async fn only_administrators_read_a_test_messages_diagnosis() {
    let smtp = herald_testsmtp::TestSmtpServer::start().await;
    let (app, acme) = app_sending_to(&smtp).await;
    let provider = app.first_provider_id(&acme).await;
    let (status, answer) = app
        .test_provider(&acme, &provider, json!({"to": "ops@acme.example"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let path = format!(
        "/v1/tenants/acme/messages/{}",
        answer["message_id"].as_str().unwrap()
    );

    // A member's personal token and a service token both send, neither administers.
    let member = app
        .create_as_admin(
            &acme,
            "persons",
            json!({"name": "Member", "email": "member@acme.example", "role": "member"}),
        )
        .await;
    let member_token = app
        .create_as_admin(
            &acme,
            "tokens",
            json!({"name": "member's", "person_id": member["id"]}),
        )
        .await;
    let member_token = member_token["token"].as_str().unwrap().to_owned();

    let attempt = |message: &Value| message["recipients"][0]["attempts"][0].clone();
    let seen = eventually("the test message's attempt", || async {
        let (_, message) = app.get(&path, &acme.admin).await;
        let attempt = attempt(&message);
        attempt.get("diagnosis").is_some().then_some(attempt)
    })
    .await;
    assert!(
        seen["diagnosis"].as_array().is_some_and(|s| !s.is_empty()),
        "{seen}"
    );
    let (_, as_operator) = app.get(&path, OPERATOR).await;
    assert!(attempt(&as_operator).get("diagnosis").is_some());

    for (who, token) in [("a sender", &acme.sender), ("a member", &member_token)] {
        let (status, message) = app.get(&path, token).await;
        assert_eq!(status, StatusCode::OK, "{message}");
        let attempt = attempt(&message);
        assert_eq!(
            attempt["outcome"], seen["outcome"],
            "{who} sees the outcome"
        );
        assert_eq!(
            attempt["response"], seen["response"],
            "{who} sees the reply"
        );
        assert!(
            attempt.get("diagnosis").is_none(),
            "{who} reads the diagnosis: {attempt}"
        );
    }
}

/// Secrets in a database URL: one in the user information, one in the query.
const USERINFO_SECRET: &str = "userinfo-pw-canary";
const QUERY_SECRET: &str = "query-pw-canary";

fn assert_no_database_secret(output: &str) {
    for secret in [USERINFO_SECRET, QUERY_SECRET] {
        assert!(!output.contains(secret), "{secret} shown in: {output}");
    }
}

#[tokio::test]
async fn a_failed_database_connection_does_not_show_the_password() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1 of loopback: the connection is refused at once.
    let url =
        format!("postgres://herald:{USERINFO_SECRET}@127.0.0.1:1/herald?password={QUERY_SECRET}");
    let output = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--http", "127.0.0.1:0", "--database-url", &url])
            .arg("--data-dir")
            .arg(dir.path())
            .env("HERALD_BOOTSTRAP_TOKEN", OPERATOR)
            .env("NO_COLOR", "1")
            .output(),
    )
    .await
    .expect("the node gives up within the deadline")
    .unwrap();
    assert!(!output.status.success());
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        printed.contains("postgres://herald:***@127.0.0.1:1/herald?password=***"),
        "{printed}"
    );
    assert_no_database_secret(&printed);

    // migrate-store says where it could not copy to, in the same way.
    let sqlite = format!("sqlite://{}", dir.path().join("herald.db").display());
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["migrate-store", "--from", &sqlite, "--to", &url])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let printed = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        printed.contains("postgres://herald:***@127.0.0.1:1"),
        "{printed}"
    );
    assert_no_database_secret(&printed);
}

#[tokio::test]
async fn the_startup_log_line_shows_the_database_without_its_password() {
    let Some(database) = herald_testkit::TestDatabase::create().await else {
        return;
    };
    // The test server trusts local connections, so the passwords are never checked.
    let (base, name) = database.url().rsplit_once('/').unwrap();
    let (scheme, host) = base.split_once("://").unwrap();
    let host = host.rsplit('@').next().unwrap();
    let url =
        format!("{scheme}://postgres:{USERINFO_SECRET}@{host}/{name}?password={QUERY_SECRET}");
    let dir = tempfile::tempdir().unwrap();
    let node = start_process(dir.path(), &["--database-url", &url], &[]).await;
    let line = eventually("the startup log line", || async {
        let output = node.output.lock().unwrap().clone();
        output
            .lines()
            .find(|l| l.contains("herald is running"))
            .map(str::to_owned)
    })
    .await;
    assert!(
        line.contains(&format!(
            "postgres://postgres:***@{host}/{name}?password=***"
        )),
        "{line}"
    );
    assert_no_database_secret(&node.output.lock().unwrap());
}

/// The rule the API names for `field` in a 422.
fn rule_for(answer: &Value, field: &str) -> String {
    answer["errors"]
        .as_array()
        .and_then(|errors| errors.iter().find(|e| e["field"] == field))
        .and_then(|e| e["rule"].as_str())
        .unwrap_or_else(|| panic!("no error for {field}: {answer}"))
        .to_owned()
}

#[tokio::test]
async fn controls_and_encoded_words_are_refused_in_every_header_field() {
    let (app, acme) = app_with_acme().await;
    let encoded_crlf = "=?utf-8?B?DQpCY2M6IHZpY3RpbUBldmlsLmV4YW1wbGU=?=";
    let (status, answer) = app
        .post_as_sender(
            &acme,
            "messages",
            json!({
                "to": ["Ops\u{b}Team <ops@acme.example>"],
                "cc": ["=?utf-8?Q?=1B[2J?= <cc@acme.example>"],
                "subject": format!("Disk full {encoded_crlf}"),
                "text": "x",
                "headers": {"X-Tag": "red\u{1b}[31m", "X-Form": "page\u{c}break",
                            "X-Next": "\u{85}line", "X-Word": encoded_crlf, "X-Tab": "a\tb"},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    for field in ["to[0]", "headers.X-Tag", "headers.X-Form", "headers.X-Next"] {
        assert!(
            rule_for(&answer, field).contains("control characters"),
            "{answer}"
        );
    }
    for field in ["cc[0]", "subject", "headers.X-Word"] {
        assert!(
            rule_for(&answer, field).contains("encoded word"),
            "{answer}"
        );
    }
    assert!(
        !answer["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "headers.X-Tab"),
        "TAB is allowed: {answer}"
    );
    assert_eq!(app.message_count(&acme).await, 0, "nothing is half-stored");

    let body =
        json!({"name": "relay", "host": "mail.acme.example", "port": 587, "security": "starttls"});
    let (_, server) = app.post_as_admin(&acme, "smtp-servers", body).await;
    let body = json!({"name": "p", "smtp_server_id": server["id"], "from_address": "alerts@acme.example",
                   "from_name": "Alerts =?utf-8?B?DQo=?="});
    let (status, answer) = app.post_as_admin(&acme, "providers", body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        rule_for(&answer, "from_name").contains("encoded word"),
        "{answer}"
    );
}
