//! Submissions on PostgreSQL: one message alone, many in one transaction,
//! and group commit, which stores single submissions that arrive together
//! in one transaction, as the SQLite writer does, each answered after that
//! commit.
//!
//! A group is stored by one statement in a transaction of its own: its
//! message rows, its recipient rows and its tenants' queued counts, with the
//! queue limits checked in the same statement; one round trip, one commit
//! and one flush of the WAL for all. When that statement fails (a tenant's
//! queue full, a deadlock with another node's transaction waiting on the
//! same idempotency key), nothing of it was stored and each message is
//! stored again alone, so each gets its own answer; so is a message whose
//! idempotency key was taken already, to be answered as a duplicate.

use std::sync::{Arc, LazyLock};

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
        let mut alone = Vec::new();
        match store_group(&pool, &messages).await {
            Ok(stored) => {
                for ((answer, m), stored) in answers.into_iter().zip(messages).zip(stored) {
                    match stored {
                        Some(submitted) => {
                            let _ = answer.send(Ok(submitted));
                        }
                        None => alone.push((answer, m)),
                    }
                }
            }
            Err(_) => alone.extend(answers.into_iter().zip(messages)),
        }
        let answered = alone.iter().map(|(_, m)| submit_alone(&pool, m));
        for (result, (answer, _)) in futures_util::future::join_all(answered)
            .await
            .into_iter()
            .zip(alone)
        {
            let _ = answer.send(result);
        }
    }
}

/// Stores the new messages of a group with one statement ([`GROUP`]), each
/// answered as stored; `None` for a message whose idempotency key its tenant
/// had used already (nothing of it is stored). Fails, storing nothing, when
/// the group would take a tenant's queued recipients past the limit of one
/// of its messages.
async fn store_group(pool: &Pool, messages: &[NewMessage]) -> Result<Vec<Option<Submitted>>> {
    let mut rows = MessageColumns::default();
    let mut recipients = RecipientColumns::default();
    let mut limits: BTreeMap<String, i64> = BTreeMap::new();
    let mut handed = Vec::with_capacity(messages.len());
    for m in messages {
        rows.push(m);
        handed.push(recipients.push(m));
        if let Some(limit) = m.max_queued {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            limits
                .entry(m.tenant_id.to_string())
                .and_modify(|l| *l = (*l).min(limit))
                .or_insert(limit);
        }
    }
    let (limited, limit): (Vec<String>, Vec<i64>) = limits.into_iter().unzip();
    let mut params = Vec::with_capacity(39);
    params.extend(rows.params());
    params.extend(recipients.params());
    params.extend([&limited as &(dyn ToSql + Sync), &limit]);
    let c = client(pool).await?;
    let inserted: HashSet<String> = query_map(&c, &GROUP, &params, |r| get(r, "id"))
        .await?
        .into_iter()
        .collect();
    Ok(messages
        .iter()
        .zip(handed)
        .map(|(m, handed)| {
            inserted.contains(&m.id.to_string()).then_some(Submitted {
                id: m.id,
                status: RecipientStatus::Queued,
                duplicate: false,
                handed,
            })
        })
        .collect())
}

/// A group's one statement: the message rows (`$1` to `$24`, skipping a
/// taken idempotency key), the recipient rows of the messages inserted (`$25`
/// to `$37`), each tenant's queued count raised in this connection's shard
/// (see [`count_queued`]) in the tenants' order, and the limits (`$38` the
/// tenants, `$39` the least limit of their messages in the group) checked
/// against the count as this statement found it plus what it adds:
/// `herald_queue_full` (migration 0017) stops the statement where one is
/// passed. Answers the ids of the messages inserted.
static GROUP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH m AS ({INSERT_MESSAGES}), \
         r AS ({} WHERE r.message_id IN (SELECT id FROM m) RETURNING tenant_id), \
         added AS (SELECT tenant_id, count(*) AS n FROM r GROUP BY tenant_id), \
         counted AS (INSERT INTO tenant_queue_shards (tenant_id, shard, queued) \
           SELECT tenant_id, pg_backend_pid() % 16, n FROM added ORDER BY tenant_id \
           ON CONFLICT (tenant_id, shard) \
           DO UPDATE SET queued = tenant_queue_shards.queued + excluded.queued), \
         passed AS (SELECT l.queue_limit FROM unnest($38::text[], $39::bigint[]) AS l (tenant_id, queue_limit) \
           JOIN added a ON a.tenant_id = l.tenant_id JOIN tenants t ON t.id = l.tenant_id \
           WHERE t.queued_recipients + coalesce((SELECT sum(s.queued) FROM tenant_queue_shards s \
             WHERE s.tenant_id = t.id), 0) + a.n > l.queue_limit) \
         SELECT id FROM m UNION ALL SELECT herald_queue_full(queue_limit) FROM passed",
        insert_recipients_from(25)
    )
});

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
/// the new ones: a batch costs the same few statements whatever its size.
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
