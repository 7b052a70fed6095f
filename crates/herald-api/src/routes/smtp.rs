//! A tenant's SMTP credentials and IP connectors, for the SMTP submission listener.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use herald_core::{SmtpConnectorId, SmtpCredentialId};
use herald_store::{SmtpConnector, SmtpCredential};
use serde::Deserialize;
use serde_json::{Value, json};

use super::path_id;
use crate::body::Body;
use crate::gate::{Authorised, TenantAdmin};
use crate::service;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/tenants/{tenant}/smtp-credentials",
            post(create_credential).get(list_credentials),
        )
        .route(
            "/v1/tenants/{tenant}/smtp-credentials/{id}",
            delete(revoke_credential),
        )
        .route(
            "/v1/tenants/{tenant}/smtp-connectors",
            post(create_connector).get(list_connectors),
        )
        .route(
            "/v1/tenants/{tenant}/smtp-connectors/{id}",
            delete(delete_connector),
        )
}

/// An SMTP credential to create: a name that says which application uses it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CredentialBody {
    pub name: String,
    pub rate_limit_per_minute: Option<u32>,
}

/// An IP connector to create: its networks need no AUTH.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConnectorBody {
    pub name: String,
    pub cidrs: Vec<String>,
    pub rate_limit_per_minute: Option<u32>,
}

async fn create_credential(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    body: Body<CredentialBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let created = service::create_smtp_credential(&state, &caller, &tenant, body.parse()?).await?;
    let mut answer =
        serde_json::to_value(&created.record).map_err(|e| ApiError::Internal(e.into()))?;
    // The only time the password is ever shown.
    answer["password"] = Value::String(created.password);
    Ok((StatusCode::CREATED, Json(answer)))
}

async fn list_credentials(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<TenantAdmin>,
) -> Result<Json<Vec<SmtpCredential>>, ApiError> {
    Ok(Json(state.store.list_smtp_credentials(tenant.id).await?))
}

async fn revoke_credential(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id: SmtpCredentialId = path_id(&id, "SMTP credential")?;
    service::revoke_smtp_credential(&state, &caller, &tenant, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_connector(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    body: Body<ConnectorBody>,
) -> Result<(StatusCode, Json<SmtpConnector>), ApiError> {
    let connector = service::create_smtp_connector(&state, &caller, &tenant, body.parse()?).await?;
    Ok((StatusCode::CREATED, Json(connector)))
}

async fn list_connectors(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<TenantAdmin>,
) -> Result<Json<Value>, ApiError> {
    let connectors = state.store.list_smtp_connectors(tenant.id).await?;
    Ok(Json(json!(connectors)))
}

async fn delete_connector(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id: SmtpConnectorId = path_id(&id, "SMTP connector")?;
    service::delete_smtp_connector(&state, &caller, &tenant, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
