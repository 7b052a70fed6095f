//! A server's SMTP accounts: added from the form on the server's page (where
//! an error shows the page again, the account's fields as typed) and deleted.

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Form, Router};
use herald_api::gate::TenantAdmin;
use herald_api::{AppState, service};
use herald_core::{AccountId, ServerId};

use super::servers::{Extras, server_page};
use super::{Id, path_id, store};
use crate::forms::{AccountForm, Problems, ServerForm};
use crate::gate::TenantPage;
use crate::notice::Saved;
use crate::pages::{PageResult, see, submit};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/{tenant}/servers/{id}/accounts", post(create_account))
        .route(
            "/t/{tenant}/servers/{id}/accounts/{account}/delete",
            post(delete_account),
        )
}

async fn create_account(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<ServerId>,
    Form(form): Form<AccountForm>,
) -> PageResult {
    let slug = tenant.slug.clone();
    let server = store(state.store.server(tenant.id, id).await)?;
    // On an error, the server's form as stored and the account's as typed.
    let server_form = ServerForm::from_server(&server);
    submit(
        service::create_account(&state, &me.caller, &tenant, id, form.body()),
        |_| Saved::AccountAdded.on(&format!("/t/{slug}/servers/{id}#accounts")),
        |problems| {
            let extras = Extras {
                account: Some((&form, problems)),
                ..Extras::default()
            };
            let none = Problems::default();
            server_page(
                &state,
                &me,
                &tenant,
                Some(&server),
                &server_form,
                none,
                extras,
            )
        },
    )
    .await
}

async fn delete_account(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Path((_, id, account)): Path<(String, String, String)>,
) -> PageResult {
    let slug = tenant.slug.clone();
    let id: ServerId = path_id(&id, "SMTP server")?;
    let account: AccountId = path_id(&account, "SMTP account")?;
    service::delete_account(&state, &me.caller, &tenant, id, account).await?;
    Ok(see(
        Saved::AccountDeleted.on(&format!("/t/{slug}/servers/{id}#accounts"))
    ))
}
