//! What every page shares: the context of the signed-in person and tenant,
//! the home page that sends each person where they work, and small helpers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use herald_api::{ApiError, AppState};
use herald_store::Tenant;
use minijinja::{Value, context};

use crate::forms::Problems;
use crate::render::PageError;
use crate::session::Signed;

/// What a page handler answers: the page, or an error shown as a page.
pub type PageResult = Result<Response, PageError>;

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
    match me.session.principal.person() {
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

/// What every form's POST does: wait for the service's `outcome`; on success
/// redirect (303) to `done`'s path, else render the form `again` with the
/// API's field errors beside the fields (and anything else as the page's
/// general error), answered with the error's status (422 for field errors).
/// `again` keeps what was typed, since it renders the form it was given.
pub async fn submit<T, Again>(
    outcome: impl Future<Output = Result<T, ApiError>>,
    done: impl FnOnce(T) -> String,
    again: impl FnOnce(Problems) -> Again,
) -> PageResult
where
    Again: Future<Output = PageResult>,
{
    submit_then(outcome, |value| async move { Ok(see(done(value))) }, again).await
}

/// [`submit`] for a form whose success is a page of its own rather than a
/// redirect: the one answer that may show a token just created, which must
/// never travel in a URL.
pub async fn submit_then<T, Shown, Again>(
    outcome: impl Future<Output = Result<T, ApiError>>,
    show: impl FnOnce(T) -> Shown,
    again: impl FnOnce(Problems) -> Again,
) -> PageResult
where
    Shown: Future<Output = PageResult>,
    Again: Future<Output = PageResult>,
{
    match outcome.await {
        Ok(value) => show(value).await,
        Err(error) => refused(error, again).await,
    }
}

/// The page `again` renders with why `error` refused what was asked (field
/// errors beside the fields, anything else as the page's general error),
/// answered with the error's status (422 for field errors). [`submit`] does
/// this with every refusal; a handler that shows only some of them on its
/// page (and the others as the error page) calls it for those.
pub async fn refused<Again>(error: ApiError, again: impl FnOnce(Problems) -> Again) -> PageResult
where
    Again: Future<Output = PageResult>,
{
    let (status, problems) = Problems::from_api(error);
    let mut response = again(problems).await?;
    // A page that failed to render keeps its own (5xx) status.
    if response.status() == StatusCode::OK {
        *response.status_mut() = status;
    }
    Ok(response)
}
