//! Sending one message: resolve its route, send it over the route's pool (or
//! a traced connection of its own for a test message, or into the capture
//! mailbox), and turn what happened into an attempt record per recipient.

use std::fmt;
use std::time::{Duration, Instant};

use herald_core::Mechanism;
use herald_core::terminal::escape_unprintable;
use herald_core::timestamp::now_ms;
use herald_core::{GatewayId, RecipientStatus, TenantId};
use herald_smtp::{
    Connection, Credentials, Envelope, ErrorKind, Reply, SmtpError, Step, Target, Tracer,
    Transaction, wire,
};
use herald_store::{AttemptRecord, Claimed, MessageContent, NewCapture, NextState, Outcome};
use tracing::warn;

use super::outcome::{self, Answer, Message};
use super::{Done, Worker};
use crate::pool::{Lease, PoolLimits, RoutePool, Slot};
use crate::{
    Login, Rendered, ResolveError, Route, Transport, WorkerStats, load_config, render, route,
};

/// How long a message waits for a free connection of its route before it is
/// given back: long enough for a busy healthy pool, short for a stalled one.
/// Claims take no more for a route than it can start soon (its room), so in
/// steady state no message waits this long.
const SLOT_PATIENCE: Duration = Duration::from_millis(500);

/// Why a send did not produce a transaction.
enum SendError {
    Smtp(SmtpError),
    /// The OAuth2 token endpoint did not give a token.
    OAuth2(String),
    /// The lease ran out while the message waited for the rate limit, or
    /// this node's heartbeats are so late that the others may take its mail
    /// over: nothing was sent.
    LeaseLost,
    /// Every connection of the route is in use: nothing was sent.
    Busy,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Smtp(e) => e.fmt(f),
            SendError::OAuth2(e) => write!(f, "auth: {e}"),
            SendError::LeaseLost => {
                f.write_str("the lease ran out before the message could be sent")
            }
            SendError::Busy => f.write_str("every connection to the server is in use"),
        }
    }
}

/// A route, and the sender policy the message was rendered with.
struct RouteInfo {
    route: Route,
    sender_policy: &'static str,
}

impl std::ops::Deref for RouteInfo {
    type Target = Route;
    fn deref(&self) -> &Route {
        &self.route
    }
}

/// A completed transaction and where it ran.
struct Sent {
    tx: Transaction,
    remote: String,
    tls: Option<herald_smtp::TlsInfo>,
}

impl Sent {
    /// A transaction that went through on `conn`, with where and how it went.
    fn over(conn: &Connection, tx: Transaction) -> Sent {
        Sent {
            tx,
            remote: conn.remote().to_string(),
            tls: conn.tls().cloned(),
        }
    }
}

/// The parts of an SMTP route; `send` and `send_traced` are only called for those.
fn smtp(route: &RouteInfo) -> (&Target, &Login, PoolLimits, &str) {
    let Transport::Smtp {
        target,
        login,
        limits,
        pool_key,
    } = &route.transport
    else {
        unreachable!("only SMTP routes are sent over a connection")
    };
    (target, login, *limits, pool_key)
}

impl Worker {
    /// Gives recipients whose route turned out to be pinned to `gateway`
    /// (the tenant's server was pinned after they were submitted) to that
    /// gateway, unsent and with no attempt counted: only its instances
    /// claim them from now on.
    async fn hand_to_gateway(&self, recipients: &[Claimed], gateway: GatewayId) {
        let leases = recipients
            .iter()
            .map(|r| (r.recipient, r.lease_token))
            .collect();
        match self.store.repin(leases, Some(gateway), now_ms()).await {
            Ok(moved) => WorkerStats::add(&self.stats.released, moved as usize),
            Err(error) => {
                let ids: Vec<String> = recipients.iter().map(|r| r.recipient.to_string()).collect();
                warn!(%error, recipient_ids = %ids.join(","), %gateway, "could not hand recipients to their gateway; their leases will expire");
            }
        }
    }

