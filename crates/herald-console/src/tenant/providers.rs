//! A tenant's notification providers: the list (with the active one), the
//! form (new or editing, with the tenant's servers and accounts to choose
//! from) and deletion.

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Form, Router};
use herald_api::gate::TenantAdmin;
use herald_api::{AppState, service};
use herald_core::ProviderId;
use herald_store::{SmtpServer, Tenant};
use minijinja::{Value, context};

use super::{Id, store};
use crate::forms::{Problems, ProviderForm};
use crate::gate::TenantPage;
use crate::notice::{Done, Notice, Saved};
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
        .route(
            "/t/{tenant}/providers/{id}/activate",
            post(activate_provider),
        )
}

async fn providers(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    done: Done,
) -> PageResult {
    let providers = store(state.store.list_providers(tenant.id).await)?;
    let servers = store(state.store.list_servers(tenant.id).await)?;
    let notice = done.notice(&[(Saved::ProviderDeleted, "Provider deleted.")]);
    Ok(page(
        "providers.html",
        context! {
            providers, servers, notice,
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
    saved: Option<Saved>,
) -> PageResult {
    let servers = store(state.store.list_servers(tenant.id).await)?;
    let accounts = all_accounts(state, tenant, &servers).await?;
    let chosen = provider_id.is_some() && tenant.notification_provider_id == provider_id;
    let within = state.cache.staleness().as_secs();
    let notice = saved.and_then(|saved| provider_notice(&form.name, chosen, within, saved));
    // The stored provider's fallback recipient, where a test goes by default.
    let fallback = match provider_id {
        Some(id) => store(state.store.provider(tenant.id, id).await)?
            .settings
            .fallback_recipient
            .map(|a| a.to_string()),
        None => None,
    };
    Ok(page(
        "provider_form.html",
        context! {
            provider_id => provider_id.map(|p| p.to_string()),
            form, problems, servers, accounts, chosen, notice, fallback,
            ..base(me, tenant, "providers")
        },
    ))
}

/// What the provider's page says after a save, and the step that follows:
/// make it the tenant's provider, then send a test message.
fn provider_notice(name: &str, chosen: bool, within: u64, saved: Saved) -> Option<Notice> {
    let notice = match saved {
        Saved::ProviderAdded => Notice::new(format!("Provider {name} added.")),
        Saved::ProviderChanged => Notice::new(format!("Changes to {name} saved.")),
        // Only what is stored: an old or made-up link says nothing.
        Saved::ProviderChosen if !chosen => return None,
        Saved::ProviderChosen => Notice::new(format!(
            "{name} is the tenant's provider now: every node uses it within {within} s \
             (Tenant properties can make that at once)."
        )),
        _ => return None,
    };
    Some(if chosen {
        notice.then("Send a test message", "#test")
    } else {
        notice.then("Make it the tenant's provider", "#use")
    })
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct NewQuery {
    /// The server the new provider is to use (from the server page's next step).
    server: String,
}

async fn new_provider(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Query(query): Query<NewQuery>,
) -> PageResult {
    let mut form = ProviderForm {
        sender_policy: "fixed".into(),
        ..ProviderForm::default()
    };
    // A server named in the link is chosen, with its first account.
    if let Ok(server) = query.server.parse() {
        if let Ok(server) = state.store.server(tenant.id, server).await {
            form.smtp_server_id = server.id.to_string();
            let accounts = store(state.store.list_accounts(tenant.id, server.id).await)?;
            if let Some(account) = accounts.first() {
                form.account_id = account.id.to_string();
            }
        }
    }
    provider_page(&state, &me, &tenant, None, &form, Problems::default(), None).await
}

async fn create_provider(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Form(form): Form<ProviderForm>,
) -> PageResult {
    let slug = tenant.slug.clone();
    submit(
        service::create_provider(&state, &me.caller, &tenant, form.body(false)),
        |provider| Saved::ProviderAdded.on(&format!("/t/{slug}/providers/{}", provider.id)),
        |problems| provider_page(&state, &me, &tenant, None, &form, problems, None),
    )
    .await
}

async fn edit_provider(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<ProviderId>,
    done: Done,
) -> PageResult {
    let provider = store(state.store.provider(tenant.id, id).await)?;
    let form = ProviderForm::from_provider(&provider);
    let none = Problems::default();
    provider_page(&state, &me, &tenant, Some(id), &form, none, done.saved()).await
}

async fn update_provider(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<ProviderId>,
    Form(form): Form<ProviderForm>,
) -> PageResult {
    let slug = tenant.slug.clone();
    submit(
        service::update_provider(&state, &me.caller, &tenant, id, form.body(true)),
        |_| Saved::ProviderChanged.on(&format!("/t/{slug}/providers/{id}")),
        |problems| provider_page(&state, &me, &tenant, Some(id), &form, problems, None),
    )
    .await
}

async fn delete_provider(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<ProviderId>,
) -> PageResult {
    let slug = tenant.slug.clone();
    service::delete_provider(&state, &me.caller, &tenant, id).await?;
    Ok(see(
        Saved::ProviderDeleted.on(&format!("/t/{slug}/providers"))
    ))
}

/// Makes this provider the tenant's, from its own page (as the properties page does).
async fn activate_provider(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<ProviderId>,
) -> PageResult {
    let slug = tenant.slug.clone();
    service::set_provider(&state, &me.caller, &tenant, Some(id.to_string())).await?;
    Ok(see(
        Saved::ProviderChosen.on(&format!("/t/{slug}/providers/{id}"))
    ))
}
