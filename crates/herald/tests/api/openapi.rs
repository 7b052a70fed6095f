//! The OpenAPI document at `GET /v1/openapi.json`: it names every route the
//! router serves and no other, it is valid OpenAPI 3.1 (checked by Python's
//! `openapi-spec-validator`), and real answers match the schemas it gives.

use std::collections::BTreeSet;

use herald_core::timestamp::{now_ms, rfc3339};
use herald_testkit::{Dependency, require};
use herald_testsmtp::TestSmtpServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::console_http::{HttpSession, give_password};
use crate::helpers::*;
use crate::isolation::routes_in_source;

/// The document as the node serves it, to a client without a token.
async fn document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(format!("{}/v1/openapi.json", app.base))
        .send()
        .await
        .expect("the request reaches the node");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert_eq!(content_type, "application/json");
    response.json().await.expect("the document is JSON")
}

/// The (method, path template) pairs the document describes.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            found.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    found
}

#[tokio::test]
async fn the_document_describes_every_route_the_router_serves_and_no_other() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );

    let served = routes_in_source();
    let described = documented(&doc);
    let missing: Vec<_> = served.difference(&described).collect();
    let stale: Vec<_> = described.difference(&served).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "the OpenAPI document and the router disagree.\n\
         served but not described (add #[utoipa::path] and list the handler in its module's Api): {missing:?}\n\
         described but not served: {stale:?}"
    );
    // The parser agrees with a document that lost routes only if both did: a floor.
    assert!(served.len() >= 50, "{served:?}");
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let validator = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .map_err(|e| format!("python3 cannot run: {e}"))
        .and_then(|out| {
            out.status.success().then_some(()).ok_or_else(|| {
                "the openapi-spec-validator Python package is not installed \
                 (pip install openapi-spec-validator)"
                    .to_owned()
            })
        });
    if require(Dependency::Python, validator).is_none() {
        return;
    }
    let app = spawn_app().await;
    let doc = document(&app).await;
    let file = app.dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let file = file.to_str().unwrap();
    let args = ["-m", "openapi_spec_validator", "--schema", "3.1", file];
    python3("openapi-spec-validator refuses the document", args).await;
}

/// Follows a local `$ref` (`#/components/...`) until it reaches a definition.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        let pointer = reference.strip_prefix('#').expect("a local reference");
        value = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{reference} resolves to nothing"));
    }
    value
}

