//! Persons of a tenant and API tokens: personal tokens act as their person,
//! service tokens send; every token is shown once and can be listed and revoked.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use herald_core::{PersonId, PersonRole, Role, TokenId, token};
use herald_store::{NewToken, Person, TokenRecord};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Check, name, path_id};
use crate::body::Body;
use crate::gate::{Authorised, TenantAdmin};
use crate::service::{create_person, set_person_password};
use crate::{ApiError, AppState};

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
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PersonBody {
    pub name: String,
    pub email: String,
    pub role: Option<String>,
}

async fn post_person(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    body: Body<PersonBody>,
) -> Result<(StatusCode, Json<Person>), ApiError> {
    let body = body.parse()?;
    let person = create_person(&state, &caller, &tenant, body).await?;
    Ok((StatusCode::CREATED, Json(person)))
}

async fn list_persons(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<TenantAdmin>,
) -> Result<Json<Vec<Person>>, ApiError> {
    Ok(Json(state.store.list_persons(tenant.id).await?))
}

async fn show_person(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<TenantAdmin>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Person>, ApiError> {
    Ok(Json(
        state
            .store
            .person(tenant.id, path_id(&id, "person")?)
            .await?,
    ))
}

async fn remove_person(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id: PersonId = path_id(&id, "person")?;
    state.store.delete_person(tenant.id, id).await?;
    caller
        .audit(
            &state,
            Some(tenant.id),
            "person.delete",
            Some(id.to_string()),
            json!({}),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password: String,
}

async fn put_password(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    Path((_, id)): Path<(String, String)>,
    body: Body<PasswordBody>,
) -> Result<StatusCode, ApiError> {
    let id: PersonId = path_id(&id, "person")?;
    let body = body.parse()?;
    set_person_password(&state, &caller, &tenant, id, &body.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
    role: Option<String>,
    person_id: Option<String>,
}

/// The most a personal token of a person with this role may do.
fn token_role(person: PersonRole) -> Role {
    match person {
        PersonRole::TenantAdmin => Role::TenantAdmin,
        PersonRole::Member => Role::Sender,
    }
}

async fn create_token(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    body: Body<TokenBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.parse()?;
    let mut check = Check::default();
    let name = check.take("name", name(&body.name));
    let role = match body.role.as_deref().map(Role::parse) {
        Some(Ok(Role::Operator)) | Some(Err(_)) => {
            check.fail("role", "must be one of: tenant_admin, sender");
            None
        }
        Some(Ok(role)) => Some(role),
        None => None,
    };
    let person_id = check.opt(
        "person_id",
        body.person_id.as_deref(),
        str::parse::<PersonId>,
    );
    check.finish()?;
    let name = name.expect("checked above");
    let role = match person_id {
        Some(person_id) => {
            let person = match state.store.person(tenant.id, person_id).await {
                Err(herald_store::StoreError::NotFound) => {
                    return Err(ApiError::field(
                        herald_core::Invalid::new("must name a person of this tenant")
                            .at("person_id"),
                    ));
                }
                other => other?,
            };
            let most = token_role(person.role);
            match role {
                Some(Role::TenantAdmin) if most != Role::TenantAdmin => {
                    return Err(ApiError::field(
                        herald_core::Invalid::new(
                            "may be tenant_admin only for a person whose role is tenant_admin",
                        )
                        .at("role"),
                    ));
                }
                Some(role) => role,
                None => most,
            }
        }
        None => match role {
            Some(Role::Sender) | None => Role::Sender,
            Some(_) => {
                return Err(ApiError::field(
                    herald_core::Invalid::new(
                        "tenant_admin needs a person_id: administrator tokens are personal",
                    )
                    .at("role"),
                ));
            }
        },
    };
    let secret = token::generate();
    let record = state
        .store
        .create_token(NewToken {
            id: TokenId::new(),
            tenant_id: Some(tenant.id),
            name,
            role,
            person_id,
            hash: token::hash(&secret),
        })
        .await?;
    caller
        .audit(
            &state,
            Some(tenant.id),
            "token.create",
            Some(record.id.to_string()),
            json!({"name": record.name, "role": record.role, "person_id": record.person_id}),
        )
        .await;
    let mut answer = serde_json::to_value(&record).map_err(|e| ApiError::Internal(e.into()))?;
    // The only time the token itself is ever shown.
    answer["token"] = Value::String(secret);
    Ok((StatusCode::CREATED, Json(answer)))
}

async fn list_tokens(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<TenantAdmin>,
) -> Result<Json<Vec<TokenRecord>>, ApiError> {
    Ok(Json(state.store.list_tokens(tenant.id).await?))
}

async fn revoke_token(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id: TokenId = path_id(&id, "token")?;
    state.store.revoke_token(tenant.id, id).await?;
    caller
        .audit(
            &state,
            Some(tenant.id),
            "token.revoke",
            Some(id.to_string()),
            json!({}),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}
