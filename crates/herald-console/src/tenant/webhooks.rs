//! Where a tenant's delivery events go: its webhooks (the list, creating one
//! with its signing secret shown once on the answer to the form), and each
//! webhook's page (turning it on or off, a test event, a new secret, its
//! recent deliveries, and deleting it after a confirmation page).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Form, Router};
use herald_api::gate::TenantAdmin;
use herald_api::service::{RotateBody, WebhookBody, WebhookTest, WithSecret};
use herald_api::{AppState, service};
use herald_core::WebhookId;
use herald_core::webhook::EventType;
use herald_store::Tenant;
use minijinja::context;
use serde::Deserialize;

use super::{path_id, store};
use crate::forms::{Problems, WebhookForm};
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

/// The API's field names in the form's own, so each error shows beside its field.
fn renamed(problems: Problems) -> Problems {
    let mut fields = crate::forms::FieldErrors::new();
    for (name, rule) in problems.fields {
        // Several `events[i]` become one error beside the checkboxes: the first.
        fields.entry(WebhookForm::field(&name)).or_insert(rule);
    }
    Problems {
        fields,
        general: problems.general,
    }
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
    let notice = match done.saved() {
        Some(Saved::WebhookDeleted) => Some(Notice::new(
            "Webhook deleted: its pending events are never sent.",
        )),
        _ => None,
    };
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
        webhooks_page(&state, &me, &tenant, form.clone(), renamed(problems), None)
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
    Path((_, id)): Path<(String, String)>,
    done: Done,
) -> PageResult {
    let id: WebhookId = path_id(&id, "webhook")?;
    let notice = match done.saved() {
        Some(Saved::WebhookEnabled) => Some(Notice::new(
            "Webhook enabled: events are sent to it from now on.",
        )),
        Some(Saved::WebhookDisabled) => Some(Notice::new(
            "Webhook disabled: no event is sent to it until it is enabled again.",
        )),
        _ => None,
    };
    webhook_page(&state, &me, &tenant, id, None, notice).await
}

/// The toggle's one field: whether the webhook is to be on.
#[derive(Deserialize)]
struct EnabledForm {
    enabled: bool,
}

async fn set_enabled(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Path((_, id)): Path<(String, String)>,
    Form(form): Form<EnabledForm>,
) -> PageResult {
    let id: WebhookId = path_id(&id, "webhook")?;
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
    Path((_, id)): Path<(String, String)>,
) -> PageResult {
    let id: WebhookId = path_id(&id, "webhook")?;
    let test = service::test_webhook(&state, &tenant, id).await?;
    webhook_page(&state, &me, &tenant, id, Some(test), None).await
}

async fn rotate_secret(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Path((_, id)): Path<(String, String)>,
) -> PageResult {
    let id: WebhookId = path_id(&id, "webhook")?;
    let rotated =
        service::rotate_webhook_secret(&state, &me.caller, &tenant, id, RotateBody::default())
            .await?;
    secret_page(&me, &tenant, false, rotated)
}

async fn confirm_delete(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Path((_, id)): Path<(String, String)>,
) -> PageResult {
    let id: WebhookId = path_id(&id, "webhook")?;
    let webhook = store(state.store.webhook(tenant.id, id).await)?;
    Ok(page(
        "webhook_delete.html",
        context! { webhook, ..base(&me, &tenant, "webhooks") },
    ))
}

async fn delete_webhook(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Path((_, id)): Path<(String, String)>,
) -> PageResult {
    let id: WebhookId = path_id(&id, "webhook")?;
    service::delete_webhook(&state, &me.caller, &tenant, id).await?;
    Ok(see(
        Saved::WebhookDeleted.on(&format!("/t/{}/webhooks", tenant.slug))
    ))
}
