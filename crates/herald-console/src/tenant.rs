//! A tenant's pages: dashboard, SMTP servers and their accounts, notification
//! providers, tenant properties, test messages, messages and the audit log.
//!
//! Each handler loads the tenant through `Caller::tenant` (role and tenant
//! isolation: another tenant's pages are 404) and acts through the API's services.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use herald_api::{ApiError, AppState, Caller, service};
use herald_core::timestamp::now_ms;
use herald_core::{AccountId, MessageId, ProviderId, RecipientStatus, Role, ServerId};
use herald_store::{MessageQuery, SmtpAccount, SmtpServer, Tenant};
use minijinja::{Value, context};
use serde::Deserialize;

use crate::forms::{AccountForm, FieldErrors, Problems, ProviderForm, ServerForm};
use crate::pages::{base, see};
use crate::render::{PageError, page, page_with};
use crate::session::Signed;

const ADMIN: &[Role] = &[Role::TenantAdmin];
const READERS: &[Role] = &[Role::TenantAdmin, Role::Sender];
/// The statuses a message can have, for the filter.
const STATUSES: &[&str] = &["queued", "sending", "deferred", "sent", "failed"];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/{tenant}", get(dashboard))
        .route("/t/{tenant}/servers", get(servers).post(create_server))
        .route("/t/{tenant}/servers/new", get(new_server))
        .route(
            "/t/{tenant}/servers/{id}",
            get(edit_server).post(update_server),
        )
        .route("/t/{tenant}/servers/{id}/delete", post(delete_server))
        .route("/t/{tenant}/servers/{id}/accounts", post(create_account))
        .route(
            "/t/{tenant}/servers/{id}/accounts/{account}/delete",
            post(delete_account),
        )
        .route(
            "/t/{tenant}/providers",
            get(providers).post(create_provider),
        )
        .route("/t/{tenant}/providers/new", get(new_provider))
        .route(
            "/t/{tenant}/providers/{id}",
            get(edit_provider).post(update_provider),
        )
        .route("/t/{tenant}/providers/{id}/delete", post(delete_provider))
        .route("/t/{tenant}/providers/{id}/test", post(test_provider))
        .route("/t/{tenant}/tests/{id}", get(test_result))
        .route("/t/{tenant}/tests/{id}/steps", get(test_steps))
        .route("/t/{tenant}/properties", get(properties).post(set_provider))
        .route("/t/{tenant}/properties/refresh", post(refresh))
        .route("/t/{tenant}/messages", get(messages))
        .route("/t/{tenant}/messages/{id}", get(message))
        .route("/t/{tenant}/audit", get(audit))
        .route("/t/{tenant}/persons", get(persons).post(create_person))
        .route("/t/{tenant}/persons/{id}/password", post(set_password))
}

type PageResult = Result<Response, PageError>;

/// Loads the tenant for this caller, or the same 404 for another tenant as for none.
async fn tenant(
    state: &AppState,
    me: &Signed,
    slug: &str,
    roles: &[Role],
) -> Result<Tenant, PageError> {
    Ok(me.caller.tenant(state, slug, roles).await?)
}

/// An id from the path; a malformed one names nothing, so it is a 404.
fn path_id<T: std::str::FromStr>(raw: &str, what: &'static str) -> Result<T, PageError> {
    raw.parse().map_err(|_| PageError(ApiError::NotFound(what)))
}

fn store<T>(result: herald_store::Result<T>) -> Result<T, PageError> {
    result.map_err(|e| PageError(e.into()))
}

fn alive_workers(state: &AppState, nodes: &[herald_store::NodeRecord]) -> usize {
    let now = now_ms();
    nodes
        .iter()
        .filter(|n| {
            n.roles.iter().any(|r| r == "worker")
                && now - n.heartbeat_at <= state.alive_within.as_millis() as i64
        })
        .count()
}

