//! The webhook events an outcome causes, decided once for both backends:
//! which events, for which webhooks, and each event's body.
//!
//! [`DeliveryStore::complete`](crate::DeliveryStore::complete) asks for them in the outcome's
//! own transaction, so an event exists exactly when its outcome was recorded.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use herald_core::RecipientStatus;
use herald_core::status::message_status;
use herald_core::timestamp::rfc3339;
use herald_core::webhook::{EventSet, EventType};
use serde::Serialize;

use crate::model::{AttemptRecord, ClaimedEvent, EventLease, NextState, Outcome, TEST_PRIORITY};
use crate::rows::{Columns, id, status, stored};

/// A webhook of a tenant, enabled, and what it subscribes to.
#[derive(Clone, Debug)]
pub(crate) struct Subscriber {
    pub webhook: String,
    pub events: EventSet,
    /// Where its events go and what signs them, for events handed to a dispatcher.
    pub target: Target,
}

/// A webhook's URL and sealed secrets, as a dispatcher posts and signs with them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Target {
    pub url: String,
    pub sealed_secret: String,
    pub previous_sealed_secret: Option<String>,
    /// When the previous secret's overlap ends.
    pub previous_secret_until: Option<i64>,
}

impl Subscriber {
    /// A row of [`crate::sql::SUBSCRIBERS`].
    pub fn from_row(r: &impl Columns) -> crate::Result<Subscriber> {
        Ok(Subscriber {
            webhook: r.text("id")?,
            events: stored("events", EventSet::from_bits(r.int("events")?))?,
            target: Target {
                url: r.text("url")?,
                sealed_secret: r.text("sealed_secret")?,
                previous_sealed_secret: r.opt_text("previous_sealed_secret")?,
                previous_secret_until: r.opt_int("previous_secret_until")?,
            },
        })
    }

    fn wants(&self, event: EventType) -> bool {
        self.events.contains(event)
    }
}

/// True when any of `subscribers` wants events about whole messages, for
/// which the store reads the message's recipients.
pub(crate) fn wants_message_events(subscribers: &[Subscriber]) -> bool {
    subscribers.iter().any(|s| {
        [
            EventType::MessageSent,
            EventType::MessageFailed,
            EventType::MessageDeferred,
            EventType::TestCompleted,
        ]
        .into_iter()
        .any(|e| s.wants(e))
    })
}

/// One recipient whose outcome was recorded.
pub(crate) struct Recorded<'a> {
    pub recipient: String,
    pub message: &'a str,
    pub tenant: &'a str,
    pub address: &'a str,
    pub test: bool,
    pub status: RecipientStatus,
    pub due_at: Option<i64>,
    pub attempt: &'a AttemptRecord,
}

/// One of a message's recipients as it stands after the outcomes.
pub(crate) struct RecipientState {
    pub id: String,
    pub address: String,
    pub status: RecipientStatus,
}

impl RecipientState {
    /// A row of [`crate::sql::RECIPIENT_STATES`].
    pub fn from_row(r: &impl Columns) -> crate::Result<RecipientState> {
        Ok(RecipientState {
            id: r.text("id")?,
            address: r.text("address")?,
            status: status(&r.text("status")?)?,
        })
    }
}

/// One event for one webhook, to insert into the outbox.
#[derive(Clone, Debug)]
pub(crate) struct OutboxRow {
    pub webhook: String,
    pub tenant: String,
    pub event_id: String,
    pub event_type: EventType,
    pub message: String,
    pub payload: String,
    pub at: i64,
    /// Nothing of its chain (its webhook's events of its message) was
    /// written before this batch: known without reading the outbox.
    pub new_chain: bool,
}

impl OutboxRow {
    /// This event, stored leased as row `seq` (its first lease: token 1), as
    /// the dispatcher it was handed to under `lease` takes it; `subscribers`
    /// holds its tenant's webhooks, its own among them.
    pub fn handed(
        self,
        seq: i64,
        lease: &EventLease,
        subscribers: &HashMap<String, Vec<Subscriber>>,
    ) -> crate::Result<ClaimedEvent> {
        let target = &subscribers[&self.tenant]
            .iter()
            .find(|s| s.webhook == self.webhook)
            .expect("an event's webhook subscribes to it")
            .target;
        // The previous secret signs too while its overlap lasts.
        let previous_sealed_secret = target
            .previous_sealed_secret
            .clone()
            .filter(|_| target.previous_secret_until.is_some_and(|t| t > lease.now));
        Ok(ClaimedEvent {
            seq,
            lease_token: 1,
            webhook: id(self.webhook)?,
            tenant_id: id(self.tenant)?,
            url: target.url.clone(),
            sealed_secret: target.sealed_secret.clone(),
            previous_sealed_secret,
            event_id: self.event_id,
            event_type: self.event_type.as_str().to_owned(),
            message_id: Some(id(self.message)?),
            payload: self.payload,
            created_at: self.at,
            attempts: 0,
        })
    }
}

