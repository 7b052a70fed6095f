//! Notification providers of a tenant: create, change, delete, and send a test
//! message through one.

use herald_core::{EmailAddress, ProviderId};
use herald_store::{Provider, Submitted, Tenant};
use serde_json::json;

use crate::routes::Check;
use crate::routes::providers::ProviderBody;
use crate::{ApiError, AppState, Caller};

/// Creates a notification provider of an authorised tenant, and records it in the audit log.
pub async fn create_provider(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    body: ProviderBody,
) -> Result<Provider, ApiError> {
    let settings = body.settings(None)?;
    let provider = state.store.create_provider(tenant.id, settings).await?;
    caller
        .audit_tenant(
            state,
            tenant.id,
            "provider.create",
            provider.id,
            json!(provider.settings),
        )
        .await;
    Ok(provider)
}

/// Changes a provider: the fields given replace the stored ones.
pub async fn update_provider(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: ProviderId,
    body: ProviderBody,
) -> Result<Provider, ApiError> {
    let current = state.store.provider(tenant.id, id).await?;
    let settings = body.settings(Some(&current.settings))?;
    let provider = state.store.update_provider(tenant.id, id, settings).await?;
    if provider.settings.smtp_server_id != current.settings.smtp_server_id {
        // A new server may be pinned to a gateway, or no longer: this node
        // forgets its cached route at once (other nodes hear of it through
        // the store), so it neither sends pinned mail nor hands the tenant's
        // mail, given back to the nodes by the store, to a gateway it left.
        state.cache.invalidate(tenant.id);
    }
    caller
        .audit_tenant(
            state,
            tenant.id,
            "provider.update",
            id,
            json!({"before": current.settings, "after": provider.settings}),
        )
        .await;
    Ok(provider)
}

/// Deletes a provider; a conflict while it is the tenant's active one.
pub async fn delete_provider(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: ProviderId,
) -> Result<(), ApiError> {
    let deleted = state.store.delete_provider(tenant.id, id);
    super::audited_removal(state, caller, tenant, "provider.delete", id, deleted).await
}

/// Queues a test message through a provider of the tenant, to `to` or the
/// provider's fallback recipient; refused at once when no worker is alive.
pub async fn send_test_message(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: ProviderId,
    to: Option<String>,
) -> Result<Submitted, ApiError> {
    let provider = state.store.provider(tenant.id, id).await?;
    let mut check = Check::default();
    let used_fallback = to.is_none();
    let to = check.opt("to", to.as_deref(), EmailAddress::parse);
    check.finish()?;
    let Some(to) = to.or(provider.settings.fallback_recipient.clone()) else {
        return Err(ApiError::field(
            herald_core::Invalid::new("is required: the provider has no fallback recipient")
                .at("to"),
        ));
    };
    let server = state
        .store
        .server(tenant.id, provider.settings.smtp_server_id)
        .await?;
    let now = herald_core::timestamp::now_ms();
    // Mail through a server pinned to a gateway goes only through that
    // gateway: one of its instances must be alive, and no node needs to be.
    match server.settings.gateway_id {
        Some(gateway) => super::gateways::gateway_alive(state, tenant, gateway, now).await?,
        None if !super::worker_alive(state).await? => return Err(ApiError::NoWorker),
        None => {}
    }
    let text = format!(
        "This is a test message from Herald, sent through the notification provider {:?} \
         ({}:{}, {}) at {}.\r\n\r\nIf you can read it, the provider works.",
        provider.settings.name,
        server.settings.host,
        server.settings.port.get(),
        server.settings.security,
        herald_core::timestamp::rfc3339(now),
    );
    let message = herald_store::NewMessage {
        id: herald_core::MessageId::new(),
        tenant_id: tenant.id,
        idempotency_key: None,
        subject: herald_core::Subject::parse(&format!(
            "Herald test message: {}",
            provider.settings.name
        ))
        .map_err(|e| ApiError::Internal(e.into()))?,
        text: Some(text),
        html: None,
        reply_to: None,
        headers: vec![],
        to: vec![to.into()],
        cc: vec![],
        bcc: vec![],
        used_fallback,
        created_at: now,
        on_behalf_of: None,
        test_provider: Some(provider.id),
        priority: herald_store::TEST_PRIORITY,
        max_queued: Some(state.limits.max_queued_per_tenant),
        origin: herald_store::Origin::Api,
        raw: None,
        attachments: Vec::new(),
        max_pending_tests: Some(state.limits.max_pending_tests),
        send_at: None,
        template: None,
        gateway_id: server.settings.gateway_id,
        handoff: None,
    };
    let submitted = match state.store_mail(vec![message]).await {
        Ok(mut submitted) => submitted.remove(0),
        Err(error) => {
            state.count_refused(herald_metrics::Source::Test, 1);
            return Err(error.into());
        }
    };
    state.count_submitted(
        herald_metrics::Source::Test,
        std::slice::from_ref(&submitted),
    );
    caller
        .audit_tenant(
            state,
            tenant.id,
            "provider.test",
            provider.id,
            json!({"message_id": submitted.id}),
        )
        .await;
    Ok(submitted)
}
