//! The listener's backend over Herald's store: who a client is (a tenant's
//! credential or connector) and a received message made a stored one.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use herald_core::timestamp::now_ms;
use herald_core::{EmailAddress, Mailbox, MessageId, Subject, TenantId, token};
use herald_store::handoff::{self, Handoff};
use herald_store::{NewMessage, OnBehalf, Origin, SmtpOrigin, Store, StoreError};
use mail_parser::{Address, MessageParser};

use crate::{Backend, Client, Envelope, Refusal, Sender};

/// What a node's backend needs besides its store.
pub struct StoreBackend {
    store: Arc<dyn Store>,
    /// Woken after each commit, so the worker looks for the new mail at once.
    wake: Arc<tokio::sync::Notify>,
    /// Recipients one tenant may have waiting, as for the API.
    max_queued_per_tenant: u64,
    /// Told (every waiter) after each commit too: gateways' waiting claims.
    mail_arrived: Option<Arc<tokio::sync::Notify>>,
    /// This node's worker, which takes messages as they are stored while it
    /// has room for them.
    handoff: Option<Arc<dyn Handoff>>,
}

impl StoreBackend {
    pub fn new(
        store: Arc<dyn Store>,
        wake: Arc<tokio::sync::Notify>,
        max_queued_per_tenant: u64,
    ) -> StoreBackend {
        StoreBackend {
            store,
            wake,
            max_queued_per_tenant,
            mail_arrived: None,
            handoff: None,
        }
    }

    /// Hands accepted messages to this node's worker while it has room.
    pub fn with_handoff(mut self, handoff: Arc<dyn Handoff>) -> StoreBackend {
        self.handoff = Some(handoff);
        self
    }

    /// Also tells `mail_arrived`'s waiters (gateways' claims waiting at the
    /// node) of each message accepted.
    pub fn with_mail_arrived(mut self, mail_arrived: Arc<tokio::sync::Notify>) -> StoreBackend {
        self.mail_arrived = Some(mail_arrived);
        self
    }
}

/// The store is unavailable: try again later (RFC 3463 4.3.0).
fn unavailable(e: &StoreError) -> Refusal {
    tracing::warn!(error = %e, "SMTP ingress: the store refused");
    Refusal::store_unavailable()
}

/// The store could not say whether a login is good: `454 4.7.0`, as RFC 4954 says.
fn login_unavailable(e: &StoreError) -> Refusal {
    tracing::warn!(error = %e, "SMTP ingress: the store could not check a login");
    Refusal::new(
        454,
        "4.7.0",
        "Temporary authentication failure, try again later",
    )
}

/// An answer for a submission the store refused.
fn refusal(e: StoreError) -> Refusal {
    match e {
        // Like the API's 429: the client is to wait, not to change anything.
        StoreError::QueueFull { limit } => Refusal::new(
            452,
            "4.3.1",
            format!(
                "The tenant has reached its limit of {limit} queued recipients, try again later"
            ),
        ),
        e => unavailable(&e),
    }
}

#[async_trait]
impl Backend for StoreBackend {
    async fn login(&self, username: &str, password: &str) -> Result<Option<Client>, Refusal> {
        let Some((credential, hash)) = self
            .store
            .smtp_login(username)
            .await
            .map_err(|e| login_unavailable(&e))?
        else {
            return Ok(None);
        };
        if !token::hashes_match(&token::hash(password), &hash) {
            return Ok(None);
        }
        // A minute's precision is enough, and spares a write per session.
        let now = now_ms();
        if credential.last_used_at.is_none_or(|t| now - t > 60_000) {
            self.store
                .smtp_credential_used(credential.id, now)
                .await
                .map_err(|e| login_unavailable(&e))?;
        }
        Ok(Some(Client {
            tenant_id: credential.tenant_id,
            by: Sender::Credential(credential.id.to_string()),
            rate_limit_per_minute: credential.rate_limit_per_minute,
        }))
    }

    async fn connector(&self, ip: IpAddr) -> Result<Option<Client>, Refusal> {
        let connectors = self
            .store
            .all_smtp_connectors()
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(connectors
            .into_iter()
            .find(|c| c.covers(ip))
            .map(|c| Client {
                tenant_id: c.tenant_id,
                by: Sender::Connector(c.id.to_string()),
                rate_limit_per_minute: c.rate_limit_per_minute,
            }))
    }

    async fn accept(&self, client: &Client, envelope: Envelope) -> Result<String, Refusal> {
        self.still_admitted(client, &envelope).await?;
        let message = self.message(client, envelope).await?;
        let id = message.id;
        // Answered only after the commit: a 250 is a durable promise.
        let submitted = handoff::submit(self.store.clone(), self.handoff.clone(), vec![message])
            .await
            .map_err(refusal)?;
        if handoff::left_for_claims(&submitted) {
            self.wake.notify_one();
            if let Some(arrived) = &self.mail_arrived {
                arrived.notify_waiters();
            }
        }
        Ok(id.to_string())
    }
}

