//! The PostgreSQL store's messages and the queue: submissions, claims under leases, outcomes, the nodes that hold leases, captures.

use super::config::provider_config;
use super::group::{submit_alone, submit_together};
use super::*;
use crate::outbox;

#[async_trait]
impl DeliveryStore for PgStore {
    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Claimed>> {
        let result = async {
            let lease_until = req.now + req.lease_ms;
            let c = client(&self.pool).await?;
            let start = self.claim_cursor.lock().expect("claim cursor lock").clone();
            let (tenants, stopped) = tenants_due(&c, &req, start).await?;
            *self.claim_cursor.lock().expect("claim cursor lock") = stopped;
            if tenants.is_empty() {
                return Ok(Vec::new());
            }
            let share = crate::claim_share(req.limit, tenants.len());
            let mut left = req.limit;
            let (mut names, mut counts) = (Vec::new(), Vec::new());
            for (tenant, room) in &tenants {
                let k = share.min(*room).min(left);
                if k == 0 {
                    break;
                }
                left -= k;
                names.push(tenant.clone());
                counts.push(i64::from(k));
            }
            // SKIP LOCKED lets every node claim at once: rows another claim is
            // taking are passed over instead of waited for, and a row whose claim
            // committed after this statement began is checked again against the
            // conditions (it is 'sending' with a future due_at then, so it is left).
            // The selection is a materialised CTE so that it runs exactly once,
            // whatever plan the update gets: a second run could lock other rows.
            // Each tenant's part is two ranges of `recipients_tenant_due`: its
            // test messages, then the rest by due time.
            let rows = query(
                &c,
                &format!(
                    "WITH want AS (SELECT * FROM unnest($5::text[], $6::bigint[]) AS w(tenant_id, k)), \
                     due AS MATERIALIZED ( \
                         SELECT x.id FROM want w CROSS JOIN LATERAL ( \
                             SELECT id FROM (SELECT id FROM recipients \
                              WHERE tenant_id = w.tenant_id AND {UNFINISHED} AND priority > 0 AND due_at <= $3 \
                              ORDER BY priority DESC, due_at LIMIT w.k FOR UPDATE SKIP LOCKED) tests \
                             UNION ALL \
                             SELECT id FROM (SELECT id FROM recipients \
                              WHERE tenant_id = w.tenant_id AND {UNFINISHED} AND priority = 0 AND due_at <= $3 \
                              ORDER BY due_at LIMIT w.k FOR UPDATE SKIP LOCKED) mail \
                             LIMIT w.k) x) \
                     UPDATE recipients SET status = 'sending', due_at = $1, lease_owner = $2, \
                     lease_incarnation = $4, lease_token = lease_token + 1, attempts = attempts + 1 \
                     WHERE id IN (SELECT id FROM due) \
                     RETURNING id, message_id, tenant_id, address, lease_token, attempts"
                ),
                &[&lease_until, &req.node, &req.now, &req.incarnation, &names, &counts],
            )
            .await?;
            let mut claimed = rows
                .iter()
                .map(|r| {
                    Ok(Claimed {
                        recipient: id(get(r, "id")?)?,
                        message: id(get(r, "message_id")?)?,
                        tenant: id(get(r, "tenant_id")?)?,
                        address: address(get(r, "address")?)?,
                        lease_token: get(r, "lease_token")?,
                        lease_until,
                        attempt: stored("attempts", u32::try_from(get::<i32>(r, "attempts")?))?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            // Tenant by tenant, in the order they were served.
            let order = names
                .iter()
                .enumerate()
                .map(|(i, t)| Ok((id::<TenantId>(t.clone())?, i)))
                .collect::<Result<HashMap<TenantId, usize>>>()?;
            claimed.sort_by_key(|c| order.get(&c.tenant).copied());
            Ok(claimed)
        }
        .await;
        self.writes.note(&result);
        result
    }

    async fn message_contents(&self, ids: &[MessageId]) -> Result<Vec<MessageContent>> {
        let wanted: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let c = client(&self.pool).await?;
        let rows = query(
            &c,
            "SELECT id, tenant_id, created_at, subject, text_body, html_body, reply_to, headers, \
             header_to, header_cc, on_behalf_name, on_behalf_email, test_provider_id, raw, \
             attachments, send_at FROM messages WHERE id = ANY($1)",
            &[&wanted],
        )
        .await?;
        let mut found = HashMap::with_capacity(rows.len());
        for r in &rows {
            let reply_to: Option<String> = get(r, "reply_to")?;
            let subject: String = get(r, "subject")?;
            let content = MessageContent {
                id: id(get(r, "id")?)?,
                tenant_id: id(get(r, "tenant_id")?)?,
                created_at: get(r, "created_at")?,
                subject: stored("subject", Subject::from_stored(&subject))?,
                text: get(r, "text_body")?,
                html: get(r, "html_body")?,
                reply_to: reply_to.map(reply_to_mailbox).transpose()?,
                headers: rows::headers(json(r, "headers")?)?,
                to: mailboxes(json(r, "header_to")?)?,
                cc: mailboxes(json(r, "header_cc")?)?,
                on_behalf_of: on_behalf_of(r)?,
                test_provider: opt_id(get(r, "test_provider_id")?)?,
                raw: get(r, "raw")?,
                attachments: rows::attachments(get(r, "attachments")?)?,
                send_at: get(r, "send_at")?,
            };
            found.insert(content.id, content);
        }
        // In the order asked for, skipping messages that do not exist, as SQLite answers.
        Ok(ids.iter().filter_map(|m| found.get(m).cloned()).collect())
    }

    async fn record_outcomes(
        &self,
        outcomes: Vec<Outcome>,
        captures: Vec<NewCapture>,
        lease: Option<EventLease>,
    ) -> Result<Completed> {
        let result = async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            // One statement for every outcome's recipient, one for every
            // attempt: a hundred outcomes cost two statements, not two hundred.
            let (mut ids, mut tokens, mut states, mut due) = (vec![], vec![], vec![], vec![]);
            for o in &outcomes {
                let (st, due_at) = match o.next {
                    NextState::Sent => ("sent", None),
                    NextState::Failed => ("failed", None),
                    NextState::Deferred { until } => ("deferred", Some(until)),
                };
                ids.push(o.recipient.to_string());
                tokens.push(o.lease_token);
                states.push(st);
                due.push(due_at);
            }
            let changed = query(&tx, COMPLETE_RECIPIENTS, &[&ids, &tokens, &states, &due]).await?;
            let position: HashMap<&str, usize> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.as_str(), i))
                .collect();
            let mut accepted = vec![false; outcomes.len()];
            let mut recorded_messages = HashSet::new();
            // Recipients that reached a final state leave their tenant's queue.
            let mut finished: BTreeMap<String, i64> = BTreeMap::new();
            // The recorded outcomes, for the webhook events they cause, in
            // the order given (as their events are).
            let mut recorded: Vec<Option<outbox::RecordedOutcome>> =
                std::iter::repeat_with(|| None)
                    .take(outcomes.len())
                    .collect();
            for row in &changed {
                let id: String = get(row, "id")?;
                let Some(&i) = position.get(id.as_str()) else {
                    continue;
                };
                accepted[i] = true;
                let r = outbox::RecordedOutcome::from_row(&outcomes[i], row)?;
                recorded_messages.insert(r.message.clone());
                if !matches!(r.outcome.next, NextState::Deferred { .. }) {
                    *finished.entry(r.tenant.clone()).or_default() += 1;
                }
                recorded[i] = Some(r);
            }
            let recorded: Vec<_> = recorded.into_iter().flatten().collect();
            insert_attempts(
                &tx,
                outcomes
                    .iter()
                    .zip(&accepted)
                    .filter(|(_, current)| **current)
                    .map(|(o, _)| o),
            )
            .await?;
            for cap in &captures {
                if recorded_messages.contains(&cap.message.to_string()) {
                    execute(
                        &tx,
                        sql::INSERT_CAPTURE,
                        &[
                            &cap.message.to_string(),
                            &cap.tenant.to_string(),
                            &cap.envelope_from,
                            &Json(&cap.recipients),
                            &cap.content,
                            &cap.at,
                        ],
                    )
                    .await
                    .map_err(pg)?;
                }
            }
            let (events, handed) = write_events(&tx, &recorded, lease.as_ref()).await?;
            // Last before the commit and in tenant order, as submissions do.
            for (tenant, count) in finished {
                change_queued(&tx, &tenant, -count).await?;
            }
            tx.commit().await.map_err(pg)?;
            Ok(Completed {
                accepted,
                events,
                handed,
            })
        }
        .await;
        self.writes.note(&result);
        result
    }

    async fn release(&self, mut leases: Vec<(RecipientId, i64)>) -> Result<()> {
        let result = async {
            // In id order, like complete, so that the two cannot deadlock.
            leases.sort();
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            let now = now_ms();
            for (rid, token) in leases {
                execute(
                    &tx,
                    sql::RELEASE_RECIPIENT,
                    &[&now, &rid.to_string(), &token],
                )
                .await
                .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)
        }
        .await;
        self.writes.note(&result);
        result
    }

    async fn repin(
        &self,
        mut leases: Vec<(RecipientId, i64)>,
        gateway: Option<GatewayId>,
        now: i64,
    ) -> Result<u64> {
        let result = async {
            // In id order, like complete and release, so that they cannot deadlock.
            leases.sort();
            let gateway = gateway.map(|g| g.to_string());
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            let mut moved = 0;
            for (rid, token) in leases {
                moved += execute(
                    &tx,
                    sql::REPIN_RECIPIENT,
                    &[&now, &gateway, &rid.to_string(), &token],
                )
                .await
                .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)?;
            if gateway.is_none() && moved > 0 {
                // Nodes may take them now.
                self.announce_mail();
            }
            Ok(moved)
        }
        .await;
        self.writes.note(&result);
        result
    }

    async fn next_due(&self, exclude_tenants: &[TenantId]) -> Result<Option<i64>> {
        let excluded: Vec<String> = exclude_tenants.iter().map(ToString::to_string).collect();
        let c = client(&self.pool).await?;
        if excluded.is_empty() {
            let rows = query(
                &c,
                &format!("SELECT due_at AS due FROM recipients WHERE {UNFINISHED} ORDER BY due_at LIMIT 1"),
                &[],
            )
            .await?;
            return rows.first().map(|r| get(r, "due")).transpose();
        }
        // Tenant by tenant (a walk of `recipients_tenant_due`, each tenant's
        // earliest in each class), so that an excluded tenant's backlog is not walked.
        let rows = query(
            &c,
            &format!(
                "WITH RECURSIVE walk(tenant_id, n) AS ( \
                     (SELECT tenant_id, 1 FROM recipients WHERE {UNFINISHED} ORDER BY tenant_id LIMIT 1) \
                     UNION ALL \
                     SELECT (SELECT r.tenant_id FROM recipients r WHERE r.{UNFINISHED} \
                             AND r.tenant_id > w.tenant_id ORDER BY r.tenant_id LIMIT 1), w.n + 1 \
                     FROM walk w WHERE w.tenant_id IS NOT NULL AND w.n < $2) \
                 SELECT min(least( \
                     (SELECT due_at FROM recipients r WHERE r.tenant_id = w.tenant_id AND r.{UNFINISHED} \
                      AND r.priority = 0 ORDER BY due_at LIMIT 1), \
                     (SELECT due_at FROM recipients r WHERE r.tenant_id = w.tenant_id AND r.{UNFINISHED} \
                      AND r.priority > 0 ORDER BY due_at LIMIT 1))) AS due \
                 FROM walk w WHERE w.tenant_id IS NOT NULL AND NOT (w.tenant_id = ANY($1))"
            ),
            &[&excluded, &((crate::CLAIM_WALK + excluded.len()) as i32)],
        )
        .await?;
        Ok(rows.first().map(|r| get(r, "due")).transpose()?.flatten())
    }

    async fn active_provider(&self, tenant_id: TenantId) -> Result<Option<ProviderConfig>> {
        let mut c = client(&self.pool).await?;
        // One snapshot for the four reads, so a provider deleted meanwhile
        // cannot turn into an error between reading the tenant and the provider.
        let tx = snapshot(&mut c).await?;
        let Some(provider_id) = load_tenant(&tx, tenant_id, Lock::None)
            .await?
            .notification_provider_id
        else {
            return Ok(None);
        };
        let config = provider_config(&tx, tenant_id, provider_id).await?;
        tx.commit().await.map_err(pg)?;
        Ok(Some(config))
    }

    async fn provider_config(
        &self,
        tenant_id: TenantId,
        provider_id: ProviderId,
    ) -> Result<ProviderConfig> {
        let mut c = client(&self.pool).await?;
        // One snapshot for the three reads, as for the active provider.
        let tx = snapshot(&mut c).await?;
        let config = provider_config(&tx, tenant_id, provider_id).await?;
        tx.commit().await.map_err(pg)?;
        Ok(config)
    }
}

#[async_trait]
impl Queue for PgStore {
    async fn heartbeat(&self, node: NodeRecord) -> Result<()> {
        let result = async {
            let c = client(&self.pool).await?;
            execute(
                &c,
                sql::UPSERT_NODE,
                &[
                    &node.name,
                    &rows::roles_text(&node.roles),
                    &node.version,
                    &node.started_at,
                    &node.heartbeat_at,
                    &node.incarnation,
                ],
            )
            .await
            .map_err(pg)
            .map(drop)
        }
        .await;
        self.writes.note(&result);
        result
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        let c = client(&self.pool).await?;
        query(&c, sql::NODES, &[])
            .await?
            .iter()
            .map(rows::node)
            .collect()
    }