    /// Sends one message to its claimed recipients; returns the outcome of each,
    /// or nothing when the recipients were given back unsent.
    pub(super) async fn deliver(
        &self,
        contents: MessageContent,
        recipients: Vec<Claimed>,
    ) -> Option<Done> {
        let mut started = Instant::now();
        let tenant = recipients[0].tenant;
        // A test message tests its provider; other mail goes through the tenant's
        // effective provider, as this node's cache knows it.
        let config = match contents.test_provider {
            Some(provider) => load_config(&*self.store, tenant, Some(provider)).await,
            None => self.cache.get(&*self.store, tenant).await,
        };
        if self.config.hands_pinned_mail_over
            && let Ok(Some(pinned)) = &config
            && let Some(gateway) = pinned.server.settings.gateway_id
        {
            self.hand_to_gateway(&recipients, gateway).await;
            return None;
        }
        let route = config.map_err(ResolveError::from).and_then(|config| {
            route(
                config.as_ref(),
                &self.sealer,
                &self.default,
                self.config.timeouts,
                &self.config.egress,
            )
        });
        let route = match route {
            Ok(route) => route,
            Err(error) => {
                let attempt = self.attempt(
                    None,
                    &started,
                    "provider",
                    None,
                    format!("the provider cannot be used: {error}"),
                );
                let outcomes: Vec<Outcome> = recipients
                    .iter()
                    .map(|r| self.judge(r, &contents, Answer::NoRoute, attempt.clone()))
                    .collect();
                log_outcomes(&contents, &recipients, &outcomes);
                return Some((outcomes, Vec::new()));
            }
        };
        let Rendered {
            content,
            sender_policy,
        } = render(&contents, &route);
        let route = &RouteInfo {
            route,
            sender_policy,
        };
        let (outcomes, captures) = match &route.transport {
            Transport::Capture => {
                if contents.test_provider.is_none() {
                    self.pools.note_capture(tenant);
                }
                self.capture(route, &contents, &recipients, content, &started)
            }
            Transport::Smtp { .. } => {
                let envelope = Envelope {
                    from: route.from.clone(),
                    to: recipients.iter().map(|r| r.address.clone()).collect(),
                };
                let data = wire::dot_stuffed(&content);
                let lease_until = recipients
                    .iter()
                    .map(|r| r.lease_until)
                    .min()
                    .unwrap_or_default();
                let tracer = contents.test_provider.map(|_| Tracer::default());
                let sent = match &tracer {
                    Some(tracer) => {
                        self.send_traced(route, &envelope, &data, lease_until, tracer)
                            .await
                    }
                    None => {
                        self.send(route, tenant, &envelope, &data, lease_until, &mut started)
                            .await
                    }
                };
                if !matches!(sent, Err(SendError::Busy | SendError::LeaseLost)) {
                    self.config
                        .metrics
                        .delivery_duration(started.elapsed().as_secs_f64());
                }
                let mut outcomes = match sent {
                    Ok(sent) => (
                        self.classify_all(route, &contents, &recipients, &sent, &started),
                        Vec::new(),
                    ),
                    Err(SendError::Busy | SendError::LeaseLost) => {
                        // Nothing was sent: give the recipients back without an attempt.
                        let leases = recipients
                            .iter()
                            .map(|r| (r.recipient, r.lease_token))
                            .collect();
                        match self.store.release(leases).await {
                            Ok(()) => WorkerStats::add(&self.stats.released, recipients.len()),
                            Err(error) => {
                                let ids: Vec<String> =
                                    recipients.iter().map(|r| r.recipient.to_string()).collect();
                                warn!(%error, recipient_ids = %ids.join(","), "could not give recipients back; their leases will expire")
                            }
                        }
                        return None;
                    }
                    Err(error) => (
                        self.failed_all(route, &contents, &recipients, &error, &started),
                        Vec::new(),
                    ),
                };
                if let Some(tracer) = tracer {
                    let diagnosis = diagnosis(&route.warnings, &tracer);
                    for outcome in &mut outcomes.0 {
                        outcome.attempt.diagnosis = Some(diagnosis.clone());
                    }
                }
                outcomes
            }
        };
        log_outcomes(&contents, &recipients, &outcomes);
        Some((outcomes, captures))
    }

