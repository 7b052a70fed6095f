//! The operator's own tokens: listed, created (shown once) and revoked.
//!
//! Tenants' tokens are managed under their tenant (`people`); these are the
//! tokens with the operator role, the bootstrap token among them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use herald_core::{Role, TokenId, token};
use herald_store::{NewToken, StoreError, TokenRecord};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Check, name, path_id};
use crate::auth::Caller;
use crate::body::Body;
use crate::openapi::answers;
use crate::{ApiError, AppState};

/// The OpenAPI paths of this module's routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list_tokens, create_token, revoke_token))]
pub(crate) struct Api;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/operator/tokens", get(list_tokens).post(create_token))
        .route("/v1/operator/tokens/{id}", delete(revoke_token))
}

/// What the operator sees of an operator token: never the token or its hash.
fn view(token: &TokenRecord) -> Value {
    json!({
        "id": token.id,
        "name": token.name,
        "created_at": herald_core::timestamp::rfc3339(token.created_at),
        "last_used_at": token.last_used_at.map(herald_core::timestamp::rfc3339),
        "bootstrap": token.bootstrap,
    })
}

/// Lists the operator tokens.
#[utoipa::path(get, path = "/v1/operator/tokens", tag = "operator",
    responses((status = 200, description = "The operator tokens", body = answers::OperatorTokenList)))]
async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.operator()?;
    let tokens = state.store.list_operator_tokens().await?;
    Ok(Json(json!({
        "tokens": tokens.iter().map(view).collect::<Vec<_>>(),
    })))
}

/// An operator token to create.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewTokenBody {
    /// What the token is for.
    name: String,
}

/// Creates an operator token; the answer is the only time it is shown.
#[utoipa::path(post, path = "/v1/operator/tokens", tag = "operator", request_body = NewTokenBody,
    responses((status = 201, description = "The token, with `token`", body = answers::OperatorToken)))]
async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    body: Body<NewTokenBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.operator()?;
    let body = body.parse()?;
    let mut check = Check::default();
    let token_name = check.take("name", name(&body.name));
    check.finish()?;
    let token_name = token_name.expect("checked above");
    let secret = token::generate();
    let record = state
        .store
        .create_token(NewToken {
            id: TokenId::new(),
            tenant_id: None,
            name: token_name,
            role: Role::Operator,
            person_id: None,
            hash: token::hash(&secret),
        })
        .await?;
    caller
        .audit(
            &state,
            None,
            "operator_token.create",
            Some(record.id.to_string()),
            json!({"name": record.name}),
        )
        .await;
    let mut answer = view(&record);
    // The only time the token itself is ever shown.
    answer["token"] = Value::String(secret);
    Ok((StatusCode::CREATED, Json(answer)))
}

/// Revokes an operator token.
///
/// The token that makes the request may revoke itself: an operator rotating tokens does exactly that last, and the
/// request that did it still gets its answer.
#[utoipa::path(delete, path = "/v1/operator/tokens/{id}", tag = "operator",
    params(("id" = String, Path, description = "The token's id")),
    responses((status = 204, description = "Revoked")))]
async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.operator()?;
    let id: TokenId = path_id(&id, "token")?;
    let tokens = state.store.list_operator_tokens().await?;
    let token = tokens
        .iter()
        .find(|t| t.id == id)
        .ok_or(ApiError::NotFound("token"))?;
    match state.store.revoke_operator_token(id).await {
        Err(StoreError::NotFound) => return Err(ApiError::NotFound("token")),
        other => other?,
    }
    caller
        .audit(
            &state,
            None,
            "operator_token.revoke",
            Some(id.to_string()),
            json!({"name": token.name, "bootstrap": token.bootstrap, "own": id == caller.0.id}),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}
