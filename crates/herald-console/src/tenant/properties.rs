//! A tenant's properties: which provider sends its notifications, and making
//! a change effective at once (refresh).

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Form, Router};
use herald_api::gate::TenantAdmin;
use herald_api::{AppState, service};
use herald_store::Tenant;
use minijinja::context;
use serde::Deserialize;

use super::store;
use crate::forms::Problems;
use crate::gate::TenantPage;
use crate::notice::{Done, Notice, Saved};
use crate::pages::{PageResult, base, see, submit};
use crate::render::page;
use crate::session::Signed;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/{tenant}/properties", get(properties).post(set_provider))
        .route("/t/{tenant}/properties/refresh", post(refresh))
}

async fn properties_page(
    state: &AppState,
    me: &Signed,
    tenant: &Tenant,
    problems: Problems,
    saved: Option<Saved>,
) -> PageResult {
    let properties = service::properties(state, tenant).await?;
    let providers = store(state.store.list_providers(tenant.id).await)?;
    let chosen = tenant
        .notification_provider_id
        .and_then(|id| providers.iter().find(|p| p.id == id));
    let notice = match (saved, chosen) {
        (Some(Saved::ProviderChosen), Some(p)) => Some(
            Notice::new(format!("{} is the tenant's provider now.", p.settings.name)).then(
                "Send a test message",
                format!("/t/{}/providers/{}#test", tenant.slug, p.id),
            ),
        ),
        (Some(Saved::ProviderChosen), None) => Some(Notice::new(
            "The system default provider is the tenant's provider now.",
        )),
        (Some(Saved::Refreshed), _) => Some(Notice::new(
            "Refreshed: every node uses the tenant's provider now.",
        )),
        _ => None,
    };
    Ok(page(
        "properties.html",
        context! {
            properties, providers, problems, notice,
            chosen => tenant.notification_provider_id.map(|p| p.to_string()),
            ..base(me, tenant, "properties")
        },
    ))
}

async fn properties(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    done: Done,
) -> PageResult {
    properties_page(&state, &me, &tenant, Problems::default(), done.saved()).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PropertiesForm {
    notification_provider_id: String,
}

async fn set_provider(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Form(form): Form<PropertiesForm>,
) -> PageResult {
    let slug = tenant.slug.clone();
    let chosen = Some(form.notification_provider_id).filter(|p| !p.is_empty());
    submit(
        service::set_provider(&state, &me.caller, &tenant, chosen),
        |_| Saved::ProviderChosen.on(&format!("/t/{slug}/properties")),
        |problems| properties_page(&state, &me, &tenant, problems, None),
    )
    .await
}

async fn refresh(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
) -> PageResult {
    let slug = tenant.slug.clone();
    service::refresh(&state, &me.caller, &tenant).await?;
    Ok(see(Saved::Refreshed.on(&format!("/t/{slug}/properties"))))
}
