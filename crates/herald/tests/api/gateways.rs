//! The gateways API: creating a gateway shows its token once, names follow
//! their rules, a new token ends the old one, a gateway an SMTP server names
//! cannot be deleted, and a server may name only its own tenant's gateway.

use herald_core::token;
use herald_store::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::console_smtp::node_store;
use crate::helpers::*;

/// Creates a gateway; returns the answer, with its token.
async fn create(app: &TestApp, tenant: &TestTenant, name: &str) -> Value {
    app.create_as_admin(tenant, "gateways", json!({ "name": name }))
        .await
}

/// Records in the node's database that an instance of the gateway reported
/// at `at` (ms), as its polls record it: for tests of how instances are
/// shown, without running one.
pub(crate) async fn instance_seen(
    app: &TestApp,
    gateway: &str,
    name: &str,
    version: &str,
    at: i64,
) {
    node_store(app)
        .gateway_seen(herald_store::GatewaySeen {
            gateway_id: gateway.parse().unwrap(),
            name: name.into(),
            version: version.into(),
            address: "192.0.2.7".into(),
            at,
            incarnation: "first".into(),
        })
        .await
        .unwrap();
}

/// A server body, naming `gateway` when given.
fn server(name: &str, gateway: Option<&str>) -> Value {
    let mut body = json!({"name": name, "host": "mail.example.com", "port": 587});
    if let Some(g) = gateway {
        body["gateway_id"] = json!(g);
    }
    body
}

/// The actions of the tenant's audit log, and the log itself.
async fn audit_log(app: &TestApp, tenant: &TestTenant) -> (Vec<String>, Value) {
    let (status, audit) = app.get_as_admin(tenant, "audit").await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let actions = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str().map(str::to_owned))
        .collect();
    (actions, audit)
}

