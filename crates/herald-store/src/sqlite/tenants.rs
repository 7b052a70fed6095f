//! The SQLite store's tenants and access: tenants and their properties, API tokens, persons, the audit log.

use super::*;

#[async_trait]
impl Tenants for SqliteStore {
    async fn create_tenant(&self, slug: TenantSlug, name: String) -> Result<Tenant> {
        self.db
            .write(move |c| {
                c.query_row(
                    sql::INSERT_TENANT,
                    params![TenantId::new().to_string(), slug.as_ref(), name, now_ms()],
                    tenant_row,
                )
                .map_err(unique("a tenant with this slug exists"))?
            })
            .await
    }

    async fn tenant_by_slug(&self, slug: &str) -> Result<Tenant> {
        self.db
            .read_here(|c| tenant_by_slug(c, slug))?
            .ok_or(StoreError::NotFound)
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.db
            .read(|c| list(c, sql::TENANTS, [], tenant_row)?.into_iter().collect())
            .await
    }

    async fn set_entitlements(
        &self,
        tenant_id: TenantId,
        credential_storage: bool,
    ) -> Result<Tenant> {
        self.db
            .write(move |c| {
                c.query_row(
                    sql::SET_CREDENTIAL_STORAGE,
                    params![credential_storage, tenant_id.to_string()],
                    tenant_row,
                )
                .optional()
                .map_err(sql)?
                .ok_or(StoreError::NotFound)?
            })
            .await
    }

    async fn set_active_provider(
        &self,
        tenant_id: TenantId,
        provider_id: Option<ProviderId>,
        effective_from: i64,
    ) -> Result<Tenant> {
        self.db
            .write(move |c| {
                if let Some(pid) = provider_id {
                    rules::active_provider(load_provider(c, tenant_id, pid))?;
                }
                let before = load_tenant(c, tenant_id)?.notification_provider_id;
                let tenant = c
                    .query_row(
                        sql::SET_ACTIVE_PROVIDER,
                        params![
                            now_ms(),
                            provider_id.map(|p| p.to_string()),
                            effective_from,
                            tenant_id.to_string()
                        ],
                        tenant_row,
                    )
                    .optional()
                    .map_err(sql)?
                    .ok_or(StoreError::NotFound)??;
                // Pinned mail waits for the change to be in effect everywhere.
                if before != provider_id {
                    super::config::unpin_waiting(c, tenant_id, effective_from)?;
                }
                Ok(tenant)
            })
            .await
    }

    async fn refresh_properties(&self, tenant_id: TenantId, now: i64) -> Result<Tenant> {
        self.db
            .write(move |c| {
                c.execute(sql::DUE_AT_REFRESH, params![now, tenant_id.to_string()])
                    .map_err(sql)?;
                c.execute(
                    "UPDATE tenants SET properties_effective_from = MIN(properties_effective_from, ?1) WHERE id = ?2",
                    params![now, tenant_id.to_string()],
                )
                .map_err(sql)?;
                load_tenant(c, tenant_id)
            })
            .await
    }

    async fn create_token(&self, token: NewToken) -> Result<TokenRecord> {
        self.db
            .write(move |c| {
                if let (Some(tenant_id), Some(person_id)) = (token.tenant_id, token.person_id) {
                    load_person(c, tenant_id, person_id)?;
                }
                c.query_row(
                    sql::INSERT_TOKEN,
                    params![
                        token.id.to_string(),
                        token.tenant_id.map(|t| t.to_string()),
                        token.name,
                        token.role.as_str(),
                        token.person_id.map(|p| p.to_string()),
                        token.hash,
                        now_ms()
                    ],
                    token_row,
                )
                .map_err(unique("this token exists already"))?
            })
            .await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let found = self.db.read_here(|c| token_by_hash(c, hash))?;
        let Some(record) = found else {
            return Ok(None);
        };
        self.mark_used(&record).await?;
        Ok(Some(record))
    }

