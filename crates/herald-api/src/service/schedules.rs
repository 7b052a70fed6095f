//! Recurring schedules: checked when saved (the expression, the time zone,
//! the template rendered with the schedule's data), and fired, by the
//! scheduler or on demand, into one message each time.

use herald_core::timestamp::now_ms;
use herald_core::{Invalid, MessageId, ScheduleId, ScheduleRunId, Subject};
use herald_store::{
    Firing, NewMessage, NewSchedule, NextRun, Origin, RunTrigger, Schedule, ScheduleFields,
    ScheduleRun, StoreError, Tenant,
};
use serde_json::{Value, json};

use crate::cron::Recurrence;
use crate::routes::Check;
use crate::routes::schedules::ScheduleBody;
use crate::service::templates::{find_template, render_api_error};
use crate::{ApiError, AppState, Caller};

/// The schedule's fields from a request (on `base` for a change), checked:
/// the expression and time zone parse, the template is the tenant's, and it
/// renders with the schedule's data.
async fn fields(
    state: &AppState,
    tenant: &Tenant,
    body: ScheduleBody,
    base: Option<&Schedule>,
) -> Result<ScheduleFields, ApiError> {
    let mut check = Check::default();
    let base = base.map(|b| &b.fields);
    let name = check.required(
        "name",
        body.name.as_deref(),
        base.map(|b| b.name.clone()),
        crate::routes::name,
    );
    let cron = check.required("cron", body.cron, base.map(|b| b.cron.clone()), |cron| {
        Ok(cron.trim().to_owned())
    });
    let timezone = body
        .timezone
        .map(|t| t.trim().to_owned())
        .or_else(|| base.map(|b| b.timezone.clone()))
        .unwrap_or_else(|| "UTC".to_owned());
    if let Some(cron) = &cron {
        match Recurrence::parse(cron, &timezone) {
            Err(e) => {
                let cron_refused = e.field == "cron";
                check.push(e);
                // A refused expression hides nothing of the time zone.
                if let (true, Err(e)) = (cron_refused, crate::cron::time_zone(&timezone)) {
                    check.push(e);
                }
            }
            Ok(recurrence) if recurrence.next_after(now_ms()).is_none() => {
                check.fail("cron", "never matches a date to come (such as 30 February)");
            }
            Ok(_) => {}
        }
    }
    let data = body
        .data
        .or_else(|| base.map(|b| b.data.clone()))
        .unwrap_or_else(|| Value::Object(Default::default()));
    if !data.is_object() {
        check.fail("data", "must be a JSON object");
    }
    let recipients = |check: &mut Check, field: &str, given: Option<Vec<String>>, kept| match given
    {
        Some(given) => crate::routes::messages::mailbox_list(check, field, &given),
        None => kept,
    };
    let to = recipients(
        &mut check,
        "to",
        body.to,
        base.map(|b| b.to.clone()).unwrap_or_default(),
    );
    let cc = recipients(
        &mut check,
        "cc",
        body.cc,
        base.map(|b| b.cc.clone()).unwrap_or_default(),
    );
    let bcc = match body.bcc {
        Some(given) => crate::routes::messages::bcc_list(&mut check, &given),
        None => base.map(|b| b.bcc.clone()).unwrap_or_default(),
    };
    let total = to.len() + cc.len() + bcc.len();
    crate::routes::messages::check_recipient_total(&mut check, state, total);
    let template_reference = check.required(
        "template",
        body.template,
        base.map(|b| b.template_id.to_string()),
        Ok,
    );
    check.finish()?;
    let template = find_template(
        state,
        tenant,
        &template_reference.expect("checked"),
        "template",
    )
    .await?;
    // The data must give what the template uses now; a later change of the
    // template that needs more is recorded on the firing that fails.
    state
        .renderer
        .render(template.tenant_id, &template.content, &data)
        .await
        .map_err(render_api_error)?;
    Ok(ScheduleFields {
        name: name.expect("checked"),
        cron: cron.expect("checked"),
        timezone,
        template_id: template.id,
        data,
        to,
        cc,
        bcc,
        enabled: body.enabled.or(base.map(|b| b.enabled)).unwrap_or(true),
    })
}

