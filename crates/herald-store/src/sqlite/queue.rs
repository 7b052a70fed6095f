//! The SQLite store's messages and the queue: submissions, claims under leases, outcomes, the nodes that hold leases, captures.

use super::config::provider_config;
use super::*;

#[async_trait]
impl DeliveryStore for SqliteStore {
    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Claimed>> {
        let lease_until = req.now + req.lease_ms;
        let cursor = self.claim_cursor.clone();
        // Where the walk over tenants starts: should the job run again (see
        // `Db::write_repeatable`), it starts from the same place.
        let mut start = None;
        self.db
            .write_repeatable(move |c| {
                let tenants = {
                    let mut cursor = cursor.lock().expect("claim cursor lock");
                    let mut walked = start.get_or_insert_with(|| cursor.clone()).clone();
                    let tenants = tenants_due(c, &req, &mut walked)?;
                    *cursor = walked;
                    tenants
                };
                let share = crate::claim_share(req.limit, tenants.len());
                // One statement per tenant: its test messages, then the rest
                // by due time, each a range of `recipients_tenant_due`. A
                // bare `LIMIT ?n` would make SQLite prepare the statement
                // again whenever the limit changes (its planner weighs the
                // value); the cast hides the value from the planner.
                let mut take = c
                    .prepare_cached(&format!(
                        "UPDATE recipients SET status = 'sending', due_at = ?1, lease_owner = ?2, \
                         lease_incarnation = ?3, lease_token = lease_token + 1, attempts = attempts + 1 \
                         WHERE id IN ( \
                             SELECT id FROM (SELECT id FROM recipients INDEXED BY recipients_tenant_due \
                                 WHERE tenant_id = ?4 AND {UNFINISHED} AND priority > 0 AND due_at <= ?5 \
                                 ORDER BY priority DESC, due_at LIMIT CAST(?6 AS INTEGER)) \
                             UNION ALL \
                             SELECT id FROM (SELECT id FROM recipients INDEXED BY recipients_tenant_due \
                                 WHERE tenant_id = ?4 AND {UNFINISHED} AND priority = 0 AND due_at <= ?5 \
                                 ORDER BY due_at LIMIT CAST(?6 AS INTEGER)) \
                             LIMIT CAST(?6 AS INTEGER)) \
                         RETURNING id, message_id, address, lease_token, attempts"
                    ))
                    .map_err(sql)?;
                let mut claimed = Vec::new();
                for (tenant, room) in tenants {
                    let left = req.limit.saturating_sub(claimed.len() as u32);
                    if left == 0 {
                        break;
                    }
                    let tenant_id: TenantId = id(tenant.clone())?;
                    let k = share.min(room).min(left);
                    claimed.extend(leased(
                        &mut take,
                        params![lease_until, req.node, req.incarnation, tenant, req.now, k],
                        tenant_id,
                        lease_until,
                    )?);
                }
                Ok(claimed)
            })
            .await
    }

