//! A tenant's message templates: the list, the editor (new or editing), a
//! preview of the saved template rendered with data typed as JSON, and
//! deleting one after a confirmation page.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Form, Router};
use herald_api::gate::TenantAdmin;
use herald_api::template::Rendered;
use herald_api::{AppState, service};
use herald_core::TemplateId;
use herald_store::{Template, Tenant};
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::{Confirmation, Id, store};
use crate::forms::{FieldErrors, Problems, TemplateForm};
use crate::gate::TenantPage;
use crate::notice::{Done, Notice, Saved};
use crate::pages::{PageResult, base, submit};
use crate::render::page;
use crate::session::Signed;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/t/{tenant}/templates",
            get(templates).post(create_template),
        )
        .route("/t/{tenant}/templates/new", get(new_template))
        .route(
            "/t/{tenant}/templates/{id}",
            get(edit_template).post(update_template),
        )
        .route(
            "/t/{tenant}/templates/{id}/preview",
            axum::routing::post(preview),
        )
        .route(
            "/t/{tenant}/templates/{id}/delete",
            get(confirm_delete).post(delete_template),
        )
}

async fn templates(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    done: Done,
) -> PageResult {
    let templates = store(state.store.list_templates(tenant.id).await)?;
    let notice = done.notice(&[(
        Saved::TemplateDeleted,
        "Template deleted: messages made from it keep their content.",
    )]);
    Ok(page(
        "templates.html",
        context! { templates, notice, ..base(&me, &tenant, "templates") },
    ))
}

/// The preview's form as typed: the data as JSON text.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
struct PreviewForm {
    data: String,
}

impl Default for PreviewForm {
    fn default() -> Self {
        PreviewForm { data: "{}".into() }
    }
}

/// What the preview came to: the rendered parts, or why there are none
/// (beside the data field when the data is at fault).
#[derive(Default, Serialize)]
struct Preview {
    rendered: Option<Rendered>,
    problems: Problems,
}

/// The editor: a new template (`template` absent) or a saved one, with the
/// preview's form and, after a preview, what it came to.
struct Editor<'a> {
    template: Option<&'a Template>,
    form: TemplateForm,
    problems: Problems,
    preview_form: PreviewForm,
    preview: Option<Preview>,
    notice: Option<Notice>,
}

impl<'a> Editor<'a> {
    /// The editor of `template` (none for a new one) holding `form`, with
    /// nothing refused, previewed or to tell yet.
    fn new(template: Option<&'a Template>, form: TemplateForm) -> Self {
        Editor {
            template,
            form,
            problems: Problems::default(),
            preview_form: PreviewForm::default(),
            preview: None,
            notice: None,
        }
    }
}

fn editor_page(me: &Signed, tenant: &Tenant, editor: Editor<'_>) -> PageResult {
    Ok(page(
        "template_form.html",
        context! {
            template => editor.template,
            form => editor.form,
            problems => editor.problems,
            preview_form => editor.preview_form,
            preview => editor.preview,
            notice => editor.notice,
            ..base(me, tenant, "templates")
        },
    ))
}

async fn new_template(TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>) -> PageResult {
    editor_page(&me, &tenant, Editor::new(None, TemplateForm::default()))
}

fn edit_path(tenant: &Tenant, id: TemplateId) -> String {
    format!("/t/{}/templates/{id}", tenant.slug)
}

async fn create_template(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Form(form): Form<TemplateForm>,
) -> PageResult {
    let outcome = service::create_template(&state, &me.caller, &tenant, form.body(false));
    let again = |problems: Problems| async {
        let editor = Editor {
            problems,
            ..Editor::new(None, form.clone())
        };
        editor_page(&me, &tenant, editor)
    };
    submit(
        outcome,
        |created| Saved::TemplateAdded.on(&edit_path(&tenant, created.id)),
        again,
    )
    .await
}

