//! Submissions on PostgreSQL: one message alone, many in one transaction,
//! and group commit, which stores single submissions that arrive together
//! in one transaction, as the SQLite writer does, each answered after that
//! commit.
//!
//! A group is stored as a batch is: one statement for every message row,
//! one for every recipient row, one commit and one flush of the WAL for all. When the group's transaction fails
//! (a tenant's queue full, a deadlock with another node's transaction
//! waiting on the same idempotency key), nothing of it was stored and each
//! message is stored again alone, so each gets its own answer.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use super::*;

/// Transactions of groups that may run at once on one node: while one
/// commits, the next group gathers and the one after can begin.
const COMMITTERS: usize = 4;

/// The most messages in one group.
const MOST_PER_GROUP: usize = 256;

/// One single submission waiting for its group's commit.
struct Waiting {
    message: NewMessage,
    answer: oneshot::Sender<Result<Submitted>>,
}

/// The queue of single submissions, taken in groups by committer tasks.
pub(super) struct Groups {
    waiting: mpsc::UnboundedSender<Waiting>,
}

impl Groups {
    /// Starts the committers on `pool`; they end with the store.
    pub(super) fn start(pool: Pool) -> Groups {
        let (waiting, queue) = mpsc::unbounded_channel();
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..COMMITTERS {
            tokio::spawn(commit_groups(pool.clone(), queue.clone()));
        }
        Groups { waiting }
    }

    /// Stores `message` with whatever is submitted beside it, answered
    /// after the commit that holds it.
    pub(super) async fn submit(&self, message: NewMessage) -> Result<Submitted> {
        let (answer, answered) = oneshot::channel();
        self.waiting
            .send(Waiting { message, answer })
            .map_err(|_| StoreError::Unavailable("the store is closing".into()))?;
        answered
            .await
            .map_err(|_| StoreError::Unavailable("the store is closing".into()))?
    }
}

/// Takes what is waiting, up to [`MOST_PER_GROUP`], stores it in one
/// transaction and answers each; until the store is dropped.
async fn commit_groups(pool: Pool, queue: Arc<Mutex<mpsc::UnboundedReceiver<Waiting>>>) {
    loop {
        let mut group = Vec::new();
        {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            group.push(first);
            while group.len() < MOST_PER_GROUP {
                match queue.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
        }
        // Rows locked in one order by every group (a tenant's count, an
        // idempotency key), so that two groups seldom wait for each other.
        group.sort_by(|a, b| {
            (a.message.tenant_id, &a.message.idempotency_key)
                .cmp(&(b.message.tenant_id, &b.message.idempotency_key))
        });
        let (messages, answers): (Vec<NewMessage>, Vec<_>) =
            group.into_iter().map(|w| (w.message, w.answer)).unzip();
        let stored = match messages.len() {
            1 => submit_alone(&pool, &messages[0]).await.map(|s| vec![s]),
            _ => submit_together(&pool, &messages).await,
        };
        match stored {
            Ok(submitted) => {
                for (answer, submitted) in answers.into_iter().zip(submitted) {
                    let _ = answer.send(Ok(submitted));
                }
            }
            Err(_) => {
                let alone = messages.iter().map(|m| submit_alone(&pool, m));
                for (answer, result) in answers
                    .into_iter()
                    .zip(futures_util::future::join_all(alone).await)
                {
                    let _ = answer.send(result);
                }
            }
        }
    }
}

/// Stores one message in a transaction of its own.
///
/// Another node may be storing the same idempotency key right now: the
/// insert then waits for that transaction. If it commits, the insert does
/// nothing and the earlier message is read back (each statement sees what
/// was committed before it began); if it rolls back, the insert goes ahead.
/// Only a message deleted between the insert and the read leaves nothing to
/// read, and then the insert is tried again.
pub(super) async fn submit_alone(pool: &Pool, m: &NewMessage) -> Result<Submitted> {
    let mut c = client(pool).await?;
    for _ in 0..3 {
        let tx = c.transaction().await.map_err(pg)?;
        let submitted = if insert_messages(&tx, &[m]).await?[0] {
            let handed = insert_recipients(&tx, &[m]).await?.remove(0);
            count_tests(&tx, m).await?;
            count_queued(&tx, &[m]).await?;
            Submitted {
                id: m.id,
                status: RecipientStatus::Queued,
                duplicate: false,
                handed,
            }
        } else {
            match stored_earlier(&tx, m).await? {
                Some(earlier) => earlier,
                None => continue,
            }
        };
        tx.commit().await.map_err(pg)?;
        return Ok(submitted);
    }
    Err(vanishing())
}

/// Stores many messages in one transaction, all or none.
///
/// One statement inserts every message row, one more the recipients of
/// the new ones: a group costs the same few statements whatever its size.
pub(super) async fn submit_together(
    pool: &Pool,
    messages: &[NewMessage],
) -> Result<Vec<Submitted>> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(pg)?;
    let all: Vec<&NewMessage> = messages.iter().collect();
    let inserted = insert_messages(&tx, &all).await?;
    let new: Vec<&NewMessage> = messages
        .iter()
        .zip(&inserted)
        .filter(|(_, new)| **new)
        .map(|(m, _)| m)
        .collect();
    let mut handed = insert_recipients(&tx, &new).await?.into_iter();
    let mut submitted = Vec::with_capacity(messages.len());
    for (m, new) in messages.iter().zip(inserted) {
        submitted.push(if new {
            Submitted {
                id: m.id,
                status: RecipientStatus::Queued,
                duplicate: false,
                handed: handed.next().unwrap_or_default(),
            }
        } else {
            stored_earlier(&tx, m).await?.ok_or_else(vanishing)?
        });
    }
    for m in &new {
        count_tests(&tx, m).await?;
    }
    count_queued(&tx, &new).await?;
    tx.commit().await.map_err(pg)?;
    Ok(submitted)
}
