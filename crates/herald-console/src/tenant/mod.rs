//! A tenant's pages, one module per resource like the API's `routes/`: the
//! route table, the dashboard, and the helpers every tenant page shares.
//!
//! Each handler receives its tenant through the [`TenantPage`] extractor (role
//! and tenant isolation: another tenant's pages are 404), so none can skip
//! the check, then the `{id}` of its path through [`Id`], and acts through
//! the API's services; every form's POST answers through
//! [`crate::pages::submit`], and every page that asks before a delete, a
//! revocation or a new token is a [`Confirmation`].

mod accounts;
mod audit;
mod checklist;
mod gateways;
mod messages;
mod people;
mod properties;
mod providers;
mod schedules;
mod servers;
mod smtp;
mod templates;
mod test_messages;
mod tokens;
mod webhooks;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::get;
use herald_api::gate::Sender;
use herald_api::{ApiError, AppState, Object, service};
use herald_core::Role;
use herald_core::timestamp::now_ms;
use herald_store::{NodeRecord, Tenant};
use minijinja::value::merge_maps;
use minijinja::{Value, context};
use serde::Serialize;

use crate::forms::Problems;
use crate::gate::TenantPage;
use crate::notice::Saved;
use crate::pages::{PageResult, base, refused, see};
use crate::render::{PageError, page};
use crate::session::Signed;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/{tenant}", get(dashboard))
        .merge(servers::router())
        .merge(accounts::router())
        .merge(providers::router())
        .merge(test_messages::router())
        .merge(properties::router())
        .merge(messages::router())
        .merge(audit::router())
        .merge(people::router())
        .merge(tokens::router())
        .merge(smtp::router())
        .merge(webhooks::router())
        .merge(templates::router())
        .merge(schedules::router())
        .merge(gateways::router())
}

/// An id from the path; a malformed one names nothing, so it is a 404.
fn path_id<T: std::str::FromStr>(raw: &str, what: &'static str) -> Result<T, PageError> {
    raw.parse().map_err(|_| PageError(ApiError::NotFound(what)))
}

/// The one of the tenant's `listed` objects whose id (`id_of`) is `id`;
/// none (another tenant's, say) is that kind's 404.
fn found<T, I: Object + PartialEq>(
    listed: Vec<T>,
    id: I,
    id_of: impl Fn(&T) -> I,
) -> Result<T, PageError> {
    listed
        .into_iter()
        .find(|item| id_of(item) == id)
        .ok_or(PageError(ApiError::NotFound(I::WHAT)))
}

/// The `{id}` of a page's path as the id of the kind it names; a malformed
/// one names nothing, so it is that kind's 404 (the API's rule, as a page),
/// the same as an id that names nothing stored. Handlers take it after
/// their [`TenantPage`], so that the gate answers first.
struct Id<T>(T);

impl<T: Object, S: Send + Sync> FromRequestParts<S> for Id<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        herald_api::object_in_path::<T, PageError, S>(parts, state)
            .await
            .map(Id)
    }
}

fn store<T>(result: herald_store::Result<T>) -> Result<T, PageError> {
    result.map_err(|e| PageError(e.into()))
}

/// A page that asks before what cannot be undone (a delete, a revocation, a
/// new token) in one of the tenant's sections, and what follows its answer.
struct Confirmation {
    /// The section: its entry in the navigation, and the path of its list,
    /// where a delete that is done returns.
    section: &'static str,
    /// The page's template.
    template: &'static str,
    /// The name the template knows its object by, such as `schedule`.
    object: &'static str,
}

impl Confirmation {
    /// The page showing `object`, the tenant's one, and with `problems` why
    /// it was refused when it was.
    fn page(
        &self,
        me: &Signed,
        tenant: &Tenant,
        object: impl Serialize,
        problems: Option<Problems>,
    ) -> PageResult {
        let mut shown = vec![(self.object, Value::from_serialize(object))];
        if let Some(problems) = problems {
            shown.push(("problems", Value::from_serialize(problems)));
        }
        let shown = Value::from_iter(shown);
        Ok(page(
            self.template,
            merge_maps([shown, base(me, tenant, self.section)]),
        ))
    }

    /// Once `deleted` (or revoked), on to the section's list saying `saved` (303).
    async fn done(
        &self,
        tenant: &Tenant,
        deleted: impl Future<Output = Result<(), ApiError>>,
        saved: Saved,
    ) -> PageResult {
        deleted.await?;
        Ok(see(
            saved.on(&format!("/t/{}/{}", tenant.slug, self.section))
        ))
    }

    /// Deletes `object`, which the page asked about: once `deleted`, as
    /// [`Confirmation::done`]; refused because something still uses it (409),
    /// the page again saying what; any other error is its own page.
    async fn delete(
        &self,
        me: &Signed,
        tenant: &Tenant,
        object: impl Serialize,
        deleted: impl Future<Output = Result<(), ApiError>>,
        saved: Saved,
    ) -> PageResult {
        match self.done(tenant, deleted, saved).await {
            Err(PageError(error @ ApiError::Conflict(_))) => {
                let again = |problems| async move { self.page(me, tenant, object, Some(problems)) };
                refused(error, again).await
            }
            other => other,
        }
    }
}

/// How many nodes with the worker role are alive, by the API's one rule.
fn alive_workers(state: &AppState, nodes: &[NodeRecord]) -> usize {
    let now = now_ms();
    nodes
        .iter()
        .filter(|n| {
            n.roles.contains(&herald_core::NodeRole::Worker)
                && herald_api::is_alive(n, now, state.alive_within)
        })
        .count()
}

async fn dashboard(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<Sender>,
) -> PageResult {
    let since = now_ms() - 24 * 3_600_000;
    let counts = store(state.store.count_messages(tenant.id, since).await)?;
    let nodes = store(state.store.list_nodes().await)?;
    let admin = me.caller.is_operator() || me.session.role() == Role::TenantAdmin;
    let (servers, providers, properties, checklist) = if admin {
        (
            store(state.store.list_servers(tenant.id).await)?.len(),
            store(state.store.list_providers(tenant.id).await)?.len(),
            Value::from_serialize(service::properties(&state, &tenant).await?),
            Value::from_serialize(checklist::checklist(&state, &tenant).await?),
        )
    } else {
        (0, 0, Value::from(()), Value::from(()))
    };
    Ok(page(
        "dashboard.html",
        context! {
            servers, providers, properties, checklist,
            queued => counts.queued + counts.sending,
            deferred => counts.deferred,
            failed => counts.failed,
            sent => counts.sent,
            workers => alive_workers(&state, &nodes),
            ..base(&me, &tenant, "dashboard")
        },
    ))
}
