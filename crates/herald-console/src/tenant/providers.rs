//! A tenant's notification providers: the list (with the active one), the
//! form (new or editing, with the tenant's servers and accounts to choose
//! from) and deletion.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Form, Router};
use herald_api::gate::TenantAdmin;
use herald_api::{AppState, service};
use herald_core::ProviderId;
use herald_store::{SmtpServer, Tenant};
use minijinja::{Value, context};

use super::{path_id, store};
use crate::forms::{Problems, ProviderForm};
use crate::gate::TenantPage;
use crate::pages::{PageResult, base, see, submit};
use crate::render::{PageError, page};
use crate::session::Signed;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/t/{tenant}/providers",
            get(providers).post(create_provider),
        )
        .route("/t/{tenant}/providers/new", get(new_provider))
        .route(
            "/t/{tenant}/providers/{id}",
            get(edit_provider).post(update_provider),
        )
        .route("/t/{tenant}/providers/{id}/delete", post(delete_provider))
}

async fn providers(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
) -> PageResult {
    let providers = store(state.store.list_providers(tenant.id).await)?;
    let servers = store(state.store.list_servers(tenant.id).await)?;
    Ok(page(
        "providers.html",
        context! {
            providers, servers,
            active => tenant.notification_provider_id.map(|p| p.to_string()),
            ..base(&me, &tenant, "providers")
        },
    ))
}

/// Every account of the tenant's servers, for the provider form's choice.
async fn all_accounts(
    state: &AppState,
    tenant: &Tenant,
    servers: &[SmtpServer],
) -> Result<Vec<Value>, PageError> {
    let mut accounts = Vec::new();
    for server in servers {
        for account in store(state.store.list_accounts(tenant.id, server.id).await)? {
            accounts.push(context! {
                id => account.id.to_string(),
                label => format!("{} on {}", account.username, server.settings.name),
            });
        }
    }
    Ok(accounts)
}

/// The provider form, new (`provider_id` None) or editing, with what was typed and its errors.
async fn provider_page(
    state: &AppState,
    me: &Signed,
    tenant: &Tenant,
    provider_id: Option<ProviderId>,
    form: &ProviderForm,
    problems: Problems,
) -> PageResult {
    let servers = store(state.store.list_servers(tenant.id).await)?;
    let accounts = all_accounts(state, tenant, &servers).await?;
    Ok(page(
        "provider_form.html",
        context! {
            provider_id => provider_id.map(|p| p.to_string()),
            form, problems, servers, accounts,
            ..base(me, tenant, "providers")
        },
    ))
}

async fn new_provider(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
) -> PageResult {
    let form = ProviderForm {
        sender_policy: "fixed".into(),
        ..ProviderForm::default()
    };
    provider_page(&state, &me, &tenant, None, &form, Problems::default()).await
}

async fn create_provider(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Form(form): Form<ProviderForm>,
) -> PageResult {
    let slug = tenant.slug.clone();
    submit(
        service::create_provider(&state, &me.caller, &tenant, form.body(false)),
        |_| format!("/t/{slug}/providers"),
        |problems| provider_page(&state, &me, &tenant, None, &form, problems),
    )
    .await
}

async fn edit_provider(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Path((_, id)): Path<(String, String)>,
) -> PageResult {
    let id: ProviderId = path_id(&id, "provider")?;
    let provider = store(state.store.provider(tenant.id, id).await)?;
    let form = ProviderForm::from_provider(&provider);
    provider_page(&state, &me, &tenant, Some(id), &form, Problems::default()).await
}

async fn update_provider(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Path((_, id)): Path<(String, String)>,
    Form(form): Form<ProviderForm>,
) -> PageResult {
    let slug = tenant.slug.clone();
    let id: ProviderId = path_id(&id, "provider")?;
    submit(
        service::update_provider(&state, &me.caller, &tenant, id, form.body(true)),
        |_| format!("/t/{slug}/providers"),
        |problems| provider_page(&state, &me, &tenant, Some(id), &form, problems),
    )
    .await
}

async fn delete_provider(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Path((_, id)): Path<(String, String)>,
) -> PageResult {
    let slug = tenant.slug.clone();
    let id: ProviderId = path_id(&id, "provider")?;
    service::delete_provider(&state, &me.caller, &tenant, id).await?;
    Ok(see(format!("/t/{slug}/providers")))
}