async fn dashboard(
    State(state): State<AppState>,
    me: Signed,
    Path(slug): Path<String>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, READERS).await?;
    let since = now_ms() - 24 * 3_600_000;
    let counts = store(state.store.count_messages(tenant.id, since).await)?;
    let nodes = store(state.store.list_nodes().await)?;
    let admin = me.caller.is_operator() || me.session.role() == Role::TenantAdmin;
    let (servers, providers, properties) = if admin {
        (
            store(state.store.list_servers(tenant.id).await)?.len(),
            store(state.store.list_providers(tenant.id).await)?.len(),
            Value::from_serialize(service::properties(&state, &tenant).await?),
        )
    } else {
        (0, 0, Value::from(()))
    };
    Ok(page(
        "dashboard.html",
        context! {
            servers, providers, properties,
            queued => counts.queued + counts.sending,
            deferred => counts.deferred,
            failed => counts.failed,
            sent => counts.sent,
            workers => alive_workers(&state, &nodes),
            ..base(&me, &tenant, "dashboard")
        },
    ))
}

// SMTP servers and accounts.

async fn servers(
    State(state): State<AppState>,
    me: Signed,
    Path(slug): Path<String>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let servers = store(state.store.list_servers(tenant.id).await)?;
    Ok(page(
        "servers.html",
        context! { servers, ..base(&me, &tenant, "servers") },
    ))
}

#[derive(Deserialize)]
struct PresetQuery {
    preset: Option<String>,
}

fn preset(id: Option<&str>) -> Option<serde_json::Value> {
    let id = id?;
    herald_core::presets::all()
        .as_array()?
        .iter()
        .find(|p| p["id"] == id)
        .cloned()
}

