//! A tenant's audit log: the latest changes, who made them and how.

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use herald_api::AppState;
use minijinja::context;

use super::{ADMIN, store, tenant};
use crate::pages::{PageResult, base};
use crate::render::page;
use crate::session::Signed;

pub fn router() -> Router<AppState> {
    Router::new().route("/t/{tenant}/audit", get(audit))
}

async fn audit(State(state): State<AppState>, me: Signed, Path(slug): Path<String>) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let entries = store(state.store.list_audit(tenant.id, 200).await)?;
    Ok(page(
        "audit.html",
        context! { entries, ..base(&me, &tenant, "audit") },
    ))
}
