//! The SQLite store's configuration: SMTP servers, their accounts, notification providers, the sealed secrets.

use super::*;

/// A server's gateway, when it names one, must be one of the tenant's.
fn check_gateway(c: &Connection, tenant: TenantId, s: &ServerSettings) -> Result<()> {
    match s.gateway_id {
        Some(gateway) => rules::server_gateway(super::gateways::load_gateway(c, tenant, gateway)),
        None => Ok(()),
    }
}

#[async_trait]
impl Configuration for SqliteStore {
    async fn reseal_secrets(&self, reseal: crate::Resealer) -> Result<usize> {
        let count = self
            .db
            .write(move |c| {
                let sealed = list(c, sql::SEALED_SECRETS, [], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?;
                for (account_id, value) in &sealed {
                    let resealed = reseal(value, account_id).map_err(|e| {
                        StoreError::Corrupt(format!("the secret of account {account_id}: {e}"))
                    })?;
                    c.execute(sql::RESEAL_ACCOUNT, [resealed, account_id.clone()])
                        .map_err(sql)?;
                }
                let webhooks = list(c, sql::SEALED_WEBHOOK_SECRETS, [], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                })?;
                let context = |id: &str| herald_core::webhook::seal_context(id);
                for (webhook_id, current, previous) in &webhooks {
                    let reseal_one = |value: &str| {
                        reseal(value, &context(webhook_id)).map_err(|e| {
                            StoreError::Corrupt(format!("the secret of webhook {webhook_id}: {e}"))
                        })
                    };
                    let current = reseal_one(current)?;
                    let previous = previous.as_deref().map(reseal_one).transpose()?;
                    c.execute(sql::RESEAL_WEBHOOK, params![current, previous, webhook_id])
                        .map_err(sql)?;
                }
                Ok(sealed.len() + webhooks.len())
            })
            .await?;
        // The old ciphertexts must not stay behind in the log.
        self.db.checkpoint().await?;
        Ok(count)
    }

    async fn create_server(&self, tenant_id: TenantId, s: ServerSettings) -> Result<SmtpServer> {
        self.db
            .write(move |c| {
                check_gateway(c, tenant_id, &s)?;
                let values = sql::server_values(tenant_id, ServerId::new(), &s, now_ms());
                c.query_row(
                    sql::INSERT_SERVER,
                    rusqlite::params_from_iter(&values),
                    server_row,
                )
                .map_err(unique("an SMTP server with this name exists"))?
            })
            .await
    }

    async fn server(&self, tenant_id: TenantId, server_id: ServerId) -> Result<SmtpServer> {
        self.db
            .read(move |c| load_server(c, tenant_id, server_id))
            .await
    }

    async fn list_servers(&self, tenant_id: TenantId) -> Result<Vec<SmtpServer>> {
        self.db
            .read(move |c| list_parsed(c, sql::SERVERS, [tenant_id.to_string()], server_row))
            .await
    }

    async fn update_server(
        &self,
        tenant_id: TenantId,
        server_id: ServerId,
        s: ServerSettings,
    ) -> Result<SmtpServer> {
        self.db
            .write(move |c| {
                let old = load_server(c, tenant_id, server_id)?.settings;
                check_gateway(c, tenant_id, &s)?;
                let values = sql::server_values(tenant_id, server_id, &s, now_ms());
                let updated = c
                    .query_row(
                        sql::UPDATE_SERVER,
                        rusqlite::params_from_iter(&values),
                        server_row,
                    )
                    .map_err(unique("an SMTP server with this name exists"))??;
                // A stored password must never follow the server entry to a new
                // destination or to weaker trust (the rule is `change_clears_secrets`).
                if old.change_clears_secrets(&s) {
                    c.execute(
                        sql::CLEAR_SERVER_SECRETS,
                        [server_id.to_string(), tenant_id.to_string()],
                    )
                    .map_err(sql)?;
                }
                if old.gateway_id != s.gateway_id {
                    unpin_waiting(c, tenant_id, now_ms())?;
                }
                Ok(updated)
            })
            .await
    }

