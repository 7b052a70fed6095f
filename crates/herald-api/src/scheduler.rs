//! The scheduler: fires tenants' recurring schedules when their time comes.
//!
//! Every node with the worker role runs one. Each finds the schedules due
//! (`next_run_at` at or before now) and fires them; the store records a
//! firing only while the schedule's `next_run_at` is still the one the
//! firing consumes, in the transaction that stores its message and moves
//! `next_run_at` on. So however many nodes fire at once, and whatever
//! restarts, an occurrence makes one message. After downtime the latest
//! missed occurrence fires once, recording how many it folds in.

use std::time::Duration;

use herald_core::ScheduleRunId;
use herald_core::timestamp::now_ms;
use herald_store::{Firing, RunTrigger, Schedule};
use tokio::sync::watch;

use crate::AppState;
use crate::cron::Recurrence;

/// The most schedules one pass fires before looking again.
const BATCH: u32 = 100;
/// The longest the scheduler sleeps without looking: a schedule made or
/// changed on another node is seen within this.
const LOOK_AT_LEAST_EVERY: Duration = Duration::from_secs(5);
/// How long to wait after the store failed before trying again.
const AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Runs until `shutdown` turns true.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    // The firing time a pass left due at once: found again by the next
    // pass, nothing moved it on, and looking again at once would spin.
    let mut left_due = None;
    loop {
        let wait = match pass(&state).await {
            Ok(Some(next)) if next <= now_ms() && left_due.replace(next) == Some(next) => {
                tracing::warn!(
                    next_run_at = next,
                    "a schedule stays due after firing; looking again in a second"
                );
                AFTER_FAILURE
            }
            Ok(Some(next)) => {
                let ahead = next.saturating_sub(now_ms()).max(0) as u64;
                Duration::from_millis(ahead).min(LOOK_AT_LEAST_EVERY)
            }
            Ok(None) => LOOK_AT_LEAST_EVERY,
            Err(e) => {
                tracing::warn!(error = %e, "the scheduler could not read or fire schedules");
                AFTER_FAILURE
            }
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.schedules_changed.notified() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Fires what is due now; answers when the next schedule is due.
async fn pass(state: &AppState) -> Result<Option<i64>, herald_store::StoreError> {
    loop {
        let now = now_ms();
        let due = state.store.due_schedules(now, BATCH).await?;
        for schedule in &due {
            fire_due(state, schedule, now).await?;
        }
        if (due.len() as u32) < BATCH {
            return state.store.next_schedule_due().await;
        }
    }
}

/// Fires one due schedule for the latest occurrence at or before `now`.
async fn fire_due(
    state: &AppState,
    schedule: &Schedule,
    now: i64,
) -> Result<(), herald_store::StoreError> {
    let Some(expected) = schedule.next_run_at else {
        return Ok(());
    };
    let firing = |fire_at, next_run_at, missed, error| Firing {
        id: ScheduleRunId::new(),
        schedule_id: schedule.id,
        tenant_id: schedule.tenant_id,
        trigger: RunTrigger::Schedule,
        fire_at,
        expected_next_run_at: Some(expected),
        next_run_at,
        missed,
        error,
        node: state.node.to_string(),
        created_at: now,
    };
    let recurrence = match Recurrence::parse(&schedule.fields.cron, &schedule.fields.timezone) {
        Ok(recurrence) => recurrence,
        Err(e) => {
            // Stored before a rule changed (a time zone withdrawn): it
            // fires no more, and its history says why.
            let why = format!("the schedule cannot be computed any more: {e}");
            state
                .store
                .fire_schedule(firing(expected, None, 0, Some(why)), None)
                .await?;
            return Ok(());
        }
    };
    let caught = recurrence.catch_up(expected, now);
    let fired = crate::service::fire(
        state,
        schedule,
        firing(caught.fire_at, caught.next, caught.missed, None),
    )
    .await?;
    match fired {
        Some(run) if run.missed > 0 => tracing::info!(
            tenant = %schedule.tenant_id, schedule = %schedule.id, missed = run.missed,
            "a schedule caught up on occurrences missed while no node ran: one firing for them all"
        ),
        Some(run) if run.error.is_some() => tracing::warn!(
            tenant = %schedule.tenant_id, schedule = %schedule.id,
            error = run.error.as_deref().unwrap_or_default(),
            "a schedule fired without a message"
        ),
        // Fired, or fired by another node first.
        _ => {}
    }
    Ok(())
}