impl StoreBackend {
    /// A session outlives changes: the credential it logged in with, or the
    /// connector that let it in, must still be there (and still cover the
    /// client) for each message, so a revocation takes effect at once.
    async fn still_admitted(&self, client: &Client, envelope: &Envelope) -> Result<(), Refusal> {
        let admitted = match &client.by {
            Sender::Credential(id) => match id.parse() {
                Ok(id) => self
                    .store
                    .smtp_credential(client.tenant_id, id)
                    .await
                    .map_err(|e| unavailable(&e))?
                    .is_some(),
                Err(_) => false,
            },
            Sender::Connector(id) => match id.parse() {
                Ok(id) => self
                    .store
                    .smtp_connector(client.tenant_id, id)
                    .await
                    .map_err(|e| unavailable(&e))?
                    .is_some_and(|c| c.covers(envelope.peer.ip())),
                Err(_) => false,
            },
        };
        if admitted {
            Ok(())
        } else {
            Err(Refusal::new(
                554,
                "5.7.1",
                "The credential or connector that admitted this session was revoked",
            ))
        }
    }

    /// The message to store: the bytes as received, and what lists and views
    /// show of it (subject, which recipient was in To or Cc, the person it is
    /// from when the header From is one of the tenant's).
    async fn message(&self, client: &Client, envelope: Envelope) -> Result<NewMessage, Refusal> {
        let head = MessageParser::default().parse_headers(&envelope.data[..]);
        let head = head.as_ref();
        let subject = subject(head.and_then(|m| m.subject()).unwrap_or_default());
        let shown_to = mailboxes(head.and_then(|m| m.to()));
        let shown_cc = mailboxes(head.and_then(|m| m.cc()));
        let (mut to, mut cc, mut bcc) = (Vec::new(), Vec::new(), Vec::new());
        for recipient in envelope.recipients {
            if let Some(shown) = shown_to.iter().find(|m| m.address.is_same_as(&recipient)) {
                to.push(shown.clone());
            } else if let Some(shown) = shown_cc.iter().find(|m| m.address.is_same_as(&recipient)) {
                cc.push(shown.clone());
            } else {
                bcc.push(recipient);
            }
        }
        let from = head.and_then(single_from);
        let on_behalf_of = match from {
            Some(from) => self.person(client.tenant_id, &from).await?,
            None => None,
        };
        let (credential_id, connector_id) = match &client.by {
            Sender::Credential(id) => (id.parse().ok(), None),
            Sender::Connector(id) => (None, id.parse().ok()),
        };
        Ok(NewMessage {
            id: MessageId::new(),
            tenant_id: client.tenant_id,
            idempotency_key: None,
            subject,
            text: None,
            html: None,
            reply_to: None,
            headers: Vec::new(),
            to,
            cc,
            bcc,
            used_fallback: false,
            created_at: now_ms(),
            on_behalf_of,
            test_provider: None,
            priority: 0,
            max_pending_tests: None,
            max_queued: Some(self.max_queued_per_tenant),
            origin: Origin::Smtp(SmtpOrigin {
                credential_id,
                connector_id,
                client_addr: envelope.peer.ip().to_canonical().to_string(),
            }),
            raw: Some(envelope.data),
            attachments: Vec::new(),
            send_at: None,
            template: None,
            // Not looked up here (the listener keeps no provider cache): a node
            // that claims mail of a route pinned to a gateway hands it over.
            gateway_id: None,
            handoff: None,
        })
    }

    /// The tenant's person with this address, if there is one.
    async fn person(
        &self,
        tenant: TenantId,
        address: &EmailAddress,
    ) -> Result<Option<OnBehalf>, Refusal> {
        let person = self
            .store
            .person_by_email(tenant, address)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(person.map(|p| OnBehalf {
            name: p.name,
            email: p.email,
        }))
    }
}

/// The subject as lists show it: decoded, control characters made spaces,
/// cut to the longest line a header may have.
fn subject(decoded: &str) -> Subject {
    let mut shown: String = decoded
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if shown.len() > herald_core::text::MAX_LINE {
        let mut end = herald_core::text::MAX_LINE;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
    }
    Subject::from_stored(&shown).expect("no line breaks and within the limit")
}

/// The mailboxes of an address header, those that parse.
fn mailboxes(header: Option<&Address<'_>>) -> Vec<Mailbox> {
    let Some(header) = header else {
        return Vec::new();
    };
    header
        .iter()
        .filter_map(|a| {
            let address = EmailAddress::parse(a.address()?).ok()?;
            let name = a
                .name()
                .and_then(|n| herald_core::DisplayName::parse(n).ok());
            Some(Mailbox { name, address })
        })
        .collect()
}

/// The address of the header From when the message has exactly one From
/// field holding one mailbox: only then may it be a person's own mail.
fn single_from(head: &mail_parser::Message<'_>) -> Option<EmailAddress> {
    let mut froms = head
        .headers()
        .iter()
        .filter(|h| h.name == mail_parser::HeaderName::From);
    let field = froms.next()?;
    if froms.next().is_some() {
        return None;
    }
    match field.value.as_address()? {
        Address::List(list) if list.len() == 1 => EmailAddress::parse(list[0].address()?).ok(),
        _ => None,
    }
}
