//! Refused requests: bad JSON, bad fields, header injection, missing or foreign tenants and
//! tokens, roles and entitlements each get the right 4xx as problem+json naming the cause,
//! and none of them stores anything.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// A response as a client sees it, headers included.
struct Reply {
    status: StatusCode,
    content_type: Option<String>,
    www_authenticate: Option<String>,
    text: String,
    body: Value,
}

/// Sends a request with an optional token and an optional raw body with its content type.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<(Option<&str>, String)>,
) -> Reply {
    let mut request = app.client.request(method, format!("{}{path}", app.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some((content_type, body)) = body {
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request = request.body(body);
    }
    let response = request.send().await.expect("the request reaches the node");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("an ASCII header").to_owned())
    };
    let content_type = header("content-type");
    let www_authenticate = header("www-authenticate");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        content_type,
        www_authenticate,
        text,
        body,
    }
}

/// Posts `text` as it is, declared JSON.
async fn post_text(app: &TestApp, path: &str, token: &str, text: &str) -> Reply {
    send(
        app,
        Method::POST,
        path,
        Some(token),
        Some((Some("application/json"), text.to_owned())),
    )
    .await
}

/// Sends a JSON body.
async fn send_json(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> Reply {
    send(
        app,
        method,
        path,
        token,
        Some((Some("application/json"), body.to_string())),
    )
    .await
}

/// Asserts a problem+json answer with this status and type, and returns its detail.
fn assert_problem(reply: &Reply, status: StatusCode, kind: &str) -> String {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(
        reply.content_type.as_deref(),
        Some("application/problem+json"),
        "{}",
        reply.text
    );
    assert_eq!(reply.body["type"], kind, "{}", reply.text);
    assert_eq!(reply.body["status"], status.as_u16(), "{}", reply.text);
    let detail = reply.body["detail"].as_str().unwrap_or_default().to_owned();
    assert!(
        !detail.is_empty(),
        "a problem without a detail: {}",
        reply.text
    );
    detail
}

/// Asserts a 400 malformed-request problem and returns its detail.
fn assert_malformed(reply: &Reply) -> String {
    assert_problem(
        reply,
        StatusCode::BAD_REQUEST,
        "urn:herald:problem:malformed-request",
    )
}

/// Asserts a 404 not-found problem and returns its detail.
fn assert_not_found(reply: &Reply) -> String {
    assert_problem(reply, StatusCode::NOT_FOUND, "urn:herald:problem:not-found")
}

/// Asserts a 403 forbidden problem and returns its detail.
fn assert_forbidden(reply: &Reply) -> String {
    assert_problem(reply, StatusCode::FORBIDDEN, "urn:herald:problem:forbidden")
}

/// Asserts a 401 unauthorized problem and returns its detail.
fn assert_unauthorized(reply: &Reply) -> String {
    assert_problem(
        reply,
        StatusCode::UNAUTHORIZED,
        "urn:herald:problem:unauthorized",
    )
}

/// Asserts a 422 that names `field` in `errors` and in the detail, and returns the field's rule.
fn assert_invalid_field(reply: &Reply, field: &str) -> String {
    let detail = assert_problem(
        reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "urn:herald:problem:invalid-fields",
    );
    assert!(
        detail.contains(field),
        "the detail {detail:?} does not name {field}"
    );
    let errors = reply.body["errors"].as_array().expect("an errors array");
    let error = errors
        .iter()
        .find(|e| e["field"] == field)
        .unwrap_or_else(|| panic!("no error for {field}: {}", reply.text));
    let rule = error["rule"].as_str().unwrap_or_default().to_owned();
    assert!(!rule.is_empty(), "no rule for {field}: {}", reply.text);
    rule
}

/// The fields a 422 names, in order.
fn fields(reply: &Reply) -> Vec<String> {
    reply.body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn messages_path(tenant: &TestTenant) -> String {
    format!("/v1/tenants/{}/messages", tenant.slug)
}

/// POSTs `body` as JSON with `token`.
async fn post_as(app: &TestApp, path: &str, token: &str, body: Value) -> Reply {
    send_json(app, Method::POST, path, Some(token), body).await
}

/// GETs `path` with `token`.
async fn get_as(app: &TestApp, path: &str, token: &str) -> Reply {
    send(app, Method::GET, path, Some(token), None).await
}

/// Submits `body` as JSON with the tenant's sender token.
async fn post_message(app: &TestApp, tenant: &TestTenant, body: Value) -> Reply {
    send_json(
        app,
        Method::POST,
        &messages_path(tenant),
        Some(&tenant.sender),
        body,
    )
    .await
}

/// A message that would be accepted.
/// A valid SMTP server entry, `relay`.
fn relay() -> Value {
    json!({"name": "relay", "host": "mail.acme.example", "port": 587, "security": "starttls"})
}

fn valid_message() -> Value {
    json!({"to": ["user@acme.example"], "subject": "Disk full", "text": "92% used"})
}

/// The valid message with `key` set to `value`.
fn valid_message_with(key: &str, value: Value) -> Value {
    let mut message = valid_message();
    message[key] = value;
    message
}

/// A tenant holding one accepted message, so "nothing stored" means "still exactly one".
async fn tenant_with_one_message(app: &TestApp, slug: &str) -> TestTenant {
    let tenant = app.tenant(slug).await;
    app.submit(&tenant, valid_message()).await;
    assert_eq!(app.message_count(&tenant).await, 1);
    tenant
}

/// A node with tenant `acme` holding one accepted message.
async fn app_with_one_message() -> (TestApp, TestTenant) {
    let app = spawn_app().await;
    let acme = tenant_with_one_message(&app, "acme").await;
    (app, acme)
}

/// Asserts that the tenant still holds exactly its one message: nothing was stored.
async fn assert_still_one_message(app: &TestApp, tenant: &TestTenant) {
    assert_eq!(app.message_count(tenant).await, 1);
}

/// Lists a tenant's objects (`smtp-servers`, `providers`) with its admin token.
async fn list(app: &TestApp, tenant: &TestTenant, what: &str) -> Vec<Value> {
    let (status, body) = app.get_as_admin(tenant, what).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().expect("a list").clone()
}

/// Creates an SMTP server for the tenant and returns its id.
async fn create_server(app: &TestApp, tenant: &TestTenant, body: Value) -> String {
    let server = app.create_as_admin(tenant, "smtp-servers", body).await;
    server["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn malformed_json_is_a_400_and_stores_nothing() {
    let (app, acme) = app_with_one_message().await;

    for broken in [
        r#"{"to": ["user@acme.example"], "subject": "Disk full", "#,
        "",
        "not json",
        "[1, 2",
        // Well-formed, but an array where the body must be an object.
        r#"[["user@acme.example"], [], [], "Disk full", "x"]"#,
    ] {
        let reply = post_text(&app, &messages_path(&acme), &acme.sender, broken).await;
        let detail = assert_malformed(&reply);
        assert!(detail.contains("not valid"), "{broken:?}: {detail}");
    }
    assert_still_one_message(&app, &acme).await;
}

#[tokio::test]
async fn a_body_not_sent_as_json_is_a_415_and_stores_nothing() {
    let (app, acme) = app_with_one_message().await;
    let valid = valid_message().to_string();

    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let reply = send(
            &app,
            Method::POST,
            &messages_path(&acme),
            Some(&acme.sender),
            Some((content_type, valid.clone())),
        )
        .await;
        let detail = assert_problem(
            &reply,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "urn:herald:problem:unsupported-media-type",
        );
        assert!(
            detail.contains("application/json"),
            "{content_type:?}: {detail}"
        );
    }
    assert_still_one_message(&app, &acme).await;

    // The same body with a JSON content type (parameters allowed) is accepted:
    // the refusals above were about the content type alone.
    let (status, body) = app
        .call_raw(
            &messages_path(&acme),
            &acme.sender,
            "application/json; charset=utf-8",
            &valid,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(app.message_count(&acme).await, 2);
}

#[tokio::test]
async fn a_missing_field_is_a_422_naming_it_on_every_route() {
    let (app, acme) = app_with_one_message().await;
    // Routes whose body serde reads with required fields, and routes whose
    // handler checks them: both answer alike.
    for (path, token, field) in [
        ("/v1/tenants".to_owned(), OPERATOR, "slug"),
        (
            "/v1/tenants/acme/persons".to_owned(),
            acme.admin.as_str(),
            "name",
        ),
        (
            "/v1/tenants/acme/smtp-servers".to_owned(),
            acme.admin.as_str(),
            "name",
        ),
        (messages_path(&acme), acme.sender.as_str(), "subject"),
    ] {
        let body = if path.ends_with("/messages") {
            json!({"to": ["user@acme.example"], "text": "x"})
        } else {
            json!({})
        };
        let reply = post_as(&app, &path, token, body).await;
        let rule = assert_invalid_field(&reply, field);
        assert!(rule.contains("required"), "{path}: {rule}");
    }
    assert_still_one_message(&app, &acme).await;
}

#[tokio::test]
async fn a_value_of_the_wrong_type_is_never_repeated_in_the_answer() {
    let (app, acme) = app_with_one_message().await;
    // A password or secret sent as a number must not come back in the error.
    let server = create_server(&app, &acme, relay()).await;
    let reply = post_as(
        &app,
        &format!("/v1/tenants/acme/smtp-servers/{server}/accounts"),
        &acme.admin,
        json!({"username": "ada", "password": 8_675_309_123_u64}),
    )
    .await;
    let detail = assert_malformed(&reply);
    assert!(detail.contains("password"), "{detail}");
    assert!(!reply.text.contains("8675309123"), "{}", reply.text);
    let reply = post_message(
        &app,
        &acme,
        valid_message_with("subject", json!("a, expected b, \"sneaky\"")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let reply = post_message(
        &app,
        &acme,
        valid_message_with("text", json!(["top-secret"])),
    )
    .await;
    let detail = assert_malformed(&reply);
    assert!(detail.contains("field text"), "{detail}");
    assert!(!reply.text.contains("top-secret"), "{}", reply.text);
    // A number JSON cannot hold names its field too.
    let reply = post_text(
        &app,
        "/v1/tenants/acme/smtp-servers",
        &acme.admin,
        r#"{"name": "r", "host": "mail.acme.example", "port": 1e400}"#,
    )
    .await;
    let detail = assert_malformed(&reply);
    assert!(detail.contains("field port"), "{detail}");
}

#[tokio::test]
async fn a_key_given_twice_is_refused_not_dropped() {
    let (app, acme) = app_with_one_message().await;
    // Header names: the same as a name given twice in another case.
    let body = r#"{"to": ["user@acme.example"], "subject": "s", "text": "x",
        "headers": {"X-Dup": "first", "X-Dup": "second"}}"#;
    let reply = post_text(&app, &messages_path(&acme), &acme.sender, body).await;
    let rule = assert_invalid_field(&reply, "headers.X-Dup");
    assert!(rule.contains("twice"), "{rule}");
    // Free-form data, at any depth.
    let body = r#"{"to": ["user@acme.example"], "template": "t",
        "data": {"host": {"name": "a", "name": "b"}}}"#;
    let reply = post_text(&app, &messages_path(&acme), &acme.sender, body).await;
    let detail = assert_malformed(&reply);
    assert!(
        detail.contains("data") && detail.contains("`name` is given twice"),
        "{detail}"
    );
    // A field of a message in a batch: that message is refused, the others go.
    let body = r#"{"messages": [
        {"to": ["a@acme.example"], "subject": "one", "text": "x"},
        {"to": ["b@acme.example"], "subject": "two", "subject": "three", "text": "x"}]}"#;
    let reply = post_text(
        &app,
        &format!("{}/batch", messages_path(&acme)),
        &acme.sender,
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(
        reply.text.contains("`subject` is given twice"),
        "{}",
        reply.text
    );
    assert_still_one_message(&app, &acme).await;
}

#[tokio::test]
async fn a_nested_part_given_as_an_array_is_refused() {
    let (app, acme) = app_with_one_message().await;
    // An attachment as the list of its fields in order, not an object.
    let message = valid_message_with(
        "attachments",
        json!([["a.txt", "text/plain", "aGVsbG8=", null]]),
    );
    let reply = post_message(&app, &acme, message).await;
    let detail = assert_malformed(&reply);
    assert!(
        detail.contains("attachments[0]") && detail.contains("an object"),
        "{detail}"
    );
    // A batch's message likewise: that message is refused, the other goes.
    let positional = json!([
        ["b@acme.example"],
        [],
        [],
        "s",
        "x",
        null,
        null,
        null,
        null,
        null,
        null,
        {},
        null,
        []
    ]);
    let (status, batch) = app
        .submit_batch(&acme, vec![positional, valid_message()])
        .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["accepted"], 1, "{batch}");
    let error = &batch["results"][0]["error"];
    assert_eq!(
        error["type"], "urn:herald:problem:malformed-request",
        "{batch}"
    );
    assert!(
        error["detail"].as_str().unwrap().contains("an object"),
        "{batch}"
    );
    assert_eq!(app.message_count(&acme).await, 2);
}

#[tokio::test]
async fn a_chunked_body_without_a_content_type_is_not_ignored() {
    let (app, acme) = app_with_one_message().await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let chunk = r#"{"to": ["user@acme.example"], "subject": "s", "text": "x"}"#;
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        messages_path(&acme),
        acme.sender,
        chunk.len()
    );
    let answer = raw_exchange(&addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer}");
    // On a route whose body is optional, a chunked body is not taken for
    // none: the test message is not sent to the default recipient.
    let server = create_server(&app, &acme, relay()).await;
    let provider = app
        .create_as_admin(
            &acme,
            "providers",
            json!({"name": "corporate", "smtp_server_id": server, "from_address": "alerts@acme.example"}),
        )
        .await;
    let provider = provider["id"].as_str().unwrap();
    let request = format!(
        "POST /v1/tenants/acme/providers/{provider}/test HTTP/1.1\r\nHost: herald\r\n\
         Authorization: Bearer {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{chunk}\r\n0\r\n\r\n",
        acme.admin,
        chunk.len()
    );
    let answer = raw_exchange(&addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer}");
    assert_still_one_message(&app, &acme).await;
}

