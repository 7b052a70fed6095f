//! The API's OpenAPI 3.1 document, built from the handlers' `#[utoipa::path]`
//! annotations and served, without a token, at `GET /v1/openapi.json`.
//!
//! Request bodies are the handlers' own body types, and so are the answers
//! this crate defines (a rendered template, a test event's outcome). Answers
//! built from `herald-store` and `herald-core` values are described here by
//! types that only document their JSON (those crates stay free of utoipa);
//! the API tests check real answers against them, so a field added to a
//! record and not described here fails a test.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use crate::routes;

/// The document's skeleton; the paths come from each route module's own `Api`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "A multi-tenant notification mail gateway. Every route but the health checks \
                       and this document takes `Authorization: Bearer <token>`; errors are RFC 9457 \
                       problem documents (`application/problem+json`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    security(("bearer" = [])),
    components(schemas(Problem, ProblemType, FieldError)),
    tags(
        (name = "health", description = "Liveness, readiness and this document"),
        (name = "operator", description = "The installation: tenants, entitlements, nodes and operator tokens"),
        (name = "tenants", description = "A tenant, its properties, capture mailbox and audit log"),
        (name = "people", description = "Persons and API tokens"),
        (name = "servers", description = "SMTP servers and their accounts"),
        (name = "providers", description = "Notification providers and test messages"),
        (name = "messages", description = "Submitting messages and reading what happened to them"),
        (name = "smtp", description = "SMTP submission: credentials and IP connectors"),
        (name = "webhooks", description = "Delivery webhooks: signed events about messages, their secrets and deliveries"),
        (name = "templates", description = "Message templates (MiniJinja): versions and previews"),
        (name = "schedules", description = "Recurring schedules: a cron expression in a time zone, a template, recipients; their firings"),
        (name = "gateways", description = "Gateways: processes in a tenant's network that fetch its mail and deliver it there; their tokens and instances"),
    )
)]
struct Skeleton;

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Skeleton::openapi();
    for part in [
        routes::Api::openapi(),
        routes::tenants::Api::openapi(),
        routes::operator::Api::openapi(),
        routes::people::Api::openapi(),
        routes::servers::Api::openapi(),
        routes::providers::Api::openapi(),
        routes::messages::Api::openapi(),
        routes::smtp::Api::openapi(),
        routes::webhooks::Api::openapi(),
        routes::templates::Api::openapi(),
        routes::schedules::Api::openapi(),
        routes::gateways::Api::openapi(),
        routes::gateway_protocol::Api::openapi(),
    ] {
        doc.merge(part);
    }
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    Common.modify(&mut doc);
    doc
}

/// `GET /v1/openapi.json`: the document, serialised once per process.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "health",
    security(()),
    responses((status = 200, description = "This document", content_type = "application/json", body = Object)),
)]
pub(crate) async fn serve() -> impl IntoResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let json = JSON.get_or_init(|| {
        serde_json::to_string(&document()).expect("the OpenAPI document serialises")
    });
    ([(header::CONTENT_TYPE, "application/json")], json.as_str())
}

/// The answers every operation may give, added to each where they apply, so
/// that no operation forgets one: 401 and 403 where a token is needed, 404
/// where the path names something, 400, 408, 413, 415 and 422 where there
/// is a body,
/// 409 for every change (names are unique, objects in use stay), 500 and
/// 503 everywhere but the health checks and this document.
struct Common;

/// (status, component name, description) of the shared problem answers.
const COMMON: [(&str, &str, &str); 11] = [
    (
        "400",
        "Malformed",
        "The body is not JSON, or not the JSON this route takes (`malformed-request`)",
    ),
    (
        "401",
        "Unauthorized",
        "No valid bearer token (`unauthorized`)",
    ),
    (
        "403",
        "Forbidden",
        "The token's role may not do this (`forbidden`, `credential-storage-not-granted`)",
    ),
    (
        "404",
        "NotFound",
        "No such object for this token, another tenant's included (`not-found`)",
    ),
    (
        "409",
        "Conflict",
        "The change conflicts with what is stored: a name taken, an object in use (`conflict`)",
    ),
    (
        "408",
        "BodyTimeout",
        "The body stopped arriving before it was complete (`body-timeout`)",
    ),
    (
        "413",
        "TooLarge",
        "The body is larger than the node accepts (`too-large`)",
    ),
    (
        "415",
        "UnsupportedMediaType",
        "The body is not sent as `Content-Type: application/json` (`unsupported-media-type`)",
    ),
    (
        "422",
        "Invalid",
        "Fields broke their rules; `errors` names each field and rule (`invalid-fields`)",
    ),
    (
        "500",
        "Internal",
        "An internal error; its details are logged, never sent (`internal`)",
    ),
    (
        "503",
        "Unavailable",
        "The database is unavailable; nothing was stored (`unavailable`)",
    ),
];

