//! The SQLite store's recurring schedules and their firings.

use herald_core::ScheduleId;

use super::templates::load_template;
use super::*;
use crate::Schedules;

/// Enabled schedules due at `?1`, earliest first, at most `?2`.
const DUE_SCHEDULES: &str = concat!(
    "SELECT ",
    sql::schedule_columns!(),
    " FROM schedules INDEXED BY schedules_due WHERE enabled = 1 AND next_run_at IS NOT NULL \
     AND next_run_at <= ?1 ORDER BY next_run_at LIMIT CAST(?2 AS INTEGER)"
);
/// The earliest firing of an enabled schedule.
const NEXT_SCHEDULE_DUE: &str = "SELECT min(next_run_at) FROM schedules INDEXED BY schedules_due \
     WHERE enabled = 1 AND next_run_at IS NOT NULL";

fn schedule_row(r: &Row) -> rusqlite::Result<Result<Schedule>> {
    Ok(rows::schedule(r))
}

/// The statuses of a message's recipients, as of now (`send_at` makes
/// queued ones scheduled); `None` for a message with none (gone).
fn message_status_of(
    c: &Connection,
    tenant: &str,
    message: &str,
    send_at: Option<i64>,
) -> Result<Option<RecipientStatus>> {
    let now = now_ms();
    let statuses: Vec<RecipientStatus> = recipient_statuses(c, message, tenant)?
        .into_iter()
        .map(|s| s.as_of(send_at, now))
        .collect();
    Ok((!statuses.is_empty()).then(|| message_status(statuses)))
}

#[async_trait]
impl Schedules for SqliteStore {
    async fn create_schedule(&self, s: NewSchedule) -> Result<Schedule> {
        self.db
            .write(move |c| {
                let f = &s.fields;
                rules::schedule_template(load_template(c, s.tenant_id, f.template_id))?;
                c.prepare_cached(sql::INSERT_SCHEDULE)
                    .map_err(sql)?
                    .query_row(
                        rusqlite::params_from_iter(sql::new_schedule_values(&s)),
                        schedule_row,
                    )
                    .map_err(unique(rules::name_taken("schedule", &f.name)))?
            })
            .await
    }

    async fn schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<Schedule> {
        self.db
            .read(move |c| {
                let args = [id.to_string(), tenant.to_string()];
                one(c, sql::SCHEDULE_BY_ID, args, schedule_row)
            })
            .await
    }

    async fn list_schedules(&self, tenant: TenantId) -> Result<Vec<Schedule>> {
        self.db
            .read(move |c| list_parsed(c, sql::SCHEDULES, [tenant.to_string()], schedule_row))
            .await
    }

    async fn update_schedule(
        &self,
        tenant: TenantId,
        id: ScheduleId,
        fields: ScheduleFields,
        next_run: NextRun,
        now: i64,
    ) -> Result<Schedule> {
        self.db
            .write(move |c| {
                rules::schedule_template(load_template(c, tenant, fields.template_id))?;
                let values = sql::schedule_update_values(tenant, id, &fields, next_run, now);
                c.prepare_cached(sql::UPDATE_SCHEDULE)
                    .map_err(sql)?
                    .query_row(rusqlite::params_from_iter(values), schedule_row)
                    .optional()
                    .map_err(unique(rules::name_taken("schedule", &fields.name)))?
                    .ok_or(StoreError::NotFound)?
            })
            .await
    }

    async fn delete_schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<()> {
        self.db
            .write(move |c| {
                match c
                    .execute(sql::DELETE_SCHEDULE, [id.to_string(), tenant.to_string()])
                    .map_err(sql)?
                {
                    0 => Err(StoreError::NotFound),
                    _ => Ok(()),
                }
            })
            .await
    }

    async fn due_schedules(&self, now: i64, limit: u32) -> Result<Vec<Schedule>> {
        self.db
            .read(move |c| list_parsed(c, DUE_SCHEDULES, params![now, limit], schedule_row))
            .await
    }

