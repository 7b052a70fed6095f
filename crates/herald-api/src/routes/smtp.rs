//! A tenant's SMTP credentials and IP connectors, for the SMTP submission listener.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use herald_core::{SmtpConnectorId, SmtpCredentialId};
use herald_store::{SmtpConnector, SmtpCredential};
use serde::Deserialize;
use serde_json::Value;

use super::shown_once;
use crate::body::Body;
use crate::gate::{Authorised, TenantAdmin};
use crate::openapi::{ObjectPath, TenantPath, answers};
use crate::service;
use crate::{ApiError, AppState};

/// The OpenAPI paths of this module's routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    create_credential,
    list_credentials,
    revoke_credential,
    create_connector,
    list_connectors,
    delete_connector
))]
pub(crate) struct Api;

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
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialBody {
    pub name: String,
    pub rate_limit_per_minute: Option<u32>,
}

/// An IP connector to create: its networks need no AUTH.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorBody {
    pub name: String,
    pub cidrs: Vec<String>,
    pub rate_limit_per_minute: Option<u32>,
}

/// Creates an SMTP credential; the answer is the only time its password is shown.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/smtp-credentials", tag = "smtp", params(TenantPath),
    request_body = CredentialBody,
    responses((status = 201, description = "The credential, with `password`", body = answers::SmtpCredential)))]
async fn create_credential(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    body: Body<CredentialBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let created = service::create_smtp_credential(&state, &caller, &tenant, body.parse()?).await?;
    let answer = shown_once(&created.record, "password", created.password)?;
    Ok((StatusCode::CREATED, Json(answer)))
}

handlers! {
    /// Lists the tenant's SMTP credentials (never their passwords).
    #[utoipa::path(get, path = "/v1/tenants/{tenant}/smtp-credentials", tag = "smtp", params(TenantPath),
        responses((status = 200, description = "The credentials", body = Vec<answers::SmtpCredential>)))]
    async fn list_credentials(Authorised<TenantAdmin>) -> Vec<SmtpCredential> = store.list_smtp_credentials;

    /// Revokes an SMTP credential.
    #[utoipa::path(delete, path = "/v1/tenants/{tenant}/smtp-credentials/{id}", tag = "smtp", params(ObjectPath),
        responses((status = 204, description = "Revoked")))]
    async fn revoke_credential(Authorised<TenantAdmin>, Id<SmtpCredentialId>) -> Deleted = service::revoke_smtp_credential;
}

handlers! {
    /// Creates an IP connector.
    #[utoipa::path(post, path = "/v1/tenants/{tenant}/smtp-connectors", tag = "smtp", params(TenantPath),
        request_body = ConnectorBody,
        responses(
            (status = 201, description = "The connector", body = answers::SmtpConnector),
            (status = 409, description = "A network is another connector's", body = crate::openapi::Problem, content_type = "application/problem+json"),
        ))]
    async fn create_connector(Authorised<TenantAdmin>, Body<ConnectorBody>) -> Created<SmtpConnector> = service::create_smtp_connector;

    /// Lists the tenant's IP connectors.
    #[utoipa::path(get, path = "/v1/tenants/{tenant}/smtp-connectors", tag = "smtp", params(TenantPath),
        responses((status = 200, description = "The connectors", body = Vec<answers::SmtpConnector>)))]
    async fn list_connectors(Authorised<TenantAdmin>) -> Vec<SmtpConnector> = store.list_smtp_connectors;

    /// Deletes an IP connector.
    #[utoipa::path(delete, path = "/v1/tenants/{tenant}/smtp-connectors/{id}", tag = "smtp", params(ObjectPath),
        responses((status = 204, description = "Deleted")))]
    async fn delete_connector(Authorised<TenantAdmin>, Id<SmtpConnectorId>) -> Deleted = service::delete_smtp_connector;
}