/// The server form, new (`server` None) or editing, with what was typed and its errors.
#[allow(clippy::too_many_arguments)]
async fn server_page(
    state: &AppState,
    me: &Signed,
    tenant: &Tenant,
    server: Option<&SmtpServer>,
    form: &ServerForm,
    problems: Problems,
    chosen: Option<serde_json::Value>,
    status: StatusCode,
) -> PageResult {
    let (accounts, persons) = match server {
        Some(server) => (
            store(state.store.list_accounts(tenant.id, server.id).await)?,
            store(state.store.list_persons(tenant.id).await)?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    // The same words the API's server answer gives, from the stored entry.
    let warnings = server.map(|s| s.settings.warnings()).unwrap_or_default();
    Ok(page_with(
        status,
        "server_form.html",
        context! {
            server, form, problems, accounts, persons, warnings,
            account => AccountForm::default(),
            account_problems => Problems::default(),
            presets => herald_core::presets::all(),
            preset => chosen,
            ..base(me, tenant, "servers")
        },
    ))
}

async fn new_server(
    State(state): State<AppState>,
    me: Signed,
    Path(slug): Path<String>,
    Query(query): Query<PresetQuery>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let chosen = preset(query.preset.as_deref());
    let form = ServerForm::from_preset(chosen.as_ref().map(|p| &p["smtp_server"]));
    server_page(
        &state,
        &me,
        &tenant,
        None,
        &form,
        Problems::default(),
        chosen,
        StatusCode::OK,
    )
    .await
}

async fn create_server(
    State(state): State<AppState>,
    me: Signed,
    Path(slug): Path<String>,
    Form(form): Form<ServerForm>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let outcome = match form.body(false) {
        Err(fields) => Err(invalid(fields)),
        Ok(body) => service::create_server(&state, &me.caller, &tenant, body)
            .await
            .map_err(Problems::from_api),
    };
    match outcome {
        Ok(server) => Ok(see(format!("/t/{slug}/servers/{}", server.id))),
        Err((status, problems)) => {
            server_page(&state, &me, &tenant, None, &form, problems, None, status).await
        }
    }
}

fn invalid(fields: FieldErrors) -> (StatusCode, Problems) {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Problems {
            fields,
            general: None,
        },
    )
}

async fn edit_server(
    State(state): State<AppState>,
    me: Signed,
    Path((slug, id)): Path<(String, String)>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let server = store(
        state
            .store
            .server(tenant.id, path_id(&id, "SMTP server")?)
            .await,
    )?;
    let form = ServerForm::from_server(&server);
    server_page(
        &state,
        &me,
        &tenant,
        Some(&server),
        &form,
        Problems::default(),
        None,
        StatusCode::OK,
    )
    .await
}

async fn update_server(
    State(state): State<AppState>,
    me: Signed,
    Path((slug, id)): Path<(String, String)>,
    Form(form): Form<ServerForm>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let id: ServerId = path_id(&id, "SMTP server")?;
    let server = store(state.store.server(tenant.id, id).await)?;
    let outcome = match form.body(true) {
        Err(fields) => Err(invalid(fields)),
        Ok(body) => service::update_server(&state, &me.caller, &tenant, id, body)
            .await
            .map_err(Problems::from_api),
    };
    match outcome {
        Ok(_) => Ok(see(format!("/t/{slug}/servers/{id}"))),
        Err((status, problems)) => {
            server_page(
                &state,
                &me,
                &tenant,
                Some(&server),
                &form,
                problems,
                None,
                status,
            )
            .await
        }
    }
}

async fn delete_server(
    State(state): State<AppState>,
    me: Signed,
    Path((slug, id)): Path<(String, String)>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let id: ServerId = path_id(&id, "SMTP server")?;
    service::delete_server(&state, &me.caller, &tenant, id).await?;
    Ok(see(format!("/t/{slug}/servers")))
}

async fn create_account(
    State(state): State<AppState>,
    me: Signed,
    Path((slug, id)): Path<(String, String)>,
    Form(form): Form<AccountForm>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let id: ServerId = path_id(&id, "SMTP server")?;
    let server = store(state.store.server(tenant.id, id).await)?;
    match service::create_account(&state, &me.caller, &tenant, id, form.body()).await {
        Ok(_) => Ok(see(format!("/t/{slug}/servers/{id}#accounts"))),
        Err(error) => {
            let (status, account_problems) = Problems::from_api(error);
            let accounts: Vec<SmtpAccount> = store(state.store.list_accounts(tenant.id, id).await)?;
            let persons = store(state.store.list_persons(tenant.id).await)?;
            Ok(page_with(
                status,
                "server_form.html",
                context! {
                    server => &server,
                    form => ServerForm::from_server(&server),
                    problems => Problems::default(),
                    accounts, persons,
                    account => form,
                    account_problems,
                    presets => herald_core::presets::all(),
                    ..base(&me, &tenant, "servers")
                },
            ))
        }
    }
}

async fn delete_account(
    State(state): State<AppState>,
    me: Signed,
    Path((slug, id, account)): Path<(String, String, String)>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let id: ServerId = path_id(&id, "SMTP server")?;
    let account: AccountId = path_id(&account, "SMTP account")?;
    service::delete_account(&state, &me.caller, &tenant, id, account).await?;
    Ok(see(format!("/t/{slug}/servers/{id}#accounts")))
}

// Notification providers and test messages.

async fn providers(
    State(state): State<AppState>,
    me: Signed,
    Path(slug): Path<String>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let providers = store(state.store.list_providers(tenant.id).await)?;
    let servers = store(state.store.list_servers(tenant.id).await)?;
    Ok(page(
        "providers.html",
        context! {
            providers, servers,
            active => tenant.notification_provider_id.map(|p| p.to_string()),
            ..base(&me, &tenant, "providers")
        },
    ))
}

/// Every account of the tenant's servers, for the provider form's choice.
async fn all_accounts(
    state: &AppState,
    tenant: &Tenant,
    servers: &[SmtpServer],
) -> Result<Vec<Value>, PageError> {
    let mut accounts = Vec::new();
    for server in servers {
        for account in store(state.store.list_accounts(tenant.id, server.id).await)? {
            accounts.push(context! {
                id => account.id.to_string(),
                label => format!("{} on {}", account.username, server.settings.name),
            });
        }
    }
    Ok(accounts)
}

async fn provider_page(
    state: &AppState,
    me: &Signed,
    tenant: &Tenant,
    provider_id: Option<ProviderId>,
    form: &ProviderForm,
    problems: Problems,
    status: StatusCode,
) -> PageResult {
    let servers = store(state.store.list_servers(tenant.id).await)?;
    let accounts = all_accounts(state, tenant, &servers).await?;
    Ok(page_with(
        status,
        "provider_form.html",
        context! {
            provider_id => provider_id.map(|p| p.to_string()),
            form, problems, servers, accounts,
            ..base(me, tenant, "providers")
        },
    ))
}

async fn new_provider(
    State(state): State<AppState>,
    me: Signed,
    Path(slug): Path<String>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let form = ProviderForm {
        sender_policy: "fixed".into(),
        ..ProviderForm::default()
    };
    provider_page(
        &state,
        &me,
        &tenant,
        None,
        &form,
        Problems::default(),
        StatusCode::OK,
    )
    .await
}

async fn create_provider(
    State(state): State<AppState>,
    me: Signed,
    Path(slug): Path<String>,
    Form(form): Form<ProviderForm>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    match service::create_provider(&state, &me.caller, &tenant, form.body(false)).await {
        Ok(_) => Ok(see(format!("/t/{slug}/providers"))),
        Err(error) => {
            let (status, problems) = Problems::from_api(error);
            provider_page(&state, &me, &tenant, None, &form, problems, status).await
        }
    }
}

async fn edit_provider(
    State(state): State<AppState>,
    me: Signed,
    Path((slug, id)): Path<(String, String)>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let id: ProviderId = path_id(&id, "provider")?;
    let provider = store(state.store.provider(tenant.id, id).await)?;
    let form = ProviderForm::from_provider(&provider);
    provider_page(
        &state,
        &me,
        &tenant,
        Some(id),
        &form,
        Problems::default(),
        StatusCode::OK,
    )
    .await
}

async fn update_provider(
    State(state): State<AppState>,
    me: Signed,
    Path((slug, id)): Path<(String, String)>,
    Form(form): Form<ProviderForm>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let id: ProviderId = path_id(&id, "provider")?;
    match service::update_provider(&state, &me.caller, &tenant, id, form.body(true)).await {
        Ok(_) => Ok(see(format!("/t/{slug}/providers"))),
        Err(error) => {
            let (status, problems) = Problems::from_api(error);
            provider_page(&state, &me, &tenant, Some(id), &form, problems, status).await
        }
    }
}

async fn delete_provider(
    State(state): State<AppState>,
    me: Signed,
    Path((slug, id)): Path<(String, String)>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let id: ProviderId = path_id(&id, "provider")?;
    service::delete_provider(&state, &me.caller, &tenant, id).await?;
    Ok(see(format!("/t/{slug}/providers")))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TestForm {
    to: String,
}

async fn test_provider(
    State(state): State<AppState>,
    me: Signed,
    Path((slug, id)): Path<(String, String)>,
    Form(form): Form<TestForm>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let id: ProviderId = path_id(&id, "provider")?;
    let to = Some(form.to.trim().to_owned()).filter(|t| !t.is_empty());
    let submitted = service::send_test_message(&state, &me.caller, &tenant, id, to).await?;
    Ok(see(format!("/t/{slug}/tests/{}", submitted.id)))
}

/// What the test result shows: the message's status and, once its attempt is
/// recorded, each step of the session with the server's words.
async fn test_context(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: &str,
) -> Result<Value, PageError> {
    let id = path_id::<MessageId>(id, "message")?;
    let message = service::message(state, caller, tenant, id).await?;
    if message.test_provider_id.is_none() {
        return Err(PageError(ApiError::NotFound("test message")));
    }
    let recipient = message.recipients.first();
    let attempt = recipient.and_then(|r| r.attempts.last());
    let finished = matches!(
        message.status,
        RecipientStatus::Sent | RecipientStatus::Failed
    ) || attempt.is_some();
    Ok(context! {
        message_id => message.id.to_string(),
        status => message.status.as_str(),
        to => recipient.map(|r| r.address.clone()),
        attempt,
        steps => attempt.and_then(|a| a.diagnosis.clone()),
        finished,
    })
}

async fn test_result(
    State(state): State<AppState>,
    me: Signed,
    Path((slug, id)): Path<(String, String)>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let result = test_context(&state, &me.caller, &tenant, &id).await?;
    Ok(page(
        "test_result.html",
        context! { result, ..base(&me, &tenant, "providers") },
    ))
}

/// The steps alone, which the result page polls (htmx) until the attempt is recorded.
async fn test_steps(
    State(state): State<AppState>,
    me: Signed,
    Path((slug, id)): Path<(String, String)>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let result = test_context(&state, &me.caller, &tenant, &id).await?;
    Ok(page(
        "test_steps.html",
        context! { result, ..base(&me, &tenant, "providers") },
    ))
}

// Tenant properties.

async fn properties_page(
    state: &AppState,
    me: &Signed,
    tenant: &Tenant,
    problems: Problems,
    status: StatusCode,
) -> PageResult {
    let properties = service::properties(state, tenant).await?;
    let providers = store(state.store.list_providers(tenant.id).await)?;
    Ok(page_with(
        status,
        "properties.html",
        context! {
            properties, providers, problems,
            chosen => tenant.notification_provider_id.map(|p| p.to_string()),
            ..base(me, tenant, "properties")
        },
    ))
}

async fn properties(
    State(state): State<AppState>,
    me: Signed,
    Path(slug): Path<String>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    properties_page(&state, &me, &tenant, Problems::default(), StatusCode::OK).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PropertiesForm {
    notification_provider_id: String,
}

async fn set_provider(
    State(state): State<AppState>,
    me: Signed,
    Path(slug): Path<String>,
    Form(form): Form<PropertiesForm>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let chosen = Some(form.notification_provider_id).filter(|p| !p.is_empty());
    match service::set_provider(&state, &me.caller, &tenant, chosen).await {
        Ok(_) => Ok(see(format!("/t/{slug}/properties"))),
        Err(error) => {
            let (status, problems) = Problems::from_api(error);
            properties_page(&state, &me, &tenant, problems, status).await
        }
    }
}

async fn refresh(
    State(state): State<AppState>,
    me: Signed,
    Path(slug): Path<String>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    service::refresh(&state, &me.caller, &tenant).await?;
    Ok(see(format!("/t/{slug}/properties")))
}

// Messages and the audit log.

#[derive(Deserialize, Default, serde::Serialize)]
#[serde(default)]
struct MessageFilter {
    status: String,
    recipient: String,
    /// A day, `YYYY-MM-DD` (what `<input type=date>` sends), from its start.
    from: String,
    /// A day, up to its end.
    until: String,
}

/// Milliseconds at the start of a `YYYY-MM-DD` day (UTC).
fn day_start(field: &str, typed: &str, errors: &mut FieldErrors) -> Option<i64> {
    let typed = typed.trim();
    if typed.is_empty() {
        return None;
    }
    let parsed = time::Date::parse(
        typed,
        time::macros::format_description!("[year]-[month]-[day]"),
    );
    match parsed {
        Ok(day) => Some(day.midnight().assume_utc().unix_timestamp() * 1000),
        Err(_) => {
            errors.insert(field.to_owned(), "must be a date, YYYY-MM-DD".into());
            None
        }
    }
}

async fn messages(
    State(state): State<AppState>,
    me: Signed,
    Path(slug): Path<String>,
    Query(filter): Query<MessageFilter>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, READERS).await?;
    let mut errors = FieldErrors::new();
    let since = day_start("from", &filter.from, &mut errors);
    let until = day_start("until", &filter.until, &mut errors).map(|t| t + 24 * 3_600_000);
    let status = match filter.status.as_str() {
        "" => None,
        word => match RecipientStatus::from_stored(word) {
            Some(s) => Some(s),
            None => {
                errors.insert(
                    "status".into(),
                    format!("must be one of: {}", STATUSES.join(", ")),
                );
                None
            }
        },
    };
    let recipient = Some(filter.recipient.trim().to_owned()).filter(|r| !r.is_empty());
    let found = store(
        state
            .store
            .search_messages(
                tenant.id,
                MessageQuery {
                    recipient,
                    since,
                    until,
                    limit: 1_000,
                },
            )
            .await,
    )?;
    let messages: Vec<_> = found
        .into_iter()
        .filter(|m| status.is_none_or(|s| m.status == s))
        .take(200)
        .collect();
    let filtered = !(filter.status.is_empty()
        && filter.recipient.is_empty()
        && filter.from.is_empty()
        && filter.until.is_empty());
    Ok(page(
        "messages.html",
        context! {
            messages, filter, errors, filtered,
            statuses => STATUSES,
            ..base(&me, &tenant, "messages")
        },
    ))
}

async fn message(
    State(state): State<AppState>,
    me: Signed,
    Path((slug, id)): Path<(String, String)>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, READERS).await?;
    let id = path_id(&id, "message")?;
    let message = service::message(&state, &me.caller, &tenant, id).await?;
    Ok(page(
        "message.html",
        context! { message, ..base(&me, &tenant, "messages") },
    ))
}

async fn audit(State(state): State<AppState>, me: Signed, Path(slug): Path<String>) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let entries = store(state.store.list_audit(tenant.id, 200).await)?;
    Ok(page(
        "audit.html",
        context! { entries, ..base(&me, &tenant, "audit") },
    ))
}

