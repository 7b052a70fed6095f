//! Submissions on PostgreSQL: one message alone, many in one transaction,
//! and group commit, which stores single submissions that arrive together
//! in one transaction, as the SQLite writer does, each answered after that
//! commit.
//!
//! One committer task a node stores a group with one statement in a
//! transaction of its own (its message rows, its recipient rows and its
//! tenants' queued counts: one round trip, one commit and one flush of the
//! WAL for all), and gathers the next group while that statement runs, so a
//! group holds whatever arrived meanwhile. The messages of a tenant that the
//! group would take past its queue limit are left out of the statement, and
//! so is one whose idempotency key its tenant had used: each of those is
//! then stored alone, for its own answer (refused, or a duplicate, or stored
//! after all). When the statement fails (a deadlock with another node's
//! transaction, a tenant deleted meanwhile), nothing of it was stored and
//! every message of the group is stored alone.

use std::sync::LazyLock;

use tokio::sync::{mpsc, oneshot};

use super::*;

/// The most messages in one group.
const MOST_PER_GROUP: usize = 256;

/// About the most content (bodies, raw messages, attachments) one group
/// carries: a group stops gathering once past it.
const MOST_BYTES_PER_GROUP: usize = 16 * 1024 * 1024;

/// One single submission waiting for its group's commit.
struct Waiting {
    message: NewMessage,
    answer: oneshot::Sender<Result<Submitted>>,
}

/// The queue of single submissions, taken in groups by the committer task.
pub(super) struct Groups {
    waiting: mpsc::UnboundedSender<Waiting>,
}

impl Groups {
    /// Starts the committer on `pool`; it ends with the store.
    pub(super) fn start(pool: Pool) -> Groups {
        let (waiting, queue) = mpsc::unbounded_channel();
        tokio::spawn(commit_groups(pool, queue));
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

/// Takes what is waiting, up to [`MOST_PER_GROUP`] messages or about
/// [`MOST_BYTES_PER_GROUP`], stores it with one statement and answers each;
/// until the store is dropped.
///
/// One committer is enough and does better than several: its statement is
/// one round trip, and while it runs the next group gathers, so groups grow
/// with the load and PostgreSQL's cost a statement is shared by more
/// messages (measured in BENCHMARKS.md, seventeenth session). The messages
/// that go alone are stored by a task of their own, so that the next group
/// does not wait for them.
async fn commit_groups(pool: Pool, mut queue: mpsc::UnboundedReceiver<Waiting>) {
    while let Some(first) = queue.recv().await {
        let mut bytes = content_bytes(&first.message);
        let mut group = vec![first];
        while group.len() < MOST_PER_GROUP && bytes < MOST_BYTES_PER_GROUP {
            match queue.try_recv() {
                Ok(next) => {
                    bytes += content_bytes(&next.message);
                    group.push(next);
                }
                Err(_) => break,
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
        if !alone.is_empty() {
            tokio::spawn(store_each_alone(pool.clone(), alone));
        }
    }
}

/// Stores each message alone (see [`submit_alone`]) and answers it.
async fn store_each_alone(
    pool: Pool,
    alone: Vec<(oneshot::Sender<Result<Submitted>>, NewMessage)>,
) {
    let answered = alone.iter().map(|(_, m)| submit_alone(&pool, m));
    for (result, (answer, _)) in futures_util::future::join_all(answered)
        .await
        .into_iter()
        .zip(alone)
    {
        let _ = answer.send(result);
    }
}

/// The bytes of `m`'s content that its row carries.
fn content_bytes(m: &NewMessage) -> usize {
    let text = m.text.as_ref().map_or(0, String::len);
    let html = m.html.as_ref().map_or(0, String::len);
    let raw = m.raw.as_ref().map_or(0, Vec::len);
    let attachments: usize = m.attachments.iter().map(|a| a.content.len()).sum();
    text + html + raw + attachments
}

/// Stores the messages of a group with one statement ([`GROUP`]), each
/// answered as stored; `None` for a message left for [`submit_alone`]: its
/// idempotency key was taken, or its tenant's queued recipients with all of
/// the group's for that tenant would pass the least limit of them (nothing
/// of either is stored).
async fn store_group(pool: &Pool, messages: &[NewMessage]) -> Result<Vec<Option<Submitted>>> {
    let mut rows = MessageColumns::default();
    let mut recipients = RecipientColumns::default();
    let mut handed = Vec::with_capacity(messages.len());
    for m in messages {
        rows.push(m);
        handed.push(recipients.push(m));
    }
    // The tenants with a limit: each with its least limit and the group's recipients for it.
    let (mut limited, mut limit, mut adding) = (Vec::new(), Vec::new(), Vec::new());
    for (tenant, (count, least)) in queued_by_tenant(messages.iter()) {
        if let Some(least) = least {
            limited.push(tenant);
            limit.push(i64::try_from(least).unwrap_or(i64::MAX));
            adding.push(count);
        }
    }
    let mut params = Vec::with_capacity(41);
    params.extend(rows.params());
    params.extend(recipients.params());
    params.extend([&limited as &(dyn ToSql + Sync), &limit, &adding]);
    let c = client(pool).await?;
    let inserted: HashSet<String> = query_map(&c, &GROUP, &params, |r| get(r, "id"))
        .await?
        .into_iter()
        .collect();
    Ok(messages
        .iter()
        .zip(&rows.id)
        .zip(handed)
        .map(|((m, id), handed)| {
            inserted.contains(id).then_some(Submitted {
                id: m.id,
                status: rules::accepted_status(m),
                duplicate: false,
                handed,
            })
        })
        .collect())
}

/// A group's one statement. `full_tenants`: the tenants (`$39`, with the least
/// limit of their messages `$40` and those messages' recipients `$41`)
/// whose queued count, as the statement finds it, would pass that limit
/// with all of them. Then the message rows (`$1` to `$24`) of the other
/// tenants, skipping a taken idempotency key; the recipient rows (`$25` to
/// `$38`) of the messages inserted; each tenant's queued count raised by
/// those in this connection's shard (see [`count_queued`]), in the tenants'
/// order. Answers the ids of the messages inserted.
static GROUP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH full_tenants AS (SELECT l.tenant_id \
           FROM unnest($39::text[], $40::bigint[], $41::bigint[]) AS l (tenant_id, queue_limit, adding) \
           JOIN tenants t ON t.id = l.tenant_id WHERE {QUEUED_OF_T} + l.adding > l.queue_limit), \
         m AS ({}), \
         r AS ({} WHERE r.message_id IN (SELECT id FROM m) RETURNING tenant_id), \
         counted AS (INSERT INTO tenant_queue_shards (tenant_id, shard, queued) \
           SELECT tenant_id, {THIS_SHARD}, count(*) FROM r GROUP BY tenant_id ORDER BY tenant_id \
           {ADD_TO_SHARD}) \
         SELECT id FROM m",
        insert_messages_where("WHERE n.tenant_id NOT IN (SELECT tenant_id FROM full_tenants)"),
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
                status: rules::accepted_status(m),
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
                status: rules::accepted_status(m),
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