    async fn queue_depth(&self) -> Result<QueueDepth> {
        let c = client(&self.pool).await?;
        let mut depth = QueueDepth::default();
        for row in query(&c, sql::QUEUE_DEPTH, &[&now_ms()]).await? {
            depth.add(&get::<String>(&row, "status")?, get::<i64>(&row, "n")?);
        }
        Ok(depth)
    }

    async fn submit(&self, m: NewMessage) -> Result<Submitted> {
        // A test message counts its tenant's pending tests under a lock held
        // to its commit: it goes alone, so that no group waits for it.
        let result = if m.test_provider.is_some() {
            submit_alone(&self.pool, &m).await
        } else {
            self.groups.submit(m).await
        };
        if let Ok(submitted) = &result
            && crate::handoff::left_for_claims(std::slice::from_ref(submitted))
        {
            self.announce_mail();
        }
        self.writes.note(&result);
        result
    }

    async fn submit_batch(&self, messages: Vec<NewMessage>) -> Result<Vec<Submitted>> {
        let result = submit_together(&self.pool, &messages).await;
        if let Ok(submitted) = &result
            && crate::handoff::left_for_claims(submitted)
        {
            self.announce_mail();
        }
        self.writes.note(&result);
        result
    }

    async fn cancel_message(&self, tenant_id: TenantId, message_id: MessageId) -> Result<()> {
        let result = async {
            let (mid, tid) = (message_id.to_string(), tenant_id.to_string());
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            // Locked, so a claim passes them over (SKIP LOCKED) until this
            // commits, and then finds them cancelled.
            let statuses = query(
                &tx,
                "SELECT status FROM recipients WHERE message_id = $1 AND tenant_id = $2 FOR UPDATE",
                &[&mid, &tid],
            )
            .await?
            .iter()
            .map(|r| status(&get::<String>(r, "status")?))
            .collect::<Result<Vec<_>>>()?;
            let waiting = rules::cancellable(&statuses)?;
            execute(&tx, sql::CANCEL_RECIPIENTS, &[&mid, &tid])
                .await
                .map_err(pg)?;
            change_queued(&tx, &tid, -waiting).await?;
            tx.commit().await.map_err(pg)
        }
        .await;
        self.writes.note(&result);
        result
    }

