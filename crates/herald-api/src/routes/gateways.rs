//! A tenant's gateways: processes inside its network that fetch its mail
//! from Herald and deliver it there; their tokens (shown once) and instances.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_core::GatewayId;
use herald_core::timestamp::now_ms;
use serde::Deserialize;
use serde_json::Value;

use super::{Id, shown_once};
use crate::body::Body;
use crate::gate::{Authorised, TenantAdmin};
use crate::openapi::{ObjectPath, TenantPath, answers};
use crate::service::{self, GatewayView, WithToken};
use crate::{ApiError, AppState};

/// The OpenAPI paths of this module's routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create, list, show, remove, new_token))]
pub(crate) struct Api;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{tenant}/gateways", post(create).get(list))
        .route(
            "/v1/tenants/{tenant}/gateways/{id}",
            get(show).delete(remove),
        )
        .route("/v1/tenants/{tenant}/gateways/{id}/token", post(new_token))
}

/// A gateway to create: a name that says where it runs.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayBody {
    /// 1 to 100 characters, unique within the tenant.
    pub name: Option<String>,
}

/// The answer to a create or a new token: the gateway, and its token, which
/// is never shown again.
fn with_token(state: &AppState, created: WithToken) -> Result<Value, ApiError> {
    let view = service::gateway_view(state, created.record, now_ms());
    shown_once(&view, "token", created.token)
}

/// Creates a gateway; the answer is the only time its token is shown.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/gateways", tag = "gateways", params(TenantPath),
    request_body = GatewayBody,
    responses((status = 201, description = "The gateway, with `token`", body = answers::Gateway)))]
async fn create(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    body: Body<GatewayBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let created = service::create_gateway(&state, &caller, &tenant, body.parse()?).await?;
    Ok((StatusCode::CREATED, Json(with_token(&state, created)?)))
}

/// Lists the tenant's gateways by name, with their instances (never their tokens).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/gateways", tag = "gateways", params(TenantPath),
    responses((status = 200, description = "The gateways", body = Vec<answers::Gateway>)))]
async fn list(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<TenantAdmin>,
) -> Result<Json<Vec<GatewayView>>, ApiError> {
    let now = now_ms();
    let gateways = state.store.list_gateways(tenant.id).await?;
    Ok(Json(
        gateways
            .into_iter()
            .map(|g| service::gateway_view(&state, g, now))
            .collect(),
    ))
}

/// One gateway, with its instances.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/gateways/{id}", tag = "gateways", params(ObjectPath),
    responses((status = 200, description = "The gateway", body = answers::Gateway)))]
async fn show(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<TenantAdmin>,
    Id(id): Id<GatewayId>,
) -> Result<Json<GatewayView>, ApiError> {
    let gateway = state.store.gateway(tenant.id, id).await?;
    Ok(Json(service::gateway_view(&state, gateway, now_ms())))
}

handlers! {
    /// Deletes a gateway and forgets its instances; refused while an SMTP server names it.
    #[utoipa::path(delete, path = "/v1/tenants/{tenant}/gateways/{id}", tag = "gateways", params(ObjectPath),
        responses((status = 204, description = "Deleted")))]
    async fn remove(Authorised<TenantAdmin>, Id<GatewayId>) -> Deleted = service::delete_gateway;
}

/// Gives the gateway a new token, shown only in this answer; the old one
/// stops working at once.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/gateways/{id}/token", tag = "gateways", params(ObjectPath),
    responses((status = 200, description = "The gateway, with the new `token`", body = answers::Gateway)))]
async fn new_token(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    Id(id): Id<GatewayId>,
) -> Result<Json<Value>, ApiError> {
    let replaced = service::replace_gateway_token(&state, &caller, &tenant, id).await?;
    Ok(Json(with_token(&state, replaced)?))
}