/// When a schedule with these fields fires next after `now`: `None` while disabled.
fn next_run(fields: &ScheduleFields, now: i64) -> Result<Option<i64>, ApiError> {
    if !fields.enabled {
        return Ok(None);
    }
    let recurrence = Recurrence::parse(&fields.cron, &fields.timezone).map_err(ApiError::field)?;
    Ok(recurrence.next_after(now))
}

/// Creates a schedule; it fires first at the expression's next time after now.
pub async fn create_schedule(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    body: ScheduleBody,
) -> Result<Schedule, ApiError> {
    let fields = fields(state, tenant, body, None).await?;
    let now = now_ms();
    let record = state
        .store
        .create_schedule(NewSchedule {
            id: ScheduleId::new(),
            tenant_id: tenant.id,
            next_run_at: next_run(&fields, now)?,
            fields,
            created_at: now,
        })
        .await?;
    Ok(saved(state, caller, tenant, "schedule.create", record).await)
}

/// Tells the scheduler that a schedule was saved (it may fire at another
/// time now), and records `action` on it in the audit log.
async fn saved(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    action: &str,
    record: Schedule,
) -> Schedule {
    state.schedules_changed.notify_one();
    let details = audit_details(&record.fields);
    caller
        .audit_tenant(state, tenant.id, action, record.id, details)
        .await;
    record
}

/// What the audit log keeps of a schedule (never its data: it may hold names and addresses).
fn audit_details(fields: &ScheduleFields) -> Value {
    json!({
        "name": fields.name,
        "cron": fields.cron,
        "timezone": fields.timezone,
        "template_id": fields.template_id,
        "enabled": fields.enabled,
    })
}

/// Changes a schedule. A change of its expression, time zone or state
/// computes its next firing afresh from now; any other change keeps it.
pub async fn update_schedule(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: ScheduleId,
    body: ScheduleBody,
) -> Result<Schedule, ApiError> {
    let base = state.store.schedule(tenant.id, id).await?;
    let fields = fields(state, tenant, body, Some(&base)).await?;
    let now = now_ms();
    let timing_changed = fields.cron != base.fields.cron
        || fields.timezone != base.fields.timezone
        || fields.enabled != base.fields.enabled;
    // Kept as stored, not as read above: a firing may have moved it on since.
    let next_run = if timing_changed || (fields.enabled && base.next_run_at.is_none()) {
        NextRun::At(next_run(&fields, now)?)
    } else {
        NextRun::Keep
    };
    let record = state
        .store
        .update_schedule(tenant.id, id, fields, next_run, now)
        .await?;
    Ok(saved(state, caller, tenant, "schedule.update", record).await)
}

/// Deletes a schedule and its history; the messages it made stay.
pub async fn delete_schedule(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: ScheduleId,
) -> Result<(), ApiError> {
    let deleted = state.store.delete_schedule(tenant.id, id);
    super::audited_removal(state, caller, tenant, "schedule.delete", id, deleted).await
}

/// Runs a schedule now, outside its times: one message, recorded among its
/// firings as `manual`. When no message can be made the firing is recorded
/// with why, and the answer is a 422 saying it.
pub async fn run_schedule(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: ScheduleId,
) -> Result<ScheduleRun, ApiError> {
    let schedule = state.store.schedule(tenant.id, id).await?;
    let now = now_ms();
    let firing = Firing {
        id: ScheduleRunId::new(),
        schedule_id: schedule.id,
        tenant_id: tenant.id,
        trigger: RunTrigger::Manual,
        fire_at: now,
        expected_next_run_at: None,
        next_run_at: None,
        missed: 0,
        error: None,
        node: state.node.to_string(),
        created_at: now,
    };
    let run = fire(state, &schedule, firing)
        .await?
        .ok_or(ApiError::NotFound("schedule"))?;
    caller
        .audit_tenant(
            state,
            tenant.id,
            "schedule.run",
            id,
            json!({"run_id": run.id, "message_id": run.message_id}),
        )
        .await;
    if let Some(error) = &run.error {
        return Err(ApiError::field(
            Invalid::new(format!("made no message: {error}")).at("template"),
        ));
    }
    Ok(run)
}

