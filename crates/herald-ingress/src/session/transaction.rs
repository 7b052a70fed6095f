//! A mail transaction in a session: MAIL, RCPT and DATA, and the hand-over
//! of an accepted message to the backend.

use herald_core::EmailAddress;
use herald_metrics::{Source, Submitted};

use super::{Flow, Input, Session, Transaction};
use crate::data::{DataReader, Outcome};
use crate::received::Trace;
use crate::reply::Reply;
use crate::{Client, Envelope, canonical};

/// A short random id for a transaction, in the `Received:` header and the logs.
fn transaction_id() -> String {
    format!("{:016X}", rand::random::<u64>())
}

/// `smtp-proto` gives a quoted local part without its quotes; this puts them
/// back where the local part is no dot-atom, so that `EmailAddress::parse`
/// sees the address as the client wrote it.
fn address_form(address: &str) -> String {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return address.to_owned();
    };
    let dot_atom = !local.is_empty()
        && local.split('.').all(|atom| {
            !atom.is_empty()
                && atom.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || "!#$%&'*+/=?^_`{|}~-".contains(c)
                        || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
                })
        });
    if dot_atom {
        return address.to_owned();
    }
    let escaped: String = local
        .chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"@{domain}")
}

impl Session {
    /// Who may send in this session: the authenticated credential, else the connector.
    fn client(&self) -> Result<Client, Reply> {
        if let Some((client, _)) = &self.authenticated {
            return Ok(client.clone());
        }
        match &self.connector {
            Ok(Some(client)) => Ok(client.clone()),
            Ok(None) => Err(Reply::new(530, "5.7.0", "Authentication required")),
            Err(refusal) => Err(Reply::from(refusal.clone())),
        }
    }

    pub(super) fn mail(&mut self, from: smtp_proto::MailFrom<String>) {
        if self.helo.is_none() {
            return self.error(Reply::new(503, "5.5.1", "Send EHLO or HELO first"));
        }
        if self.transaction.is_some() {
            return self.error(Reply::new(503, "5.5.1", "Nested MAIL command"));
        }
        let client = match self.client() {
            Ok(client) => client,
            Err(reply) => return self.error(reply),
        };
        let known =
            smtp_proto::MAIL_BODY_7BIT | smtp_proto::MAIL_BODY_8BITMIME | smtp_proto::MAIL_SMTPUTF8;
        let unknown = from.flags & !known != 0
            || from.trans_id.is_some()
            || from.by != 0
            || from.env_id.is_some()
            || from.solicit.is_some()
            || from.mtrk.is_some()
            || from.hold_for != 0
            || from.hold_until != 0
            || from.mt_priority != 0;
        if unknown {
            return self.error(Reply::new(
                555,
                "5.5.4",
                "Unsupported MAIL parameter (SIZE, BODY=7BIT/8BITMIME, SMTPUTF8 and AUTH are)",
            ));
        }
        let max = self.shared.settings.max_message_size;
        if from.size > max {
            return self.error(Reply::new(
                552,
                "5.3.4",
                format!("Message too big: the limit is {max} octets"),
            ));
        }
        let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
        let reverse_path = if from.address.is_empty() {
            String::new()
        } else {
            match EmailAddress::parse(&address_form(&from.address)) {
                Ok(address) if !address.is_ascii() && !smtputf8 => {
                    return self.error(Reply::new(
                        553,
                        "5.6.7",
                        "An internationalised sender address needs SMTPUTF8",
                    ));
                }
                Ok(address) => address.to_string(),
                Err(invalid) => {
                    return self.error(Reply::new(
                        553,
                        "5.1.7",
                        format!("The sender address {invalid}"),
                    ));
                }
            }
        };
        if let Some(per_minute) = client.rate_limit_per_minute
            && !self.shared.rates.take(&client.by, per_minute)
        {
            tracing::info!(sender = ?client.by, per_minute, "SMTP rate limit reached");
            return self.reply(Reply::new(
                451,
                "4.7.0",
                format!("Rate limit of {per_minute} messages per minute reached, try again later"),
            ));
        }
        self.transaction = Some(Transaction {
            id: transaction_id(),
            client,
            reverse_path,
            smtputf8,
            recipients: Vec::new(),
            rcpt_given: false,
        });
        self.reply(Reply::new(250, "2.1.0", "Ok"));
    }

