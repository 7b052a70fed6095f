//! A tenant's API tokens: the list (with when each was created and last
//! used), creating one (its value shown once, on the answer to the form, never
//! in a URL) and revoking one after a confirmation page.

use axum::extract::State;
use axum::routing::get;
use axum::{Form, Router};
use herald_api::gate::TenantAdmin;
use herald_api::{AppState, service};
use herald_core::TokenId;
use herald_store::Tenant;
use minijinja::{Value, context};
use serde::{Deserialize, Serialize};

use super::{Confirmation, Id, found, store};
use crate::forms::Problems;
use crate::gate::TenantPage;
use crate::notice::{Done, Notice, Saved};
use crate::pages::{PageResult, base, submit_then};
use crate::render::{PageError, page};
use crate::session::Signed;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/{tenant}/tokens", get(tokens).post(create_token))
        .route(
            "/t/{tenant}/tokens/{id}/revoke",
            get(confirm_revoke).post(revoke_token),
        )
}

/// The new-token form as typed.
#[derive(Deserialize, Serialize, Default)]
#[serde(default)]
struct TokenForm {
    name: String,
    role: String,
    person_id: String,
}

impl TokenForm {
    /// The empty form: a service token for an application, which only sends.
    fn blank() -> TokenForm {
        TokenForm {
            role: "sender".into(),
            ..TokenForm::default()
        }
    }
}

/// The tenant's tokens as the list shows them, with the person's name.
async fn listed(state: &AppState, tenant: &Tenant) -> Result<Vec<Value>, PageError> {
    let tokens = store(state.store.list_tokens(tenant.id).await)?;
    let persons = store(state.store.list_persons(tenant.id).await)?;
    Ok(tokens
        .into_iter()
        .map(|token| {
            let person = token
                .person_id
                .and_then(|id| persons.iter().find(|p| p.id == id))
                .map(|p| p.name.clone());
            context! { token, person }
        })
        .collect())
}

async fn tokens_page(
    state: &AppState,
    me: &Signed,
    tenant: &Tenant,
    form: &TokenForm,
    problems: Problems,
    notice: Option<Notice>,
) -> PageResult {
    let tokens = listed(state, tenant).await?;
    let persons = store(state.store.list_persons(tenant.id).await)?;
    Ok(page(
        "tokens.html",
        context! {
            tokens, persons, form, problems, notice,
            ..base(me, tenant, "tokens")
        },
    ))
}

async fn tokens(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    done: Done,
) -> PageResult {
    let notice = done.notice(&[(
        Saved::TokenRevoked,
        "Token revoked: requests that carry it are refused from now on.",
    )]);
    let form = TokenForm::blank();
    tokens_page(&state, &me, &tenant, &form, Problems::default(), notice).await
}

async fn create_token(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Form(form): Form<TokenForm>,
) -> PageResult {
    let given = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let body = service::TokenBody {
        name: form.name.clone(),
        role: given(&form.role),
        person_id: given(&form.person_id),
    };
    let (shared, signed, loaded) = (&state, &me, &tenant);
    submit_then(
        service::create_token(&state, &me.caller, &tenant, body),
        |created| async move {
            // The token exists now and this page is the only time its value
            // is shown: a person that cannot be read back costs its name, not the page.
            let person = match created.record.person_id {
                Some(id) => Some(
                    shared
                        .store
                        .person(loaded.id, id)
                        .await
                        .map_or_else(|_| id.to_string(), |p| p.name),
                ),
                None => None,
            };
            Ok(page(
                "token_created.html",
                context! {
                    token => created.record, person,
                    secret => created.token,
                    ..base(signed, loaded, "tokens")
                },
            ))
        },
        |problems| tokens_page(&state, &me, &tenant, &form, problems, None),
    )
    .await
}

/// The page that asks before an API token is revoked.
const REVOKE: Confirmation = Confirmation {
    section: "tokens",
    template: "token_revoke.html",
    object: "token",
};

async fn confirm_revoke(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<TokenId>,
) -> PageResult {
    let tokens = store(state.store.list_tokens(tenant.id).await)?;
    let token = found(tokens, id, |t| t.id)?;
    REVOKE.page(&me, &tenant, token, None)
}

async fn revoke_token(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<TokenId>,
) -> PageResult {
    let revoked = service::revoke_token(&state, &me.caller, &tenant, id);
    REVOKE.done(&tenant, revoked, Saved::TokenRevoked).await
}
