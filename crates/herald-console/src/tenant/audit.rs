//! A tenant's audit log: the latest changes, who made them and how.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use herald_api::AppState;
use herald_api::gate::TenantAdmin;
use minijinja::context;

use super::store;
use crate::gate::TenantPage;
use crate::pages::{PageResult, base};
use crate::render::page;

pub fn router() -> Router<AppState> {
    Router::new().route("/t/{tenant}/audit", get(audit))
}

async fn audit(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
) -> PageResult {
    let entries = store(state.store.list_audit(tenant.id, 200).await)?;
    Ok(page(
        "audit.html",
        context! { entries, ..base(&me, &tenant, "audit") },
    ))
}
