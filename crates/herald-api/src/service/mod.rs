//! What the API's handlers do once the caller is authorised, for other front
//! ends on the same node (the web console): the same validation, store calls
//! and audit entries, so there is one implementation of each action. One
//! module per resource; the API's `routes` call these too.
//!
//! Every function takes a tenant already loaded through the tenant gate
//! ([`crate::gate`]), which is where role and tenant isolation are enforced.

use herald_store::Tenant;

use crate::{ApiError, AppState, Caller};

mod accounts;
mod gateways;
mod messages;
mod nodes;
mod people;
mod providers;
pub(crate) mod schedules;
mod servers;
mod smtp;
pub mod templates;
mod tenants;
mod tokens;
mod webhooks;

pub use accounts::{create_account, delete_account};
pub use gateways::{
    GatewayView, InstanceView, WithToken, create_gateway, delete_gateway, gateway_view,
    replace_gateway_token,
};
pub use messages::{
    MessagePage, cancel_message, cursor, fallback_recipient, message, parse_cursor, pinned_gateway,
    search_messages,
};
pub use nodes::worker_alive;
pub use people::{create_person, delete_person, set_person_password};
pub use providers::{create_provider, delete_provider, send_test_message, update_provider};
pub use schedules::{create_schedule, delete_schedule, fire, run_schedule, update_schedule};
pub use servers::{
    create_server, delete_server, egress_refusal, egress_warning, update_server,
    warnings_after_save, warnings_when_saved,
};
pub use smtp::{
    CreatedCredential, create_smtp_connector, create_smtp_credential, delete_smtp_connector,
    network, revoke_smtp_credential,
};
pub use templates::{create_template, delete_template, find_template, update_template};
pub use tenants::{create_tenant, properties, refresh, set_entitlements, set_provider};
pub use tokens::{CreatedToken, create_token, revoke_token};
pub use webhooks::{
    WebhookTest, WithSecret, create_webhook, delete_webhook, rotate_webhook_secret, test_webhook,
    update_webhook,
};

/// The request bodies the services take, as the API reads them.
pub use crate::routes::gateways::GatewayBody;
/// The rule for the names of objects and tokens.
pub use crate::routes::name;
pub use crate::routes::people::PersonBody;
pub use crate::routes::people::TokenBody;
pub use crate::routes::providers::ProviderBody;
pub use crate::routes::schedules::ScheduleBody;
pub use crate::routes::servers::{AccountBody, OAuth2Body, ServerBody};
pub use crate::routes::smtp::{ConnectorBody, CredentialBody};
pub use crate::routes::templates::{PreviewBody, TemplateBody};
pub use crate::routes::webhooks::{RotateBody, WebhookBody};

/// Deletes or revokes one of the tenant's objects through `removed` (the
/// store's call), then records `action` on `id` in the audit log. A refused
/// removal (not found, still in use) records nothing.
async fn audited_removal(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    action: &str,
    id: impl ToString,
    removed: impl Future<Output = herald_store::Result<()>>,
) -> Result<(), ApiError> {
    removed.await?;
    caller
        .audit_tenant(state, tenant.id, action, id, serde_json::json!({}))
        .await;
    Ok(())
}