/// A response whose body is a problem document.
fn problem_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

impl Modify for Common {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        for (_, name, description) in COMMON {
            components
                .responses
                .insert(name.to_owned(), RefOr::T(problem_response(description)));
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            let operations = [
                (false, &mut item.get),
                (true, &mut item.put),
                (true, &mut item.post),
                (true, &mut item.delete),
                (true, &mut item.patch),
            ];
            for (change, operation) in operations {
                let Some(operation) = operation else { continue };
                // An operation with its own (empty) requirement is public:
                // it needs no token at all, which OpenAPI writes `[]`.
                let public = operation.security.is_some();
                if public {
                    operation.security = Some(Vec::new());
                }
                // Handlers of different modules share names (`list`, `create_token`):
                // the tag, which is the module, makes the operation id unique.
                if let (Some(id), Some(tag)) = (&operation.operation_id, &operation.tags) {
                    if let Some(tag) = tag.first() {
                        operation.operation_id = Some(format!("{tag}_{id}"));
                    }
                }
                if let Some(body) = &mut operation.request_body {
                    for content in body.content.values_mut() {
                        content.schema = content.schema.take().map(absent_not_null);
                    }
                }
                let has_body = operation.request_body.is_some();
                let wanted = |status: &str| match status {
                    "401" | "403" => !public,
                    "404" => path.contains('{'),
                    "400" | "408" | "413" | "415" | "422" => has_body,
                    "409" => change && !public,
                    _ => !public,
                };
                let mut add = Vec::new();
                for (status, name, _) in COMMON {
                    if wanted(status) && !operation.responses.responses.contains_key(status) {
                        add.push((status, name));
                    }
                }
                for (status, name) in add {
                    operation
                        .responses
                        .responses
                        .insert(status.to_owned(), RefOr::Ref(Ref::from_response_name(name)));
                }
            }
        }
    }
}

/// An optional body is one the request leaves out: `Body` takes JSON objects
/// only, so the `null` that utoipa offers for an `Option` body is dropped
/// from its schema (the body stays optional: `required` is unset).
fn absent_not_null(schema: RefOr<Schema>) -> RefOr<Schema> {
    let is_null = |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
    match schema {
        RefOr::T(Schema::OneOf(one)) if one.items.len() == 2 && one.items.iter().any(is_null) => {
            one.items
                .into_iter()
                .find(|s| !is_null(s))
                .expect("one of two is not null")
        }
        other => other,
    }
}

/// An RFC 9457 problem document: the body of every 4xx and 5xx answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Problem {
    /// What kind of problem: a stable URN programs can match on.
    #[serde(rename = "type")]
    kind: ProblemType,
    /// The kind in words.
    title: String,
    /// The HTTP status.
    status: u16,
    /// This occurrence in words.
    detail: String,
    /// For `invalid-fields`: every field refused and the rule it broke.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
}

/// The problem types Herald answers with.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub(crate) enum ProblemType {
    #[serde(rename = "urn:herald:problem:malformed-request")]
    MalformedRequest,
    #[serde(rename = "urn:herald:problem:too-large")]
    TooLarge,
    #[serde(rename = "urn:herald:problem:unsupported-media-type")]
    UnsupportedMediaType,
    #[serde(rename = "urn:herald:problem:body-timeout")]
    BodyTimeout,
    #[serde(rename = "urn:herald:problem:method-not-allowed")]
    MethodNotAllowed,
    #[serde(rename = "urn:herald:problem:invalid-fields")]
    InvalidFields,
    #[serde(rename = "urn:herald:problem:unauthorized")]
    Unauthorized,
    #[serde(rename = "urn:herald:problem:forbidden")]
    Forbidden,
    #[serde(rename = "urn:herald:problem:credential-storage-not-granted")]
    CredentialStorageNotGranted,
    #[serde(rename = "urn:herald:problem:not-found")]
    NotFound,
    #[serde(rename = "urn:herald:problem:conflict")]
    Conflict,
    #[serde(rename = "urn:herald:problem:no-worker-alive")]
    NoWorkerAlive,
    #[serde(rename = "urn:herald:problem:no-gateway-alive")]
    NoGatewayAlive,
    #[serde(rename = "urn:herald:problem:unavailable")]
    Unavailable,
    #[serde(rename = "urn:herald:problem:queue-full")]
    QueueFull,
    #[serde(rename = "urn:herald:problem:too-many-test-messages")]
    TooManyTestMessages,
    #[serde(rename = "urn:herald:problem:too-many-waiting-claims")]
    TooManyWaitingClaims,
    #[serde(rename = "urn:herald:problem:internal")]
    Internal,
}

