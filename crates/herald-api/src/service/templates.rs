//! Message templates: saved only when every part compiles, each change a new
//! version; rendered at submission (and by schedules) with the tenant's data.

use herald_core::timestamp::now_ms;
use herald_core::{FieldError, Invalid, TemplateId};
use herald_store::{
    NewTemplate, StoreError, Template, TemplateContent, TemplateFields, TemplateUse, Tenant,
};
use serde_json::{Value, json};

use crate::routes::Check;
use crate::routes::templates::TemplateBody;
use crate::template::{self, Rendered, TemplateError};
use crate::{ApiError, AppState, Caller};

/// The longest description.
const MAX_DESCRIPTION: usize = 1_000;
/// The longest subject source.
const MAX_SUBJECT_SOURCE: usize = 2_000;

/// A template's rendering error as the field it concerns: a missing
/// variable is the data's fault, anything else the template's.
pub fn render_problem(error: TemplateError, field_of_template: &str) -> FieldError {
    let field = if error.field() == "data" || error.is_undefined() {
        "data"
    } else {
        field_of_template
    };
    let message = error.to_string();
    // "data must be a JSON object", at the field `data`, reads "must be …".
    let rule = message
        .strip_prefix(field)
        .and_then(|rest| rest.strip_prefix(' '))
        .unwrap_or(&message);
    Invalid::new(rule).at(field)
}

/// A rendering error as the API answers it: a field error, or a 500 when
/// the node could not render at all.
pub fn render_api_error(error: TemplateError) -> ApiError {
    match error {
        TemplateError::Unavailable(why) => ApiError::Internal(why.into()),
        e => ApiError::field(render_problem(e, "template")),
    }
}

fn description(input: &str) -> Result<String, Invalid> {
    if input.chars().count() > MAX_DESCRIPTION {
        return Err(Invalid::new(format!(
            "must be at most {MAX_DESCRIPTION} characters"
        )));
    }
    Ok(input.trim().to_owned())
}

fn subject_source(input: &str) -> Result<String, Invalid> {
    if input.trim().is_empty() || input.chars().count() > MAX_SUBJECT_SOURCE {
        return Err(Invalid::new(format!(
            "must be 1 to {MAX_SUBJECT_SOURCE} characters"
        )));
    }
    if input.contains(['\r', '\n']) {
        return Err(Invalid::new("must be one line"));
    }
    Ok(input.to_owned())
}

/// A body part's source: at most the node's message size, no NUL.
fn part_source(max: usize) -> impl Fn(&str) -> Result<String, Invalid> {
    move |input: &str| {
        if input.len() > max {
            return Err(Invalid::new(format!("must be at most {max} bytes")));
        }
        if input.contains('\0') {
            return Err(Invalid::new("must not contain NUL"));
        }
        Ok(input.to_owned())
    }
}

/// Checks a template's fields (on `base` for a change) and compiles each
/// part: a syntax error is a 422 naming the part, its line and column.
fn fields(
    state: &AppState,
    body: TemplateBody,
    base: Option<&Template>,
) -> Result<TemplateFields, ApiError> {
    let mut check = Check::default();
    let max = state.limits.max_message_bytes;
    let name = check.required(
        "name",
        body.name.as_deref(),
        base.map(|b| b.name.clone()),
        crate::routes::name,
    );
    let description = check.clearable(
        "description",
        body.description,
        base.and_then(|b| b.description.as_ref()),
        description,
    );
    let subject = check.required(
        "subject",
        body.subject.as_deref(),
        base.map(|b| b.content.subject.clone()),
        subject_source,
    );
    let text = check.clearable(
        "text",
        body.text,
        base.and_then(|b| b.content.text.as_ref()),
        part_source(max),
    );
    let html = check.clearable(
        "html",
        body.html,
        base.and_then(|b| b.content.html.as_ref()),
        part_source(max),
    );
    if text.is_none() && html.is_none() {
        check.fail("text", "or html is required");
    }
    check.finish()?;
    let content = TemplateContent {
        subject: subject.expect("checked"),
        text,
        html,
    };
    template::check(&content).map_err(|e| {
        let field = e.field();
        ApiError::field(Invalid::new(e.to_string()).at(field))
    })?;
    Ok(TemplateFields {
        name: name.expect("checked"),
        description,
        content,
    })
}

/// Creates a template as its version 1.
pub async fn create_template(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    body: TemplateBody,
) -> Result<Template, ApiError> {
    let fields = fields(state, body, None)?;
    let record = state
        .store
        .create_template(NewTemplate {
            id: TemplateId::new(),
            tenant_id: tenant.id,
            fields,
            created_at: now_ms(),
        })
        .await?;
    Ok(audited(state, caller, tenant, "template.create", record).await)
}

/// Records `action` on a template just saved in the audit log, with its
/// name and the version it is now at.
async fn audited(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    action: &str,
    record: Template,
) -> Template {
    let details = json!({"name": record.name, "version": record.version});
    caller
        .audit_tenant(state, tenant.id, action, record.id, details)
        .await;
    record
}

/// Changes a template: the result is its next version (none when nothing
/// changes). Queued mail keeps what was rendered from the version before.
pub async fn update_template(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: TemplateId,
    body: TemplateBody,
) -> Result<Template, ApiError> {
    let base = state.store.template(tenant.id, id).await?;
    let fields = fields(state, body, Some(&base))?;
    // A change that changes nothing makes no new version and no audit entry.
    let unchanged = fields.name == base.name
        && fields.description == base.description
        && fields.content == base.content;
    if unchanged {
        return Ok(base);
    }
    let record = state
        .store
        .update_template(tenant.id, id, fields, now_ms())
        .await?;
    Ok(audited(state, caller, tenant, "template.update", record).await)
}

/// Deletes a template no schedule uses; messages rendered from it keep their content.
pub async fn delete_template(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: TemplateId,
) -> Result<(), ApiError> {
    let deleted = state.store.delete_template(tenant.id, id);
    super::audited_removal(state, caller, tenant, "template.delete", id, deleted).await
}

/// The tenant's template named by `reference`: its id, or its name. One
/// that does not exist is a 422 at `field`.
pub async fn find_template(
    state: &AppState,
    tenant: &Tenant,
    reference: &str,
    field: &str,
) -> Result<Template, ApiError> {
    let reference = reference.trim();
    let found = match reference.parse::<TemplateId>() {
        Ok(id) => state.store.template(tenant.id, id).await,
        Err(_) => state.store.template_named(tenant.id, reference).await,
    };
    match found {
        Err(StoreError::NotFound) => Err(ApiError::field(
            Invalid::new("must name a template of this tenant (its name or id)").at(field),
        )),
        other => Ok(other?),
    }
}

/// Renders a template with `data` (a JSON object), as a message would be,
/// through the node's renderer. Errors name `data` for a variable it lacks,
/// `template` otherwise; a renderer the node cannot run is a 500.
pub async fn render(
    state: &AppState,
    template: &Template,
    data: &Value,
) -> Result<(Rendered, TemplateUse), ApiError> {
    let rendered = state
        .renderer
        .render(template.tenant_id, &template.content, data)
        .await
        .map_err(render_api_error)?;
    Ok((
        rendered,
        TemplateUse {
            id: template.id,
            version: template.version,
        },
    ))
}
