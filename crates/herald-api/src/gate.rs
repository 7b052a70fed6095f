//! The one tenant gate: an extractor that authorises the caller for the
//! `{tenant}` of the path before a handler runs, so no handler can forget to.
//!
//! A handler that acts on a tenant takes [`Authorised<R>`], where `R` names
//! who may pass ([`Sender`], [`TenantAdmin`], [`Operator`]); it receives the
//! tenant already loaded and the caller to audit through. The web console
//! passes its sessions through the same rule with [`path_tenant`].

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use herald_core::Role;
use herald_store::Tenant;

use crate::auth::{presented_hash, remote_address};
use crate::{ApiError, AppState, Caller};

/// Who may pass the gate for one route: the roles of the tenant's own tokens
/// that may (the operator always may).
pub trait Gate: Send + Sync + 'static {
    /// The tenant roles admitted besides the operator.
    const ROLES: &'static [Role];
    /// Whether only the operator may pass. A tenant's own token is then refused
    /// with 403 before the tenant is looked at, as operator-only routes always did.
    const OPERATOR_ONLY: bool = false;
}

/// Tenant administrators and senders: reading the tenant, its messages and
/// captured mail, and submitting messages.
pub struct Sender;

/// Tenant administrators only: servers, providers, people, tokens, properties, audit.
pub struct TenantAdmin;

/// The operator only: entitlements.
pub struct Operator;

impl Gate for Sender {
    const ROLES: &'static [Role] = &[Role::TenantAdmin, Role::Sender];
}

impl Gate for TenantAdmin {
    const ROLES: &'static [Role] = &[Role::TenantAdmin];
}

impl Gate for Operator {
    const ROLES: &'static [Role] = &[];
    const OPERATOR_ONLY: bool = true;
}

/// Loads the tenant named `slug` for `caller` if gate `R` lets it pass: 403
/// for a role too low, and the same 404 for another tenant as for a missing
/// one, so a token never learns which other tenants exist.
pub async fn authorise<R: Gate>(
    state: &AppState,
    caller: &Caller,
    slug: &str,
) -> Result<Tenant, ApiError> {
    if R::OPERATOR_ONLY {
        caller.operator()?;
    }
    caller.tenant(state, slug, R::ROLES).await
}

/// The `{tenant}` segment of the matched route, percent-decoded.
///
/// A route without one is a programming error, answered as a missing tenant.
pub async fn tenant_slug<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<String, Response> {
    let params = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    params
        .iter()
        .find(|(name, _)| *name == "tenant")
        .map(|(_, value)| value.to_owned())
        .ok_or_else(|| ApiError::NotFound("tenant").into_response())
}

/// The tenant of the path, loaded for `caller` if gate `R` lets it pass; a
/// refusal is answered as `E` (the API's problem, the console's page). The
/// API's [`Authorised`] and the console's pages take it once they know the caller.
pub async fn path_tenant<R: Gate, E: From<ApiError> + IntoResponse>(
    parts: &mut Parts,
    state: &AppState,
    caller: &Caller,
) -> Result<Tenant, Response> {
    let slug = tenant_slug(parts, state).await?;
    authorise::<R>(state, caller, &slug)
        .await
        .map_err(|e| E::from(e).into_response())
}

/// An authorised request: the caller, and the tenant of the path it may act on
/// with the roles of `R`. Extracting it answers 401 without a valid token,
/// 403 for a role `R` does not admit, and 404 for another or a missing tenant.
pub struct Authorised<R: Gate> {
    pub caller: Caller,
    pub tenant: Tenant,
    role: PhantomData<R>,
}

impl<R: Gate> FromRequestParts<AppState> for Authorised<R> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        // The token first: without one, nothing about the path is answered.
        let hash = presented_hash(parts).map_err(IntoResponse::into_response)?;
        let slug = tenant_slug(parts, state).await?;
        // The token and the tenant in one lookup (each request makes it).
        let refused = |e: ApiError| e.into_response();
        let (record, tenant) = state
            .store
            .token_and_tenant(&hash, &slug)
            .await
            .map_err(|e| refused(e.into()))?
            .ok_or_else(|| refused(ApiError::Unauthorized))?;
        let caller = Caller(record, remote_address(parts));
        if R::OPERATOR_ONLY {
            caller.operator().map_err(refused)?;
        }
        let tenant = caller.admit(tenant, R::ROLES).map_err(refused)?;
        Ok(Authorised {
            caller,
            tenant,
            role: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// No handler loads its tenant itself: every route that names a tenant
    /// takes [`super::Authorised`], so none can forget the check.
    #[test]
    fn no_route_reads_the_tenant_of_its_path_itself() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/routes");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).expect("the routes directory") {
            let path = entry.expect("a directory entry").path();
            let source = std::fs::read_to_string(&path).expect("a route source");
            for (number, line) in source.lines().enumerate() {
                let bypass = line.contains(".tenant(") || line.contains("Path(slug)");
                assert!(
                    !bypass,
                    "{}:{}: loads the tenant around the gate: {line}",
                    path.display(),
                    number + 1
                );
            }
            checked += 1;
        }
        assert!(checked > 5, "read only {checked} route files");
    }
}
