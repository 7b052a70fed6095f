//! The tenant gate's answers, one route for each of its markers: `Sender`
//! (the tenant), `TenantAdmin` (a person, a route with a second path
//! parameter) and `Operator` (the entitlements). Each is called without a
//! token, with an unknown one, with a role the gate refuses, from another
//! tenant, for a tenant that does not exist, and by a caller it admits.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

const UNAUTHORIZED: &str = "urn:herald:problem:unauthorized";
const FORBIDDEN: &str = "urn:herald:problem:forbidden";
const NOT_FOUND: &str = "urn:herald:problem:not-found";

/// Calls `path` (with `{t}` for the tenant's slug) and returns the status and
/// the problem type, or `None` for an answer that is not a problem.
async fn answer(
    app: &TestApp,
    method: Method,
    path: &str,
    slug: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Option<String>) {
    let (status, body) = app
        .call(method, &path.replace("{t}", slug), token, body)
        .await;
    let kind = body["type"].as_str().map(str::to_owned);
    (status, kind)
}

fn problem(status: StatusCode, kind: &str) -> (StatusCode, Option<String>) {
    (status, Some(kind.to_owned()))
}

#[tokio::test]
async fn the_gate_answers_401_403_404_or_lets_the_caller_through() {
    let (app, acme) = app_with_acme().await;
    let globex = app.tenant("globex").await;
    let (status, persons) = app.get_as_admin(&acme, "persons").await;
    assert_eq!(status, StatusCode::OK, "{persons}");
    let person = persons[0]["id"]
        .as_str()
        .expect("the admin person")
        .to_owned();

    let unauthorized = problem(StatusCode::UNAUTHORIZED, UNAUTHORIZED);
    let forbidden = problem(StatusCode::FORBIDDEN, FORBIDDEN);
    let not_found = problem(StatusCode::NOT_FOUND, NOT_FOUND);
    let unknown = "hrld_no_such_token_0123456789abcdef0123";

    // Sender: every role of the tenant passes; nobody else learns the tenant exists.
    let get = "/v1/tenants/{t}";
    let ok = (StatusCode::OK, None);
    let sender = [
        ("acme", None, &unauthorized),
        ("acme", Some(unknown), &unauthorized),
        ("acme", Some(globex.admin.as_str()), &not_found),
        ("acme", Some(globex.sender.as_str()), &not_found),
        ("initech", Some(acme.admin.as_str()), &not_found),
        ("initech", Some(acme.sender.as_str()), &not_found),
        ("acme", Some(acme.admin.as_str()), &ok),
        ("acme", Some(acme.sender.as_str()), &ok),
        ("acme", Some(OPERATOR), &ok),
    ];
    for (slug, token, expected) in sender {
        let got = answer(&app, Method::GET, get, slug, token, None).await;
        assert_eq!(&got, expected, "GET {get} of {slug} with {token:?}");
    }

    // TenantAdmin, on a route with a second path parameter after the tenant.
    let show = format!("/v1/tenants/{{t}}/persons/{person}");
    let admin = [
        ("acme", None, &unauthorized),
        ("acme", Some(unknown), &unauthorized),
        ("acme", Some(acme.sender.as_str()), &forbidden),
        ("acme", Some(globex.admin.as_str()), &not_found),
        ("acme", Some(globex.sender.as_str()), &not_found),
        ("initech", Some(acme.admin.as_str()), &not_found),
        ("acme", Some(acme.admin.as_str()), &ok),
        ("acme", Some(OPERATOR), &ok),
    ];
    for (slug, token, expected) in admin {
        let got = answer(&app, Method::GET, &show, slug, token, None).await;
        assert_eq!(&got, expected, "GET {show} of {slug} with {token:?}");
    }

    // Operator: a tenant's own token is refused before its tenant is looked at.
    let put = "/v1/tenants/{t}/entitlements";
    let body = json!({"credential_storage": true});
    let operator = [
        ("acme", None, &unauthorized),
        ("acme", Some(unknown), &unauthorized),
        ("acme", Some(acme.admin.as_str()), &forbidden),
        ("acme", Some(acme.sender.as_str()), &forbidden),
        ("acme", Some(globex.admin.as_str()), &forbidden),
        ("initech", Some(OPERATOR), &not_found),
        ("acme", Some(OPERATOR), &ok),
    ];
    for (slug, token, expected) in operator {
        let got = answer(&app, Method::PUT, put, slug, token, Some(body.clone())).await;
        assert_eq!(&got, expected, "PUT {put} of {slug} with {token:?}");
    }
}
