//! Submitting messages (answered only once they are committed) and reading what happened to them.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_core::timestamp::parse_rfc3339;
use herald_core::{
    EmailAddress, HeaderName, HeaderValue, Invalid, Mailbox, MessageId, RecipientStatus, Subject,
};
use herald_store::{MessageQuery, MessageView, NewMessage, OnBehalf};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Check;
use crate::body::Body;
use crate::gate::{Authorised, Sender};
use crate::openapi::{ObjectPath, TenantPath, answers};
use crate::{ApiError, AppState};
use herald_metrics::Source;

/// The OpenAPI paths of this module's routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(submit, submit_batch, list, show, cancel))]
pub(crate) struct Api;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{tenant}/messages", post(submit).get(list))
        .route("/v1/tenants/{tenant}/messages/batch", post(submit_batch))
        .route(
            "/v1/tenants/{tenant}/messages/{id}",
            get(show).delete(cancel),
        )
}

/// A message to send. Without any recipient it goes to the provider's
/// fallback recipient. Its content is `subject` with `text` and/or `html`,
/// or a `template` rendered with `data`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    /// Mailboxes: `addr`, `Name <addr>` or `"Name" <addr>`.
    to: Option<Vec<String>>,
    #[serde(default)]
    cc: Vec<String>,
    #[serde(default)]
    bcc: Vec<String>,
    /// Required unless `template` is given.
    subject: Option<String>,
    /// The plain text part; `text`, `html` or both (unless `template` is given).
    text: Option<String>,
    html: Option<String>,
    /// A template of the tenant (its name or id) to render the subject,
    /// text and html from, instead of giving them.
    template: Option<String>,
    /// The template's variables: a JSON object. A variable the template
    /// uses and `data` lacks refuses the message (422 naming it).
    #[schema(value_type = Option<Object>)]
    #[serde(default, deserialize_with = "crate::body::unique_keys")]
    data: Option<Value>,
    /// When to send it (RFC 3339), at most a year ahead; until then it is
    /// `scheduled` and may be cancelled. A time already past sends at once.
    #[schema(format = DateTime)]
    send_at: Option<String>,
    reply_to: Option<String>,
    /// The e-mail address of a person of the tenant the message is sent on behalf of.
    on_behalf_of: Option<String>,
    /// Custom header fields, by name, in the order given.
    #[schema(value_type = BTreeMap<String, String>)]
    #[serde(default, deserialize_with = "crate::body::string_pairs")]
    headers: Vec<(String, String)>,
    /// A repeated key answers the earlier message (`duplicate: true`) instead of sending again.
    idempotency_key: Option<String>,
    #[serde(default, deserialize_with = "crate::body::objects")]
    attachments: Vec<AttachmentBody>,
}

/// A file sent with a message.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AttachmentBody {
    filename: String,
    content_type: String,
    content_base64: String,
    /// Makes the file an inline part the HTML shows as `cid:<content_id>`.
    content_id: Option<String>,
}

/// Most files one message may carry.
const MAX_ATTACHMENTS: usize = 100;

/// A file name: 1 to 255 characters, none a control character or a path separator.
fn filename(input: &str) -> Result<String, Invalid> {
    let count = input.chars().count();
    if count == 0
        || count > 255
        || input
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\')
    {
        return Err(Invalid::new(
            "must be 1 to 255 characters without control characters, / or \\",
        ));
    }
    Ok(input.to_owned())
}

/// RFC 2045 5.1 token characters.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

/// A media type as `type/subtype` (RFC 2045 5.1). Parameters are refused:
/// Herald writes the part's header itself, and a charset belongs to the
/// bytes, which it sends as they are.
fn media_type(input: &str) -> Result<String, Invalid> {
    match input.split_once('/') {
        Some((kind, subtype)) if is_token(kind) && is_token(subtype) => Ok(input.to_owned()),
        _ => Err(Invalid::new(
            "must be a media type type/subtype of RFC 2045 token characters, without parameters",
        )),
    }
}

/// A content id (RFC 2392, written inside `<>`): 1 to 200 printable ASCII
/// characters without spaces, `<` or `>`. An `@` is not required: mail
/// readers resolve `cid:` references without one.
fn content_id(input: &str) -> Result<String, Invalid> {
    if input.is_empty()
        || input.len() > 200
        || !input
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
    {
        return Err(Invalid::new(
            "must be 1 to 200 printable ASCII characters without spaces, < or >",
        ));
    }
    Ok(input.to_owned())
}

