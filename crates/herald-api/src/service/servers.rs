//! SMTP servers of a tenant: create, change (clearing the accounts' secrets when
//! trust is redirected or weakened), delete, and the warning, when one is
//! saved, that the egress guard would refuse its host.

use std::net::IpAddr;
use std::time::Duration;

use herald_core::{Port, ServerId, SmtpHost};
use herald_smtp::{Egress, EgressRule};
use herald_store::{ServerSettings, SmtpServer, Tenant, Warning};
use serde_json::json;

use crate::routes::servers::ServerBody;
use crate::{ApiError, AppState, Caller};

/// Creates an SMTP server of an authorised tenant, and records it in the audit log.
pub async fn create_server(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    body: ServerBody,
) -> Result<SmtpServer, ApiError> {
    let settings = body.settings(None)?;
    let server = state.store.create_server(tenant.id, settings).await?;
    caller
        .audit_tenant(
            state,
            tenant.id,
            "smtp_server.create",
            server.id,
            json!(server.settings),
        )
        .await;
    Ok(server)
}

/// Changes an SMTP server: the fields given replace the stored ones. A change
/// that redirects or weakens trust (see `ServerSettings::change_clears_secrets`)
/// clears the secrets of the server's accounts.
pub async fn update_server(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: ServerId,
    body: ServerBody,
) -> Result<SmtpServer, ApiError> {
    let current = state.store.server(tenant.id, id).await?;
    let settings = body.settings(Some(&current.settings))?;
    let old = &current.settings;
    let secrets_cleared = old.change_clears_secrets(&settings);
    let server = state.store.update_server(tenant.id, id, settings).await?;
    if server.settings.gateway_id != old.gateway_id {
        // Pinned or unpinned: this node forgets its cached route at once
        // (other nodes hear of it through the store), so it never sends mail
        // that is now only the gateway's, nor hands mail given back to the
        // nodes to a gateway the server left.
        state.cache.invalidate(tenant.id);
    }
    caller
        .audit_tenant(state, tenant.id, "smtp_server.update", id, json!({"before": old, "after": server.settings, "account_secrets_cleared": secrets_cleared}))
        .await;
    Ok(server)
}

/// Deletes an SMTP server and its accounts; a conflict while a provider uses it.
pub async fn delete_server(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: ServerId,
) -> Result<(), ApiError> {
    let deleted = state.store.delete_server(tenant.id, id);
    super::audited_removal(state, caller, tenant, "smtp_server.delete", id, deleted).await
}

/// How long saving a server waits for its host name to resolve, to say at
/// once when the egress guard would refuse it. A slow resolver delays the
/// answer by this much at most; it never refuses the save.
pub const RESOLVE_WITHIN: Duration = Duration::from_secs(2);

/// The rule by which the egress guard would refuse every address of the
/// server's host, judged now: an IP address at once, a name on what it
/// resolves to within `RESOLVE_WITHIN`. A name that does not resolve (in
/// time, or at all) gives none: the nodes that deliver may see other DNS
/// answers, and a test message shows what they see. A name with some
/// addresses refused and some not gives none either: mail goes to the others.
pub async fn egress_refusal(egress: &Egress, host: &SmtpHost, port: Port) -> Option<EgressRule> {
    let addresses: Vec<IpAddr> = match host.ip() {
        Some(ip) => vec![ip],
        None => match tokio::time::timeout(
            RESOLVE_WITHIN,
            tokio::net::lookup_host((host.as_ref(), port.get())),
        )
        .await
        {
            Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
            Ok(Err(_)) | Err(_) => return None,
        },
    };
    let rules: Vec<Option<EgressRule>> = addresses.iter().map(|ip| egress.refusal(*ip)).collect();
    if rules.iter().all(Option::is_some) {
        rules.into_iter().flatten().next()
    } else {
        None
    }
}

/// The warning that the egress guard refuses the server's host by `rule`,
/// in the words of the refusal a delivery would meet.
pub fn egress_warning(host: &SmtpHost, rule: EgressRule) -> Warning {
    let what = match host.ip() {
        Some(_) => format!("{host} is an address"),
        None => format!("{host} resolves only to addresses"),
    };
    Warning::new(
        "egress_refused",
        format!(
            "{what} this installation's egress policy refuses, so no mail can go through this server: {rule}"
        ),
    )
}

/// The warnings of a server entry whose save found the egress guard refusing
/// its host by the rule named `code` (as [`egress_refusal`] judged it then):
/// the page a save leads to shows them without resolving the name again. An
/// address is judged anew, which needs no DNS; an unknown code adds nothing.
pub fn warnings_after_save(
    state: &AppState,
    settings: &ServerSettings,
    code: Option<&str>,
) -> Vec<Warning> {
    let rule = match settings.host.ip() {
        Some(ip) => state.egress.refusal(ip),
        None => code.and_then(EgressRule::from_code),
    };
    warnings_with(settings, rule)
}

/// What the administrator should know about a server entry just saved: what
/// is weak about its settings, and whether the egress guard refuses its host
/// (resolved within `RESOLVE_WITHIN`).
pub async fn warnings_when_saved(state: &AppState, settings: &ServerSettings) -> Vec<Warning> {
    let rule = egress_refusal(&state.egress, &settings.host, settings.port).await;
    warnings_with(settings, rule)
}

/// The entry's own warnings, and the egress guard's refusal by `rule`.
fn warnings_with(settings: &ServerSettings, rule: Option<EgressRule>) -> Vec<Warning> {
    let mut warnings = settings.warnings();
    warnings.extend(rule.map(|rule| egress_warning(&settings.host, rule)));
    warnings
}