/// The schema of the body of `method template` answering `status`, and its content type.
fn answer_schema<'a>(
    doc: &'a Value,
    method: &str,
    template: &str,
    status: u16,
) -> (&'a str, &'a Value) {
    let operation = &doc["paths"][template][method.to_ascii_lowercase()];
    assert!(
        operation.is_object(),
        "{method} {template} is not described"
    );
    let response = &operation["responses"][status.to_string()];
    assert!(
        !response.is_null(),
        "{method} {template} does not describe a {status} answer"
    );
    let content = resolve(doc, response)["content"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {template} {status} has no content"));
    let (kind, media) = content.iter().next().expect("a media type");
    (kind.as_str(), &media["schema"])
}

/// Where `value` breaks `schema`: a wrong type, a missing required field,
/// or a field the schema does not describe (every field sent must be documented).
fn violations(doc: &Value, schema: &Value, value: &Value, at: &str, found: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    for combinator in ["oneOf", "anyOf"] {
        if let Some(options) = schema[combinator].as_array() {
            let fits = options.iter().any(|option| {
                let mut inner = Vec::new();
                violations(doc, option, value, at, &mut inner);
                inner.is_empty()
            });
            if !fits {
                found.push(format!(
                    "{at}: {value} fits none of {combinator} {options:?}"
                ));
            }
            return;
        }
    }
    if let Some(all) = schema["allOf"].as_array() {
        for part in all {
            violations(doc, part, value, at, found);
        }
        return;
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let type_fits = types.is_empty()
        || types.contains(&kind)
        || (kind == "integer" && types.contains(&"number"));
    if !type_fits {
        found.push(format!("{at}: {value} is {kind}, documented as {types:?}"));
        return;
    }
    if let Some(words) = schema["enum"].as_array() {
        if !words.contains(value) {
            found.push(format!("{at}: {value} is not one of {words:?}"));
        }
    }
    match value {
        Value::Object(fields) => {
            if let Some(properties) = schema["properties"].as_object() {
                for (name, field) in fields {
                    match properties.get(name) {
                        Some(property) => {
                            violations(doc, property, field, &format!("{at}.{name}"), found)
                        }
                        None => found.push(format!("{at}.{name} is sent but not documented")),
                    }
                }
                for required in schema["required"].as_array().into_iter().flatten() {
                    let name = required.as_str().unwrap();
                    if !fields.contains_key(name) {
                        found.push(format!("{at}.{name} is required but not sent"));
                    }
                }
            } else if let Some(values) =
                schema.get("additionalProperties").filter(|v| v.is_object())
            {
                for (name, field) in fields {
                    violations(doc, values, field, &format!("{at}.{name}"), found);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for (i, element) in items.iter().enumerate() {
                    violations(doc, item, element, &format!("{at}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

/// Collects the answers of a walk through the API and checks each against the document.
struct Walk<'a> {
    app: &'a TestApp,
    doc: Value,
    /// The (method, template) pairs the router serves, to name each path called.
    routes: BTreeSet<(String, String)>,
    checked: BTreeSet<(String, String)>,
    found: Vec<String>,
}

impl<'a> Walk<'a> {
    fn new(app: &'a TestApp, doc: Value) -> Self {
        Walk {
            app,
            doc,
            routes: routes_in_source(),
            checked: BTreeSet::new(),
            found: Vec::new(),
        }
    }

    /// The template the router serves `method path` by: the one whose segments
    /// all match, with literal segments preferred to placeholders as the router
    /// prefers them (`/messages/batch` over `/messages/{id}`).
    fn template(&self, method: &Method, path: &str) -> String {
        let path = path.split('?').next().unwrap_or(path);
        let segments: Vec<&str> = path.split('/').collect();
        let mut matching: Vec<(usize, &String)> = self
            .routes
            .iter()
            .filter(|(m, _)| m == method.as_str())
            .filter_map(|(_, template)| {
                let parts: Vec<&str> = template.split('/').collect();
                let fits = parts.len() == segments.len()
                    && parts
                        .iter()
                        .zip(&segments)
                        .all(|(part, segment)| part == segment || part.starts_with('{'));
                let literal = parts.iter().filter(|part| !part.starts_with('{')).count();
                fits.then_some((literal, template))
            })
            .collect();
        matching.sort();
        match matching.as_slice() {
            [.., (a, _), (b, _)] if a == b => {
                panic!("{method} {path} fits two routes: {matching:?}")
            }
            [.., (_, template)] => (*template).clone(),
            [] => panic!("no route serves {method} {path}"),
        }
    }

    /// Calls `path` and checks the answer against the route that serves it; returns it.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        expected: StatusCode,
    ) -> Value {
        let template = self.template(&method, path);
        let (status, answer) = self.app.call(method.clone(), path, token, body).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
        self.checked.insert((method.to_string(), template.clone()));
        if status == StatusCode::NO_CONTENT {
            return answer;
        }
        let (kind, schema) = answer_schema(&self.doc, method.as_str(), &template, status.as_u16());
        if status.is_client_error() || status.is_server_error() {
            assert_eq!(
                kind, "application/problem+json",
                "{method} {template} {status}"
            );
        }
        violations(
            &self.doc,
            schema,
            &answer,
            &format!("{method} {template} {status}"),
            &mut self.found,
        );
        answer
    }
}

/// Real answers of every kind the document describes (records, lists,
/// pages, creations that show a secret once, problems) fit their schemas:
/// a field added to an answer and not documented fails here.
#[tokio::test]
async fn real_answers_match_the_documented_schemas() {
    let smtp = TestSmtpServer::start().await;
    let app = spawn_app().await;
    let doc = document(&app).await;
    let mut walk = Walk::new(&app, doc);
    let op = Some(OPERATOR);
    use Method as M;
    use StatusCode as S;

    walk.call(M::GET, "/healthz", None, None, S::OK).await;
    walk.call(M::GET, "/readyz", None, None, S::OK).await;
    walk.call(M::GET, "/v1/nodes", op, None, S::OK).await;
    walk.call(M::GET, "/v1/presets", op, None, S::OK).await;
    let token = walk
        .call(
            M::POST,
            "/v1/operator/tokens",
            op,
            Some(json!({"name": "ci"})),
            S::CREATED,
        )
        .await;
    walk.call(M::GET, "/v1/operator/tokens", op, None, S::OK)
        .await;
    let path = format!("/v1/operator/tokens/{}", token["id"].as_str().unwrap());
    walk.call(M::DELETE, &path, op, None, S::NO_CONTENT).await;

    let acme = app.tenant("acme").await;
    let admin = Some(acme.admin.as_str());
    let sender = Some(acme.sender.as_str());
    let t = |rest: &str| format!("/v1/tenants/acme{rest}");
    walk.call(M::GET, "/v1/tenants", op, None, S::OK).await;
    walk.call(
        M::POST,
        "/v1/tenants",
        op,
        Some(json!({"slug": "globex", "name": "Globex"})),
        S::CREATED,
    )
    .await;
    walk.call(M::GET, &t(""), sender, None, S::OK).await;
    walk.call(
        M::PUT,
        &t("/entitlements"),
        op,
        Some(json!({"credential_storage": true})),
        S::OK,
    )
    .await;

    // Mail without a provider lands in the capture mailbox.
    let submitted = walk
        .call(
            M::POST,
            &t("/messages"),
            sender,
            Some(json!({"subject": "Hello", "text": "captured", "idempotency_key": "k1"})),
            S::ACCEPTED,
        )
        .await;
    let captured_id = submitted["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&acme, &captured_id, "sent").await;
    walk.call(M::GET, &t("/captured"), sender, None, S::OK)
        .await;

    // People and tokens.
    let person = walk
        .call(
            M::POST,
            &t("/persons"),
            admin,
            Some(json!({"name": "Mia", "email": "mia@acme.example"})),
            S::CREATED,
        )
        .await;
    let person = format!("/persons/{}", person["id"].as_str().unwrap());
    walk.call(M::GET, &t("/persons"), admin, None, S::OK).await;
    walk.call(M::GET, &t(&person), admin, None, S::OK).await;
    walk.call(
        M::PUT,
        &t(&format!("{person}/password")),
        admin,
        Some(json!({"password": "correct horse battery staple"})),
        S::NO_CONTENT,
    )
    .await;
    let token = walk
        .call(
            M::POST,
            &t("/tokens"),
            admin,
            Some(json!({"name": "app", "role": "sender"})),
            S::CREATED,
        )
        .await;
    walk.call(M::GET, &t("/tokens"), admin, None, S::OK).await;
    let token = format!("/tokens/{}", token["id"].as_str().unwrap());
    walk.call(M::DELETE, &t(&token), admin, None, S::NO_CONTENT)
        .await;
    walk.call(M::DELETE, &t(&person), admin, None, S::NO_CONTENT)
        .await;

    // A server with an account (and a warning), a provider, the properties.
    let server = walk
        .call(
            M::POST,
            &t("/smtp-servers"),
            admin,
            Some(
                json!({"name": "mx", "host": "127.0.0.1", "port": smtp.port(), "security": "none"}),
            ),
            S::CREATED,
        )
        .await;
    let server = format!("/smtp-servers/{}", server["id"].as_str().unwrap());
    // A second server, whose answer carries a warning.
    let weak = walk
        .call(
            M::POST,
            &t("/smtp-servers"),
            admin,
            Some(json!({"name": "weak", "host": "127.0.0.1", "port": 25, "tls_verify": false})),
            S::CREATED,
        )
        .await;
    assert_eq!(weak["warnings"][0]["code"], "tls_not_verified", "{weak}");
    walk.call(M::GET, &t("/smtp-servers"), admin, None, S::OK)
        .await;
    walk.call(M::GET, &t(&server), admin, None, S::OK).await;
    let account = walk
        .call(
            M::POST,
            &t(&format!("{server}/accounts")),
            admin,
            Some(json!({"username": "herald", "password": "secret"})),
            S::CREATED,
        )
        .await;
    let account = format!("{server}/accounts/{}", account["id"].as_str().unwrap());
    walk.call(
        M::GET,
        &t(&format!("{server}/accounts")),
        admin,
        None,
        S::OK,
    )
    .await;
    walk.call(M::GET, &t(&account), admin, None, S::OK).await;
    walk.call(M::DELETE, &t(&account), admin, None, S::NO_CONTENT)
        .await;
    walk.call(
        M::PATCH,
        &t(&server),
        admin,
        Some(json!({"max_connections": 2})),
        S::OK,
    )
    .await;
    let provider = walk
        .call(
            M::POST,
            &t("/providers"),
            admin,
            Some(json!({
                "name": "corporate", "smtp_server_id": server.trim_start_matches("/smtp-servers/"),
                "from_address": "alerts@acme.example", "from_name": "Acme Alerts",
                "reply_to": "Desk <desk@acme.example>", "fallback_recipient": "ops@acme.example"
            })),
            S::CREATED,
        )
        .await;
    let provider_id = provider["id"].as_str().unwrap().to_owned();
    let provider = format!("/providers/{provider_id}");
    walk.call(M::GET, &t("/providers"), admin, None, S::OK)
        .await;
    walk.call(M::GET, &t(&provider), admin, None, S::OK).await;
    walk.call(
        M::PATCH,
        &t(&provider),
        admin,
        Some(json!({"from_name": ""})),
        S::OK,
    )
    .await;
    walk.call(M::GET, &t("/properties"), admin, None, S::OK)
        .await;
    walk.call(
        M::PUT,
        &t("/properties"),
        admin,
        Some(json!({"notification_provider_id": provider_id})),
        S::OK,
    )
    .await;
    walk.call(M::POST, &t("/properties/refresh"), admin, None, S::OK)
        .await;

    // Mail through the server, and a test message with its diagnosis.
    let batch = walk
        .call(
            M::POST,
            &t("/messages/batch"),
            sender,
            Some(json!({"messages": [
                {"to": ["Ann <ann@example.com>"], "cc": ["bob@example.com"], "subject": "Hi", "html": "<p>hi</p>",
                 "attachments": [{"filename": "a.txt", "content_type": "text/plain", "content_base64": "aGk="}]},
                {"to": ["not an address"], "subject": "Refused", "text": "x"}
            ]})),
            S::OK,
        )
        .await;
    let sent = batch["results"][0]["id"].as_str().unwrap().to_owned();
    assert!(batch["results"][1]["error"].is_object(), "{batch}");
    app.wait_for_status(&acme, &sent, "sent").await;
    let test = walk
        .call(
            M::POST,
            &t(&format!("{provider}/test")),
            admin,
            None,
            S::ACCEPTED,
        )
        .await;
    let test_id = test["message_id"].as_str().unwrap().to_owned();
    app.wait_for_attempts(&acme, &test_id, 1).await;
    for id in [&captured_id, &sent, &test_id] {
        walk.call(M::GET, &t(&format!("/messages/{id}")), admin, None, S::OK)
            .await;
    }
    let page = walk
        .call(M::GET, &t("/messages?limit=1"), sender, None, S::OK)
        .await;
    assert!(page["next_cursor"].is_string(), "{page}");

    // A template, previewed, used by a schedule that runs on demand and by a message to be
    // sent in an hour, which is cancelled. The provider made active above sends the run.
    let template = walk
        .call(
            M::POST,
            &t("/templates"),
            admin,
            Some(json!({"name": "disk-full", "description": "Disk alarms",
                        "subject": "Disk {{ volume }} is full", "text": "{{ volume }} is full",
                        "html": "<p>{{ volume }} is full</p>"})),
            S::CREATED,
        )
        .await;
    let template_id = template["id"].as_str().unwrap().to_owned();
    let template = format!("/templates/{template_id}");
    walk.call(M::GET, &t("/templates"), sender, None, S::OK)
        .await;
    walk.call(M::GET, &t(&template), sender, None, S::OK).await;
    let changed = walk
        .call(
            M::PATCH,
            &t(&template),
            admin,
            Some(json!({"description": "", "html": ""})),
            S::OK,
        )
        .await;
    assert_eq!(changed["version"], 2, "{changed}");
    walk.call(
        M::POST,
        &t(&format!("{template}/preview")),
        sender,
        Some(json!({"data": {"volume": "/var"}})),
        S::OK,
    )
    .await;
    walk.call(
        M::POST,
        &t(&format!("{template}/preview")),
        sender,
        Some(json!({"data": {}})),
        S::UNPROCESSABLE_ENTITY,
    )
    .await;
    // The first of January only: it never fires by itself during the test.
    let schedule = walk
        .call(
            M::POST,
            &t("/schedules"),
            admin,
            Some(
                json!({"name": "yearly", "cron": "0 0 1 1 *", "timezone": "Europe/Berlin",
                        "template": "disk-full", "data": {"volume": "/var"},
                        "to": ["ops@acme.example"]}),
            ),
            S::CREATED,
        )
        .await;
    let schedule = format!("/schedules/{}", schedule["id"].as_str().unwrap());
    walk.call(M::GET, &t("/schedules"), admin, None, S::OK)
        .await;
    walk.call(M::GET, &t(&schedule), admin, None, S::OK).await;
    let disabled = walk
        .call(
            M::PATCH,
            &t(&schedule),
            admin,
            Some(json!({"enabled": false, "cc": ["desk@acme.example"]})),
            S::OK,
        )
        .await;
    assert!(disabled["next_run_at"].is_null(), "{disabled}");
    let run = walk
        .call(
            M::POST,
            &t(&format!("{schedule}/run")),
            admin,
            None,
            S::CREATED,
        )
        .await;
    let run_message = run["message_id"].as_str().unwrap().to_owned();
    app.wait_for_status(&acme, &run_message, "sent").await;
    walk.call(M::GET, &t(&format!("{schedule}/runs")), admin, None, S::OK)
        .await;
    // A template that needs more than the schedule's data: the run is refused and recorded.
    walk.call(
        M::PATCH,
        &t(&template),
        admin,
        Some(json!({"text": "{{ volume }} on {{ host }}"})),
        S::OK,
    )
    .await;
    walk.call(
        M::POST,
        &t(&format!("{schedule}/run")),
        admin,
        None,
        S::UNPROCESSABLE_ENTITY,
    )
    .await;
    let runs = walk
        .call(
            M::GET,
            &t(&format!("{schedule}/runs?limit=10")),
            admin,
            None,
            S::OK,
        )
        .await;
    assert!(runs[0]["error"].is_string(), "{runs}");
    assert_eq!(runs[1]["status"], "sent", "{runs}");
    let later = walk
        .call(
            M::POST,
            &t("/messages"),
            sender,
            Some(json!({"to": ["ops@acme.example"], "template": template_id,
                        "data": {"volume": "/var", "host": "db1"},
                        "send_at": rfc3339(now_ms() + 3_600_000)})),
            S::ACCEPTED,
        )
        .await;
    let later = format!("/messages/{}", later["id"].as_str().unwrap());
    let shown = walk.call(M::GET, &t(&later), sender, None, S::OK).await;
    assert!(shown["send_at"].is_string(), "{shown}");
    assert_eq!(shown["template"]["version"], 3, "{shown}");
    let cancelled = walk.call(M::DELETE, &t(&later), sender, None, S::OK).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    walk.call(M::DELETE, &t(&later), sender, None, S::CONFLICT)
        .await;
    walk.call(M::DELETE, &t(&template), admin, None, S::CONFLICT)
        .await;
    walk.call(M::DELETE, &t(&schedule), admin, None, S::NO_CONTENT)
        .await;
    walk.call(M::DELETE, &t(&template), admin, None, S::NO_CONTENT)
        .await;

    // SMTP submission's credentials and connectors.
    let credential = walk
        .call(
            M::POST,
            &t("/smtp-credentials"),
            admin,
            Some(json!({"name": "app", "rate_limit_per_minute": 60})),
            S::CREATED,
        )
        .await;
    walk.call(M::GET, &t("/smtp-credentials"), admin, None, S::OK)
        .await;
    let credential = format!("/smtp-credentials/{}", credential["id"].as_str().unwrap());
    walk.call(M::DELETE, &t(&credential), admin, None, S::NO_CONTENT)
        .await;
    let connector = walk
        .call(
            M::POST,
            &t("/smtp-connectors"),
            admin,
            Some(json!({"name": "relay", "cidrs": ["192.0.2.0/24"]})),
            S::CREATED,
        )
        .await;
    walk.call(M::GET, &t("/smtp-connectors"), admin, None, S::OK)
        .await;
    let connector = format!("/smtp-connectors/{}", connector["id"].as_str().unwrap());
    walk.call(M::DELETE, &t(&connector), admin, None, S::NO_CONTENT)
        .await;

    // A gateway, with an instance recorded as its polls will record it.
    let gateway = walk
        .call(
            M::POST,
            &t("/gateways"),
            admin,
            Some(json!({"name": "office"})),
            S::CREATED,
        )
        .await;
    assert!(gateway["token"].is_string(), "{gateway}");
    let gateway_id = gateway["id"].as_str().unwrap().to_owned();
    crate::gateways::instance_seen(&app, &gateway_id, "gw-1", "1.0.0", now_ms()).await;
    // The gateway's own routes, with its token: nothing is due, so a claim
    // that does not wait answers no recipients, and empty reports are taken.
    let gateway_token = gateway["token"].as_str().unwrap().to_owned();
    let claimed = walk
        .call(
            M::POST,
            "/v1/gateway/claim",
            Some(&gateway_token),
            Some(
                json!({"instance": "gw-1", "version": "1.0.0", "incarnation": "i1",
                        "limit": 10, "wait_seconds": 0,
                        "key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}),
            ),
            S::OK,
        )
        .await;
    assert_eq!(claimed["recipients"], json!([]), "{claimed}");
    walk.call(
        M::POST,
        "/v1/gateway/outcomes",
        Some(&gateway_token),
        Some(json!({"instance": "gw-1", "outcomes": []})),
        S::OK,
    )
    .await;
    walk.call(
        M::POST,
        "/v1/gateway/release",
        Some(&gateway_token),
        Some(json!({"instance": "gw-1", "leases": []})),
        S::OK,
    )
    .await;
    let gateway = format!("/gateways/{gateway_id}");
    let listed = walk.call(M::GET, &t("/gateways"), admin, None, S::OK).await;
    assert_eq!(listed[0]["instances"][0]["alive"], true, "{listed}");
    walk.call(M::GET, &t(&gateway), admin, None, S::OK).await;
    walk.call(M::POST, &t(&format!("{gateway}/token")), admin, None, S::OK)
        .await;
    walk.call(M::DELETE, &t(&gateway), admin, None, S::NO_CONTENT)
        .await;

    // A webhook pointed at this node's own health check, which refuses a POST.
    let webhook = walk
        .call(
            M::POST,
            &t("/webhooks"),
            admin,
            Some(json!({"url": format!("{}/healthz", app.base), "events": ["message.sent"]})),
            S::CREATED,
        )
        .await;
    assert!(webhook["secret"].is_string(), "{webhook}");
    let webhook = format!("/webhooks/{}", webhook["id"].as_str().unwrap());
    walk.call(M::GET, &t("/webhooks"), admin, None, S::OK).await;
    walk.call(M::GET, &t(&webhook), admin, None, S::OK).await;
    walk.call(
        M::PATCH,
        &t(&webhook),
        admin,
        Some(json!({"enabled": false})),
        S::OK,
    )
    .await;
    walk.call(
        M::POST,
        &t(&format!("{webhook}/rotate-secret")),
        admin,
        Some(json!({"overlap_seconds": 60})),
        S::OK,
    )
    .await;
    let tested = walk
        .call(M::POST, &t(&format!("{webhook}/test")), admin, None, S::OK)
        .await;
    assert_eq!(tested["response_status"], 405, "{tested}");
    walk.call(
        M::GET,
        &t(&format!("{webhook}/deliveries")),
        admin,
        None,
        S::OK,
    )
    .await;
    walk.call(M::DELETE, &t(&webhook), admin, None, S::NO_CONTENT)
        .await;

    // Problems: each is a problem document of a documented type.
    walk.call(M::GET, "/v1/tenants", None, None, S::UNAUTHORIZED)
        .await;
    walk.call(M::GET, "/v1/tenants", sender, None, S::FORBIDDEN)
        .await;
    walk.call(M::GET, &t("/messages/nope"), sender, None, S::NOT_FOUND)
        .await;
    walk.call(
        M::POST,
        &t("/messages"),
        sender,
        Some(json!({"to": ["a@b"], "subject": "x\ny", "text": "x"})),
        S::UNPROCESSABLE_ENTITY,
    )
    .await;
    walk.call(
        M::POST,
        &t("/smtp-connectors"),
        admin,
        Some(json!({"name": "relay", "wrong": 1})),
        S::BAD_REQUEST,
    )
    .await;
    walk.call(
        M::POST,
        &t("/persons"),
        admin,
        Some(json!({"name": "Admin again", "email": "admin@acme.example"})),
        S::CONFLICT,
    )
    .await;
    walk.call(M::DELETE, &t(&provider), admin, None, S::CONFLICT)
        .await;
    walk.call(M::DELETE, &t(&server), admin, None, S::CONFLICT)
        .await;
    walk.call(M::GET, &t("/audit"), admin, None, S::OK).await;

    assert!(
        walk.found.is_empty(),
        "answers the document does not describe:\n{}",
        walk.found.join("\n")
    );
    // Every route was called at least once, so no described answer went unchecked.
    let unchecked: Vec<_> = routes_in_source()
        .difference(&walk.checked)
        .cloned()
        .collect();
    let allowed: BTreeSet<(String, String)> = [("GET", "/v1/openapi.json")]
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let unchecked: Vec<_> = unchecked
        .into_iter()
        .filter(|r| !allowed.contains(r))
        .collect();
    assert!(
        unchecked.is_empty(),
        "routes the walk did not call: {unchecked:?}"
    );
}

/// Spot checks of what clients rely on most.
#[tokio::test]
async fn the_document_says_what_clients_rely_on() {
    let app = spawn_app().await;
    let doc = document(&app).await;

    // A message may carry attachments; a page of messages says where the next begins.
    let body = &doc["paths"]["/v1/tenants/{tenant}/messages"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    let body = resolve(&doc, body);
    assert!(body["properties"]["attachments"].is_object(), "{body}");
    assert_eq!(
        body["additionalProperties"], false,
        "unknown fields are refused"
    );
    let (_, page) = answer_schema(&doc, "GET", "/v1/tenants/{tenant}/messages", 200);
    assert!(
        resolve(&doc, page)["properties"]["next_cursor"].is_object(),
        "{page}"
    );
    let params = doc["paths"]["/v1/tenants/{tenant}/messages"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let names: BTreeSet<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for name in [
        "tenant",
        "status",
        "recipient",
        "since",
        "until",
        "source",
        "limit",
        "cursor",
    ] {
        assert!(names.contains(name), "no parameter {name}: {names:?}");
    }

    // Every error answer of every operation is a problem document.
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let public = operation["security"] == json!([]);
            let public_routes = ["/healthz", "/readyz", "/v1/openapi.json"];
            assert_eq!(
                public,
                public_routes.contains(&path.as_str()),
                "{method} {path}: {}",
                operation["security"]
            );
            for (status, response) in operation["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    let content = &resolve(&doc, response)["content"];
                    assert_eq!(
                        content["application/problem+json"]["schema"], problem,
                        "{method} {path} {status}"
                    );
                }
            }
            if !public {
                assert!(operation["responses"]["401"].is_object(), "{method} {path}");
            }
        }
    }
    assert!(operations >= 50);
    let (kind, invalid) = answer_schema(&doc, "POST", "/v1/tenants/{tenant}/messages", 422);
    assert_eq!((kind, invalid), ("application/problem+json", &problem));
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    // The problem types are listed, and a real problem is one of them.
    let types = doc["components"]["schemas"]["ProblemType"]["enum"]
        .as_array()
        .unwrap();
    assert!(
        types.contains(&json!("urn:herald:problem:invalid-fields")),
        "{types:?}"
    );
    let (status, answer) = app.call(Method::GET, "/v1/tenants", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(types.contains(&answer["type"]), "{answer}");
}

/// The document needs no token, and a token does not change it.
#[tokio::test]
async fn the_document_is_public() {
    let app = spawn_app().await;
    let anonymous = document(&app).await;
    let (status, with_token) = app.get("/v1/openapi.json", OPERATOR).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(anonymous, with_token);
}

/// The checker above has teeth: it finds an undocumented field, a wrong
/// type, a missing required field and a value outside an enum, through
/// references and `oneOf`.
#[test]
fn the_answer_checker_finds_what_the_document_does_not_say() {
    let doc = json!({"components": {"schemas": {
        "Word": {"type": "string", "enum": ["a", "b"]},
        "Thing": {"type": "object", "required": ["id"], "properties": {
            "id": {"type": "string"},
            "count": {"type": ["integer", "null"]},
            "word": {"$ref": "#/components/schemas/Word"},
            "inner": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Thing"}]},
            "list": {"type": "array", "items": {"$ref": "#/components/schemas/Thing"}}
        }}
    }}});
    let schema = json!({"$ref": "#/components/schemas/Thing"});
    let check = |value: Value| {
        let mut found = Vec::new();
        violations(&doc, &schema, &value, "$", &mut found);
        found
    };
    let fine = json!({"id": "x", "count": null, "word": "a", "inner": {"id": "y"}, "list": [{"id": "z", "count": 3}]});
    assert_eq!(check(fine), Vec::<String>::new());
    for wrong in [
        json!({"id": "x", "extra": 1}),
        json!({"id": 1}),
        json!({"count": 1}),
        json!({"id": "x", "word": "c"}),
        json!({"id": "x", "inner": {"id": "y", "extra": true}}),
        json!({"id": "x", "list": [{"id": "z", "count": "3"}]}),
    ] {
        assert!(!check(wrong.clone()).is_empty(), "{wrong} passed");
    }
}

/// The console's API tokens page links the document, and the link answers it.
#[tokio::test]
async fn the_console_links_the_document_from_the_tokens_page() {
    let app = spawn_app().await;
    app.tenant("acme").await;
    let password = "a long enough console password";
    give_password(&app, "acme", "admin@acme.example", password).await;
    let console = HttpSession::sign_in(&app, "admin@acme.example", password, "/t/acme").await;
    let page = console.get("/t/acme/tokens").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let link = page
        .html
        .split("<a href=\"")
        .skip(1)
        .map(|part| part.split('"').next().unwrap())
        .find(|href| href.contains("openapi"))
        .unwrap_or_else(|| panic!("no link to the OpenAPI document: {}", page.html));
    assert_eq!(link, "/v1/openapi.json");
    assert!(page.html.contains("API reference (OpenAPI)"));
    let served = console.get(link).await;
    assert_eq!(served.status, StatusCode::OK);
    assert!(served.content_type.starts_with("application/json"));
    assert_eq!(
        serde_json::from_str::<Value>(&served.html).unwrap(),
        document(&app).await
    );
}
