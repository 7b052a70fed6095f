//! `allow_plaintext_auth` on an SMTP server entry, and the warnings a weak
//! entry earns in the API's answer, a test message's diagnosis and the console.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// The messages of a server answer's warnings.
fn warnings(server: &Value) -> Vec<String> {
    server["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings list: {server}"))
        .iter()
        .map(|w| w["message"].as_str().unwrap().to_owned())
        .collect()
}

/// The codes of a server answer's warnings.
fn codes(server: &Value) -> Vec<String> {
    server["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings list: {server}"))
        .iter()
        .map(|w| w["code"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_server_answer_warns_about_a_password_in_clear_and_an_unchecked_certificate() {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    let servers = "/v1/tenants/acme/smtp-servers";

    let (status, clear) = app
        .post(
            servers,
            &acme.admin,
            json!({"name": "clear", "host": "mail.acme.example", "port": 25, "security": "none", "requires_auth": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{clear}");
    assert_eq!(clear["allow_plaintext_auth"], false, "{clear}");
    let said = warnings(&clear);
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(codes(&clear), ["plaintext_auth_refused"]);
    assert!(
        said[0].contains("the password would travel unencrypted")
            && said[0].contains("AUTH is refused unless allow_plaintext_auth is true"),
        "{said:?}"
    );

    let path = format!("{servers}/{}", clear["id"].as_str().unwrap());
    let (status, allowed) = app
        .call(
            Method::PATCH,
            &path,
            Some(&acme.admin),
            Some(json!({"allow_plaintext_auth": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{allowed}");
    assert_eq!(allowed["allow_plaintext_auth"], true);
    assert!(
        warnings(&allowed)[0].contains("the password travels unencrypted"),
        "{allowed}"
    );
    assert_eq!(codes(&allowed), ["plaintext_auth"]);
    let (_, shown) = app.get(&path, &acme.admin).await;
    assert_eq!(shown["allow_plaintext_auth"], true);
    assert_eq!(warnings(&shown), warnings(&allowed));

    let (status, unchecked) = app
        .post(
            servers,
            &acme.admin,
            json!({"name": "unchecked", "host": "mail.acme.example", "port": 587, "tls_verify": false}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{unchecked}");
    assert!(
        warnings(&unchecked)[0].contains("tls_verify is false"),
        "{unchecked}"
    );
    assert_eq!(codes(&unchecked), ["tls_not_verified"]);

    let (status, sound) = app
        .post(
            servers,
            &acme.admin,
            json!({"name": "sound", "host": "mail.acme.example", "port": 587, "requires_auth": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sound}");
    assert!(warnings(&sound).is_empty(), "{sound}");

    let (_, list) = app.get(servers, &acme.admin).await;
    let listed: Vec<usize> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| warnings(s).len())
        .collect();
    assert_eq!(listed, vec![1, 1, 0], "{list}");

    // A wrong type names the field, and nothing changes.
    let (status, problem) = app
        .call(
            Method::PATCH,
            &path,
            Some(&acme.admin),
            Some(json!({"allow_plaintext_auth": "yes"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("allow_plaintext_auth"),
        "{problem}"
    );
    assert_eq!(
        app.get(&path, &acme.admin).await.1["allow_plaintext_auth"],
        true
    );
}

/// A test message's diagnosis tells the warnings about its server entry first.
#[tokio::test]
async fn a_test_messages_diagnosis_warns_that_the_password_travels_in_clear() {
    let smtp = clear_auth_server("right-pw").await;
    let app = spawn_app().await;
    let entry = clear_auth_entry(smtp.port(), true);
    let acme = app
        .configured_tenant("acme", entry, Some(account_with("right-pw")))
        .await;
    let id = app.first_provider_id(&acme).await;
    let (status, answer) = app.test_provider(&acme, &id, json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let message = app
        .wait_for_status(&acme, answer["message_id"].as_str().unwrap(), "sent")
        .await;
    let steps = message["recipients"][0]["attempts"][0]["diagnosis"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no diagnosis: {message}"));
    assert_eq!(steps[0]["step"], "settings", "{steps:?}");
    assert!(
        steps[0]["detail"]
            .as_str()
            .unwrap()
            .contains("the password travels unencrypted"),
        "{steps:?}"
    );
}

/// Needs the SMTP client's refusal of AUTH over plaintext: the server entry's
/// `allow_plaintext_auth` reaches the client through the route.
#[tokio::test]
async fn auth_in_clear_goes_out_only_where_the_server_entry_allows_it() {
    for allowed in [false, true] {
        let smtp = clear_auth_server("right-pw").await;
        let app = spawn_app().await;
        let entry = clear_auth_entry(smtp.port(), allowed);
        let acme = app
            .configured_tenant("acme", entry, Some(account_with("right-pw")))
            .await;
        let id = app.submit_to(&acme, "a@acme.example", "x").await;
        let message = app.wait_for_attempts(&acme, &id, 1).await;
        let attempt = first_attempt_of(&message);
        let logins = smtp
            .commands()
            .iter()
            .filter(|c| c.starts_with("AUTH"))
            .count();
        if allowed {
            assert_eq!(attempt["outcome"], "sent", "{attempt}");
        } else {
            assert_eq!(attempt["step"], "auth", "{attempt}");
            assert_ne!(attempt["outcome"], "sent", "{attempt}");
            assert_eq!(logins, 0, "{:?}", smtp.commands());
        }
    }
}

/// The console's server page shows the entry's warnings and lets the
/// administrator allow AUTH in clear, explained beside the checkbox.
#[tokio::test]
async fn the_console_server_page_shows_the_warnings_and_the_choice() {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    let (_, persons) = app.get("/v1/tenants/acme/persons", OPERATOR).await;
    let admin = persons[0]["id"].as_str().unwrap();
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/v1/tenants/acme/persons/{admin}/password"),
            Some(OPERATOR),
            Some(json!({"password": "admin console password"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let body = json!({"name": "clear", "host": "mail.acme.example", "port": 25, "security": "none", "requires_auth": true});
    let (_, server) = app.post_as_admin(&acme, "smtp-servers", body).await;
    let id = server["id"].as_str().unwrap();

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = &app.base;
    let form = http.get(format!("{base}/sign-in")).send().await.unwrap();
    let cookie = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(|v| v.split(';').next().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no {name} cookie"))
    };
    let csrf = |html: &str| {
        let start = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
        html[start..].split('"').next().unwrap().to_owned()
    };
    let sign_in_cookie = cookie(&form, "herald_sign_in");
    let token = csrf(&form.text().await.unwrap());
    let signed = http
        .post(format!("{base}/sign-in"))
        .header("cookie", sign_in_cookie)
        .form(&[
            ("csrf", token.as_str()),
            ("email", "admin@acme.example"),
            ("password", "admin console password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let session = cookie(&signed, "herald_session");

    let page = format!("{base}/t/acme/servers/{id}");
    let html = http
        .get(&page)
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("AUTH is refused unless allow_plaintext_auth is true"),
        "{html}"
    );
    assert!(html.contains("name=\"allow_plaintext_auth\""), "{html}");
    assert!(
        html.contains("the password then travels unencrypted"),
        "{html}"
    );

    // Ticking the box stores the choice, and the warning says what it means now.
    let saved = http
        .post(&page)
        .header("cookie", &session)
        .form(&[
            ("csrf", csrf(&html).as_str()),
            ("name", "clear"),
            ("host", "mail.acme.example"),
            ("port", "25"),
            ("security", "none"),
            ("requires_auth", "on"),
            ("allow_plaintext_auth", "on"),
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
    let (_, stored) = app
        .get(&format!("/v1/tenants/acme/smtp-servers/{id}"), &acme.admin)
        .await;
    assert_eq!(stored["allow_plaintext_auth"], true, "{stored}");
    let html = http
        .get(&page)
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("the password travels unencrypted"), "{html}");
}