fn new_event_id() -> String {
    format!("evt_{}", uuid::Uuid::now_v7().simple())
}

/// The Standard Webhooks body of an event of type `event` at `at`: `type`,
/// `timestamp` and `data`. The API's test events are written by it too.
pub fn event_body(event: &str, at: i64, data: &impl Serialize) -> String {
    // Written in this order, so that a reader sees first what the event is.
    #[derive(Serialize)]
    struct Body<'a, D> {
        r#type: &'a str,
        timestamp: String,
        data: D,
    }
    let body = Body {
        r#type: event,
        timestamp: rfc3339(at),
        data,
    };
    // Room for a usual body at once: grown from nothing, it was reallocated
    // at every doubling.
    let mut out = Vec::with_capacity(BODY_ROOM);
    serde_json::to_writer(&mut out, &body).expect("an event body serialises");
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// About the length of an outcome event's body.
const BODY_ROOM: usize = 640;

// The data of the outcome events, written straight from the values (not
// through a `serde_json::Value`: this runs in the store's writer, for every
// event). Fields stand in the order of their names, as they did when the
// bodies were built as JSON objects.

/// The data of a `recipient.*` event.
#[derive(Serialize)]
struct RecipientData<'a> {
    address: &'a str,
    attempt: AttemptData<'a>,
    message_id: &'a str,
    next_attempt_at: Option<String>,
    recipient_id: &'a str,
    status: &'a str,
    tenant_id: &'a str,
}

/// The attempt in a `recipient.*` event.
#[derive(Serialize)]
struct AttemptData<'a> {
    at: String,
    code: Option<u16>,
    enhanced_code: Option<&'a str>,
    remote_addr: Option<&'a str>,
    response: &'a str,
    server: &'a str,
    step: Option<&'a str>,
    tls_version: Option<&'a str>,
}

/// The data of a `message.*` or `test.completed` event.
#[derive(Serialize)]
struct MessageData<'a> {
    message_id: &'a str,
    recipients: Vec<RecipientSummary<'a>>,
    status: &'a str,
    tenant_id: &'a str,
}

/// A recipient in a `message.*` event.
#[derive(Serialize)]
struct RecipientSummary<'a> {
    address: &'a str,
    id: &'a str,
    status: &'a str,
}

/// Adds one event to `rows` for every subscriber that wants it.
fn fan_out(
    rows: &mut Vec<OutboxRow>,
    subscribers: &[Subscriber],
    event: EventType,
    tenant: &str,
    message: &str,
    at: i64,
    data: impl FnOnce() -> String,
) {
    let mut wanting = subscribers.iter().filter(|s| s.wants(event)).peekable();
    if wanting.peek().is_none() {
        return;
    }
    let (event_id, payload) = (new_event_id(), data());
    rows.extend(wanting.map(|s| OutboxRow {
        webhook: s.webhook.clone(),
        tenant: tenant.to_owned(),
        event_id: event_id.clone(),
        event_type: event,
        message: message.to_owned(),
        payload: payload.clone(),
        at,
        new_chain: false,
    }));
}

/// The `recipient.*` event of one recorded outcome (none for a test message,
/// whose end is one `test.completed`).
pub(crate) fn recipient_event(
    rows: &mut Vec<OutboxRow>,
    subscribers: &[Subscriber],
    r: &Recorded<'_>,
) {
    let event = match r.status {
        _ if r.test => return,
        RecipientStatus::Sent => EventType::RecipientSent,
        RecipientStatus::Failed => EventType::RecipientFailed,
        RecipientStatus::Deferred => EventType::RecipientDeferred,
        RecipientStatus::Queued
        | RecipientStatus::Sending
        | RecipientStatus::Scheduled
        | RecipientStatus::Cancelled => return,
    };
    let a = r.attempt;
    fan_out(rows, subscribers, event, r.tenant, r.message, a.at, || {
        let data = RecipientData {
            address: r.address,
            attempt: AttemptData {
                at: rfc3339(a.at),
                code: a.code,
                enhanced_code: a.enhanced_code.as_deref(),
                remote_addr: a.remote_addr.as_deref(),
                response: &a.response,
                server: &a.server,
                step: a.step.as_deref(),
                tls_version: a.tls_version.as_deref(),
            },
            message_id: r.message,
            next_attempt_at: r.due_at.map(rfc3339),
            recipient_id: &r.recipient,
            status: r.status.as_str(),
            tenant_id: r.tenant,
        };
        event_body(event.as_str(), a.at, &data)
    });
}