    async fn message(&self, tenant_id: TenantId, message_id: MessageId) -> Result<MessageView> {
        let (mid, tid) = (message_id.to_string(), tenant_id.to_string());
        let mut c = client(&self.pool).await?;
        // One snapshot, so the recipients and their attempts agree with each other.
        let tx = snapshot(&mut c).await?;
        let row = query_opt(&tx, sql::MESSAGE_HEAD, &[&mid, &tid])
            .await?
            .ok_or(StoreError::NotFound)?;
        let rows = query(&tx, sql::MESSAGE_RECIPIENTS, &[&mid, &tid]).await?;
        let attempt_rows = query(&tx, sql::MESSAGE_ATTEMPTS, &[&mid, &tid]).await?;
        tx.commit().await.map_err(pg)?;
        let origin = rows::origin(&row)?;
        let send_at: Option<i64> = get(&row, "send_at")?;
        let now = now_ms();
        let mut attempts: HashMap<String, Vec<AttemptRecord>> = HashMap::new();
        for r in &attempt_rows {
            attempts
                .entry(get(r, "recipient_id")?)
                .or_default()
                .push(attempt(r)?);
        }
        let mut recipients = Vec::with_capacity(rows.len());
        for r in &rows {
            let rid: String = get(r, "id")?;
            let st = status(&get::<String>(r, "status")?)?.as_of(send_at, now);
            let due_at: Option<i64> = get(r, "due_at")?;
            recipients.push(RecipientView {
                attempts: attempts.remove(&rid).unwrap_or_default(),
                id: id(rid)?,
                address: get(r, "address")?,
                kind: RecipientKind::from_stored(&get::<String>(r, "kind")?),
                status: st,
                next_attempt_at: if st.is_final() { None } else { due_at },
                gateway_id: opt_id(get(r, "gateway_id")?)?,
            });
        }
        Ok(MessageView {
            id: message_id,
            status: message_status(recipients.iter().map(|r| r.status)),
            subject: get(&row, "subject")?,
            created_at: get(&row, "created_at")?,
            idempotency_key: get(&row, "idempotency_key")?,
            used_fallback: get(&row, "used_fallback")?,
            on_behalf_of: on_behalf_of(&row)?,
            test_provider_id: opt_id(get(&row, "test_provider_id")?)?,
            recipients,
            attachments: rows::attachment_infos(get(&row, "attachments")?)?,
            source: origin.source().to_owned(),
            smtp: origin.smtp(),
            send_at,
            template: rows::template_use(&row)?,
            waiting: None,
        })
    }

