//! A tenant's pages, one module per resource like the API's `routes/`: the
//! route table, the dashboard, and the helpers every tenant page shares.
//!
//! Each handler receives its tenant through the [`TenantPage`](crate::gate::TenantPage) extractor (role
//! and tenant isolation: another tenant's pages are 404), so none can skip
//! the check, and acts through the API's services; every form's POST answers
//! through [`crate::pages::submit`].

mod accounts;
mod audit;
mod checklist;
mod gateways;
mod messages;
mod people;
mod properties;
mod providers;
mod schedules;
mod servers;
mod smtp;
mod templates;
mod test_messages;
mod tokens;
mod webhooks;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use herald_api::gate::Sender;
use herald_api::{ApiError, AppState, service};
use herald_core::Role;
use herald_core::timestamp::now_ms;
use herald_store::NodeRecord;
use minijinja::{Value, context};

use crate::gate::TenantPage;
use crate::pages::{PageResult, base};
use crate::render::{PageError, page};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/{tenant}", get(dashboard))
        .merge(servers::router())
        .merge(accounts::router())
        .merge(providers::router())
        .merge(test_messages::router())
        .merge(properties::router())
        .merge(messages::router())
        .merge(audit::router())
        .merge(people::router())
        .merge(tokens::router())
        .merge(smtp::router())
        .merge(webhooks::router())
        .merge(templates::router())
        .merge(schedules::router())
        .merge(gateways::router())
}

/// An id from the path; a malformed one names nothing, so it is a 404.
fn path_id<T: std::str::FromStr>(raw: &str, what: &'static str) -> Result<T, PageError> {
    raw.parse().map_err(|_| PageError(ApiError::NotFound(what)))
}

fn store<T>(result: herald_store::Result<T>) -> Result<T, PageError> {
    result.map_err(|e| PageError(e.into()))
}

/// How many nodes with the worker role are alive, by the API's one rule.
fn alive_workers(state: &AppState, nodes: &[NodeRecord]) -> usize {
    let now = now_ms();
    nodes
        .iter()
        .filter(|n| {
            n.roles.contains(&herald_core::NodeRole::Worker)
                && herald_api::is_alive(n, now, state.alive_within)
        })
        .count()
}

async fn dashboard(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<Sender>,
) -> PageResult {
    let since = now_ms() - 24 * 3_600_000;
    let counts = store(state.store.count_messages(tenant.id, since).await)?;
    let nodes = store(state.store.list_nodes().await)?;
    let admin = me.caller.is_operator() || me.session.role() == Role::TenantAdmin;
    let (servers, providers, properties, checklist) = if admin {
        (
            store(state.store.list_servers(tenant.id).await)?.len(),
            store(state.store.list_providers(tenant.id).await)?.len(),
            Value::from_serialize(service::properties(&state, &tenant).await?),
            Value::from_serialize(checklist::checklist(&state, &tenant).await?),
        )
    } else {
        (0, 0, Value::from(()), Value::from(()))
    };
    Ok(page(
        "dashboard.html",
        context! {
            servers, providers, properties, checklist,
            queued => counts.queued + counts.sending,
            deferred => counts.deferred,
            failed => counts.failed,
            sent => counts.sent,
            workers => alive_workers(&state, &nodes),
            ..base(&me, &tenant, "dashboard")
        },
    ))
}
