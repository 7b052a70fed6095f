//! The PostgreSQL store's delivery webhooks: endpoints, the outbox's claims and attempts.

use herald_core::WebhookId;

use super::*;
use crate::Webhooks;
use crate::outbox;

/// The advisory lock every claim of webhook events takes for its transaction:
/// "webhook" in ASCII. Claims run one at a time, so a claim sees every event
/// an earlier claim leased and cannot lease a message's later event while
/// another node is leasing its earlier one. It cannot meet the other keys in
/// this store: the migration lock ("herald"), the connector lock ("smtpconn"),
/// and the test-message locks, which are `hashtext` values and fit in 32 bits.
const WEBHOOK_CLAIM_LOCK: i64 = 0x77_6562_686f_6f6b;

/// Ready events that are due, of enabled webhooks with room, in (due_at, seq)
/// order, which keeps each chain's order (see the outbox's schema), passing
/// over any behind an earlier event of its chain that is leased or not due.
/// `$1` is now, `$2` the webhooks excluded, `$3` the most to take.
const DUE_EVENTS: &str = "SELECT o.seq FROM webhook_outbox o JOIN webhooks w ON w.id = o.webhook_id \
     WHERE o.status = 'pending' AND o.lease_until IS NULL AND o.due_at <= $1 \
     AND w.enabled AND o.webhook_id <> ALL($2::text[]) \
     AND NOT EXISTS (SELECT 1 FROM webhook_outbox e WHERE e.webhook_id = o.webhook_id \
       AND e.message_id = o.message_id AND e.status = 'pending' AND e.seq < o.seq \
       AND (e.due_at > $1 OR e.lease_until > $1)) \
     ORDER BY o.due_at, o.seq LIMIT $3";

/// Leases the ready events among `$4` in one statement and answers them with
/// their webhook's URL and secrets, in (due_at, seq) order as they were
/// chosen. A finish committed since they were chosen may have moved one on:
/// the lease checks again that it is pending, due and not leased, and an
/// event that is not is left out. `$1` is the lease's end, `$2` the node,
/// `$3` its incarnation, `$5` now.
const LEASE_EVENTS: &str = "WITH leased AS (UPDATE webhook_outbox SET lease_until = $1, \
       lease_token = lease_token + 1, lease_owner = $2, lease_incarnation = $3 \
       WHERE seq = ANY($4::bigint[]) AND status = 'pending' AND due_at <= $5 \
       AND lease_until IS NULL \
       RETURNING seq, due_at, lease_token, webhook_id, tenant_id, event_id, event_type, \
       message_id, payload, created_at, attempts) \
     SELECT l.seq, l.lease_token, l.webhook_id, l.tenant_id, l.event_id, l.event_type, \
       l.message_id, l.payload, l.created_at, l.attempts, w.url, w.sealed_secret, \
       CASE WHEN w.previous_secret_until > $5 THEN w.previous_sealed_secret END AS previous_sealed_secret \
     FROM leased l JOIN webhooks w ON w.id = l.webhook_id ORDER BY l.due_at, l.seq";

#[async_trait]
impl Webhooks for PgStore {
    async fn create_webhook(&self, w: NewWebhook) -> Result<Webhook> {
        let c = client(&self.pool).await?;
        let values = sql::new_webhook_values(&w);
        query_found(&c, sql::INSERT_WEBHOOK, &bind(&values), rows::webhook).await
    }

    async fn webhook(&self, tenant_id: TenantId, id: WebhookId) -> Result<Webhook> {
        let c = client(&self.pool).await?;
        query_found(
            &c,
            sql::WEBHOOK_BY_ID,
            &[&id.to_string(), &tenant_id.to_string()],
            rows::webhook,
        )
        .await
    }

    async fn list_webhooks(&self, tenant_id: TenantId) -> Result<Vec<Webhook>> {
        let c = client(&self.pool).await?;
        query_map(&c, sql::WEBHOOKS, &[&tenant_id.to_string()], rows::webhook).await
    }

