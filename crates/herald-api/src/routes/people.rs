//! Persons of a tenant and API tokens: personal tokens act as their person,
//! service tokens send; every token is shown once and can be listed and revoked.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use herald_core::{PersonId, TokenId};
use herald_store::{Person, TokenRecord};
use serde::Deserialize;
use serde_json::Value;

use super::{Id, shown_once};
use crate::body::Body;
use crate::gate::{Authorised, TenantAdmin};
use crate::openapi::{ObjectPath, TenantPath, answers};
use crate::service::{self, create_person, set_person_password};
use crate::{ApiError, AppState};

/// The OpenAPI paths of this module's routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    post_person,
    list_persons,
    show_person,
    remove_person,
    put_password,
    create_token,
    list_tokens,
    revoke_token
))]
pub(crate) struct Api;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/tenants/{tenant}/persons",
            post(post_person).get(list_persons),
        )
        .route(
            "/v1/tenants/{tenant}/persons/{id}",
            get(show_person).delete(remove_person),
        )
        .route(
            "/v1/tenants/{tenant}/persons/{id}/password",
            put(put_password),
        )
        .route(
            "/v1/tenants/{tenant}/tokens",
            post(create_token).get(list_tokens),
        )
        .route("/v1/tenants/{tenant}/tokens/{id}", delete(revoke_token))
}

/// A person to create; the role is `tenant_admin` or `member` (the default).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonBody {
    pub name: String,
    pub email: String,
    pub role: Option<String>,
}

handlers! {
    /// Creates a person of the tenant.
    #[utoipa::path(post, path = "/v1/tenants/{tenant}/persons", tag = "people", params(TenantPath),
        request_body = PersonBody,
        responses(
            (status = 201, description = "The person", body = answers::Person),
            (status = 409, description = "The e-mail address is taken", body = crate::openapi::Problem, content_type = "application/problem+json"),
        ))]
    async fn post_person(Authorised<TenantAdmin>, Body<PersonBody>) -> Created<Person> = create_person;

    /// Lists the tenant's persons.
    #[utoipa::path(get, path = "/v1/tenants/{tenant}/persons", tag = "people", params(TenantPath),
        responses((status = 200, description = "The persons", body = Vec<answers::Person>)))]
    async fn list_persons(Authorised<TenantAdmin>) -> Vec<Person> = store.list_persons;

    /// One person.
    #[utoipa::path(get, path = "/v1/tenants/{tenant}/persons/{id}", tag = "people", params(ObjectPath),
        responses((status = 200, description = "The person", body = answers::Person)))]
    async fn show_person(Authorised<TenantAdmin>, Id<PersonId>) -> Person = store.person;

    /// Deletes a person; their personal tokens go with them.
    #[utoipa::path(delete, path = "/v1/tenants/{tenant}/persons/{id}", tag = "people", params(ObjectPath),
        responses((status = 204, description = "Deleted")))]
    async fn remove_person(Authorised<TenantAdmin>, Id<PersonId>) -> Deleted = service::delete_person;
}

/// A person's console password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password: String,
}

/// Sets a person's console password.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/persons/{id}/password", tag = "people", params(ObjectPath),
    request_body = PasswordBody,
    responses((status = 204, description = "Set")))]
async fn put_password(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    Id(id): Id<PersonId>,
    body: Body<PasswordBody>,
) -> Result<StatusCode, ApiError> {
    let body = body.parse()?;
    set_person_password(&state, &caller, &tenant, id, &body.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A token to create: its name, its role (`sender` or `tenant_admin`) and,
/// for a personal token, its person.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    pub name: String,
    pub role: Option<String>,
    pub person_id: Option<String>,
}

/// Creates an API token of the tenant; the answer is the only time it is shown.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/tokens", tag = "people", params(TenantPath),
    request_body = TokenBody,
    responses((status = 201, description = "The token, with `token`", body = answers::Token)))]
async fn create_token(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    body: Body<TokenBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let created = service::create_token(&state, &caller, &tenant, body.parse()?).await?;
    let answer = shown_once(&created.record, "token", created.token)?;
    Ok((StatusCode::CREATED, Json(answer)))
}

handlers! {
    /// Lists the tenant's API tokens (never the tokens themselves).
    #[utoipa::path(get, path = "/v1/tenants/{tenant}/tokens", tag = "people", params(TenantPath),
        responses((status = 200, description = "The tokens", body = Vec<answers::Token>)))]
    async fn list_tokens(Authorised<TenantAdmin>) -> Vec<TokenRecord> = store.list_tokens;

    /// Revokes an API token of the tenant.
    #[utoipa::path(delete, path = "/v1/tenants/{tenant}/tokens/{id}", tag = "people", params(ObjectPath),
        responses((status = 204, description = "Revoked")))]
    async fn revoke_token(Authorised<TenantAdmin>, Id<TokenId>) -> Deleted = service::revoke_token;
}
