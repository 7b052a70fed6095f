//! The store's business rules, once for both backends: plain functions over
//! what a backend has loaded, deciding whether a change may go ahead and
//! what it leaves behind.

use herald_core::status::message_status;
use herald_core::{EmailAddress, Invalid, ProviderId, RecipientStatus};

use crate::model::{
    AttemptResult, NewMessage, Person, SmtpAccount, SmtpServer, Tenant, WebhookDeliveryStatus,
    WebhookNext,
};
use crate::{Result, StoreError};

/// A provider's server must be one of the tenant's: a server that was not
/// found is an invalid `smtp_server_id`, not a missing provider.
pub(crate) fn provider_server(found: Result<SmtpServer>) -> Result<SmtpServer> {
    match found {
        Err(StoreError::NotFound) => Err(StoreError::Invalid(
            Invalid::new("must name an SMTP server of this tenant").at("smtp_server_id"),
        )),
        other => other,
    }
}

/// The provider a tenant makes active must be one of its own: one not found
/// is an invalid `notification_provider_id`.
pub(crate) fn active_provider(found: Result<crate::model::Provider>) -> Result<()> {
    match found {
        Err(StoreError::NotFound) => Err(StoreError::Invalid(
            Invalid::new("must name a notification provider of this tenant, or be null")
                .at("notification_provider_id"),
        )),
        other => other.map(drop),
    }
}

/// A provider's account must be one of its server's, and a server that
/// requires authentication needs one. `account` is what the backend found
/// for the provider's `account_id`, or `None` when it names none.
pub(crate) fn provider_account(
    server: &SmtpServer,
    account: Option<Result<SmtpAccount>>,
) -> Result<()> {
    match account {
        Some(Err(StoreError::NotFound)) => Err(StoreError::Invalid(
            Invalid::new("must name an account of the provider's SMTP server").at("account_id"),
        )),
        Some(found) => found.map(drop),
        None if server.settings.requires_auth => Err(StoreError::Invalid(
            Invalid::new("is required because the SMTP server requires authentication")
                .at("account_id"),
        )),
        None => Ok(()),
    }
}

/// A server may be deleted only while no provider uses it.
pub(crate) fn server_unused(used_by: Option<String>) -> Result<()> {
    match used_by {
        Some(name) => Err(StoreError::Conflict(format!(
            "the SMTP server is used by the provider {name:?}"
        ))),
        None => Ok(()),
    }
}

/// An account may be deleted only while no provider uses it.
pub(crate) fn account_unused(used_by: Option<String>) -> Result<()> {
    match used_by {
        Some(name) => Err(StoreError::Conflict(format!(
            "the account is used by the provider {name:?}"
        ))),
        None => Ok(()),
    }
}

/// A person may be deleted only while no SMTP account is bound to them.
pub(crate) fn person_unbound(bound_account: Option<String>) -> Result<()> {
    match bound_account {
        Some(username) => Err(StoreError::Conflict(format!(
            "the SMTP account {username:?} is bound to this person; delete the account first (another account can then be bound to someone else)"
        ))),
        None => Ok(()),
    }
}

/// The tenant's active provider cannot be deleted.
pub(crate) fn provider_not_active(tenant: &Tenant, provider: ProviderId) -> Result<()> {
    if tenant.notification_provider_id == Some(provider) {
        return Err(StoreError::Conflict(
            "the provider is the tenant's active provider; choose another in the tenant properties first"
                .into(),
        ));
    }
    Ok(())
}

/// A new connector's networks may overlap no other connector's, the
/// tenant's own or another tenant's: a client's address must name one
/// tenant. Another tenant's connector is not named.
pub(crate) fn connector_networks(
    tenant: herald_core::TenantId,
    cidrs: &[ipnet::IpNet],
    existing: &[crate::model::SmtpConnector],
) -> Result<()> {
    let overlaps =
        |a: &ipnet::IpNet, b: &ipnet::IpNet| a.contains(&b.network()) || b.contains(&a.network());
    for connector in existing {
        let Some((new, old)) = cidrs.iter().find_map(|n| {
            connector
                .cidrs
                .iter()
                .find(|o| overlaps(n, o))
                .map(|o| (n, o))
        }) else {
            continue;
        };
        return Err(StoreError::Conflict(if connector.tenant_id == tenant {
            format!(
                "cidrs: {new} overlaps {old} of this tenant's connector {:?}",
                connector.name
            )
        } else {
            format!(
                "cidrs: {new} overlaps the networks of another tenant's connector; \
                 a client's address must belong to one tenant"
            )
        }));
    }
    Ok(())
}