    async fn token_and_tenant(
        &self,
        hash: &str,
        slug: &str,
    ) -> Result<Option<(TokenRecord, Option<Tenant>)>> {
        // One reader, one read after the other: each finds the pages the
        // one before read in (a reader's cache starts over whenever the
        // database has changed, which under load is before every request).
        // The count of access changes first: what is kept is never older
        // than the count it is kept under.
        let now = Instant::now();
        let looked_up = self.db.read_here(|c| {
            let count = c
                .prepare_cached(sql::ACCESS_CHANGES)
                .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
                .map_err(sql)?;
            self.access.observe(count);
            if let Some(kept) = self.access.get(hash, slug, now) {
                return Ok(Some(Lookup::Kept(kept)));
            }
            let generation = self.access.generation();
            let Some(record) = token_by_hash(c, hash)? else {
                return Ok(None);
            };
            let tenant = tenant_by_slug(c, slug)?;
            Ok(Some(Lookup::Read(record, tenant, generation)))
        })?;
        let (record, tenant, generation) = match looked_up {
            None => return Ok(None),
            // Marked used when it was read.
            Some(Lookup::Kept((record, tenant))) => return Ok(Some((record, Some(tenant)))),
            Some(Lookup::Read(record, tenant, generation)) => (record, tenant, generation),
        };
        let marked = self.mark_used(&record).await?;
        let found = (&record, tenant.as_ref());
        self.access
            .keep_found(generation, hash, slug, found, marked, now);
        Ok(Some((record, tenant)))
    }

    async fn list_tokens(&self, tenant_id: TenantId) -> Result<Vec<TokenRecord>> {
        self.db
            .read(move |c| {
                list(c, sql::TOKENS, [tenant_id.to_string()], token_row)?
                    .into_iter()
                    .collect()
            })
            .await
    }

    async fn revoke_token(&self, tenant_id: TenantId, token_id: TokenId) -> Result<()> {
        self.db
            .write(move |c| {
                let deleted = c
                    .execute(
                        sql::DELETE_TOKEN,
                        [token_id.to_string(), tenant_id.to_string()],
                    )
                    .map_err(sql)?;
                if deleted == 0 {
                    Err(StoreError::NotFound)
                } else {
                    Ok(())
                }
            })
            .await
    }

    async fn create_person(&self, tenant_id: TenantId, person: Person) -> Result<Person> {
        self.db
            .write(move |c| {
                c.query_row(
                    sql::INSERT_PERSON,
                    params![
                        person.id.to_string(),
                        tenant_id.to_string(),
                        person.name,
                        person.email.as_ref(),
                        person.role.as_str(),
                        person.created_at
                    ],
                    person_row,
                )
                .map_err(unique("a person with this e-mail address exists"))?
            })
            .await
    }

    async fn person(&self, tenant_id: TenantId, person_id: PersonId) -> Result<Person> {
        self.db
            .read(move |c| load_person(c, tenant_id, person_id))
            .await
    }

    async fn list_persons(&self, tenant_id: TenantId) -> Result<Vec<Person>> {
        self.db
            .read(move |c| {
                list(c, sql::PERSONS, [tenant_id.to_string()], person_row)?
                    .into_iter()
                    .collect()
            })
            .await
    }

    async fn person_by_email(
        &self,
        tenant_id: TenantId,
        email: &EmailAddress,
    ) -> Result<Option<Person>> {
        let found = self.db.read_here(|c| {
            let mut statement = c.prepare_cached(sql::PERSONS_BY_EMAIL).map_err(sql)?;
            let rows = statement
                .query_map([tenant_id.to_string(), email.to_string()], person_row)
                .map_err(sql)?;
            rows.map(|r| r.map_err(sql)?).collect::<Result<Vec<_>>>()
        })?;
        Ok(rules::same_address_first(found, email))
    }