    /// Takes a connection slot of the route's pool (and waits for its rate
    /// limit), if one comes free in time and the lease still allows a send
    /// once it has.
    async fn slot(&self, pool: &RoutePool, lease_until: i64) -> Result<Slot, SendError> {
        let slot = pool
            .slot_within(SLOT_PATIENCE)
            .await
            .ok_or(SendError::Busy)?;
        if !self.may_start(lease_until) {
            return Err(SendError::LeaseLost);
        }
        Ok(slot)
    }

    /// Sends over the route's pool: take a connection slot (and wait for the
    /// rate limit), then reuse an idle connection or open one. `started` is
    /// reset to when the slot let the message go, so an attempt's duration
    /// is the time spent with the server.
    async fn send(
        &self,
        route: &RouteInfo,
        tenant: TenantId,
        envelope: &Envelope,
        data: &[u8],
        lease_until: i64,
        started: &mut Instant,
    ) -> Result<Sent, SendError> {
        let (target, login, limits, pool_key) = smtp(route);
        let pool = self.pools.get(pool_key, limits, tenant);
        let slot = self.slot(&pool, lease_until).await?;
        *started = slot.since;
        let mut lease = match pool.take_idle() {
            Some(lease) => lease,
            None => self.open(target, login, None).await?,
        };
        let result = match lease.conn.send(envelope, data).await {
            // A pooled connection the server closed while it was idle fails at
            // its first command; that message deserves a fresh connection.
            Err(e)
                if lease.reused
                    && e.step == Step::Mail
                    && matches!(e.kind, ErrorKind::Io(_) | ErrorKind::Timeout) =>
            {
                lease = self.open(target, login, None).await?;
                lease.conn.send(envelope, data).await
            }
            other => other,
        };
        let tx = result.map_err(SendError::Smtp)?;
        let sent = Sent::over(&lease.conn, tx);
        lease.sent += 1;
        pool.put_back(lease).await;
        Ok(sent)
    }
    /// Sends a test message over a connection of its own, recording every
    /// step. The connection is one of its route's: the message waits for a
    /// free slot like any other, and counts against `max_connections`.
    async fn send_traced(
        &self,
        route: &RouteInfo,
        envelope: &Envelope,
        data: &[u8],
        lease_until: i64,
        tracer: &Tracer,
    ) -> Result<Sent, SendError> {
        let (target, login, limits, pool_key) = smtp(route);
        let pool = self.pools.route(pool_key, limits);
        let _slot = self.slot(&pool, lease_until).await?;
        let mut lease = self.open(target, login, Some(tracer)).await?;
        let tx = lease.conn.send(envelope, data).await.map_err(|e| {
            tracer.fail(&e);
            SendError::Smtp(e)
        })?;
        let sent = Sent::over(&lease.conn, tx);
        lease.conn.close();
        Ok(sent)
    }

    /// Opens and logs in a new connection, recording each step in `tracer` when given.
    async fn open(
        &self,
        target: &Target,
        login: &Login,
        tracer: Option<&Tracer>,
    ) -> Result<Lease, SendError> {
        let open = |credentials: Option<Credentials>| async move {
            match tracer {
                Some(tracer) => Connection::open_traced(target, credentials.as_ref(), tracer).await,
                None => Connection::open(target, credentials.as_ref()).await,
            }
        };
        let conn = match login {
            Login::None => open(None).await,
            Login::Stored(credentials) => open(Some(credentials.clone())).await,
            Login::OAuth2 {
                account,
                username,
                client,
                client_secret,
            } => {
                // No token is fetched for a server Herald may not connect to.
                herald_smtp::resolve(target).await.map_err(|e| {
                    if let Some(tracer) = tracer {
                        tracer.fail(&e);
                    }
                    SendError::Smtp(e)
                })?;
                let mut renew = false;
                loop {
                    let token = self
                        .tokens
                        .token(*account, client, client_secret, renew)
                        .await
                        .map_err(|e| {
                            if let Some(tracer) = tracer {
                                tracer.note(Step::Auth, false, format!("OAuth2 token: {e}"));
                            }
                            SendError::OAuth2(e)
                        })?;
                    let credentials = Credentials {
                        mechanism: Mechanism::Xoauth2,
                        username: username.clone(),
                        secret: token,
                    };
                    match open(Some(credentials)).await {
                        Err(e)
                            if !renew
                                && e.step == Step::Auth
                                && matches!(e.kind, ErrorKind::Rejected(_)) =>
                        {
                            tracing::info!("the server refused the OAuth2 token; renewing it once");
                            renew = true;
                        }
                        other => break other,
                    }
                }
            }
        };
        Ok(Lease {
            conn: conn.map_err(SendError::Smtp)?,
            sent: 0,
            reused: false,
        })
    }