fn base64_content(input: &str) -> Result<Vec<u8>, Invalid> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(input)
        .map_err(|_| {
            Invalid::new("must be base64 (RFC 4648: the standard alphabet, padded, no line breaks)")
        })
}

/// The files of a message, each field checked under its index.
fn attachments(
    check: &mut Check,
    given: Vec<AttachmentBody>,
    has_html: bool,
) -> Vec<herald_store::Attachment> {
    if given.len() > MAX_ATTACHMENTS {
        check.fail(
            "attachments",
            &format!(
                "must hold at most {MAX_ATTACHMENTS} files (got {})",
                given.len()
            ),
        );
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut files = Vec::with_capacity(given.len());
    for (i, file) in given.into_iter().enumerate() {
        let at = |field: &str| format!("attachments[{i}].{field}");
        let name = check.take(&at("filename"), filename(&file.filename));
        let kind = check.take(&at("content_type"), media_type(&file.content_type));
        let content = check.take(&at("content_base64"), base64_content(&file.content_base64));
        let id = check.opt(&at("content_id"), file.content_id.as_deref(), content_id);
        if let Some(id) = &id {
            if !has_html {
                check.fail(
                    &at("content_id"),
                    "makes an inline part of the html, and the message has no html",
                );
            } else if !ids.insert(id.clone()) {
                check.fail(&at("content_id"), "must be unique among the attachments");
            }
        }
        if let (Some(filename), Some(content_type), Some(content)) = (name, kind, content) {
            files.push(herald_store::Attachment {
                filename,
                content_type,
                content_id: id,
                content,
            });
        }
    }
    files
}

/// Mailboxes (`addr`, `Name <addr>`, `"Name" <addr>`), each checked under its own index.
pub(crate) fn mailbox_list(check: &mut Check, field: &str, raw: &[String]) -> Vec<Mailbox> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, a)| check.take(&format!("{field}[{i}]"), Mailbox::parse(a)))
        .collect()
}

/// Bcc addresses, checked like [`mailbox_list`]. Nobody sees a Bcc
/// recipient's name: only the address is kept.
pub(crate) fn bcc_list(check: &mut Check, raw: &[String]) -> Vec<EmailAddress> {
    mailbox_list(check, "bcc", raw)
        .into_iter()
        .map(|m| m.address)
        .collect()
}

/// Refuses more recipients in to, cc and bcc together than the node allows.
pub(crate) fn check_recipient_total(check: &mut Check, state: &AppState, total: usize) {
    if total > state.limits.max_recipients {
        check.fail(
            "to",
            &format!(
                "with cc and bcc must hold at most {} recipients (got {total})",
                state.limits.max_recipients
            ),
        );
    }
}

fn body_text(input: &str) -> Result<(), Invalid> {
    if input.contains('\0') {
        return Err(Invalid::new("must not contain NUL"));
    }
    Ok(())
}

fn idempotency_key(input: &str) -> Result<String, Invalid> {
    if input.is_empty() || input.len() > 200 || !input.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(Invalid::new(
            "must be 1 to 200 printable ASCII characters without spaces",
        ));
    }
    Ok(input.to_owned())
}

/// Submits a message, answered once it is committed.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/messages", tag = "messages", params(TenantPath),
    request_body = MessageBody,
    responses(
        (status = 202, description = "Stored; it will be sent", body = answers::Submitted),
        (status = 429, description = "The tenant's queue is full (`queue-full`); see Retry-After", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn submit(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<Sender>,
    body: Body<MessageBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let refused = |e| {
        state.count_refused(Source::Api, 1);
        e
    };
    let message = prepare(&state, &tenant, body.parse().map_err(refused)?)
        .await
        .map_err(refused)?;
    // The store answers only after the commit's fsync: a 202 is a durable promise.
    let submitted = state
        .store_mail(vec![message])
        .await
        .map_err(|e| refused(e.into()))?
        .remove(0);
    state.count_submitted(Source::Api, std::slice::from_ref(&submitted));
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({"id": submitted.id, "status": submitted.status, "duplicate": submitted.duplicate}),
        ),
    ))
}

/// Most messages in one batch submission.
const MAX_BATCH: usize = 1000;

/// Up to 1,000 messages, each validated and answered on its own.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    #[schema(value_type = Vec<MessageBody>)]
    #[serde(deserialize_with = "crate::body::each_with_unique_keys")]
    messages: Vec<Value>,
}

