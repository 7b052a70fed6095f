//! The PostgreSQL store's tenants and access: tenants and their properties, API tokens, persons, the audit log.

use std::time::Instant;

use super::*;

#[async_trait]
impl Tenants for PgStore {
    async fn create_tenant(&self, slug: TenantSlug, name: String) -> Result<Tenant> {
        let c = client(&self.pool).await?;
        write_found(
            &c,
            sql::INSERT_TENANT,
            &[
                &TenantId::new().to_string(),
                &slug.as_ref(),
                &name,
                &now_ms(),
            ],
            "a tenant with this slug exists",
            tenant,
        )
        .await
    }

    async fn tenant_by_slug(&self, slug: &str) -> Result<Tenant> {
        let c = client(&self.pool).await?;
        query_found(&c, sql::TENANT_BY_SLUG, &[&slug], tenant).await
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let c = client(&self.pool).await?;
        // Ties in time are broken by id, which is time-ordered too: creation order.
        query(&c, sql::TENANTS, &[])
            .await?
            .iter()
            .map(tenant)
            .collect()
    }

    async fn set_entitlements(
        &self,
        tenant_id: TenantId,
        credential_storage: bool,
    ) -> Result<Tenant> {
        self.access_write(async {
            let c = client(&self.pool).await?;
            let row = query_opt(
                &c,
                sql::SET_CREDENTIAL_STORAGE,
                &[&credential_storage, &tenant_id.to_string()],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
            tenant(&row)
        })
        .await
    }

    async fn set_active_provider(
        &self,
        tenant_id: TenantId,
        provider_id: Option<ProviderId>,
        effective_from: i64,
    ) -> Result<Tenant> {
        self.access_write(async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            // The tenant's row is the lock delete_provider takes too: a provider
            // cannot be deleted between the check below and its activation.
            let before: Option<String> = query_opt(
                &tx,
                "SELECT notification_provider_id FROM tenants WHERE id = $1 FOR UPDATE",
                &[&tenant_id.to_string()],
            )
            .await?
            .map(|row| row.try_get(0).map_err(pg))
            .transpose()?
            .flatten();
            if let Some(pid) = provider_id {
                rules::active_provider(load_provider(&tx, tenant_id, pid, Lock::None).await)?;
            }
            // What applies until this change is in effect: the provider in
            // effect now, which is the previous one while a change is pending.
            let row = query_opt(
                &tx,
                sql::SET_ACTIVE_PROVIDER,
                &[
                    &now_ms(),
                    &provider_id.map(|p| p.to_string()),
                    &effective_from,
                    &tenant_id.to_string(),
                ],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
            let tenant = tenant(&row)?;
            // Pinned mail waits for the change to be in effect everywhere.
            if before != provider_id.map(|p| p.to_string()) {
                super::config::unpin_waiting(&tx, tenant_id, effective_from).await?;
            }
            tx.commit().await.map_err(pg)?;
            Ok(tenant)
        })
        .await
    }

    async fn refresh_properties(&self, tenant_id: TenantId, now: i64) -> Result<Tenant> {
        self.access_write(async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            execute(&tx, sql::DUE_AT_REFRESH, &[&now, &tenant_id.to_string()])
                .await
                .map_err(pg)?;
            // The notification goes out with the update: every node forgets its cached provider.
            let row = query_opt(
                &tx,
                &format!(
                    "WITH notified AS (SELECT pg_notify('{}', $2)) \
                     UPDATE tenants SET properties_effective_from = LEAST(properties_effective_from, $1) \
                     WHERE id = $2 AND EXISTS (SELECT 1 FROM notified) RETURNING {TENANT_COLUMNS}",
                    listen::PROPERTIES
                ),
                &[&now, &tenant_id.to_string()],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
            let tenant = tenant(&row)?;
            tx.commit().await.map_err(pg)?;
            Ok(tenant)
        })
        .await
    }

    async fn create_token(&self, token: NewToken) -> Result<TokenRecord> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        if let (Some(tenant_id), Some(person_id)) = (token.tenant_id, token.person_id) {
            load_person(&tx, tenant_id, person_id, Lock::KeyShare).await?;
        }
        let record = write_found(
            &tx,
            sql::INSERT_TOKEN,
            &[
                &token.id.to_string(),
                &token.tenant_id.map(|t| t.to_string()),
                &token.name,
                &token.role.as_str(),
                &token.person_id.map(|p| p.to_string()),
                &token.hash,
                &now_ms(),
            ],
            "this token exists already",
            token_record,
        )
        .await?;
        tx.commit().await.map_err(pg)?;
        Ok(record)
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let c = client(&self.pool).await?;
        let Some(row) = query_opt(&c, sql::TOKEN_BY_HASH, &[&hash]).await? else {
            return Ok(None);
        };
        let record = token_record(&row)?;
        mark_used(&c, &record).await?;
        Ok(Some(record))
    }

