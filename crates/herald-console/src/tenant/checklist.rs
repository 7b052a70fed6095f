//! The setup checklist of a tenant's dashboard: the steps from an empty
//! tenant to a delivered test message, in the order an administrator takes
//! them, each ticked from what is stored (never from the session) and linking
//! to the page where it is done.

use herald_api::AppState;
use herald_core::RecipientStatus;
use herald_store::{MessageQuery, Tenant};
use serde::Serialize;

use super::store;
use crate::render::PageError;

/// One step: what to do, whether it is done, and where.
#[derive(Serialize)]
pub struct Step {
    pub title: String,
    pub done: bool,
    pub href: String,
    /// Why it is not done yet, when there is more to say than the title.
    pub detail: Option<String>,
    /// A link that explains the detail (the failed test's page).
    pub detail_href: Option<String>,
}

/// The steps, and whether all are done (then the dashboard folds the list away).
#[derive(Serialize)]
pub struct Checklist {
    pub steps: Vec<Step>,
    pub done: usize,
    pub complete: bool,
}

/// Reads the tenant's stored state: its servers and their accounts, its
/// providers, its chosen provider, and that provider's newest test message.
pub async fn checklist(state: &AppState, tenant: &Tenant) -> Result<Checklist, PageError> {
    let t = format!("/t/{}", tenant.slug);
    let servers = store(state.store.list_servers(tenant.id).await)?;
    let providers = store(state.store.list_providers(tenant.id).await)?;
    let mut steps = vec![Step {
        title: "Add the SMTP server your mail goes through".into(),
        done: !servers.is_empty(),
        href: format!("{t}/servers/new"),
        detail: None,
        detail_href: None,
    }];

    // An account only where a server requires authentication.
    let mut without_account = None;
    let mut any_auth = false;
    for server in servers.iter().filter(|s| s.settings.requires_auth) {
        any_auth = true;
        let accounts = store(state.store.list_accounts(tenant.id, server.id).await)?;
        if accounts.is_empty() && without_account.is_none() {
            without_account = Some(server);
        }
    }
    if any_auth {
        steps.push(Step {
            title: match without_account {
                Some(s) => format!(
                    "Add an account to {}: it requires authentication",
                    s.settings.name
                ),
                None => "Add an account to the server that requires authentication".into(),
            },
            done: without_account.is_none(),
            href: match without_account {
                Some(s) => format!("{t}/servers/{}#add-account", s.id),
                None => format!("{t}/servers"),
            },
            detail: None,
            detail_href: None,
        });
    }

    steps.push(Step {
        title: "Create a notification provider: the sender address and the server it uses".into(),
        done: !providers.is_empty(),
        href: match servers.first() {
            Some(s) if servers.len() == 1 => format!("{t}/providers/new?server={}", s.id),
            _ => format!("{t}/providers/new"),
        },
        detail: None,
        detail_href: None,
    });

    let chosen = tenant
        .notification_provider_id
        .and_then(|id| providers.iter().find(|p| p.id == id));
    steps.push(Step {
        title: "Make it the tenant's provider".into(),
        done: chosen.is_some(),
        href: match providers.first() {
            Some(p) if providers.len() == 1 => format!("{t}/providers/{}#use", p.id),
            _ => format!("{t}/properties"),
        },
        detail: None,
        detail_href: None,
    });

    // Done once a test message of the chosen provider was delivered (a later
    // failure is news about delivery, not a step of the setup undone).
    let tests = match chosen {
        Some(provider) => {
            let query = MessageQuery {
                test_provider: Some(provider.id),
                limit: 20,
                ..MessageQuery::default()
            };
            store(state.store.search_messages(tenant.id, query).await)?
        }
        None => Vec::new(),
    };
    let delivered = tests.iter().any(|m| m.status == RecipientStatus::Sent);
    let (detail, detail_href) = match tests.first() {
        Some(m) if !delivered && m.status == RecipientStatus::Failed => (
            Some("The last test message failed: its page shows each step.".to_owned()),
            Some(format!("{t}/tests/{}", m.id)),
        ),
        Some(m) if !delivered => (
            Some("A test message is on its way.".to_owned()),
            Some(format!("{t}/tests/{}", m.id)),
        ),
        _ => (None, None),
    };
    steps.push(Step {
        title: "Send a test message through it".into(),
        done: delivered,
        href: match chosen {
            Some(p) => format!("{t}/providers/{}#test", p.id),
            None => format!("{t}/providers"),
        },
        detail,
        detail_href,
    });

    let done = steps.iter().filter(|s| s.done).count();
    Ok(Checklist {
        complete: done == steps.len(),
        done,
        steps,
    })
}
