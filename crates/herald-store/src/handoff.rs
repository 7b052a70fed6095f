//! Mail handed to this node's own worker as it is stored: the recipients are
//! claimed under a lease in the submission's own transaction, so a message
//! costs one commit to accept and one for its outcome, with no claim between.
//!
//! The worker grants a [`Reservation`] (a place among its deliveries and the
//! lease to store the message under) when it has room; what it does not take
//! is stored queued and claimed as before, by this node or any other.

use herald_core::TenantId;
use herald_core::timestamp::now_ms;

use std::sync::Arc;

use crate::{
    Claimed, HandoffLease, MessageContent, NewMessage, Queue, Result, StoreError, Submitted,
};

/// What a node's worker offers its API and listener.
pub trait Handoff: Send + Sync {
    /// A place for one message of `tenant`, if the worker has one now for
    /// that tenant (within its share of the node and its route's room).
    fn reserve(&self, tenant: TenantId) -> Option<Reservation>;
}

/// A place in a worker, held until the message is given to it or the
/// reservation is dropped (the message was not stored, or was a duplicate).
pub struct Reservation {
    lease: HandoffLease,
    give: Box<dyn FnOnce(MessageContent, Vec<Claimed>) + Send>,
}

impl Reservation {
    /// A place that `give` hands a stored message to, under `lease`.
    pub fn new(
        lease: HandoffLease,
        give: impl FnOnce(MessageContent, Vec<Claimed>) + Send + 'static,
    ) -> Self {
        Reservation {
            lease,
            give: Box::new(give),
        }
    }

    /// The lease to store the message under.
    pub fn lease(&self) -> &HandoffLease {
        &self.lease
    }

    /// Gives the worker the message, stored with its recipients claimed.
    pub fn give(self, content: MessageContent, claimed: Vec<Claimed>) {
        (self.give)(content, claimed)
    }
}

/// Stores messages (one through [`Queue::submit`], more through
/// [`Queue::submit_batch`]) and gives the worker those it has places for.
///
/// A message is offered only when it is due now and not pinned to a
/// gateway; a duplicate of an earlier message, or one the store refused,
/// gives its place back. The answers are the store's, in order: see
/// [`left_for_claims`] for whether a worker should be woken.
///
/// The store call and the giving run in a task of their own, so a caller
/// that goes away meanwhile (a client that hung up) cannot leave a message
/// committed under the worker's lease and never given to it: it would wait
/// for the lease to end.
pub async fn submit<Q: Queue + ?Sized + 'static>(
    queue: Arc<Q>,
    handoff: Option<Arc<dyn Handoff>>,
    mut messages: Vec<NewMessage>,
) -> Result<Vec<Submitted>> {
    let now = now_ms();
    let mut places: Vec<Option<(Reservation, MessageContent)>> = messages
        .iter_mut()
        .map(|m| {
            let due_now = m.send_at.is_none_or(|at| at <= now);
            if !due_now || m.gateway_id.is_some() {
                return None;
            }
            let reservation = handoff.as_ref()?.reserve(m.tenant_id)?;
            m.handoff = Some(reservation.lease().clone());
            Some((reservation, m.content()))
        })
        .collect();
    let stored = tokio::spawn(async move {
        let submitted = if messages.len() == 1 {
            let message = messages.pop().expect("one message");
            vec![queue.submit(message).await?]
        } else {
            queue.submit_batch(messages).await?
        };
        for (answer, place) in submitted.iter().zip(&mut places) {
            if let Some((reservation, content)) = place.take()
                && !answer.handed.is_empty()
            {
                reservation.give(content, answer.handed.clone());
            }
        }
        Ok(submitted)
    });
    stored
        .await
        .map_err(|e| StoreError::Unavailable(format!("the submission's task failed: {e}").into()))?
}

/// True when some of the messages stored were not handed to a worker, so
/// that a worker (this node's, or a gateway's) has something to claim.
pub fn left_for_claims(submitted: &[Submitted]) -> bool {
    submitted
        .iter()
        .any(|s| !s.duplicate && s.handed.is_empty())
}
