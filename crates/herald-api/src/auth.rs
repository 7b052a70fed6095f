//! Who is calling: the bearer token's role and tenant, and the checks every route makes.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use herald_core::{Role, TenantId, token};
use herald_store::{AuditEntry, Session, StoreError, Tenant, TokenRecord};
use serde_json::Value;

use crate::{ApiError, AppState};

/// The token a request presents as `Authorization: Bearer <token>`, trimmed;
/// `None` without one. The scheme is case-insensitive (RFC 9110 11.1).
pub(crate) fn bearer_token(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

/// The authenticated caller: its token, and the address it called from.
pub struct Caller(pub TokenRecord, pub Option<SocketAddr>);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let hash = presented_hash(parts)?;
        let record = state
            .store
            .token_by_hash(&hash)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Caller(record, remote_address(parts)))
    }
}

/// The hash of the bearer token a request presents; 401 without one.
pub(crate) fn presented_hash(parts: &Parts) -> Result<String, ApiError> {
    bearer_token(parts)
        .filter(|t| !t.is_empty())
        .map(token::hash)
        .ok_or(ApiError::Unauthorized)
}

/// The address a request came from, when the listener recorded it.
pub(crate) fn remote_address(parts: &Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0)
}

impl Caller {
    /// The caller behind a web console session: it acts with the role of its
    /// person as stored now (or as the operator), like a personal token would.
    pub fn from_session(session: &Session, remote: Option<SocketAddr>) -> Caller {
        let name = match session.principal.operator_email() {
            Some(email) => format!("console session of {email}"),
            None => "console session".to_owned(),
        };
        let person = session.principal.person();
        let record = TokenRecord {
            id: session.id,
            tenant_id: person.map(|p| p.tenant_id),
            name,
            role: session.role(),
            person_id: person.map(|p| p.id),
            created_at: session.created_at,
            last_used_at: None,
            bootstrap: false,
        };
        Caller(record, remote)
    }

    pub fn is_operator(&self) -> bool {
        self.0.role == Role::Operator
    }

    /// Whether the caller may read a test message's diagnosis: the AUTH user
    /// name and every reply of the tenant's server are for the people who
    /// configure servers (tenant administrators and the operator), not for
    /// members and senders. The API and the console both ask here.
    pub fn sees_diagnosis(&self) -> bool {
        matches!(self.0.role, Role::Operator | Role::TenantAdmin)
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
    ///
    /// Only the tenant gate ([`crate::gate`]) calls this, so every route and
    /// every console page authorises the same way, before its handler runs.
    pub(crate) async fn tenant(
        &self,
        state: &AppState,
        slug: &str,
        roles: &[Role],
    ) -> Result<Tenant, ApiError> {
        let tenant = match state.store.tenant_by_slug(slug).await {
            Err(StoreError::NotFound) => None,
            other => Some(other?),
        };
        self.admit(tenant, roles)
    }

    /// Whether the caller may act on `tenant` (`None`: no tenant has the
    /// path's slug) with one of `roles`: the tenant if so; the same 404 for
    /// another tenant as for a missing one, 403 for a role too low.
    pub(crate) fn admit(&self, tenant: Option<Tenant>, roles: &[Role]) -> Result<Tenant, ApiError> {
        let tenant = tenant.ok_or(ApiError::NotFound("tenant"))?;
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

    /// Records a change in the audit log. The change is already committed, so a
    /// failure to record it is logged loudly rather than reported to the caller.
    /// [`Caller::audit`] of a change to one object of a tenant.
    pub async fn audit_tenant(
        &self,
        state: &AppState,
        tenant: TenantId,
        action: &str,
        object: impl ToString,
        details: Value,
    ) {
        self.audit(
            state,
            Some(tenant),
            action,
            Some(object.to_string()),
            details,
        )
        .await;
    }

    pub async fn audit(
        &self,
        state: &AppState,
        tenant: Option<TenantId>,
        action: &str,
        object: Option<String>,
        details: Value,
    ) {
        let token = &self.0;
        let actor = match token.person_id {
            Some(person) => format!("{} token {:?} of person {person}", token.role, token.name),
            None => format!("{} token {:?}", token.role, token.name),
        };
        let entry = AuditEntry {
            tenant_id: tenant,
            at: herald_core::timestamp::now_ms(),
            actor,
            token_id: Some(token.id),
            remote_addr: self.1.map(|a| a.to_string()),
            action: action.to_owned(),
            object_id: object,
            details,
        };
        if let Err(error) = state.store.audit(entry).await {
            tracing::error!(%error, action, "could not record an audit entry");
        }
    }
}
