//! Who may submit a tenant's mail over SMTP: its SMTP credentials (the list,
//! creating one, its password shown once on the answer to the form, and
//! revoking one after a confirmation page) and its IP connectors (the list,
//! creating one, and deleting one after a confirmation page).

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::routing::{get, post};
use axum::{Form, Router};
use herald_api::gate::TenantAdmin;
use herald_api::{AppState, service};
use herald_core::{SmtpConnectorId, SmtpCredentialId};
use herald_store::Tenant;
use minijinja::context;

use super::{Confirmation, Id, found, store};
use crate::forms::{ConnectorForm, CredentialForm, Problems};
use crate::gate::TenantPage;
use crate::notice::{Done, Notice, Saved};
use crate::pages::{PageResult, base, submit, submit_then};
use crate::render::page;
use crate::session::Signed;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/{tenant}/smtp", get(smtp))
        .route("/t/{tenant}/smtp/credentials", post(create_credential))
        .route(
            "/t/{tenant}/smtp/credentials/{id}/revoke",
            get(confirm_revoke).post(revoke_credential),
        )
        .route("/t/{tenant}/smtp/connectors", post(create_connector))
        .route(
            "/t/{tenant}/smtp/connectors/{id}/delete",
            get(confirm_delete).post(delete_connector),
        )
}

/// The two forms of the page as typed, and what is wrong with each.
#[derive(Default)]
struct Forms {
    credential: CredentialForm,
    credential_problems: Problems,
    connector: ConnectorForm,
    connector_problems: Problems,
}

/// The errors of the connector's networks, `cidrs[i]`, as the page shows
/// them beside the field: each with its place and what was typed there, in
/// the order typed.
fn network_errors(form: &ConnectorForm, problems: &Problems) -> Vec<String> {
    let typed = form.networks();
    let mut listed: Vec<(usize, String)> = problems
        .fields
        .iter()
        .filter_map(|(field, rule)| {
            let index: usize = field
                .strip_prefix("cidrs[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            let network = typed.get(index).map_or("", String::as_str);
            Some((index, format!("Network {} ({network}) {rule}", index + 1)))
        })
        .collect();
    listed.sort();
    listed.into_iter().map(|(_, line)| line).collect()
}

/// A conflict (networks that overlap another connector's, 409) as the store
/// words it, `cidrs: 192.0.2.0/24 overlaps …`, said above the form as a
/// sentence about the network.
fn overlap_in_words(mut problems: Problems) -> Problems {
    problems.general = problems
        .general
        .map(|message| match message.strip_prefix("cidrs: ") {
            Some(rest) => format!("The network {rest}."),
            None => message,
        });
    problems
}

async fn smtp_page(
    state: &AppState,
    me: &Signed,
    tenant: &Tenant,
    forms: Forms,
    notice: Option<Notice>,
) -> PageResult {
    let credentials = store(state.store.list_smtp_credentials(tenant.id).await)?;
    let connectors = store(state.store.list_smtp_connectors(tenant.id).await)?;
    let network_errors = network_errors(&forms.connector, &forms.connector_problems);
    Ok(page(
        "smtp.html",
        context! {
            credentials, connectors, notice, network_errors,
            credential => forms.credential,
            credential_problems => forms.credential_problems,
            connector => forms.connector,
            connector_problems => forms.connector_problems,
            ..base(me, tenant, "smtp")
        },
    ))
}

async fn smtp(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    done: Done,
) -> PageResult {
    let notice = done.notice(&[
        (
            Saved::SmtpCredentialRevoked,
            "Credential revoked: a client that authenticates with it is refused from now on.",
        ),
        (
            Saved::SmtpConnectorAdded,
            "Connector added: mail from its networks is accepted without authentication from now on.",
        ),
        (
            Saved::SmtpConnectorDeleted,
            "Connector deleted: clients in its networks must authenticate from now on.",
        ),
    ]);
    smtp_page(&state, &me, &tenant, Forms::default(), notice).await
}

/// The host name the browser reached this node by, without its port: the
/// likeliest name of its SMTP listener too.
fn host_name(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let name = match host.rsplit_once(':') {
        // An IPv6 literal keeps its brackets; only a port after them goes.
        Some((name, port)) if !port.contains(']') => name,
        _ => host,
    };
    Some(name.to_owned()).filter(|n| !n.is_empty())
}

async fn create_credential(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    headers: HeaderMap,
    Form(form): Form<CredentialForm>,
) -> PageResult {
    let again = |problems: Problems| {
        let forms = Forms {
            credential: form.clone(),
            credential_problems: problems.renamed(CredentialForm::field),
            ..Forms::default()
        };
        smtp_page(&state, &me, &tenant, forms, None)
    };
    let host = host_name(&headers);
    let submission = state.submission;
    let (signed, loaded) = (&me, &tenant);
    let outcome = async {
        let body = form.body().map_err(Problems::invalid)?;
        service::create_smtp_credential(&state, &me.caller, &tenant, body).await
    };
    submit_then(
        outcome,
        |created| async move {
            Ok(page(
                "smtp_credential_created.html",
                context! {
                    credential => created.record,
                    secret => created.password,
                    host,
                    submission,
                    ..base(signed, loaded, "smtp")
                },
            ))
        },
        again,
    )
    .await
}

/// The page that asks before an SMTP credential is revoked.
const REVOKE: Confirmation = Confirmation {
    section: "smtp",
    template: "smtp_credential_revoke.html",
    object: "credential",
};

async fn confirm_revoke(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<SmtpCredentialId>,
) -> PageResult {
    let credentials = store(state.store.list_smtp_credentials(tenant.id).await)?;
    let credential = found(credentials, id, |c| c.id)?;
    REVOKE.page(&me, &tenant, credential, None)
}

async fn revoke_credential(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<SmtpCredentialId>,
) -> PageResult {
    let revoked = service::revoke_smtp_credential(&state, &me.caller, &tenant, id);
    REVOKE
        .done(&tenant, revoked, Saved::SmtpCredentialRevoked)
        .await
}

async fn create_connector(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Form(form): Form<ConnectorForm>,
) -> PageResult {
    let again = |problems: Problems| {
        let forms = Forms {
            connector: form.clone(),
            connector_problems: overlap_in_words(problems.renamed(ConnectorForm::field)),
            ..Forms::default()
        };
        smtp_page(&state, &me, &tenant, forms, None)
    };
    let slug = tenant.slug.clone();
    let outcome = async {
        let body = form.body().map_err(Problems::invalid)?;
        service::create_smtp_connector(&state, &me.caller, &tenant, body).await
    };
    submit(
        outcome,
        |_| Saved::SmtpConnectorAdded.on(&format!("/t/{slug}/smtp")),
        again,
    )
    .await
}

/// The page that asks before an IP connector is deleted.
const DELETE: Confirmation = Confirmation {
    section: "smtp",
    template: "smtp_connector_delete.html",
    object: "connector",
};

async fn confirm_delete(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<SmtpConnectorId>,
) -> PageResult {
    let connectors = store(state.store.list_smtp_connectors(tenant.id).await)?;
    let connector = found(connectors, id, |c| c.id)?;
    DELETE.page(&me, &tenant, connector, None)
}

async fn delete_connector(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<SmtpConnectorId>,
) -> PageResult {
    let deleted = service::delete_smtp_connector(&state, &me.caller, &tenant, id);
    DELETE
        .done(&tenant, deleted, Saved::SmtpConnectorDeleted)
        .await
}