    async fn delete_person(&self, tenant_id: TenantId, person_id: PersonId) -> Result<()> {
        self.db
            .write(move |c| {
                load_person(c, tenant_id, person_id)?;
                let bound: Option<String> = c
                    .query_row(
                        sql::ACCOUNT_OF_PERSON,
                        [person_id.to_string(), tenant_id.to_string()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                rules::person_unbound(bound)?;
                c.execute(
                    sql::DELETE_PERSON,
                    [person_id.to_string(), tenant_id.to_string()],
                )
                .map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn audit(&self, entry: AuditEntry) -> Result<()> {
        self.db
            .write(move |c| {
                c.execute(
                    sql::INSERT_AUDIT,
                    params![
                        entry.tenant_id.map(|t| t.to_string()),
                        entry.at,
                        entry.actor,
                        entry.token_id.map(|t| t.to_string()),
                        entry.remote_addr,
                        entry.action,
                        entry.object_id,
                        entry.details.to_string()
                    ],
                )
                .map_err(sql)
                .map(drop)
            })
            .await
    }

    async fn list_audit(&self, tenant_id: TenantId, limit: u32) -> Result<Vec<AuditEntry>> {
        self.db
            .read(move |c| {
                let rows = list(c, sql::AUDIT, params![tenant_id.to_string(), limit], |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, String>(7)?,
                    ))
                })?;
                rows.into_iter()
                    .map(
                        |(tid, at, actor, token_id, remote_addr, action, object_id, details)| {
                            Ok(AuditEntry {
                                tenant_id: opt_id(tid)?,
                                at,
                                actor,
                                token_id: opt_id(token_id)?,
                                remote_addr,
                                action,
                                object_id,
                                details: stored("audit details", serde_json::from_str(&details))?,
                            })
                        },
                    )
                    .collect()
            })
            .await
    }

    async fn operator_token_exists(&self) -> Result<bool> {
        self.db
            .read(|c| {
                c.query_row(sql::OPERATOR_TOKEN_EXISTS, [], |r| r.get(0))
                    .map_err(sql)
            })
            .await
    }

    async fn list_operator_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.db
            .read(move |c| {
                list(c, sql::OPERATOR_TOKENS, [], token_row)?
                    .into_iter()
                    .collect()
            })
            .await
    }

    async fn revoke_operator_token(&self, token_id: TokenId) -> Result<()> {
        self.db
            .write(move |c| {
                let id = token_id.to_string();
                let revoked = c
                    .execute(sql::REVOKE_BOOTSTRAP_TOKEN, params![now_ms(), id])
                    .map_err(sql)?;
                let deleted = c.execute(sql::DELETE_OPERATOR_TOKEN, [&id]).map_err(sql)?;
                if revoked + deleted == 0 {
                    Err(StoreError::NotFound)
                } else {
                    Ok(())
                }
            })
            .await
    }

    async fn set_bootstrap_token(&self, token: NewToken) -> Result<BootstrapOutcome> {
        self.db
            .write(move |c| {
                let now = now_ms();
                let stored: Option<Option<i64>> = c
                    .query_row(sql::TOKEN_REVOKED_AT, [&token.hash], |r| r.get(0))
                    .optional()
                    .map_err(sql)?;
                // `None` when the value was revoked before: it stays revoked.
                let created = match stored {
                    Some(Some(_)) => None,
                    Some(None) => {
                        c.execute(sql::MARK_BOOTSTRAP, [&token.hash]).map_err(sql)?;
                        Some(false)
                    }
                    None => {
                        c.execute(
                            sql::INSERT_BOOTSTRAP_TOKEN,
                            params![token.id.to_string(), token.name, token.hash, now],
                        )
                        .map_err(sql)?;
                        Some(true)
                    }
                };
                // Any other bootstrap token is no longer the configured one,
                // even when the configured value is itself revoked.
                let replaced = c
                    .execute(sql::REVOKE_OTHER_BOOTSTRAP_TOKENS, params![now, token.hash])
                    .map_err(sql)? as u64;
                Ok(match created {
                    Some(created) => BootstrapOutcome::Installed { created, replaced },
                    None => BootstrapOutcome::Revoked { replaced },
                })
            })
            .await
    }
}

/// The tenant with this slug, if any.
fn tenant_by_slug(c: &Connection, slug: &str) -> Result<Option<Tenant>> {
    maybe_one(c, sql::TENANT_BY_SLUG, [slug], tenant_row)
}

/// The token stored under `hash`, unless revoked.
fn token_by_hash(c: &Connection, hash: &str) -> Result<Option<TokenRecord>> {
    maybe_one(c, sql::TOKEN_BY_HASH, [hash], token_row)
}

impl SqliteStore {
    /// Records that `record` was used, and answers when, if it wrote it.
    /// Recording every use would put a write on every request; a minute's
    /// precision is enough.
    async fn mark_used(&self, record: &TokenRecord) -> Result<Option<i64>> {
        let now = now_ms();
        if record.last_used_at.is_some_and(|t| now - t <= 60_000) {
            return Ok(None);
        }
        let token_id = record.id.to_string();
        self.db
            .write(move |c| {
                c.execute(sql::TOKEN_USED, params![now, token_id])
                    .map_err(sql)
                    .map(drop)
            })
            .await?;
        Ok(Some(now))
    }
}

/// What a token's lookup found: kept from an earlier one, or read now (with
/// the cache's generation when it may be kept).
enum Lookup {
    Kept((TokenRecord, Tenant)),
    Read(TokenRecord, Option<Tenant>, Option<u64>),
}
