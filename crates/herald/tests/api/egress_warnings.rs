//! The egress guard made visible: saving an SMTP server whose host the guard
//! refuses answers a warning naming the rule (API and console), and the
//! delivery the guard refuses names the same rule.

use herald_smtp::Egress;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

const LOOPBACK: &str =
    "loopback addresses are refused; the operator may allow them with --egress-allow";

/// A node with the built-in egress rules only: loopback is refused.
async fn guarded_app() -> TestApp {
    spawn_app_with(|s| s.egress = Egress::default()).await
}

/// The `egress_refused` warnings of a server answer.
fn egress_warnings(server: &Value) -> Vec<String> {
    server["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings list: {server}"))
        .iter()
        .filter(|w| w["code"] == "egress_refused")
        .map(|w| w["message"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn saving_a_server_the_guard_refuses_answers_a_warning_naming_the_rule() {
    let app = guarded_app().await;
    let acme = app.tenant("acme").await;
    let servers = "/v1/tenants/acme/smtp-servers";

    // An address: judged at once. The server is saved all the same.
    let (status, literal) = app
        .post(
            servers,
            &acme.admin,
            json!({"name": "local", "host": "127.0.0.1", "port": 25, "security": "none"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{literal}");
    let said = egress_warnings(&literal);
    assert_eq!(said.len(), 1, "{literal}");
    assert!(
        said[0].starts_with("127.0.0.1 is an address") && said[0].ends_with(LOOPBACK),
        "{said:?}"
    );

    // A name: judged on what it resolves to.
    let (status, named) = app
        .post(
            servers,
            &acme.admin,
            json!({"name": "named", "host": "localhost", "port": 25, "security": "none"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{named}");
    let said = egress_warnings(&named);
    assert_eq!(said.len(), 1, "{named}");
    assert!(
        said[0].starts_with("localhost resolves only to addresses") && said[0].ends_with(LOOPBACK),
        "{said:?}"
    );

    // A private address is allowed, and a name that does not resolve gives no warning.
    let path = format!("{servers}/{}", literal["id"].as_str().unwrap());
    for host in ["10.0.0.25", "relay.herald-test.invalid"] {
        let (status, changed) = app
            .call(
                Method::PATCH,
                &path,
                Some(&acme.admin),
                Some(json!({"host": host})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{changed}");
        assert!(egress_warnings(&changed).is_empty(), "{host}: {changed}");
    }
    // A change back to a refused address warns again, with the rule of the range.
    let (status, metadata) = app
        .call(
            Method::PATCH,
            &path,
            Some(&acme.admin),
            Some(json!({"host": "169.254.169.254"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{metadata}");
    let said = egress_warnings(&metadata);
    assert!(
        said.len() == 1 && said[0].contains("link-local addresses are refused"),
        "{metadata}"
    );

    // Where the operator allows loopback, nothing is said.
    let allowing = spawn_app().await;
    let other = allowing.tenant("acme").await;
    let (status, allowed) = allowing
        .post(
            servers,
            &other.admin,
            json!({"name": "local", "host": "127.0.0.1", "port": 25, "security": "none"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{allowed}");
    assert!(egress_warnings(&allowed).is_empty(), "{allowed}");
}

/// A sign-in to the console over plain HTTP; returns the session cookie.
async fn console_session(app: &TestApp, http: &reqwest::Client, email: &str) -> String {
    let (_, persons) = app.get("/v1/tenants/acme/persons", OPERATOR).await;
    let person = persons[0]["id"].as_str().unwrap();
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/v1/tenants/acme/persons/{person}/password"),
            Some(OPERATOR),
            Some(json!({"password": "admin console password"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let base = &app.base;
    let form = http.get(format!("{base}/sign-in")).send().await.unwrap();
    let sign_in_cookie = cookie(&form, "herald_sign_in");
    let token = csrf(&form.text().await.unwrap());
    let signed = http
        .post(format!("{base}/sign-in"))
        .header("cookie", sign_in_cookie)
        .form(&[
            ("csrf", token.as_str()),
            ("email", email),
            ("password", "admin console password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    cookie(&signed, "herald_session")
}

fn cookie(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no {name} cookie"))
}

fn csrf(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_console_shows_the_warning_after_saving() {
    let app = guarded_app().await;
    app.tenant("acme").await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let session = console_session(&app, &http, "admin@acme.example").await;
    let base = &app.base;
    let get = |path: String| {
        let (http, session) = (&http, &session);
        async move {
            let page = http
                .get(format!("{base}{path}"))
                .header("cookie", session)
                .send()
                .await
                .unwrap();
            assert_eq!(page.status(), StatusCode::OK, "{path}");
            page.text().await.unwrap()
        }
    };
    let new = get("/t/acme/servers/new".into()).await;
    let saved = http
        .post(format!("{base}/t/acme/servers"))
        .header("cookie", &session)
        .form(&[
            ("csrf", csrf(&new).as_str()),
            ("name", "local"),
            ("host", "127.0.0.1"),
            ("port", "25"),
            ("security", "none"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        saved.status(),
        StatusCode::SEE_OTHER,
        "{}",
        saved.text().await.unwrap()
    );
    let location = saved.headers()["location"].to_str().unwrap().to_owned();
    let page = get(location.clone()).await;
    assert!(
        page.contains("127.0.0.1 is an address this installation") && page.contains(LOOPBACK),
        "{page}"
    );

    // Saving the same server with an allowed address says nothing of the guard.
    let changed = http
        .post(format!("{base}{}", location.split('?').next().unwrap()))
        .header("cookie", &session)
        .form(&[
            ("csrf", csrf(&page).as_str()),
            ("name", "local"),
            ("host", "10.0.0.25"),
            ("port", "25"),
            ("security", "none"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::SEE_OTHER);
    let location = changed.headers()["location"].to_str().unwrap().to_owned();
    let page = get(location).await;
    assert!(!page.contains("egress policy"), "{page}");
}

#[tokio::test]
async fn the_refused_delivery_names_the_same_rule() {
    let app = guarded_app().await;
    let acme = app.tenant("acme").await;
    app.configure(
        &acme,
        json!({"name": "local", "host": "127.0.0.1", "port": 25, "security": "none"}),
        None,
    )
    .await;
    let (_, providers) = app.get("/v1/tenants/acme/providers", &acme.admin).await;
    let provider = providers[0]["id"].as_str().unwrap();
    let (status, test) = app
        .post(
            &format!("/v1/tenants/acme/providers/{provider}/test"),
            &acme.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{test}");
    let id = test["message_id"].as_str().unwrap();
    let message = app.wait_for_status(&acme, id, "failed").await;
    let attempt = &message["recipients"][0]["attempts"][0];
    let response = attempt["response"].as_str().unwrap();
    assert!(
        response.contains("not allowed by this installation's egress policy")
            && response.ends_with(LOOPBACK),
        "{attempt}"
    );
    assert!(attempt["remote_addr"].is_null(), "nothing was connected to");
}
