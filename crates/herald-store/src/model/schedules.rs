//! The records of templates, recurring schedules and their firings.

use herald_core::{
    EmailAddress, Mailbox, MessageId, RecipientStatus, ScheduleId, ScheduleRunId, TemplateId,
    TenantId,
};
use serde::Serialize;

/// What a template renders: a subject and at least one of a text and an HTML
/// body, each MiniJinja source. Checked for syntax before it is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TemplateContent {
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

/// A template's name, description and content, as created or replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateFields {
    pub name: String,
    pub description: Option<String>,
    pub content: TemplateContent,
}

/// A template to store as its version 1.
#[derive(Clone, Debug)]
pub struct NewTemplate {
    pub id: TemplateId,
    pub tenant_id: TenantId,
    pub fields: TemplateFields,
    pub created_at: i64,
}

/// A tenant's template at its current version.
#[derive(Clone, Debug, Serialize)]
pub struct Template {
    pub id: TemplateId,
    #[serde(skip)]
    pub tenant_id: TenantId,
    pub name: String,
    pub description: Option<String>,
    /// 1 when created; every change adds one.
    pub version: u32,
    #[serde(flatten)]
    pub content: TemplateContent,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub created_at: i64,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub updated_at: i64,
}

/// The template (and its version) a message was rendered from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TemplateUse {
    pub id: TemplateId,
    pub version: u32,
}

/// A schedule's settings, as created or replaced. `cron` and `timezone` are
/// checked by the caller (they are parsed where the next firing is computed).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScheduleFields {
    pub name: String,
    /// Five fields (minute to day of week) or six (seconds first).
    pub cron: String,
    /// An IANA time zone name, such as `Europe/Berlin`.
    pub timezone: String,
    pub template_id: TemplateId,
    /// The template's variables: a JSON object.
    pub data: serde_json::Value,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<EmailAddress>,
    pub enabled: bool,
}

/// A schedule to store.
#[derive(Clone, Debug)]
pub struct NewSchedule {
    pub id: ScheduleId,
    pub tenant_id: TenantId,
    pub fields: ScheduleFields,
    /// When it fires next; `None` when disabled (or when its expression never fires again).
    pub next_run_at: Option<i64>,
    pub created_at: i64,
}

/// A tenant's recurring schedule.
#[derive(Clone, Debug, Serialize)]
pub struct Schedule {
    pub id: ScheduleId,
    #[serde(skip)]
    pub tenant_id: TenantId,
    #[serde(flatten)]
    pub fields: ScheduleFields,
    #[serde(serialize_with = "herald_core::timestamp::serialize_opt")]
    pub next_run_at: Option<i64>,
    #[serde(serialize_with = "herald_core::timestamp::serialize_opt")]
    pub last_run_at: Option<i64>,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub created_at: i64,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub updated_at: i64,
}

/// What made a schedule fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunTrigger {
    /// Its time came (or had passed while no node ran).
    Schedule,
    /// `POST …/schedules/{id}/run`: ad hoc, outside its times.
    Manual,
}

impl RunTrigger {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RunTrigger::Schedule => "schedule",
            RunTrigger::Manual => "manual",
        }
    }

    /// Reads a stored word.
    pub fn from_stored(s: &str) -> Option<Self> {
        match s {
            "schedule" => Some(RunTrigger::Schedule),
            "manual" => Some(RunTrigger::Manual),
            _ => None,
        }
    }
}

/// What a change of a schedule does to its next firing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextRun {
    /// Leaves the stored `next_run_at` as it is: a firing that moved it on
    /// meanwhile is not undone by a change of the schedule's data.
    Keep,
    /// Sets it (`None`: the schedule fires no more).
    At(Option<i64>),
}

/// One firing to record, with the message it made (`None` when none could
/// be made: `error` says why).
#[derive(Clone, Debug)]
pub struct Firing {
    pub id: ScheduleRunId,
    pub schedule_id: ScheduleId,
    pub tenant_id: TenantId,
    pub trigger: RunTrigger,
    /// The occurrence it stands for (after downtime, the latest one missed);
    /// for a manual run, when it was asked for.
    pub fire_at: i64,
    /// For a scheduled firing: the schedule's `next_run_at` this firing
    /// consumes. The firing is recorded only while the schedule still says
    /// so: of several nodes firing the same occurrence, one records it.
    pub expected_next_run_at: Option<i64>,
    /// For a scheduled firing: the schedule's next occurrence after it.
    pub next_run_at: Option<i64>,
    /// Earlier occurrences folded into this one after downtime (0 normally).
    pub missed: u32,
    pub error: Option<String>,
    /// The node that fired it.
    pub node: String,
    pub created_at: i64,
}

/// One firing as listed: what made it, and the message it made with that message's status.
#[derive(Clone, Debug, Serialize)]
pub struct ScheduleRun {
    pub id: ScheduleRunId,
    pub schedule_id: ScheduleId,
    pub trigger: RunTrigger,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub fire_at: i64,
    /// Occurrences missed while no node ran, caught up by this one firing.
    pub missed: u32,
    /// True when this firing caught up on missed occurrences.
    pub caught_up: bool,
    pub message_id: Option<MessageId>,
    /// The message's status now (`None` when no message was made).
    pub status: Option<RecipientStatus>,
    /// Why no message was made.
    pub error: Option<String>,
    pub node: String,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub created_at: i64,
}