/// One refused field.
#[derive(Serialize, ToSchema)]
pub(crate) struct FieldError {
    /// The field as the client named it, such as `to[1]` or `attachments[0].filename`.
    field: String,
    /// The rule it broke.
    rule: String,
}

/// A tenant in the path, by its slug.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct TenantPath {
    /// The tenant's slug.
    #[allow(dead_code)]
    tenant: String,
}

/// A tenant and one of its objects in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct ObjectPath {
    /// The tenant's slug.
    #[allow(dead_code)]
    tenant: String,
    /// The object's id.
    #[allow(dead_code)]
    id: String,
}

/// An SMTP account of a tenant's server in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct AccountPath {
    /// The tenant's slug.
    #[allow(dead_code)]
    tenant: String,
    /// The SMTP server's id.
    #[allow(dead_code)]
    id: String,
    /// The account's id.
    #[allow(dead_code)]
    account: String,
}

/// What the documented answers are made of: the JSON of `herald-store`'s and
/// `herald-core`'s records. Ids are UUIDs, times RFC 3339 strings.
pub(crate) mod answers {
    #![allow(dead_code)]

    use serde_json::Value;
    use utoipa::ToSchema;

    use super::Problem;

    /// A word of a closed set, as the status of a recipient or message.
    #[derive(ToSchema)]
    pub enum Status {
        #[schema(rename = "scheduled")]
        Scheduled,
        #[schema(rename = "queued")]
        Queued,
        #[schema(rename = "sending")]
        Sending,
        #[schema(rename = "deferred")]
        Deferred,
        #[schema(rename = "sent")]
        Sent,
        #[schema(rename = "failed")]
        Failed,
        #[schema(rename = "cancelled")]
        Cancelled,
    }

    /// `{"status": "ok"}` or `{"status": "ready"}`.
    #[derive(ToSchema)]
    pub struct Health {
        pub status: String,
    }

    /// A tenant.
    #[derive(ToSchema)]
    pub struct Tenant {
        #[schema(format = "uuid")]
        pub id: String,
        pub slug: String,
        pub name: String,
        /// Whether the operator allows this tenant to store passwords and tokens.
        pub credential_storage: bool,
        /// The active notification provider; null means the system default.
        #[schema(format = "uuid")]
        pub notification_provider_id: Option<String>,
        /// What was active before the latest change, until that change is in effect everywhere.
        #[schema(format = "uuid")]
        pub previous_provider_id: Option<String>,
        #[schema(format = DateTime)]
        pub properties_effective_from: String,
        #[schema(format = DateTime)]
        pub created_at: String,
    }

    /// A provider as the tenant's properties show it.
    #[derive(ToSchema)]
    pub struct ProviderChoice {
        /// `provider` or `system_default`.
        pub kind: String,
        #[schema(format = "uuid")]
        pub provider_id: Option<String>,
        pub name: String,
        /// For the pending choice: by when it is in effect on every node.
        #[schema(format = DateTime)]
        pub takes_effect_by: Option<String>,
    }

    /// A tenant's properties: the provider in effect, and one pending if a change is not yet everywhere.
    #[derive(ToSchema)]
    pub struct Properties {
        #[schema(format = "uuid")]
        pub notification_provider_id: Option<String>,
        pub effective: ProviderChoice,
        pub pending: Option<ProviderChoice>,
        /// How long a node may keep using what it knew of the tenant's provider.
        pub staleness_seconds: u64,
    }

