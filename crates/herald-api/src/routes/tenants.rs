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
use crate::service::{create_tenant, properties, refresh, set_entitlements, set_provider};
use crate::{ApiError, AppState};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenantBody {
    slug: String,
    name: String,
}

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

async fn list_tenants(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Tenant>>, ApiError> {
    caller.operator()?;
    Ok(Json(state.store.list_tenants().await?))
}

async fn get_tenant(Authorised { tenant, .. }: Authorised<Sender>) -> Json<Tenant> {
    Json(tenant)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntitlementsBody {
    credential_storage: bool,
}

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

async fn get_properties(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<TenantAdmin>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(properties(&state, &tenant).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PropertiesBody {
    notification_provider_id: Option<String>,
}

async fn set_properties(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    body: Body<PropertiesBody>,
) -> Result<Json<Value>, ApiError> {
    let body = body.parse()?;
    let tenant = set_provider(&state, &caller, &tenant, body.notification_provider_id).await?;
    Ok(Json(properties(&state, &tenant).await?))
}

async fn refresh_properties(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
) -> Result<Json<Value>, ApiError> {
    let tenant = refresh(&state, &caller, &tenant).await?;
    Ok(Json(properties(&state, &tenant).await?))
}

async fn captured(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<Sender>,
) -> Result<Json<Value>, ApiError> {
    let messages = state.store.list_captured(tenant.id, 100).await?;
    Ok(Json(json!({ "messages": messages })))
}

async fn audit(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<TenantAdmin>,
) -> Result<Json<Value>, ApiError> {
    let entries = state.store.list_audit(tenant.id, 500).await?;
    Ok(Json(json!({ "entries": entries })))
}
