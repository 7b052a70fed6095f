//! A tenant's recurring schedules: the list, the form (new or editing, the
//! template chosen from the tenant's), and each schedule's page with its next
//! runs, its history of firings, turning it on or off, running it now, and
//! deleting it after a confirmation page.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::{Datelike, Offset, TimeZone, Timelike};
use chrono_tz::Tz;
use herald_api::cron::Recurrence;
use herald_api::gate::TenantAdmin;
use herald_api::service::ScheduleBody;
use herald_api::{ApiError, AppState, service};
use herald_core::ScheduleId;
use herald_core::timestamp::now_ms;
use herald_store::{Schedule, Template, Tenant};
use minijinja::context;
use serde::Serialize;

use super::{Confirmation, Id, store};
use crate::forms::{EnabledForm, FieldErrors, Problems, ScheduleForm};
use crate::gate::TenantPage;
use crate::notice::{Done, Notice, Saved};
use crate::pages::{PageResult, base, refused, see, submit};
use crate::render::page;
use crate::session::Signed;

/// The firings a schedule's page lists, newest first.
const HISTORY: u32 = 50;

/// The coming occurrences a schedule's page shows.
const NEXT_RUNS: usize = 5;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/t/{tenant}/schedules",
            get(schedules).post(create_schedule),
        )
        .route("/t/{tenant}/schedules/new", get(new_schedule))
        .route("/t/{tenant}/schedules/{id}", get(schedule))
        .route(
            "/t/{tenant}/schedules/{id}/edit",
            get(edit_schedule).post(update_schedule),
        )
        .route("/t/{tenant}/schedules/{id}/enabled", post(set_enabled))
        .route("/t/{tenant}/schedules/{id}/run", post(run_now))
        .route(
            "/t/{tenant}/schedules/{id}/delete",
            get(confirm_delete).post(delete_schedule),
        )
}

/// A schedule as its list shows it: with its template's name (or that it is gone).
#[derive(Serialize)]
struct Listed {
    #[serde(flatten)]
    schedule: Schedule,
    template_name: Option<String>,
}

async fn schedules(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    done: Done,
) -> PageResult {
    let templates = store(state.store.list_templates(tenant.id).await)?;
    let schedules: Vec<Listed> = store(state.store.list_schedules(tenant.id).await)?
        .into_iter()
        .map(|schedule| Listed {
            template_name: name_of(&templates, &schedule),
            schedule,
        })
        .collect();
    let notice = done.notice(&[(
        Saved::ScheduleDeleted,
        "Schedule deleted: the messages it made stay.",
    )]);
    Ok(page(
        "schedules.html",
        context! {
            schedules, notice,
            has_templates => !templates.is_empty(),
            ..base(&me, &tenant, "schedules")
        },
    ))
}

fn name_of(templates: &[Template], schedule: &Schedule) -> Option<String> {
    templates
        .iter()
        .find(|t| t.id == schedule.fields.template_id)
        .map(|t| t.name.clone())
}

/// The form's page: a new schedule (`schedule` absent) or editing one.
async fn form_page(
    state: &AppState,
    me: &Signed,
    tenant: &Tenant,
    schedule: Option<&Schedule>,
    form: ScheduleForm,
    problems: Problems,
) -> PageResult {
    let templates: Vec<_> = store(state.store.list_templates(tenant.id).await)?
        .into_iter()
        .map(|t| context! { value => t.id.to_string(), label => t.name })
        .collect();
    Ok(page(
        "schedule_form.html",
        context! {
            schedule, form, problems, templates,
            ..base(me, tenant, "schedules")
        },
    ))
}

async fn new_schedule(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
) -> PageResult {
    form_page(
        &state,
        &me,
        &tenant,
        None,
        ScheduleForm::new(),
        Problems::default(),
    )
    .await
}

fn schedule_path(tenant: &Tenant, id: ScheduleId) -> String {
    format!("/t/{}/schedules/{id}", tenant.slug)
}

/// The form's body, or its own errors (data that is not JSON) as the API's.
fn body_of(form: &ScheduleForm, editing: bool) -> Result<ScheduleBody, ApiError> {
    form.body(editing).map_err(Problems::invalid)
}