    /// A message in the capture mailbox.
    #[derive(ToSchema)]
    pub struct Captured {
        #[schema(format = "uuid")]
        pub message_id: String,
        #[schema(format = DateTime)]
        pub captured_at: String,
        pub envelope_from: String,
        pub recipients: Vec<String>,
        /// The message exactly as it would have gone on the wire.
        pub content: String,
    }

    /// The newest messages of the capture mailbox.
    #[derive(ToSchema)]
    pub struct CapturedList {
        pub messages: Vec<Captured>,
    }

    /// One entry of the audit log.
    #[derive(ToSchema)]
    pub struct AuditEntry {
        #[schema(format = "uuid")]
        pub tenant_id: Option<String>,
        #[schema(format = DateTime)]
        pub at: String,
        pub actor: String,
        #[schema(format = "uuid")]
        pub token_id: Option<String>,
        pub remote_addr: Option<String>,
        /// Such as `smtp_server.update`.
        pub action: String,
        pub object_id: Option<String>,
        /// What changed; never a secret.
        pub details: Value,
    }

    /// The newest entries of a tenant's audit log.
    #[derive(ToSchema)]
    pub struct AuditList {
        pub entries: Vec<AuditEntry>,
    }

    /// A node as it reports itself.
    #[derive(ToSchema)]
    pub struct Node {
        pub name: String,
        /// `api`, `worker`, or both.
        pub roles: Vec<String>,
        pub version: String,
        #[schema(format = DateTime)]
        pub started_at: String,
        #[schema(format = DateTime)]
        pub heartbeat_at: String,
        pub incarnation: Option<String>,
        /// Whether its latest heartbeat is recent enough.
        pub alive: bool,
    }

    /// The installation's nodes.
    #[derive(ToSchema)]
    pub struct NodeList {
        pub nodes: Vec<Node>,
    }

    /// An operator token: never the token itself, but on creation.
    #[derive(ToSchema)]
    pub struct OperatorToken {
        #[schema(format = "uuid")]
        pub id: String,
        pub name: String,
        #[schema(format = DateTime)]
        pub created_at: String,
        #[schema(format = DateTime)]
        pub last_used_at: Option<String>,
        /// True for the token from `HERALD_BOOTSTRAP_TOKEN`.
        pub bootstrap: bool,
        /// Only in the answer to its creation: the only time it is shown.
        pub token: Option<String>,
    }

    /// The operator tokens.
    #[derive(ToSchema)]
    pub struct OperatorTokenList {
        pub tokens: Vec<OperatorToken>,
    }

    /// A person of a tenant.
    #[derive(ToSchema)]
    pub struct Person {
        #[schema(format = "uuid")]
        pub id: String,
        #[schema(format = "uuid")]
        pub tenant_id: String,
        pub name: String,
        #[schema(format = Email)]
        pub email: String,
        /// `tenant_admin` or `member`.
        pub role: String,
        #[schema(format = DateTime)]
        pub created_at: String,
    }

    /// A tenant's API token, without its hash.
    #[derive(ToSchema)]
    pub struct Token {
        #[schema(format = "uuid")]
        pub id: String,
        #[schema(format = "uuid")]
        pub tenant_id: Option<String>,
        pub name: String,
        /// `sender` or `tenant_admin`.
        pub role: String,
        /// The person a personal token acts as.
        #[schema(format = "uuid")]
        pub person_id: Option<String>,
        #[schema(format = DateTime)]
        pub created_at: String,
        #[schema(format = DateTime)]
        pub last_used_at: Option<String>,
        /// Only in the answer to its creation: the only time it is shown.
        pub token: Option<String>,
    }

    /// Something to know about an entry that was accepted anyway.
    #[derive(ToSchema)]
    pub struct Warning {
        /// Stable, for programs: `plaintext_auth`, `plaintext_auth_refused`, `tls_not_verified`, `egress_refused`…
        pub code: String,
        pub message: String,
    }