    async fn count_messages(&self, tenant_id: TenantId, since: i64) -> Result<MessageCounts> {
        let c = client(&self.pool).await?;
        let rows = query(
            &c,
            &format!(
                "SELECT rank, count(*) AS n FROM (SELECT min({STATUS_RANK}) AS rank FROM messages m \
                 JOIN recipients r ON r.message_id = m.id \
                 WHERE m.tenant_id = $1 AND m.created_at >= $2 GROUP BY m.id) AS per_message GROUP BY rank"
            ),
            &[&tenant_id.to_string(), &since],
        )
        .await?;
        let mut counts = MessageCounts::default();
        for row in &rows {
            let rank: i32 = get(row, "rank")?;
            let n: i64 = get(row, "n")?;
            counts.add(i64::from(rank), n as u64);
        }
        Ok(counts)
    }

    async fn search_messages(
        &self,
        tenant_id: TenantId,
        q: MessageQuery,
    ) -> Result<Vec<MessageSummary>> {
        let c = client(&self.pool).await?;
        let recipient = q.recipient.map(|r| r.trim().to_lowercase());
        // Newest first along messages_by_tenant, each message's recipients
        // read beside it, until the page is full: a page costs its own rows,
        // whatever the tenant's history.
        query(
            &c,
            &format!(
                "SELECT m.id, m.subject, m.created_at, m.source, \
                 ARRAY(SELECT r.status FROM recipients r \
                       WHERE r.message_id = m.id AND r.tenant_id = m.tenant_id) AS statuses, m.send_at \
                 FROM messages m WHERE m.tenant_id = $1 \
                 AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM recipients x \
                      WHERE x.message_id = m.id AND x.tenant_id = m.tenant_id AND lower(x.address) = $2)) \
                 AND ($3::bigint IS NULL OR m.created_at >= $3) AND ($4::bigint IS NULL OR m.created_at < $4) \
                 AND ($6::text IS NULL OR m.test_provider_id = $6) \
                 AND ($7::text IS NULL OR m.source = $7) \
                 AND ($8::bigint IS NULL OR m.created_at < $8 OR (m.created_at = $8 AND m.id < $9::text)) \
                 AND ($10::bigint IS NULL OR (SELECT min({STATUS_RANK}) FROM recipients r \
                      WHERE r.message_id = m.id AND r.tenant_id = m.tenant_id) = $10) \
                 AND ($11::boolean IS NULL OR (coalesce(m.send_at, 0) > $12) = $11) \
                 ORDER BY m.created_at DESC, m.id DESC LIMIT $5"
            ),
            &[
                &tenant_id.to_string(),
                &recipient,
                &q.since,
                &q.until,
                &i64::from(q.limit),
                &q.test_provider.map(|p| p.to_string()),
                &q.source,
                &q.before.map(|(at, _)| at),
                &q.before.map(|(_, id)| id.to_string()),
                &q.status.map(status_rank),
                &scheduled_filter(q.status),
                &now_ms(),
            ],
        )
        .await?
        .iter()
        .map(|r| {
            let send_at: Option<i64> = get(r, "send_at")?;
            let now = now_ms();
            let statuses = get::<Vec<String>>(r, "statuses")?
                .iter()
                .map(|s| Ok(status(s)?.as_of(send_at, now)))
                .collect::<Result<Vec<_>>>()?;
            Ok(MessageSummary {
                id: id(get(r, "id")?)?,
                status: message_status(statuses),
                subject: get(r, "subject")?,
                source: get(r, "source")?,
                created_at: get(r, "created_at")?,
                send_at,
            })
        })
        .collect()
    }

