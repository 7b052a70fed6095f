//! A tenant's SMTP servers: the list, the form (new, from a preset, or
//! editing, with the server's accounts below it) and deletion.

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Form, Router};
use herald_api::gate::TenantAdmin;
use herald_api::{AppState, service};
use herald_core::ServerId;
use herald_store::{SmtpServer, Tenant};
use minijinja::context;
use serde::Deserialize;

use super::{Id, store};
use crate::forms::{AccountForm, Problems, ServerForm};
use crate::gate::TenantPage;
use crate::notice::{Done, Notice, Saved};
use crate::pages::{PageResult, base, see, submit};
use crate::render::page;
use crate::session::Signed;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/{tenant}/servers", get(servers).post(create_server))
        .route("/t/{tenant}/servers/new", get(new_server))
        .route(
            "/t/{tenant}/servers/{id}",
            get(edit_server).post(update_server),
        )
        .route("/t/{tenant}/servers/{id}/delete", post(delete_server))
}

async fn servers(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    done: Done,
) -> PageResult {
    let servers = store(state.store.list_servers(tenant.id).await)?;
    let gateways = store(state.store.list_gateways(tenant.id).await)?;
    let notice = done.notice(&[(Saved::ServerDeleted, "SMTP server deleted.")]);
    Ok(page(
        "servers.html",
        context! { servers, gateways, notice, ..base(&me, &tenant, "servers") },
    ))
}

#[derive(Deserialize)]
struct PresetQuery {
    preset: Option<String>,
}

fn preset(id: Option<&str>) -> Option<serde_json::Value> {
    let id = id?;
    herald_core::presets::all()
        .as_array()?
        .iter()
        .find(|p| p["id"] == id)
        .cloned()
}

/// What the server page shows besides the server's own form.
#[derive(Default)]
pub(super) struct Extras<'a> {
    /// The preset the new server's form was filled from.
    pub preset: Option<serde_json::Value>,
    /// The new-account form as typed, with its errors; empty when absent.
    pub account: Option<(&'a AccountForm, Problems)>,
    /// What the redirect to this page says was just saved.
    pub saved: Option<Saved>,
    /// The egress rule that save found refusing the host, by code.
    pub egress: Option<&'a str>,
}

/// What the server's page says after a save, and the step that follows: an
/// account while the server requires one and has none, then a provider.
fn server_notice(
    slug: &str,
    server: &SmtpServer,
    has_account: bool,
    saved: Saved,
) -> Option<Notice> {
    let name = &server.settings.name;
    let text = match saved {
        Saved::ServerAdded => format!("SMTP server {name} added."),
        Saved::ServerChanged => format!("Changes to {name} saved."),
        Saved::AccountAdded => "Account added.".to_owned(),
        Saved::AccountDeleted => "Account deleted.".to_owned(),
        _ => return None,
    };
    let notice = Notice::new(text);
    Some(if server.settings.requires_auth && !has_account {
        notice.then("It requires authentication: add an account", "#add-account")
    } else if saved == Saved::AccountDeleted {
        notice
    } else {
        notice.then(
            "Create a provider that uses it",
            format!("/t/{slug}/providers/new?server={}", server.id),
        )
    })
}

