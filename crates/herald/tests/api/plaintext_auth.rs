//! `allow_plaintext_auth` on an SMTP server entry, and the warnings a weak
//! entry earns in the API's answer, a test message's diagnosis and the console.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::console_http::{HttpSession, csrf_field, give_password};
use crate::helpers::*;

/// The messages of a server answer's warnings.
fn warnings(server: &Value) -> Vec<String> {
    server_warnings(server)
        .into_iter()
        .map(|(_, m)| m)
        .collect()
}

/// The codes of a server answer's warnings.
fn codes(server: &Value) -> Vec<String> {
    server_warnings(server)
        .into_iter()
        .map(|(c, _)| c)
        .collect()
}

#[tokio::test]
async fn the_server_answer_warns_about_a_password_in_clear_and_an_unchecked_certificate() {
    let (app, acme) = app_with_acme().await;
    let clear = app
        .create_smtp_server(
            &acme,
            json!({"name": "clear", "host": "mail.acme.example", "port": 25, "security": "none", "requires_auth": true}),
        )
        .await;
    assert_eq!(clear["allow_plaintext_auth"], false, "{clear}");
    let said = warnings(&clear);
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(codes(&clear), ["plaintext_auth_refused"]);
    assert!(
        said[0].contains("the password would travel unencrypted")
            && said[0].contains("AUTH is refused unless allow_plaintext_auth is true"),
        "{said:?}"
    );

    let server = format!("smtp-servers/{}", clear["id"].as_str().unwrap());
    let (status, allowed) = app
        .patch_as_admin(&acme, &server, json!({"allow_plaintext_auth": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{allowed}");
    assert_eq!(allowed["allow_plaintext_auth"], true);
    assert!(
        warnings(&allowed)[0].contains("the password travels unencrypted"),
        "{allowed}"
    );
    assert_eq!(codes(&allowed), ["plaintext_auth"]);
    let (_, shown) = app.get_as_admin(&acme, &server).await;
    assert_eq!(shown["allow_plaintext_auth"], true);
    assert_eq!(warnings(&shown), warnings(&allowed));

    let unchecked = app
        .create_smtp_server(
            &acme,
            json!({"name": "unchecked", "host": "mail.acme.example", "port": 587, "tls_verify": false}),
        )
        .await;
    assert!(
        warnings(&unchecked)[0].contains("tls_verify is false"),
        "{unchecked}"
    );
    assert_eq!(codes(&unchecked), ["tls_not_verified"]);

    let sound = app
        .create_smtp_server(
            &acme,
            json!({"name": "sound", "host": "mail.acme.example", "port": 587, "requires_auth": true}),
        )
        .await;
    assert!(warnings(&sound).is_empty(), "{sound}");

    let (_, list) = app.get_as_admin(&acme, "smtp-servers").await;
    let listed: Vec<usize> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| warnings(s).len())
        .collect();
    assert_eq!(listed, vec![1, 1, 0], "{list}");

    // A wrong type names the field, and nothing changes.
    let (status, problem) = app
        .patch_as_admin(&acme, &server, json!({"allow_plaintext_auth": "yes"}))
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
        app.get_as_admin(&acme, &server).await.1["allow_plaintext_auth"],
        true
    );
}

/// A test message's diagnosis tells the warnings about its server entry first.
#[tokio::test]
async fn a_test_messages_diagnosis_warns_that_the_password_travels_in_clear() {
    let smtp = clear_auth_server("right-pw").await;
    let app = spawn_app().await;
    let acme = app.clear_auth_tenant(&smtp, true, "right-pw").await;
    let id = app.send_test_message(&acme, json!({})).await;
    let message = app.wait_for_status(&acme, &id, "sent").await;
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
        let acme = app.clear_auth_tenant(&smtp, allowed, "right-pw").await;
        let id = app.submit_to(&acme, "a@acme.example", "x").await;
        let message = app.wait_for_attempts(&acme, &id, 1).await;
        let attempt = first_attempt_of(&message);
        let logins = smtp
            .commands()
            .iter()
            .filter(|c| c.starts_with("AUTH"))
            .count();
        if allowed {
            assert_eq!(attempt["outcome"], "sent", "allowed: {attempt}");
        } else {
            assert_eq!(attempt["step"], "auth", "not allowed: {attempt}");
            assert_ne!(attempt["outcome"], "sent", "not allowed: {attempt}");
            assert_eq!(logins, 0, "not allowed: {:?}", smtp.commands());
        }
    }
}

/// The console's server page shows the entry's warnings and lets the
/// administrator allow AUTH in clear, explained beside the checkbox.
#[tokio::test]
async fn the_console_server_page_shows_the_warnings_and_the_choice() {
    let (app, acme) = app_with_acme().await;
    give_password(&app, "acme", "admin@acme.example", "admin console password").await;
    let body = json!({"name": "clear", "host": "mail.acme.example", "port": 25, "security": "none", "requires_auth": true});
    let (_, server) = app.post_as_admin(&acme, "smtp-servers", body).await;
    let id = server["id"].as_str().unwrap();

    let page = format!("/t/acme/servers/{id}");
    let mut admin = HttpSession::sign_in(
        &app,
        "admin@acme.example",
        "admin console password",
        "/t/acme",
    )
    .await;
    let html = admin.get(&page).await.html;
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
    admin.csrf = csrf_field(&html);
    let saved = admin
        .post(
            &page,
            &[
                ("name", "clear"),
                ("host", "mail.acme.example"),
                ("port", "25"),
                ("security", "none"),
                ("requires_auth", "on"),
                ("allow_plaintext_auth", "on"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.html);
    let (_, stored) = app
        .get(&format!("/v1/tenants/acme/smtp-servers/{id}"), &acme.admin)
        .await;
    assert_eq!(stored["allow_plaintext_auth"], true, "{stored}");
    let html = admin.get(&page).await.html;
    assert!(html.contains("the password travels unencrypted"), "{html}");
}
