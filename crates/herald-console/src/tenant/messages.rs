//! A tenant's messages: the list, filtered by status, recipient and days,
//! and one message with its recipients and attempts (for mail received over
//! SMTP, who sent it and from where).

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use herald_api::gate::Sender;
use herald_api::{AppState, service};
use herald_core::{MessageId, RecipientStatus};
use herald_store::{MessageQuery, SmtpOrigin, Tenant};
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::{Id, store};
use crate::forms::FieldErrors;
use crate::gate::TenantPage;
use crate::pages::{PageResult, base};
use crate::render::{PageError, page};

/// The statuses a message can have, for the filter.
const STATUSES: &[&str] = &[
    "scheduled",
    "queued",
    "sending",
    "deferred",
    "sent",
    "failed",
    "cancelled",
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/{tenant}/messages", get(messages))
        .route("/t/{tenant}/messages/{id}", get(message))
}

#[derive(Deserialize, Default, Serialize)]
#[serde(default)]
struct MessageFilter {
    status: String,
    recipient: String,
    /// A day, `YYYY-MM-DD` (what `<input type=date>` sends), from its start.
    from: String,
    /// A day, up to its end.
    until: String,
    /// Where the page starts: the `next_cursor` of the page before.
    #[serde(skip_serializing)]
    after: String,
}

/// Messages one page of the console shows.
const PAGE: u32 = 100;

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
    TenantPage { me, tenant, .. }: TenantPage<Sender>,
    Query(filter): Query<MessageFilter>,
) -> PageResult {
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
    // A cursor that does not read is the first page again, not an error page.
    let before = service::parse_cursor(&filter.after).ok();
    let found = service::search_messages(
        &state,
        &tenant,
        MessageQuery {
            status,
            recipient,
            since,
            until,
            before,
            limit: PAGE,
            ..MessageQuery::default()
        },
    )
    .await?;
    let messages = found.messages;
    // The next page keeps the filters: the query string as given, with its cursor.
    let next = found.next_cursor.map(|cursor| {
        serde_urlencoded::to_string([
            ("status", filter.status.as_str()),
            ("recipient", filter.recipient.as_str()),
            ("from", filter.from.as_str()),
            ("until", filter.until.as_str()),
            ("after", cursor.as_str()),
        ])
        .unwrap_or_default()
    });
    let filtered = !(filter.status.is_empty()
        && filter.recipient.is_empty()
        && filter.from.is_empty()
        && filter.until.is_empty());
    Ok(page(
        "messages.html",
        context! {
            messages, filter, errors, filtered, next,
            statuses => STATUSES,
            ..base(&me, &tenant, "messages")
        },
    ))
}

async fn message(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<Sender>,
    Id(id): Id<MessageId>,
) -> PageResult {
    let message = service::message(&state, &me.caller, &tenant, id).await?;
    let received = match &message.smtp {
        Some(origin) => Some(received(&state, &tenant, origin).await?),
        None => None,
    };
    Ok(page(
        "message.html",
        context! { message, received, ..base(&me, &tenant, "messages") },
    ))
}

/// How a message came in over SMTP, by names: the credential it authenticated
/// with or the connector whose networks hold the client's address, from the
/// tenant's lists. One revoked or deleted since is no longer in them; the
/// page says so rather than showing an id that names nothing.
async fn received(
    state: &AppState,
    tenant: &Tenant,
    origin: &SmtpOrigin,
) -> Result<minijinja::Value, PageError> {
    let credential = match origin.credential_id {
        Some(id) => Some(
            store(state.store.list_smtp_credentials(tenant.id).await)?
                .into_iter()
                .find(|c| c.id == id)
                .map(|c| context! { name => c.name, username => c.username }),
        ),
        None => None,
    };
    let connector = match origin.connector_id {
        Some(id) => Some(
            store(state.store.list_smtp_connectors(tenant.id).await)?
                .into_iter()
                .find(|c| c.id == id)
                .map(|c| context! { name => c.name }),
        ),
        None => None,
    };
    // `Some(None)`: it was a credential (or connector), and it is gone.
    Ok(context! {
        client_addr => origin.client_addr.clone(),
        authenticated => credential.is_some(),
        credential => credential.flatten(),
        by_connector => connector.is_some(),
        connector => connector.flatten(),
    })
}