    async fn token_and_tenant(
        &self,
        hash: &str,
        slug: &str,
    ) -> Result<Option<(TokenRecord, Option<Tenant>)>> {
        let now = Instant::now();
        if let Some((record, tenant)) = self.access.get(hash, slug, now) {
            return Ok(Some((record, Some(tenant))));
        }
        let generation = self.access.generation();
        let c = client(&self.pool).await?;
        // Both sent before either answer is read: one round trip.
        let (by_hash, by_slug): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) =
            ([&hash], [&slug]);
        let (token, tenant_row) = tokio::join!(
            query_opt(&c, sql::TOKEN_BY_HASH, &by_hash),
            query_opt(&c, sql::TENANT_BY_SLUG, &by_slug),
        );
        let Some(row) = token? else {
            return Ok(None);
        };
        let record = token_record(&row)?;
        let tenant = tenant_row?.as_ref().map(tenant).transpose()?;
        let marked = mark_used(&c, &record).await?;
        let found = (&record, tenant.as_ref());
        self.access
            .keep_found(generation, hash, slug, found, marked, now);
        Ok(Some((record, tenant)))
    }

    async fn list_tokens(&self, tenant_id: TenantId) -> Result<Vec<TokenRecord>> {
        let c = client(&self.pool).await?;
        query(&c, sql::TOKENS, &[&tenant_id.to_string()])
            .await?
            .iter()
            .map(token_record)
            .collect()
    }

    async fn revoke_token(&self, tenant_id: TenantId, token_id: TokenId) -> Result<()> {
        self.access_write(async {
            let c = client(&self.pool).await?;
            let deleted = execute(
                &c,
                sql::DELETE_TOKEN,
                &[&token_id.to_string(), &tenant_id.to_string()],
            )
            .await
            .map_err(pg)?;
            if deleted == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn operator_token_exists(&self) -> Result<bool> {
        let c = client(&self.pool).await?;
        let row = query(&c, sql::OPERATOR_TOKEN_EXISTS, &[]).await?;
        get(&row[0], "found")
    }

    async fn list_operator_tokens(&self) -> Result<Vec<TokenRecord>> {
        let c = client(&self.pool).await?;
        query(&c, sql::OPERATOR_TOKENS, &[])
            .await?
            .iter()
            .map(token_record)
            .collect()
    }

    async fn revoke_operator_token(&self, token_id: TokenId) -> Result<()> {
        self.access_write(async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            let id = token_id.to_string();
            let revoked = execute(&tx, sql::REVOKE_BOOTSTRAP_TOKEN, &[&now_ms(), &id])
                .await
                .map_err(pg)?;
            let deleted = execute(&tx, sql::DELETE_OPERATOR_TOKEN, &[&id])
                .await
                .map_err(pg)?;
            if revoked + deleted == 0 {
                return Err(StoreError::NotFound);
            }
            tx.commit().await.map_err(pg)
        })
        .await
    }

    async fn set_bootstrap_token(&self, token: NewToken) -> Result<BootstrapOutcome> {
        self.access_write(async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            // Nodes that start together with different values must not each keep
            // their own: one after the other, the last one wins.
            tx.execute("LOCK TABLE tokens IN SHARE ROW EXCLUSIVE MODE", &[])
                .await
                .map_err(pg)?;
            let now = now_ms();
            let stored = query_opt(&tx, sql::TOKEN_REVOKED_AT, &[&token.hash]).await?;
            // `None` when the value was revoked before: it stays revoked.
            let created = match stored {
                Some(row) if get::<Option<i64>>(&row, "revoked_at")?.is_some() => None,
                Some(_) => {
                    execute(&tx, sql::MARK_BOOTSTRAP, &[&token.hash])
                        .await
                        .map_err(pg)?;
                    Some(false)
                }
                None => {
                    execute(
                        &tx,
                        sql::INSERT_BOOTSTRAP_TOKEN,
                        &[&token.id.to_string(), &token.name, &token.hash, &now],
                    )
                    .await
                    .map_err(pg)?;
                    Some(true)
                }
            };
            // Any other bootstrap token is no longer the configured one, even
            // when the configured value is itself revoked.
            let replaced = execute(
                &tx,
                sql::REVOKE_OTHER_BOOTSTRAP_TOKENS,
                &[&now, &token.hash],
            )
            .await
            .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(match created {
                Some(created) => BootstrapOutcome::Installed { created, replaced },
                None => BootstrapOutcome::Revoked { replaced },
            })
        })
        .await
    }

    async fn create_person(&self, tenant_id: TenantId, p: Person) -> Result<Person> {
        let c = client(&self.pool).await?;
        write_found(
            &c,
            sql::INSERT_PERSON,
            &[
                &p.id.to_string(),
                &tenant_id.to_string(),
                &p.name,
                &p.email.as_ref(),
                &p.role.as_str(),
                &p.created_at,
            ],
            "a person with this e-mail address exists",
            person,
        )
        .await
    }

    async fn person(&self, tenant_id: TenantId, person_id: PersonId) -> Result<Person> {
        let c = client(&self.pool).await?;
        load_person(&c, tenant_id, person_id, Lock::None).await
    }

    async fn list_persons(&self, tenant_id: TenantId) -> Result<Vec<Person>> {
        let c = client(&self.pool).await?;
        // SQLite walks its (tenant_id, email) index and sorts stably, so ties in
        // time come by e-mail address there; the same order is asked for here.
        query(&c, sql::PERSONS, &[&tenant_id.to_string()])
            .await?
            .iter()
            .map(person)
            .collect()
    }

    async fn person_by_email(
        &self,
        tenant_id: TenantId,
        email: &EmailAddress,
    ) -> Result<Option<Person>> {
        let c = client(&self.pool).await?;
        let found = query(
            &c,
            sql::PERSONS_BY_EMAIL,
            &[&tenant_id.to_string(), &email.as_ref()],
        )
        .await?
        .iter()
        .map(person)
        .collect::<Result<Vec<_>>>()?;
        Ok(rules::same_address_first(found, email))
    }

    async fn delete_person(&self, tenant_id: TenantId, person_id: PersonId) -> Result<()> {
        self.access_write(async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            // Locked so that no account is bound to the person between the check and the delete.
            load_person(&tx, tenant_id, person_id, Lock::Update).await?;
            let bound = query_opt(
                &tx,
                sql::ACCOUNT_OF_PERSON,
                &[&person_id.to_string(), &tenant_id.to_string()],
            )
            .await?;
            rules::person_unbound(bound.map(|row| get(&row, "username")).transpose()?)?;
            execute(
                &tx,
                sql::DELETE_PERSON,
                &[&person_id.to_string(), &tenant_id.to_string()],
            )
            .await
            .map_err(pg)?;
            tx.commit().await.map_err(pg)
        })
        .await
    }

    async fn audit(&self, entry: AuditEntry) -> Result<()> {
        let c = client(&self.pool).await?;
        execute(
            &c,
            sql::INSERT_AUDIT,
            &[
                &entry.tenant_id.map(|t| t.to_string()),
                &entry.at,
                &entry.actor,
                &entry.token_id.map(|t| t.to_string()),
                &entry.remote_addr,
                &entry.action,
                &entry.object_id,
                &entry.details.to_string(),
            ],
        )
        .await
        .map_err(pg)
        .map(drop)
    }

    async fn list_audit(&self, tenant_id: TenantId, limit: u32) -> Result<Vec<AuditEntry>> {
        let c = client(&self.pool).await?;
        query(&c, sql::AUDIT, &[&tenant_id.to_string(), &i64::from(limit)])
            .await?
            .iter()
            .map(|r| {
                let details: String = get(r, "details")?;
                Ok(AuditEntry {
                    tenant_id: opt_id(get(r, "tenant_id")?)?,
                    at: get(r, "at")?,
                    actor: get(r, "actor")?,
                    token_id: opt_id(get(r, "token_id")?)?,
                    remote_addr: get(r, "remote_addr")?,
                    action: get(r, "action")?,
                    object_id: get(r, "object_id")?,
                    details: stored("audit details", serde_json::from_str(&details))?,
                })
            })
            .collect()
    }
}

/// Records that `record` was used. Recording every use would put a write on
/// every request; a minute's precision is enough.
async fn mark_used(c: &impl GenericClient, record: &TokenRecord) -> Result<Option<i64>> {
    let now = now_ms();
    if record.last_used_at.is_some_and(|t| now - t <= 60_000) {
        return Ok(None);
    }
    execute(c, sql::TOKEN_USED, &[&now, &record.id.to_string()])
        .await
        .map_err(pg)?;
    Ok(Some(now))
}