    /// An SMTP server and what is weak about it.
    #[derive(ToSchema)]
    pub struct SmtpServer {
        #[schema(format = "uuid")]
        pub id: String,
        #[schema(format = "uuid")]
        pub tenant_id: String,
        pub name: String,
        pub host: String,
        pub port: u16,
        /// `none`, `starttls` or `tls`.
        pub security: String,
        pub requires_auth: bool,
        pub allow_plaintext_auth: bool,
        pub tls_verify: bool,
        pub tls_ca_pem: Option<String>,
        pub tls_server_name: Option<String>,
        pub helo_name: Option<String>,
        pub max_connections: u32,
        pub max_messages_per_connection: u32,
        pub idle_timeout_secs: u32,
        pub rate_limit_per_minute: Option<u32>,
        pub command_timeout_secs: Option<u32>,
        /// The tenant's gateway that delivers this server's mail inside its network; null for delivery from Herald.
        #[schema(format = "uuid")]
        pub gateway_id: Option<String>,
        #[schema(format = DateTime)]
        pub created_at: String,
        #[schema(format = DateTime)]
        pub updated_at: String,
        pub warnings: Vec<Warning>,
    }

    /// OAuth2 client credentials (the client secret is write-only).
    #[derive(ToSchema)]
    pub struct OAuth2Client {
        pub token_url: String,
        pub client_id: String,
        pub scope: Option<String>,
    }

    /// An SMTP account; its secret is write-only.
    #[derive(ToSchema)]
    pub struct SmtpAccount {
        #[schema(format = "uuid")]
        pub id: String,
        #[schema(format = "uuid")]
        pub server_id: String,
        #[schema(format = "uuid")]
        pub tenant_id: String,
        pub username: String,
        /// `plain`, `login` or `xoauth2`.
        pub mechanism: String,
        /// Whether a secret is stored.
        pub secret_set: bool,
        pub oauth2: Option<OAuth2Client>,
        #[schema(format = "uuid")]
        pub person_id: Option<String>,
        #[schema(format = DateTime)]
        pub created_at: String,
    }

    /// A notification provider.
    #[derive(ToSchema)]
    pub struct Provider {
        #[schema(format = "uuid")]
        pub id: String,
        #[schema(format = "uuid")]
        pub tenant_id: String,
        pub name: String,
        #[schema(format = "uuid")]
        pub smtp_server_id: String,
        #[schema(format = "uuid")]
        pub account_id: Option<String>,
        #[schema(format = Email)]
        pub from_address: String,
        pub from_name: Option<String>,
        pub reply_to: Option<String>,
        #[schema(format = Email)]
        pub fallback_recipient: Option<String>,
        /// `fixed` or `on_behalf`.
        pub sender_policy: String,
        #[schema(format = DateTime)]
        pub created_at: String,
        #[schema(format = DateTime)]
        pub updated_at: String,
    }

    /// A test message queued.
    #[derive(ToSchema)]
    pub struct TestQueued {
        #[schema(format = "uuid")]
        pub message_id: String,
        pub status: Status,
    }

    /// A submission's answer, given once the message is committed.
    #[derive(ToSchema)]
    pub struct Submitted {
        #[schema(format = "uuid")]
        pub id: String,
        pub status: Status,
        /// True when the idempotency key matched an earlier message, which is returned instead.
        pub duplicate: bool,
    }

    /// One message of a batch: accepted (`id`, `status`, `duplicate`) or refused (`error`).
    #[derive(ToSchema)]
    pub struct BatchResult {
        /// Its place in the batch.
        pub index: usize,
        #[schema(format = "uuid")]
        pub id: Option<String>,
        pub status: Option<Status>,
        pub duplicate: Option<bool>,
        /// Why it was refused.
        pub error: Option<Problem>,
    }

    /// A batch's answer: one result per message, in order.
    #[derive(ToSchema)]
    pub struct BatchAnswer {
        pub results: Vec<BatchResult>,
        pub accepted: usize,
        pub refused: usize,
    }

    /// A list entry for a message.
    #[derive(ToSchema)]
    pub struct MessageSummary {
        #[schema(format = "uuid")]
        pub id: String,
        pub status: Status,
        pub subject: String,
        /// `api`, `smtp` or `schedule`.
        pub source: String,
        #[schema(format = DateTime)]
        pub created_at: String,
        /// For a scheduled message: when it is (or was) to be sent.
        #[schema(format = DateTime)]
        pub send_at: Option<String>,
    }

    /// One page of messages, newest first.
    #[derive(ToSchema)]
    pub struct MessagePage {
        pub messages: Vec<MessageSummary>,
        /// Give it back as `cursor` for the next page; null on the last page.
        pub next_cursor: Option<String>,
    }