/// Makes a firing's message and records both in one transaction. When no
/// message can be made (the template no longer renders with the data, no
/// recipient, a full queue), the firing is recorded with the reason, so an
/// occurrence is never tried again. `None` when the schedule no longer
/// expects this firing (another node recorded it, or it was changed).
pub async fn fire(
    state: &AppState,
    schedule: &Schedule,
    mut firing: Firing,
) -> Result<Option<ScheduleRun>, StoreError> {
    let message = match compose(state, schedule, firing.created_at).await {
        Ok(message) => message,
        Err(Composed::Store(e)) => return Err(e),
        Err(Composed::Refused(why)) => {
            firing.error = Some(why);
            return state.store.fire_schedule(firing, None).await;
        }
    };
    let submitted = state
        .store
        .fire_schedule(firing.clone(), Some(message))
        .await;
    match submitted {
        Ok(run) => {
            if run.is_some() {
                state.metrics.submitted(
                    herald_metrics::Source::Schedule,
                    herald_metrics::Submitted::Accepted,
                    1,
                );
                state.mail_stored();
            }
            Ok(run)
        }
        Err(refused @ (StoreError::QueueFull { .. } | StoreError::Invalid(_))) => {
            state.count_refused(herald_metrics::Source::Schedule, 1);
            firing.error = Some(format!("no message was made: {refused}"));
            state.store.fire_schedule(firing, None).await
        }
        Err(e) => Err(e),
    }
}

/// Why a firing made no message.
enum Composed {
    /// The store could not be read: the firing is tried again later.
    Store(StoreError),
    /// Nothing to send, for a reason the firing records.
    Refused(String),
}

impl From<StoreError> for Composed {
    fn from(e: StoreError) -> Self {
        Composed::Store(e)
    }
}

/// The message one firing of `schedule` makes at `now`: its template
/// rendered with its data, to its recipients (or the provider's fallback).
async fn compose(state: &AppState, schedule: &Schedule, now: i64) -> Result<NewMessage, Composed> {
    let fields = &schedule.fields;
    let tenant = schedule.tenant_id;
    let template = match state.store.template(tenant, fields.template_id).await {
        Err(StoreError::NotFound) => {
            return Err(Composed::Refused("its template no longer exists".into()));
        }
        other => other?,
    };
    let rendered = state
        .renderer
        .render(tenant, &template.content, &fields.data)
        .await
        .map_err(|e| {
            Composed::Refused(format!(
                "template {} (version {}): {e}",
                template.name, template.version
            ))
        })?;
    let subject = Subject::parse(&rendered.subject)
        .map_err(|e| Composed::Refused(format!("the rendered subject is not valid: it {e}")))?;
    let size = rendered.text.as_ref().map_or(0, String::len)
        + rendered.html.as_ref().map_or(0, String::len);
    if size > state.limits.max_message_bytes {
        return Err(Composed::Refused(format!(
            "the rendered text and html are {size} bytes, over the limit of {}",
            state.limits.max_message_bytes
        )));
    }
    let mut to = fields.to.clone();
    let used_fallback = to.is_empty() && fields.cc.is_empty() && fields.bcc.is_empty();
    if used_fallback {
        match crate::service::fallback_recipient(state, tenant).await? {
            Some(address) => to.push(address.into()),
            None => {
                return Err(Composed::Refused(
                    "the schedule has no recipients and the tenant's provider has no fallback recipient"
                        .into(),
                ));
            }
        }
    }
    Ok(NewMessage {
        id: MessageId::new(),
        tenant_id: tenant,
        idempotency_key: None,
        subject,
        text: rendered.text,
        html: rendered.html,
        reply_to: None,
        headers: Vec::new(),
        to,
        cc: fields.cc.clone(),
        bcc: fields.bcc.clone(),
        used_fallback,
        created_at: now,
        on_behalf_of: None,
        test_provider: None,
        priority: 0,
        max_pending_tests: None,
        max_queued: Some(state.limits.max_queued_per_tenant),
        origin: Origin::Schedule,
        raw: None,
        attachments: Vec::new(),
        send_at: None,
        template: Some(herald_store::TemplateUse {
            id: template.id,
            version: template.version,
        }),
        gateway_id: crate::service::pinned_gateway(state, tenant).await?,
        handoff: None,
    })
}
