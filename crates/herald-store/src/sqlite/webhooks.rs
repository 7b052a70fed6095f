//! The SQLite store's delivery webhooks: endpoints, the outbox's claims and attempts.

use herald_core::WebhookId;

use super::*;
use crate::Webhooks;

/// Leases ready events that are due, of enabled webhooks with room, in
/// (due_at, seq) order, which keeps each chain's order (see the outbox's
/// schema), passing over any behind an earlier event of its chain that is
/// leased or not due: `?1` the lease's end, `?2` and `?3` its node and
/// process, `?4` now, `?5` the webhooks excluded, `?6` the most (cast, as
/// in the claim of recipients, so that a new limit is no new preparation).
const LEASE_DUE_EVENTS: &str = "UPDATE webhook_outbox SET lease_until = ?1, lease_token = lease_token + 1, \
     lease_owner = ?2, lease_incarnation = ?3 WHERE seq IN (SELECT o.seq FROM webhook_outbox o \
     INDEXED BY webhook_outbox_ready JOIN webhooks w ON w.id = o.webhook_id \
     WHERE o.status = 'pending' AND o.lease_until IS NULL AND o.due_at <= ?4 \
     AND w.enabled AND o.webhook_id NOT IN (SELECT value FROM json_each(?5)) \
     AND NOT EXISTS (SELECT 1 FROM webhook_outbox e WHERE e.webhook_id = o.webhook_id \
       AND e.message_id = o.message_id AND e.status = 'pending' AND e.seq < o.seq \
       AND (e.due_at > ?4 OR e.lease_until > ?4)) \
     ORDER BY o.due_at, o.seq LIMIT CAST(?6 AS INTEGER)) \
     RETURNING seq, lease_token, webhook_id, tenant_id, event_id, event_type, message_id, payload, \
     created_at, attempts";

fn webhook_row(r: &Row) -> rusqlite::Result<Result<Webhook>> {
    Ok(rows::webhook(r))
}

/// The tenant's webhook, or not found.
fn load_webhook(c: &Connection, tenant_id: TenantId, id: WebhookId) -> Result<Webhook> {
    let args = [id.to_string(), tenant_id.to_string()];
    one(c, sql::WEBHOOK_BY_ID, args, webhook_row)
}

#[async_trait]
impl Webhooks for SqliteStore {
    async fn create_webhook(&self, w: NewWebhook) -> Result<Webhook> {
        self.db
            .write(move |c| {
                let values = sql::new_webhook_values(&w);
                c.query_row(
                    sql::INSERT_WEBHOOK,
                    rusqlite::params_from_iter(&values),
                    webhook_row,
                )
                .map_err(sql)?
            })
            .await
    }

    async fn webhook(&self, tenant_id: TenantId, id: WebhookId) -> Result<Webhook> {
        self.db.read(move |c| load_webhook(c, tenant_id, id)).await
    }

    async fn list_webhooks(&self, tenant_id: TenantId) -> Result<Vec<Webhook>> {
        self.db
            .read(move |c| list_parsed(c, sql::WEBHOOKS, [tenant_id.to_string()], webhook_row))
            .await
    }