#[tokio::test]
async fn a_gateways_token_is_shown_once_and_a_new_one_ends_the_old() {
    let (app, acme) = app_with_acme().await;
    let created = create(&app, &acme, "office").await;
    let first = created["token"].as_str().unwrap().to_owned();
    assert!(first.starts_with(token::GATEWAY_TOKEN_PREFIX), "{created}");
    assert_eq!(created["name"], "office");
    assert_eq!(created["instances"], json!([]));
    assert_eq!(created["created_at"], created["token_created_at"]);
    let id = created["id"].as_str().unwrap().to_owned();
    let store = node_store(&app);
    assert_eq!(
        store
            .gateway_by_token(&token::hash(&first))
            .await
            .unwrap()
            .unwrap()
            .id
            .to_string(),
        id
    );

    let (status, shown) = app.get_as_admin(&acme, &format!("gateways/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let (status, listed) = app.get_as_admin(&acme, "gateways").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    let (status, replaced) = app
        .post_as_admin(&acme, &format!("gateways/{id}/token"), json!(null))
        .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    let second = replaced["token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(replaced["id"], id.as_str());
    // The old token finds nothing at once; the new one finds the gateway.
    assert!(
        store
            .gateway_by_token(&token::hash(&first))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .gateway_by_token(&token::hash(&second))
            .await
            .unwrap()
            .is_some()
    );

    let (actions, audit) = audit_log(&app, &acme).await;
    assert!(actions.contains(&"gateway.create".to_owned()), "{audit}");
    assert!(actions.contains(&"gateway.token".to_owned()), "{audit}");
    for answer in [&shown, &listed, &audit] {
        let text = answer.to_string();
        assert!(answer.get("token").is_none(), "{answer}");
        for secret in [&first, &second] {
            assert!(
                !text.contains(&secret[token::GATEWAY_TOKEN_PREFIX.len()..]),
                "{answer}"
            );
        }
    }

    let (status, _) = app.delete_as_admin(&acme, &format!("gateways/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get_as_admin(&acme, &format!("gateways/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (actions, audit) = audit_log(&app, &acme).await;
    assert!(actions.contains(&"gateway.delete".to_owned()), "{audit}");
}

#[tokio::test]
async fn gateway_names_follow_their_rules() {
    let (app, acme) = app_with_acme().await;
    for body in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "   "}),
        json!({"name": "a".repeat(101)}),
        json!({"name": "line\nbreak"}),
    ] {
        let (status, answer) = app.post_as_admin(&acme, "gateways", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        let fields: Vec<String> = field_errors(&answer).into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["name"], "{body}: {answer}");
    }
    let (status, answer) = app
        .post_as_admin(&acme, "gateways", json!({"name": "x", "token": "mine"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    create(&app, &acme, "office").await;
    let (status, answer) = app
        .post_as_admin(&acme, "gateways", json!({"name": "office"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    // Another tenant may use the same name.
    let globex = app.tenant("globex").await;
    create(&app, &globex, "office").await;
}

#[tokio::test]
async fn a_server_names_a_gateway_of_its_own_tenant_which_then_stays() {
    let (app, acme) = app_with_acme().await;
    let globex = app.tenant("globex").await;
    let ours = create(&app, &acme, "office").await;
    let ours = ours["id"].as_str().unwrap();
    let theirs = create(&app, &globex, "office").await;
    let theirs = theirs["id"].as_str().unwrap();

    for gateway in [theirs, "01900000-0000-7000-8000-000000000000", "not-an-id"] {
        let (status, answer) = app
            .post_as_admin(&acme, "smtp-servers", server("relay", Some(gateway)))
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{gateway}: {answer}"
        );
        let fields: Vec<String> = field_errors(&answer).into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["gateway_id"], "{answer}");
    }

    let relay = app
        .create_as_admin(&acme, "smtp-servers", server("relay", Some(ours)))
        .await;
    assert_eq!(relay["gateway_id"], ours);
    let relay = relay["id"].as_str().unwrap().to_owned();
    let (status, shown) = app
        .get_as_admin(&acme, &format!("smtp-servers/{relay}"))
        .await;
    assert_eq!(
        (status, &shown["gateway_id"]),
        (StatusCode::OK, &json!(ours))
    );

    // Another tenant's gateway is refused on a change too, and nothing changes.
    let (status, answer) = app
        .patch_as_admin(
            &acme,
            &format!("smtp-servers/{relay}"),
            json!({ "gateway_id": theirs }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");

    let (status, refused) = app
        .delete_as_admin(&acme, &format!("gateways/{ours}"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(refused.to_string().contains("relay"), "{refused}");

    // A change that names nothing keeps the gateway; a blank one clears it.
    let (status, kept) = app
        .patch_as_admin(
            &acme,
            &format!("smtp-servers/{relay}"),
            json!({"port": 2525}),
        )
        .await;
    assert_eq!(
        (status, &kept["gateway_id"]),
        (StatusCode::OK, &json!(ours))
    );
    let (status, cleared) = app
        .patch_as_admin(
            &acme,
            &format!("smtp-servers/{relay}"),
            json!({"gateway_id": ""}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert!(cleared["gateway_id"].is_null(), "{cleared}");
    let (status, _) = app
        .delete_as_admin(&acme, &format!("gateways/{ours}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn instances_show_whether_they_are_alive() {
    let (app, acme) = app_with_acme().await;
    let created = create(&app, &acme, "office").await;
    let id = created["id"].as_str().unwrap();
    let store = node_store(&app);
    let now = herald_core::timestamp::now_ms();
    for (name, at) in [("old", now - 24 * 3_600_000), ("fresh", now)] {
        instance_seen(&app, id, name, "1.0.0", at).await;
    }
    store
        .count_gateway_outcomes(id.parse().unwrap(), "fresh", 5, 2, now)
        .await
        .unwrap();
    let (status, shown) = app.get_as_admin(&acme, &format!("gateways/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let instances = shown["instances"].as_array().unwrap();
    let summary: Vec<(&str, bool, u64, u64)> = instances
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap(),
                i["alive"].as_bool().unwrap(),
                i["delivered_this_hour"].as_u64().unwrap(),
                i["failed_this_hour"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("fresh", true, 5, 2), ("old", false, 0, 0)],
        "{shown}"
    );
}