    async fn delete_server(&self, tenant_id: TenantId, server_id: ServerId) -> Result<()> {
        self.db
            .write(move |c| {
                load_server(c, tenant_id, server_id)?;
                let user: Option<String> = c
                    .query_row(
                        sql::PROVIDER_OF_SERVER,
                        [server_id.to_string(), tenant_id.to_string()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                rules::server_unused(user)?;
                c.execute(
                    sql::DELETE_SERVER,
                    [server_id.to_string(), tenant_id.to_string()],
                )
                .map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn create_account(&self, tenant_id: TenantId, a: NewAccount) -> Result<SmtpAccount> {
        self.db
            .write(move |c| {
                load_server(c, tenant_id, a.server_id)?;
                if let Some(person_id) = a.person_id {
                    if matches!(
                        load_person(c, tenant_id, person_id),
                        Err(StoreError::NotFound)
                    ) {
                        return Err(StoreError::Invalid(
                            Invalid::new("must name a person of this tenant").at("person_id"),
                        ));
                    }
                }
                c.query_row(
                    sql::INSERT_ACCOUNT,
                    params![
                        a.id.to_string(),
                        tenant_id.to_string(),
                        a.server_id.to_string(),
                        a.username,
                        a.mechanism.as_str(),
                        a.sealed_secret,
                        a.oauth2.as_ref().map(|o| o.token_url.as_str()),
                        a.oauth2.as_ref().map(|o| o.client_id.as_str()),
                        a.oauth2.as_ref().and_then(|o| o.scope.as_deref()),
                        a.person_id.map(|p| p.to_string()),
                        now_ms()
                    ],
                    account_row,
                )
                .map_err(unique("an account with this username exists on the server"))?
            })
            .await
    }

    async fn account(
        &self,
        tenant_id: TenantId,
        server_id: ServerId,
        account_id: AccountId,
    ) -> Result<SmtpAccount> {
        self.db
            .read(move |c| load_account(c, tenant_id, server_id, account_id))
            .await
    }

    async fn list_accounts(
        &self,
        tenant_id: TenantId,
        server_id: ServerId,
    ) -> Result<Vec<SmtpAccount>> {
        self.db
            .read(move |c| {
                load_server(c, tenant_id, server_id)?;
                list_parsed(
                    c,
                    sql::ACCOUNTS,
                    [server_id.to_string(), tenant_id.to_string()],
                    account_row,
                )
            })
            .await
    }

    async fn delete_account(
        &self,
        tenant_id: TenantId,
        server_id: ServerId,
        account_id: AccountId,
    ) -> Result<()> {
        self.db
            .write(move |c| {
                load_account(c, tenant_id, server_id, account_id)?;
                let user: Option<String> = c
                    .query_row(
                        sql::PROVIDER_OF_ACCOUNT,
                        [account_id.to_string(), tenant_id.to_string()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                rules::account_unused(user)?;
                c.execute(
                    sql::DELETE_ACCOUNT,
                    [account_id.to_string(), tenant_id.to_string()],
                )
                .map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn create_provider(&self, tenant_id: TenantId, s: ProviderSettings) -> Result<Provider> {
        self.db
            .write(move |c| {
                check_provider_references(c, tenant_id, &s)?;
                let values = sql::provider_values(tenant_id, ProviderId::new(), &s, now_ms());
                c.query_row(
                    sql::INSERT_PROVIDER,
                    rusqlite::params_from_iter(&values),
                    provider_row,
                )
                .map_err(unique("a provider with this name exists"))?
            })
            .await
    }

    async fn provider(&self, tenant_id: TenantId, provider_id: ProviderId) -> Result<Provider> {
        self.db
            .read(move |c| load_provider(c, tenant_id, provider_id))
            .await
    }

    async fn list_providers(&self, tenant_id: TenantId) -> Result<Vec<Provider>> {
        self.db
            .read(move |c| list_parsed(c, sql::PROVIDERS, [tenant_id.to_string()], provider_row))
            .await
    }

    async fn update_provider(
        &self,
        tenant_id: TenantId,
        provider_id: ProviderId,
        s: ProviderSettings,
    ) -> Result<Provider> {
        self.db
            .write(move |c| {
                let old = load_provider(c, tenant_id, provider_id)?.settings;
                check_provider_references(c, tenant_id, &s)?;
                let values = sql::provider_values(tenant_id, provider_id, &s, now_ms());
                let updated = c
                    .query_row(
                        sql::UPDATE_PROVIDER,
                        rusqlite::params_from_iter(&values),
                        provider_row,
                    )
                    .map_err(unique("a provider with this name exists"))??;
                if old.smtp_server_id != s.smtp_server_id {
                    unpin_waiting(c, tenant_id, now_ms())?;
                }
                Ok(updated)
            })
            .await
    }

    async fn delete_provider(&self, tenant_id: TenantId, provider_id: ProviderId) -> Result<()> {
        self.db
            .write(move |c| {
                load_provider(c, tenant_id, provider_id)?;
                rules::provider_not_active(&load_tenant(c, tenant_id)?, provider_id)?;
                c.execute(
                    sql::DELETE_PROVIDER,
                    [provider_id.to_string(), tenant_id.to_string()],
                )
                .map_err(sql)?;
                Ok(())
            })
            .await
    }
}

/// A provider of the tenant with its server and account, read on one connection.
pub(super) fn provider_config(
    c: &Connection,
    tenant: TenantId,
    provider: ProviderId,
) -> Result<ProviderConfig> {
    let provider = load_provider(c, tenant, provider)?;
    let server = load_server(c, tenant, provider.settings.smtp_server_id)?;
    let account = provider
        .settings
        .account_id
        .map(|a| load_account(c, tenant, server.id, a))
        .transpose()?;
    Ok(ProviderConfig {
        provider,
        server,
        account,
    })
}

/// Gives the tenant's waiting pinned mail back to the nodes, due no earlier
/// than `from` (see `sql::UNPIN_TENANT_WAITING`).
pub(super) fn unpin_waiting(c: &Connection, tenant: TenantId, from: i64) -> Result<()> {
    c.prepare_cached(sql::UNPIN_TENANT_WAITING)
        .map_err(sql)?
        .execute(params![from, tenant.to_string()])
        .map_err(sql)?;
    Ok(())
}
