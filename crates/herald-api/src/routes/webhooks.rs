//! A tenant's delivery webhooks: endpoints that receive signed events about
//! its messages, their signing secrets, recent deliveries and a test event.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_core::WebhookId;
use herald_store::{Webhook, WebhookDelivery};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Id, newest_limit, query_params, shown_once};
use crate::body::Body;
use crate::gate::{Authorised, TenantAdmin};
use crate::openapi::{ObjectPath, TenantPath, answers};
use crate::service;
use crate::{ApiError, AppState};

/// The OpenAPI paths of this module's routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    create,
    list,
    show,
    update,
    remove,
    rotate_secret,
    deliveries,
    test_event
))]
pub(crate) struct Api;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{tenant}/webhooks", post(create).get(list))
        .route(
            "/v1/tenants/{tenant}/webhooks/{id}",
            get(show).patch(update).delete(remove),
        )
        .route(
            "/v1/tenants/{tenant}/webhooks/{id}/rotate-secret",
            post(rotate_secret),
        )
        .route(
            "/v1/tenants/{tenant}/webhooks/{id}/deliveries",
            get(deliveries),
        )
        .route("/v1/tenants/{tenant}/webhooks/{id}/test", post(test_event))
}

/// A webhook's fields; all optional so the same shape serves create and
/// PATCH. Creating one needs `url` and `events`; `enabled` is true unless given.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    /// An https:// URL (plain http:// only to addresses in the operator's --egress-allow).
    pub url: Option<String>,
    /// The event types to receive: `message.sent`, `message.failed`,
    /// `message.deferred`, `recipient.sent`, `recipient.failed`,
    /// `recipient.deferred`, `test.completed`.
    pub events: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// A rotation: how long the previous secret keeps signing beside the new one.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// 0 to 604800 seconds; 86400 (a day) when absent.
    pub overlap_seconds: Option<u32>,
}

/// How many deliveries to list.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DeliveriesQuery {
    /// Deliveries to list, 1 to 500; 50 when absent.
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
}

/// A webhook as a create or a change answers it: with what the
/// administrator should know about its URL (a name that does not resolve now).
#[derive(Serialize)]
struct Saved {
    #[serde(flatten)]
    webhook: Webhook,
    warnings: Vec<herald_store::Warning>,
}

/// Creates a webhook; the answer is the only time its signing secret is shown.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/webhooks", tag = "webhooks", params(TenantPath),
    request_body = WebhookBody,
    responses((status = 201, description = "The webhook, with `secret` and `warnings`", body = answers::Webhook)))]
async fn create(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    body: Body<WebhookBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let created = service::create_webhook(&state, &caller, &tenant, body.parse()?).await?;
    let mut answer = shown_once(&created.record, "secret", created.secret)?;
    answer["warnings"] =
        serde_json::to_value(&created.warnings).map_err(|e| ApiError::Internal(e.into()))?;
    Ok((StatusCode::CREATED, Json(answer)))
}

handlers! {
    /// Lists the tenant's webhooks, oldest first (never their secrets).
    #[utoipa::path(get, path = "/v1/tenants/{tenant}/webhooks", tag = "webhooks", params(TenantPath),
        responses((status = 200, description = "The webhooks", body = Vec<answers::Webhook>)))]
    async fn list(Authorised<TenantAdmin>) -> Vec<Webhook> = store.list_webhooks;

    /// One webhook.
    #[utoipa::path(get, path = "/v1/tenants/{tenant}/webhooks/{id}", tag = "webhooks", params(ObjectPath),
        responses((status = 200, description = "The webhook", body = answers::Webhook)))]
    async fn show(Authorised<TenantAdmin>, Id<WebhookId>) -> Webhook = store.webhook;

    /// Deletes a webhook and its pending events.
    #[utoipa::path(delete, path = "/v1/tenants/{tenant}/webhooks/{id}", tag = "webhooks", params(ObjectPath),
        responses((status = 204, description = "Deleted")))]
    async fn remove(Authorised<TenantAdmin>, Id<WebhookId>) -> Deleted = service::delete_webhook;
}

/// Changes a webhook's URL, events or state. `enabled: true` turns on a
/// webhook Herald disabled for failing, and forgets why.
#[utoipa::path(patch, path = "/v1/tenants/{tenant}/webhooks/{id}", tag = "webhooks", params(ObjectPath),
    request_body = WebhookBody,
    responses((status = 200, description = "The webhook, with `warnings`", body = answers::Webhook)))]
async fn update(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    Id(id): Id<WebhookId>,
    body: Body<WebhookBody>,
) -> Result<Json<Value>, ApiError> {
    let (webhook, warnings) =
        service::update_webhook(&state, &caller, &tenant, id, body.parse()?).await?;
    let answer = serde_json::to_value(Saved { webhook, warnings })
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(Json(answer))
}

/// Gives the webhook a new signing secret, shown only in this answer. The
/// previous secret keeps signing beside it for `overlap_seconds`, so the
/// receiver can change over without refusing events.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/webhooks/{id}/rotate-secret", tag = "webhooks", params(ObjectPath),
    request_body(content = Option<RotateBody>, description = "Optional"),
    responses((status = 200, description = "The webhook, with the new `secret`", body = answers::Webhook)))]
async fn rotate_secret(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    Id(id): Id<WebhookId>,
    body: Body<RotateBody>,
) -> Result<Json<Value>, ApiError> {
    let rotated =
        service::rotate_webhook_secret(&state, &caller, &tenant, id, body.parse_or_default()?)
            .await?;
    Ok(Json(shown_once(&rotated.record, "secret", rotated.secret)?))
}

/// The webhook's newest event deliveries, newest first, each with its latest attempt.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/webhooks/{id}/deliveries", tag = "webhooks", params(ObjectPath, DeliveriesQuery),
    responses(
        (status = 200, description = "The deliveries", body = Vec<answers::WebhookDelivery>),
        (status = 400, description = "The query string is not valid", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`limit` broke its rule", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn deliveries(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<TenantAdmin>,
    Id(id): Id<WebhookId>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<Vec<WebhookDelivery>>, ApiError> {
    let limit = newest_limit(query_params(query)?.limit.as_deref())?;
    Ok(Json(
        state.store.webhook_deliveries(tenant.id, id, limit).await?,
    ))
}

/// Sends a `webhook.test` event to the webhook at once (enabled or not),
/// signed like every event, and answers what became of it. The attempt is
/// listed among the webhook's deliveries.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/webhooks/{id}/test", tag = "webhooks", params(ObjectPath),
    responses((status = 200, description = "What the endpoint answered", body = service::WebhookTest)))]
async fn test_event(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<TenantAdmin>,
    Id(id): Id<WebhookId>,
) -> Result<Json<service::WebhookTest>, ApiError> {
    Ok(Json(service::test_webhook(&state, &tenant, id).await?))
}