    /// Stores the message in the capture mailbox (the route when no system
    /// default relay is configured): every recipient is sent.
    fn capture(
        &self,
        route: &RouteInfo,
        contents: &MessageContent,
        recipients: &[Claimed],
        content: Vec<u8>,
        started: &Instant,
    ) -> (Vec<Outcome>, Vec<NewCapture>) {
        let capture = NewCapture {
            message: contents.id,
            tenant: contents.tenant_id,
            envelope_from: route.from.to_string(),
            recipients: recipients.iter().map(|r| r.address.to_string()).collect(),
            content,
            at: now_ms(),
        };
        let outcomes = recipients
            .iter()
            .map(|r| {
                let mut attempt = self.attempt(
                    Some(route),
                    started,
                    "capture",
                    None,
                    "250 2.0.0 stored in Herald's capture mailbox (no system default relay is configured)".into(),
                );
                attempt.code = Some(250);
                attempt.enhanced_code = Some("2.0.0".into());
                attempt.outcome = RecipientStatus::Sent;
                Outcome { recipient: r.recipient, lease_token: r.lease_token, next: NextState::Sent, attempt }
            })
            .collect();
        (outcomes, vec![capture])
    }

    /// One outcome per recipient from a completed transaction.
    fn classify_all(
        &self,
        route: &RouteInfo,
        contents: &MessageContent,
        recipients: &[Claimed],
        sent: &Sent,
        started: &Instant,
    ) -> Vec<Outcome> {
        let tx = &sent.tx;
        recipients
            .iter()
            .enumerate()
            .map(|(i, r)| {
                // A recipient the server was never offered (an internationalised
                // address, and no SMTPUTF8) has a reply Herald made itself.
                let outcome = &tx.recipients()[i];
                let reply = &outcome.reply;
                let mut attempt = self.attempt(
                    Some(route),
                    started,
                    outcome.step.as_str(),
                    Some(reply),
                    reply.text.clone(),
                );
                attempt.remote_addr = Some(sent.remote.clone());
                attempt.tls_version = sent.tls.as_ref().map(|t| t.version.clone());
                attempt.tls_cipher = sent.tls.as_ref().map(|t| t.cipher.clone());
                self.judge(r, contents, Answer::Reply(reply), attempt)
            })
            .collect()
    }

    /// Outcomes for every recipient when the session failed before per-recipient replies.
    fn failed_all(
        &self,
        route: &RouteInfo,
        contents: &MessageContent,
        recipients: &[Claimed],
        error: &SendError,
        started: &Instant,
    ) -> Vec<Outcome> {
        let (step, reply, permanent) = match error {
            SendError::Smtp(e) => (e.step.as_str(), e.reply(), e.is_permanent()),
            _ => ("auth", None, false),
        };
        // What the session had learnt before it failed: the address it reached
        // and the TLS it negotiated tell an administrator where to look.
        let (remote, tls) = match error {
            SendError::Smtp(e) => (e.remote, e.tls.as_ref()),
            _ => (None, None),
        };
        recipients
            .iter()
            .map(|r| {
                let mut attempt =
                    self.attempt(Some(route), started, step, reply, error.to_string());
                attempt.remote_addr = remote.map(|a| a.to_string());
                attempt.tls_version = tls.map(|t| t.version.clone());
                attempt.tls_cipher = tls.map(|t| t.cipher.clone());
                self.judge(r, contents, Answer::Session { permanent }, attempt)
            })
            .collect()
    }