    pub(super) fn rcpt(&mut self, to: smtp_proto::RcptTo<String>) {
        let max = self.shared.settings.max_recipients;
        let Some(transaction) = self.transaction.as_mut() else {
            return self.error(Reply::new(503, "5.5.1", "Need MAIL before RCPT"));
        };
        transaction.rcpt_given = true;
        if to.flags != 0 || to.orcpt.is_some() || to.rrvs != 0 {
            return self.error(Reply::new(
                555,
                "5.5.4",
                "Unsupported RCPT parameter (none are supported)",
            ));
        }
        if transaction.recipients.len() >= max {
            return self.reply(Reply::new(
                452,
                "4.5.3",
                format!("Too many recipients: at most {max} per message"),
            ));
        }
        if to.address.is_empty() {
            // The parser gives `<Postmaster>` (RFC 5321 §4.5.1) as an empty
            // address. This gateway keeps no mailbox of its own for it.
            return self.error(Reply::new(
                550,
                "5.1.1",
                "This gateway keeps no mailboxes: Postmaster, or an empty address, needs a full address with a domain",
            ));
        }
        let address = match EmailAddress::parse(&address_form(&to.address)) {
            Ok(address) => address,
            Err(invalid) => {
                return self.error(Reply::new(
                    553,
                    "5.1.3",
                    format!("The recipient address {invalid}"),
                ));
            }
        };
        if !address.is_ascii() && !transaction.smtputf8 {
            return self.error(Reply::new(
                553,
                "5.6.7",
                "An internationalised recipient address needs SMTPUTF8",
            ));
        }
        // The same mailbox twice (in any case) is one recipient, as mail
        // systems compare addresses.
        if !transaction
            .recipients
            .iter()
            .any(|r| r.is_same_as(&address))
        {
            transaction.recipients.push(address);
        }
        self.reply(Reply::new(250, "2.1.5", "Ok"));
    }

    pub(super) async fn data(&mut self) -> Flow {
        let Some(transaction) = self.transaction.as_ref() else {
            self.error(Reply::new(503, "5.5.1", "Need MAIL and RCPT before DATA"));
            return Flow::Continue;
        };
        if transaction.recipients.is_empty() {
            let reply = if transaction.rcpt_given {
                Reply::new(554, "5.5.1", "No valid recipients")
            } else {
                Reply::new(503, "5.5.1", "Need RCPT before DATA")
            };
            self.error(reply);
            return Flow::Continue;
        }
        let settings = &self.shared.settings;
        let helo = self.helo.as_ref().expect("MAIL needs a HELO");
        let received = Trace {
            helo: &helo.name,
            esmtp: helo.esmtp,
            ip: canonical(self.peer.ip()),
            by: &settings.hostname,
            tls: self.tls.as_ref().map(|(v, c)| (v.as_str(), c.as_str())),
            authenticated: self.authenticated.is_some(),
            id: &transaction.id,
        }
        .header(time::OffsetDateTime::now_utc());
        let mut reader = DataReader::new(
            received.into_bytes(),
            settings.max_message_size,
            settings.max_header_fields,
        );
        let data_timeout = settings.data_timeout;
        self.reply(Reply::bare(354, "End data with <CR><LF>.<CR><LF>"));
        loop {
            let (taken, done) = reader.feed(&self.input[self.pos..]);
            self.pos += taken;
            if done {
                break;
            }
            // A stop does not interrupt a message being received.
            match self.fill(data_timeout, false).await {
                Ok(()) => {}
                Err(Input::TimedOut) => {
                    let host = self.shared.settings.hostname.clone();
                    self.reply(Reply::new(
                        421,
                        "4.4.2",
                        format!("{host} Timeout during DATA, closing connection"),
                    ));
                    return Flow::Close;
                }
                Err(_) => {
                    tracing::info!("the client left during DATA; nothing was stored");
                    return Flow::Close;
                }
            }
        }
        let transaction = self.transaction.take().expect("checked above");
        let data = match reader.finish() {
            Outcome::Message(data) => data,
            Outcome::Refused(reply) => {
                // A whole message received and not stored, as a refusal by the backend is.
                self.shared
                    .metrics
                    .submitted(Source::Smtp, Submitted::Refused, 1);
                tracing::info!(id = %transaction.id, code = reply.code, "message refused");
                self.reply(reply);
                return Flow::Continue;
            }
        };
        let envelope = Envelope {
            peer: self.peer,
            reverse_path: transaction.reverse_path,
            recipients: transaction.recipients,
            data,
            smtputf8: transaction.smtputf8,
        };
        let recipients = envelope.recipients.len();
        let size = envelope.data.len();
        // Not cancelled by a stop: the reply tells the client what happened.
        match self
            .shared
            .backend
            .accept(&transaction.client, envelope)
            .await
        {
            Ok(message_id) => {
                self.shared
                    .metrics
                    .submitted(Source::Smtp, Submitted::Accepted, 1);
                tracing::info!(
                    id = %transaction.id,
                    tenant = %transaction.client.tenant_id,
                    message_id = %message_id,
                    recipients,
                    size,
                    "message accepted"
                );
                self.reply(Reply::new(
                    250,
                    "2.0.0",
                    format!("Ok: queued as {message_id}"),
                ));
            }
            Err(refusal) => {
                self.shared
                    .metrics
                    .submitted(Source::Smtp, Submitted::Refused, 1);
                tracing::warn!(id = %transaction.id, ?refusal, "message not stored");
                self.reply(Reply::from(refusal));
            }
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_local_parts_get_their_quotes_back() {
        assert_eq!(address_form("a.b@example.com"), "a.b@example.com");
        assert_eq!(
            address_form("john doe@example.com"),
            "\"john doe\"@example.com"
        );
        assert_eq!(address_form("a\"b@example.com"), "\"a\\\"b\"@example.com");
        assert_eq!(address_form("ünï@example.com"), "ünï@example.com");
    }
}
