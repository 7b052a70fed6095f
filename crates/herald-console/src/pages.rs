//! What every page shares: the context of the signed-in person and tenant,
//! the home page that sends each person where they work, and small helpers.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use herald_api::AppState;
use herald_store::Tenant;
use minijinja::{Value, context};

use crate::render::PageError;
use crate::session::Signed;

/// The context every tenant page starts from.
pub fn base(me: &Signed, tenant: &Tenant, nav: &str) -> Value {
    context! {
        me => me.me(),
        csrf => me.csrf.clone(),
        csrf_header => crate::session::CSRF_HEADER,
        tenant => context! {
            slug => tenant.slug.clone(),
            name => tenant.name.clone(),
            credential_storage => tenant.credential_storage,
        },
        nav,
    }
}

/// The context of an operator page (no tenant).
pub fn operator_base(me: &Signed, nav: &str) -> Value {
    context! {
        me => me.me(),
        csrf => me.csrf.clone(),
        csrf_header => crate::session::CSRF_HEADER,
        nav,
    }
}

/// `/`: the operator's overview, or the dashboard of the person's tenant.
pub async fn home(State(state): State<AppState>, me: Signed) -> Result<Response, PageError> {
    match &me.session.person {
        None => Ok(Redirect::to("/operator/tenants").into_response()),
        Some(person) => {
            // The store finds tenants by slug; the session knows the id.
            let tenants = state
                .store
                .list_tenants()
                .await
                .map_err(|e| PageError(e.into()))?;
            let tenant = tenants
                .into_iter()
                .find(|t| t.id == person.tenant_id)
                .ok_or(PageError(herald_api::ApiError::NotFound("tenant")))?;
            Ok(Redirect::to(&format!("/t/{}", tenant.slug)).into_response())
        }
    }
}

/// A redirect after a successful POST (303, so the browser GETs the page).
pub fn see(path: String) -> Response {
    Redirect::to(&path).into_response()
}
