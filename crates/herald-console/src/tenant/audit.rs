//! A tenant's audit log: the latest changes, who made them and how, with the
//! names of the persons and objects where they still exist (their ids beside).

use std::collections::HashMap;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use herald_api::AppState;
use herald_api::gate::TenantAdmin;
use herald_store::{AuditEntry, Tenant};
use minijinja::context;
use serde::Serialize;

use super::store;
use crate::gate::TenantPage;
use crate::pages::{PageResult, base};
use crate::render::{PageError, page};

pub fn router() -> Router<AppState> {
    Router::new().route("/t/{tenant}/audit", get(audit))
}

/// Something an entry may name, as the page shows it.
#[derive(Clone, Serialize)]
struct Named {
    kind: &'static str,
    name: String,
    /// Its page, when it has one.
    href: Option<String>,
}

/// One entry as the page shows it.
#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    entry: AuditEntry,
    /// The person who made the change, when known and not deleted.
    person: Option<String>,
    /// How they made it ("in the console", `with the token "deploy"`), or
    /// the whole actor when no person is known.
    via: String,
    /// What the object is now; `None` when it has been deleted (or never had a name).
    object: Option<Named>,
    /// For a deleted object, the name an entry of the log recorded for it.
    former: Option<String>,
}

async fn audit(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
) -> PageResult {
    let entries = store(state.store.list_audit(tenant.id, 200).await)?;
    let names = names(&state, &tenant).await?;
    let tokens = store(state.store.list_tokens(tenant.id).await)?;
    let token_person: HashMap<String, String> = tokens
        .iter()
        .filter_map(|t| Some((t.id.to_string(), t.person_id?.to_string())))
        .collect();
    let token_name: HashMap<String, &str> = tokens
        .iter()
        .map(|t| (t.id.to_string(), t.name.as_str()))
        .collect();
    // A deleted object is known only by what the log recorded when it was
    // created or changed: its name (or an account's user name).
    let mut recorded: HashMap<String, String> = HashMap::new();
    for entry in &entries {
        let name = ["name", "username"]
            .iter()
            .find_map(|field| entry.details.get(field)?.as_str());
        if let (Some(id), Some(name)) = (&entry.object_id, name) {
            // Entries come newest first: the first name seen is the latest.
            recorded
                .entry(id.clone())
                .or_insert_with(|| name.to_owned());
        }
    }
    let rows: Vec<Row> = entries
        .into_iter()
        .map(|entry| {
            // The actor reads `<role> token "<name>" of person <id>`; an API
            // token names its person in the token list as well.
            let (via, person_id) = match entry.actor.rsplit_once(" of person ") {
                Some((via, id)) => (via.to_owned(), Some(id.to_owned())),
                None => (entry.actor.clone(), None),
            };
            let person_id = person_id.or_else(|| {
                let token = entry.token_id.as_ref()?.to_string();
                token_person.get(&token).cloned()
            });
            // The operator is no person of the tenant, but is someone to name.
            let operator = via
                .strip_prefix("operator token ")
                .map(|name| ("Operator".to_owned(), format!("with the token {name}")));
            let person = person_id
                .and_then(|id| names.get(&id))
                .filter(|n| n.kind == "person")
                .map(|n| n.name.clone());
            // How, in words: a console session, or the token by its name.
            let token = entry.token_id.as_ref().map(|t| t.to_string());
            // A live API token is known by its id first, whatever its name:
            // only what is not one of the tenant's tokens is a console session.
            let console =
                via.ends_with("\"console session\"") || via.contains("\"console session of ");
            let via = match (&person, token.and_then(|t| token_name.get(&t))) {
                (Some(_), Some(name)) => format!("with the token \"{name}\""),
                (_, None) if console => "in the console".to_owned(),
                (None, _) => match &operator {
                    Some((_, how)) => how.clone(),
                    None => entry.actor.clone(),
                },
                (Some(_), None) => via,
            };
            let object = entry
                .object_id
                .as_ref()
                .and_then(|id| names.get(id))
                .cloned();
            let former = match object {
                Some(_) => None,
                None => entry
                    .object_id
                    .as_ref()
                    .and_then(|id| recorded.get(id))
                    .cloned(),
            };
            Row {
                entry,
                person: person.or(operator.map(|(who, _)| who)),
                via,
                object,
                former,
            }
        })
        .collect();
    Ok(page(
        "audit.html",
        context! { entries => rows, ..base(&me, &tenant, "audit") },
    ))
}

/// Every object of the tenant an entry may name, by id.
async fn names(state: &AppState, tenant: &Tenant) -> Result<HashMap<String, Named>, PageError> {
    let slug = &tenant.slug;
    let mut names = HashMap::new();
    let mut add = |id: String, kind, name, href: Option<String>| {
        names.insert(id, Named { kind, name, href });
    };
    add(
        tenant.id.to_string(),
        "tenant",
        tenant.name.clone(),
        Some(format!("/t/{slug}/properties")),
    );
    for person in store(state.store.list_persons(tenant.id).await)? {
        add(
            person.id.to_string(),
            "person",
            person.name.clone(),
            Some(format!("/t/{slug}/persons")),
        );
    }
    for token in store(state.store.list_tokens(tenant.id).await)? {
        add(token.id.to_string(), "token", token.name, None);
    }
    for credential in store(state.store.list_smtp_credentials(tenant.id).await)? {
        add(
            credential.id.to_string(),
            "SMTP credential",
            format!("{} ({})", credential.name, credential.username),
            Some(format!("/t/{slug}/smtp#credentials")),
        );
    }
    for connector in store(state.store.list_smtp_connectors(tenant.id).await)? {
        add(
            connector.id.to_string(),
            "IP connector",
            connector.name,
            Some(format!("/t/{slug}/smtp#connectors")),
        );
    }
    for provider in store(state.store.list_providers(tenant.id).await)? {
        add(
            provider.id.to_string(),
            "provider",
            provider.settings.name.clone(),
            Some(format!("/t/{slug}/providers/{}", provider.id)),
        );
    }
    for server in store(state.store.list_servers(tenant.id).await)? {
        let href = format!("/t/{slug}/servers/{}", server.id);
        for account in store(state.store.list_accounts(tenant.id, server.id).await)? {
            add(
                account.id.to_string(),
                "SMTP account",
                format!("{} on {}", account.username, server.settings.name),
                Some(format!("{href}#accounts")),
            );
        }
        add(
            server.id.to_string(),
            "SMTP server",
            server.settings.name.clone(),
            Some(href),
        );
    }
    Ok(names)
}
