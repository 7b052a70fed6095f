//! Tenants, entitlements, tokens, tenant properties and the capture mailbox.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use herald_core::timestamp::now_ms;
use herald_core::{ProviderId, TenantSlug};
use herald_store::Tenant;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Check, name};
use crate::auth::Caller;
use crate::body::Body;
use crate::gate::{Authorised, Operator, Sender, TenantAdmin};
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

/// Creates a tenant (operator only), and records it in the audit log.
pub async fn create_tenant(
    state: &AppState,
    caller: &Caller,
    slug: &str,
    tenant_name: &str,
) -> Result<Tenant, ApiError> {
    caller.operator()?;
    let mut check = Check::default();
    let slug = check.take("slug", TenantSlug::parse(slug));
    let name = check.take("name", name(tenant_name));
    check.finish()?;
    let (Some(slug), Some(name)) = (slug, name) else {
        unreachable!("checked above")
    };
    let tenant = state.store.create_tenant(slug, name).await?;
    caller
        .audit(
            state,
            Some(tenant.id),
            "tenant.create",
            Some(tenant.id.to_string()),
            json!({"slug": tenant.slug, "name": tenant.name}),
        )
        .await;
    Ok(tenant)
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

/// Grants or withdraws the credential storage entitlement (operator only).
pub async fn set_entitlements(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    credential_storage: bool,
) -> Result<Tenant, ApiError> {
    caller.operator()?;
    let updated = state
        .store
        .set_entitlements(tenant.id, credential_storage)
        .await?;
    caller
        .audit(
            state,
            Some(tenant.id),
            "entitlements.update",
            Some(tenant.id.to_string()),
            json!({"credential_storage": {"before": tenant.credential_storage, "after": updated.credential_storage}}),
        )
        .await;
    Ok(updated)
}

/// The properties of a tenant: the chosen provider and what is in effect.
pub async fn properties(state: &AppState, tenant: &Tenant) -> Result<Value, ApiError> {
    let now = now_ms();
    let pending = now < tenant.properties_effective_from;
    // Until a change is in effect everywhere, some node may still use what was before.
    let effective = if pending {
        tenant.previous_provider_id
    } else {
        tenant.notification_provider_id
    };
    let describe = |provider: Option<herald_store::Provider>| match provider {
        Some(p) => json!({"kind": "provider", "provider_id": p.id, "name": p.settings.name}),
        None => json!({
            "kind": "system_default",
            "provider_id": null,
            "name": match state.default_provider.transport {
                herald_delivery::Transport::Capture => "capture mailbox",
                herald_delivery::Transport::Smtp { .. } => "system default relay",
            },
        }),
    };
    let load = |id: Option<ProviderId>| async move {
        match id {
            Some(id) => match state.store.provider(tenant.id, id).await {
                Ok(p) => Ok(Some(p)),
                // A provider deleted since is shown as gone, not as an error.
                Err(herald_store::StoreError::NotFound) => Ok(None),
                Err(e) => Err(e),
            },
            None => Ok(None),
        }
    };
    let effective_view = describe(load(effective).await?);
    let pending_view = if pending {
        let mut view = describe(load(tenant.notification_provider_id).await?);
        view["takes_effect_by"] = Value::String(herald_core::timestamp::rfc3339(
            tenant.properties_effective_from,
        ));
        view
    } else {
        Value::Null
    };
    Ok(json!({
        "notification_provider_id": tenant.notification_provider_id,
        "effective": effective_view,
        "pending": pending_view,
        "staleness_seconds": state.cache.staleness().as_secs(),
    }))
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

/// Makes a provider (by id; `None` for the system default) the tenant's
/// active one, in effect everywhere within the staleness bound.
pub async fn set_provider(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    provider_id: Option<String>,
) -> Result<Tenant, ApiError> {
    let mut check = Check::default();
    let provider = check.opt(
        "notification_provider_id",
        provider_id.as_deref(),
        str::parse::<ProviderId>,
    );
    check.finish()?;
    let before = tenant.notification_provider_id;
    let takes_effect_by = now_ms() + state.cache.staleness().as_millis() as i64;
    let tenant = state
        .store
        .set_active_provider(tenant.id, provider, takes_effect_by)
        .await?;
    caller
        .audit(
            state,
            Some(tenant.id),
            "properties.update",
            Some(tenant.id.to_string()),
            json!({"notification_provider_id": {"before": before, "after": tenant.notification_provider_id}}),
        )
        .await;
    Ok(tenant)
}

async fn refresh_properties(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
) -> Result<Json<Value>, ApiError> {
    let tenant = refresh(&state, &caller, &tenant).await?;
    Ok(Json(properties(&state, &tenant).await?))
}

/// Makes the pending change of the tenant's properties effective on every node now.
pub async fn refresh(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
) -> Result<Tenant, ApiError> {
    let tenant = state.store.refresh_properties(tenant.id, now_ms()).await?;
    // This node forgets its cached view at once; other nodes hear of it through the store.
    state.cache.invalidate(tenant.id);
    caller
        .audit(
            state,
            Some(tenant.id),
            "properties.refresh",
            Some(tenant.id.to_string()),
            json!({}),
        )
        .await;
    Ok(tenant)
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
