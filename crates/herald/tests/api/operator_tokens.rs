//! Operator tokens: the bootstrap token's rules, and listing, creating and
//! revoking operator tokens through the API and `herald operator token`.

use herald::node::start;
use herald_core::Secret;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// Runs `herald operator token …` on the app's data directory.
async fn token_command(app: &TestApp, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["operator", "token"])
        .args(args)
        .arg("--data-dir")
        .arg(app.dir.path())
        .output()
        .await
        .unwrap()
}

async fn status_with(app: &TestApp, token: &str) -> StatusCode {
    app.call(Method::GET, "/v1/operator/tokens", Some(token), None)
        .await
        .0
}

#[tokio::test]
async fn a_short_bootstrap_token_stops_the_node_with_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    for short in ["q", "hrld_short_bootstrap_token_31ch"] {
        let mut settings = test_settings(&dir);
        settings.bootstrap_token = Some(Secret::new(short));
        let error = match start(settings).await {
            Ok(_) => panic!(
                "a {}-character bootstrap token was accepted",
                short.chars().count()
            ),
            Err(error) => format!("{error:#}"),
        };
        assert!(
            error.contains("HERALD_BOOTSTRAP_TOKEN must be at least 32 characters"),
            "{error}"
        );
        assert!(
            short.len() == 1 || !error.contains(short),
            "the error shows the token: {error}"
        );
    }
}

#[tokio::test]
async fn a_changed_bootstrap_token_revokes_the_earlier_one_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let first = "hrld_first_bootstrap_token_0123456789";
    let second = "hrld_second_bootstrap_token_0123456789";
    let run = |token: &'static str| {
        let mut settings = test_settings(&dir);
        settings.bootstrap_token = Some(Secret::new(token));
        async move {
            let node = start(settings).await.expect("the node starts");
            let app = TestApp {
                base: format!("http://{}", node.http_addr),
                client: reqwest::Client::new(),
                node: None,
                dir: tempfile::tempdir().unwrap(),
            };
            let statuses = (
                status_with(&app, first).await,
                status_with(&app, second).await,
            );
            let (_, listed) = app
                .call(Method::GET, "/v1/operator/tokens", Some(token), None)
                .await;
            node.shutdown().await;
            (statuses, listed)
        }
    };
    let ((a, b), _) = run(first).await;
    assert_eq!((a, b), (StatusCode::OK, StatusCode::UNAUTHORIZED));
    let ((a, b), listed) = run(second).await;
    assert_eq!(
        (a, b),
        (StatusCode::UNAUTHORIZED, StatusCode::OK),
        "the earlier bootstrap token still works after it changed"
    );
    let bootstrap: Vec<&Value> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["bootstrap"] == true)
        .collect();
    assert_eq!(bootstrap.len(), 1, "{listed}");

    // Going back to the earlier value does not bring it back, and the value
    // it replaces is revoked all the same: no bootstrap token is left.
    let mut settings = test_settings(&dir);
    settings.bootstrap_token = Some(Secret::new(first));
    let node = start(settings).await.expect("the node starts");
    let app = TestApp {
        base: format!("http://{}", node.http_addr),
        client: reqwest::Client::new(),
        node: Some(node),
        dir,
    };
    assert_eq!(status_with(&app, first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status_with(&app, second).await,
        StatusCode::UNAUTHORIZED,
        "the bootstrap token in force still works after the value went back"
    );

    // The way back in: an operator token made on the node's machine.
    let created = token_command(&app, &["create", "--name", "way back in"]).await;
    assert!(created.status.success(), "{created:?}");
    let secret = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let (status, listed) = app
        .call(Method::GET, "/v1/operator/tokens", Some(&secret), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let names: Vec<(&Value, &Value)> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (&t["name"], &t["bootstrap"]))
        .collect();
    assert_eq!(
        names,
        vec![(&json!("way back in"), &json!(false))],
        "{listed}"
    );
}

