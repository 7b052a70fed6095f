//! SMTP servers of a tenant: create, change (clearing the accounts' secrets when
//! trust is redirected or weakened) and delete.

use herald_core::ServerId;
use herald_store::{SmtpServer, Tenant};
use serde_json::json;

use crate::routes::servers::ServerBody;
use crate::{ApiError, AppState, Caller};

/// Creates an SMTP server of an authorised tenant, and records it in the audit log.
pub async fn create_server(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    body: ServerBody,
) -> Result<SmtpServer, ApiError> {
    let settings = body.settings(None)?;
    let server = state.store.create_server(tenant.id, settings).await?;
    caller
        .audit(
            state,
            Some(tenant.id),
            "smtp_server.create",
            Some(server.id.to_string()),
            json!(server.settings),
        )
        .await;
    Ok(server)
}

/// Changes an SMTP server: the fields given replace the stored ones. A change
/// that redirects or weakens trust (see `ServerSettings::change_clears_secrets`)
/// clears the secrets of the server's accounts.
pub async fn update_server(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: ServerId,
    body: ServerBody,
) -> Result<SmtpServer, ApiError> {
    let current = state.store.server(tenant.id, id).await?;
    let settings = body.settings(Some(&current.settings))?;
    let old = &current.settings;
    let secrets_cleared = old.change_clears_secrets(&settings);
    let server = state.store.update_server(tenant.id, id, settings).await?;
    caller
        .audit(
            state,
            Some(tenant.id),
            "smtp_server.update",
            Some(id.to_string()),
            json!({"before": old, "after": server.settings, "account_secrets_cleared": secrets_cleared}),
        )
        .await;
    Ok(server)
}

/// Deletes an SMTP server and its accounts; a conflict while a provider uses it.
pub async fn delete_server(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: ServerId,
) -> Result<(), ApiError> {
    state.store.delete_server(tenant.id, id).await?;
    caller
        .audit(
            state,
            Some(tenant.id),
            "smtp_server.delete",
            Some(id.to_string()),
            json!({}),
        )
        .await;
    Ok(())
}