async fn edit_template(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<TemplateId>,
    done: Done,
) -> PageResult {
    let template = store(state.store.template(tenant.id, id).await)?;
    let notice = match done.saved() {
        Some(Saved::TemplateAdded) => Some(
            Notice::new("Template added as version 1: preview it below, or use it in a schedule.")
                .then(
                    "Add a schedule",
                    format!("/t/{}/schedules/new", tenant.slug),
                ),
        ),
        Some(Saved::TemplateChanged) => Some(Notice::new(format!(
            "Template saved as version {}: mail already queued keeps what the version before rendered.",
            template.version
        ))),
        _ => None,
    };
    let editor = Editor {
        notice,
        ..Editor::new(Some(&template), TemplateForm::from_template(&template))
    };
    editor_page(&me, &tenant, editor)
}

async fn update_template(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<TemplateId>,
    Form(form): Form<TemplateForm>,
) -> PageResult {
    let template = store(state.store.template(tenant.id, id).await)?;
    let outcome = service::update_template(&state, &me.caller, &tenant, id, form.body(true));
    let again = |problems: Problems| async {
        let editor = Editor {
            problems,
            ..Editor::new(Some(&template), form.clone())
        };
        editor_page(&me, &tenant, editor)
    };
    submit(
        outcome,
        |_| Saved::TemplateChanged.on(&edit_path(&tenant, id)),
        again,
    )
    .await
}

/// Renders the saved template with the typed data, as a message would be
/// (the API's own renderer), and shows the result on the editor. A variable
/// the data lacks is the data's fault and is shown beside it; any other
/// error names the part of the template.
async fn render_preview(state: &AppState, template: &Template, typed: &str) -> Preview {
    let mut fields = FieldErrors::new();
    let data = match serde_json::from_str::<serde_json::Value>(typed.trim()) {
        Ok(data) if data.is_object() => Some(data),
        Ok(_) => {
            fields.insert("data".into(), "must be a JSON object".into());
            None
        }
        Err(e) => {
            fields.insert("data".into(), format!("must be JSON: {e}"));
            None
        }
    };
    let Some(data) = data else {
        return Preview {
            rendered: None,
            problems: Problems {
                fields,
                general: None,
            },
        };
    };
    match state
        .renderer
        .render(template.tenant_id, &template.content, &data)
        .await
    {
        Ok(rendered) => Preview {
            rendered: Some(rendered),
            problems: Problems::default(),
        },
        Err(e) => {
            // The API's own split: the data's fault, or the template's.
            let problem = herald_api::service::templates::render_problem(e, "template");
            fields.insert(problem.field, problem.rule);
            Preview {
                rendered: None,
                problems: Problems {
                    fields,
                    general: None,
                },
            }
        }
    }
}

async fn preview(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<TemplateId>,
    Form(preview_form): Form<PreviewForm>,
) -> PageResult {
    let template = store(state.store.template(tenant.id, id).await)?;
    let preview = render_preview(&state, &template, &preview_form.data).await;
    let failed = preview.rendered.is_none();
    let editor = Editor {
        preview_form,
        preview: Some(preview),
        ..Editor::new(Some(&template), TemplateForm::from_template(&template))
    };
    let mut response = editor_page(&me, &tenant, editor)?;
    if failed {
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(response)
}

/// The page that asks before a template is deleted.
const DELETE: Confirmation = Confirmation {
    section: "templates",
    template: "template_delete.html",
    object: "template",
};

async fn confirm_delete(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<TemplateId>,
) -> PageResult {
    let template = store(state.store.template(tenant.id, id).await)?;
    DELETE.page(&me, &tenant, template, None)
}

async fn delete_template(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<TemplateId>,
) -> PageResult {
    let template = store(state.store.template(tenant.id, id).await)?;
    let deleted = service::delete_template(&state, &me.caller, &tenant, id);
    // In use by a schedule: the confirmation page again, saying so.
    DELETE
        .delete(&me, &tenant, template, deleted, Saved::TemplateDeleted)
        .await
}
