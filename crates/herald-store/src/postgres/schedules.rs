//! The PostgreSQL store's recurring schedules and their firings.

use herald_core::ScheduleId;

use super::templates::load_template;
use super::*;
use crate::Schedules;

/// Enabled schedules due at `$1`, earliest first, at most `$2` (from the
/// partial index `schedules_due`).
const DUE_SCHEDULES: &str = concat!(
    "SELECT ",
    sql::schedule_columns!(),
    " FROM schedules WHERE enabled AND next_run_at IS NOT NULL AND next_run_at <= $1 \
     ORDER BY next_run_at LIMIT $2"
);
/// The earliest firing of an enabled schedule.
const NEXT_SCHEDULE_DUE: &str =
    "SELECT min(next_run_at) FROM schedules WHERE enabled AND next_run_at IS NOT NULL";

/// Runs a statement that writes one schedule and returns it, a taken name
/// being a conflict.
async fn write_schedule(
    c: &impl GenericClient,
    statement: &str,
    values: &[sql::Value],
    name: &str,
) -> Result<Schedule> {
    let taken = rules::name_taken("schedule", name);
    write_found(c, statement, &bind(values), taken, rows::schedule).await
}

async fn load_schedule(c: &impl GenericClient, tenant: &str, id: &str) -> Result<Schedule> {
    query_found(c, sql::SCHEDULE_BY_ID, &[&id, &tenant], rows::schedule).await
}