    async fn update_webhook(
        &self,
        tenant_id: TenantId,
        id: WebhookId,
        change: WebhookChange,
        now: i64,
    ) -> Result<Webhook> {
        self.noted(async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            let values = sql::webhook_update_values(tenant_id, id, &change, now);
            let (id, tenant_id) = (id.to_string(), tenant_id.to_string());
            let updated =
                query_found(&tx, sql::UPDATE_WEBHOOK, &bind(&values), rows::webhook).await?;
            if change.enabled == Some(false) {
                execute(
                    &tx,
                    sql::GIVE_UP_WEBHOOK_EVENTS,
                    &[&outbox::DISABLED, &id, &tenant_id],
                )
                .await
                .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)?;
            Ok(updated)
        })
        .await
    }

    async fn rotate_webhook_secret(
        &self,
        tenant_id: TenantId,
        id: WebhookId,
        sealed_secret: String,
        previous_until: i64,
        now: i64,
    ) -> Result<Webhook> {
        let c = client(&self.pool).await?;
        let values =
            sql::webhook_rotation_values(tenant_id, id, sealed_secret, previous_until, now);
        query_found(
            &c,
            sql::ROTATE_WEBHOOK_SECRET,
            &bind(&values),
            rows::webhook,
        )
        .await
    }

    async fn delete_webhook(&self, tenant_id: TenantId, id: WebhookId) -> Result<()> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        let (id, tenant_id) = (id.to_string(), tenant_id.to_string());
        // The webhook's row first: outcomes writing its events hold it
        // (FOR SHARE) until their commit, so once it is deleted the
        // events' delete, a statement of its own, sees all of them.
        if execute(&tx, sql::DELETE_WEBHOOK, &[&id, &tenant_id])
            .await
            .map_err(pg)?
            == 0
        {
            return Err(StoreError::NotFound);
        }
        execute(&tx, sql::DELETE_WEBHOOK_EVENTS, &[&id, &tenant_id])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn webhook_deliveries(
        &self,
        tenant_id: TenantId,
        id: WebhookId,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>> {
        let (id, tenant_id) = (id.to_string(), tenant_id.to_string());
        let mut c = client(&self.pool).await?;
        // One snapshot: the webhook exists in the same state its deliveries are read in.
        let tx = snapshot(&mut c).await?;
        query_found(&tx, sql::WEBHOOK_BY_ID, &[&id, &tenant_id], rows::webhook).await?;
        let rows = query(
            &tx,
            sql::WEBHOOK_DELIVERIES,
            &[&id, &tenant_id, &i64::from(limit)],
        )
        .await?;
        tx.commit().await.map_err(pg)?;
        rows.iter().map(rows::webhook_delivery).collect()
    }

    async fn webhook_secrets(
        &self,
        tenant_id: TenantId,
        id: WebhookId,
        now: i64,
    ) -> Result<(String, Option<String>)> {
        let c = client(&self.pool).await?;
        let row = query_opt(
            &c,
            sql::WEBHOOK_SECRETS,
            &[&now, &id.to_string(), &tenant_id.to_string()],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok((
            get(&row, "sealed_secret")?,
            get(&row, "previous_sealed_secret")?,
        ))
    }

    async fn record_webhook_test(&self, t: WebhookTestRecord) -> Result<()> {
        let c = client(&self.pool).await?;
        let r = &t.result;
        let status = rules::webhook_test_status(r);
        // The webhook held (FOR KEY SHARE) as the row goes in: one being
        // deleted is waited for, then not found; one deleted after sees it.
        let inserted = execute(
            &c,
            &Lock::KeyShare.on(sql::INSERT_WEBHOOK_TEST),
            &[
                &t.event_id,
                &t.event_type,
                &t.payload,
                &status.as_str(),
                &r.at,
                &r.response_status.map(i32::from),
                &r.error.as_deref().map(text),
                &r.duration_ms,
                &t.webhook.to_string(),
                &t.tenant_id.to_string(),
            ],
        )
        .await
        .map_err(pg)?;
        match inserted {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn claim_webhook_events(&self, claim: WebhookClaim) -> Result<Vec<ClaimedEvent>> {
        self.noted(async {
            let exclude: Vec<String> = claim.exclude.iter().map(ToString::to_string).collect();
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            // Claims one at a time (see WEBHOOK_CLAIM_LOCK): the selection below
            // begins after the lock is held, so it sees every earlier claim's
            // leases, and a message's later event waits behind its leased one.
            execute(
                &tx,
                "SELECT pg_advisory_xact_lock($1)",
                &[&WEBHOOK_CLAIM_LOCK],
            )
            .await
            .map_err(pg)?;
            execute(&tx, sql::RELEASE_EXPIRED_LEASES, &[&claim.now])
                .await
                .map_err(pg)?;
            let due = query(
                &tx,
                DUE_EVENTS,
                &[&claim.now, &exclude, &i64::from(claim.limit)],
            )
            .await?;
            let seqs = due
                .iter()
                .map(|row| get::<i64>(row, "seq"))
                .collect::<Result<Vec<_>>>()?;
            let claimed = query_map(
                &tx,
                LEASE_EVENTS,
                &[
                    &claim.lease_until,
                    &claim.node,
                    &claim.incarnation,
                    &seqs,
                    &claim.now,
                ],
                rows::claimed_event,
            )
            .await?;
            tx.commit().await.map_err(pg)?;
            Ok(claimed)
        })
        .await
    }

    async fn finish_webhook_events(
        &self,
        mut attempts: Vec<WebhookAttempt>,
        disable_failing_before: i64,
    ) -> Result<Vec<DisabledWebhook>> {
        self.noted(async {
            attempts.sort_by_key(|a| a.seq);
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            // The webhooks before their events, as a deletion (its row, then
            // its events) and a disabling (its row, then what waits for it)
            // take them, so that none of them waits for the other in a circle.
            let mut webhooks: Vec<String> =
                attempts.iter().map(|a| a.webhook.to_string()).collect();
            webhooks.sort_unstable();
            webhooks.dedup();
            execute(&tx, HOLD_WEBHOOKS, &[&webhooks])
                .await
                .map_err(pg)?;
            let current = finish_events(&tx, &attempts).await?;
            // Per webhook: whether any attempt succeeded, and the first failure.
            let mut health: BTreeMap<String, (bool, i64)> = BTreeMap::new();
            for a in &attempts {
                let r = match &a.outcome {
                    WebhookOutcome::GivenBack { due_at } => {
                        execute(&tx, sql::GIVE_BACK_EVENT, &[due_at, &a.seq, &a.lease_token])
                            .await
                            .map_err(pg)?;
                        continue;
                    }
                    WebhookOutcome::Attempted(r) if current.contains(&(a.seq, a.lease_token)) => r,
                    WebhookOutcome::Attempted(_) => continue,
                };
                if let WebhookNext::Retry { at } = r.next {
                    execute(&tx, sql::PUT_OFF_CHAIN, &[&at, &a.seq])
                        .await
                        .map_err(pg)?;
                }
                let h = health.entry(a.webhook.to_string()).or_insert((false, r.at));
                h.0 |= r.next == WebhookNext::Delivered;
                h.1 = h.1.min(r.at);
            }
            let now = now_ms();
            let mut disabled = Vec::new();
            for (webhook, (succeeded, first_failure)) in health {
                if succeeded {
                    execute(&tx, sql::WEBHOOK_SUCCEEDED, &[&webhook])
                        .await
                        .map_err(pg)?;
                    continue;
                }
                execute(&tx, sql::WEBHOOK_FAILED, &[&first_failure, &webhook])
                    .await
                    .map_err(pg)?;
                let failing = query_opt(
                    &tx,
                    sql::DISABLE_FAILING_WEBHOOK,
                    &[&now, &webhook, &disable_failing_before],
                )
                .await?;
                if let Some(row) = failing {
                    disabled.push(disable(&tx, webhook, &row, now).await?);
                }
            }
            tx.commit().await.map_err(pg)?;
            Ok(disabled)
        })
        .await
    }

    async fn release_webhook_leases(&self, node: &str, incarnation: &str, now: i64) -> Result<u64> {
        let c = client(&self.pool).await?;
        let result = execute(
            &c,
            sql::RELEASE_WEBHOOK_LEASES,
            &[&now, &node, &incarnation],
        )
        .await
        .map_err(pg);
        self.writes.note(&result);
        result
    }

    async fn next_webhook_due(&self) -> Result<Option<i64>> {
        let c = client(&self.pool).await?;
        let row = query_opt(&c, sql::NEXT_WEBHOOK_DUE, &[]).await?;
        Ok(row
            .map(|r| r.try_get::<_, Option<i64>>(0).map_err(pg))
            .transpose()?
            .flatten())
    }

    async fn prune_webhook_events(&self, before: i64) -> Result<u64> {
        let c = client(&self.pool).await?;
        execute(&c, sql::PRUNE_WEBHOOK_EVENTS, &[&before])
            .await
            .map_err(pg)
    }
}

/// Records the attempts among `attempts` (given back events are not) in one
/// statement, each only where its lease is still current; answers the
/// events (`seq` and lease token) whose attempt was recorded.
async fn finish_events(
    tx: &impl GenericClient,
    attempts: &[WebhookAttempt],
) -> Result<HashSet<(i64, i64)>> {
    #[derive(Default)]
    struct Columns {
        seq: Vec<i64>,
        token: Vec<i64>,
        status: Vec<&'static str>,
        due_at: Vec<i64>,
        at: Vec<i64>,
        response_status: Vec<Option<i32>>,
        error: Vec<Option<String>>,
        duration_ms: Vec<i64>,
    }
    let mut c = Columns::default();
    for a in attempts {
        let WebhookOutcome::Attempted(r) = &a.outcome else {
            continue;
        };
        let (status, due_at) = rules::after_webhook_attempt(r);
        c.seq.push(a.seq);
        c.token.push(a.lease_token);
        c.status.push(status.as_str());
        c.due_at.push(due_at);
        c.at.push(r.at);
        c.response_status.push(r.response_status.map(i32::from));
        c.error
            .push(r.error.as_deref().map(|e| text(e).into_owned()));
        c.duration_ms.push(r.duration_ms);
    }
    if c.seq.is_empty() {
        return Ok(HashSet::new());
    }
    query_map(
        tx,
        FINISH_EVENTS,
        &[
            &c.seq,
            &c.token,
            &c.status,
            &c.due_at,
            &c.at,
            &c.response_status,
            &c.error,
            &c.duration_ms,
        ],
        |r| Ok((get(r, "seq")?, get(r, "lease_token")?)),
    )
    .await
    .map(|recorded| recorded.into_iter().collect())
}

/// Holds the webhooks `$1` (in id order) against deletion while their
/// events' attempts are recorded; changes to them may go on.
const HOLD_WEBHOOKS: &str =
    "SELECT id FROM webhooks WHERE id = ANY($1::text[]) ORDER BY id FOR KEY SHARE";

/// Records attempts given as arrays, one element each (`$1` the events,
/// `$2` their lease tokens, `$3` to `$8` what came of them), only where
/// the lease is still current; answers the events recorded and their tokens.
///
/// No other finish updates the same rows meanwhile: a row matches only under
/// the lease token its holder was given, and a dispatcher records its
/// attempts from one task. (They are not locked first in `seq` order, as
/// they once were: that cost a lock and a join a row, and guarded only
/// against that.) A claim giving back expired leases may meet a late
/// holder's finish on the same rows; should the two deadlock, PostgreSQL
/// ends one, and the dispatcher tries its claim or its record again.
const FINISH_EVENTS: &str = "WITH a AS ( \
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], \
         $6::integer[], $7::text[], $8::bigint[]) \
         AS a (seq, token, status, due_at, at, response_status, error, duration_ms)) \
     UPDATE webhook_outbox o SET status = a.status, due_at = a.due_at, attempts = o.attempts + 1, \
         last_attempt_at = a.at, response_status = a.response_status, error = a.error, \
         duration_ms = a.duration_ms, lease_until = NULL, lease_owner = NULL, lease_incarnation = NULL \
     FROM a WHERE o.seq = a.seq \
     AND o.lease_token = a.token AND o.status = 'pending' \
     RETURNING o.seq, o.lease_token";

/// Says why a webhook that [`sql::DISABLE_FAILING_WEBHOOK`] just disabled
/// (`row` is what it returned) was disabled, on the webhook and in its
/// tenant's audit log, in the caller's transaction.
async fn disable(
    tx: &impl GenericClient,
    webhook: String,
    row: &Row,
    now: i64,
) -> Result<DisabledWebhook> {
    let (tenant, failing_since): (String, i64) =
        (get(row, "tenant_id")?, get(row, "failing_since")?);
    let reason = outbox::disabled_reason(failing_since);
    execute(tx, sql::SET_DISABLED_REASON, &[&reason, &webhook])
        .await
        .map_err(pg)?;
    execute(
        tx,
        sql::GIVE_UP_WEBHOOK_EVENTS,
        &[&outbox::DISABLED, &webhook, &tenant],
    )
    .await
    .map_err(pg)?;
    execute(
        tx,
        sql::INSERT_AUDIT,
        &[
            &tenant,
            &now,
            &"herald",
            &None::<String>,
            &None::<String>,
            &"webhook.disable",
            &webhook,
            &serde_json::json!({ "reason": reason }).to_string(),
        ],
    )
    .await
    .map_err(pg)?;
    Ok(DisabledWebhook {
        id: id(webhook)?,
        tenant_id: id(tenant)?,
        failing_since,
    })
}
