//! Who is calling: the bearer token's role and tenant, and the checks every route makes.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use herald_core::{Role, token};
use herald_store::{StoreError, Tenant, TokenRecord};

use crate::{ApiError, AppState};

/// The authenticated caller.
pub struct Caller(pub TokenRecord);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            // The scheme is case-insensitive (RFC 9110 11.1).
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let record = state
            .store
            .token_by_hash(&token::hash(presented))
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Caller(record))
    }
}

impl Caller {
    pub fn is_operator(&self) -> bool {
        self.0.role == Role::Operator
    }

    /// Requires the operator role.
    pub fn operator(&self) -> Result<(), ApiError> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this requires an operator token".into(),
            ))
        }
    }

    /// Loads the tenant named in the path and checks that the caller may act
    /// on it with one of `roles` (the operator always may).
    ///
    /// Another tenant's slug answers 404 exactly like a missing one, so a
    /// token never learns which other tenants exist.
    pub async fn tenant(
        &self,
        state: &AppState,
        slug: &str,
        roles: &[Role],
    ) -> Result<Tenant, ApiError> {
        let tenant = match state.store.tenant_by_slug(slug).await {
            Err(StoreError::NotFound) => return Err(ApiError::NotFound("tenant")),
            other => other?,
        };
        if self.is_operator() {
            return Ok(tenant);
        }
        if self.0.tenant_id != Some(tenant.id) {
            return Err(ApiError::NotFound("tenant"));
        }
        if !roles.contains(&self.0.role) {
            let allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            return Err(ApiError::Forbidden(format!(
                "a {} token may not do this; it needs one of: operator, {}",
                self.0.role,
                allowed.join(", ")
            )));
        }
        Ok(tenant)
    }
}