    async fn message_contents(&self, ids: &[MessageId]) -> Result<Vec<MessageContent>> {
        let ids = ids.to_vec();
        self.db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT tenant_id, created_at, subject, text_body, html_body, reply_to, headers, header_to, header_cc, \
                         on_behalf_name, on_behalf_email, test_provider_id, raw, attachments, send_at FROM messages WHERE id = ?1",
                    )
                    .map_err(sql)?;
                let mut out = Vec::with_capacity(ids.len());
                for message_id in ids {
                    let row = stmt
                        .query_row([message_id.to_string()], |r| {
                            Ok((
                                r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?,
                                r.get::<_, Option<String>>(3)?, r.get::<_, Option<String>>(4)?,
                                r.get::<_, Option<String>>(5)?, r.get::<_, String>(6)?,
                                r.get::<_, String>(7)?, r.get::<_, String>(8)?,
                                (r.get::<_, Option<String>>(9)?, r.get::<_, Option<String>>(10)?),
                                r.get::<_, Option<String>>(11)?,
                                (r.get::<_, Option<Vec<u8>>>(12)?, r.get::<_, Option<String>>(13)?, r.get::<_, Option<i64>>(14)?),
                            ))
                        })
                        .optional()
                        .map_err(sql)?;
                    let Some((tid, created_at, subject, text, html, reply_to, headers, to, cc, on_behalf, test_provider, (raw, attachments, send_at))) = row else {
                        continue;
                    };
                    out.push(MessageContent {
                        id: message_id,
                        tenant_id: id(tid)?,
                        created_at,
                        subject: stored("subject", Subject::from_stored(&subject))?,
                        text,
                        html,
                        reply_to: reply_to.map(reply_to_mailbox).transpose()?,
                        headers: rows::headers(stored("headers", serde_json::from_str(&headers))?)?,
                        to: mailboxes(&to)?,
                        cc: mailboxes(&cc)?,
                        on_behalf_of: on_behalf_of(on_behalf)?,
                        test_provider: opt_id(test_provider)?,
                        raw,
                        attachments: rows::attachments(attachments)?,
                        send_at,
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn record_outcomes(
        &self,
        outcomes: Vec<Outcome>,
        captures: Vec<NewCapture>,
        lease: Option<EventLease>,
    ) -> Result<Completed> {
        self.db
            .write_repeatable(move |c| {
                let mut update = c.prepare_cached(sql::COMPLETE_RECIPIENT).map_err(sql)?;
                let mut accepted = Vec::with_capacity(outcomes.len());
                let mut recorded_messages = HashSet::new();
                // Recipients that reached a final state leave their tenant's queue.
                let mut finished: HashMap<String, i64> = HashMap::new();
                // The recorded outcomes' recipients, for the events they cause.
                let mut recorded = Vec::new();
                // The attempts of the outcomes recorded, inserted together after.
                let mut attempts = Vec::with_capacity(outcomes.len());
                for o in &outcomes {
                    let (st, due_at) = match o.next {
                        NextState::Sent => ("sent", None),
                        NextState::Failed => ("failed", None),
                        NextState::Deferred { until } => ("deferred", Some(until)),
                    };
                    let rid = o.recipient.to_string();
                    // The fencing check: a lease taken over by another claim has a newer token.
                    let mut rows = update
                        .query(params![st, due_at, rid, o.lease_token])
                        .map_err(sql)?;
                    let row = rows.next().map_err(sql)?;
                    let current = row.is_some();
                    if let Some(row) = row {
                        let r = outbox::RecordedOutcome::from_row(o, row)?;
                        recorded_messages.insert(r.message.clone());
                        if due_at.is_none() {
                            *finished.entry(r.tenant.clone()).or_default() += 1;
                        }
                        recorded.push(r);
                        attempts.push(AttemptRow::new(rid, &o.attempt));
                    }
                    accepted.push(current);
                }
                drop(update);
                insert_attempts(c, &attempts)?;
                let (events, handed) = write_events(c, &recorded, lease.as_ref())?;
                for cap in &captures {
                    if recorded_messages.contains(&cap.message.to_string()) {
                        c.execute(
                            sql::INSERT_CAPTURE,
                            params![
                                cap.message.to_string(),
                                cap.tenant.to_string(),
                                cap.envelope_from,
                                serde_json::to_string(&cap.recipients).expect("strings serialise"),
                                cap.content,
                                cap.at
                            ],
                        )
                        .map_err(sql)?;
                    }
                }
                let mut leave = c
                .prepare_cached(
                    "UPDATE tenants SET queued_recipients = queued_recipients - ?1 WHERE id = ?2",
                )
                .map_err(sql)?;
                for (tenant, count) in finished {
                    leave.execute(params![count, tenant]).map_err(sql)?;
                }
                Ok(Completed {
                    accepted,
                    events,
                    handed,
                })
            })
            .await
    }

    async fn release(&self, leases: Vec<(RecipientId, i64)>) -> Result<()> {
        self.db
            .write(move |c| {
                let now = now_ms();
                for (rid, token) in leases {
                    c.execute(sql::RELEASE_RECIPIENT, params![now, rid.to_string(), token])
                        .map_err(sql)?;
                }
                Ok(())
            })
            .await
    }

    async fn repin(
        &self,
        leases: Vec<(RecipientId, i64)>,
        gateway: Option<GatewayId>,
        now: i64,
    ) -> Result<u64> {
        self.db
            .write(move |c| {
                let gateway = gateway.map(|g| g.to_string());
                let mut moved = 0;
                for (rid, token) in leases {
                    moved += c
                        .execute(
                            sql::REPIN_RECIPIENT,
                            params![now, gateway, rid.to_string(), token],
                        )
                        .map_err(sql)? as u64;
                }
                Ok(moved)
            })
            .await
    }

    async fn next_due(&self, exclude_tenants: &[TenantId]) -> Result<Option<i64>> {
        let excluded: HashSet<String> = exclude_tenants.iter().map(ToString::to_string).collect();
        self.db
            .read(move |c| {
                if excluded.is_empty() {
                    return c
                        .query_row(
                            &format!(
                                "SELECT due_at FROM recipients INDEXED BY recipients_next_due \
                                 WHERE {UNFINISHED} ORDER BY due_at LIMIT 1"
                            ),
                            [],
                            |r| r.get(0),
                        )
                        .optional()
                        .map_err(sql);
                }
                // Tenant by tenant, so that an excluded tenant's backlog is not walked.
                let mut next = c
                    .prepare_cached(&format!(
                        "SELECT tenant_id FROM recipients INDEXED BY recipients_tenant_due \
                         WHERE {UNFINISHED} AND tenant_id > ?1 ORDER BY tenant_id LIMIT 1"
                    ))
                    .map_err(sql)?;
                let (mut at, mut earliest) = (String::new(), None::<i64>);
                for _ in 0..crate::CLAIM_WALK + excluded.len() {
                    let found: Option<String> = next
                        .query_row([&at], |r| r.get(0))
                        .optional()
                        .map_err(sql)?;
                    let Some(tenant) = found else { break };
                    if !excluded.contains(&tenant) {
                        let due = earliest_of(c, &tenant)?;
                        earliest = crate::earlier(earliest, due);
                    }
                    at = tenant;
                }
                Ok(earliest)
            })
            .await
    }

    async fn active_provider(&self, tenant_id: TenantId) -> Result<Option<ProviderConfig>> {
        self.db
            .read(
                move |c| match load_tenant(c, tenant_id)?.notification_provider_id {
                    Some(provider_id) => provider_config(c, tenant_id, provider_id).map(Some),
                    None => Ok(None),
                },
            )
            .await
    }

    async fn provider_config(
        &self,
        tenant_id: TenantId,
        provider_id: ProviderId,
    ) -> Result<ProviderConfig> {
        self.db
            .read(move |c| provider_config(c, tenant_id, provider_id))
            .await
    }
}

#[async_trait]
impl Queue for SqliteStore {
    async fn heartbeat(&self, node: NodeRecord) -> Result<()> {
        self.db
            .write(move |c| {
                c.execute(
                    sql::UPSERT_NODE,
                    params![
                        node.name,
                        rows::roles_text(&node.roles),
                        node.version,
                        node.started_at,
                        node.heartbeat_at,
                        node.incarnation
                    ],
                )
                .map_err(sql)
                .map(drop)
            })
            .await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        self.db
            .read(|c| {
                list(c, sql::NODES, [], |r| Ok(rows::node(r)))?
                    .into_iter()
                    .collect()
            })
            .await
    }

    async fn queue_depth(&self) -> Result<QueueDepth> {
        self.db
            .read(|c| {
                let rows = list(c, sql::QUEUE_DEPTH, [now_ms()], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })?;
                let mut depth = QueueDepth::default();
                for (status, n) in rows {
                    depth.add(&status, n);
                }
                Ok(depth)
            })
            .await
    }

    async fn cancel_message(&self, tenant_id: TenantId, message_id: MessageId) -> Result<()> {
        self.db
            .write(move |c| {
                let (mid, tid) = (message_id.to_string(), tenant_id.to_string());
                let statuses = recipient_statuses(c, &mid, &tid)?;
                let waiting = rules::cancellable(&statuses)?;
                c.execute(sql::CANCEL_RECIPIENTS, [&mid, &tid])
                    .map_err(sql)?;
                c.execute(
                    "UPDATE tenants SET queued_recipients = queued_recipients - ?1 WHERE id = ?2",
                    params![waiting, tid],
                )
                .map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn submit(&self, m: NewMessage) -> Result<Submitted> {
        self.db
            .write_repeatable(move |c| insert_message(c, &m))
            .await
    }

    async fn submit_batch(&self, messages: Vec<NewMessage>) -> Result<Vec<Submitted>> {
        self.db
            .write_repeatable(move |c| messages.iter().map(|m| insert_message(c, m)).collect())
            .await
    }

    async fn message(&self, tenant_id: TenantId, message_id: MessageId) -> Result<MessageView> {
        self.db
            .read(move |c| {
                let (
                    subject,
                    created_at,
                    idempotency_key,
                    used_fallback,
                    on_behalf,
                    test_provider,
                    origin,
                    (attachments, send_at, template),
                ) = c
                    .query_row(
                        sql::MESSAGE_HEAD,
                        [message_id.to_string(), tenant_id.to_string()],
                        |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, i64>(1)?,
                                r.get::<_, Option<String>>(2)?,
                                r.get::<_, bool>(3)?,
                                (
                                    r.get::<_, Option<String>>(4)?,
                                    r.get::<_, Option<String>>(5)?,
                                ),
                                r.get::<_, Option<String>>(6)?,
                                rows::origin(r),
                                (
                                    r.get::<_, Option<String>>("attachments")?,
                                    r.get::<_, Option<i64>>("send_at")?,
                                    rows::template_use(r),
                                ),
                            ))
                        },
                    )
                    .optional()
                    .map_err(sql)?
                    .ok_or(StoreError::NotFound)?;
                let origin = origin?;
                let now = now_ms();
                let rows = list(
                    c,
                    sql::MESSAGE_RECIPIENTS,
                    [message_id.to_string(), tenant_id.to_string()],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                            r.get::<_, Option<String>>(5)?,
                        ))
                    },
                )?;
                let mut attempts: HashMap<String, Vec<AttemptRecord>> = HashMap::new();
                for (rid, attempt) in list(
                    c,
                    sql::MESSAGE_ATTEMPTS,
                    [message_id.to_string(), tenant_id.to_string()],
                    |r| Ok((r.get::<_, String>(0)?, rows::attempt(r))),
                )? {
                    attempts.entry(rid).or_default().push(attempt?);
                }
                let mut recipients = Vec::with_capacity(rows.len());
                for (rid, address, kind, st, due_at, gateway) in rows {
                    let st = status(&st)?.as_of(send_at, now);
                    recipients.push(RecipientView {
                        attempts: attempts.remove(&rid).unwrap_or_default(),
                        id: id(rid)?,
                        address,
                        kind: RecipientKind::from_stored(&kind),
                        status: st,
                        next_attempt_at: if st.is_final() { None } else { due_at },
                        gateway_id: opt_id(gateway)?,
                    });
                }
                Ok(MessageView {
                    id: message_id,
                    status: message_status(recipients.iter().map(|r| r.status)),
                    subject,
                    created_at,
                    idempotency_key,
                    used_fallback,
                    on_behalf_of: on_behalf_of(on_behalf)?,
                    test_provider_id: opt_id(test_provider)?,
                    recipients,
                    attachments: rows::attachment_infos(attachments)?,
                    source: origin.source().to_owned(),
                    smtp: origin.smtp(),
                    send_at,
                    template: template?,
                    waiting: None,
                })
            })
            .await
    }

    async fn count_messages(&self, tenant_id: TenantId, since: i64) -> Result<MessageCounts> {
        self.db
            .read(move |c| {
                let rows = list(
                    c,
                    &format!(
                        "SELECT rank, count(*) FROM (SELECT min({STATUS_RANK}) AS rank FROM messages m \
                         JOIN recipients r ON r.message_id = m.id \
                         WHERE m.tenant_id = ?1 AND m.created_at >= ?2 GROUP BY m.id) GROUP BY rank"
                    ),
                    params![tenant_id.to_string(), since],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )?;
                let mut counts = MessageCounts::default();
                for (rank, count) in rows {
                    counts.add(rank, count as u64);
                }
                Ok(counts)
            })
            .await
    }

    async fn search_messages(
        &self,
        tenant_id: TenantId,
        q: MessageQuery,
    ) -> Result<Vec<MessageSummary>> {
        let now = now_ms();
        self.db
            .read(move |c| {
                // Newest first along messages_by_tenant, each message's
                // recipients read beside it, until the page is full: a page
                // costs its own rows, whatever the tenant's history.
                let rows = list(
                    c,
                    &format!(
                        "SELECT m.id, m.subject, m.created_at, m.source, \
                         (SELECT group_concat(r.status) FROM recipients r WHERE r.message_id = m.id), \
                         m.send_at \
                         FROM messages m WHERE m.tenant_id = ?1 \
                         AND (?2 IS NULL OR EXISTS (SELECT 1 FROM recipients x \
                              WHERE x.message_id = m.id AND lower(x.address) = lower(?2))) \
                         AND (?3 IS NULL OR m.created_at >= ?3) AND (?4 IS NULL OR m.created_at < ?4) \
                         AND (?6 IS NULL OR m.test_provider_id = ?6) \
                         AND (?7 IS NULL OR m.source = ?7) \
                         AND (?8 IS NULL OR m.created_at < ?8 OR (m.created_at = ?8 AND m.id < ?9)) \
                         AND (?10 IS NULL OR (SELECT min({STATUS_RANK}) FROM recipients r \
                              WHERE r.message_id = m.id) = ?10) \
                         AND (?11 IS NULL OR (coalesce(m.send_at, 0) > ?12) = ?11) \
                         ORDER BY m.created_at DESC, m.id DESC LIMIT ?5"
                    ),
                    params![
                        tenant_id.to_string(),
                        q.recipient.map(|r| r.trim().to_owned()),
                        q.since,
                        q.until,
                        q.limit,
                        q.test_provider.map(|p| p.to_string()),
                        q.source,
                        q.before.map(|(at, _)| at),
                        q.before.map(|(_, id)| id.to_string()),
                        q.status.map(status_rank),
                        scheduled_filter(q.status),
                        now,
                    ],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, Option<String>>(4)?,
                            r.get::<_, Option<i64>>(5)?,
                        ))
                    },
                )?;
                rows.into_iter()
                    .map(|(mid, subject, created_at, source, statuses, send_at)| {
                        let statuses = statuses
                            .unwrap_or_default()
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(|s| Ok(status(s)?.as_of(send_at, now)))
                            .collect::<Result<Vec<_>>>()?;
                        Ok(MessageSummary {
                            id: id(mid)?,
                            status: message_status(statuses),
                            subject,
                            source,
                            created_at,
                            send_at,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn claim_for_gateway(&self, claim: GatewayClaim) -> Result<Vec<Claimed>> {
        let lease_until = claim.now + claim.lease_ms;
        self.db
            .write(move |c| {
                let mut take = c
                    .prepare_cached(&format!(
                        "UPDATE recipients SET status = 'sending', due_at = ?1, lease_owner = ?2, \
                         lease_incarnation = ?3, lease_token = lease_token + 1, attempts = attempts + 1 \
                         WHERE id IN (SELECT id FROM recipients INDEXED BY recipients_gateway_due \
                             WHERE gateway_id = ?4 AND {PINNED} AND due_at <= ?5 AND tenant_id = ?6 \
                             ORDER BY priority DESC, due_at LIMIT CAST(?7 AS INTEGER)) \
                         RETURNING id, message_id, address, lease_token, attempts"
                    ))
                    .map_err(sql)?;
                leased(
                    &mut take,
                    params![
                        lease_until,
                        claim.owner,
                        claim.incarnation,
                        claim.gateway.to_string(),
                        claim.now,
                        claim.tenant.to_string(),
                        claim.limit
                    ],
                    claim.tenant,
                    lease_until,
                )
            })
            .await
    }

    async fn release_earlier_incarnations(
        &self,
        node: &str,
        incarnation: &str,
        now: i64,
    ) -> Result<u64> {
        let (node, incarnation) = (node.to_owned(), incarnation.to_owned());
        self.db
            .write(move |c| {
                // A lease from before incarnations were recorded has none: it is earlier too.
                c.execute(
                    &format!(
                        "{RELEASE_CRASHED} WHERE status = 'sending' AND lease_owner = ?2 \
                         AND lease_incarnation IS NOT ?3"
                    ),
                    params![now, node, incarnation],
                )
                .map(|n| n as u64)
                .map_err(sql)
            })
            .await
    }

    async fn release_stale_nodes(&self, stale_before: i64, now: i64) -> Result<Vec<(String, u64)>> {
        self.db
            .write(move |c| {
                let stale = list(
                    c,
                    "SELECT name, incarnation FROM nodes \
                     WHERE heartbeat_at < ?1 AND incarnation IS NOT NULL ORDER BY name",
                    [stale_before],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                )?;
                let mut released = Vec::with_capacity(stale.len());
                for (name, incarnation) in stale {
                    let n = c
                        .execute(
                            &format!(
                                "{RELEASE_CRASHED} WHERE status = 'sending' AND lease_owner = ?2 \
                                 AND lease_incarnation = ?3"
                            ),
                            params![now, name, incarnation],
                        )
                        .map_err(sql)?;
                    // Taken over: the next sweep passes this node by, until it beats again.
                    c.execute(sql::RELEASE_NODE, [&name]).map_err(sql)?;
                    released.push((name, n as u64));
                }
                Ok(released)
            })
            .await
    }

    async fn list_captured(&self, tenant_id: TenantId, limit: u32) -> Result<Vec<Captured>> {
        self.db
            .read(move |c| {
                let rows = list(
                    c,
                    sql::CAPTURED,
                    params![tenant_id.to_string(), limit],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, Vec<u8>>(4)?,
                        ))
                    },
                )?;
                rows.into_iter()
                    .map(|(mid, at, from, rcpts, content)| {
                        Ok(Captured {
                            message_id: id(mid)?,
                            captured_at: at,
                            envelope_from: from,
                            recipients: stored("recipients", serde_json::from_str(&rcpts))?,
                            content: String::from_utf8_lossy(&content).into_owned(),
                        })
                    })
                    .collect()
            })
            .await
    }
}

