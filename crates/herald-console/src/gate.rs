//! The console's side of the one tenant gate: an extractor that loads the
//! `{tenant}` of the path for the signed-in session before a page runs, by the
//! API's rule ([`herald_api::gate::path_tenant`]), so no page can skip it.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::Response;
use herald_api::AppState;
use herald_api::gate::{Gate, path_tenant};
use herald_store::Tenant;

use crate::render::PageError;
use crate::session::Signed;

/// A page of a tenant the session may see with the roles of `R`: without a
/// session it redirects to the sign-in page, for a role too low it is 403,
/// and for another tenant the same 404 as for a missing one.
pub struct TenantPage<R: Gate> {
    pub me: Signed,
    pub tenant: Tenant,
    role: PhantomData<R>,
}

impl<R: Gate> FromRequestParts<AppState> for TenantPage<R> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let me = Signed::from_request_parts(parts, state).await?;
        let tenant = path_tenant::<R, PageError>(parts, state, &me.caller).await?;
        Ok(TenantPage {
            me,
            tenant,
            role: PhantomData,
        })
    }
}
