//! AUTH PLAIN and LOGIN in a session: the exchange, the failure count per
//! address, and the backend's answer.

use super::{Flow, Input, Session};
use crate::auth::{self, SaslError};
use crate::canonical;
use crate::reply::Reply;

impl Session {
    /// Reads one line of an AUTH exchange after sending `334 challenge`.
    async fn challenge(&mut self, challenge: &str) -> Result<String, Flow> {
        self.reply(Reply::bare(334, challenge));
        match self.next_line(self.shared.settings.command_timeout).await {
            Input::Line(line) => match auth::decode(&String::from_utf8_lossy(&line)) {
                Ok(text) => Ok(text),
                Err(error) => {
                    self.sasl_error(error);
                    Err(Flow::Continue)
                }
            },
            Input::TooLong => {
                self.error(Reply::new(500, "5.5.2", "Line too long"));
                Err(Flow::Continue)
            }
            _ => Err(Flow::Close),
        }
    }

    fn sasl_error(&mut self, error: SaslError) {
        self.error(match error {
            // RFC 4954 section 4: a cancelled exchange is 501 5.7.0.
            SaslError::Cancelled => Reply::new(501, "5.7.0", "Authentication cancelled"),
            SaslError::Malformed => Reply::new(501, "5.5.2", "Malformed authentication response"),
        });
    }

    pub(super) async fn auth(&mut self, mechanism: u64, initial: String) -> Flow {
        let ip = canonical(self.peer.ip());
        if self.helo.as_ref().is_none_or(|h| !h.esmtp) {
            self.error(Reply::new(503, "5.5.1", "Send EHLO first"));
            return Flow::Continue;
        }
        if self.authenticated.is_some() {
            self.error(Reply::new(503, "5.5.1", "Already authenticated"));
            return Flow::Continue;
        }
        if self.transaction.is_some() {
            self.error(Reply::new(
                503,
                "5.5.1",
                "AUTH is not allowed during a mail transaction",
            ));
            return Flow::Continue;
        }
        if !self.auth_allowed() {
            self.error(Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism: use STARTTLS",
            ));
            return Flow::Continue;
        }
        if self.shared.auth_failures.blocked(ip) {
            tracing::info!("AUTH refused: too many failures from this address");
            self.reply(Reply::new(
                454,
                "4.7.0",
                "Too many failed authentications from your address, try again later",
            ));
            return Flow::Close;
        }
        let initial = (!initial.is_empty()).then_some(initial);
        let (user, password) = if mechanism == smtp_proto::AUTH_PLAIN {
            let response = match initial {
                Some(line) => auth::decode(&line),
                None => match self.challenge("").await {
                    Ok(text) => Ok(text),
                    Err(flow) => return flow,
                },
            };
            match response.and_then(|r| auth::plain(&r)) {
                Ok(pair) => pair,
                Err(error) => {
                    self.sasl_error(error);
                    return Flow::Continue;
                }
            }
        } else if mechanism == smtp_proto::AUTH_LOGIN {
            let user = match initial {
                Some(line) => match auth::decode(&line) {
                    Ok(user) => user,
                    Err(error) => {
                        self.sasl_error(error);
                        return Flow::Continue;
                    }
                },
                None => match self.challenge(auth::LOGIN_USERNAME).await {
                    Ok(user) => user,
                    Err(flow) => return flow,
                },
            };
            match self.challenge(auth::LOGIN_PASSWORD).await {
                Ok(password) => (user, password),
                Err(flow) => return flow,
            }
        } else {
            self.error(Reply::new(
                504,
                "5.5.4",
                "Unrecognized authentication type: use PLAIN or LOGIN",
            ));
            return Flow::Continue;
        };
        match self.shared.backend.login(&user, &password).await {
            Ok(Some(client)) => {
                tracing::info!(user = ?user, tenant = %client.tenant_id, "SMTP client authenticated");
                self.authenticated = Some((client, user));
                self.reply(Reply::new(235, "2.7.0", "Authentication successful"));
            }
            Ok(None) => {
                let blocked = self.shared.auth_failures.failed(ip);
                tracing::warn!(user = ?user, blocked, "SMTP authentication failed");
                self.error(Reply::new(
                    535,
                    "5.7.8",
                    "Authentication credentials invalid",
                ));
            }
            Err(refusal) => {
                tracing::warn!(?refusal, "SMTP authentication could not be checked");
                self.reply(Reply::from(refusal));
            }
        }
        Flow::Continue
    }
}