/// The event about a whole message once outcomes were recorded for it: when
/// none of its recipients is queued or being sent, `message.sent`,
/// `message.failed` or `message.deferred` (after every attempt that leaves
/// it waiting), or for a test message that is final, `test.completed`.
pub(crate) fn message_event(
    rows: &mut Vec<OutboxRow>,
    subscribers: &[Subscriber],
    tenant: &str,
    message: &str,
    test: bool,
    recipients: &[RecipientState],
    at: i64,
) {
    let status = message_status(recipients.iter().map(|r| r.status));
    let event = match status {
        RecipientStatus::Sent | RecipientStatus::Failed if test => EventType::TestCompleted,
        _ if test => return,
        RecipientStatus::Sent => EventType::MessageSent,
        RecipientStatus::Failed => EventType::MessageFailed,
        RecipientStatus::Deferred => EventType::MessageDeferred,
        RecipientStatus::Queued
        | RecipientStatus::Sending
        | RecipientStatus::Scheduled
        | RecipientStatus::Cancelled => return,
    };
    fan_out(rows, subscribers, event, tenant, message, at, || {
        let data = MessageData {
            message_id: message,
            recipients: recipients
                .iter()
                .map(|r| RecipientSummary {
                    address: &r.address,
                    id: &r.id,
                    status: r.status.as_str(),
                })
                .collect(),
            status: status.as_str(),
            tenant_id: tenant,
        };
        event_body(event.as_str(), at, &data)
    });
}

/// An outcome [`DeliveryStore::complete`](crate::DeliveryStore::complete) recorded, with
/// what the update of its recipient returned.
pub(crate) struct RecordedOutcome<'a> {
    pub outcome: &'a Outcome,
    pub message: String,
    pub tenant: String,
    pub address: String,
    /// Whether the message is a test message (its recipients' priority).
    pub test: bool,
    /// The recipient is its message's only one and no outcome of it was
    /// recorded before this one: the message has no event yet, and its
    /// state is this outcome, both known without reading.
    pub lone: bool,
}

impl<'a> RecordedOutcome<'a> {
    /// From the columns `message_id, tenant_id, address, priority, sole,
    /// attempts` of the recipient's row as the outcome left it
    /// ([`crate::sql::COMPLETE_RECIPIENT`]).
    ///
    /// The recipient is [`RecordedOutcome::lone`] when it is its message's
    /// only one (`sole`) and this outcome's claim is its first: `attempts`
    /// counts every claim (a hand-over at submission too), taken back only
    /// for a lease given back unused (a release, a repin), so at 1 no outcome
    /// of it was recorded before, by any node. (A lease that ran out, or a
    /// crashed node's, stays counted: its message then only seems not alone.)
    pub fn from_row(outcome: &'a Outcome, r: &impl Columns) -> crate::Result<Self> {
        Ok(RecordedOutcome {
            outcome,
            message: r.text("message_id")?,
            tenant: r.text("tenant_id")?,
            address: r.text("address")?,
            test: r.int("priority")? == i64::from(TEST_PRIORITY),
            lone: r.flag("sole")? && r.int("attempts")? == 1,
        })
    }

    /// The recipient's status after this outcome.
    fn status(&self) -> RecipientStatus {
        match self.outcome.next {
            NextState::Sent => RecipientStatus::Sent,
            NextState::Failed => RecipientStatus::Failed,
            NextState::Deferred { .. } => RecipientStatus::Deferred,
        }
    }
}

/// A message outcomes were recorded for whose tenant wants events about
/// whole messages: the store reads its recipients as they stand
/// ([`crate::sql::RECIPIENT_STATES`]) and hands them to [`message_event`].
pub(crate) struct TouchedMessage<'a> {
    pub message: &'a str,
    pub tenant: &'a str,
    pub test: bool,
    /// The time of its latest recorded outcome, which its event takes.
    pub at: i64,
}