async fn create_schedule(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Form(form): Form<ScheduleForm>,
) -> PageResult {
    let outcome = async {
        let body = body_of(&form, false)?;
        service::create_schedule(&state, &me.caller, &tenant, body).await
    };
    let again = |problems: Problems| {
        // The API's `to[1]` is the form's `to`.
        let problems = problems.renamed(ScheduleForm::field);
        form_page(&state, &me, &tenant, None, form.clone(), problems)
    };
    submit(
        outcome,
        |created| Saved::ScheduleAdded.on(&schedule_path(&tenant, created.id)),
        again,
    )
    .await
}

async fn edit_schedule(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<ScheduleId>,
) -> PageResult {
    let schedule = store(state.store.schedule(tenant.id, id).await)?;
    let form = ScheduleForm::from_schedule(&schedule);
    form_page(
        &state,
        &me,
        &tenant,
        Some(&schedule),
        form,
        Problems::default(),
    )
    .await
}

async fn update_schedule(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<ScheduleId>,
    Form(form): Form<ScheduleForm>,
) -> PageResult {
    let schedule = store(state.store.schedule(tenant.id, id).await)?;
    let outcome = async {
        let body = body_of(&form, true)?;
        service::update_schedule(&state, &me.caller, &tenant, id, body).await
    };
    let again = |problems: Problems| {
        form_page(
            &state,
            &me,
            &tenant,
            Some(&schedule),
            form.clone(),
            problems.renamed(ScheduleForm::field),
        )
    };
    submit(
        outcome,
        |_| Saved::ScheduleChanged.on(&schedule_path(&tenant, id)),
        again,
    )
    .await
}

/// A moment as the schedule's page shows it: on the clock of the schedule's
/// zone with its offset, and in UTC.
#[derive(Serialize)]
struct Occurrence {
    local: String,
    utc: String,
}

/// `2026-03-30 09:00 +02:00` on the clock of `tz`.
fn clock(ms: i64, tz: Tz) -> String {
    match tz.timestamp_millis_opt(ms).single() {
        Some(at) => {
            let offset = at.offset().fix().local_minus_utc();
            let sign = if offset < 0 { '-' } else { '+' };
            let offset = offset.abs();
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} {sign}{:02}:{:02}",
                at.year(),
                at.month(),
                at.day(),
                at.hour(),
                at.minute(),
                offset / 3600,
                offset % 3600 / 60
            )
        }
        None => herald_core::timestamp::rfc3339(ms),
    }
}

/// The next occurrences after `now` by the schedule's expression and zone
/// (whether or not it is enabled: a disabled one shows when it would fire).
fn next_runs(schedule: &Schedule, now: i64) -> Vec<Occurrence> {
    let fields = &schedule.fields;
    let (Ok(recurrence), Ok(tz)) = (
        Recurrence::parse(&fields.cron, &fields.timezone),
        fields.timezone.parse::<Tz>(),
    ) else {
        return Vec::new();
    };
    let mut runs = Vec::new();
    let mut after = now;
    while runs.len() < NEXT_RUNS {
        let Some(at) = recurrence.next_after(after) else {
            break;
        };
        runs.push(Occurrence {
            local: clock(at, tz),
            utc: clock(at, Tz::UTC).replace(" +00:00", " UTC"),
        });
        after = at;
    }
    runs
}

/// A schedule's page: its settings, next runs, the forms that act on it,
/// and its history.
async fn schedule_page(
    state: &AppState,
    me: &Signed,
    tenant: &Tenant,
    id: ScheduleId,
    notice: Option<Notice>,
    problems: Problems,
) -> PageResult {
    let schedule = store(state.store.schedule(tenant.id, id).await)?;
    let templates = store(state.store.list_templates(tenant.id).await)?;
    let runs = store(state.store.schedule_runs(tenant.id, id, HISTORY).await)?;
    let next_runs = next_runs(&schedule, now_ms());
    let template_name = name_of(&templates, &schedule);
    let data = serde_json::to_string_pretty(&schedule.fields.data).unwrap_or_default();
    Ok(page(
        "schedule.html",
        context! {
            schedule, template_name, data, next_runs, runs, notice, problems,
            ..base(me, tenant, "schedules")
        },
    ))
}