    /// The person a message is sent on behalf of.
    #[derive(ToSchema)]
    pub struct OnBehalf {
        pub name: String,
        #[schema(format = Email)]
        pub email: String,
    }

    /// Who submitted a message over SMTP, and from where.
    #[derive(ToSchema)]
    pub struct SmtpOrigin {
        #[schema(format = "uuid")]
        pub credential_id: Option<String>,
        #[schema(format = "uuid")]
        pub connector_id: Option<String>,
        pub client_addr: String,
    }

    /// A file sent with a message.
    #[derive(ToSchema)]
    pub struct AttachmentInfo {
        pub filename: String,
        pub content_type: String,
        pub content_id: Option<String>,
        /// Bytes, decoded.
        pub size: usize,
    }

    /// One delivery attempt of one recipient.
    #[derive(ToSchema)]
    pub struct Attempt {
        #[schema(format = DateTime)]
        pub at: String,
        pub node: String,
        /// `host:port`, or `capture`.
        pub server: String,
        pub outcome: Status,
        /// The SMTP step that decided, such as `rcpt` or `data`.
        pub step: Option<String>,
        pub code: Option<u16>,
        pub enhanced_code: Option<String>,
        pub response: String,
        pub duration_ms: i64,
        pub remote_addr: Option<String>,
        pub tls_version: Option<String>,
        pub tls_cipher: Option<String>,
        #[schema(format = "uuid")]
        pub provider_id: Option<String>,
        pub config_version: Option<i64>,
        pub sender_policy: Option<String>,
        /// For test messages, to administrators: every step of the session.
        pub diagnosis: Option<Value>,
    }

    /// One recipient with its attempts.
    #[derive(ToSchema)]
    pub struct Recipient {
        #[schema(format = "uuid")]
        pub id: String,
        pub address: String,
        /// `to`, `cc` or `bcc`.
        pub kind: String,
        pub status: Status,
        #[schema(format = DateTime)]
        pub next_attempt_at: Option<String>,
        /// The gateway it is pinned to: only that gateway's instances deliver it.
        #[schema(format = "uuid")]
        pub gateway_id: Option<String>,
        pub attempts: Vec<Attempt>,
    }

    /// One message with everything that happened to it.
    #[derive(ToSchema)]
    pub struct Message {
        #[schema(format = "uuid")]
        pub id: String,
        pub status: Status,
        pub subject: String,
        #[schema(format = DateTime)]
        pub created_at: String,
        pub idempotency_key: Option<String>,
        pub used_fallback: bool,
        pub on_behalf_of: Option<OnBehalf>,
        #[schema(format = "uuid")]
        pub test_provider_id: Option<String>,
        /// `api`, `smtp` or `schedule`.
        pub source: String,
        pub smtp: Option<SmtpOrigin>,
        pub attachments: Option<Vec<AttachmentInfo>>,
        /// For a scheduled message: when it is (or was) to be sent.
        #[schema(format = DateTime)]
        pub send_at: Option<String>,
        /// The template it was rendered from.
        pub template: Option<TemplateUse>,
        /// Why it is not being delivered now, when Herald knows: no instance
        /// of the gateway its recipients are pinned to is alive.
        pub waiting: Option<String>,
        pub recipients: Vec<Recipient>,
    }

    /// The template, and its version, a message was rendered from.
    #[derive(ToSchema)]
    pub struct TemplateUse {
        #[schema(format = "uuid")]
        pub id: String,
        pub version: u32,
    }

    /// A message template at its current version.
    #[derive(ToSchema)]
    pub struct Template {
        #[schema(format = "uuid")]
        pub id: String,
        pub name: String,
        pub description: Option<String>,
        /// 1 when created; every change adds one.
        pub version: u32,
        pub subject: String,
        pub text: Option<String>,
        pub html: Option<String>,
        #[schema(format = DateTime)]
        pub created_at: String,
        #[schema(format = DateTime)]
        pub updated_at: String,
    }