/// Runs a claim's `UPDATE … RETURNING id, message_id, address, lease_token,
/// attempts` and makes its rows recipients of `tenant` leased until `lease_until`.
fn leased(
    take: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    tenant: TenantId,
    lease_until: i64,
) -> Result<Vec<Claimed>> {
    let rows = take
        .query_map(params, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .map_err(sql)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql)?;
    rows.into_iter()
        .map(|(rid, mid, addr, lease_token, attempts)| {
            Ok(Claimed {
                recipient: id(rid)?,
                message: id(mid)?,
                tenant,
                address: address(addr)?,
                lease_token,
                lease_until,
                attempt: stored("attempts", u32::try_from(attempts))?,
            })
        })
        .collect()
}

/// Writes the webhook events the recorded outcomes cause, in their
/// transaction; answers how many, and those leased to `lease`'s dispatcher.
fn write_events(
    c: &Connection,
    recorded: &[outbox::RecordedOutcome<'_>],
    lease: Option<&EventLease>,
) -> Result<(usize, Vec<ClaimedEvent>)> {
    let mut subscribers: HashMap<String, Vec<outbox::Subscriber>> = HashMap::new();
    for r in recorded {
        if !subscribers.contains_key(&r.tenant) {
            let subs = list_parsed(c, sql::SUBSCRIBERS, [&r.tenant], |r| {
                Ok(outbox::Subscriber::from_row(r))
            })?;
            subscribers.insert(r.tenant.clone(), subs);
        }
    }
    if subscribers.values().all(Vec::is_empty) {
        return Ok((0, Vec::new()));
    }
    let (mut events, touched) = outbox::outcome_events(recorded, &subscribers);
    for m in touched {
        let recipients = list_parsed(c, sql::RECIPIENT_STATES, [m.message, m.tenant], |r| {
            Ok(outbox::RecipientState::from_row(r))
        })?;
        m.event(&mut events, &subscribers, &recipients);
    }
    let schedule = {
        // Each chain's latest pending due time, read once a chain.
        let mut latest_due = c.prepare_cached(CHAIN_LATEST_DUE).map_err(sql)?;
        let mut pending: HashMap<(&str, &str), i64> = HashMap::new();
        let mut read: HashSet<(&str, &str)> = HashSet::new();
        for e in events.iter().filter(|e| !e.new_chain) {
            let chain = (e.webhook.as_str(), e.message.as_str());
            if read.insert(chain) {
                let due: Option<i64> = latest_due
                    .query_row(params![e.webhook, e.message], |r| r.get(0))
                    .map_err(sql)?;
                if let Some(due) = due {
                    pending.insert(chain, due);
                }
            }
        }
        outbox::schedule(&events, &pending, lease)
    };
    let mut insert = c.prepare_cached(INSERT_EVENT).map_err(sql)?;
    let written = events.len();
    let mut handed = Vec::new();
    for (e, (due, hands)) in events.into_iter().zip(schedule) {
        // The lease this event is written under, if it goes to the dispatcher.
        let lease = lease.filter(|_| hands);
        insert
            .execute(params![
                e.webhook,
                e.tenant,
                e.event_id,
                e.event_type.as_str(),
                e.message,
                e.payload,
                due,
                e.at,
                lease.map(|l| l.until),
                lease.map(|l| &l.node),
                lease.map(|l| &l.incarnation),
                i64::from(lease.is_some())
            ])
            .map_err(sql)?;
        if let Some(lease) = lease {
            handed.push(e.handed(c.last_insert_rowid(), lease, &subscribers)?);
        }
    }
    Ok((written, handed))
}

/// An event due at `?7` (no earlier than the pending events before it in
/// its chain); leased to a dispatcher when `?9` to `?11` name one, as a
/// claim would leave it (its first lease: token 1).
const INSERT_EVENT: &str = "INSERT INTO webhook_outbox (webhook_id, tenant_id, event_id, event_type, \
     message_id, payload, status, due_at, created_at, lease_until, lease_owner, lease_incarnation, \
     lease_token) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8, ?9, ?10, ?11, ?12)";

/// When the latest pending event of a chain (a webhook's events of one
/// message) is due; none when nothing of it is pending.
const CHAIN_LATEST_DUE: &str = "SELECT MAX(due_at) FROM webhook_outbox INDEXED BY webhook_outbox_chain \
     WHERE webhook_id = ?1 AND message_id = ?2 AND status = 'pending'";

/// Rows of one `INSERT` into `attempts`, largest first: a batch of outcomes
/// takes as many of the largest as fit, then of the next, so that at most
/// three statements are kept prepared. One statement for many rows runs
/// SQLite's program once and moves the `AUTOINCREMENT` counter once.
const ATTEMPT_ROWS: [usize; 3] = [32, 8, 1];

/// The columns of an attempt's row, in the order [`AttemptRow::params`] gives them.
const ATTEMPT_COLUMNS: &str = "recipient_id, at, node, server, outcome, step, code, \
     enhanced_code, response, duration_ms, remote_addr, tls_version, tls_cipher, provider_id, \
     config_version, sender_policy, diagnosis";
const ATTEMPT_VALUES: usize = 17;

/// `INSERT INTO attempts` statements of each size in [`ATTEMPT_ROWS`].
static INSERT_ATTEMPTS: std::sync::LazyLock<[String; 3]> = std::sync::LazyLock::new(|| {
    ATTEMPT_ROWS.map(|rows| {
        let row = format!("({})", vec!["?"; ATTEMPT_VALUES].join(", "));
        format!(
            "INSERT INTO attempts ({ATTEMPT_COLUMNS}) VALUES {}",
            vec![row; rows].join(", ")
        )
    })
});

/// An attempt to insert, with the values its row needs written out.
struct AttemptRow<'a> {
    recipient: String,
    attempt: &'a AttemptRecord,
    outcome: &'static str,
    provider: Option<String>,
    diagnosis: Option<String>,
}