    async fn next_schedule_due(&self) -> Result<Option<i64>> {
        self.db
            .read(|c| {
                c.query_row(NEXT_SCHEDULE_DUE, [], |r| r.get(0))
                    .map_err(sql)
            })
            .await
    }

    async fn fire_schedule(
        &self,
        firing: Firing,
        message: Option<NewMessage>,
    ) -> Result<Option<ScheduleRun>> {
        // One writer job: its savepoint is rolled back on any error, so the
        // firing, the schedule's move and the message stand or fall together.
        self.db
            .write(move |c| {
                let f = &firing;
                let (schedule, tenant) = (f.schedule_id.to_string(), f.tenant_id.to_string());
                match f.trigger {
                    RunTrigger::Schedule => {
                        let consumed = c
                            .prepare_cached(sql::CONSUME_OCCURRENCE)
                            .map_err(sql)?
                            .execute(params![
                                f.next_run_at,
                                f.created_at,
                                schedule,
                                tenant,
                                f.expected_next_run_at
                            ])
                            .map_err(sql)?;
                        if consumed == 0 {
                            return Ok(None);
                        }
                        // The only writer: what this finds holds until the job
                        // ends. An occurrence recorded already (the schedule
                        // was set back to it) is not fired again, but the
                        // schedule still moves on past it.
                        let recorded: bool = c
                            .prepare_cached(sql::OCCURRENCE_RECORDED)
                            .map_err(sql)?
                            .query_row(params![schedule, f.fire_at], |r| r.get(0))
                            .map_err(sql)?;
                        if recorded {
                            return Ok(None);
                        }
                    }
                    RunTrigger::Manual => {
                        let noted = c
                            .prepare_cached(sql::NOTE_MANUAL_RUN)
                            .map_err(sql)?
                            .execute(params![f.created_at, schedule, tenant])
                            .map_err(sql)?;
                        if noted == 0 {
                            return Err(StoreError::NotFound);
                        }
                    }
                }
                let submitted = message.as_ref().map(|m| insert_message(c, m)).transpose()?;
                let inserted = c
                    .prepare_cached(sql::INSERT_SCHEDULE_RUN)
                    .map_err(sql)?
                    .execute(params![
                        f.id.to_string(),
                        schedule,
                        tenant,
                        f.trigger.as_str(),
                        f.fire_at,
                        f.missed,
                        submitted.as_ref().map(|s| s.id.to_string()),
                        f.error,
                        f.node,
                        f.created_at
                    ])
                    .map_err(sql)?;
                if inserted == 0 {
                    return Err(StoreError::Unavailable(
                        "the schedule's firing was not recorded".into(),
                    ));
                }
                let status = match (&submitted, &message) {
                    (Some(s), Some(m)) if !s.duplicate => Some(s.status.as_of(m.send_at, now_ms())),
                    (Some(s), _) => Some(s.status),
                    _ => None,
                };
                Ok(Some(rows::recorded_run(f, submitted.map(|s| s.id), status)))
            })
            .await
    }

    async fn schedule_runs(
        &self,
        tenant: TenantId,
        id: ScheduleId,
        limit: u32,
    ) -> Result<Vec<ScheduleRun>> {
        self.db
            .read(move |c| {
                let (id, tenant) = (id.to_string(), tenant.to_string());
                one(c, sql::SCHEDULE_BY_ID, [&id, &tenant], schedule_row)?;
                let mut stmt = c.prepare_cached(sql::SCHEDULE_RUNS).map_err(sql)?;
                let mut found = stmt.query(params![id, tenant, limit]).map_err(sql)?;
                let mut runs = Vec::new();
                while let Some(r) = found.next().map_err(sql)? {
                    let message: Option<String> = r.get("message_id").map_err(sql)?;
                    let send_at: Option<i64> = r.get("send_at").map_err(sql)?;
                    let status = match &message {
                        Some(m) => message_status_of(c, &tenant, m, send_at)?,
                        None => None,
                    };
                    runs.push(rows::schedule_run(r, status)?);
                }
                Ok(runs)
            })
            .await
    }
}
