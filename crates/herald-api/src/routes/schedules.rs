//! A tenant's recurring schedules: a cron expression in a time zone, a
//! template and its data, recipients; their firings; a run on demand.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_core::ScheduleId;
use herald_store::{Schedule, ScheduleRun};
use serde::Deserialize;
use serde_json::Value;

use super::{Id, newest_limit, query_params};
use crate::gate::{Authorised, TenantAdmin};
use crate::openapi::{ObjectPath, TenantPath, answers};
use crate::service;
use crate::{ApiError, AppState};

/// The OpenAPI paths of this module's routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create, list, show, update, remove, run, runs))]
pub(crate) struct Api;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{tenant}/schedules", post(create).get(list))
        .route(
            "/v1/tenants/{tenant}/schedules/{id}",
            get(show).patch(update).delete(remove),
        )
        .route("/v1/tenants/{tenant}/schedules/{id}/run", post(run))
        .route("/v1/tenants/{tenant}/schedules/{id}/runs", get(runs))
}

/// A schedule's fields; all optional so the same shape serves create and
/// PATCH. Creating one needs `name`, `cron` and `template`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    pub name: Option<String>,
    /// Five fields (minute hour day-of-month month day-of-week) or six
    /// (seconds first), e.g. `0 9 * * 1-5`.
    pub cron: Option<String>,
    /// An IANA time zone, e.g. `Europe/Berlin`; `UTC` when absent. A local
    /// time that does not exist (clocks go forward) is skipped; one that
    /// happens twice (clocks go back) fires once.
    pub timezone: Option<String>,
    /// The template's name or id.
    pub template: Option<String>,
    /// The template's variables: a JSON object.
    #[schema(value_type = Option<Object>)]
    #[serde(default, deserialize_with = "crate::body::unique_keys")]
    pub data: Option<Value>,
    /// Mailboxes; with none in to, cc and bcc, the provider's fallback recipient.
    pub to: Option<Vec<String>>,
    pub cc: Option<Vec<String>>,
    pub bcc: Option<Vec<String>>,
    /// True unless given.
    pub enabled: Option<bool>,
}

/// How many firings to list.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    /// Firings to list, 1 to 500; 50 when absent.
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
}

handlers! {
    /// Creates a schedule; `next_run_at` says when it fires first.
    #[utoipa::path(post, path = "/v1/tenants/{tenant}/schedules", tag = "schedules", params(TenantPath),
        request_body = ScheduleBody,
        responses(
            (status = 201, description = "The schedule", body = answers::Schedule),
            (status = 422, description = "A field broke its rule (the expression, the time zone, a variable the data lacks)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        ))]
    async fn create(Authorised<TenantAdmin>, Body<ScheduleBody>) -> Created<Schedule> = service::create_schedule;

    /// Lists the tenant's schedules by name.
    #[utoipa::path(get, path = "/v1/tenants/{tenant}/schedules", tag = "schedules", params(TenantPath),
        responses((status = 200, description = "The schedules", body = Vec<answers::Schedule>)))]
    async fn list(Authorised<TenantAdmin>) -> Vec<Schedule> = store.list_schedules;

    /// One schedule.
    #[utoipa::path(get, path = "/v1/tenants/{tenant}/schedules/{id}", tag = "schedules", params(ObjectPath),
        responses((status = 200, description = "The schedule", body = answers::Schedule)))]
    async fn show(Authorised<TenantAdmin>, Id<ScheduleId>) -> Schedule = store.schedule;

    /// Changes a schedule. A new expression, time zone or state computes
    /// `next_run_at` afresh from now.
    #[utoipa::path(patch, path = "/v1/tenants/{tenant}/schedules/{id}", tag = "schedules", params(ObjectPath),
        request_body = ScheduleBody,
        responses(
            (status = 200, description = "The schedule", body = answers::Schedule),
            (status = 422, description = "A field broke its rule", body = crate::openapi::Problem, content_type = "application/problem+json"),
        ))]
    async fn update(Authorised<TenantAdmin>, Id<ScheduleId>, Body<ScheduleBody>) -> Schedule = service::update_schedule;

    /// Deletes a schedule and its firings; the messages it made stay.
    #[utoipa::path(delete, path = "/v1/tenants/{tenant}/schedules/{id}", tag = "schedules", params(ObjectPath),
        responses((status = 204, description = "Deleted")))]
    async fn remove(Authorised<TenantAdmin>, Id<ScheduleId>) -> Deleted = service::delete_schedule;
}

/// Runs the schedule now (ad hoc), whatever its times and state: one
/// message, recorded among its firings as `manual`.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/schedules/{id}/run", tag = "schedules", params(ObjectPath),
    responses(
        (status = 201, description = "The firing, with its message's id", body = answers::ScheduleRun),
        (status = 422, description = "No message could be made (the firing is recorded with why)", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn run(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    Id(id): Id<ScheduleId>,
) -> Result<(StatusCode, Json<ScheduleRun>), ApiError> {
    let run = service::run_schedule(&state, &caller, &tenant, id).await?;
    Ok((StatusCode::CREATED, Json(run)))
}

/// The schedule's newest firings, newest first, with their messages' statuses.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/schedules/{id}/runs", tag = "schedules", params(ObjectPath, RunsQuery),
    responses(
        (status = 200, description = "The firings", body = Vec<answers::ScheduleRun>),
        (status = 400, description = "The query string is not valid", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn runs(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<TenantAdmin>,
    Id(id): Id<ScheduleId>,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<Vec<ScheduleRun>>, ApiError> {
    let limit = newest_limit(query_params(query)?.limit.as_deref())?;
    Ok(Json(state.store.schedule_runs(tenant.id, id, limit).await?))
}