impl<'a> AttemptRow<'a> {
    fn new(recipient: String, attempt: &'a AttemptRecord) -> Self {
        AttemptRow {
            recipient,
            attempt,
            outcome: attempt.outcome.as_str(),
            provider: attempt.provider_id.map(|p| p.to_string()),
            diagnosis: attempt.diagnosis.as_ref().map(|d| d.to_string()),
        }
    }

    /// The row's values, in [`ATTEMPT_COLUMNS`]' order.
    fn params(&self) -> [&dyn rusqlite::ToSql; ATTEMPT_VALUES] {
        let a = self.attempt;
        [
            &self.recipient,
            &a.at,
            &a.node,
            &a.server,
            &self.outcome,
            &a.step,
            &a.code,
            &a.enhanced_code,
            &a.response,
            &a.duration_ms,
            &a.remote_addr,
            &a.tls_version,
            &a.tls_cipher,
            &self.provider,
            &a.config_version,
            &a.sender_policy,
            &self.diagnosis,
        ]
    }
}

/// Inserts `attempts` in their order, many to a statement.
fn insert_attempts(c: &Connection, attempts: &[AttemptRow]) -> Result<()> {
    let mut rest = attempts;
    for (size, text) in ATTEMPT_ROWS.iter().zip(INSERT_ATTEMPTS.iter()) {
        if rest.len() < *size {
            continue;
        }
        let mut insert = c.prepare_cached(text).map_err(sql)?;
        while rest.len() >= *size {
            let (these, after) = rest.split_at(*size);
            let values: Vec<&dyn rusqlite::ToSql> = these.iter().flat_map(|a| a.params()).collect();
            insert.execute(values.as_slice()).map_err(sql)?;
            rest = after;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::{EmailAddress, Subject, TenantSlug};

    /// A store with tenants `aa` and `bb` (created in that order), one message each.
    async fn two_tenants_with_mail() -> (tempfile::TempDir, SqliteStore, [TenantId; 2]) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("herald.db")).unwrap();
        let mut tenants = Vec::new();
        for slug in ["aa", "bb"] {
            let tenant = store
                .create_tenant(TenantSlug::parse(slug).unwrap(), slug.into())
                .await
                .unwrap();
            let to = EmailAddress::parse(&format!("u@{slug}.example")).unwrap();
            let message = NewMessage::plain(
                tenant.id,
                vec![to.into()],
                Subject::parse("s").unwrap(),
                "x",
                1,
            );
            store.submit(message).await.unwrap();
            tenants.push(tenant.id);
        }
        (dir, store, [tenants[0], tenants[1]])
    }

    fn one_recipient(now: i64) -> ClaimRequest {
        ClaimRequest {
            node: "n".into(),
            incarnation: "n-1".into(),
            now,
            lease_ms: 60_000,
            limit: 1,
            rooms: HashMap::new(),
            default_room: u32::MAX,
        }
    }

    /// A claim that runs again, because a job beside it in its transaction
    /// failed having written, walks the tenants from where it first started:
    /// the tenants are served in the same turn as by claims never run twice.
    #[tokio::test]
    async fn a_claim_run_again_serves_the_tenants_in_the_same_turn() {
        let now = now_ms();
        // Which tenant (0: aa, 1: bb) each of two claims serves.
        let position =
            |tenants: &[TenantId; 2], t: TenantId| tenants.iter().position(|x| *x == t).unwrap();
        // The turn of claims never run twice.
        let (_dir, store, tenants) = two_tenants_with_mail().await;
        let mut undisturbed = Vec::new();
        for _ in 0..2 {
            let claimed = store.claim(one_recipient(now)).await.unwrap();
            undisturbed.push(position(&tenants, claimed[0].tenant));
        }
        assert_ne!(undisturbed[0], undisturbed[1], "one tenant, then the other");

        // The same, with the first claim run twice.
        let (_dir, store, tenants) = two_tenants_with_mail().await;
        store
            .db
            .write(|c| {
                c.execute_batch("CREATE TABLE scratch (v INTEGER)")
                    .map_err(sql)
            })
            .await
            .unwrap();
        // The writer is held until both jobs are queued, so that they open
        // the next transaction together.
        let (started, is_started) = std::sync::mpsc::channel();
        let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
        let hold = store.db.write(move |_| {
            started.send(()).unwrap();
            wait_for_go.recv().unwrap();
            Ok(())
        });
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failing = {
            let runs = runs.clone();
            move |c: &Connection| -> Result<()> {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                c.execute_batch("INSERT INTO scratch VALUES (1)")
                    .map_err(sql)?;
                Err(StoreError::Conflict("refused after writing".into()))
            }
        };
        let queued = async {
            tokio::task::spawn_blocking(move || is_started.recv())
                .await
                .unwrap()
                .unwrap();
            tokio::join!(
                store.claim(one_recipient(now)),
                store.db.write_repeatable(failing),
                async { go.send(()).unwrap() },
            )
        };
        let (held, (claimed, failed, ())) = tokio::join!(hold, queued);
        held.unwrap();
        assert!(failed.is_err());
        assert_eq!(
            runs.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "the failing job ran beside the claim, then alone"
        );
        let claimed = claimed.unwrap();
        assert_eq!(claimed.len(), 1);
        let second = store.claim(one_recipient(now)).await.unwrap();
        let disturbed = vec![
            position(&tenants, claimed[0].tenant),
            position(&tenants, second[0].tenant),
        ];
        assert_eq!(
            disturbed, undisturbed,
            "the tenants' turn is the undisturbed one"
        );
    }
}