    /// A recurring schedule.
    #[derive(ToSchema)]
    pub struct Schedule {
        #[schema(format = "uuid")]
        pub id: String,
        pub name: String,
        pub cron: String,
        /// An IANA time zone.
        pub timezone: String,
        #[schema(format = "uuid")]
        pub template_id: String,
        #[schema(value_type = Object)]
        pub data: Value,
        pub to: Vec<String>,
        pub cc: Vec<String>,
        pub bcc: Vec<String>,
        pub enabled: bool,
        /// When it fires next; null while disabled.
        #[schema(format = DateTime)]
        pub next_run_at: Option<String>,
        #[schema(format = DateTime)]
        pub last_run_at: Option<String>,
        #[schema(format = DateTime)]
        pub created_at: String,
        #[schema(format = DateTime)]
        pub updated_at: String,
    }

    /// What made a schedule fire.
    #[derive(ToSchema)]
    pub enum RunTrigger {
        #[schema(rename = "schedule")]
        Schedule,
        #[schema(rename = "manual")]
        Manual,
    }

    /// One firing of a schedule.
    #[derive(ToSchema)]
    pub struct ScheduleRun {
        #[schema(format = "uuid")]
        pub id: String,
        #[schema(format = "uuid")]
        pub schedule_id: String,
        pub trigger: RunTrigger,
        /// The occurrence it stands for (the latest one missed, after a catch-up), or when a manual run was asked for.
        #[schema(format = DateTime)]
        pub fire_at: String,
        /// Occurrences missed while no node ran, caught up by this one firing.
        pub missed: u32,
        pub caught_up: bool,
        #[schema(format = "uuid")]
        pub message_id: Option<String>,
        /// The message's status now.
        pub status: Option<Status>,
        /// Why no message was made.
        pub error: Option<String>,
        pub node: String,
        #[schema(format = DateTime)]
        pub created_at: String,
    }

    /// An SMTP credential; its password is shown once, on creation.
    #[derive(ToSchema)]
    pub struct SmtpCredential {
        #[schema(format = "uuid")]
        pub id: String,
        pub name: String,
        /// What the client gives in AUTH.
        pub username: String,
        pub rate_limit_per_minute: Option<u32>,
        #[schema(format = DateTime)]
        pub created_at: String,
        #[schema(format = DateTime)]
        pub last_used_at: Option<String>,
        /// Only in the answer to its creation: the only time it is shown.
        pub password: Option<String>,
    }

    /// An IP connector: mail from its networks needs no AUTH.
    #[derive(ToSchema)]
    pub struct SmtpConnector {
        #[schema(format = "uuid")]
        pub id: String,
        pub name: String,
        /// Networks in CIDR notation.
        pub cidrs: Vec<String>,
        pub rate_limit_per_minute: Option<u32>,
        #[schema(format = DateTime)]
        pub created_at: String,
    }

    /// A gateway: a process in the tenant's network that fetches its mail and
    /// delivers it there. Its token is shown only on creation and replacement.
    #[derive(ToSchema)]
    pub struct Gateway {
        #[schema(format = "uuid")]
        pub id: String,
        pub name: String,
        #[schema(format = DateTime)]
        pub created_at: String,
        /// When the token in force was made.
        #[schema(format = DateTime)]
        pub token_created_at: String,
        /// The instances that reported with its token, newest seen first.
        pub instances: Vec<GatewayInstance>,
        /// Only in the answer to its creation or a new token: `hrldg_` and base64, the only time it is shown.
        pub token: Option<String>,
    }

    /// One running copy of a gateway, known by the name it reports.
    #[derive(ToSchema)]
    pub struct GatewayInstance {
        pub name: String,
        pub version: String,
        /// The address it connected from.
        pub address: String,
        #[schema(format = DateTime)]
        pub first_seen_at: String,
        #[schema(format = DateTime)]
        pub last_seen_at: String,
        /// Outcomes it reported in the last hour, to the minute.
        pub delivered_this_hour: u64,
        pub failed_this_hour: u64,
        /// Whether it polled within the time a node counts as alive.
        pub alive: bool,
    }

    /// A delivery webhook; its signing secret is shown only on creation and rotation.
    #[derive(ToSchema)]
    pub struct Webhook {
        #[schema(format = "uuid")]
        pub id: String,
        pub url: String,
        /// The event types it receives, such as `message.sent`.
        pub events: Vec<String>,
        pub enabled: bool,
        /// Why Herald disabled it (every attempt failed for 24 hours).
        pub disabled_reason: Option<String>,
        /// Since when every attempt to it failed; null after a success.
        #[schema(format = DateTime)]
        pub failing_since: Option<String>,
        /// After a rotation: until when events also carry the previous secret's signature.
        #[schema(format = DateTime)]
        pub previous_secret_until: Option<String>,
        #[schema(format = DateTime)]
        pub created_at: String,
        #[schema(format = DateTime)]
        pub updated_at: String,
        /// Only in the answer to its creation or a rotation: `whsec_` and base64, the only time it is shown.
        pub secret: Option<String>,
        /// Only in the answer to a creation or a change: a host that does not resolve now.
        pub warnings: Option<Vec<Warning>>,
    }