/// Submits up to 1,000 messages at once.
///
/// Each is validated on its own and
/// answered on its own: a refused message does not refuse the others. The
/// accepted ones are stored in one transaction before the answer.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/messages/batch", tag = "messages", params(TenantPath),
    request_body = BatchBody,
    responses(
        (status = 200, description = "One result per message, in order", body = answers::BatchAnswer),
        (status = 429, description = "The tenant's queue is full (`queue-full`); see Retry-After", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn submit_batch(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<Sender>,
    body: Body<BatchBody>,
) -> Result<Json<Value>, ApiError> {
    let batch = body.parse()?;
    if batch.messages.len() > MAX_BATCH {
        return Err(ApiError::field(
            Invalid::new(format!(
                "must hold at most {MAX_BATCH} messages (got {})",
                batch.messages.len()
            ))
            .at("messages"),
        ));
    }
    let mut results: Vec<Value> = Vec::with_capacity(batch.messages.len());
    let mut ready = Vec::new();
    for (index, raw) in batch.messages.into_iter().enumerate() {
        let parsed = serde_path_to_error::deserialize(raw)
            .map(|crate::body::AnObject(body): crate::body::AnObject<MessageBody>| body)
            .map_err(crate::body::refusal);
        let prepared = match parsed {
            Ok(body) => prepare(&state, &tenant, body).await,
            Err(e) => Err(e),
        };
        match prepared {
            Ok(message) => {
                ready.push((index, message));
                results.push(Value::Null);
            }
            Err(error) => results.push(json!({"index": index, "error": error.problem()})),
        }
    }
    // The accepted messages are stored in one transaction: one commit for the batch.
    let (indexes, messages): (Vec<usize>, Vec<NewMessage>) = ready.into_iter().unzip();
    let mut accepted = 0;
    if !messages.is_empty() {
        match state.store_mail(messages).await {
            Ok(submitted) => {
                state.count_submitted(Source::Api, &submitted);
                for (index, submitted) in indexes.into_iter().zip(submitted) {
                    accepted += 1;
                    results[index] = json!({"index": index, "id": submitted.id, "status": submitted.status, "duplicate": submitted.duplicate});
                }
            }
            // A full queue refuses the whole request, as for a single
            // submission: the client is to wait (Retry-After), not to fix anything.
            Err(error @ herald_store::StoreError::QueueFull { .. }) => {
                state.count_refused(Source::Api, results.len() as u64);
                return Err(error.into());
            }
            Err(error) => {
                let problem = ApiError::from(error).problem();
                for index in indexes {
                    results[index] = json!({"index": index, "error": problem});
                }
            }
        }
    }
    let refused = results.len() - accepted;
    state.count_refused(Source::Api, refused as u64);
    Ok(Json(
        json!({"results": results, "accepted": accepted, "refused": refused}),
    ))
}

/// Validates a submission and turns it into a message to store.
async fn prepare(
    state: &AppState,
    tenant: &herald_store::Tenant,
    mut body: MessageBody,
) -> Result<NewMessage, ApiError> {
    let template = content_from_template(state, tenant, &mut body).await?;
    let mut check = Check::default();
    let given_to = body.to.unwrap_or_default();
    let mut to = mailbox_list(&mut check, "to", &given_to);
    let cc = mailbox_list(&mut check, "cc", &body.cc);
    let bcc = bcc_list(&mut check, &body.bcc);
    let total = given_to.len() + body.cc.len() + body.bcc.len();
    check_recipient_total(&mut check, state, total);
    let subject = match &body.subject {
        Some(subject) => check.take("subject", Subject::parse(subject)),
        None => {
            check.fail("subject", "is required (or a template)");
            None
        }
    };
    if body.text.is_none() && body.html.is_none() {
        check.fail("text", "or html is required (or a template)");
    }
    let created_at = herald_core::timestamp::now_ms();
    let send_at = check.opt("send_at", body.send_at.as_deref(), |input| {
        send_at(input, created_at)
    });
    let size =
        body.text.as_ref().map_or(0, String::len) + body.html.as_ref().map_or(0, String::len);
    let files = attachments(&mut check, body.attachments, body.html.is_some());
    let max = state.limits.max_message_bytes;
    if size > max {
        check.fail(
            "text",
            &format!("and html together must be at most {max} bytes (got {size})"),
        );
    } else {
        let total = size + files.iter().map(|f| f.content.len()).sum::<usize>();
        if total > max {
            check.fail(
                "attachments",
                &format!(
                    "with text and html must be at most {max} bytes, counted decoded (got {total})"
                ),
            );
        }
    }
    check.opt("text", body.text.as_deref(), body_text);
    check.opt("html", body.html.as_deref(), body_text);
    let reply_to = check.opt("reply_to", body.reply_to.as_deref(), Mailbox::parse);
    let on_behalf = check.opt(
        "on_behalf_of",
        body.on_behalf_of.as_deref(),
        EmailAddress::parse,
    );
    if body.headers.len() > state.limits.max_headers {
        check.fail(
            "headers",
            &format!("must hold at most {} fields", state.limits.max_headers),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for (name, _) in &body.headers {
        if !seen.insert(name.to_ascii_lowercase()) {
            check.fail(
                &format!("headers.{name}"),
                "is given twice (header names are case-insensitive)",
            );
        }
    }
    let headers: Vec<(HeaderName, HeaderValue)> = body
        .headers
        .iter()
        .filter_map(|(n, v)| {
            let name = check.take(&format!("headers.{n}"), HeaderName::parse(n));
            let value = check.take(&format!("headers.{n}"), HeaderValue::parse(v));
            name.zip(value)
        })
        .collect();
    let key = check.opt(
        "idempotency_key",
        body.idempotency_key.as_deref(),
        idempotency_key,
    );
    check.finish()?;

    // The person a message is sent on behalf of must be one of the tenant's.
    let on_behalf_of = match on_behalf {
        Some(email) => {
            let persons = state.store.list_persons(tenant.id).await?;
            match persons.into_iter().find(|p| p.email == email) {
                Some(person) => Some(OnBehalf {
                    name: person.name,
                    email: person.email,
                }),
                None => {
                    return Err(ApiError::field(
                        Invalid::new("must be the e-mail address of a person of this tenant")
                            .at("on_behalf_of"),
                    ));
                }
            }
        }
        None => None,
    };
    let used_fallback = given_to.is_empty() && cc.is_empty() && bcc.is_empty();
    if used_fallback {
        match crate::service::fallback_recipient(state, tenant.id).await? {
            Some(address) => to.push(address.into()),
            None => {
                return Err(ApiError::field(
                    Invalid::new("is required: the tenant's provider has no fallback recipient")
                        .at("to"),
                ));
            }
        }
    }
    let message = NewMessage {
        id: MessageId::new(),
        tenant_id: tenant.id,
        idempotency_key: key,
        subject: subject.expect("checked above"),
        text: body.text,
        html: body.html,
        reply_to,
        headers,
        to,
        cc,
        bcc,
        used_fallback,
        on_behalf_of,
        test_provider: None,
        priority: 0,
        max_pending_tests: None,
        max_queued: Some(state.limits.max_queued_per_tenant),
        created_at,
        origin: herald_store::Origin::Api,
        raw: None,
        attachments: files,
        // A time already past is no schedule: the message is due at once.
        send_at: send_at.filter(|at| *at > created_at),
        template,
        gateway_id: crate::service::pinned_gateway(state, tenant.id).await?,
        handoff: None,
    };
    Ok(message)
}

/// The furthest ahead a message may be scheduled: a year.
const MAX_SCHEDULE_AHEAD_MS: i64 = 366 * 24 * 3600 * 1000;

fn send_at(input: &str, now: i64) -> Result<i64, Invalid> {
    let at = parse_rfc3339(input)?;
    if at > now + MAX_SCHEDULE_AHEAD_MS {
        return Err(Invalid::new("must be at most a year ahead"));
    }
    Ok(at)
}

/// For a message that names a template: renders it with the message's data
/// into `subject`, `text` and `html`, which the message must not give
/// itself. The template's id and version are what the message records.
async fn content_from_template(
    state: &AppState,
    tenant: &herald_store::Tenant,
    body: &mut MessageBody,
) -> Result<Option<herald_store::TemplateUse>, ApiError> {
    let Some(reference) = body.template.take() else {
        if body.data.is_some() {
            return Err(ApiError::field(
                Invalid::new("is only used with a template").at("data"),
            ));
        }
        return Ok(None);
    };
    let mut check = Check::default();
    for (field, given) in [
        ("subject", body.subject.is_some()),
        ("text", body.text.is_some()),
        ("html", body.html.is_some()),
    ] {
        if given {
            check.fail(field, "must not be given with a template, which gives it");
        }
    }
    let data = body
        .data
        .take()
        .unwrap_or_else(|| Value::Object(Default::default()));
    if !data.is_object() {
        check.fail("data", "must be a JSON object");
    }
    check.finish()?;
    let template = crate::service::find_template(state, tenant, &reference, "template").await?;
    let (rendered, used) = crate::service::templates::render(state, &template, &data).await?;
    // Said of the template, since the caller gave no subject of its own.
    if let Err(e) = herald_core::Subject::parse(&rendered.subject) {
        return Err(ApiError::field(
            Invalid::new(format!("renders a subject that is not valid: it {e}")).at("template"),
        ));
    }
    body.subject = Some(rendered.subject);
    body.text = rendered.text;
    body.html = rendered.html;
    Ok(Some(used))
}

/// Which messages to list.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Messages per page, 1 to 500; 50 when absent.
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
    /// Only messages whose status is this.
    #[param(value_type = Option<answers::Status>)]
    status: Option<String>,
    /// Only messages with this recipient (to, cc or bcc), without regard to case.
    recipient: Option<String>,
    /// Only messages created at or after this time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// Only messages created before this time (RFC 3339).
    #[param(format = DateTime)]
    until: Option<String>,
    /// Only messages from this source: `api`, `smtp` or `schedule`.
    source: Option<String>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

/// The most messages one page holds.
const MAX_PAGE: u32 = 500;

fn page_size(input: &str) -> Result<u32, Invalid> {
    match input.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        _ => Err(Invalid::new(format!(
            "must be a number from 1 to {MAX_PAGE}"
        ))),
    }
}

fn message_status(input: &str) -> Result<RecipientStatus, Invalid> {
    RecipientStatus::from_stored(input.trim()).ok_or_else(|| {
        Invalid::new(
            "must be one of: scheduled, queued, sending, deferred, sent, failed, cancelled",
        )
    })
}

fn source(input: &str) -> Result<String, Invalid> {
    match input.trim() {
        word @ ("api" | "smtp" | "schedule") => Ok(word.to_owned()),
        _ => Err(Invalid::new("must be one of: api, smtp, schedule")),
    }
}

/// A page of the tenant's messages, newest first.
///
/// Filtered by status, recipient, creation time (`since` inclusive, `until` exclusive, RFC 3339)
/// and source; `cursor` is the previous page's `next_cursor`.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/messages", tag = "messages", params(TenantPath, ListQuery),
    responses(
        (status = 200, description = "A page of messages", body = answers::MessagePage),
        (status = 400, description = "The query string is not valid", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A filter broke its rule", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn list(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<Sender>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<crate::service::MessagePage>, ApiError> {
    let query = super::query_params(query)?;
    let mut check = Check::default();
    let limit = check.opt("limit", query.limit.as_deref(), page_size);
    let status = check.opt("status", query.status.as_deref(), message_status);
    let since = check.opt("since", query.since.as_deref(), parse_rfc3339);
    let until = check.opt("until", query.until.as_deref(), parse_rfc3339);
    let source = check.opt("source", query.source.as_deref(), source);
    let before = check.opt(
        "cursor",
        query.cursor.as_deref(),
        crate::service::parse_cursor,
    );
    let recipient = query
        .recipient
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    check.finish()?;
    let query = MessageQuery {
        status,
        source,
        before,
        recipient,
        since,
        until,
        test_provider: None,
        limit: limit.unwrap_or(50),
    };
    Ok(Json(
        crate::service::search_messages(&state, &tenant, query).await?,
    ))
}

handlers! {
    /// Cancels a message that is not being sent yet (a scheduled one, typically).
    ///
    /// Every recipient must still be waiting (scheduled, queued or deferred):
    /// a message with a recipient being sent or already final is a 409.
    #[utoipa::path(delete, path = "/v1/tenants/{tenant}/messages/{id}", tag = "messages", params(ObjectPath),
        responses(
            (status = 200, description = "The message, now cancelled", body = answers::Message),
            (status = 409, description = "A recipient is being sent or already final", body = crate::openapi::Problem, content_type = "application/problem+json"),
        ))]
    async fn cancel(Authorised<Sender>, Id<MessageId>) -> MessageView = crate::service::cancel_message;

    /// One message, its recipients and their attempts.
    #[utoipa::path(get, path = "/v1/tenants/{tenant}/messages/{id}", tag = "messages", params(ObjectPath),
        responses((status = 200, description = "The message", body = answers::Message)))]
    async fn show(Authorised<Sender>, Id<MessageId>) -> MessageView = crate::service::message;
}