    /// The outcome of `r`'s attempt, as the policy in [`outcome`] decides it now.
    fn judge(
        &self,
        r: &Claimed,
        contents: &MessageContent,
        answer: Answer<'_>,
        mut attempt: AttemptRecord,
    ) -> Outcome {
        let verdict = outcome::decide(
            answer,
            r.attempt,
            Message::of(contents),
            &self.config.retry,
            now_ms(),
            &mut rand::rng(),
        );
        Outcome {
            recipient: r.recipient,
            lease_token: r.lease_token,
            next: verdict.record(&mut attempt),
            attempt,
        }
    }

    /// A new attempt record; `route` is `None` when no route could be resolved.
    fn attempt(
        &self,
        route: Option<&RouteInfo>,
        started: &Instant,
        step: &str,
        reply: Option<&Reply>,
        response: String,
    ) -> AttemptRecord {
        AttemptRecord {
            at: now_ms(),
            node: self.config.node.clone(),
            server: route.map(|r| r.server_label()).unwrap_or_default(),
            outcome: RecipientStatus::Deferred,
            step: Some(step.to_owned()),
            code: reply.map(|r| r.code),
            enhanced_code: reply.and_then(|r| r.enhanced_code.clone()),
            response,
            duration_ms: started.elapsed().as_millis() as i64,
            remote_addr: None,
            tls_version: None,
            tls_cipher: None,
            provider_id: route.and_then(|r| r.provider),
            config_version: route.and_then(|r| r.config_version),
            sender_policy: route.map(|r| r.sender_policy.to_owned()),
            diagnosis: None,
        }
    }
}

/// Logs each attempt: failures and deferrals at `info`, so that a node's log
/// at its default level says what went wrong with whose mail, and successes at
/// `debug`. It runs inside the `deliver` span, which names the tenant and the
/// message; each line names the recipient by id (and address). The server's reply is escaped: it must not drive the terminal the
/// log is read on. No secret is ever part of an attempt.
fn log_outcomes(contents: &MessageContent, recipients: &[Claimed], outcomes: &[Outcome]) {
    for outcome in outcomes {
        let Some(recipient) = recipients.iter().find(|r| r.recipient == outcome.recipient) else {
            continue;
        };
        let a = &outcome.attempt;
        let reply = escape_unprintable(&a.response);
        let step = a.step.as_deref().unwrap_or_default();
        let code = a.code.map(|c| c.to_string()).unwrap_or_default();
        let enhanced_code = a.enhanced_code.as_deref().unwrap_or_default();
        macro_rules! attempt {
            ($level:ident, $what:literal) => {
                tracing::$level!(
                    recipient_id = %recipient.recipient,
                    recipient = %recipient.address,
                    server = %a.server,
                    step = %step,
                    code = %code,
                    enhanced_code = %enhanced_code,
                    reply = %reply,
                    test = contents.test_provider.is_some(),
                    $what
                )
            };
        }
        match outcome.next {
            NextState::Sent => attempt!(debug, "delivery attempt sent"),
            NextState::Deferred { .. } => attempt!(info, "delivery attempt deferred"),
            NextState::Failed => attempt!(info, "delivery attempt failed"),
        }
    }
}

/// The steps of a traced session as the attempt's `diagnosis`, after a
/// `settings` step for each warning about the server entry.
fn diagnosis(warnings: &[String], tracer: &Tracer) -> serde_json::Value {
    let warnings = warnings.iter().map(|w| {
        serde_json::json!({"step": "settings", "ok": true, "detail": format!("warning: {w}"), "elapsed_ms": 0})
    });
    let steps = tracer.steps().into_iter().map(|s| {
        serde_json::json!({"step": s.step.as_str(), "ok": s.ok, "detail": s.detail, "elapsed_ms": s.elapsed_ms})
    });
    serde_json::Value::Array(warnings.chain(steps).collect())
}
