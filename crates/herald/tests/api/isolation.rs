//! The isolation matrix: every route of the API, called by every kind of caller, answers
//! exactly what its role and tenant allow, and another tenant's objects are 404, never 403.
//!
//! One node serves the whole matrix. Tenant `acme` is fully populated through the API (an
//! SMTP server, an account on it, a provider made active, a message scheduled an hour ahead
//! so that it can still be cancelled, a template, a schedule that never fires during the
//! test, a member and an extra token), and tenant `globex` holds only its own tokens. Each route is then called with no
//! token, an unknown token, a revoked token, the operator's token, acme's administrator and
//! sender tokens, and globex's administrator and sender tokens aimed at acme's objects.
//! Routes that name an object by id are also called by globex on its own tenant with acme's
//! ids, because a tenant check that only looks at the slug would let those through.
//!
//! A denied call must answer the exact status with a problem document of the right type.
//! A call from outside acme must also answer exactly as it would for an object that does not
//! exist, since any difference would tell another tenant that the object is there. Allowed
//! calls must succeed with bodies that would succeed; deletions get a fresh object per caller
//! so that each deletion really happens. Failures are collected, so one run names every cell
//! of the matrix that is wrong rather than only the first.
//!
//! A guard reads the router sources at test time and compares every `(method, path)` they
//! serve with the table here, so a route added without a matrix entry fails the test.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use herald_core::timestamp::{now_ms, rfc3339};
use herald_testsmtp::TestSmtpServer;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::*;

/// Who may call a route, besides the operator (who may call every route).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Access {
    /// Anyone, with or without a token.
    Public,
    /// Any valid token, of any tenant or none: the route shows nothing of a tenant.
    Authenticated,
    /// The operator only.
    Operator,
    /// The tenant's administrators.
    Admin,
    /// The tenant's administrators and senders.
    Reader,
    /// A gateway's own token only (`hrldg_…`): every API token, the
    /// operator's too, is refused with 401. What a gateway token may do
    /// there, and that it opens no other route, is tested in
    /// `gateway_process`.
    Gateway,
}

/// One method of one route, with who may call it and what it answers when it succeeds.
struct Endpoint {
    method: &'static str,
    template: &'static str,
    access: Access,
    ok: StatusCode,
}

const fn ep(
    method: &'static str,
    template: &'static str,
    access: Access,
    ok: StatusCode,
) -> Endpoint {
    Endpoint {
        method,
        template,
        access,
        ok,
    }
}

const OK: StatusCode = StatusCode::OK;
const CREATED: StatusCode = StatusCode::CREATED;
const ACCEPTED: StatusCode = StatusCode::ACCEPTED;
const GONE: StatusCode = StatusCode::NO_CONTENT;

/// Every method of every route the API serves. The guard test compares this table with
/// the router sources, so it cannot silently fall behind them.
#[rustfmt::skip]
const ENDPOINTS: &[Endpoint] = &[
    ep("GET", "/healthz", Access::Public, OK),
    ep("GET", "/readyz", Access::Public, OK),
    ep("GET", "/v1/openapi.json", Access::Public, OK),
    ep("GET", "/v1/presets", Access::Authenticated, OK),
    ep("GET", "/v1/nodes", Access::Operator, OK),
    ep("GET", "/v1/operator/tokens", Access::Operator, OK),
    ep("POST", "/v1/operator/tokens", Access::Operator, CREATED),
    ep("DELETE", "/v1/operator/tokens/{id}", Access::Operator, GONE),
    ep("POST", "/v1/tenants", Access::Operator, CREATED),
    ep("GET", "/v1/tenants", Access::Operator, OK),
    ep("GET", "/v1/tenants/{tenant}", Access::Reader, OK),
    ep("PUT", "/v1/tenants/{tenant}/entitlements", Access::Operator, OK),
    ep("GET", "/v1/tenants/{tenant}/properties", Access::Admin, OK),
    ep("PUT", "/v1/tenants/{tenant}/properties", Access::Admin, OK),
    ep("POST", "/v1/tenants/{tenant}/properties/refresh", Access::Admin, OK),
    ep("GET", "/v1/tenants/{tenant}/captured", Access::Reader, OK),
    ep("GET", "/v1/tenants/{tenant}/audit", Access::Admin, OK),
    ep("POST", "/v1/tenants/{tenant}/persons", Access::Admin, CREATED),
    ep("GET", "/v1/tenants/{tenant}/persons", Access::Admin, OK),
    ep("GET", "/v1/tenants/{tenant}/persons/{id}", Access::Admin, OK),
    ep("DELETE", "/v1/tenants/{tenant}/persons/{id}", Access::Admin, GONE),
    ep("PUT", "/v1/tenants/{tenant}/persons/{id}/password", Access::Admin, GONE),
    ep("POST", "/v1/tenants/{tenant}/tokens", Access::Admin, CREATED),
    ep("GET", "/v1/tenants/{tenant}/tokens", Access::Admin, OK),
    ep("DELETE", "/v1/tenants/{tenant}/tokens/{id}", Access::Admin, GONE),
    ep("POST", "/v1/tenants/{tenant}/smtp-servers", Access::Admin, CREATED),
    ep("GET", "/v1/tenants/{tenant}/smtp-servers", Access::Admin, OK),
    ep("GET", "/v1/tenants/{tenant}/smtp-servers/{id}", Access::Admin, OK),
    ep("PATCH", "/v1/tenants/{tenant}/smtp-servers/{id}", Access::Admin, OK),
    ep("DELETE", "/v1/tenants/{tenant}/smtp-servers/{id}", Access::Admin, GONE),
    ep("POST", "/v1/tenants/{tenant}/smtp-servers/{id}/accounts", Access::Admin, CREATED),
    ep("GET", "/v1/tenants/{tenant}/smtp-servers/{id}/accounts", Access::Admin, OK),
    ep("GET", "/v1/tenants/{tenant}/smtp-servers/{id}/accounts/{account}", Access::Admin, OK),
    ep("DELETE", "/v1/tenants/{tenant}/smtp-servers/{id}/accounts/{account}", Access::Admin, GONE),
    ep("POST", "/v1/tenants/{tenant}/providers", Access::Admin, CREATED),
    ep("GET", "/v1/tenants/{tenant}/providers", Access::Admin, OK),
    ep("GET", "/v1/tenants/{tenant}/providers/{id}", Access::Admin, OK),
    ep("PATCH", "/v1/tenants/{tenant}/providers/{id}", Access::Admin, OK),
    ep("DELETE", "/v1/tenants/{tenant}/providers/{id}", Access::Admin, GONE),
    ep("POST", "/v1/tenants/{tenant}/providers/{id}/test", Access::Admin, ACCEPTED),
    ep("POST", "/v1/tenants/{tenant}/messages", Access::Reader, ACCEPTED),
    ep("POST", "/v1/tenants/{tenant}/messages/batch", Access::Reader, OK),
    ep("GET", "/v1/tenants/{tenant}/messages", Access::Reader, OK),
    ep("GET", "/v1/tenants/{tenant}/messages/{id}", Access::Reader, OK),
    // Cancelling answers the message, now cancelled, which stays readable.
    ep("DELETE", "/v1/tenants/{tenant}/messages/{id}", Access::Reader, OK),
    ep("POST", "/v1/tenants/{tenant}/templates", Access::Admin, CREATED),
    ep("GET", "/v1/tenants/{tenant}/templates", Access::Reader, OK),
    ep("GET", "/v1/tenants/{tenant}/templates/{id}", Access::Reader, OK),
    ep("PATCH", "/v1/tenants/{tenant}/templates/{id}", Access::Admin, OK),
    ep("DELETE", "/v1/tenants/{tenant}/templates/{id}", Access::Admin, GONE),
    ep("POST", "/v1/tenants/{tenant}/templates/{id}/preview", Access::Reader, OK),
    ep("POST", "/v1/tenants/{tenant}/schedules", Access::Admin, CREATED),
    ep("GET", "/v1/tenants/{tenant}/schedules", Access::Admin, OK),
    ep("GET", "/v1/tenants/{tenant}/schedules/{id}", Access::Admin, OK),
    ep("PATCH", "/v1/tenants/{tenant}/schedules/{id}", Access::Admin, OK),
    ep("DELETE", "/v1/tenants/{tenant}/schedules/{id}", Access::Admin, GONE),
    ep("POST", "/v1/tenants/{tenant}/schedules/{id}/run", Access::Admin, CREATED),
    ep("GET", "/v1/tenants/{tenant}/schedules/{id}/runs", Access::Admin, OK),
    ep("POST", "/v1/tenants/{tenant}/smtp-credentials", Access::Admin, CREATED),
    ep("GET", "/v1/tenants/{tenant}/smtp-credentials", Access::Admin, OK),
    ep("DELETE", "/v1/tenants/{tenant}/smtp-credentials/{id}", Access::Admin, GONE),
    ep("POST", "/v1/tenants/{tenant}/smtp-connectors", Access::Admin, CREATED),
    ep("GET", "/v1/tenants/{tenant}/smtp-connectors", Access::Admin, OK),
    ep("DELETE", "/v1/tenants/{tenant}/smtp-connectors/{id}", Access::Admin, GONE),
    ep("POST", "/v1/tenants/{tenant}/webhooks", Access::Admin, CREATED),
    ep("GET", "/v1/tenants/{tenant}/webhooks", Access::Admin, OK),
    ep("GET", "/v1/tenants/{tenant}/webhooks/{id}", Access::Admin, OK),
    ep("PATCH", "/v1/tenants/{tenant}/webhooks/{id}", Access::Admin, OK),
    ep("DELETE", "/v1/tenants/{tenant}/webhooks/{id}", Access::Admin, GONE),
    ep("POST", "/v1/tenants/{tenant}/webhooks/{id}/rotate-secret", Access::Admin, OK),
    ep("GET", "/v1/tenants/{tenant}/webhooks/{id}/deliveries", Access::Admin, OK),
    ep("POST", "/v1/tenants/{tenant}/webhooks/{id}/test", Access::Admin, OK),
    ep("POST", "/v1/tenants/{tenant}/gateways", Access::Admin, CREATED),
    ep("GET", "/v1/tenants/{tenant}/gateways", Access::Admin, OK),
    ep("GET", "/v1/tenants/{tenant}/gateways/{id}", Access::Admin, OK),
    ep("DELETE", "/v1/tenants/{tenant}/gateways/{id}", Access::Admin, GONE),
    ep("POST", "/v1/tenants/{tenant}/gateways/{id}/token", Access::Admin, OK),
    ep("POST", "/v1/gateway/claim", Access::Gateway, OK),
    ep("POST", "/v1/gateway/outcomes", Access::Gateway, OK),
    ep("POST", "/v1/gateway/release", Access::Gateway, OK),
];

