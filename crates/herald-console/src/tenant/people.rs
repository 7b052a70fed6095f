//! A tenant's persons: the list, adding one, and setting a person's console
//! password (an error is shown beside the person it was for).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Form, Router};
use herald_api::gate::TenantAdmin;
use herald_api::{AppState, service};
use herald_core::PersonId;
use herald_store::Tenant;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::{path_id, store};
use crate::forms::Problems;
use crate::gate::TenantPage;
use crate::notice::{Done, Notice, Saved};
use crate::pages::{PageResult, base, submit};
use crate::render::page;
use crate::session::Signed;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/{tenant}/persons", get(persons).post(create_person))
        .route("/t/{tenant}/persons/{id}/password", post(set_password))
}

#[derive(Deserialize, Default, Serialize)]
#[serde(default)]
struct PersonForm {
    name: String,
    email: String,
    role: String,
}

impl PersonForm {
    /// The empty new-person form; a new person is a member unless chosen otherwise.
    fn blank() -> PersonForm {
        PersonForm {
            role: "member".into(),
            ..PersonForm::default()
        }
    }
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
    notice: Option<Notice>,
) -> PageResult {
    let persons = store(state.store.list_persons(tenant.id).await)?;
    let (password_for, password_problems) = match password_problem {
        Some((person, problems)) => (Some(person), problems),
        None => (None, Problems::default()),
    };
    Ok(page(
        "persons.html",
        context! {
            persons, form, problems, password_for, password_problems, notice,
            ..base(me, tenant, "persons")
        },
    ))
}

async fn persons(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    done: Done,
) -> PageResult {
    let notice = done.notice(&[
        (
            Saved::PersonAdded,
            "Person added. Set their console password in the list so that they can sign in.",
        ),
        (
            Saved::PasswordSet,
            "Password set; the person's earlier console sessions have ended.",
        ),
    ]);
    let form = PersonForm::blank();
    let none = Problems::default();
    persons_page(&state, &me, &tenant, &form, none, None, notice).await
}

async fn create_person(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Form(form): Form<PersonForm>,
) -> PageResult {
    let slug = tenant.slug.clone();
    let body = service::PersonBody {
        name: form.name.clone(),
        email: form.email.trim().to_owned(),
        role: Some(form.role.clone()).filter(|r| !r.is_empty()),
    };
    submit(
        service::create_person(&state, &me.caller, &tenant, body),
        |_| Saved::PersonAdded.on(&format!("/t/{slug}/persons")),
        |problems| persons_page(&state, &me, &tenant, &form, problems, None, None),
    )
    .await
}

async fn set_password(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Path((_, id)): Path<(String, String)>,
    Form(form): Form<PasswordForm>,
) -> PageResult {
    let slug = tenant.slug.clone();
    let person: PersonId = path_id(&id, "person")?;
    let blank = PersonForm::blank();
    submit(
        service::set_person_password(&state, &me.caller, &tenant, person, &form.password),
        |()| Saved::PasswordSet.on(&format!("/t/{slug}/persons")),
        |problems| {
            let none = Problems::default();
            let problem = Some((id, problems));
            persons_page(&state, &me, &tenant, &blank, none, problem, None)
        },
    )
    .await
}