// Persons and their console passwords.

#[derive(Deserialize, Default, serde::Serialize)]
#[serde(default)]
struct PersonForm {
    name: String,
    email: String,
    role: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PasswordForm {
    password: String,
}

/// The persons page, with the new-person form as typed and any errors; a
/// password error is shown beside the person it was for.
async fn persons_page(
    state: &AppState,
    me: &Signed,
    tenant: &Tenant,
    form: &PersonForm,
    problems: Problems,
    password_problem: Option<(String, Problems)>,
    status: StatusCode,
) -> PageResult {
    let persons = store(state.store.list_persons(tenant.id).await)?;
    let (password_for, password_problems) = match password_problem {
        Some((person, problems)) => (Some(person), problems),
        None => (None, Problems::default()),
    };
    Ok(page_with(
        status,
        "persons.html",
        context! {
            persons, form, problems, password_for, password_problems,
            ..base(me, tenant, "persons")
        },
    ))
}

async fn persons(
    State(state): State<AppState>,
    me: Signed,
    Path(slug): Path<String>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let form = PersonForm {
        role: "member".into(),
        ..PersonForm::default()
    };
    persons_page(
        &state,
        &me,
        &tenant,
        &form,
        Problems::default(),
        None,
        StatusCode::OK,
    )
    .await
}

async fn create_person(
    State(state): State<AppState>,
    me: Signed,
    Path(slug): Path<String>,
    Form(form): Form<PersonForm>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let body = service::PersonBody {
        name: form.name.clone(),
        email: form.email.trim().to_owned(),
        role: Some(form.role.clone()).filter(|r| !r.is_empty()),
    };
    match service::create_person(&state, &me.caller, &tenant, body).await {
        Ok(_) => Ok(see(format!("/t/{slug}/persons"))),
        Err(error) => {
            let (status, problems) = Problems::from_api(error);
            persons_page(&state, &me, &tenant, &form, problems, None, status).await
        }
    }
}

async fn set_password(
    State(state): State<AppState>,
    me: Signed,
    Path((slug, id)): Path<(String, String)>,
    Form(form): Form<PasswordForm>,
) -> PageResult {
    let tenant = tenant(&state, &me, &slug, ADMIN).await?;
    let person: herald_core::PersonId = path_id(&id, "person")?;
    match service::set_person_password(&state, &me.caller, &tenant, person, &form.password).await {
        Ok(()) => Ok(see(format!("/t/{slug}/persons"))),
        Err(error) => {
            let (status, problems) = Problems::from_api(error);
            let form = PersonForm {
                role: "member".into(),
                ..PersonForm::default()
            };
            persons_page(
                &state,
                &me,
                &tenant,
                &form,
                Problems::default(),
                Some((id, problems)),
                status,
            )
            .await
        }
    }
}
