//! Notification providers: which server and account a tenant's mail goes through, and as whom.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_core::{
    AccountId, DisplayName, EmailAddress, Mailbox, ProviderId, SenderPolicy, ServerId,
};
use herald_store::{Provider, ProviderSettings, Submitted, Tenant};
use serde::Deserialize;
use serde_json::json;

use super::{Check, name, path_id};
use crate::auth::Caller;
use crate::body::Body;
use crate::gate::{Authorised, TenantAdmin};
use crate::{ApiError, AppState};

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
#[derive(Deserialize, Default)]
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
fn optional<T: Clone>(
    check: &mut Check,
    field: &str,
    given: Option<String>,
    base: Option<&T>,
    parse: impl Fn(&str) -> Result<T, herald_core::Invalid>,
) -> Option<T> {
    match given {
        // Only spaces and tabs count as blank: a line break is validated, and refused.
        Some(s) if s.trim_matches([' ', '\t']).is_empty() => None,
        Some(s) => check.take(field, parse(&s)),
        None => base.cloned(),
    }
}

impl ProviderBody {
    fn settings(self, base: Option<&ProviderSettings>) -> Result<ProviderSettings, ApiError> {
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
        let account_id = optional(
            &mut check,
            "account_id",
            self.account_id,
            base.and_then(|b| b.account_id.as_ref()),
            |s| s.parse::<AccountId>(),
        );
        let from_address = match self.from_address {
            Some(a) => check.take("from_address", EmailAddress::parse(&a)),
            None => base.map(|b| b.from_address.clone()),
        };
        let from_name = optional(
            &mut check,
            "from_name",
            self.from_name,
            base.and_then(|b| b.from_name.as_ref()),
            DisplayName::parse,
        );
        let reply_to = optional(
            &mut check,
            "reply_to",
            self.reply_to,
            base.and_then(|b| b.reply_to.as_ref()),
            Mailbox::parse,
        );
        let fallback_recipient = optional(
            &mut check,
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

async fn create(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    body: Body<ProviderBody>,
) -> Result<(StatusCode, Json<Provider>), ApiError> {
    let provider = create_provider(&state, &caller, &tenant, body.parse()?).await?;
    Ok((StatusCode::CREATED, Json(provider)))
}

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
        .audit(
            state,
            Some(tenant.id),
            "provider.create",
            Some(provider.id.to_string()),
            json!(provider.settings),
        )
        .await;
    Ok(provider)
}

async fn list(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<TenantAdmin>,
) -> Result<Json<Vec<Provider>>, ApiError> {
    Ok(Json(state.store.list_providers(tenant.id).await?))
}

async fn show(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<TenantAdmin>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Provider>, ApiError> {
    Ok(Json(
        state
            .store
            .provider(tenant.id, path_id::<ProviderId>(&id, "provider")?)
            .await?,
    ))
}

async fn update(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    Path((_, id)): Path<(String, String)>,
    body: Body<ProviderBody>,
) -> Result<Json<Provider>, ApiError> {
    let body = body.parse()?;
    let id = path_id::<ProviderId>(&id, "provider")?;
    Ok(Json(
        update_provider(&state, &caller, &tenant, id, body).await?,
    ))
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
    caller
        .audit(
            state,
            Some(tenant.id),
            "provider.update",
            Some(id.to_string()),
            json!({"before": current.settings, "after": provider.settings}),
        )
        .await;
    Ok(provider)
}

async fn remove(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id: ProviderId = path_id(&id, "provider")?;
    delete_provider(&state, &caller, &tenant, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a provider; a conflict while it is the tenant's active one.
pub async fn delete_provider(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: ProviderId,
) -> Result<(), ApiError> {
    state.store.delete_provider(tenant.id, id).await?;
    caller
        .audit(
            state,
            Some(tenant.id),
            "provider.delete",
            Some(id.to_string()),
            json!({}),
        )
        .await;
    Ok(())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TestBody {
    to: Option<String>,
}

/// Queues a test message through this provider, ahead of other mail; its
/// attempt carries the step-by-step diagnosis. Answers at once.
async fn test_message(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    Path((_, id)): Path<(String, String)>,
    body: Body<TestBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let body = body.parse_or_default()?;
    let id = path_id::<ProviderId>(&id, "provider")?;
    let submitted = send_test_message(&state, &caller, &tenant, id, body.to).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"message_id": submitted.id, "status": submitted.status})),
    ))
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
    if !super::worker_alive(state).await? {
        return Err(ApiError::NoWorker);
    }
    let server = state
        .store
        .server(tenant.id, provider.settings.smtp_server_id)
        .await?;
    let now = herald_core::timestamp::now_ms();
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
        .map_err(|e| ApiError::Internal(e.to_string()))?,
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
        max_pending_tests: Some(state.limits.max_pending_tests),
    };
    let submitted = state.store.submit(message).await?;
    state.wake.notify_one();
    caller
        .audit(
            state,
            Some(tenant.id),
            "provider.test",
            Some(provider.id.to_string()),
            json!({"message_id": submitted.id}),
        )
        .await;
    Ok(submitted)
}
