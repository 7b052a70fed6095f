//! A tenant's message templates: saved, versioned, previewed with data.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_core::TemplateId;
use herald_store::Template;
use serde::Deserialize;
use serde_json::Value;

use super::Id;
use crate::body::Body;
use crate::gate::{Authorised, Sender, TenantAdmin};
use crate::openapi::{ObjectPath, TenantPath, answers};
use crate::service;
use crate::template::Rendered;
use crate::{ApiError, AppState};

/// The OpenAPI paths of this module's routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create, list, show, update, remove, preview))]
pub(crate) struct Api;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{tenant}/templates", post(create).get(list))
        .route(
            "/v1/tenants/{tenant}/templates/{id}",
            get(show).patch(update).delete(remove),
        )
        .route("/v1/tenants/{tenant}/templates/{id}/preview", post(preview))
}

/// A template's fields; all optional so the same shape serves create and
/// PATCH. Creating one needs `name`, `subject` and `text` or `html`. The
/// parts are MiniJinja: `{{ name }}`, `{% if %}`, `{% for %}`, filters;
/// `html` is HTML-escaped, `subject` and `text` are not. In a PATCH a blank
/// `description`, `text` or `html` removes it.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// Unique within the tenant; messages and schedules may name a template by it.
    pub name: Option<String>,
    pub description: Option<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
}

/// The variables to render with.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewBody {
    /// A JSON object; `{}` when absent.
    #[schema(value_type = Object)]
    #[serde(default, deserialize_with = "crate::body::unique_keys")]
    pub data: Option<Value>,
}

handlers! {
    /// Creates a template (version 1); every part must compile.
    #[utoipa::path(post, path = "/v1/tenants/{tenant}/templates", tag = "templates", params(TenantPath),
        request_body = TemplateBody,
        responses(
            (status = 201, description = "The template", body = answers::Template),
            (status = 422, description = "A field broke its rule; a syntax error names the part, line and column", body = crate::openapi::Problem, content_type = "application/problem+json"),
        ))]
    async fn create(Authorised<TenantAdmin>, Body<TemplateBody>) -> Created<Template> = service::create_template;

    /// Lists the tenant's templates by name, each at its current version.
    #[utoipa::path(get, path = "/v1/tenants/{tenant}/templates", tag = "templates", params(TenantPath),
        responses((status = 200, description = "The templates", body = Vec<answers::Template>)))]
    async fn list(Authorised<Sender>) -> Vec<Template> = store.list_templates;

    /// One template at its current version.
    #[utoipa::path(get, path = "/v1/tenants/{tenant}/templates/{id}", tag = "templates", params(ObjectPath),
        responses((status = 200, description = "The template", body = answers::Template)))]
    async fn show(Authorised<Sender>, Id<TemplateId>) -> Template = store.template;

    /// Changes a template; the result is its next version. Mail already queued
    /// keeps what it was rendered to.
    #[utoipa::path(patch, path = "/v1/tenants/{tenant}/templates/{id}", tag = "templates", params(ObjectPath),
        request_body = TemplateBody,
        responses(
            (status = 200, description = "The template at its new version", body = answers::Template),
            (status = 422, description = "A field broke its rule; a syntax error names the part, line and column", body = crate::openapi::Problem, content_type = "application/problem+json"),
        ))]
    async fn update(Authorised<TenantAdmin>, Id<TemplateId>, Body<TemplateBody>) -> Template = service::update_template;

    /// Deletes a template; refused (409) while a schedule uses it.
    #[utoipa::path(delete, path = "/v1/tenants/{tenant}/templates/{id}", tag = "templates", params(ObjectPath),
        responses(
            (status = 204, description = "Deleted"),
            (status = 409, description = "A schedule uses it", body = crate::openapi::Problem, content_type = "application/problem+json"),
        ))]
    async fn remove(Authorised<TenantAdmin>, Id<TemplateId>) -> Deleted = service::delete_template;
}

/// Renders the template with `data` as a message would be, without sending anything.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/templates/{id}/preview", tag = "templates", params(ObjectPath),
    request_body(content = Option<PreviewBody>, description = "Optional"),
    responses(
        (status = 200, description = "The rendered subject, text and html", body = Rendered),
        (status = 422, description = "`data` lacks a variable the template uses, or rendering failed", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn preview(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<Sender>,
    Id(id): Id<TemplateId>,
    body: Body<PreviewBody>,
) -> Result<Json<Rendered>, ApiError> {
    let body: PreviewBody = body.parse_or_default()?;
    let template = state.store.template(tenant.id, id).await?;
    let data = body
        .data
        .unwrap_or_else(|| Value::Object(Default::default()));
    let (rendered, _) = service::templates::render(&state, &template, &data).await?;
    Ok(Json(rendered))
}