impl TouchedMessage<'_> {
    /// Adds this message's event to `rows` (see [`message_event`]), from
    /// its recipients as they stand.
    pub fn event(
        &self,
        rows: &mut Vec<OutboxRow>,
        subscribers: &HashMap<String, Vec<Subscriber>>,
        recipients: &[RecipientState],
    ) {
        let subs = &subscribers[self.tenant];
        message_event(
            rows,
            subs,
            self.tenant,
            self.message,
            self.test,
            recipients,
            self.at,
        );
    }
}

/// The `recipient.*` events of the recorded outcomes, and the messages whose
/// event needs their recipients read, in the order of their first outcome.
/// The event of a [`RecordedOutcome::lone`] recipient's message is written
/// here, from the outcome. `subscribers` holds every recorded outcome's tenant.
pub(crate) fn outcome_events<'a>(
    recorded: &'a [RecordedOutcome<'_>],
    subscribers: &HashMap<String, Vec<Subscriber>>,
) -> (Vec<OutboxRow>, Vec<TouchedMessage<'a>>) {
    let mut rows = Vec::new();
    let mut touched: Vec<TouchedMessage<'a>> = Vec::new();
    // Where each message stands in `touched`: a batch holds up to a
    // thousand outcomes, mostly of as many messages.
    let mut place: HashMap<&'a str, usize> = HashMap::new();
    for r in recorded {
        let subs = &subscribers[&r.tenant];
        if subs.is_empty() {
            continue;
        }
        let (o, status) = (r.outcome, r.status());
        let first_row = rows.len();
        recipient_event(
            &mut rows,
            subs,
            &Recorded {
                recipient: o.recipient.to_string(),
                message: &r.message,
                tenant: &r.tenant,
                address: &r.address,
                test: r.test,
                status,
                due_at: match o.next {
                    NextState::Deferred { until } => Some(until),
                    _ => None,
                },
                attempt: &o.attempt,
            },
        );
        if r.lone {
            let state = RecipientState {
                id: o.recipient.to_string(),
                address: r.address.clone(),
                status,
            };
            message_event(
                &mut rows,
                subs,
                &r.tenant,
                &r.message,
                r.test,
                &[state],
                o.attempt.at,
            );
            for row in &mut rows[first_row..] {
                row.new_chain = true;
            }
            continue;
        }
        if !wants_message_events(subs) {
            continue;
        }
        match place.entry(&r.message) {
            Entry::Occupied(i) => {
                let m = &mut touched[*i.get()];
                m.at = m.at.max(o.attempt.at);
            }
            Entry::Vacant(i) => {
                i.insert(touched.len());
                touched.push(TouchedMessage {
                    message: &r.message,
                    tenant: &r.tenant,
                    test: r.test,
                    at: o.attempt.at,
                });
            }
        }
    }
    (rows, touched)
}

/// Which of the events outcomes write go at once to the dispatcher whose
/// [`EventLease`] came with them
/// ([`DeliveryStore::complete_and_lease_events`](crate::DeliveryStore::complete_and_lease_events)):
/// a chain (a webhook's events of one message) goes whole, or once the room
/// is used its first events, and only when nothing of it was pending before
/// these outcomes, so no event passes an earlier one; nothing of a webhook
/// the lease excludes. The events are asked about in their order.
struct HandOver<'l> {
    lease: &'l EventLease,
    excluded: HashSet<String>,
    taken: usize,
}

