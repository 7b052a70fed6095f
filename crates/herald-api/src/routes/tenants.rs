//! Tenants, entitlements, tokens, tenant properties and the capture mailbox.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use herald_store::Tenant;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::body::Body;
use crate::gate::{Authorised, Operator, Sender, TenantAdmin};
use crate::openapi::{TenantPath, answers};
use crate::service::{create_tenant, properties, refresh, set_entitlements, set_provider};
use crate::{ApiError, AppState};

/// The OpenAPI paths of this module's routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    post_tenant,
    list_tenants,
    get_tenant,
    put_entitlements,
    get_properties,
    set_properties,
    refresh_properties,
    captured,
    audit
))]
pub(crate) struct Api;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants", post(post_tenant).get(list_tenants))
        .route("/v1/tenants/{tenant}", get(get_tenant))
        .route("/v1/tenants/{tenant}/entitlements", put(put_entitlements))
        .route(
            "/v1/tenants/{tenant}/properties",
            get(get_properties).put(set_properties),
        )
        .route(
            "/v1/tenants/{tenant}/properties/refresh",
            post(refresh_properties),
        )
        .route("/v1/tenants/{tenant}/captured", get(captured))
        .route("/v1/tenants/{tenant}/audit", get(audit))
}

/// A tenant to create.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewTenantBody {
    /// Lowercase letters, digits and hyphens; the tenant's name in paths.
    slug: String,
    name: String,
}

/// Creates a tenant (operator).
#[utoipa::path(post, path = "/v1/tenants", tag = "operator", request_body = NewTenantBody,
    responses(
        (status = 201, description = "The tenant", body = answers::Tenant),
        (status = 409, description = "The slug is taken", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn post_tenant(
    State(state): State<AppState>,
    caller: Caller,
    body: Body<NewTenantBody>,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
    caller.operator()?;
    let body = body.parse()?;
    let tenant = create_tenant(&state, &caller, &body.slug, &body.name).await?;
    Ok((StatusCode::CREATED, Json(tenant)))
}

/// Lists every tenant (operator).
#[utoipa::path(get, path = "/v1/tenants", tag = "operator",
    responses((status = 200, description = "The tenants", body = Vec<answers::Tenant>)))]
async fn list_tenants(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Tenant>>, ApiError> {
    caller.operator()?;
    Ok(Json(state.store.list_tenants().await?))
}

/// The tenant, for any of its tokens.
#[utoipa::path(get, path = "/v1/tenants/{tenant}", tag = "tenants", params(TenantPath),
    responses((status = 200, description = "The tenant", body = answers::Tenant)))]
async fn get_tenant(Authorised { tenant, .. }: Authorised<Sender>) -> Json<Tenant> {
    Json(tenant)
}

/// What the operator grants a tenant.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EntitlementsBody {
    /// Whether the tenant may store passwords and tokens.
    credential_storage: bool,
}

/// Grants or withdraws entitlements (operator).
#[utoipa::path(put, path = "/v1/tenants/{tenant}/entitlements", tag = "operator", params(TenantPath),
    request_body = EntitlementsBody,
    responses((status = 200, description = "The tenant", body = answers::Tenant)))]
async fn put_entitlements(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<Operator>,
    body: Body<EntitlementsBody>,
) -> Result<Json<Tenant>, ApiError> {
    let body = body.parse()?;
    Ok(Json(
        set_entitlements(&state, &caller, &tenant, body.credential_storage).await?,
    ))
}

/// The tenant's properties: the provider in effect and any change pending.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/properties", tag = "tenants", params(TenantPath),
    responses((status = 200, description = "The properties", body = answers::Properties)))]
async fn get_properties(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<TenantAdmin>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(properties(&state, &tenant).await?))
}

/// The tenant's active notification provider.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PropertiesBody {
    /// A provider's id, or null for the system default.
    notification_provider_id: Option<String>,
}

/// Chooses the tenant's active provider.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/properties", tag = "tenants", params(TenantPath),
    request_body = PropertiesBody,
    responses((status = 200, description = "The properties", body = answers::Properties)))]
async fn set_properties(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    body: Body<PropertiesBody>,
) -> Result<Json<Value>, ApiError> {
    let body = body.parse()?;
    let tenant = set_provider(&state, &caller, &tenant, body.notification_provider_id).await?;
    Ok(Json(properties(&state, &tenant).await?))
}

/// Makes every node forget what it knew of the tenant's provider.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/properties/refresh", tag = "tenants", params(TenantPath),
    responses((status = 200, description = "The properties", body = answers::Properties)))]
async fn refresh_properties(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
) -> Result<Json<Value>, ApiError> {
    let tenant = refresh(&state, &caller, &tenant).await?;
    Ok(Json(properties(&state, &tenant).await?))
}

/// The newest messages of the capture mailbox.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/captured", tag = "tenants", params(TenantPath),
    responses((status = 200, description = "Up to 100 captured messages", body = answers::CapturedList)))]
async fn captured(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<Sender>,
) -> Result<Json<Value>, ApiError> {
    let messages = state.store.list_captured(tenant.id, 100).await?;
    Ok(Json(json!({ "messages": messages })))
}

/// The newest entries of the tenant's audit log.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/audit", tag = "tenants", params(TenantPath),
    responses((status = 200, description = "Up to 500 entries", body = answers::AuditList)))]
async fn audit(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<TenantAdmin>,
) -> Result<Json<Value>, ApiError> {
    let entries = state.store.list_audit(tenant.id, 500).await?;
    Ok(Json(json!({ "entries": entries })))
}