    async fn claim_for_gateway(&self, claim: GatewayClaim) -> Result<Vec<Claimed>> {
        let result = async {
            let lease_until = claim.now + claim.lease_ms;
            let c = client(&self.pool).await?;
            // As a node's claim: SKIP LOCKED lets the gateway's instances
            // claim at once, each taking rows the others are not taking.
            let rows = query(
                &c,
                &format!(
                    "WITH due AS MATERIALIZED (SELECT id FROM recipients \
                         WHERE gateway_id = $4 AND {PINNED} AND due_at <= $5 AND tenant_id = $6 \
                         ORDER BY priority DESC, due_at LIMIT $7 FOR UPDATE SKIP LOCKED) \
                     UPDATE recipients SET status = 'sending', due_at = $1, lease_owner = $2, \
                     lease_incarnation = $3, lease_token = lease_token + 1, attempts = attempts + 1 \
                     WHERE id IN (SELECT id FROM due) \
                     RETURNING id, message_id, address, lease_token, attempts"
                ),
                &[
                    &lease_until,
                    &claim.owner,
                    &claim.incarnation,
                    &claim.gateway.to_string(),
                    &claim.now,
                    &claim.tenant.to_string(),
                    &i64::from(claim.limit),
                ],
            )
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(Claimed {
                        recipient: id(get(r, "id")?)?,
                        message: id(get(r, "message_id")?)?,
                        tenant: claim.tenant,
                        address: address(get(r, "address")?)?,
                        lease_token: get(r, "lease_token")?,
                        lease_until,
                        attempt: stored("attempts", u32::try_from(get::<i32>(r, "attempts")?))?,
                    })
                })
                .collect()
        }
        .await;
        self.writes.note(&result);
        result
    }

    async fn release_earlier_incarnations(
        &self,
        node: &str,
        incarnation: &str,
        now: i64,
    ) -> Result<u64> {
        let result = async {
            let c = client(&self.pool).await?;
            // A lease from before incarnations were recorded has none: it is earlier too.
            execute(
                &c,
                &release_crashed("lease_incarnation IS DISTINCT FROM $3"),
                &[&now, &node, &incarnation],
            )
            .await
            .map_err(pg)
        }
        .await;
        self.writes.note(&result);
        result
    }

    async fn release_stale_nodes(&self, stale_before: i64, now: i64) -> Result<Vec<(String, u64)>> {
        let result = async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            // The node rows stay locked until the commit: a node that beats again
            // meanwhile waits, and then records its heartbeat and incarnation anew.
            // Rows another sweep holds are skipped: that sweep releases them.
            let stale = query(
                &tx,
                "SELECT name, incarnation FROM nodes \
                 WHERE heartbeat_at < $1 AND incarnation IS NOT NULL ORDER BY name \
                 FOR UPDATE SKIP LOCKED",
                &[&stale_before],
            )
            .await?;
            let mut released = Vec::with_capacity(stale.len());
            for row in &stale {
                let (name, incarnation): (String, String) =
                    (get(row, "name")?, get(row, "incarnation")?);
                let n = execute(
                    &tx,
                    &release_crashed("lease_incarnation = $3"),
                    &[&now, &name, &incarnation],
                )
                .await
                .map_err(pg)?;
                // Taken over: the next sweep passes this node by, until it beats again.
                execute(&tx, sql::RELEASE_NODE, &[&name])
                    .await
                    .map_err(pg)?;
                released.push((name, n));
            }
            tx.commit().await.map_err(pg)?;
            Ok(released)
        }
        .await;
        self.writes.note(&result);
        result
    }

    async fn list_captured(&self, tenant_id: TenantId, limit: u32) -> Result<Vec<Captured>> {
        let c = client(&self.pool).await?;
        query(
            &c,
            sql::CAPTURED,
            &[&tenant_id.to_string(), &i64::from(limit)],
        )
        .await?
        .iter()
        .map(|r| {
            let content: Vec<u8> = get(r, "content")?;
            Ok(Captured {
                message_id: id(get(r, "message_id")?)?,
                captured_at: get(r, "at")?,
                envelope_from: get(r, "envelope_from")?,
                recipients: json(r, "recipients")?,
                content: String::from_utf8_lossy(&content).into_owned(),
            })
        })
        .collect()
    }
}