#[async_trait]
impl Schedules for PgStore {
    async fn create_schedule(&self, s: NewSchedule) -> Result<Schedule> {
        self.noted(async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            let f = &s.fields;
            // Kept from being deleted until this commits.
            let found = load_template(&tx, s.tenant_id, f.template_id, Lock::KeyShare).await;
            rules::schedule_template(found)?;
            let values = sql::new_schedule_values(&s);
            let created = write_schedule(&tx, sql::INSERT_SCHEDULE, &values, &f.name).await?;
            tx.commit().await.map_err(pg)?;
            Ok(created)
        })
        .await
    }

    async fn schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<Schedule> {
        let c = client(&self.pool).await?;
        load_schedule(&c, &tenant.to_string(), &id.to_string()).await
    }

    async fn list_schedules(&self, tenant: TenantId) -> Result<Vec<Schedule>> {
        let c = client(&self.pool).await?;
        query_map(&c, sql::SCHEDULES, &[&tenant.to_string()], rows::schedule).await
    }

    async fn update_schedule(
        &self,
        tenant: TenantId,
        id: ScheduleId,
        fields: ScheduleFields,
        next_run: NextRun,
        now: i64,
    ) -> Result<Schedule> {
        self.noted(async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            let found = load_template(&tx, tenant, fields.template_id, Lock::KeyShare).await;
            rules::schedule_template(found)?;
            let values = sql::schedule_update_values(tenant, id, &fields, next_run, now);
            let updated = write_schedule(&tx, sql::UPDATE_SCHEDULE, &values, &fields.name).await?;
            tx.commit().await.map_err(pg)?;
            Ok(updated)
        })
        .await
    }

    async fn delete_schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<()> {
        let c = client(&self.pool).await?;
        let deleted = execute(
            &c,
            sql::DELETE_SCHEDULE,
            &[&id.to_string(), &tenant.to_string()],
        )
        .await
        .map_err(pg);
        self.writes.note(&deleted);
        match deleted? {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn due_schedules(&self, now: i64, limit: u32) -> Result<Vec<Schedule>> {
        let c = client(&self.pool).await?;
        query_map(
            &c,
            DUE_SCHEDULES,
            &[&now, &i64::from(limit)],
            rows::schedule,
        )
        .await
    }

    async fn next_schedule_due(&self) -> Result<Option<i64>> {
        let c = client(&self.pool).await?;
        let row = query_opt(&c, NEXT_SCHEDULE_DUE, &[]).await?;
        Ok(row
            .map(|r| r.try_get::<_, Option<i64>>(0).map_err(pg))
            .transpose()?
            .flatten())
    }

    async fn fire_schedule(
        &self,
        firing: Firing,
        message: Option<NewMessage>,
    ) -> Result<Option<ScheduleRun>> {
        let result = async {
            let f = &firing;
            let (schedule, tenant) = (f.schedule_id.to_string(), f.tenant_id.to_string());
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            // The update locks the schedule's row: of several nodes firing
            // the same occurrence, the others wait for this transaction and
            // then find next_run_at moved on (READ COMMITTED checks the
            // condition again on the row as committed), changing nothing.
            match f.trigger {
                RunTrigger::Schedule => {
                    let consumed = execute(
                        &tx,
                        sql::CONSUME_OCCURRENCE,
                        &[
                            &f.next_run_at,
                            &f.created_at,
                            &schedule,
                            &tenant,
                            &f.expected_next_run_at,
                        ],
                    )
                    .await
                    .map_err(pg)?;
                    if consumed == 0 {
                        return Ok((None, false));
                    }
                    // The schedule's row is locked until the commit, so no
                    // other firing of it records meanwhile. An occurrence
                    // recorded already (the schedule was set back to it) is
                    // not fired again, but the schedule still moves on past it.
                    let recorded: bool =
                        query_opt(&tx, sql::OCCURRENCE_RECORDED, &[&schedule, &f.fire_at])
                            .await?
                            .map(|r| r.try_get(0).map_err(pg))
                            .transpose()?
                            .unwrap_or(false);
                    if recorded {
                        tx.commit().await.map_err(pg)?;
                        return Ok((None, false));
                    }
                }
                RunTrigger::Manual => {
                    let noted = execute(
                        &tx,
                        sql::NOTE_MANUAL_RUN,
                        &[&f.created_at, &schedule, &tenant],
                    )
                    .await
                    .map_err(pg)?;
                    if noted == 0 {
                        return Err(StoreError::NotFound);
                    }
                }
            }
            let submitted = match &message {
                Some(m) if insert_messages(&tx, &[m]).await?[0] => {
                    insert_recipients(&tx, &[m]).await?;
                    Some(Submitted {
                        id: m.id,
                        status: RecipientStatus::Queued.as_of(m.send_at, now_ms()),
                        duplicate: false,
                        handed: Vec::new(),
                    })
                }
                Some(m) => Some(stored_earlier(&tx, m).await?.ok_or_else(vanishing)?),
                None => None,
            };
            let inserted = execute(
                &tx,
                sql::INSERT_SCHEDULE_RUN,
                &[
                    &f.id.to_string(),
                    &schedule,
                    &tenant,
                    &f.trigger.as_str(),
                    &f.fire_at,
                    &(f.missed as i32),
                    &submitted.as_ref().map(|s| s.id.to_string()),
                    &opt_text(&f.error),
                    &f.node,
                    &f.created_at,
                ],
            )
            .await
            .map_err(pg)?;
            if inserted == 0 {
                // The occurrence was recorded already: dropping the
                // transaction rolls back the schedule's move and the message.
                return Ok((None, false));
            }
            let new = match (&message, &submitted) {
                (Some(m), Some(s)) if !s.duplicate => Some(m),
                _ => None,
            };
            if let Some(m) = new {
                count_tests(&tx, m).await?;
                count_queued(&tx, &[m]).await?;
            }
            tx.commit().await.map_err(pg)?;
            let run = recorded(f, submitted);
            Ok((Some(run), new.is_some()))
        }
        .await;
        self.writes.note(&result);
        let (run, new_mail) = result?;
        if new_mail {
            self.announce_mail();
        }
        Ok(run)
    }

    async fn schedule_runs(
        &self,
        tenant: TenantId,
        id: ScheduleId,
        limit: u32,
    ) -> Result<Vec<ScheduleRun>> {
        let (id, tenant) = (id.to_string(), tenant.to_string());
        let mut c = client(&self.pool).await?;
        // One snapshot: the runs and their messages' recipients agree.
        let tx = snapshot(&mut c).await?;
        load_schedule(&tx, &tenant, &id).await?;
        let found = query(&tx, sql::SCHEDULE_RUNS, &[&id, &tenant, &i64::from(limit)]).await?;
        let now = now_ms();
        let mut runs = Vec::with_capacity(found.len());
        for r in &found {
            let status = match get::<Option<String>>(r, "message_id")? {
                Some(message) => {
                    let send_at: Option<i64> = get(r, "send_at")?;
                    let statuses: Vec<RecipientStatus> = statuses_of(&tx, &tenant, &message)
                        .await?
                        .into_iter()
                        .map(|s| s.as_of(send_at, now))
                        .collect();
                    (!statuses.is_empty()).then(|| message_status(statuses))
                }
                None => None,
            };
            runs.push(rows::schedule_run(r, status)?);
        }
        tx.commit().await.map_err(pg)?;
        Ok(runs)
    }
}

/// A firing as recorded, with the message it submitted.
fn recorded(f: &Firing, submitted: Option<Submitted>) -> ScheduleRun {
    let (message, status) = match submitted {
        Some(s) => (Some(s.id), Some(s.status)),
        None => (None, None),
    };
    rows::recorded_run(f, message, status)
}
