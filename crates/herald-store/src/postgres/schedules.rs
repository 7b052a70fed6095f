//! The PostgreSQL store's recurring schedules and their firings.

use herald_core::ScheduleId;

use super::*;
use crate::Schedules;

fn pending<T>() -> Result<T> {
    Err(StoreError::Unavailable(
        "schedules are not stored yet".into(),
    ))
}

#[async_trait]
impl Schedules for PgStore {
    async fn create_schedule(&self, _s: NewSchedule) -> Result<Schedule> {
        pending()
    }
    async fn schedule(&self, _tenant: TenantId, _id: ScheduleId) -> Result<Schedule> {
        pending()
    }
    async fn list_schedules(&self, _tenant: TenantId) -> Result<Vec<Schedule>> {
        pending()
    }
    async fn update_schedule(
        &self,
        _tenant: TenantId,
        _id: ScheduleId,
        _fields: ScheduleFields,
        _next_run_at: Option<i64>,
        _now: i64,
    ) -> Result<Schedule> {
        pending()
    }
    async fn delete_schedule(&self, _tenant: TenantId, _id: ScheduleId) -> Result<()> {
        pending()
    }
    async fn due_schedules(&self, _now: i64, _limit: u32) -> Result<Vec<Schedule>> {
        Ok(Vec::new())
    }
    async fn next_schedule_due(&self) -> Result<Option<i64>> {
        Ok(None)
    }
    async fn fire_schedule(
        &self,
        _firing: Firing,
        _message: Option<NewMessage>,
    ) -> Result<Option<ScheduleRun>> {
        pending()
    }
    async fn schedule_runs(
        &self,
        _tenant: TenantId,
        _id: ScheduleId,
        _limit: u32,
    ) -> Result<Vec<ScheduleRun>> {
        pending()
    }
}