async fn schedule(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<ScheduleId>,
    done: Done,
) -> PageResult {
    let notice = done.notice(&[
        (
            Saved::ScheduleAdded,
            "Schedule added: it fires at its next run below.",
        ),
        (Saved::ScheduleChanged, "Schedule saved."),
        (
            Saved::ScheduleEnabled,
            "Schedule enabled: it fires from its next run on.",
        ),
        (
            Saved::ScheduleDisabled,
            "Schedule disabled: it does not fire until it is enabled again.",
        ),
        (
            Saved::ScheduleRun,
            "Schedule run: its message is first in the history below.",
        ),
    ]);
    schedule_page(&state, &me, &tenant, id, notice, Problems::default()).await
}

async fn set_enabled(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<ScheduleId>,
    Form(form): Form<EnabledForm>,
) -> PageResult {
    let change = ScheduleBody {
        enabled: Some(form.enabled),
        ..ScheduleBody::default()
    };
    match service::update_schedule(&state, &me.caller, &tenant, id, change).await {
        Ok(_) => {
            let saved = if form.enabled {
                Saved::ScheduleEnabled
            } else {
                Saved::ScheduleDisabled
            };
            Ok(see(saved.on(&schedule_path(&tenant, id))))
        }
        // Its template no longer renders with its data, say: shown on its page.
        Err(error @ ApiError::Invalid(_)) => refused_on_page(&state, &me, &tenant, id, error).await,
        Err(other) => Err(other.into()),
    }
}

/// The schedule's page with why an action was refused, each field's rule as one line.
async fn refused_on_page(
    state: &AppState,
    me: &Signed,
    tenant: &Tenant,
    id: ScheduleId,
    error: ApiError,
) -> PageResult {
    refused(error, |problems| {
        let general = problems
            .fields
            .iter()
            .map(|(field, rule)| format!("{field}: {rule}"))
            .chain(problems.general)
            .collect::<Vec<_>>()
            .join("; ");
        let problems = Problems {
            fields: FieldErrors::new(),
            general: Some(general),
        };
        schedule_page(state, me, tenant, id, None, problems)
    })
    .await
}

/// Runs the schedule once now; when no message could be made, the page
/// says why (the firing is in the history with the same reason).
async fn run_now(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<ScheduleId>,
) -> PageResult {
    match service::run_schedule(&state, &me.caller, &tenant, id).await {
        Ok(_) => Ok(see(Saved::ScheduleRun.on(&schedule_path(&tenant, id)))),
        Err(error @ (ApiError::Invalid(_) | ApiError::Conflict(_))) => {
            refused_on_page(&state, &me, &tenant, id, error).await
        }
        Err(other) => Err(other.into()),
    }
}

/// The page that asks before a schedule is deleted.
const DELETE: Confirmation = Confirmation {
    section: "schedules",
    template: "schedule_delete.html",
    object: "schedule",
};

async fn confirm_delete(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<ScheduleId>,
) -> PageResult {
    let schedule = store(state.store.schedule(tenant.id, id).await)?;
    DELETE.page(&me, &tenant, schedule, None)
}

async fn delete_schedule(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<ScheduleId>,
) -> PageResult {
    let deleted = service::delete_schedule(&state, &me.caller, &tenant, id);
    DELETE.done(&tenant, deleted, Saved::ScheduleDeleted).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moment_reads_on_the_zone_s_clock_with_its_offset() {
        // 2026-03-30 07:00 UTC is 09:00 in Berlin, summer time.
        let at = 1_774_854_000_000;
        assert_eq!(clock(at, Tz::UTC), "2026-03-30 07:00 +00:00");
        assert_eq!(
            clock(at, "Europe/Berlin".parse().unwrap()),
            "2026-03-30 09:00 +02:00"
        );
        assert_eq!(
            clock(at, "America/St_Johns".parse().unwrap()),
            "2026-03-30 04:30 -02:30"
        );
    }
}
