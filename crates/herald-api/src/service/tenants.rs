//! Tenants: create (operator), the credential storage entitlement (operator),
//! and the tenant's properties: the active provider and its refresh.

use herald_core::timestamp::now_ms;
use herald_core::{ProviderId, TenantSlug};
use herald_store::Tenant;
use serde_json::{Value, json};

use crate::routes::{Check, name};
use crate::{ApiError, AppState, Caller};

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
        .audit_tenant(
            state,
            tenant.id,
            "tenant.create",
            tenant.id,
            json!({"slug": tenant.slug, "name": tenant.name}),
        )
        .await;
    Ok(tenant)
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
        .audit_tenant(state, tenant.id, "entitlements.update", tenant.id, json!({"credential_storage": {"before": tenant.credential_storage, "after": updated.credential_storage}}))
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
        .audit_tenant(state, tenant.id, "properties.update", tenant.id, json!({"notification_provider_id": {"before": before, "after": tenant.notification_provider_id}}))
        .await;
    Ok(tenant)
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
        .audit_tenant(state, tenant.id, "properties.refresh", tenant.id, json!({}))
        .await;
    Ok(tenant)
}