/// Writes the webhook events the recorded outcomes cause, in their
/// transaction (nothing when none of their tenants has an enabled webhook);
/// answers how many, and those leased to `lease`'s dispatcher
/// ([`outbox::schedule`] says which).
///
/// Two transactions recording outcomes of one message (of different
/// recipients) could each read its recipients and its chains before the
/// other commits: neither would see the message final, and each could find
/// a chain with nothing pending and lease its event to its own dispatcher,
/// so that two dispatchers post one message's events side by side. So each
/// first locks the rows of the messages it writes events of (in id order,
/// so that they cannot deadlock): the second waits for the first to commit,
/// then reads its outcome and its events too. Exactly one of them sees the
/// message final, and a chain's new events go to a dispatcher only when no
/// earlier event of it is pending, committed by anyone. `FOR NO KEY UPDATE`
/// excludes the other completions as `FOR UPDATE` would, but not rows
/// inserted meanwhile that refer to the message (a capture).
///
/// Outcomes of lone recipients ([`outbox::RecordedOutcome::from_row`]) need neither: their
/// events start new chains, of messages whose one recipient's row
/// COMPLETE_RECIPIENTS holds locked.
///
/// Whatever the number of outcomes, this is a handful of statements: the
/// locks, the recipients of every touched message, the latest due time of
/// every chain written to, and the events, each as one statement over arrays.
async fn write_events(
    tx: &impl GenericClient,
    recorded: &[outbox::RecordedOutcome<'_>],
    lease: Option<&EventLease>,
) -> Result<(usize, Vec<ClaimedEvent>)> {
    // The webhooks are held as they stand until the commit: one deleted or
    // disabled meanwhile is waited for and then not found, and one deleted
    // or disabled after sees these events, to delete or give them up too
    // (see `delete_webhook`, `update_webhook`).
    let subscribers_sql = Lock::Share.on(sql::SUBSCRIBERS);
    let mut subscribers: HashMap<String, Vec<outbox::Subscriber>> = HashMap::new();
    for r in recorded {
        if !subscribers.contains_key(&r.tenant) {
            let subs = query(tx, &subscribers_sql, &[&r.tenant])
                .await?
                .iter()
                .map(outbox::Subscriber::from_row)
                .collect::<Result<Vec<_>>>()?;
            subscribers.insert(r.tenant.clone(), subs);
        }
    }
    if subscribers.values().all(Vec::is_empty) {
        return Ok((0, Vec::new()));
    }
    let (mut events, touched) = outbox::outcome_events(recorded, &subscribers);
    // A new chain's message has one recipient, whose outcomes the lock of
    // its row serialises (COMPLETE_RECIPIENTS): no other lock is needed.
    let mut locked: Vec<&str> = events
        .iter()
        .filter(|e| !e.new_chain)
        .map(|e| e.message.as_str())
        .chain(touched.iter().map(|m| m.message))
        .collect();
    if !locked.is_empty() {
        locked.sort_unstable();
        locked.dedup();
        execute(tx, LOCK_MESSAGES, &[&locked]).await.map_err(pg)?;
    }
    if !touched.is_empty() {
        let messages: Vec<&str> = touched.iter().map(|m| m.message).collect();
        let tenants: Vec<&str> = touched.iter().map(|m| m.tenant).collect();
        let mut states: HashMap<String, Vec<outbox::RecipientState>> = HashMap::new();
        for row in query(tx, TOUCHED_RECIPIENT_STATES, &[&messages, &tenants]).await? {
            states
                .entry(get(&row, "message_id")?)
                .or_default()
                .push(outbox::RecipientState::from_row(&row)?);
        }
        for m in &touched {
            let recipients = states.get(m.message).map_or(&[][..], Vec::as_slice);
            m.event(&mut events, &subscribers, recipients);
        }
    }
    if events.is_empty() {
        return Ok((0, Vec::new()));
    }
    // Each event due no earlier than the pending events before it in its
    // chain, those of this batch included; leased to the dispatcher when
    // its chain had nothing pending.
    let (webhooks, messages, tenants): (Vec<&str>, Vec<&str>, Vec<&str>) = events
        .iter()
        .map(|e| (e.webhook.as_str(), e.message.as_str(), e.tenant.as_str()))
        .collect();
    let rows = if events.iter().all(|e| e.new_chain) {
        Vec::new()
    } else {
        let (webhooks, messages, tenants): (Vec<&str>, Vec<&str>, Vec<&str>) = events
            .iter()
            .filter(|e| !e.new_chain)
            .map(|e| (e.webhook.as_str(), e.message.as_str(), e.tenant.as_str()))
            .collect();
        query(tx, CHAIN_LATEST_DUES, &[&webhooks, &messages, &tenants]).await?
    };
    let mut pending: HashMap<(&str, &str), i64> = HashMap::new();
    for row in &rows {
        if let Some(due) = get::<Option<i64>>(row, "due_at")? {
            pending.insert((get(row, "webhook_id")?, get(row, "message_id")?), due);
        }
    }
    let (due, handed): (Vec<i64>, Vec<bool>) = outbox::schedule(&events, &pending, lease)
        .into_iter()
        .unzip();
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
    let at: Vec<i64> = events.iter().map(|e| e.at).collect();
    let seqs = query_map(
        tx,
        INSERT_EVENTS,
        &[
            &webhooks,
            &tenants,
            &ids,
            &types,
            &messages,
            &payloads,
            &due,
            &at,
            &handed,
            &lease.map(|l| l.until),
            &lease.map(|l| l.node.as_str()),
            &lease.map(|l| l.incarnation.as_str()),
        ],
        |r| get::<i64>(r, "seq"),
    )
    .await?;
    let written = events.len();
    let Some(lease) = lease else {
        return Ok((written, Vec::new()));
    };
    let handed = events
        .into_iter()
        .zip(handed)
        .filter_map(|(e, handed)| handed.then_some(e))
        .zip(seqs)
        .map(|(e, seq)| e.handed(seq, lease, &subscribers))
        .collect::<Result<Vec<_>>>()?;
    Ok((written, handed))
}

/// Locks the messages `$1` (in id order) whose events the outcomes write.
const LOCK_MESSAGES: &str =
    "SELECT id FROM messages WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE";

/// The recipients of the messages `$1` (of the tenants `$2`), as
/// [`sql::RECIPIENT_STATES`] reads one message's: through the index by
/// message, never a scan.
const TOUCHED_RECIPIENT_STATES: &str = "SELECT message_id, id, address, status FROM recipients \
     WHERE message_id = ANY($1::text[]) AND tenant_id = ANY($2::text[]) ORDER BY message_id, position";

/// When the latest pending event of each chain named by `$1` (webhooks),
/// `$2` (messages) and `$3` (their tenants), pairwise, is due (null when
/// nothing of it is pending): one look into the chain index per chain.
const CHAIN_LATEST_DUES: &str = "SELECT c.webhook_id, c.message_id, (SELECT MAX(o.due_at) FROM webhook_outbox o \
     WHERE o.webhook_id = c.webhook_id AND o.message_id = c.message_id AND o.tenant_id = c.tenant_id \
     AND o.status = 'pending') AS due_at \
     FROM (SELECT DISTINCT * FROM unnest($1::text[], $2::text[], $3::text[])) AS c (webhook_id, message_id, tenant_id)";

/// The events, one row per element of the arrays, numbered in their order;
/// those marked in `$9` leased to the dispatcher `$10` to `$12` describe (its
/// lease's end, node and incarnation) as a claim would leave them (their
/// first lease: token 1). Answers the leased ones' `seq`, in their order.
const INSERT_EVENTS: &str = "WITH written AS ( \
       INSERT INTO webhook_outbox (webhook_id, tenant_id, event_id, event_type, message_id, \
       payload, status, due_at, created_at, lease_until, lease_owner, lease_incarnation, lease_token) \
       SELECT w, t, e, k, m, p, 'pending', d, a, CASE WHEN h THEN $10::bigint END, \
       CASE WHEN h THEN $11::text END, CASE WHEN h THEN $12::text END, CASE WHEN h THEN 1 ELSE 0 END \
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
       $7::bigint[], $8::bigint[], $9::bool[]) WITH ORDINALITY AS x (w, t, e, k, m, p, d, a, h, n) ORDER BY n \
       RETURNING seq, lease_token) \
     SELECT seq FROM written WHERE lease_token = 1 ORDER BY seq";