    async fn update_webhook(
        &self,
        tenant_id: TenantId,
        id: WebhookId,
        change: WebhookChange,
        now: i64,
    ) -> Result<Webhook> {
        self.db
            .write(move |c| {
                let values = sql::webhook_update_values(tenant_id, id, &change, now);
                let updated = one(
                    c,
                    sql::UPDATE_WEBHOOK,
                    rusqlite::params_from_iter(&values),
                    webhook_row,
                )?;
                if change.enabled == Some(false) {
                    c.execute(
                        sql::GIVE_UP_WEBHOOK_EVENTS,
                        params![outbox::DISABLED, id.to_string(), tenant_id.to_string()],
                    )
                    .map_err(sql)?;
                }
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
        self.db
            .write(move |c| {
                let values =
                    sql::webhook_rotation_values(tenant_id, id, sealed_secret, previous_until, now);
                one(
                    c,
                    sql::ROTATE_WEBHOOK_SECRET,
                    rusqlite::params_from_iter(&values),
                    webhook_row,
                )
            })
            .await
    }

    async fn delete_webhook(&self, tenant_id: TenantId, id: WebhookId) -> Result<()> {
        self.db
            .write(move |c| {
                let args = [id.to_string(), tenant_id.to_string()];
                c.execute(sql::DELETE_WEBHOOK_EVENTS, args.clone())
                    .map_err(sql)?;
                match c.execute(sql::DELETE_WEBHOOK, args).map_err(sql)? {
                    0 => Err(StoreError::NotFound),
                    _ => Ok(()),
                }
            })
            .await
    }

    async fn webhook_deliveries(
        &self,
        tenant_id: TenantId,
        id: WebhookId,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>> {
        self.db
            .read(move |c| {
                load_webhook(c, tenant_id, id)?;
                list_parsed(
                    c,
                    sql::WEBHOOK_DELIVERIES,
                    params![id.to_string(), tenant_id.to_string(), limit],
                    |r| Ok(rows::webhook_delivery(r)),
                )
            })
            .await
    }

    async fn webhook_secrets(
        &self,
        tenant_id: TenantId,
        id: WebhookId,
        now: i64,
    ) -> Result<(String, Option<String>)> {
        self.db
            .read(move |c| {
                c.query_row(
                    sql::WEBHOOK_SECRETS,
                    params![now, id.to_string(), tenant_id.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(sql)?
                .ok_or(StoreError::NotFound)
            })
            .await
    }

    async fn record_webhook_test(&self, t: WebhookTestRecord) -> Result<()> {
        self.db
            .write(move |c| {
                let r = &t.result;
                let status = rules::webhook_test_status(r);
                let inserted = c
                    .execute(
                        sql::INSERT_WEBHOOK_TEST,
                        params![
                            t.event_id,
                            t.event_type,
                            t.payload,
                            status.as_str(),
                            r.at,
                            r.response_status,
                            r.error,
                            r.duration_ms,
                            t.webhook.to_string(),
                            t.tenant_id.to_string()
                        ],
                    )
                    .map_err(sql)?;
                match inserted {
                    0 => Err(StoreError::NotFound),
                    _ => Ok(()),
                }
            })
            .await
    }

    async fn claim_webhook_events(&self, claim: WebhookClaim) -> Result<Vec<ClaimedEvent>> {
        self.db
            .write_repeatable(move |c| {
                let exclude = serde_json::to_string(
                    &claim
                        .exclude
                        .iter()
                        .map(|w| w.to_string())
                        .collect::<Vec<_>>(),
                )
                .expect("strings serialise");
                c.prepare_cached(sql::RELEASE_EXPIRED_LEASES)
                    .map_err(sql)?
                    .execute([claim.now])
                    .map_err(sql)?;
                // The only writer: what the selection finds is leased at once.
                let mut leased = list(
                    c,
                    LEASE_DUE_EVENTS,
                    params![
                        claim.lease_until,
                        claim.node,
                        claim.incarnation,
                        claim.now,
                        exclude,
                        claim.limit
                    ],
                    |r| {
                        Ok((
                            r.get::<_, i64>("seq")?,
                            r.get::<_, i64>("lease_token")?,
                            r.get::<_, String>("webhook_id")?,
                            r.get::<_, String>("tenant_id")?,
                            r.get::<_, String>("event_id")?,
                            r.get::<_, String>("event_type")?,
                            r.get::<_, Option<String>>("message_id")?,
                            r.get::<_, String>("payload")?,
                            r.get::<_, i64>("created_at")?,
                            r.get::<_, i64>("attempts")?,
                        ))
                    },
                )?;
                // A chain's events in their order.
                leased.sort_by_key(|l| l.0);
                let mut targets: HashMap<String, (String, String, Option<String>)> = HashMap::new();
                let mut claimed = Vec::with_capacity(leased.len());
                for (
                    seq,
                    lease_token,
                    webhook,
                    tenant,
                    event_id,
                    event_type,
                    message,
                    payload,
                    created_at,
                    attempts,
                ) in leased
                {
                    if !targets.contains_key(&webhook) {
                        let target = c
                            .prepare_cached(sql::WEBHOOK_TARGET)
                            .map_err(sql)?
                            .query_row(params![claim.now, webhook], |r| {
                                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                            })
                            .map_err(sql)?;
                        targets.insert(webhook.clone(), target);
                    }
                    let (url, sealed_secret, previous_sealed_secret) = targets[&webhook].clone();
                    claimed.push(ClaimedEvent {
                        seq,
                        lease_token,
                        webhook: id(webhook)?,
                        tenant_id: id(tenant)?,
                        url,
                        sealed_secret,
                        previous_sealed_secret,
                        event_id,
                        event_type,
                        message_id: opt_id(message)?,
                        payload,
                        created_at,
                        attempts: rows::stored("attempts", u32::try_from(attempts))?,
                    });
                }
                Ok(claimed)
            })
            .await
    }

    async fn finish_webhook_events(
        &self,
        attempts: Vec<WebhookAttempt>,
        disable_failing_before: i64,
    ) -> Result<Vec<DisabledWebhook>> {
        self.db
            .write_repeatable(move |c| {
                let mut finish = c.prepare_cached(FINISH_EVENT).map_err(sql)?;
                let mut give_back = c.prepare_cached(sql::GIVE_BACK_EVENT).map_err(sql)?;
                // Per webhook: whether any attempt succeeded, and the first failure.
                let mut health: HashMap<WebhookId, (bool, i64)> = HashMap::new();
                for a in &attempts {
                    let r = match &a.outcome {
                        WebhookOutcome::GivenBack { due_at } => {
                            give_back
                                .execute(params![due_at, a.seq, a.lease_token])
                                .map_err(sql)?;
                            continue;
                        }
                        WebhookOutcome::Attempted(r) => r,
                    };
                    let (status, due_at) = rules::after_webhook_attempt(r);
                    let current = finish
                        .execute(params![
                            status.as_str(),
                            due_at,
                            r.at,
                            r.response_status,
                            r.error,
                            r.duration_ms,
                            a.seq,
                            a.lease_token
                        ])
                        .map_err(sql)?
                        == 1;
                    if current && let WebhookNext::Retry { at } = r.next {
                        c.prepare_cached(sql::PUT_OFF_CHAIN)
                            .map_err(sql)?
                            .execute(params![at, a.seq])
                            .map_err(sql)?;
                    }
                    if current {
                        let h = health.entry(a.webhook).or_insert((false, r.at));
                        h.0 |= r.next == WebhookNext::Delivered;
                        h.1 = h.1.min(r.at);
                    }
                }
                let now = now_ms();
                let mut disabled = Vec::new();
                for (webhook, (succeeded, first_failure)) in health {
                    if succeeded {
                        c.prepare_cached(sql::WEBHOOK_SUCCEEDED)
                            .map_err(sql)?
                            .execute([webhook.to_string()])
                            .map_err(sql)?;
                        continue;
                    }
                    c.prepare_cached(sql::WEBHOOK_FAILED)
                        .map_err(sql)?
                        .execute(params![first_failure, webhook.to_string()])
                        .map_err(sql)?;
                    let failing: Option<(String, i64)> = c
                        .prepare_cached(sql::DISABLE_FAILING_WEBHOOK)
                        .map_err(sql)?
                        .query_row(
                            params![now, webhook.to_string(), disable_failing_before],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .optional()
                        .map_err(sql)?;
                    if let Some((tenant, failing_since)) = failing {
                        let reason = outbox::disabled_reason(failing_since);
                        c.execute(
                            sql::SET_DISABLED_REASON,
                            params![reason, webhook.to_string()],
                        )
                        .map_err(sql)?;
                        c.execute(
                            sql::GIVE_UP_WEBHOOK_EVENTS,
                            params![outbox::DISABLED, webhook.to_string(), tenant],
                        )
                        .map_err(sql)?;
                        c.execute(
                            sql::INSERT_AUDIT,
                            params![
                                tenant,
                                now,
                                "herald",
                                None::<String>,
                                None::<String>,
                                "webhook.disable",
                                webhook.to_string(),
                                serde_json::json!({ "reason": reason }).to_string()
                            ],
                        )
                        .map_err(sql)?;
                        disabled.push(DisabledWebhook {
                            id: webhook,
                            tenant_id: id(tenant)?,
                            failing_since,
                        });
                    }
                }
                Ok(disabled)
            })
            .await
    }

    async fn release_webhook_leases(&self, node: &str, incarnation: &str, now: i64) -> Result<u64> {
        let (node, incarnation) = (node.to_owned(), incarnation.to_owned());
        self.db
            .write(move |c| {
                c.execute(sql::RELEASE_WEBHOOK_LEASES, params![now, node, incarnation])
                    .map(|n| n as u64)
                    .map_err(sql)
            })
            .await
    }

    async fn next_webhook_due(&self) -> Result<Option<i64>> {
        self.db
            .read(|c| {
                c.prepare_cached(sql::NEXT_WEBHOOK_DUE)
                    .map_err(sql)?
                    .query_row([], |r| r.get(0))
                    .map_err(sql)
            })
            .await
    }

    async fn prune_webhook_events(&self, before: i64) -> Result<u64> {
        self.db
            .write(move |c| {
                c.execute(sql::PRUNE_WEBHOOK_EVENTS, [before])
                    .map(|n| n as u64)
                    .map_err(sql)
            })
            .await
    }
}

/// Records an attempt under a current lease; `$1` is the new status.
const FINISH_EVENT: &str = "UPDATE webhook_outbox SET status = $1, due_at = $2, attempts = attempts + 1, \
     last_attempt_at = $3, response_status = $4, error = $5, duration_ms = $6, lease_until = NULL, \
     lease_owner = NULL, lease_incarnation = NULL WHERE seq = $7 AND lease_token = $8 AND status = 'pending'";