/// The methods the guard and the 405 check know about.
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// A slug no tenant has, to compare answers about acme with answers about nothing.
const NO_TENANT: &str = "no-such-tenant";

/// An id that no object has (a well-formed UUID, so it reaches the store).
const NO_ID: &str = "01900000-0000-7000-8000-000000000000";

/// The kinds of caller every route is tried with.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Anonymous,
    UnknownToken,
    RevokedToken,
    Operator,
    AcmeAdmin,
    AcmeSender,
    GlobexAdmin,
    GlobexSender,
    /// Globex's administrator on globex's own routes, naming acme's objects by id.
    GlobexAdminAcmeIds,
    /// Globex's sender on globex's own routes, naming acme's objects by id.
    GlobexSenderAcmeIds,
}

impl Who {
    const ALL: [Who; 10] = [
        Who::Anonymous,
        Who::UnknownToken,
        Who::RevokedToken,
        Who::Operator,
        Who::AcmeAdmin,
        Who::AcmeSender,
        Who::GlobexAdmin,
        Who::GlobexSender,
        Who::GlobexAdminAcmeIds,
        Who::GlobexSenderAcmeIds,
    ];

    /// The tenant whose routes the caller calls.
    fn slug(self) -> &'static str {
        match self {
            Who::GlobexAdminAcmeIds | Who::GlobexSenderAcmeIds => "globex",
            _ => "acme",
        }
    }

    /// Whether the caller belongs to another tenant than the objects it names.
    fn is_outsider(self) -> bool {
        matches!(
            self,
            Who::GlobexAdmin
                | Who::GlobexSender
                | Who::GlobexAdminAcmeIds
                | Who::GlobexSenderAcmeIds
        )
    }

    /// Whether the caller presents no valid token.
    fn is_unauthenticated(self) -> bool {
        matches!(self, Who::Anonymous | Who::UnknownToken | Who::RevokedToken)
    }

    /// Whether the caller's role is tenant_admin (else sender), for tenant members.
    fn is_admin(self) -> bool {
        matches!(
            self,
            Who::AcmeAdmin | Who::GlobexAdmin | Who::GlobexAdminAcmeIds
        )
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Who::Anonymous => "no token",
            Who::UnknownToken => "an unknown token",
            Who::RevokedToken => "a revoked acme tenant_admin token",
            Who::Operator => "the operator",
            Who::AcmeAdmin => "acme's tenant_admin",
            Who::AcmeSender => "acme's sender",
            Who::GlobexAdmin => "globex's tenant_admin on acme",
            Who::GlobexSender => "globex's sender on acme",
            Who::GlobexAdminAcmeIds => "globex's tenant_admin on globex with acme's ids",
            Who::GlobexSenderAcmeIds => "globex's sender on globex with acme's ids",
        })
    }
}

/// What a call must answer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// The endpoint's success status.
    Allowed,
    /// This status, with a problem document of this type.
    Denied(StatusCode, &'static str),
}

const UNAUTHORIZED: Expect = Expect::Denied(StatusCode::UNAUTHORIZED, "unauthorized");
const FORBIDDEN: Expect = Expect::Denied(StatusCode::FORBIDDEN, "forbidden");
const NOT_FOUND: Expect = Expect::Denied(StatusCode::NOT_FOUND, "not-found");