#[tokio::test]
async fn operator_tokens_are_listed_created_and_revoked_through_the_api() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;

    let (status, listed) = app.get("/v1/operator/tokens", OPERATOR).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let tokens = listed["tokens"].as_array().unwrap();
    assert_eq!(
        tokens.len(),
        1,
        "tenants' tokens are not operator tokens: {listed}"
    );
    let bootstrap = &tokens[0];
    assert_eq!(bootstrap["bootstrap"], true);
    assert_eq!(bootstrap["name"], "HERALD_BOOTSTRAP_TOKEN");
    assert!(bootstrap["created_at"].is_string() && bootstrap["last_used_at"].is_string());
    let text = listed.to_string();
    let hash = herald_core::token::hash(OPERATOR);
    assert!(!text.contains(OPERATOR) && !text.contains(&hash) && !text.contains("hash"));

    for token in [&tenant.admin, &tenant.sender] {
        assert_eq!(status_with(&app, token).await, StatusCode::FORBIDDEN);
    }

    let (status, created) = app
        .post("/v1/operator/tokens", OPERATOR, json!({"name": "deploy"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["bootstrap"], false);
    let deploy = created["token"].as_str().unwrap().to_owned();
    let deploy_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(status_with(&app, &deploy).await, StatusCode::OK);
    let (_, listed) = app.get("/v1/operator/tokens", OPERATOR).await;
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains(&deploy), "{listed}");

    let (status, refused) = app
        .post("/v1/operator/tokens", OPERATOR, json!({"name": "  "}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["errors"][0]["field"], "name", "{refused}");

    // A tenant's token is not an operator token, whatever its id.
    let (_, tenant_tokens) = app.get("/v1/tenants/acme/tokens", OPERATOR).await;
    let tenant_token_id = tenant_tokens[0]["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/operator/tokens/{tenant_token_id}"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The deploy token revokes the bootstrap token, then itself: each request
    // is answered, and the token it revoked stops working at once.
    let bootstrap_id = bootstrap["id"].as_str().unwrap();
    for (id, by) in [(bootstrap_id, &deploy), (deploy_id.as_str(), &deploy)] {
        let (status, body) = app
            .call(
                Method::DELETE,
                &format!("/v1/operator/tokens/{id}"),
                Some(by),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    assert_eq!(status_with(&app, OPERATOR).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_with(&app, &deploy).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_command_line_creates_lists_and_revokes_operator_tokens() {
    let app = spawn_app().await;

    let created = token_command(&app, &["create", "--name", "ci pipeline"]).await;
    assert!(created.status.success(), "{created:?}");
    let secret = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(
        secret.starts_with("hrld_"),
        "stdout is the token alone: {secret:?}"
    );
    assert_eq!(status_with(&app, &secret).await, StatusCode::OK);

    let listed = token_command(&app, &["list"]).await;
    assert!(listed.status.success(), "{listed:?}");
    let listing = String::from_utf8(listed.stdout).unwrap();
    assert!(!listing.contains(&secret) && !listing.contains(OPERATOR));
    let row = |name: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_else(|| panic!("no {name} in {listing}"))
            .to_owned()
    };
    assert!(row("HERALD_BOOTSTRAP_TOKEN").contains(" yes "), "{listing}");
    let ci = row("ci pipeline");
    assert!(ci.contains(" no "), "{listing}");
    let id = ci.split_whitespace().next().unwrap();

    let revoked = token_command(&app, &["revoke", id]).await;
    assert!(revoked.status.success(), "{revoked:?}");
    assert_eq!(status_with(&app, &secret).await, StatusCode::UNAUTHORIZED);
    let again = token_command(&app, &["revoke", id]).await;
    assert!(!again.status.success());
    let error = String::from_utf8(again.stderr).unwrap();
    assert!(
        error.contains("no operator token in force has the id"),
        "{error}"
    );
    assert_eq!(status_with(&app, OPERATOR).await, StatusCode::OK);
}
