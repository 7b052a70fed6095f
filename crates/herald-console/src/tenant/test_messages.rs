//! A provider's test message: sent from the providers page, then its result
//! page, whose steps (the SMTP session with the server's words) are polled
//! by htmx until the attempt is recorded.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Form, Router};
use herald_api::gate::TenantAdmin;
use herald_api::{ApiError, AppState, Caller, service};
use herald_core::{MessageId, ProviderId, RecipientStatus};
use herald_store::Tenant;
use minijinja::{Value, context};
use serde::Deserialize;

use super::Id;
use crate::gate::TenantPage;
use crate::pages::{PageResult, base, see};
use crate::render::{PageError, page};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/{tenant}/providers/{id}/test", post(test_provider))
        .route("/t/{tenant}/tests/{id}", get(test_result))
        .route("/t/{tenant}/tests/{id}/steps", get(test_steps))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TestForm {
    to: String,
}

async fn test_provider(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<ProviderId>,
    Form(form): Form<TestForm>,
) -> PageResult {
    let slug = tenant.slug.clone();
    let to = Some(form.to.trim().to_owned()).filter(|t| !t.is_empty());
    let submitted = service::send_test_message(&state, &me.caller, &tenant, id, to).await?;
    Ok(see(format!("/t/{slug}/tests/{}", submitted.id)))
}

/// What the test result shows: the message's status and, once its attempt is
/// recorded, each step of the session with the server's words.
async fn test_context(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: MessageId,
) -> Result<Value, PageError> {
    let message = service::message(state, caller, tenant, id).await?;
    if message.test_provider_id.is_none() {
        return Err(PageError(ApiError::NotFound("test message")));
    }
    let recipient = message.recipients.first();
    let attempt = recipient.and_then(|r| r.attempts.last());
    let finished = matches!(
        message.status,
        RecipientStatus::Sent | RecipientStatus::Failed
    ) || attempt.is_some();
    Ok(context! {
        message_id => message.id.to_string(),
        status => message.status.as_str(),
        to => recipient.map(|r| r.address.clone()),
        attempt,
        steps => attempt.and_then(|a| a.diagnosis.clone()),
        finished,
    })
}

async fn test_result(
    State(state): State<AppState>,
    gate: TenantPage<TenantAdmin>,
    Id(id): Id<MessageId>,
) -> PageResult {
    test_page(&state, gate, id, "test_result.html").await
}

/// The steps alone, which the result page polls (htmx) until the attempt is recorded.
async fn test_steps(
    State(state): State<AppState>,
    gate: TenantPage<TenantAdmin>,
    Id(id): Id<MessageId>,
) -> PageResult {
    test_page(&state, gate, id, "test_steps.html").await
}

/// The test message `id` rendered with `template`: the whole page, or its steps.
async fn test_page(
    state: &AppState,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    id: MessageId,
    template: &str,
) -> PageResult {
    let result = test_context(state, &me.caller, &tenant, id).await?;
    Ok(page(
        template,
        context! { result, ..base(&me, &tenant, "providers") },
    ))
}
