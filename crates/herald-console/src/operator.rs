//! The operator's pages: tenants (create, open, grant the credential storage
//! entitlement) and the nodes of the installation.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Form, Router};
use herald_api::gate::Operator;
use herald_api::{AppState, service};
use herald_core::timestamp::now_ms;
use minijinja::context;
use serde::{Deserialize, Serialize};

use crate::forms::Problems;
use crate::gate::TenantPage;
use crate::notice::{Done, Notice, Saved};
use crate::pages::{PageResult, operator_base, see, submit};
use crate::render::{PageError, page};
use crate::session::Signed;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/operator/tenants", get(tenants).post(create_tenant))
        .route(
            "/operator/tenants/{tenant}/entitlements",
            post(set_entitlements),
        )
        .route("/operator/nodes", get(nodes))
}

#[derive(Deserialize, Serialize, Default)]
#[serde(default)]
struct TenantForm {
    slug: String,
    name: String,
}

async fn tenants_page(
    state: &AppState,
    me: &Signed,
    form: &TenantForm,
    problems: Problems,
    notice: Option<Notice>,
) -> PageResult {
    me.caller.operator()?;
    let tenants = state
        .store
        .list_tenants()
        .await
        .map_err(|e| PageError(e.into()))?;
    Ok(page(
        "tenants.html",
        context! { tenants, form, problems, notice, ..operator_base(me, "tenants") },
    ))
}

async fn tenants(State(state): State<AppState>, me: Signed, done: Done) -> PageResult {
    let notice = done.notice(&[
        (
            Saved::TenantAdded,
            "Tenant added. Grant it credential storage if its servers need passwords, then give its administrator a console password on its Persons page.",
        ),
        (Saved::EntitlementsChanged, "Entitlements saved."),
    ]);
    let form = TenantForm::default();
    tenants_page(&state, &me, &form, Problems::default(), notice).await
}

async fn create_tenant(
    State(state): State<AppState>,
    me: Signed,
    Form(form): Form<TenantForm>,
) -> PageResult {
    submit(
        service::create_tenant(&state, &me.caller, form.slug.trim(), &form.name),
        |_| Saved::TenantAdded.on("/operator/tenants"),
        |problems| tenants_page(&state, &me, &form, problems, None),
    )
    .await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EntitlementsForm {
    /// A checkbox: present when ticked.
    credential_storage: Option<String>,
}

async fn set_entitlements(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<Operator>,
    Form(form): Form<EntitlementsForm>,
) -> PageResult {
    service::set_entitlements(
        &state,
        &me.caller,
        &tenant,
        form.credential_storage.is_some(),
    )
    .await?;
    Ok(see(Saved::EntitlementsChanged.on("/operator/tenants")))
}

async fn nodes(State(state): State<AppState>, me: Signed) -> PageResult {
    me.caller.operator()?;
    let now = now_ms();
    let nodes: Vec<_> = state
        .store
        .list_nodes()
        .await
        .map_err(|e| PageError(e.into()))?
        .into_iter()
        .map(|node| {
            let alive = herald_api::is_alive(&node, now, state.alive_within);
            context! { node, alive }
        })
        .collect();
    Ok(page(
        "nodes.html",
        context! { nodes, ..operator_base(&me, "nodes") },
    ))
}