    /// Where a delivery of one event to one webhook stands.
    #[derive(ToSchema)]
    pub enum WebhookDeliveryStatus {
        #[schema(rename = "pending")]
        Pending,
        #[schema(rename = "delivered")]
        Delivered,
        #[schema(rename = "failed")]
        Failed,
    }

    /// One event's delivery to a webhook, with its latest attempt.
    #[derive(ToSchema)]
    pub struct WebhookDelivery {
        /// The `webhook-id` header: the same on every attempt.
        pub event_id: String,
        /// The event's type, such as `message.sent` or `webhook.test`.
        #[schema(rename = "type")]
        pub event_type: String,
        #[schema(format = "uuid")]
        pub message_id: Option<String>,
        pub status: WebhookDeliveryStatus,
        pub attempts: u32,
        #[schema(format = DateTime)]
        pub created_at: String,
        #[schema(format = DateTime)]
        pub last_attempt_at: Option<String>,
        /// The endpoint's HTTP status at the latest attempt, when it answered.
        pub response_status: Option<u16>,
        /// Why the latest attempt failed.
        pub error: Option<String>,
        pub duration_ms: Option<i64>,
        /// When the next attempt is due, while pending.
        #[schema(format = DateTime)]
        pub next_attempt_at: Option<String>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ApiError;

    /// Every problem an `ApiError` can answer with, one per variant: the
    /// match fails to compile when a variant is added and not listed here.
    fn every_error() -> Vec<ApiError> {
        let all = vec![
            ApiError::Malformed(String::new()),
            ApiError::TooLarge,
            ApiError::UnsupportedMediaType,
            ApiError::BodyTimeout,
            ApiError::MethodNotAllowed,
            ApiError::Invalid(vec![]),
            ApiError::Unauthorized,
            ApiError::Forbidden(String::new()),
            ApiError::NotEntitled,
            ApiError::NotFound("object"),
            ApiError::Conflict(String::new()),
            ApiError::NoWorker,
            ApiError::NoGateway(String::new()),
            ApiError::Unavailable("test".into()),
            ApiError::QueueFull { limit: 1 },
            ApiError::TooManyTests { limit: 1 },
            ApiError::TooManyWaitingClaims { limit: 1 },
            ApiError::Internal("test".into()),
        ];
        for error in &all {
            match error {
                ApiError::Malformed(_)
                | ApiError::TooLarge
                | ApiError::UnsupportedMediaType
                | ApiError::BodyTimeout
                | ApiError::MethodNotAllowed
                | ApiError::Invalid(_)
                | ApiError::Unauthorized
                | ApiError::Forbidden(_)
                | ApiError::NotEntitled
                | ApiError::NotFound(_)
                | ApiError::Conflict(_)
                | ApiError::NoWorker
                | ApiError::NoGateway(_)
                | ApiError::Unavailable(_)
                | ApiError::QueueFull { .. }
                | ApiError::TooManyTests { .. }
                | ApiError::TooManyWaitingClaims { .. }
                | ApiError::Internal(_) => {}
            }
        }
        all
    }

    #[test]
    fn the_document_lists_every_problem_type_the_api_answers_with() {
        let doc = serde_json::to_value(document()).unwrap();
        let listed = &doc["components"]["schemas"]["ProblemType"]["enum"];
        let listed: Vec<&str> = listed
            .as_array()
            .expect("ProblemType is an enum")
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let errors = every_error();
        let count = errors.len();
        for error in errors {
            let problem = error.problem();
            let kind = problem["type"].as_str().unwrap();
            assert!(listed.contains(&kind), "{kind} is not in the document");
        }
        assert_eq!(
            listed.len(),
            count,
            "the document lists a type no error has"
        );
    }

    #[test]
    fn the_document_is_openapi_3_1() {
        let doc = serde_json::to_value(document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    }
}
