//! Where a tenant's delivery events go: its webhooks (the list, creating one
//! with its signing secret shown once on the answer to the form), and each
//! webhook's page (turning it on or off, a test event, a new secret, its
//! recent deliveries, and deleting it after a confirmation page).

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Form, Router};
use herald_api::gate::TenantAdmin;
use herald_api::service::{RotateBody, WebhookBody, WebhookTest, WithSecret};
use herald_api::{AppState, service};
use herald_core::WebhookId;
use herald_core::webhook::EventType;
use herald_store::Tenant;
use minijinja::context;

use super::{Confirmation, Id, store};
use crate::forms::{EnabledForm, Problems, WebhookForm};
use crate::gate::TenantPage;
use crate::notice::{Done, Notice, Saved};
use crate::pages::{PageResult, base, see, submit_then};
use crate::render::page;
use crate::session::Signed;

/// The recent deliveries a webhook's page lists.
const RECENT_DELIVERIES: u32 = 20;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/{tenant}/webhooks", get(webhooks).post(create_webhook))
        .route("/t/{tenant}/webhooks/{id}", get(webhook))
        .route("/t/{tenant}/webhooks/{id}/enabled", post(set_enabled))
        .route("/t/{tenant}/webhooks/{id}/test", post(send_test))
        .route("/t/{tenant}/webhooks/{id}/rotate", post(rotate_secret))
        .route(
            "/t/{tenant}/webhooks/{id}/delete",
            get(confirm_delete).post(delete_webhook),
        )
}

/// The event types a webhook may receive, in the order the form offers them.
fn event_types() -> Vec<&'static str> {
    EventType::ALL.map(EventType::as_str).to_vec()
}

async fn webhooks_page(
    state: &AppState,
    me: &Signed,
    tenant: &Tenant,
    form: WebhookForm,
    problems: Problems,
    notice: Option<Notice>,
) -> PageResult {
    let webhooks = store(state.store.list_webhooks(tenant.id).await)?;
    Ok(page(
        "webhooks.html",
        context! {
            webhooks, form, problems, notice,
            event_types => event_types(),
            ..base(me, tenant, "webhooks")
        },
    ))
}

async fn webhooks(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    done: Done,
) -> PageResult {
    let notice = done.notice(&[(
        Saved::WebhookDeleted,
        "Webhook deleted: its pending events are never sent.",
    )]);
    let form = WebhookForm::new();
    webhooks_page(&state, &me, &tenant, form, Problems::default(), notice).await
}

/// The answer to a create or a rotation: the only page that shows the secret.
fn secret_page(me: &Signed, tenant: &Tenant, created: bool, shown: WithSecret) -> PageResult {
    Ok(page(
        "webhook_secret.html",
        context! {
            created,
            webhook => shown.record,
            secret => shown.secret,
            warnings => shown.warnings,
            ..base(me, tenant, "webhooks")
        },
    ))
}

async fn create_webhook(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Form(fields): Form<Vec<(String, String)>>,
) -> PageResult {
    let form = WebhookForm::from_fields(fields);
    let again = |problems: Problems| {
        // Several `events[i]` become one error beside the checkboxes: the first.
        let problems = problems.renamed(WebhookForm::field);
        webhooks_page(&state, &me, &tenant, form.clone(), problems, None)
    };
    let (signed, loaded) = (&me, &tenant);
    let outcome = service::create_webhook(&state, &me.caller, &tenant, form.body());
    submit_then(
        outcome,
        |created| async move { secret_page(signed, loaded, true, created) },
        again,
    )
    .await
}

/// A webhook's page: its settings, the forms that act on it, its recent
/// deliveries, and what a test event just came to when one was sent.
async fn webhook_page(
    state: &AppState,
    me: &Signed,
    tenant: &Tenant,
    id: WebhookId,
    test: Option<WebhookTest>,
    notice: Option<Notice>,
) -> PageResult {
    let webhook = store(state.store.webhook(tenant.id, id).await)?;
    let deliveries = store(
        state
            .store
            .webhook_deliveries(tenant.id, id, RECENT_DELIVERIES)
            .await,
    )?;
    Ok(page(
        "webhook.html",
        context! {
            webhook, deliveries, test, notice,
            ..base(me, tenant, "webhooks")
        },
    ))
}

async fn webhook(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<WebhookId>,
    done: Done,
) -> PageResult {
    let notice = done.notice(&[
        (
            Saved::WebhookEnabled,
            "Webhook enabled: events are sent to it from now on.",
        ),
        (
            Saved::WebhookDisabled,
            "Webhook disabled: no event is sent to it until it is enabled again.",
        ),
    ]);
    webhook_page(&state, &me, &tenant, id, None, notice).await
}

async fn set_enabled(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<WebhookId>,
    Form(form): Form<EnabledForm>,
) -> PageResult {
    let change = WebhookBody {
        enabled: Some(form.enabled),
        ..WebhookBody::default()
    };
    service::update_webhook(&state, &me.caller, &tenant, id, change).await?;
    let saved = if form.enabled {
        Saved::WebhookEnabled
    } else {
        Saved::WebhookDisabled
    };
    Ok(see(saved.on(&format!("/t/{}/webhooks/{id}", tenant.slug))))
}

/// Sends a test event at once and answers the webhook's page with what it
/// came to (the attempt is among the deliveries listed below it).
async fn send_test(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<WebhookId>,
) -> PageResult {
    let test = service::test_webhook(&state, &tenant, id).await?;
    webhook_page(&state, &me, &tenant, id, Some(test), None).await
}

async fn rotate_secret(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<WebhookId>,
) -> PageResult {
    let rotated =
        service::rotate_webhook_secret(&state, &me.caller, &tenant, id, RotateBody::default())
            .await?;
    secret_page(&me, &tenant, false, rotated)
}

/// The page that asks before a webhook is deleted.
const DELETE: Confirmation = Confirmation {
    section: "webhooks",
    template: "webhook_delete.html",
    object: "webhook",
};

async fn confirm_delete(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<WebhookId>,
) -> PageResult {
    let webhook = store(state.store.webhook(tenant.id, id).await)?;
    DELETE.page(&me, &tenant, webhook, None)
}

async fn delete_webhook(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<WebhookId>,
) -> PageResult {
    let deleted = service::delete_webhook(&state, &me.caller, &tenant, id);
    DELETE.done(&tenant, deleted, Saved::WebhookDeleted).await
}