/// The server page: its form, new (`server` None) or editing, with what was
/// typed and its errors, and, when editing, the server's accounts.
pub(super) async fn server_page(
    state: &AppState,
    me: &Signed,
    tenant: &Tenant,
    server: Option<&SmtpServer>,
    form: &ServerForm,
    problems: Problems,
    extras: Extras<'_>,
) -> PageResult {
    let (accounts, persons) = match server {
        Some(server) => (
            store(state.store.list_accounts(tenant.id, server.id).await)?,
            store(state.store.list_persons(tenant.id).await)?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    let notice = match (server, extras.saved) {
        (Some(server), Some(saved)) => {
            server_notice(tenant.slug.as_ref(), server, !accounts.is_empty(), saved)
        }
        _ => None,
    };
    // The same words the API's server answer gives, from the stored entry.
    // Just after a save, also whether the egress guard refuses its host, as
    // the API's answer to a save says: judged when it was saved and carried
    // here as a rule's code, so that visiting the page resolves nothing.
    let just_saved = matches!(
        extras.saved,
        Some(Saved::ServerAdded | Saved::ServerChanged)
    );
    let warnings = match server {
        Some(s) if just_saved => service::warnings_after_save(state, &s.settings, extras.egress),
        Some(s) => s.settings.warnings(),
        None => Vec::new(),
    };
    // The gateways the server may be pinned to.
    let gateways = store(state.store.list_gateways(tenant.id).await)?;
    let blank = AccountForm::default();
    let (account, account_problems) = match extras.account {
        Some((account, problems)) => (account, problems),
        None => (&blank, Problems::default()),
    };
    // The account form names the signed-in person once, as "(you)", and
    // chooses them unless another person was chosen.
    let my_person_id = me.session.principal.person().map(|p| p.id.to_string());
    Ok(page(
        "server_form.html",
        context! {
            server, form, problems, accounts, persons, warnings,
            account, account_problems, my_person_id, notice, gateways,
            presets => herald_core::presets::all(),
            preset => extras.preset,
            ..base(me, tenant, "servers")
        },
    ))
}

async fn new_server(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Query(query): Query<PresetQuery>,
) -> PageResult {
    let chosen = preset(query.preset.as_deref());
    let form = ServerForm::from_preset(chosen.as_ref().map(|p| &p["smtp_server"]));
    let extras = Extras {
        preset: chosen,
        ..Extras::default()
    };
    server_page(
        &state,
        &me,
        &tenant,
        None,
        &form,
        Problems::default(),
        extras,
    )
    .await
}

async fn create_server(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Form(form): Form<ServerForm>,
) -> PageResult {
    let outcome = async {
        let body = form.body(false).map_err(Problems::invalid)?;
        let server = service::create_server(&state, &me.caller, &tenant, body).await?;
        Ok(saved_path(&state, &tenant, &server).await)
    };
    submit(
        outcome,
        |path| Saved::ServerAdded.on(&path),
        |problems| {
            let extras = Extras::default();
            server_page(&state, &me, &tenant, None, &form, problems, extras)
        },
    )
    .await
}

/// The path of a server's page just after a save, with `?egress=<rule>` when
/// the egress guard refuses the server's host now (its name resolved within
/// the API's bound): what the page says, without resolving the name again
/// when it is visited.
async fn saved_path(state: &AppState, tenant: &Tenant, server: &SmtpServer) -> String {
    let path = format!("/t/{}/servers/{}", tenant.slug, server.id);
    let s = &server.settings;
    match service::egress_refusal(&state.egress, &s.host, s.port).await {
        Some(rule) => format!("{path}?egress={}", rule.code()),
        None => path,
    }
}

async fn edit_server(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<ServerId>,
    done: Done,
) -> PageResult {
    let server = store(state.store.server(tenant.id, id).await)?;
    let form = ServerForm::from_server(&server);
    let problems = Problems::default();
    server_page(
        &state,
        &me,
        &tenant,
        Some(&server),
        &form,
        problems,
        Extras {
            saved: done.saved(),
            egress: done.egress(),
            ..Extras::default()
        },
    )
    .await
}

async fn update_server(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<ServerId>,
    Form(form): Form<ServerForm>,
) -> PageResult {
    let server = store(state.store.server(tenant.id, id).await)?;
    let outcome = async {
        let body = form.body(true).map_err(Problems::invalid)?;
        let server = service::update_server(&state, &me.caller, &tenant, id, body).await?;
        Ok(saved_path(&state, &tenant, &server).await)
    };
    submit(
        outcome,
        |path| Saved::ServerChanged.on(&path),
        |problems| {
            let extras = Extras::default();
            server_page(&state, &me, &tenant, Some(&server), &form, problems, extras)
        },
    )
    .await
}

async fn delete_server(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<ServerId>,
) -> PageResult {
    let slug = tenant.slug.clone();
    service::delete_server(&state, &me.caller, &tenant, id).await?;
    Ok(see(Saved::ServerDeleted.on(&format!("/t/{slug}/servers"))))
}
