//! A tenant's messages as a caller may read them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use herald_core::{Invalid, MessageId};
use herald_store::{MessageQuery, MessageSummary, MessageView, Tenant};

use crate::{ApiError, AppState, Caller};

/// One message of the tenant as the caller may see it: without the
/// diagnosis of its attempts unless [`Caller::sees_diagnosis`].
pub async fn message(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: MessageId,
) -> Result<MessageView, ApiError> {
    let mut message = state.store.message(tenant.id, id).await?;
    let pinned = message
        .recipients
        .iter()
        .filter(|r| !r.status.is_final() && r.status != herald_core::RecipientStatus::Sending)
        .find_map(|r| r.gateway_id);
    if let Some(gateway) = pinned {
        let now = herald_core::timestamp::now_ms();
        // A view never fails for this: a gateway deleted meanwhile (its
        // mail went back to the nodes) just has nothing to say.
        if let Err(ApiError::NoGateway(why)) =
            super::gateways::gateway_alive(state, tenant, gateway, now).await
        {
            message.waiting = Some(why);
        }
    }
    if !caller.sees_diagnosis() {
        for attempt in message
            .recipients
            .iter_mut()
            .flat_map(|r| r.attempts.iter_mut())
        {
            attempt.diagnosis = None;
        }
    }
    Ok(message)
}

/// One page of a tenant's messages, newest first, and where the next begins.
#[derive(serde::Serialize)]
pub struct MessagePage {
    pub messages: Vec<MessageSummary>,
    /// Given back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Where a page of messages starts: after the message with this creation
/// time and id. Clients treat it as opaque.
pub fn cursor(after: &MessageSummary) -> String {
    B64URL.encode(format!("{}.{}", after.created_at, after.id))
}

/// Reads a cursor a previous page gave.
pub fn parse_cursor(input: &str) -> Result<(i64, MessageId), Invalid> {
    let refused = || Invalid::new("must be the next_cursor of a previous page");
    let decoded = B64URL.decode(input.trim()).map_err(|_| refused())?;
    let text = String::from_utf8(decoded).map_err(|_| refused())?;
    let (at, id) = text.split_once('.').ok_or_else(refused)?;
    Ok((
        at.parse().map_err(|_| refused())?,
        id.parse().map_err(|_| refused())?,
    ))
}

/// The page of the tenant's messages `query` asks for: one more than asked
/// is read, so the last page says it is the last.
pub async fn search_messages(
    state: &AppState,
    tenant: &Tenant,
    mut query: MessageQuery,
) -> Result<MessagePage, ApiError> {
    let limit = query.limit as usize;
    query.limit += 1;
    let mut messages = state.store.search_messages(tenant.id, query).await?;
    let next_cursor = if messages.len() > limit {
        messages.truncate(limit);
        messages.last().map(cursor)
    } else {
        None
    };
    Ok(MessagePage {
        messages,
        next_cursor,
    })
}

/// The fallback recipient of the provider this node would send the
/// tenant's mail through now (as its cache knows it), if it has one.
pub async fn fallback_recipient(
    state: &AppState,
    tenant: herald_core::TenantId,
) -> Result<Option<herald_core::EmailAddress>, herald_store::StoreError> {
    Ok(match state.cache.get(&state.store, tenant).await? {
        Some(config) => config.provider.settings.fallback_recipient,
        None => state.default_provider.fallback.clone(),
    })
}

/// The gateway the tenant's mail is pinned to now (its effective
/// provider's server names one), as this node's cache knows it: its new
/// messages go to that gateway's instances only. A node that claims mail
/// whose route has become pinned since hands it over when it finds out.
pub async fn pinned_gateway(
    state: &AppState,
    tenant: herald_core::TenantId,
) -> Result<Option<herald_core::GatewayId>, herald_store::StoreError> {
    Ok(state
        .cache
        .get(&state.store, tenant)
        .await?
        .and_then(|config| config.server.settings.gateway_id))
}

/// Cancels a message none of whose recipients is being sent or final yet
/// (a scheduled one, typically): it becomes `cancelled` and is never sent.
/// A message already being sent or done is a 409 saying so.
pub async fn cancel_message(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: MessageId,
) -> Result<MessageView, ApiError> {
    state.store.cancel_message(tenant.id, id).await?;
    caller
        .audit_tenant(
            state,
            tenant.id,
            "message.cancel",
            id,
            serde_json::json!({}),
        )
        .await;
    message(state, caller, tenant, id).await
}