/// Records every outcome's recipient given as arrays (`$1` ids, `$2` lease
/// tokens, `$3` states, `$4` due times for the deferred): only where the
/// lease token is still current (the fencing check: a lease taken over by
/// another claim has a newer token). The rows are locked first, in id
/// order, so that two completions over the same rows cannot deadlock; a
/// claim running concurrently holds its rows, so this waits for it and then
/// sees the newer token. Answers each recorded recipient with the columns
/// [`outbox::RecordedOutcome::from_row`] reads.
const COMPLETE_RECIPIENTS: &str = "WITH o AS ( \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[]) AS o (id, token, status, due_at)), \
     locked AS ( \
         SELECT r.id FROM recipients r JOIN o ON r.id = o.id \
         WHERE r.lease_token = o.token AND r.status = 'sending' ORDER BY r.id FOR UPDATE OF r) \
     UPDATE recipients r SET status = o.status, due_at = o.due_at, lease_owner = NULL, lease_incarnation = NULL \
     FROM o WHERE r.id = o.id AND r.id IN (SELECT id FROM locked) \
     AND r.lease_token = o.token AND r.status = 'sending' \
     RETURNING r.id, r.message_id, r.tenant_id, r.address, r.priority, r.sole, r.attempts";

/// Inserts the attempts of recorded outcomes, all in one statement.
async fn insert_attempts<'a>(
    tx: &impl GenericClient,
    outcomes: impl Iterator<Item = &'a Outcome>,
) -> Result<()> {
    #[derive(Default)]
    struct Columns<'a> {
        recipient: Vec<String>,
        at: Vec<i64>,
        node: Vec<std::borrow::Cow<'a, str>>,
        server: Vec<std::borrow::Cow<'a, str>>,
        outcome: Vec<&'static str>,
        step: Vec<Option<std::borrow::Cow<'a, str>>>,
        code: Vec<Option<i32>>,
        enhanced_code: Vec<Option<std::borrow::Cow<'a, str>>>,
        response: Vec<std::borrow::Cow<'a, str>>,
        duration_ms: Vec<i64>,
        remote_addr: Vec<Option<std::borrow::Cow<'a, str>>>,
        tls_version: Vec<Option<std::borrow::Cow<'a, str>>>,
        tls_cipher: Vec<Option<std::borrow::Cow<'a, str>>>,
        provider_id: Vec<Option<String>>,
        config_version: Vec<Option<i64>>,
        sender_policy: Vec<Option<std::borrow::Cow<'a, str>>>,
        diagnosis: Vec<Option<String>>,
    }
    let mut c = Columns::default();
    for o in outcomes {
        let a = &o.attempt;
        c.recipient.push(o.recipient.to_string());
        c.at.push(a.at);
        c.node.push(text(&a.node));
        c.server.push(text(&a.server));
        c.outcome.push(a.outcome.as_str());
        c.step.push(opt_text(&a.step));
        c.code.push(a.code.map(i32::from));
        c.enhanced_code.push(opt_text(&a.enhanced_code));
        c.response.push(text(&a.response));
        c.duration_ms.push(a.duration_ms);
        c.remote_addr.push(opt_text(&a.remote_addr));
        c.tls_version.push(opt_text(&a.tls_version));
        c.tls_cipher.push(opt_text(&a.tls_cipher));
        c.provider_id.push(a.provider_id.map(|p| p.to_string()));
        c.config_version.push(a.config_version);
        c.sender_policy.push(opt_text(&a.sender_policy));
        c.diagnosis
            .push(a.diagnosis.as_ref().map(|d| d.to_string()));
    }
    if c.recipient.is_empty() {
        return Ok(());
    }
    execute(
        tx,
        "INSERT INTO attempts (recipient_id, at, node, server, outcome, step, code, enhanced_code, \
         response, duration_ms, remote_addr, tls_version, tls_cipher, provider_id, config_version, \
         sender_policy, diagnosis) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::integer[], $8::text[], $9::text[], $10::bigint[], $11::text[], $12::text[], \
         $13::text[], $14::text[], $15::bigint[], $16::text[], $17::text[])",
        &[
            &c.recipient,
            &c.at,
            &c.node,
            &c.server,
            &c.outcome,
            &c.step,
            &c.code,
            &c.enhanced_code,
            &c.response,
            &c.duration_ms,
            &c.remote_addr,
            &c.tls_version,
            &c.tls_cipher,
            &c.provider_id,
            &c.config_version,
            &c.sender_policy,
            &c.diagnosis,
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}