/// The rules of `Caller::tenant` and `Caller::operator`, written out independently.
fn expected(endpoint: &Endpoint, who: Who) -> Expect {
    if endpoint.access == Access::Public {
        // Health checks read no token at all, so even a bad one does not matter.
        return Expect::Allowed;
    }
    if who.is_unauthenticated() || endpoint.access == Access::Gateway {
        return UNAUTHORIZED;
    }
    if who == Who::Operator {
        return Expect::Allowed;
    }
    let role_allowed = match endpoint.access {
        Access::Public | Access::Gateway => unreachable!("handled above"),
        Access::Authenticated => return Expect::Allowed,
        // Checked before the tenant is looked up, so a 403 here reveals nothing.
        Access::Operator => return FORBIDDEN,
        Access::Admin => who.is_admin(),
        Access::Reader => true,
    };
    match who {
        // Another tenant's slug is looked up first and answers 404 whatever the role.
        Who::GlobexAdmin | Who::GlobexSender => NOT_FOUND,
        // On its own tenant the role is checked first (403 regardless of the id), then
        // acme's id names nothing globex has.
        Who::GlobexAdminAcmeIds | Who::GlobexSenderAcmeIds if role_allowed => NOT_FOUND,
        _ if role_allowed => Expect::Allowed,
        _ => FORBIDDEN,
    }
}

/// The kind of object the last id of a route names.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Person,
    Token,
    OperatorToken,
    Server,
    Account,
    Provider,
    Message,
    SmtpCredential,
    SmtpConnector,
    Webhook,
    Template,
    Schedule,
    Gateway,
}

fn kind_of(template: &str) -> Option<Kind> {
    let segments: Vec<&str> = template.split('/').collect();
    let last = segments
        .iter()
        .rposition(|s| *s == "{id}" || *s == "{account}")?;
    Some(match (segments[last], segments[last - 1]) {
        ("{account}", _) => Kind::Account,
        (_, "tokens") if template.starts_with("/v1/operator/") => Kind::OperatorToken,
        (_, "persons") => Kind::Person,
        (_, "tokens") => Kind::Token,
        (_, "smtp-servers") => Kind::Server,
        (_, "providers") => Kind::Provider,
        (_, "messages") => Kind::Message,
        (_, "smtp-credentials") => Kind::SmtpCredential,
        (_, "smtp-connectors") => Kind::SmtpConnector,
        (_, "webhooks") => Kind::Webhook,
        (_, "templates") => Kind::Template,
        (_, "schedules") => Kind::Schedule,
        (_, "gateways") => Kind::Gateway,
        (_, other) => panic!("no id kind for {other} in {template}"),
    })
}

/// The ids a path is filled with.
#[derive(Clone, Debug)]
struct Ids {
    person: String,
    token: String,
    /// An operator token's id (not acme's: operator tokens belong to no tenant).
    operator_token: String,
    server: String,
    account: String,
    provider: String,
    message: String,
    smtp_credential: String,
    smtp_connector: String,
    webhook: String,
    template: String,
    schedule: String,
    gateway: String,
}

impl Ids {
    /// Ids that no object has.
    fn missing() -> Ids {
        Ids {
            person: NO_ID.into(),
            token: NO_ID.into(),
            operator_token: NO_ID.into(),
            server: NO_ID.into(),
            account: NO_ID.into(),
            provider: NO_ID.into(),
            message: NO_ID.into(),
            smtp_credential: NO_ID.into(),
            smtp_connector: NO_ID.into(),
            webhook: NO_ID.into(),
            template: NO_ID.into(),
            schedule: NO_ID.into(),
            gateway: NO_ID.into(),
        }
    }

    fn set(&mut self, kind: Kind, id: String) {
        match kind {
            Kind::Person => self.person = id,
            Kind::Token => self.token = id,
            Kind::OperatorToken => self.operator_token = id,
            Kind::Server => self.server = id,
            Kind::Account => self.account = id,
            Kind::Provider => self.provider = id,
            Kind::Message => self.message = id,
            Kind::SmtpCredential => self.smtp_credential = id,
            Kind::SmtpConnector => self.smtp_connector = id,
            Kind::Webhook => self.webhook = id,
            Kind::Template => self.template = id,
            Kind::Schedule => self.schedule = id,
            Kind::Gateway => self.gateway = id,
        }
    }

    /// Every id, to look for in another tenant's answers.
    fn all(&self) -> [&str; 12] {
        [
            &self.person,
            &self.token,
            &self.server,
            &self.account,
            &self.provider,
            &self.message,
            &self.smtp_credential,
            &self.smtp_connector,
            &self.webhook,
            &self.template,
            &self.schedule,
            &self.gateway,
        ]
    }
}

/// A route template with its placeholders replaced.
fn fill(template: &str, slug: &str, ids: &Ids) -> String {
    let segments: Vec<&str> = template.split('/').collect();
    let filled: Vec<&str> = segments
        .iter()
        .enumerate()
        .map(|(i, segment)| match *segment {
            "{tenant}" => slug,
            "{account}" => &ids.account,
            "{id}" => match segments[i - 1] {
                "tokens" if template.starts_with("/v1/operator/") => &ids.operator_token,
                "persons" => &ids.person,
                "tokens" => &ids.token,
                "smtp-servers" => &ids.server,
                "providers" => &ids.provider,
                "messages" => &ids.message,
                "smtp-credentials" => &ids.smtp_credential,
                "smtp-connectors" => &ids.smtp_connector,
                "webhooks" => &ids.webhook,
                "templates" => &ids.template,
                "schedules" => &ids.schedule,
                "gateways" => &ids.gateway,
                other => panic!("no id for {other} in {template}"),
            },
            plain => plain,
        })
        .collect();
    filled.join("/")
}

/// An answer with the headers the matrix checks.
struct Answer {
    status: StatusCode,
    content_type: String,
    www_authenticate: Option<String>,
    body: Value,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}) {}", self.status, self.content_type, self.body)
    }
}

