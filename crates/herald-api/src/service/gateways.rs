//! A tenant's gateways: processes inside the tenant's network that fetch its
//! mail from Herald and deliver it there. Each has a random token, shown
//! once and stored as its SHA-256; a new token ends the old one at once.

use herald_core::timestamp::now_ms;
use herald_core::{GatewayId, token};
use herald_store::{Gateway, GatewayInstance, NewGateway, Tenant};
use serde::Serialize;
use serde_json::json;

use crate::routes::gateways::GatewayBody;
use crate::routes::{Check, name};
use crate::{ApiError, AppState, Caller};

/// A gateway as the API and the console show it: the stored record, and
/// for each instance whether it is alive now.
#[derive(Serialize)]
pub struct GatewayView {
    pub id: GatewayId,
    pub name: String,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub created_at: i64,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub token_created_at: i64,
    /// Newest seen first.
    pub instances: Vec<InstanceView>,
}

/// One instance of a gateway, and whether it polled within the node's
/// `alive_within` (the rule nodes are judged by).
#[derive(Serialize)]
pub struct InstanceView {
    #[serde(flatten)]
    pub instance: GatewayInstance,
    pub alive: bool,
}

/// A gateway as shown at `now`.
pub fn gateway_view(state: &AppState, gateway: Gateway, now: i64) -> GatewayView {
    GatewayView {
        id: gateway.id,
        name: gateway.name,
        created_at: gateway.created_at,
        token_created_at: gateway.token_created_at,
        instances: gateway
            .instances
            .into_iter()
            .map(|instance| InstanceView {
                alive: crate::seen_within(instance.last_seen_at, now, state.alive_within),
                instance,
            })
            .collect(),
    }
}

/// Whether an instance of the tenant's `gateway` is alive at `now`; when
/// none is, the refusal names the gateway and when it was last seen.
pub async fn gateway_alive(
    state: &AppState,
    tenant: &Tenant,
    gateway: GatewayId,
    now: i64,
) -> Result<(), ApiError> {
    let gateway = state.store.gateway(tenant.id, gateway).await?;
    let last_seen = gateway.instances.iter().map(|i| i.last_seen_at).max();
    match last_seen {
        Some(at) if crate::seen_within(at, now, state.alive_within) => Ok(()),
        Some(at) => Err(ApiError::NoGateway(format!(
            "no instance of gateway {:?} is alive (last seen {})",
            gateway.name,
            herald_core::timestamp::rfc3339(at)
        ))),
        None => Err(ApiError::NoGateway(format!(
            "no instance of gateway {:?} is alive (never seen: it has not been started)",
            gateway.name
        ))),
    }
}

/// A gateway with its new token, which is never shown again.
pub struct WithToken {
    pub record: Gateway,
    pub token: String,
}

/// Creates a gateway of the tenant, and records it in the audit log.
pub async fn create_gateway(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    body: GatewayBody,
) -> Result<WithToken, ApiError> {
    let mut check = Check::default();
    let name = check.required("name", body.name.as_deref(), None, name);
    check.finish()?;
    let token = token::gateway_token();
    let record = state
        .store
        .create_gateway(NewGateway {
            id: GatewayId::new(),
            tenant_id: tenant.id,
            name: name.expect("checked above"),
            token_hash: token::hash(&token),
            created_at: now_ms(),
        })
        .await?;
    caller
        .audit_tenant(
            state,
            tenant.id,
            "gateway.create",
            record.id,
            json!({"name": record.name}),
        )
        .await;
    Ok(WithToken { record, token })
}

/// Gives a gateway of the tenant a new token: the old one stops working at once.
pub async fn replace_gateway_token(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: GatewayId,
) -> Result<WithToken, ApiError> {
    let token = token::gateway_token();
    let record = state
        .store
        .replace_gateway_token(tenant.id, id, token::hash(&token), now_ms())
        .await?;
    caller
        .audit_tenant(
            state,
            tenant.id,
            "gateway.token",
            id,
            json!({"name": record.name}),
        )
        .await;
    Ok(WithToken { record, token })
}

/// Deletes a gateway of the tenant; a conflict while an SMTP server names it.
pub async fn delete_gateway(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: GatewayId,
) -> Result<(), ApiError> {
    let gateway = state.store.gateway(tenant.id, id).await?;
    state.store.delete_gateway(tenant.id, id).await?;
    caller
        .audit_tenant(
            state,
            tenant.id,
            "gateway.delete",
            id,
            json!({"name": gateway.name}),
        )
        .await;
    Ok(())
}
