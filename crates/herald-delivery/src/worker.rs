//! The delivery loop of a node: claim due recipients under a lease, send each
//! message through its tenant's route, and record every attempt, fenced by the lease.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_core::{MessageId, RecipientStatus, Sealer};
use herald_smtp::{Connection, Envelope, Reply, SmtpError, Timeouts, wire};
use herald_store::{
    AttemptRecord, ClaimRequest, Claimed, MessageContent, NewCapture, NextState, Outcome, Store,
};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, info_span, warn};

use crate::{DefaultProvider, RetryPolicy, Route, Transport, render, resolve};

/// How a node's worker behaves.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// This node's name, recorded on leases and attempts.
    pub node: String,
    /// How long a claim holds a recipient before another worker may take it.
    pub lease: Duration,
    /// How often to look for due mail when nothing wakes the worker.
    pub poll: Duration,
    /// Messages in flight at once on this node.
    pub concurrency: usize,
    pub retry: RetryPolicy,
    pub timeouts: Timeouts,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            node: "herald".into(),
            lease: Duration::from_secs(300),
            poll: Duration::from_secs(5),
            concurrency: 64,
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
        }
    }
}

/// The delivery worker of one node.
#[derive(Clone)]
pub struct Worker {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    default: Arc<DefaultProvider>,
    config: Arc<WorkerConfig>,
    wake: Arc<Notify>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Worker {
    pub fn new(
        store: Arc<dyn Store>,
        sealer: Arc<Sealer>,
        default: Arc<DefaultProvider>,
        config: WorkerConfig,
    ) -> Self {
        Worker {
            store,
            sealer,
            default,
            config: Arc::new(config),
            wake: Arc::new(Notify::new()),
        }
    }

    /// A handle that makes the worker look for mail at once (after a submission).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Runs until `shutdown` turns true, then finishes the messages in flight.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(self.config.concurrency));
        let mut in_flight = JoinSet::new();
        while !*shutdown.borrow() {
            while in_flight.try_join_next().is_some() {}
            let free = permits.available_permits();
            let claimed = if free == 0 {
                Vec::new()
            } else {
                let request = ClaimRequest {
                    node: self.config.node.clone(),
                    now: now_ms(),
                    lease_ms: self.config.lease.as_millis() as i64,
                    limit: free as u32,
                };
                self.store.claim(request).await.unwrap_or_else(|error| {
                    warn!(%error, "could not claim due mail");
                    Vec::new()
                })
            };
            if claimed.is_empty() {
                if free == 0 {
                    // Every permit is busy: wait for a message to finish.
                    tokio::select! {
                        _ = in_flight.join_next() => {}
                        _ = shutdown.changed() => {}
                    }
                } else {
                    let pause = self.pause().await;
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                continue;
            }
            for (message, recipients) in group_by_message(claimed) {
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                let worker = self.clone();
                let span =
                    info_span!("deliver", tenant = %recipients[0].tenant, message_id = %message);
                in_flight.spawn(
                    async move {
                        worker.deliver(message, recipients).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
        }
        // Shutdown: the messages already handed to a server finish and are recorded.
        while in_flight.join_next().await.is_some() {}
    }

    /// How long to wait when nothing is due: until the next due recipient, at most the poll interval.
    async fn pause(&self) -> Duration {
        match self.store.next_due().await {
            Ok(Some(due)) => {
                let until = Duration::from_millis(due.saturating_sub(now_ms()).max(0) as u64);
                until.min(self.config.poll).max(Duration::from_millis(10))
            }
            _ => self.config.poll,
        }
    }

    /// Sends one message to its claimed recipients and records the outcome of each.
    async fn deliver(&self, message: MessageId, recipients: Vec<Claimed>) {
        let started = Instant::now();
        let contents = match self.store.message_contents(&[message]).await {
            Ok(mut contents) if !contents.is_empty() => contents.remove(0),
            Ok(_) => return,
            Err(error) => {
                warn!(%error, "could not load the message; its lease will expire and it will be retried");
                return;
            }
        };
        let tenant = recipients[0].tenant;
        let route = match resolve(
            &*self.store,
            &self.sealer,
            &self.default,
            self.config.timeouts,
            tenant,
        )
        .await
        {
            Ok(route) => route,
            Err(error) => {
                let attempt = self.attempt(
                    &started,
                    "provider",
                    None,
                    None,
                    format!("the provider cannot be used: {error}"),
                );
                let outcomes = recipients
                    .iter()
                    .map(|r| self.deferred_or_expired(r, &contents, attempt.clone()))
                    .collect();
                self.record(outcomes, Vec::new()).await;
                return;
            }
        };
        let content = render(&contents, &route);
        let (outcomes, captures) = match &route.transport {
            Transport::Capture => self.capture(&route, &contents, &recipients, content, &started),
            Transport::Smtp {
                target,
                credentials,
            } => {
                let envelope = Envelope {
                    from: route.from.clone(),
                    to: recipients.iter().map(|r| r.address.clone()).collect(),
                };
                let data = wire::dot_stuffed(&content);
                let result = async {
                    let mut conn = Connection::open(target, credentials.as_ref()).await?;
                    let tx = conn.send(&envelope, &data).await;
                    let details = (conn.remote(), conn.tls().cloned());
                    conn.quit().await;
                    tx.map(|tx| (tx, details))
                }
                .await;
                let outcomes = match result {
                    Ok((tx, (remote, tls))) => recipients
                        .iter()
                        .enumerate()
                        .map(|(i, r)| {
                            let reply = tx.outcome_for(i);
                            let step = if !tx.mail.is_positive() {
                                "mail"
                            } else if tx.rcpt.get(i).is_some_and(|rr| !rr.is_positive()) {
                                "rcpt"
                            } else {
                                "data"
                            };
                            let mut attempt =
                                self.attempt(&started, step, Some(reply), None, reply.text.clone());
                            attempt.server = route.server_label();
                            attempt.remote_addr = Some(remote.to_string());
                            attempt.tls_version = tls.as_ref().map(|t| t.version.clone());
                            attempt.tls_cipher = tls.as_ref().map(|t| t.cipher.clone());
                            self.classify(r, &contents, attempt, reply)
                        })
                        .collect(),
                    Err(error) => {
                        self.smtp_failed(&route, &contents, &recipients, &error, &started)
                    }
                };
                (outcomes, Vec::new())
            }
        };
        self.record(outcomes, captures).await;
    }

    fn capture(
        &self,
        route: &Route,
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
                    started,
                    "capture",
                    None,
                    Some("2.0.0"),
                    "250 2.0.0 stored in Herald's capture mailbox (no system default relay is configured)".into(),
                );
                attempt.code = Some(250);
                attempt.server = route.server_label();
                attempt.outcome = RecipientStatus::Sent;
                Outcome { recipient: r.recipient, lease_token: r.lease_token, next: NextState::Sent, attempt }
            })
            .collect();
        (outcomes, vec![capture])
    }

    /// Outcomes for every recipient when the session failed before per-recipient replies.
    fn smtp_failed(
        &self,
        route: &Route,
        contents: &MessageContent,
        recipients: &[Claimed],
        error: &SmtpError,
        started: &Instant,
    ) -> Vec<Outcome> {
        recipients
            .iter()
            .map(|r| {
                let mut attempt = self.attempt(
                    started,
                    error.step.as_str(),
                    error.reply(),
                    None,
                    error.to_string(),
                );
                attempt.server = route.server_label();
                if error.is_permanent() {
                    attempt.outcome = RecipientStatus::Failed;
                    Outcome {
                        recipient: r.recipient,
                        lease_token: r.lease_token,
                        next: NextState::Failed,
                        attempt,
                    }
                } else {
                    self.deferred_or_expired(r, contents, attempt)
                }
            })
            .collect()
    }

    /// Sent on 2xx, failed on 5xx, deferred (or expired) otherwise.
    fn classify(
        &self,
        r: &Claimed,
        contents: &MessageContent,
        mut attempt: AttemptRecord,
        reply: &Reply,
    ) -> Outcome {
        let next = if reply.is_positive() {
            NextState::Sent
        } else if reply.is_permanent() {
            NextState::Failed
        } else {
            return self.deferred_or_expired(r, contents, attempt);
        };
        attempt.outcome = if next == NextState::Sent {
            RecipientStatus::Sent
        } else {
            RecipientStatus::Failed
        };
        Outcome {
            recipient: r.recipient,
            lease_token: r.lease_token,
            next,
            attempt,
        }
    }

    /// Defers with backoff, or fails once the message is older than the maximum age.
    fn deferred_or_expired(
        &self,
        r: &Claimed,
        contents: &MessageContent,
        mut attempt: AttemptRecord,
    ) -> Outcome {
        let now = now_ms();
        let delay = self.config.retry.delay_after(r.attempt);
        let max_age = self.config.retry.max_age.as_millis() as i64;
        let next = if now + delay.as_millis() as i64 - contents.created_at > max_age {
            attempt.response = format!(
                "expired after the maximum age of {:?}; last: {}",
                self.config.retry.max_age, attempt.response
            );
            attempt.outcome = RecipientStatus::Failed;
            NextState::Failed
        } else {
            attempt.outcome = RecipientStatus::Deferred;
            NextState::Deferred {
                until: now + delay.as_millis() as i64,
            }
        };
        Outcome {
            recipient: r.recipient,
            lease_token: r.lease_token,
            next,
            attempt,
        }
    }

    fn attempt(
        &self,
        started: &Instant,
        step: &str,
        reply: Option<&Reply>,
        enhanced: Option<&str>,
        response: String,
    ) -> AttemptRecord {
        AttemptRecord {
            at: now_ms(),
            node: self.config.node.clone(),
            server: String::new(),
            outcome: RecipientStatus::Deferred,
            step: Some(step.to_owned()),
            code: reply.map(|r| r.code),
            enhanced_code: reply
                .and_then(|r| r.enhanced_code.clone())
                .or(enhanced.map(str::to_owned)),
            response,
            duration_ms: started.elapsed().as_millis() as i64,
            remote_addr: None,
            tls_version: None,
            tls_cipher: None,
        }
    }

    async fn record(&self, outcomes: Vec<Outcome>, captures: Vec<NewCapture>) {
        let ids: Vec<_> = outcomes.iter().map(|o| o.recipient).collect();
        match self.store.complete(outcomes, captures).await {
            Ok(accepted) => {
                for (id, ok) in ids.iter().zip(accepted) {
                    if !ok {
                        warn!(recipient = %id, "outcome refused: the lease expired and another claim took the recipient");
                    }
                }
            }
            Err(error) => {
                warn!(%error, "could not record outcomes; the leases will expire and the recipients will be retried")
            }
        }
    }
}

fn group_by_message(claimed: Vec<Claimed>) -> BTreeMap<MessageId, Vec<Claimed>> {
    let mut groups: BTreeMap<MessageId, Vec<Claimed>> = BTreeMap::new();
    for c in claimed {
        groups.entry(c.message).or_default().push(c);
    }
    groups
}