async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    let method = Method::from_bytes(method.as_bytes()).expect("a valid method");
    let mut request = app.client.request(method, format!("{}{path}", app.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("the request reaches the node");
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header(header::CONTENT_TYPE).unwrap_or_default();
    let www_authenticate = header(header::WWW_AUTHENTICATE);
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    Answer {
        status,
        content_type,
        www_authenticate,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

/// The node, its two tenants and acme's objects.
struct World {
    app: TestApp,
    /// Kept so acme's submitted messages are delivered rather than retried.
    smtp: TestSmtpServer,
    acme: TestTenant,
    globex: TestTenant,
    /// Acme's objects that stay for the whole test.
    ids: Ids,
    /// The acme tenant's own id.
    acme_id: String,
    /// The secret of the extra token `ids.token` names, to prove it still works.
    extra_token: String,
    /// The secret of the operator token `ids.operator_token` names.
    operator_token: String,
    /// A tenant_admin token of acme, revoked before the matrix runs.
    revoked_token: String,
    /// The idempotency key of acme's message.
    idempotency_key: &'static str,
    /// How many connector networks [`World::fresh_network`] has handed out.
    networks: std::sync::atomic::AtomicU32,
}

/// A webhook URL that answers at once: this node's own health check, which refuses a POST.
fn webhook_url(app: &TestApp) -> String {
    format!("{}/healthz", app.base)
}

/// Asserts a setup step answered `status` and returns its body.
async fn setup(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
    status: StatusCode,
) -> Value {
    let answer = send(app, method, path, Some(token), body.as_ref()).await;
    assert_eq!(answer.status, status, "setup {method} {path}: {answer}");
    answer.body
}

/// A time an hour ahead: a message to be sent then stays scheduled for the whole test.
fn an_hour_ahead() -> String {
    rfc3339(now_ms() + 3_600_000)
}

/// A template named `name` using one variable, `site`.
fn template_body(name: &str) -> Value {
    json!({"name": name, "subject": "Notice for {{ site }}", "text": "Hello {{ site }}"})
}

/// A schedule of `template` that fires on the first of January only, so never during the
/// test, with the data the template needs.
fn schedule_body(name: &str, template: &str) -> Value {
    json!({"name": name, "cron": "0 0 1 1 *", "template": template, "data": {"site": name}})
}

fn id(body: &Value) -> String {
    body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {body}"))
        .to_owned()
}

async fn world() -> World {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_with_acme().await;
    let globex = app.tenant("globex").await;
    let a = |rest: &str| format!("/v1/tenants/acme{rest}");

    // Accounts with a password need the entitlement, which only the operator grants.
    let tenant = setup(
        &app,
        "PUT",
        &a("/entitlements"),
        OPERATOR,
        Some(json!({"credential_storage": true})),
        OK,
    )
    .await;
    let acme_id = id(&tenant);
    let persons = setup(&app, "GET", &a("/persons"), OPERATOR, None, OK).await;
    let admin_person = persons
        .as_array()
        .and_then(|all| all.iter().find(|p| p["email"] == "admin@acme.example"))
        .map(id)
        .expect("the administrator is a person of acme");
    let member = id(&setup(
        &app,
        "POST",
        &a("/persons"),
        &acme.admin,
        Some(json!({"name": "Member", "email": "member@acme.example"})),
        CREATED,
    )
    .await);
    let server = id(&setup(
        &app,
        "POST",
        &a("/smtp-servers"),
        &acme.admin,
        Some(json!({"name": "main", "host": "127.0.0.1", "port": smtp.port(), "security": "none"})),
        CREATED,
    )
    .await);
    let account = setup(
        &app,
        "POST",
        &a(&format!("/smtp-servers/{server}/accounts")),
        &acme.admin,
        Some(json!({"username": "member", "password": "s3cret", "person_id": member})),
        CREATED,
    )
    .await;
    assert_eq!(account["secret_set"], true, "{account}");
    let account = id(&account);
    // The provider sends without the account, since the test server offers no AUTH.
    let provider = id(&setup(
        &app,
        "POST",
        &a("/providers"),
        &acme.admin,
        Some(json!({
            "name": "corporate", "smtp_server_id": server,
            "from_address": "alerts@acme.example", "fallback_recipient": "ops@acme.example"
        })),
        CREATED,
    )
    .await);
    setup(
        &app,
        "PUT",
        &a("/properties"),
        &acme.admin,
        Some(json!({"notification_provider_id": provider})),
        OK,
    )
    .await;
    let idempotency_key = "order-1";
    // Scheduled, so that a cancellation some caller should not be allowed would show.
    let message = app
        .submit(
            &acme,
            json!({"to": ["someone@example.com"], "subject": "acme only", "text": "hello",
                   "idempotency_key": idempotency_key, "send_at": an_hour_ahead()}),
        )
        .await;
    let template = id(&setup(
        &app,
        "POST",
        &a("/templates"),
        &acme.admin,
        Some(template_body("notice")),
        CREATED,
    )
    .await);
    let schedule = id(&setup(
        &app,
        "POST",
        &a("/schedules"),
        &acme.admin,
        Some(schedule_body("nightly", &template)),
        CREATED,
    )
    .await);
    let extra = setup(
        &app,
        "POST",
        &a("/tokens"),
        &acme.admin,
        Some(json!({"name": "extra", "person_id": member})),
        CREATED,
    )
    .await;
    assert_eq!(extra["role"], "sender", "a member's token sends: {extra}");

    // A personal administrator token works until it is revoked, and never again after.
    let revoked = setup(
        &app,
        "POST",
        &a("/tokens"),
        &acme.admin,
        Some(json!({"name": "revoked", "person_id": admin_person})),
        CREATED,
    )
    .await;
    let revoked_token = revoked["token"].as_str().unwrap().to_owned();
    setup(&app, "GET", &a("/audit"), &revoked_token, None, OK).await;
    setup(
        &app,
        "DELETE",
        &a(&format!("/tokens/{}", id(&revoked))),
        &acme.admin,
        None,
        GONE,
    )
    .await;
    let after = send(&app, "GET", &a(""), Some(&revoked_token), None).await;
    assert_eq!(
        after.status,
        StatusCode::UNAUTHORIZED,
        "a revoked token must answer 401: {after}"
    );

    let smtp_credential = id(&setup(
        &app,
        "POST",
        &a("/smtp-credentials"),
        &acme.admin,
        Some(json!({"name": "grafana"})),
        CREATED,
    )
    .await);
    let smtp_connector = id(&setup(
        &app,
        "POST",
        &a("/smtp-connectors"),
        &acme.admin,
        Some(json!({"name": "office", "cidrs": ["10.99.0.0/16"]})),
        CREATED,
    )
    .await);

    let webhook = id(&setup(
        &app,
        "POST",
        &a("/webhooks"),
        &acme.admin,
        Some(json!({"url": webhook_url(&app), "events": ["message.sent"]})),
        CREATED,
    )
    .await);

    let gateway = id(&setup(
        &app,
        "POST",
        &a("/gateways"),
        &acme.admin,
        Some(json!({"name": "office"})),
        CREATED,
    )
    .await);

    let operator_token = setup(
        &app,
        "POST",
        "/v1/operator/tokens",
        OPERATOR,
        Some(json!({"name": "another operator"})),
        CREATED,
    )
    .await;

    World {
        ids: Ids {
            person: member,
            token: id(&extra),
            operator_token: id(&operator_token),
            server,
            account,
            provider,
            message,
            smtp_credential,
            smtp_connector,
            webhook,
            template,
            schedule,
            gateway,
        },
        networks: std::sync::atomic::AtomicU32::new(0),
        acme_id,
        extra_token: extra["token"].as_str().unwrap().to_owned(),
        operator_token: operator_token["token"].as_str().unwrap().to_owned(),
        revoked_token,
        idempotency_key,
        app,
        smtp,
        acme,
        globex,
    }
}

impl World {
    fn token(&self, who: Who) -> Option<&str> {
        match who {
            Who::Anonymous => None,
            Who::UnknownToken => Some("hrld_this_token_was_never_issued"),
            Who::RevokedToken => Some(&self.revoked_token),
            Who::Operator => Some(OPERATOR),
            Who::AcmeAdmin => Some(&self.acme.admin),
            Who::AcmeSender => Some(&self.acme.sender),
            Who::GlobexAdmin | Who::GlobexAdminAcmeIds => Some(&self.globex.admin),
            Who::GlobexSender | Who::GlobexSenderAcmeIds => Some(&self.globex.sender),
        }
    }

    /// A request body that would succeed for an allowed caller. `tag` makes names unique
    /// and marks what a denied call tried to create, so the final sweep can look for it.
    fn body(&self, endpoint: &Endpoint, tag: &str, allowed: bool) -> Option<Value> {
        let body = match (endpoint.method, endpoint.template) {
            ("POST", "/v1/tenants") => json!({"slug": tag, "name": tag}),
            ("PUT", "/v1/tenants/{tenant}/entitlements") => {
                // A denied call tries to take the entitlement away.
                json!({"credential_storage": allowed})
            }
            ("PUT", "/v1/tenants/{tenant}/properties") => {
                // A denied call tries to switch acme back to the system default.
                let provider = allowed.then(|| self.ids.provider.clone());
                json!({ "notification_provider_id": provider })
            }
            ("POST", "/v1/tenants/{tenant}/persons") => {
                json!({"name": tag, "email": format!("{tag}@acme.example"), "role": "member"})
            }
            ("PUT", "/v1/tenants/{tenant}/persons/{id}/password") => {
                json!({"password": format!("password of {tag}")})
            }
            ("POST", "/v1/tenants/{tenant}/tokens") => json!({"name": tag, "role": "sender"}),
            ("POST", "/v1/operator/tokens") => json!({ "name": tag }),
            ("POST", "/v1/tenants/{tenant}/smtp-servers") => json!({
                "name": tag, "host": "127.0.0.1", "port": self.smtp.port(), "security": "none"
            }),
            ("PATCH", "/v1/tenants/{tenant}/smtp-servers/{id}")
            | ("PATCH", "/v1/tenants/{tenant}/providers/{id}")
            | ("PATCH", "/v1/tenants/{tenant}/templates/{id}") => json!({ "name": tag }),
            ("PATCH", "/v1/tenants/{tenant}/schedules/{id}") => {
                // A denied call tries to turn acme's schedule off.
                json!({"name": tag, "enabled": allowed})
            }
            ("POST", "/v1/tenants/{tenant}/templates") => template_body(tag),
            ("POST", "/v1/tenants/{tenant}/templates/{id}/preview") => {
                json!({"data": {"site": tag}})
            }
            ("POST", "/v1/tenants/{tenant}/schedules") => schedule_body(tag, &self.ids.template),
            ("POST", "/v1/tenants/{tenant}/smtp-servers/{id}/accounts") => {
                json!({"username": tag, "password": "s3cret", "person_id": self.ids.person})
            }
            ("POST", "/v1/tenants/{tenant}/providers") => json!({
                "name": tag, "smtp_server_id": self.ids.server, "from_address": "alerts@acme.example"
            }),
            ("POST", "/v1/tenants/{tenant}/providers/{id}/test") => {
                json!({"to": "someone@example.com"})
            }
            ("POST", "/v1/tenants/{tenant}/messages") => {
                json!({"to": ["someone@example.com"], "subject": tag, "text": "hello"})
            }
            ("POST", "/v1/tenants/{tenant}/smtp-credentials")
            | ("POST", "/v1/tenants/{tenant}/gateways") => json!({ "name": tag }),
            ("POST", "/v1/tenants/{tenant}/smtp-connectors") => {
                json!({"name": tag, "cidrs": [self.fresh_network()]})
            }
            ("POST", "/v1/tenants/{tenant}/webhooks") => {
                json!({"url": webhook_url(&self.app), "events": ["message.sent"]})
            }
            ("PATCH", "/v1/tenants/{tenant}/webhooks/{id}") => {
                // A denied call tries to turn acme's webhook off.
                json!({ "enabled": allowed })
            }
            // Never waits, should a claim get past the token check.
            ("POST", "/v1/gateway/claim") => json!({"instance": tag, "version": "test",
                "incarnation": tag, "limit": 1, "wait_seconds": 0, "key": "AAAA"}),
            ("POST", "/v1/tenants/{tenant}/messages/batch") => {
                json!({"messages": [{"to": ["someone@example.com"], "subject": tag, "text": "hello"}]})
            }
            _ => return None,
        };
        Some(body)
    }

    /// A network no connector has yet: connectors' networks may not overlap.
    fn fresh_network(&self) -> String {
        let n = self
            .networks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("10.{}.{}.0/24", 100 + n / 256, n % 256)
    }

    /// Creates a fresh acme object of `kind` for an allowed deletion; returns its id and,
    /// for a token, its secret.
    async fn throwaway(&self, kind: Kind, tag: &str) -> (String, Option<String>) {
        let a = |rest: &str| format!("/v1/tenants/acme{rest}");
        let (path, body, created) = match kind {
            // A message is not deleted but cancelled, which needs one still waiting.
            Kind::Message => {
                let body = json!({"to": ["someone@example.com"], "subject": tag, "text": "hello",
                                  "send_at": an_hour_ahead()});
                (a("/messages"), body, ACCEPTED)
            }
            Kind::Template => (a("/templates"), template_body(tag), CREATED),
            Kind::Schedule => (
                a("/schedules"),
                schedule_body(tag, &self.ids.template),
                CREATED,
            ),
            Kind::Person => (
                a("/persons"),
                json!({"name": tag, "email": format!("{tag}@acme.example")}),
                CREATED,
            ),
            Kind::Token => (
                a("/tokens"),
                json!({"name": tag, "role": "sender"}),
                CREATED,
            ),
            Kind::OperatorToken => (
                "/v1/operator/tokens".to_owned(),
                json!({ "name": tag }),
                CREATED,
            ),
            Kind::Server => (
                a("/smtp-servers"),
                json!({"name": tag, "host": "127.0.0.1", "port": self.smtp.port(), "security": "none"}),
                CREATED,
            ),
            Kind::Account => (
                a(&format!("/smtp-servers/{}/accounts", self.ids.server)),
                json!({"username": tag, "person_id": self.ids.person}),
                CREATED,
            ),
            Kind::Provider => (
                a("/providers"),
                json!({"name": tag, "smtp_server_id": self.ids.server, "from_address": "alerts@acme.example"}),
                CREATED,
            ),
            Kind::SmtpCredential => (a("/smtp-credentials"), json!({ "name": tag }), CREATED),
            Kind::Gateway => (a("/gateways"), json!({ "name": tag }), CREATED),
            Kind::SmtpConnector => (
                a("/smtp-connectors"),
                json!({"name": tag, "cidrs": [self.fresh_network()]}),
                CREATED,
            ),
            Kind::Webhook => (
                a("/webhooks"),
                json!({"url": webhook_url(&self.app), "events": ["message.sent"]}),
                CREATED,
            ),
        };
        let body = setup(&self.app, "POST", &path, OPERATOR, Some(body), created).await;
        (id(&body), body["token"].as_str().map(str::to_owned))
    }

    /// Whether acme's object a DELETE route names is still there: read back by the
    /// operator, or for a token, used. A message is there while it is still scheduled:
    /// once cancelled (or sent) this answers 410 Gone.
    async fn exists(&self, template: &str, ids: &Ids, secret: &str) -> StatusCode {
        if kind_of(template) == Some(Kind::Token) {
            // Tokens have no GET; a token that still exists still authenticates.
            return send(&self.app, "GET", "/v1/tenants/acme", Some(secret), None)
                .await
                .status;
        }
        if kind_of(template) == Some(Kind::OperatorToken) {
            return send(&self.app, "GET", "/v1/operator/tokens", Some(secret), None)
                .await
                .status;
        }
        if let Some(kind @ (Kind::SmtpCredential | Kind::SmtpConnector)) = kind_of(template) {
            // Neither has a GET of its own: look for it in acme's list.
            let (list, id) = match kind {
                Kind::SmtpCredential => ("smtp-credentials", &ids.smtp_credential),
                _ => ("smtp-connectors", &ids.smtp_connector),
            };
            let path = format!("/v1/tenants/acme/{list}");
            let listed = send(&self.app, "GET", &path, Some(OPERATOR), None).await;
            let found = listed
                .body
                .as_array()
                .is_some_and(|all| all.iter().any(|o| o["id"] == id.as_str()));
            return if found {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
        }
        // Read it back in acme whichever tenant the deletion was aimed at.
        let path = fill(template, "acme", ids);
        let answer = send(&self.app, "GET", &path, Some(OPERATOR), None).await;
        if kind_of(template) == Some(Kind::Message)
            && answer.status == StatusCode::OK
            && answer.body["status"] != "scheduled"
        {
            // A cancelled message stays readable; what its deletion ends is its waiting.
            return StatusCode::GONE;
        }
        answer.status
    }
}

/// Checks that `answer` is the problem document `expect` describes.
fn check_problem(answer: &Answer, status: StatusCode, kind: &str) -> Result<(), String> {
    if answer.status != status {
        return Err(format!("expected {status}, got {answer}"));
    }
    if answer.content_type != "application/problem+json" {
        return Err(format!("expected application/problem+json, got {answer}"));
    }
    let kind = format!("urn:herald:problem:{kind}");
    if answer.body["type"] != kind.as_str() || answer.body["status"] != status.as_u16() {
        return Err(format!("expected type {kind}, got {answer}"));
    }
    if status == StatusCode::UNAUTHORIZED && answer.www_authenticate.as_deref() != Some("Bearer") {
        return Err(format!(
            "expected WWW-Authenticate: Bearer, got {answer:?}",
            answer = answer.www_authenticate
        ));
    }
    Ok(())
}

/// Counts of what the matrix did, for the report.
#[derive(Default)]
struct Tally {
    cells: usize,
    allowed: usize,
    denied: usize,
    compared_with_missing: usize,
}

#[tokio::test]
async fn every_route_answers_every_caller_as_its_role_and_tenant_allow() {
    let world = world().await;
    let app = &world.app;
    let mut failures: Vec<String> = Vec::new();
    let mut tally = Tally::default();
    let mut serial = 0;

    for endpoint in ENDPOINTS {
        let method = endpoint.method;
        for who in Who::ALL {
            // Globex naming acme's ids on its own tenant only means something where ids are.
            if who.slug() == "globex" && kind_of(endpoint.template).is_none() {
                continue;
            }
            serial += 1;
            tally.cells += 1;
            let expect = expected(endpoint, who);
            let allowed = expect == Expect::Allowed;
            let tag = format!("{}-{serial}", if allowed { "ok" } else { "denied" });
            let mut ids = world.ids.clone();
            let mut secret = if kind_of(endpoint.template) == Some(Kind::OperatorToken) {
                world.operator_token.clone()
            } else {
                world.extra_token.clone()
            };
            let deletes = method == "DELETE";
            if deletes && allowed {
                // Each allowed caller deletes its own fresh object, so every deletion succeeds.
                let kind = kind_of(endpoint.template).expect("DELETE routes name an object");
                let (id, token) = world.throwaway(kind, &tag).await;
                ids.set(kind, id);
                secret = token.unwrap_or_default();
            }
            let path = fill(endpoint.template, who.slug(), &ids);
            let body = world.body(endpoint, &tag, allowed);
            let answer = send(app, method, &path, world.token(who), body.as_ref()).await;
            let cell = format!("{method} {path} as {who}");

            match expect {
                Expect::Allowed => {
                    tally.allowed += 1;
                    if answer.status != endpoint.ok {
                        failures.push(format!("{cell}: expected {}, got {answer}", endpoint.ok));
                        continue;
                    }
                    if endpoint.ok != GONE && !(answer.body.is_object() || answer.body.is_array()) {
                        failures.push(format!("{cell}: expected a JSON body, got {answer}"));
                    }
                    if deletes {
                        let status = world.exists(endpoint.template, &ids, &secret).await;
                        let gone = match kind_of(endpoint.template) {
                            Some(Kind::Token | Kind::OperatorToken) => StatusCode::UNAUTHORIZED,
                            Some(Kind::Message) => StatusCode::GONE,
                            _ => StatusCode::NOT_FOUND,
                        };
                        if kind_of(endpoint.template) == Some(Kind::Message)
                            && answer.body["status"] != "cancelled"
                        {
                            failures.push(format!(
                                "{cell}: expected the message, now cancelled, got {answer}"
                            ));
                        }
                        if status != gone {
                            failures.push(format!(
                                "{cell}: the deleted object still answers {status}, expected {gone}"
                            ));
                        }
                    }
                }
                Expect::Denied(status, kind) => {
                    tally.denied += 1;
                    if let Err(why) = check_problem(&answer, status, kind) {
                        failures.push(format!("{cell}: {why}"));
                    }
                    if deletes {
                        let still = world.exists(endpoint.template, &ids, &secret).await;
                        if still != StatusCode::OK {
                            failures.push(format!(
                                "{cell}: a denied deletion removed the object (it now answers {still})"
                            ));
                        }
                    }
                    // The answer about acme's real objects must be the answer about nothing,
                    // or another tenant could probe for what acme has.
                    if who.is_outsider() && endpoint.template.contains("{tenant}") {
                        let missing = if who.slug() == "acme" {
                            fill(endpoint.template, NO_TENANT, &ids)
                        } else {
                            fill(endpoint.template, who.slug(), &Ids::missing())
                        };
                        let other =
                            send(app, method, &missing, world.token(who), body.as_ref()).await;
                        tally.compared_with_missing += 1;
                        if (other.status, &other.body) != (answer.status, &answer.body) {
                            failures.push(format!(
                                "{cell}: answers {answer}, but {method} {missing} answers {other}: \
                                 the difference reveals that acme's object exists"
                            ));
                        }
                    }
                }
            }
        }
    }

    sweep(&world, &mut failures).await;
    let not_allowed = not_allowed_methods_answer_405(&world, &mut failures).await;

    println!(
        "isolation matrix: {} endpoints ({} route templates) x {} callers = {} cells \
         ({} allowed, {} denied, {} compared with a missing object), {} other methods answered 405",
        ENDPOINTS.len(),
        templates().len(),
        Who::ALL.len(),
        tally.cells,
        tally.allowed,
        tally.denied,
        tally.compared_with_missing,
        not_allowed,
    );
    assert!(
        failures.is_empty(),
        "{} checks of the isolation matrix failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// After the matrix: nothing a denied call tried to do happened, and acme's objects are intact.
async fn sweep(world: &World, failures: &mut Vec<String>) {
    let app = &world.app;
    let ids = &world.ids;
    let get = |path: String| async move {
        let answer = send(app, "GET", &path, Some(OPERATOR), None).await;
        (path, answer)
    };
    let denied = |value: &Value| value.as_str().is_some_and(|s| s.starts_with("denied-"));

    let (path, tenants) = get("/v1/tenants".into()).await;
    for tenant in tenants.body.as_array().into_iter().flatten() {
        if denied(&tenant["slug"]) {
            failures.push(format!(
                "GET {path}: a denied call created the tenant {tenant}"
            ));
        }
    }
    for slug in ["acme", "globex"] {
        let lists = [
            ("/persons".to_owned(), "email"),
            ("/tokens".to_owned(), "name"),
            ("/smtp-servers".to_owned(), "name"),
            ("/providers".to_owned(), "name"),
            ("/messages?limit=500".to_owned(), "subject"),
            ("/templates".to_owned(), "name"),
            ("/schedules".to_owned(), "name"),
            ("/gateways".to_owned(), "name"),
            (format!("/smtp-servers/{}/accounts", ids.server), "username"),
        ];
        for (rest, field) in lists {
            if slug == "globex" && rest.contains(&ids.server) {
                continue;
            }
            let (path, answer) = get(format!("/v1/tenants/{slug}{rest}")).await;
            if answer.status != StatusCode::OK {
                failures.push(format!("sweep: GET {path} answered {answer}"));
            }
            // A message list is a page: `{messages, next_cursor}`.
            let items = answer.body.get("messages").unwrap_or(&answer.body);
            for item in items.as_array().into_iter().flatten() {
                if denied(&item[field]) {
                    failures.push(format!("GET {path}: a denied call created {item}"));
                }
            }
        }
    }

    let (path, operator_tokens) = get("/v1/operator/tokens".into()).await;
    for token in operator_tokens.body["tokens"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if denied(&token["name"]) {
            failures.push(format!("GET {path}: a denied call created {token}"));
        }
    }
    let operator = send(
        app,
        "GET",
        "/v1/operator/tokens",
        Some(&world.operator_token),
        None,
    )
    .await;
    if operator.status != StatusCode::OK {
        failures.push(format!(
            "the second operator token no longer works: {operator}"
        ));
    }

    let (path, acme) = get("/v1/tenants/acme".into()).await;
    if acme.body["credential_storage"] != true
        || acme.body["notification_provider_id"] != ids.provider.as_str()
    {
        failures.push(format!(
            "GET {path}: a denied call changed the tenant: {acme}"
        ));
    }
    for template in [
        "/v1/tenants/{tenant}/persons/{id}",
        "/v1/tenants/{tenant}/smtp-servers/{id}",
        "/v1/tenants/{tenant}/smtp-servers/{id}/accounts/{account}",
        "/v1/tenants/{tenant}/providers/{id}",
        "/v1/tenants/{tenant}/messages/{id}",
        "/v1/tenants/{tenant}/webhooks/{id}",
        "/v1/tenants/{tenant}/templates/{id}",
        "/v1/tenants/{tenant}/schedules/{id}",
        "/v1/tenants/{tenant}/gateways/{id}",
    ] {
        let (path, answer) = get(fill(template, "acme", ids)).await;
        if answer.status != StatusCode::OK {
            failures.push(format!("GET {path}: acme's object is gone: {answer}"));
        } else if denied(&answer.body["name"]) {
            failures.push(format!("GET {path}: a denied PATCH renamed it: {answer}"));
        } else if answer.body["enabled"] == false {
            failures.push(format!("GET {path}: a denied PATCH disabled it: {answer}"));
        }
    }
    let extra = send(
        app,
        "GET",
        "/v1/tenants/acme",
        Some(&world.extra_token),
        None,
    )
    .await;
    if extra.status != StatusCode::OK {
        failures.push(format!("acme's extra token no longer works: {extra}"));
    }
    let (path, message) = get(fill("/v1/tenants/{tenant}/messages/{id}", "acme", ids)).await;
    if message.body["status"] != "scheduled" {
        failures.push(format!(
            "GET {path}: acme's message is no longer scheduled: {message}"
        ));
    }
}

/// Every method the table does not list for a route answers 405, so the table's methods
/// are also checked against the running router, not only against its source.
async fn not_allowed_methods_answer_405(world: &World, failures: &mut Vec<String>) -> usize {
    let mut checked = 0;
    for template in templates() {
        let served: BTreeSet<&str> = ENDPOINTS
            .iter()
            .filter(|e| e.template == template)
            .map(|e| e.method)
            .collect();
        let path = fill(template, "acme", &world.ids);
        for method in METHODS.iter().filter(|m| !served.contains(*m)) {
            checked += 1;
            let answer = send(&world.app, method, &path, Some(OPERATOR), None).await;
            if let Err(why) = check_problem(
                &answer,
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
            ) {
                failures.push(format!("{method} {path} as the operator: {why}"));
            }
        }
    }
    let answer = send(&world.app, "GET", "/v1/no-such-route", Some(OPERATOR), None).await;
    if let Err(why) = check_problem(&answer, StatusCode::NOT_FOUND, "not-found") {
        failures.push(format!("GET /v1/no-such-route: {why}"));
    }
    checked
}

/// The route templates of the table, once each, in order.
fn templates() -> Vec<&'static str> {
    let mut seen = BTreeSet::new();
    ENDPOINTS
        .iter()
        .map(|e| e.template)
        .filter(|t| seen.insert(*t))
        .collect()
}

/// Reads every `(method, path)` the router sources declare with `.route("…", get(…).post(…))`.
pub(crate) fn routes_in_source() -> BTreeSet<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../herald-api/src/routes");
    let mut found = BTreeSet::new();
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        // Routes declared any other way would escape this guard, so they must not exist.
        for other in [".nest(", ".nest_service(", ".route_service("] {
            assert!(
                !source.contains(other),
                "{} uses {other}; teach the isolation guard to read it",
                path.display()
            );
        }
        let mut rest = source.as_str();
        while let Some(at) = rest.find(".route(") {
            let after = &rest[at + ".route(".len()..];
            // The arguments run to the parenthesis that closes `.route(`.
            let (mut depth, mut in_string, mut end) = (1, false, after.len());
            for (i, c) in after.char_indices() {
                match c {
                    '"' => in_string = !in_string,
                    '(' if !in_string => depth += 1,
                    ')' if !in_string => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let args = &after[..end];
            let open = args.find('"').expect("a route path literal") + 1;
            let close = open + args[open..].find('"').expect("the end of the path literal");
            let route = &args[open..close];
            let handlers = &args[close + 1..];
            for method in METHODS {
                let call = format!("{}(", method.to_ascii_lowercase());
                let declared = handlers.match_indices(&call).any(|(i, _)| {
                    handlers[..i]
                        .chars()
                        .next_back()
                        .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
                });
                if declared {
                    found.insert(((*method).to_owned(), route.to_owned()));
                }
            }
            rest = &after[end..];
        }
    }
    found
}

#[test]
fn the_matrix_covers_every_route_in_the_router_source() {
    let in_source = routes_in_source();
    let in_table: BTreeSet<(String, String)> = ENDPOINTS
        .iter()
        .map(|e| (e.method.to_owned(), e.template.to_owned()))
        .collect();
    assert_eq!(
        in_table.len(),
        ENDPOINTS.len(),
        "the table lists an endpoint twice"
    );
    let missing: Vec<_> = in_source.difference(&in_table).collect();
    let stale: Vec<_> = in_table.difference(&in_source).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "the isolation matrix and the router disagree.\n\
         served but not in the matrix (add them to ENDPOINTS with their access): {missing:?}\n\
         in the matrix but not served: {stale:?}"
    );
    // A floor, so that a broken parser finding nothing cannot pass by agreeing with a
    // truncated table: the API already served 35 endpoints when this test was written.
    assert!(in_source.len() >= 35, "{in_source:?}");
}

/// Acme's ids given in another tenant's request bodies are refused like ids that do not
/// exist, acme's names do not collide with globex's, and globex's lists and audit log never
/// mention acme's objects.
#[tokio::test]
async fn acme_ids_in_globex_bodies_and_lists_reveal_nothing() {
    let world = world().await;
    let app = &world.app;
    let ids = &world.ids;
    let admin = Some(world.globex.admin.as_str());
    let g = |rest: &str| format!("/v1/tenants/globex{rest}");

    // Globex's own objects, named exactly like acme's: names are unique per tenant only,
    // so a 409 here would tell globex what acme has.
    let server = send(
        app,
        "POST",
        &g("/smtp-servers"),
        admin,
        Some(&json!({"name": "main", "host": "127.0.0.1", "port": world.smtp.port(), "security": "none"})),
    )
    .await;
    assert_eq!(
        server.status, CREATED,
        "a server named like acme's: {server}"
    );
    let server = id(&server.body);
    let person = send(
        app,
        "POST",
        &g("/persons"),
        admin,
        Some(&json!({"name": "Member", "email": "member@acme.example"})),
    )
    .await;
    assert_eq!(
        person.status, CREATED,
        "a person with acme's member's address: {person}"
    );
    let provider = send(
        app,
        "POST",
        &g("/providers"),
        admin,
        Some(&json!({"name": "corporate", "smtp_server_id": server, "from_address": "alerts@globex.example"})),
    )
    .await;
    assert_eq!(
        provider.status, CREATED,
        "a provider named like acme's: {provider}"
    );
    let provider = id(&provider.body);

    // References to acme's objects in bodies are refused as invalid fields, exactly as
    // references to objects that do not exist are.
    let refused: Vec<(&str, String, Value, Value, &str)> = vec![
        (
            "POST",
            g("/tokens"),
            json!({"name": "t1", "person_id": ids.person}),
            json!({"name": "t1", "person_id": NO_ID}),
            "person_id",
        ),
        (
            "POST",
            g(&format!("/smtp-servers/{server}/accounts")),
            json!({"username": "u1", "person_id": ids.person}),
            json!({"username": "u1", "person_id": NO_ID}),
            "person_id",
        ),
        (
            "POST",
            g("/providers"),
            json!({"name": "p1", "smtp_server_id": ids.server, "from_address": "a@globex.example"}),
            json!({"name": "p1", "smtp_server_id": NO_ID, "from_address": "a@globex.example"}),
            "smtp_server_id",
        ),
        (
            "POST",
            g("/providers"),
            json!({"name": "p2", "smtp_server_id": server, "account_id": ids.account,
                   "from_address": "a@globex.example"}),
            json!({"name": "p2", "smtp_server_id": server, "account_id": NO_ID,
                   "from_address": "a@globex.example"}),
            "account_id",
        ),
        (
            "PATCH",
            g(&format!("/providers/{provider}")),
            json!({"smtp_server_id": ids.server}),
            json!({"smtp_server_id": NO_ID}),
            "smtp_server_id",
        ),
        (
            "PATCH",
            g(&format!("/providers/{provider}")),
            json!({"account_id": ids.account}),
            json!({"account_id": NO_ID}),
            "account_id",
        ),
        (
            "PUT",
            g("/properties"),
            json!({"notification_provider_id": ids.provider}),
            json!({"notification_provider_id": NO_ID}),
            "notification_provider_id",
        ),
        (
            "POST",
            g("/schedules"),
            schedule_body("s1", &ids.template),
            schedule_body("s1", NO_ID),
            "template",
        ),
        (
            "POST",
            g("/messages"),
            json!({"to": ["x@globex.example"], "template": ids.template, "data": {"site": "x"}}),
            json!({"to": ["x@globex.example"], "template": NO_ID, "data": {"site": "x"}}),
            "template",
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, body, missing_body, field) in &refused {
        let cell = format!("{method} {path} as globex's tenant_admin with {body}");
        let answer = send(app, method, path, admin, Some(body)).await;
        if let Err(why) = check_problem(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid-fields")
        {
            failures.push(format!("{cell}: {why}"));
            continue;
        }
        if answer.body["errors"][0]["field"] != *field {
            failures.push(format!(
                "{cell}: expected the error on {field}, got {answer}"
            ));
        }
        let missing = send(app, method, path, admin, Some(missing_body)).await;
        if (missing.status, &missing.body) != (answer.status, &answer.body) {
            failures.push(format!(
                "{cell}: answers {answer}, but with an id that does not exist {missing}"
            ));
        }
    }

    // Idempotency keys belong to one tenant: acme's key is a new message for globex.
    let submitted = send(
        app,
        "POST",
        &g("/messages"),
        Some(&world.globex.sender),
        Some(
            &json!({"to": ["x@globex.example"], "subject": "globex", "text": "hi",
                     "idempotency_key": world.idempotency_key}),
        ),
    )
    .await;
    if submitted.status != ACCEPTED
        || submitted.body["duplicate"] != false
        || submitted.body["id"] == ids.message.as_str()
    {
        failures.push(format!(
            "POST {} with acme's idempotency key must create globex's own message: {submitted}",
            g("/messages")
        ));
    }

    // Globex's readable collections never mention acme or its objects.
    let mut acme_ids: Vec<&str> = ids.all().to_vec();
    acme_ids.push(&world.acme_id);
    for endpoint in ENDPOINTS.iter().filter(|e| {
        e.method == "GET" && e.template.contains("{tenant}") && kind_of(e.template).is_none()
    }) {
        let path = fill(endpoint.template, "globex", ids);
        let answer = send(app, "GET", &path, admin, None).await;
        if answer.status != OK {
            failures.push(format!("GET {path} as globex's tenant_admin: {answer}"));
            continue;
        }
        let text = answer.body.to_string();
        for acme_id in &acme_ids {
            if text.contains(acme_id) {
                failures.push(format!(
                    "GET {path} as globex's tenant_admin mentions acme's {acme_id}: {text}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
