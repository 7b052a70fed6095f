//! Values the store's tests build again and again: a message, a claim, an
//! attempt, server, account and provider settings, a person and a token, each
//! with fixed contents that a test overrides with struct update syntax.
//! Shared by the conformance suite and the migration tests (`mod builders;`).
#![allow(dead_code)]

use std::collections::HashMap;

use herald_core::{
    AccountId, DisplayName, EmailAddress, Mechanism, PersonId, PersonRole, Port, RecipientStatus,
    Role, Security, SenderPolicy, ServerId, SmtpHost, Subject, TenantId, TenantSlug, TokenId,
};
use herald_store::{
    AttemptRecord, ClaimRequest, NewAccount, NewMessage, NewToken, Person, ProviderSettings,
    ServerSettings, Store,
};

pub fn address(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

pub fn message(tenant: TenantId, to: &[&str], key: Option<&str>, at: i64) -> NewMessage {
    NewMessage {
        idempotency_key: key.map(str::to_owned),
        ..NewMessage::plain(
            tenant,
            to.iter().map(|a| address(a).into()).collect(),
            Subject::parse("subject").unwrap(),
            "body",
            at,
        )
    }
}

pub fn claim(node: &str, now: i64, lease_ms: i64) -> ClaimRequest {
    ClaimRequest {
        node: node.into(),
        incarnation: format!("{node}-first"),
        now,
        lease_ms,
        limit: 100,
        rooms: HashMap::new(),
        default_room: u32::MAX,
    }
}

pub fn attempt(outcome: RecipientStatus) -> AttemptRecord {
    AttemptRecord {
        step: Some("data".into()),
        code: Some(250),
        duration_ms: 1,
        ..AttemptRecord::new(0, "n", "s", outcome, "250 ok")
    }
}

pub async fn tenant(store: &dyn Store, slug: &str) -> TenantId {
    store
        .create_tenant(TenantSlug::parse(slug).unwrap(), slug.into())
        .await
        .unwrap()
        .id
}

pub fn server_settings(name: &str, requires_auth: bool) -> ServerSettings {
    ServerSettings {
        requires_auth,
        ..ServerSettings::new(
            name,
            SmtpHost::parse("mail.x.example").unwrap(),
            Port::new(587).unwrap(),
            Security::StartTls,
        )
    }
}

pub fn new_account(server: ServerId, username: &str, secret: Option<&str>) -> NewAccount {
    NewAccount {
        id: AccountId::new(),
        server_id: server,
        username: username.into(),
        mechanism: Mechanism::Plain,
        sealed_secret: secret.map(str::to_owned),
        oauth2: None,
        person_id: None,
    }
}

pub fn provider_settings(
    name: &str,
    server: ServerId,
    account: Option<AccountId>,
) -> ProviderSettings {
    ProviderSettings {
        name: name.into(),
        smtp_server_id: server,
        account_id: account,
        from_address: address("alerts@x.example"),
        from_name: Some(DisplayName::parse("Alerts").unwrap()),
        reply_to: None,
        fallback_recipient: Some(address("ops@x.example")),
        sender_policy: SenderPolicy::Fixed,
    }
}

pub fn person(name: &str, email: &str) -> Person {
    Person {
        id: PersonId::new(),
        tenant_id: TenantId::new(),
        name: name.into(),
        email: address(email),
        role: PersonRole::Member,
        created_at: 1_000,
    }
}

pub fn token(tenant: Option<TenantId>, person: Option<PersonId>, hash: &str) -> NewToken {
    NewToken {
        id: TokenId::new(),
        tenant_id: tenant,
        name: format!("token {hash}"),
        role: if tenant.is_some() {
            Role::Sender
        } else {
            Role::Operator
        },
        person_id: person,
        hash: hash.into(),
    }
}

/// A template of the tenant named `name`, with a subject and a text body.
pub fn new_template(tenant: TenantId, name: &str, at: i64) -> herald_store::NewTemplate {
    herald_store::NewTemplate {
        id: herald_core::TemplateId::new(),
        tenant_id: tenant,
        fields: template_fields(name, "Hello {{ name }}"),
        created_at: at,
    }
}

/// A template's fields with this name and subject.
pub fn template_fields(name: &str, subject: &str) -> herald_store::TemplateFields {
    herald_store::TemplateFields {
        name: name.into(),
        description: Some(format!("the {name} template")),
        content: herald_store::TemplateContent {
            subject: subject.into(),
            text: Some("Hi {{ name }}".into()),
            html: None,
        },
    }
}

/// A schedule's fields: every morning, from this template, to two
/// mailboxes with one in copy and one in blind copy.
pub fn schedule_fields(
    name: &str,
    template: herald_core::TemplateId,
) -> herald_store::ScheduleFields {
    herald_store::ScheduleFields {
        name: name.into(),
        cron: "0 8 * * *".into(),
        timezone: "Europe/Berlin".into(),
        template_id: template,
        data: serde_json::json!({"name": "Ada", "items": [1, 2], "nested": {"b": true, "a": null}}),
        to: vec![
            herald_core::Mailbox::from_stored("Ada Lovelace <ada@acme.example>").unwrap(),
            address("bob@acme.example").into(),
        ],
        cc: vec![address("cc@acme.example").into()],
        bcc: vec![address("audit@acme.example")],
        enabled: true,
    }
}

/// A schedule of the tenant that fires next at `next_run_at`.
pub fn new_schedule(
    tenant: TenantId,
    name: &str,
    template: herald_core::TemplateId,
    next_run_at: Option<i64>,
    at: i64,
) -> herald_store::NewSchedule {
    herald_store::NewSchedule {
        id: herald_core::ScheduleId::new(),
        tenant_id: tenant,
        fields: schedule_fields(name, template),
        next_run_at,
        created_at: at,
    }
}

/// A scheduled firing of the occurrence at `fire_at`, moving the schedule on to `next`.
pub fn firing(
    tenant: TenantId,
    schedule: herald_core::ScheduleId,
    fire_at: i64,
    next: Option<i64>,
) -> herald_store::Firing {
    herald_store::Firing {
        id: herald_core::ScheduleRunId::new(),
        schedule_id: schedule,
        tenant_id: tenant,
        trigger: herald_store::RunTrigger::Schedule,
        fire_at,
        expected_next_run_at: Some(fire_at),
        next_run_at: next,
        missed: 0,
        error: None,
        node: "n1".into(),
        created_at: fire_at + 5,
    }
}

/// A manual firing asked for at `at`.
pub fn manual_firing(
    tenant: TenantId,
    schedule: herald_core::ScheduleId,
    at: i64,
) -> herald_store::Firing {
    herald_store::Firing {
        trigger: herald_store::RunTrigger::Manual,
        expected_next_run_at: None,
        next_run_at: None,
        created_at: at,
        ..firing(tenant, schedule, at, None)
    }
}