/// A message may be cancelled while every recipient is still waiting
/// (queued, scheduled or deferred): none is being sent, none is final. No
/// recipient at all means no such message of this tenant. Returns how many
/// recipients the cancellation takes out of the queue.
pub(crate) fn cancellable(statuses: &[herald_core::RecipientStatus]) -> Result<i64> {
    use herald_core::RecipientStatus::{Deferred, Queued};
    if statuses.is_empty() {
        return Err(StoreError::NotFound);
    }
    let busy = statuses
        .iter()
        .filter(|s| !matches!(s, Queued | Deferred))
        .count();
    if busy > 0 {
        let words: std::collections::BTreeSet<&str> = statuses
            .iter()
            .filter(|s| !matches!(s, Queued | Deferred))
            .map(|s| s.as_str())
            .collect();
        return Err(StoreError::Conflict(format!(
            "the message can no longer be cancelled: {busy} of its {} recipients are {}",
            statuses.len(),
            words.into_iter().collect::<Vec<_>>().join(" or ")
        )));
    }
    Ok(statuses.len() as i64)
}

/// A schedule's template must be one of the tenant's: a template that was
/// not found is an invalid `template`, not a missing schedule.
pub(crate) fn schedule_template(found: Result<crate::model::Template>) -> Result<()> {
    match found {
        Err(StoreError::NotFound) => Err(StoreError::Invalid(
            Invalid::new("must name a template of this tenant").at("template"),
        )),
        other => other.map(drop),
    }
}

/// A template may be deleted only while no schedule uses it.
pub(crate) fn template_unused(used_by: &[String]) -> Result<()> {
    match used_by {
        [] => Ok(()),
        [name] => Err(StoreError::Conflict(format!(
            "the template is used by the schedule {name:?}; delete the schedule or change its template first"
        ))),
        names => Err(StoreError::Conflict(format!(
            "the template is used by the schedules {}; delete them or change their template first",
            names
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A server's gateway must be one of the tenant's: a gateway that was not
/// found is an invalid `gateway_id`, not a missing server.
pub(crate) fn server_gateway(found: Result<crate::model::Gateway>) -> Result<()> {
    match found {
        Err(StoreError::NotFound) => Err(StoreError::Invalid(
            Invalid::new("must name a gateway of this tenant").at("gateway_id"),
        )),
        other => other.map(drop),
    }
}

/// A gateway may be deleted only while no SMTP server names it.
pub(crate) fn gateway_unused(used_by: &[String]) -> Result<()> {
    let names = || {
        used_by
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match used_by {
        [] => Ok(()),
        [_] => Err(StoreError::Conflict(format!(
            "the gateway delivers the mail of the SMTP server {}; change the server's gateway first",
            names()
        ))),
        _ => Err(StoreError::Conflict(format!(
            "the gateway delivers the mail of the SMTP servers {}; change their gateway first",
            names()
        ))),
    }
}

/// The conflict a taken name makes: `what` is "template", "schedule" or "gateway".
pub(crate) fn name_taken(what: &str, name: &str) -> String {
    format!("a {what} named {name:?} already exists")
}

/// Of the persons a backend found for an address (in their order), the
/// first whose address is the same mailbox ([`EmailAddress::is_same_as`]).
pub(crate) fn same_address_first(found: Vec<Person>, email: &EmailAddress) -> Option<Person> {
    found.into_iter().find(|p| p.email.is_same_as(email))
}

/// The stored status and next due time a webhook event's attempt leaves it with.
pub(crate) fn after_webhook_attempt(r: &AttemptResult) -> (WebhookDeliveryStatus, i64) {
    match r.next {
        WebhookNext::Delivered => (WebhookDeliveryStatus::Delivered, r.at),
        WebhookNext::Retry { at } => (WebhookDeliveryStatus::Pending, at),
        WebhookNext::GiveUp => (WebhookDeliveryStatus::Failed, r.at),
    }
}

/// The status a test event's one attempt is recorded with: a test event is
/// never tried again, so an attempt that would be retried has failed.
pub(crate) fn webhook_test_status(r: &AttemptResult) -> WebhookDeliveryStatus {
    match r.next {
        WebhookNext::Delivered => WebhookDeliveryStatus::Delivered,
        WebhookNext::Retry { .. } | WebhookNext::GiveUp => WebhookDeliveryStatus::Failed,
    }
}

/// How a new message is answered when stored: `scheduled` while its
/// `send_at` is ahead of its submission, `queued` otherwise.
pub(crate) fn accepted_status(m: &NewMessage) -> RecipientStatus {
    RecipientStatus::Queued.as_of(m.send_at, m.created_at)
}

/// How a duplicate submission is answered: the earlier message's status
/// now, from its recipients' (`scheduled` while its `send_at` is ahead).
pub(crate) fn earlier_status(
    recipients: Vec<RecipientStatus>,
    send_at: Option<i64>,
) -> RecipientStatus {
    let now = herald_core::timestamp::now_ms();
    message_status(recipients.into_iter().map(|s| s.as_of(send_at, now)))
}