#[tokio::test]
async fn a_body_declared_over_the_limit_is_a_413_before_it_is_sent() {
    let (app, acme) = app_with_one_message().await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // The headers alone: were the node waiting for the body, this would
    // hang until its body timeout instead of answering.
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 900000000\r\n\r\n{{",
        messages_path(&acme),
        acme.sender
    );
    let answer = raw_exchange(&addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("urn:herald:problem:too-large"), "{answer}");
    assert_still_one_message(&app, &acme).await;
}

#[tokio::test]
async fn a_path_that_is_not_utf8_is_a_404_problem() {
    let (app, acme) = app_with_one_message().await;
    for path in [
        "/v1/tenants/ac%FFme/messages".to_owned(),
        format!("{}/%FF", messages_path(&acme)),
    ] {
        let reply = send(&app, Method::GET, &path, Some(&acme.sender), None).await;
        assert_not_found(&reply);
        assert_eq!(
            reply.content_type.as_deref(),
            Some("application/problem+json"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn an_unknown_field_is_a_400_naming_it() {
    let (app, acme) = app_with_one_message().await;

    let message = valid_message_with("priority_level", json!("high"));
    let reply = post_message(&app, &acme, message).await;
    let detail = assert_malformed(&reply);
    assert!(detail.contains("priority_level"), "{detail}");

    // Unknown fields are refused on configuration endpoints too.
    let reply = post_as(
        &app,
        "/v1/tenants/acme/smtp-servers",
        &acme.admin,
        json!({"name": "x", "host": "mail.acme.example", "port": 587, "password": "hunter2"}),
    )
    .await;
    let detail = assert_malformed(&reply);
    assert!(detail.contains("password"), "{detail}");

    assert_still_one_message(&app, &acme).await;
    assert!(list(&app, &acme, "smtp-servers").await.is_empty());
}

#[tokio::test]
async fn a_field_of_the_wrong_type_is_a_400() {
    let (app, acme) = app_with_one_message().await;

    for (field, wrong) in [
        (
            "subject",
            json!({"to": ["user@acme.example"], "subject": 5, "text": "x"}),
        ),
        (
            "to",
            json!({"to": "user@acme.example", "subject": "Disk full", "text": "x"}),
        ),
        (
            "headers",
            json!({"to": ["user@acme.example"], "subject": "Disk full", "text": "x", "headers": ["X-Tag"]}),
        ),
    ] {
        let reply = post_message(&app, &acme, wrong.clone()).await;
        let detail = assert_malformed(&reply);
        assert!(detail.contains("invalid type"), "{wrong}: {detail}");
        assert!(
            detail.contains(&format!("field {field}")),
            "{wrong}: {detail} does not name {field}"
        );
    }
    assert_still_one_message(&app, &acme).await;
}

#[tokio::test]
async fn query_method_and_size_errors_are_problems_too() {
    let (app, acme) = app_with_one_message().await;

    let reply = get_as(
        &app,
        &format!("{}?nonsense=1", messages_path(&acme)),
        &acme.sender,
    )
    .await;
    assert_malformed(&reply);
    // A known parameter with a bad value names it and its rule.
    for (query, field) in [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("status=lost", "status"),
        ("since=yesterday", "since"),
        ("source=fax", "source"),
        ("cursor=not-a-cursor", "cursor"),
    ] {
        let reply = get_as(
            &app,
            &format!("{}?{query}", messages_path(&acme)),
            &acme.sender,
        )
        .await;
        assert_problem(
            &reply,
            StatusCode::UNPROCESSABLE_ENTITY,
            "urn:herald:problem:invalid-fields",
        );
        assert_eq!(reply.body["errors"][0]["field"], field, "{}", reply.text);
    }

    let reply = send(
        &app,
        Method::PUT,
        &messages_path(&acme),
        Some(&acme.sender),
        None,
    )
    .await;
    assert_problem(
        &reply,
        StatusCode::METHOD_NOT_ALLOWED,
        "urn:herald:problem:method-not-allowed",
    );

    let huge = json!({"to": ["user@acme.example"], "subject": "big", "text": "x".repeat(21 * 1024 * 1024)});
    let reply = post_message(&app, &acme, huge).await;
    assert_problem(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "urn:herald:problem:too-large",
    );
    assert_still_one_message(&app, &acme).await;
}

#[tokio::test]
async fn another_tenants_route_answers_404_before_looking_at_the_body() {
    let (app, acme) = app_with_acme().await;
    let globex = tenant_with_one_message(&app, "globex").await;
    let reply = send(
        &app,
        Method::POST,
        &messages_path(&globex),
        Some(&acme.sender),
        Some((Some("application/json"), "{not json".into())),
    )
    .await;
    assert_not_found(&reply);
    let reply = send(
        &app,
        Method::POST,
        "/v1/tenants/acme/smtp-servers",
        Some(&acme.sender),
        Some((Some("application/json"), "{not json".into())),
    )
    .await;
    assert_forbidden(&reply);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_header_names_are_unique() {
    let (app, acme) = app_with_one_message().await;
    let response = app
        .client
        .get(format!("{}{}", app.base, messages_path(&acme)))
        .header("authorization", format!("bearer {}", acme.sender))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let twice = json!({"to": ["user@acme.example"], "subject": "x", "text": "x", "headers": {"X-Tag": "a", "x-tag": "b"}});
    let reply = post_message(&app, &acme, twice).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(reply.text.contains("given twice"), "{}", reply.text);
    assert_still_one_message(&app, &acme).await;
}

#[tokio::test]
async fn an_invalid_address_is_a_422_naming_its_position() {
    let (app, acme) = app_with_one_message().await;

    let reply = post_message(
        &app,
        &acme,
        json!({"to": ["user@acme.example", "not-an-address"], "subject": "Disk full", "text": "x"}),
    )
    .await;
    let rule = assert_invalid_field(&reply, "to[1]");
    assert!(rule.contains("name@domain"), "{rule}");
    assert_eq!(fields(&reply), ["to[1]"], "only the bad address is blamed");

    // Every bad field is reported at once.
    let reply = post_message(&app, &acme, json!({
            "to": ["user@acme.example"], "cc": ["a@b@"], "bcc": ["ok@acme.example", "x@-bad-.example"],
            "reply_to": "nobody", "subject": "Disk full", "text": "x"
        })).await;
    for field in ["cc[0]", "bcc[1]", "reply_to"] {
        assert_invalid_field(&reply, field);
    }
    assert_eq!(fields(&reply).len(), 3, "{}", reply.text);

    assert_still_one_message(&app, &acme).await;
}

#[tokio::test]
async fn line_breaks_in_a_subject_or_header_are_a_422() {
    let (app, acme) = app_with_one_message().await;

    for subject in [
        "Disk full\r\nBcc: victim@evil.example",
        "Disk\nfull",
        "Disk\rfull",
    ] {
        let message = valid_message_with("subject", json!(subject));
        let reply = post_message(&app, &acme, message).await;
        let rule = assert_invalid_field(&reply, "subject");
        assert!(rule.contains("CR, LF"), "{subject:?}: {rule}");
    }

    let message = valid_message_with("headers", json!({"X-Tag": "a\nBcc: victim@evil.example"}));
    let reply = post_message(&app, &acme, message).await;
    let rule = assert_invalid_field(&reply, "headers.X-Tag");
    assert!(rule.contains("CR, LF"), "{rule}");

    assert_still_one_message(&app, &acme).await;
}

#[tokio::test]
async fn reserved_or_malformed_header_names_are_a_422() {
    let (app, acme) = app_with_one_message().await;

    for name in ["Bcc", "from", "Message-ID", "X Tag", "X:Tag"] {
        let message = valid_message_with("headers", json!({ name: "victim@evil.example" }));
        let reply = post_message(&app, &acme, message).await;
        assert_invalid_field(&reply, &format!("headers.{name}"));
    }
    let message = valid_message_with("headers", json!({"Bcc": "victim@evil.example"}));
    let reply = post_message(&app, &acme, message).await;
    let rule = assert_invalid_field(&reply, "headers.Bcc");
    assert!(rule.contains("set by Herald"), "{rule}");

    assert_still_one_message(&app, &acme).await;
}

#[tokio::test]
async fn an_address_smuggling_smtp_commands_is_a_422() {
    let (app, acme) = app_with_one_message().await;
    let smuggled = "a@b>\r\nRCPT TO:<x@y>";

    for (key, value, field) in [
        ("to", json!([smuggled]), "to[0]"),
        ("cc", json!([smuggled]), "cc[0]"),
        ("bcc", json!(["ok@acme.example", smuggled]), "bcc[1]"),
        ("reply_to", json!(smuggled), "reply_to"),
        ("on_behalf_of", json!(smuggled), "on_behalf_of"),
        // Without the line break it is still no address.
        ("to", json!(["a@b>RCPT TO:<x@y>"]), "to[0]"),
    ] {
        let message = valid_message_with(key, value);
        let reply = post_message(&app, &acme, message).await;
        assert_invalid_field(&reply, field);
    }
    assert_still_one_message(&app, &acme).await;
}

#[tokio::test]
async fn a_missing_tenant_is_a_404() {
    let app = spawn_app().await;

    let reply = post_as(
        &app,
        "/v1/tenants/nosuch/messages",
        OPERATOR,
        valid_message(),
    )
    .await;
    let detail = assert_not_found(&reply);
    assert!(detail.contains("tenant"), "{detail}");

    for path in [
        "/v1/tenants/nosuch",
        "/v1/tenants/nosuch/messages",
        "/v1/tenants/nosuch/smtp-servers",
    ] {
        let reply = get_as(&app, path, OPERATOR).await;
        let detail = assert_not_found(&reply);
        assert!(detail.contains("tenant"), "{path}: {detail}");
    }

    // The submission did not create the tenant.
    let (status, tenants) = app.get("/v1/tenants", OPERATOR).await;
    assert_eq!(status, StatusCode::OK, "{tenants}");
    assert_eq!(tenants, json!([]));
}

#[tokio::test]
async fn no_token_or_a_wrong_token_is_a_401() {
    let (app, acme) = app_with_one_message().await;
    let path = messages_path(&acme);

    let no_token = send_json(&app, Method::POST, &path, None, valid_message()).await;
    let wrong_token = post_as(
        &app,
        &path,
        "hrld_not_a_token_of_this_node",
        valid_message(),
    )
    .await;
    let empty_token = post_as(&app, &path, "", valid_message()).await;
    for reply in [&no_token, &wrong_token, &empty_token] {
        let detail = assert_unauthorized(reply);
        assert!(detail.contains("Bearer"), "{detail}");
        assert_eq!(
            reply.www_authenticate.as_deref(),
            Some("Bearer"),
            "{}",
            reply.text
        );
    }

    // A token given with another scheme is no bearer token.
    let response = app
        .client
        .post(format!("{}{path}", app.base))
        .header("authorization", format!("Basic {}", acme.sender))
        .json(&valid_message())
        .send()
        .await
        .expect("the request reaches the node");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");

    // Reading needs a token too.
    let reply = get_as(&app, &path, "hrld_not_a_token_of_this_node").await;
    assert_unauthorized(&reply);

    assert_still_one_message(&app, &acme).await;
}

#[tokio::test]
async fn a_token_of_another_tenant_sees_only_404s() {
    let (app, acme) = app_with_acme().await;
    let globex = app.tenant("globex").await;
    let globex_message = app.submit(&globex, valid_message()).await;

    // Another tenant answers exactly like a missing one: 404, never 403.
    let foreign = post_as(&app, &messages_path(&globex), &acme.sender, valid_message()).await;
    assert_not_found(&foreign);
    let missing = post_as(
        &app,
        "/v1/tenants/nosuch/messages",
        &acme.sender,
        valid_message(),
    )
    .await;
    assert_eq!(
        foreign.body, missing.body,
        "another tenant must look like a missing one"
    );

    for path in [
        messages_path(&globex),
        format!("/v1/tenants/globex/messages/{globex_message}"),
        "/v1/tenants/globex".to_owned(),
    ] {
        for token in [&acme.sender, &acme.admin] {
            let reply = get_as(&app, &path, token).await;
            assert_not_found(&reply);
        }
    }
    // Asking for globex's message under acme's own slug finds nothing either.
    let reply = get_as(
        &app,
        &format!("/v1/tenants/acme/messages/{globex_message}"),
        &acme.sender,
    )
    .await;
    assert_not_found(&reply);

    // An admin of acme cannot configure globex.
    let reply = post_as(
        &app,
        "/v1/tenants/globex/smtp-servers",
        &acme.admin,
        json!({"name": "x", "host": "mail.acme.example", "port": 587}),
    )
    .await;
    assert_not_found(&reply);

    assert_eq!(app.message_count(&globex).await, 1);
    assert_eq!(app.message_count(&acme).await, 0);
    assert!(list(&app, &globex, "smtp-servers").await.is_empty());
}

#[tokio::test]
async fn a_sender_token_may_not_configure_its_own_tenant() {
    let (app, acme) = app_with_acme().await;

    for (path, body) in [
        (
            "/v1/tenants/acme/smtp-servers",
            json!({"name": "relay", "host": "mail.acme.example", "port": 587, "security": "starttls"}),
        ),
        // Minting an admin token would be a privilege escalation.
        (
            "/v1/tenants/acme/tokens",
            json!({"name": "escalate", "role": "tenant_admin"}),
        ),
    ] {
        let reply = post_as(&app, path, &acme.sender, body).await;
        let detail = assert_forbidden(&reply);
        assert!(detail.contains("sender"), "{detail}");
        assert!(reply.body["token"].is_null(), "{}", reply.text);
    }
    let reply = get_as(&app, "/v1/tenants/acme/providers", &acme.sender).await;
    assert_forbidden(&reply);

    assert!(list(&app, &acme, "smtp-servers").await.is_empty());
}

#[tokio::test]
async fn a_tenant_admin_token_may_not_use_operator_routes() {
    let (app, acme) = app_with_acme().await;

    let reply = post_as(
        &app,
        "/v1/tenants",
        &acme.admin,
        json!({"slug": "evil", "name": "Evil"}),
    )
    .await;
    let detail = assert_forbidden(&reply);
    assert!(detail.contains("operator"), "{detail}");

    let reply = send_json(
        &app,
        Method::PUT,
        "/v1/tenants/acme/entitlements",
        Some(&acme.admin),
        json!({"credential_storage": true}),
    )
    .await;
    assert_forbidden(&reply);

    let (status, tenants) = app.get("/v1/tenants", OPERATOR).await;
    assert_eq!(status, StatusCode::OK, "{tenants}");
    let slugs: Vec<&str> = tenants
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["slug"].as_str())
        .collect();
    assert_eq!(slugs, ["acme"]);
    let (status, tenant) = app.get("/v1/tenants/acme", &acme.admin).await;
    assert_eq!(status, StatusCode::OK, "{tenant}");
    assert_eq!(tenant["credential_storage"], false, "{tenant}");
}

#[tokio::test]
async fn smtp_server_fields_are_validated_and_nothing_is_created() {
    let (app, acme) = app_with_acme().await;
    let path = "/v1/tenants/acme/smtp-servers";
    let server = |overrides: Value| {
        let mut body = json!({"name": "relay", "host": "mail.acme.example", "port": 587, "security": "starttls"});
        for (k, v) in overrides.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };

    for port in [0, 65536, -25] {
        let reply = post_as(&app, path, &acme.admin, server(json!({"port": port}))).await;
        let rule = assert_invalid_field(&reply, "port");
        assert!(rule.contains("1 to 65535"), "{port}: {rule}");
    }

    for host in [
        "mail.acme.example\r\nRCPT TO:<x@y>",
        "mail.acme.example\n",
        "http://mail.acme.example",
    ] {
        let reply = post_as(&app, path, &acme.admin, server(json!({"host": host}))).await;
        assert_invalid_field(&reply, "host");
    }

    let reply = post_as(&app, path, &acme.admin, server(json!({"security": "ssl"}))).await;
    let rule = assert_invalid_field(&reply, "security");
    assert!(rule.contains("none, starttls, tls"), "{rule}");

    // All at once.
    let reply = post_as(
        &app,
        path,
        &acme.admin,
        json!({"name": "relay", "host": "a\r\nb", "port": 0, "security": "ssl"}),
    )
    .await;
    for field in ["host", "port", "security"] {
        assert_invalid_field(&reply, field);
    }

    assert!(list(&app, &acme, "smtp-servers").await.is_empty());
}

#[tokio::test]
async fn provider_fields_are_validated_and_nothing_is_created() {
    let (app, acme) = app_with_acme().await;
    let globex = app.tenant("globex").await;
    let server =
        json!({"name": "relay", "host": "mail.acme.example", "port": 587, "security": "starttls"});
    let acme_server = create_server(&app, &acme, server.clone()).await;
    let globex_server = create_server(&app, &globex, server).await;
    let provider = |server_id: &str, from_address: &str| json!({"name": "corporate", "smtp_server_id": server_id, "from_address": from_address});
    let path = "/v1/tenants/acme/providers";

    for bad in ["not an address", "alerts@acme.example\r\nRCPT TO:<x@y>", ""] {
        let reply = post_as(&app, path, &acme.admin, provider(&acme_server, bad)).await;
        assert_invalid_field(&reply, "from_address");
    }

    // Another tenant's server is not one of acme's, and says so without revealing anything else.
    let reply = post_as(
        &app,
        path,
        &acme.admin,
        provider(&globex_server, "alerts@acme.example"),
    )
    .await;
    let rule = assert_invalid_field(&reply, "smtp_server_id");
    assert!(rule.contains("this tenant"), "{rule}");
    assert_eq!(fields(&reply), ["smtp_server_id"]);

    let reply = post_as(
        &app,
        path,
        &acme.admin,
        provider("nonsense", "alerts@acme.example"),
    )
    .await;
    assert_invalid_field(&reply, "smtp_server_id");

    let policy = json!({"name": "corporate", "smtp_server_id": acme_server, "from_address": "alerts@acme.example",
           "sender_policy": "anyone"});
    let reply = post_as(&app, path, &acme.admin, policy).await;
    let rule = assert_invalid_field(&reply, "sender_policy");
    assert!(rule.contains("fixed, on_behalf"), "{rule}");

    assert!(list(&app, &acme, "providers").await.is_empty());
    assert!(list(&app, &globex, "providers").await.is_empty());
}

#[tokio::test]
async fn an_idempotency_key_stores_a_message_once() {
    let (app, acme) = app_with_acme().await;
    let globex = app.tenant("globex").await;
    let mut message = valid_message_with("idempotency_key", json!("alert-4711"));

    let (status, first) = app
        .post(&messages_path(&acme), &acme.sender, message.clone())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["duplicate"], false, "{first}");
    let (status, second) = app
        .post(&messages_path(&acme), &acme.sender, message.clone())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{second}");
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["duplicate"], true, "{second}");
    assert_eq!(app.message_count(&acme).await, 1);

    // Another key is another message; the same key in another tenant is that tenant's own.
    message["idempotency_key"] = json!("alert-4712");
    let third = app.submit(&acme, message.clone()).await;
    assert_ne!(json!(third), first["id"]);
    assert_eq!(app.message_count(&acme).await, 2);
    message["idempotency_key"] = json!("alert-4711");
    let other = app.submit(&globex, message.clone()).await;
    assert_ne!(json!(other), first["id"]);
    assert_eq!(app.message_count(&globex).await, 1);

    // A key must be printable ASCII without spaces.
    message["idempotency_key"] = json!("alert 4711");
    let reply = post_message(&app, &acme, message).await;
    assert_invalid_field(&reply, "idempotency_key");
    assert_eq!(app.message_count(&acme).await, 2);
}

#[tokio::test]
async fn a_mailbox_named_twice_is_one_recipient() {
    let (app, acme) = app_with_one_message().await;
    let message = json!({"to": ["ops@acme.example", "OPS@ACME.EXAMPLE"],
        "cc": ["ops@Acme.example", "lead@acme.example"], "bcc": ["LEAD@acme.example", "audit@acme.example"],
        "subject": "twice", "text": "x"});
    let (status, answer) = app.post(&messages_path(&acme), &acme.sender, message).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["id"].as_str().unwrap();
    let (_, shown) = app
        .get(&format!("{}/{id}", messages_path(&acme)), &acme.sender)
        .await;
    let recipients: Vec<(&str, &str)> = shown["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["address"].as_str().unwrap(), r["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        recipients,
        [
            ("ops@acme.example", "to"),
            ("lead@acme.example", "cc"),
            ("audit@acme.example", "bcc")
        ],
        "{shown}"
    );
}

#[tokio::test]
async fn a_scheduled_message_is_answered_as_scheduled() {
    let (app, acme) = app_with_one_message().await;
    let later = herald_core::timestamp::rfc3339(herald_core::timestamp::now_ms() + 3_600_000);
    let mut message = valid_message_with("send_at", json!(later));
    message["idempotency_key"] = json!("nightly-1");
    let (status, first) = app
        .post(&messages_path(&acme), &acme.sender, message.clone())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["status"], "scheduled", "{first}");
    // The replay answers the stored message's status, as its GET does.
    let (_, again) = app.post(&messages_path(&acme), &acme.sender, message).await;
    assert_eq!(
        (&again["duplicate"], &again["status"]),
        (&json!(true), &json!("scheduled")),
        "{again}"
    );
    let id = first["id"].as_str().unwrap();
    let (_, shown) = app
        .get(&format!("{}/{id}", messages_path(&acme)), &acme.sender)
        .await;
    assert_eq!(shown["status"], "scheduled", "{shown}");
    // In a batch too, beside a message sent at once.
    let (status, batch) = app
        .submit_batch(
            &acme,
            vec![valid_message_with("send_at", json!(later)), valid_message()],
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["results"][0]["status"], "scheduled", "{batch}");
    assert_eq!(batch["results"][1]["status"], "queued", "{batch}");
}

#[tokio::test]
async fn storing_a_password_needs_the_entitlement_and_it_is_never_returned() {
    let (app, acme) = app_with_acme().await;
    let server = create_server(
        &app,
        &acme,
        json!({"name": "exchange", "host": "mail.acme.example", "port": 587, "security": "starttls",
               "requires_auth": true}),
    )
    .await;
    let accounts = format!("/v1/tenants/acme/smtp-servers/{server}/accounts");
    let password = "correct-horse-battery-staple-7f3a";
    let account =
        json!({"username": "herald@acme.example", "password": password, "mechanism": "plain"});

    let reply = post_as(&app, &accounts, &acme.admin, account.clone()).await;
    let detail = assert_problem(
        &reply,
        StatusCode::FORBIDDEN,
        "urn:herald:problem:credential-storage-not-granted",
    );
    assert!(detail.contains("credential storage"), "{detail}");
    assert!(!reply.text.contains(password));
    let (status, stored) = app.get(&accounts, &acme.admin).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored, json!([]));

    let tenant = app.grant_credential_storage("acme").await;
    assert_eq!(tenant["credential_storage"], true, "{tenant}");

    let reply = post_as(&app, &accounts, &acme.admin, account).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert!(
        !reply.text.contains(password),
        "the password came back: {}",
        reply.text
    );
    assert_eq!(reply.body["secret_set"], true, "{}", reply.text);
    assert_eq!(
        reply.body["username"], "herald@acme.example",
        "{}",
        reply.text
    );
    let id = reply.body["id"].as_str().expect("an account id");

    // Nor does any later read show it.
    for path in [accounts.clone(), format!("{accounts}/{id}")] {
        let reply = get_as(&app, &path, &acme.admin).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert!(reply.text.contains(id), "{}", reply.text);
        assert!(
            !reply.text.contains(password),
            "the password came back from {path}: {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn the_limits_are_configurable_and_named_when_exceeded() {
    let app = spawn_app_with(|s| {
        s.limits.max_recipients = 2;
        s.limits.max_headers = 1;
        s.limits.max_message_bytes = 100;
    })
    .await;
    let acme = tenant_with_one_message(&app, "acme").await;
    let cases = [
        (
            json!({"to": ["a@x.example", "b@x.example"], "cc": ["c@x.example"], "subject": "s", "text": "x"}),
            "to",
            "at most 2 recipients",
        ),
        (
            json!({"to": ["a@x.example"], "subject": "s", "text": "x", "headers": {"X-A": "1", "X-B": "2"}}),
            "headers",
            "at most 1 fields",
        ),
        (
            json!({"to": ["a@x.example"], "subject": "s", "text": "x".repeat(101)}),
            "text",
            "at most 100 bytes",
        ),
    ];
    for (body, field, rule) in cases {
        let reply = post_message(&app, &acme, body).await;
        let found = assert_invalid_field(&reply, field);
        assert!(found.contains(rule), "{field}: {found}");
    }
    assert_still_one_message(&app, &acme).await;
}
