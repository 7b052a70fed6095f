//! What the API's handlers do once the caller is authorised, for other front
//! ends on the same node (the web console): the same validation, store calls
//! and audit entries, so there is one implementation of each action.
//!
//! Every function takes a tenant already loaded through the tenant gate
//! ([`crate::gate`]), which is where role and tenant isolation are enforced.

/// The rule for the names of objects and tokens.
pub use crate::routes::name;
pub use crate::routes::people::{PersonBody, create_person, set_person_password};
pub use crate::routes::providers::{
    ProviderBody, create_provider, delete_provider, send_test_message, update_provider,
};
pub use crate::routes::servers::{
    AccountBody, OAuth2Body, ServerBody, create_account, create_server, delete_account,
    delete_server, update_server,
};
pub use crate::routes::tenants::{
    create_tenant, properties, refresh, set_entitlements, set_provider,
};

/// One message of the tenant as the caller may see it: without the
/// diagnosis of its attempts unless [`Caller::sees_diagnosis`](crate::Caller::sees_diagnosis).
pub async fn message(
    state: &crate::AppState,
    caller: &crate::Caller,
    tenant: &herald_store::Tenant,
    id: herald_core::MessageId,
) -> Result<herald_store::MessageView, crate::ApiError> {
    let mut message = state.store.message(tenant.id, id).await?;
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

/// True when some node with the worker role sent a heartbeat recently.
pub async fn worker_alive(state: &crate::AppState) -> Result<bool, crate::ApiError> {
    crate::routes::worker_alive(state).await
}
