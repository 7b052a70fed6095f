//! A tenant's messages as a caller may read them.

use herald_core::MessageId;
use herald_store::{MessageView, Tenant};

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
