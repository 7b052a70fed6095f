//! Route table and the helpers every handler shares.

/// Writes the handlers that do nothing but pass the gate and hand over to one
/// store read or one service call, so each such route states only its OpenAPI
/// description, its gate, what it takes and what it calls.
///
/// Each entry reads like the handler's signature, followed by what it calls:
///
/// - `async fn list(Authorised<G>) -> Vec<T> = store.list_things;` answers
///   `state.store.list_things(tenant.id)`.
/// - `async fn show(Authorised<G>, Id<I>) -> T = store.thing;` answers
///   `state.store.thing(tenant.id, id)`.
/// - `async fn show(Authorised<G>, Id<I>) -> T = service::thing;` answers
///   `service::thing(&state, &caller, &tenant, id)`.
/// - `async fn remove(Authorised<G>, Id<I>) -> Deleted = service::delete_thing;`
///   calls `service::delete_thing(&state, &caller, &tenant, id)` and answers 204.
/// - `async fn create(Authorised<G>, Body<B>) -> Created<T> = service::create_thing;`
///   answers 201 with `service::create_thing(&state, &caller, &tenant, body)`.
/// - `async fn update(Authorised<G>, Id<I>, Body<B>) -> T = service::update_thing;`
///   answers `service::update_thing(&state, &caller, &tenant, id, body)`.
///
/// The body is parsed (and refused) after the gate and the id, as in every
/// other handler. Attributes and doc comments above an entry go to its function.
macro_rules! handlers {
    () => {};
    // What every entry becomes: the function, its state, gate and answer
    // written once; the entry gives the rest of its parameters and its body.
    (@fn [$(#[$attr:meta])*] $name:ident($state:ident, $($param:tt)*) -> $answer:ty $body:block
     $($rest:tt)*) => {
        $(#[$attr])*
        async fn $name(
            ::axum::extract::State($state): ::axum::extract::State<$crate::AppState>,
            $($param)*
        ) -> Result<$answer, $crate::ApiError> $body
        handlers!($($rest)*);
    };
    ($(#[$attr:meta])*
     async fn $name:ident(Authorised<$gate:ty>) -> Vec<$item:ty> = store.$read:ident;
     $($rest:tt)*) => {
        handlers!(@fn [$(#[$attr])*] $name(
            state,
            $crate::gate::Authorised { tenant, .. }: $crate::gate::Authorised<$gate>,
        ) -> ::axum::Json<Vec<$item>> {
            Ok(::axum::Json(state.store.$read(tenant.id).await?))
        } $($rest)*);
    };
    ($(#[$attr:meta])*
     async fn $name:ident(Authorised<$gate:ty>, Id<$id:ty>) -> Deleted = $call:path;
     $($rest:tt)*) => {
        handlers!(@fn [$(#[$attr])*] $name(
            state,
            $crate::gate::Authorised { caller, tenant, .. }: $crate::gate::Authorised<$gate>,
            $crate::routes::Id(id): $crate::routes::Id<$id>,
        ) -> ::axum::http::StatusCode {
            $call(&state, &caller, &tenant, id).await?;
            Ok(::axum::http::StatusCode::NO_CONTENT)
        } $($rest)*);
    };
    ($(#[$attr:meta])*
     async fn $name:ident(Authorised<$gate:ty>, Id<$id:ty>) -> $answer:ty = store.$read:ident;
     $($rest:tt)*) => {
        handlers!(@fn [$(#[$attr])*] $name(
            state,
            $crate::gate::Authorised { tenant, .. }: $crate::gate::Authorised<$gate>,
            $crate::routes::Id(id): $crate::routes::Id<$id>,
        ) -> ::axum::Json<$answer> {
            Ok(::axum::Json(state.store.$read(tenant.id, id).await?))
        } $($rest)*);
    };
    ($(#[$attr:meta])*
     async fn $name:ident(Authorised<$gate:ty>, Id<$id:ty>) -> $answer:ty = $call:path;
     $($rest:tt)*) => {
        handlers!(@fn [$(#[$attr])*] $name(
            state,
            $crate::gate::Authorised { caller, tenant, .. }: $crate::gate::Authorised<$gate>,
            $crate::routes::Id(id): $crate::routes::Id<$id>,
        ) -> ::axum::Json<$answer> {
            Ok(::axum::Json($call(&state, &caller, &tenant, id).await?))
        } $($rest)*);
    };
    ($(#[$attr:meta])*
     async fn $name:ident(Authorised<$gate:ty>, Body<$body:ty>) -> Created<$answer:ty> = $call:path;
     $($rest:tt)*) => {
        handlers!(@fn [$(#[$attr])*] $name(
            state,
            $crate::gate::Authorised { caller, tenant, .. }: $crate::gate::Authorised<$gate>,
            body: $crate::body::Body<$body>,
        ) -> (::axum::http::StatusCode, ::axum::Json<$answer>) {
            let created = $call(&state, &caller, &tenant, body.parse()?).await?;
            Ok((::axum::http::StatusCode::CREATED, ::axum::Json(created)))
        } $($rest)*);
    };
    ($(#[$attr:meta])*
     async fn $name:ident(Authorised<$gate:ty>, Id<$id:ty>, Body<$body:ty>) -> $answer:ty = $call:path;
     $($rest:tt)*) => {
        handlers!(@fn [$(#[$attr])*] $name(
            state,
            $crate::gate::Authorised { caller, tenant, .. }: $crate::gate::Authorised<$gate>,
            $crate::routes::Id(id): $crate::routes::Id<$id>,
            body: $crate::body::Body<$body>,
        ) -> ::axum::Json<$answer> {
            Ok(::axum::Json($call(&state, &caller, &tenant, id, body.parse()?).await?))
        } $($rest)*);
    };
}

pub(crate) mod gateway_protocol;
pub(crate) mod gateways;
pub(crate) mod messages;
pub(crate) mod operator;
pub(crate) mod people;
pub(crate) mod providers;
pub(crate) mod schedules;
pub(crate) mod servers;
pub(crate) mod smtp;
pub(crate) mod templates;
pub(crate) mod tenants;
pub(crate) mod webhooks;

use herald_core::timestamp::now_ms;
use std::str::FromStr;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query, RawPathParams, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use herald_core::{
    FieldError, GatewayId, Invalid, MessageId, PersonId, ProviderId, ScheduleId, ServerId,
    SmtpConnectorId, SmtpCredentialId, TemplateId, TokenId, WebhookId,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// The OpenAPI paths of this module's routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(alive, ready, presets, nodes, crate::openapi::serve))]
pub(crate) struct Api;

/// Liveness and readiness, served by every node.
pub fn health() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(alive))
        .route("/readyz", get(ready))
        .fallback(|| async { ApiError::NotFound("route") })
}

/// The whole API, served by nodes with the api role.
pub fn router() -> Router<AppState> {
    health()
        .route("/v1/presets", get(presets))
        .route("/v1/nodes", get(nodes))
        .route("/v1/openapi.json", get(crate::openapi::serve))
        .merge(tenants::router())
        .merge(operator::router())
        .merge(people::router())
        .merge(servers::router())
        .merge(providers::router())
        .merge(messages::router())
        .merge(smtp::router())
        .merge(webhooks::router())
        .merge(templates::router())
        .merge(schedules::router())
        .merge(gateways::router())
        .merge(gateway_protocol::router())
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}

/// Alive: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    security(()),
    responses((status = 200, description = "The process answers", body = crate::openapi::answers::Health)),
)]
async fn alive() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers and took the latest write.
///
/// A node whose database refuses writes (a full disk) can accept nothing, so a load
/// balancer should send submissions elsewhere. The write state is the
/// store's memory of its latest write, so this costs one `ping`.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "The database answers and took the latest write", body = crate::openapi::answers::Health),
        (status = 503, description = "The database is unavailable or refuses writes", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await?;
    if state.store.refusing_writes() {
        return Err(ApiError::Unavailable(
            "the database refused the latest write".into(),
        ));
    }
    Ok(Json(json!({"status": "ready"})))
}

/// The presets for common mail services: server settings and what to set up there.
#[utoipa::path(
    get,
    path = "/v1/presets",
    tag = "servers",
    responses((status = 200, description = "The presets", body = Vec<Object>)),
)]
async fn presets(_caller: crate::auth::Caller) -> Json<Value> {
    Json(herald_core::presets::all())
}

/// The installation's nodes and whether each is alive (operator).
#[utoipa::path(
    get,
    path = "/v1/nodes",
    tag = "operator",
    responses((status = 200, description = "The nodes", body = crate::openapi::answers::NodeList)),
)]
async fn nodes(
    State(state): State<AppState>,
    caller: crate::auth::Caller,
) -> Result<Json<Value>, ApiError> {
    caller.operator()?;
    let now = now_ms();
    let nodes: Vec<Value> = state
        .store
        .list_nodes()
        .await?
        .into_iter()
        .map(|node| {
            let alive = crate::is_alive(&node, now, state.alive_within);
            let mut view = serde_json::to_value(&node).unwrap_or_default();
            view["alive"] = Value::Bool(alive);
            view
        })
        .collect();
    Ok(Json(json!({ "nodes": nodes })))
}

/// Parses an id from the path; a malformed id names nothing, so it is a 404.
fn path_id<T: FromStr<Err = Invalid>>(raw: &str, what: &'static str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound(what))
}

/// A kind of object a route or a console page names by id, and what its 404 calls it.
pub trait Object: FromStr<Err = Invalid> + Send {
    /// The object's name in a `not-found` problem, such as `SMTP server`.
    const WHAT: &'static str;
}

/// Names each id type's object for [`Id`].
macro_rules! objects {
    ($($id:ty => $what:literal),* $(,)?) => {
        $(impl Object for $id {
            const WHAT: &'static str = $what;
        })*
    };
}

objects! {
    GatewayId => "gateway",
    MessageId => "message",
    PersonId => "person",
    ProviderId => "provider",
    ScheduleId => "schedule",
    ServerId => "SMTP server",
    SmtpConnectorId => "SMTP connector",
    SmtpCredentialId => "SMTP credential",
    TemplateId => "template",
    TokenId => "token",
    WebhookId => "webhook",
}

/// The `{id}` segment of the path, parsed as the id of a `T`: a malformed id
/// names nothing, so it is the 404 of `T`. Handlers take it after the tenant
/// gate, so a caller learns nothing about another tenant's path from it.
pub(crate) struct Id<T>(pub T);

impl<T: Object> FromRequestParts<AppState> for Id<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        object_in_path::<T, ApiError, _>(parts, state).await.map(Id)
    }
}

/// The `{id}` of a request's path as the id of a `T`; a malformed one names
/// nothing, so it is the 404 of `T`, answered as `E` (the API's problem, the
/// console's page). The API's `Id` and the console's take it after their gate.
pub async fn object_in_path<T: Object, E: From<ApiError> + IntoResponse, S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<T, Response> {
    let params = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    // A route without `{id}` is a programming error, answered as a missing one.
    let raw = params
        .iter()
        .find(|(name, _)| *name == "id")
        .map_or("", |(_, value)| value);
    path_id(raw, T::WHAT).map_err(|e| E::from(e).into_response())
}

/// The query string's parameters, or a malformed request that says why not.
fn query_params<Q>(query: Result<Query<Q>, QueryRejection>) -> Result<Q, ApiError> {
    let Query(params) = query.map_err(|e| {
        ApiError::Malformed(format!("the query string is not valid: {}", e.body_text()))
    })?;
    Ok(params)
}

/// The most entries a list of a record's newest ones holds.
const MAX_NEWEST: u32 = 500;

/// How many of a record's newest entries (a schedule's firings, a webhook's
/// deliveries) a list answers: `limit`, 1 to 500, or 50 when absent.
fn newest_limit(limit: Option<&str>) -> Result<u32, ApiError> {
    let mut check = Check::default();
    let limit = check.opt("limit", limit, |input| match input.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_NEWEST).contains(&n) => Ok(n),
        _ => Err(Invalid::new(format!(
            "must be a number from 1 to {MAX_NEWEST}"
        ))),
    });
    check.finish()?;
    Ok(limit.unwrap_or(50))
}

/// A record's JSON with the secret that goes with it (a token, a password,
/// a signing secret) under `field`: the only answer that ever shows it.
fn shown_once(record: &impl Serialize, field: &str, secret: String) -> Result<Value, ApiError> {
    let mut answer = serde_json::to_value(record).map_err(|e| ApiError::Internal(e.into()))?;
    answer[field] = Value::String(secret);
    Ok(answer)
}

/// Collects every field error of a request before answering, so a client
/// learns about all of them at once.
#[derive(Default)]
pub(crate) struct Check {
    errors: Vec<FieldError>,
}

impl Check {
    /// Keeps a parsed value, or records why the field was refused.
    pub(crate) fn take<T>(&mut self, field: &str, parsed: Result<T, Invalid>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(invalid) => {
                self.errors.push(invalid.at(field));
                None
            }
        }
    }

    /// Parses an optional field.
    pub(crate) fn opt<T>(
        &mut self,
        field: &str,
        raw: Option<&str>,
        parse: impl Fn(&str) -> Result<T, Invalid>,
    ) -> Option<T> {
        raw.and_then(|raw| self.take(field, parse(raw)))
    }

    /// A field a PATCH may clear: a blank value clears it, an absent one
    /// keeps `base`, anything else is parsed.
    pub(crate) fn clearable<T: Clone>(
        &mut self,
        field: &str,
        given: Option<String>,
        base: Option<&T>,
        parse: impl Fn(&str) -> Result<T, Invalid>,
    ) -> Option<T> {
        match given {
            // Only spaces and tabs count as blank: a line break is validated, and refused.
            Some(s) if s.trim_matches([' ', '\t']).is_empty() => None,
            Some(s) => self.take(field, parse(&s)),
            None => base.cloned(),
        }
    }

    /// A field a create needs: given, it is parsed; absent, a change keeps
    /// `kept` (the stored value) and a create is refused with "is required".
    pub(crate) fn required<S, T>(
        &mut self,
        field: &str,
        given: Option<S>,
        kept: Option<T>,
        parse: impl FnOnce(S) -> Result<T, Invalid>,
    ) -> Option<T> {
        match (given, kept) {
            (Some(given), _) => self.take(field, parse(given)),
            (None, Some(kept)) => Some(kept),
            (None, None) => {
                self.fail(field, "is required");
                None
            }
        }
    }

    /// Records an error already named by its field.
    pub(crate) fn push(&mut self, error: FieldError) {
        self.errors.push(error);
    }

    pub(crate) fn fail(&mut self, field: &str, rule: &str) {
        self.errors.push(Invalid::new(rule).at(field));
    }

    /// Answers 422 with every recorded error, or lets the handler go on.
    pub(crate) fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Invalid(self.errors))
        }
    }
}

/// A short human name: 1 to 100 characters, no control characters.
pub fn name(input: &str) -> Result<String, Invalid> {
    let trimmed = input.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 100 || trimmed.chars().any(char::is_control)
    {
        return Err(Invalid::new(
            "must be 1 to 100 characters without control characters",
        ));
    }
    Ok(trimmed.to_owned())
}
