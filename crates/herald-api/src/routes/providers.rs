//! Notification providers: which server and account a tenant's mail goes through, and as whom.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_core::{
    AccountId, DisplayName, EmailAddress, Mailbox, ProviderId, SenderPolicy, ServerId,
};
use herald_store::{Provider, ProviderSettings};
use serde::Deserialize;
use serde_json::json;

use super::{Check, Id, name};
use crate::body::Body;
use crate::gate::{Authorised, TenantAdmin};
use crate::openapi::{ObjectPath, TenantPath, answers};
use crate::service::{create_provider, delete_provider, send_test_message, update_provider};
use crate::{ApiError, AppState};

/// The OpenAPI paths of this module's routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create, list, show, update, remove, test_message))]
pub(crate) struct Api;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{tenant}/providers", post(create).get(list))
        .route(
            "/v1/tenants/{tenant}/providers/{id}",
            get(show).patch(update).delete(remove),
        )
        .route(
            "/v1/tenants/{tenant}/providers/{id}/test",
            post(test_message),
        )
}

/// A provider's fields; all optional so the same shape serves create and PATCH.
/// For PATCH, an empty string clears `account_id`, `from_name`, `reply_to` or `fallback_recipient`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderBody {
    pub name: Option<String>,
    pub smtp_server_id: Option<String>,
    pub account_id: Option<String>,
    pub from_address: Option<String>,
    pub from_name: Option<String>,
    pub reply_to: Option<String>,
    pub fallback_recipient: Option<String>,
    pub sender_policy: Option<String>,
}

/// Parses an optional field on top of its stored value: absent keeps it, empty clears it.
impl ProviderBody {
    pub(crate) fn settings(
        self,
        base: Option<&ProviderSettings>,
    ) -> Result<ProviderSettings, ApiError> {
        let mut check = Check::default();
        let required = |check: &mut Check, field: &str, present: bool| {
            if !present && base.is_none() {
                check.fail(field, "is required");
            }
        };
        required(&mut check, "name", self.name.is_some());
        required(&mut check, "smtp_server_id", self.smtp_server_id.is_some());
        required(&mut check, "from_address", self.from_address.is_some());
        let name = match self.name {
            Some(n) => check.take("name", name(&n)),
            None => base.map(|b| b.name.clone()),
        };
        let smtp_server_id = match self.smtp_server_id {
            Some(s) => check.take("smtp_server_id", s.parse::<ServerId>()),
            None => base.map(|b| b.smtp_server_id),
        };
        let account_id = check.clearable(
            "account_id",
            self.account_id,
            base.and_then(|b| b.account_id.as_ref()),
            |s| s.parse::<AccountId>(),
        );
        let from_address = match self.from_address {
            Some(a) => check.take("from_address", EmailAddress::parse(&a)),
            None => base.map(|b| b.from_address.clone()),
        };
        let from_name = check.clearable(
            "from_name",
            self.from_name,
            base.and_then(|b| b.from_name.as_ref()),
            DisplayName::parse,
        );
        let reply_to = check.clearable(
            "reply_to",
            self.reply_to,
            base.and_then(|b| b.reply_to.as_ref()),
            Mailbox::parse,
        );
        let fallback_recipient = check.clearable(
            "fallback_recipient",
            self.fallback_recipient,
            base.and_then(|b| b.fallback_recipient.as_ref()),
            EmailAddress::parse,
        );
        let sender_policy = match self.sender_policy {
            Some(p) => check.take("sender_policy", SenderPolicy::parse(&p)),
            None => Some(base.map_or(SenderPolicy::Fixed, |b| b.sender_policy)),
        };
        check.finish()?;
        let (Some(name), Some(smtp_server_id), Some(from_address), Some(sender_policy)) =
            (name, smtp_server_id, from_address, sender_policy)
        else {
            unreachable!("checked above")
        };
        Ok(ProviderSettings {
            name,
            smtp_server_id,
            account_id,
            from_address,
            from_name,
            reply_to,
            fallback_recipient,
            sender_policy,
        })
    }
}

handlers! {
    /// Creates a notification provider.
    #[utoipa::path(post, path = "/v1/tenants/{tenant}/providers", tag = "providers", params(TenantPath),
        request_body = ProviderBody,
        responses(
            (status = 201, description = "The provider", body = answers::Provider),
            (status = 409, description = "The name is taken", body = crate::openapi::Problem, content_type = "application/problem+json"),
        ))]
    async fn create(Authorised<TenantAdmin>, Body<ProviderBody>) -> Created<Provider> = create_provider;

    /// Lists the tenant's providers.
    #[utoipa::path(get, path = "/v1/tenants/{tenant}/providers", tag = "providers", params(TenantPath),
        responses((status = 200, description = "The providers", body = Vec<answers::Provider>)))]
    async fn list(Authorised<TenantAdmin>) -> Vec<Provider> = store.list_providers;

    /// One provider.
    #[utoipa::path(get, path = "/v1/tenants/{tenant}/providers/{id}", tag = "providers", params(ObjectPath),
        responses((status = 200, description = "The provider", body = answers::Provider)))]
    async fn show(Authorised<TenantAdmin>, Id<ProviderId>) -> Provider = store.provider;

    /// Changes a provider: absent fields keep their value, an empty string clears an optional one.
    #[utoipa::path(patch, path = "/v1/tenants/{tenant}/providers/{id}", tag = "providers", params(ObjectPath),
        request_body = ProviderBody,
        responses(
            (status = 200, description = "The provider", body = answers::Provider),
            (status = 409, description = "The name is taken", body = crate::openapi::Problem, content_type = "application/problem+json"),
        ))]
    async fn update(Authorised<TenantAdmin>, Id<ProviderId>, Body<ProviderBody>) -> Provider = update_provider;

    /// Deletes a provider that is not the tenant's active one.
    #[utoipa::path(delete, path = "/v1/tenants/{tenant}/providers/{id}", tag = "providers", params(ObjectPath),
        responses(
            (status = 204, description = "Deleted"),
            (status = 409, description = "The provider is in use", body = crate::openapi::Problem, content_type = "application/problem+json"),
        ))]
    async fn remove(Authorised<TenantAdmin>, Id<ProviderId>) -> Deleted = delete_provider;
}

/// Where a test message goes; the provider's fallback recipient when absent.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TestBody {
    to: Option<String>,
}

/// Queues a test message through this provider, ahead of other mail.
///
/// Its attempt carries the step-by-step diagnosis. Answers at once.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/providers/{id}/test", tag = "providers", params(ObjectPath),
    request_body(content = Option<TestBody>, description = "Optional: without a body, the test goes to the provider's fallback recipient"),
    responses(
        (status = 202, description = "Queued", body = answers::TestQueued),
        (status = 429, description = "Too many test messages waiting (`too-many-test-messages`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "No worker node is alive (`no-worker-alive`), no instance of the server's gateway is alive (`no-gateway-alive`), or the database is unavailable", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn test_message(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    Id(id): Id<ProviderId>,
    body: Body<TestBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let body = body.parse_or_default()?;
    let submitted = send_test_message(&state, &caller, &tenant, id, body.to).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"message_id": submitted.id, "status": submitted.status})),
    ))
}