impl<'l> HandOver<'l> {
    fn new(lease: &'l EventLease) -> HandOver<'l> {
        HandOver {
            lease,
            excluded: lease.exclude.iter().map(ToString::to_string).collect(),
            taken: 0,
        }
    }

    /// Whether the next event, for `webhook`, of a chain that `was_pending`
    /// or not, goes to the dispatcher (and takes a place of its room).
    fn takes(&mut self, webhook: &str, was_pending: bool) -> bool {
        let takes =
            !was_pending && self.taken < self.lease.room && !self.excluded.contains(webhook);
        self.taken += usize::from(takes);
        takes
    }
}

/// When each of `events` is due and whether it goes to the dispatcher
/// `lease` names ([`HandOver`]), in their order. `pending` holds, per chain (webhook id, message id), when
/// its latest pending event was due before these events; a chain with
/// nothing pending is absent. An event is due no earlier than the pending
/// events before it in its chain, those of this batch included.
pub(crate) fn schedule(
    events: &[OutboxRow],
    pending: &HashMap<(&str, &str), i64>,
    lease: Option<&EventLease>,
) -> Vec<(i64, bool)> {
    let mut hand = lease.map(HandOver::new);
    let mut latest: HashMap<(&str, &str), i64> = HashMap::new();
    events
        .iter()
        .map(|e| {
            let chain = (e.webhook.as_str(), e.message.as_str());
            let before = pending.get(&chain);
            let due = latest
                .get(&chain)
                .or(before)
                .map_or(e.at, |d| (*d).max(e.at));
            latest.insert(chain, due);
            let handed = hand
                .as_mut()
                .is_some_and(|h| h.takes(&e.webhook, before.is_some()));
            (due, handed)
        })
        .collect()
}

/// What a webhook's events waiting when it was disabled say, given up.
pub(crate) const DISABLED: &str = "given up: the webhook was disabled";

/// The reason a webhook disabled for failing says, and its audit entry.
pub(crate) fn disabled_reason(failing_since: i64) -> String {
    format!(
        "every delivery attempt failed from {} on, so Herald disabled it",
        rfc3339(failing_since)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use RecipientStatus::*;

    fn attempt(outcome: RecipientStatus) -> AttemptRecord {
        AttemptRecord {
            step: Some("rcpt".into()),
            code: Some(250),
            enhanced_code: Some("2.1.5".into()),
            duration_ms: 3,
            ..AttemptRecord::new(1_000, "n", "mx:25", outcome, "ok")
        }
    }

    fn subscriber(name: &str, events: &[EventType]) -> Subscriber {
        Subscriber {
            webhook: name.into(),
            events: EventSet::of(events.iter().copied()).unwrap(),
            target: Target::default(),
        }
    }

    fn state(id: &str, status: RecipientStatus) -> RecipientState {
        RecipientState {
            id: id.into(),
            address: format!("{id}@example.com"),
            status,
        }
    }

    /// Recipient r1 (x@example.com) of message m1 of tenant t1, with attempt
    /// `a`'s outcome as its status, due again at `due_at`.
    fn recorded(a: &AttemptRecord, due_at: Option<i64>) -> Recorded<'_> {
        Recorded {
            recipient: "r1".into(),
            message: "m1",
            tenant: "t1",
            address: "x@example.com",
            test: false,
            status: a.outcome,
            due_at,
            attempt: a,
        }
    }

    #[test]
    fn a_recipient_event_goes_to_each_subscriber_with_one_id() {
        let subs = [
            subscriber("a", &[EventType::RecipientSent]),
            subscriber("b", &[EventType::RecipientSent, EventType::MessageSent]),
            subscriber("c", &[EventType::RecipientFailed]),
        ];
        let a = attempt(Sent);
        let r = recorded(&a, None);
        let mut rows = Vec::new();
        recipient_event(&mut rows, &subs, &r);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].webhook, "a");
        assert_eq!(rows[1].webhook, "b");
        assert_eq!(rows[0].event_id, rows[1].event_id);
        let body: serde_json::Value = serde_json::from_str(&rows[0].payload).unwrap();
        assert_eq!(body["type"], "recipient.sent");
        assert_eq!(body["data"]["address"], "x@example.com");
        assert_eq!(body["data"]["attempt"]["code"], 250);
        // A test message's recipients cause no recipient event.
        let mut rows = Vec::new();
        recipient_event(&mut rows, &subs, &Recorded { test: true, ..r });
        assert!(rows.is_empty());
    }

    /// The bodies are written field by field; they read as the JSON objects
    /// (keys in order of their names) they were built as before.
    #[test]
    fn bodies_are_written_as_json_objects_with_sorted_keys() {
        use serde_json::json;
        let subs = [subscriber(
            "a",
            &[EventType::RecipientDeferred, EventType::MessageDeferred],
        )];
        let mut a = attempt(Deferred);
        a.response = "451 \"later\"\n\u{e9}".into();
        let r = recorded(&a, Some(61_500));
        let mut rows = Vec::new();
        recipient_event(&mut rows, &subs, &r);
        let data = json!({
            "tenant_id": "t1",
            "message_id": "m1",
            "recipient_id": "r1",
            "address": "x@example.com",
            "status": "deferred",
            "attempt": {
                "at": "1970-01-01T00:00:01Z",
                "server": "mx:25",
                "remote_addr": null,
                "step": "rcpt",
                "code": 250,
                "enhanced_code": "2.1.5",
                "response": "451 \"later\"\n\u{e9}",
                "tls_version": null,
            },
            "next_attempt_at": "1970-01-01T00:01:01.5Z",
        });
        let expected = format!(
            r#"{{"type":"recipient.deferred","timestamp":"1970-01-01T00:00:01Z","data":{data}}}"#
        );
        assert_eq!(rows[0].payload, expected);

        let mut rows = Vec::new();
        let recipients = [state("a", Sent), state("b", Deferred)];
        message_event(&mut rows, &subs, "t1", "m1", false, &recipients, 2_000);
        let data = json!({
            "tenant_id": "t1",
            "message_id": "m1",
            "status": "deferred",
            "recipients": [
                {"id": "a", "address": "a@example.com", "status": "sent"},
                {"id": "b", "address": "b@example.com", "status": "deferred"},
            ],
        });
        let expected = format!(
            r#"{{"type":"message.deferred","timestamp":"1970-01-01T00:00:02Z","data":{data}}}"#
        );
        assert_eq!(rows[0].payload, expected);
    }

    #[test]
    fn message_events_follow_the_derived_status() {
        let subs = [subscriber(
            "a",
            &[
                EventType::MessageSent,
                EventType::MessageFailed,
                EventType::MessageDeferred,
                EventType::TestCompleted,
            ],
        )];
        let kind = |recipients: &[RecipientState], test: bool| {
            let mut rows = Vec::new();
            message_event(&mut rows, &subs, "t", "m", test, recipients, 5);
            rows.first().map(|r| r.event_type)
        };
        assert_eq!(kind(&[state("a", Sent), state("b", Sending)], false), None);
        assert_eq!(kind(&[state("a", Sent), state("b", Queued)], false), None);
        assert_eq!(
            kind(&[state("a", Sent), state("b", Deferred)], false),
            Some(EventType::MessageDeferred)
        );
        assert_eq!(
            kind(&[state("a", Sent), state("b", Failed)], false),
            Some(EventType::MessageFailed)
        );
        assert_eq!(
            kind(&[state("a", Sent), state("b", Sent)], false),
            Some(EventType::MessageSent)
        );
        assert_eq!(
            kind(&[state("a", Failed)], true),
            Some(EventType::TestCompleted)
        );
        assert_eq!(kind(&[state("a", Deferred)], true), None);
        assert!(wants_message_events(&subs));
        assert!(!wants_message_events(&[subscriber(
            "b",
            &[EventType::RecipientSent]
        )]));
    }

    /// A dispatcher takes events up to its room, never one of a chain that
    /// had something pending, and none of a webhook it has no room for.
    #[test]
    fn a_hand_over_keeps_to_the_room_the_chains_and_the_exclusions() {
        let full = herald_core::WebhookId::new();
        let lease = EventLease {
            node: "n".into(),
            incarnation: "n-1".into(),
            now: 0,
            until: 1,
            room: 2,
            exclude: vec![full],
        };
        let mut hand = HandOver::new(&lease);
        let full = full.to_string();
        assert!(!hand.takes(&full, false), "excluded");
        assert!(!hand.takes("w1", true), "behind a pending event");
        assert!(hand.takes("w1", false));
        assert!(hand.takes("w2", false));
        assert!(!hand.takes("w3", false), "past the room");
    }

    /// An event is due no earlier than the pending events before it in its
    /// chain, those of its batch included, and goes to the dispatcher only
    /// when its chain had nothing pending before the batch.
    #[test]
    fn a_schedule_keeps_each_chain_in_order() {
        let event = |webhook: &str, at: i64| OutboxRow {
            webhook: webhook.into(),
            tenant: "t".into(),
            event_id: new_event_id(),
            event_type: EventType::RecipientSent,
            message: "m".into(),
            payload: "{}".into(),
            at,
            new_chain: false,
        };
        let events = [event("w1", 500), event("w2", 500), event("w2", 400)];
        let pending = HashMap::from([(("w1", "m"), 1_000)]);
        let lease = EventLease {
            node: "n".into(),
            incarnation: "n-1".into(),
            now: 0,
            until: 1,
            room: 10,
            exclude: vec![],
        };
        assert_eq!(
            schedule(&events, &pending, Some(&lease)),
            [(1_000, false), (500, true), (500, true)]
        );
        assert_eq!(
            schedule(&events, &pending, None),
            [(1_000, false), (500, false), (500, false)]
        );
    }
}
