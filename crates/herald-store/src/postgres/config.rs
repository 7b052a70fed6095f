//! The PostgreSQL store's configuration: SMTP servers, their accounts, notification providers, the sealed secrets.

use super::*;

/// A server's gateway, when it names one, must be one of the tenant's; it is
/// locked FOR KEY SHARE, so it cannot be deleted before the server is stored.
async fn check_gateway(c: &impl GenericClient, tenant: TenantId, s: &ServerSettings) -> Result<()> {
    match s.gateway_id {
        Some(gateway) => rules::server_gateway(
            super::gateways::load_gateway(c, tenant, gateway, Lock::KeyShare).await,
        ),
        None => Ok(()),
    }
}

#[async_trait]
impl Configuration for PgStore {
    async fn reseal_secrets(&self, reseal: crate::Resealer) -> Result<usize> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        // No account or webhook may be created or changed while its neighbours
        // are being re-sealed: the count returned must cover every stored secret.
        tx.batch_execute("LOCK TABLE smtp_accounts, webhooks IN EXCLUSIVE MODE")
            .await
            .map_err(pg)?;
        let sealed = query(&tx, sql::SEALED_SECRETS, &[]).await?;
        for row in &sealed {
            let account_id: String = get(row, "id")?;
            let value: String = get(row, "sealed_secret")?;
            let resealed = reseal(&value, &account_id).map_err(|e| {
                StoreError::Corrupt(format!("the secret of account {account_id}: {e}"))
            })?;
            execute(&tx, sql::RESEAL_ACCOUNT, &[&resealed, &account_id])
                .await
                .map_err(pg)?;
        }
        let webhooks = query(&tx, sql::SEALED_WEBHOOK_SECRETS, &[]).await?;
        for (current, previous, webhook_id) in resealed_webhook_secrets(&webhooks, &reseal)? {
            execute(
                &tx,
                sql::RESEAL_WEBHOOK,
                &[&current, &previous, &webhook_id],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        // Unlike SQLite with secure_delete and a checkpoint, PostgreSQL keeps
        // the replaced ciphertexts in dead row versions and its WAL until
        // vacuum and recycling remove them; they are sealed with the old key,
        // which the operator retires after the rotation.
        Ok(sealed.len() + webhooks.len())
    }

    async fn create_server(&self, tenant_id: TenantId, s: ServerSettings) -> Result<SmtpServer> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        check_gateway(&tx, tenant_id, &s).await?;
        let values = sql::server_values(tenant_id, ServerId::new(), &s, now_ms());
        let created = write_found(
            &tx,
            sql::INSERT_SERVER,
            &bind(&values),
            "an SMTP server with this name exists",
            server,
        )
        .await?;
        tx.commit().await.map_err(pg)?;
        Ok(created)
    }

    async fn server(&self, tenant_id: TenantId, server_id: ServerId) -> Result<SmtpServer> {
        let c = client(&self.pool).await?;
        load_server(&c, tenant_id, server_id, Lock::None).await
    }

    async fn list_servers(&self, tenant_id: TenantId) -> Result<Vec<SmtpServer>> {
        let c = client(&self.pool).await?;
        query_map(&c, sql::SERVERS, &[&tenant_id.to_string()], server).await
    }

    async fn update_server(
        &self,
        tenant_id: TenantId,
        server_id: ServerId,
        s: ServerSettings,
    ) -> Result<SmtpServer> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        // Locked so that two updates cannot both compare against the same old destination.
        let old = load_server(&tx, tenant_id, server_id, Lock::Update)
            .await?
            .settings;
        check_gateway(&tx, tenant_id, &s).await?;
        let values = sql::server_values(tenant_id, server_id, &s, now_ms());
        let updated = write_found(
            &tx,
            sql::UPDATE_SERVER,
            &bind(&values),
            "an SMTP server with this name exists",
            server,
        )
        .await?;
        // A stored password must never follow the server entry to a new
        // destination or to weaker trust (the rule is `change_clears_secrets`).
        if old.change_clears_secrets(&s) {
            execute(
                &tx,
                sql::CLEAR_SERVER_SECRETS,
                &[&server_id.to_string(), &tenant_id.to_string()],
            )
            .await
            .map_err(pg)?;
        }
        if old.gateway_id != s.gateway_id {
            route_changed(&tx, tenant_id, now_ms()).await?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(updated)
    }

    async fn delete_server(&self, tenant_id: TenantId, server_id: ServerId) -> Result<()> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        // Locked so that no provider starts using the server between the check
        // and the delete: creating one takes a key-share lock on it first.
        load_server(&tx, tenant_id, server_id, Lock::Update).await?;
        let user = query_opt(
            &tx,
            sql::PROVIDER_OF_SERVER,
            &[&server_id.to_string(), &tenant_id.to_string()],
        )
        .await?;
        rules::server_unused(user.map(|row| get(&row, "name")).transpose()?)?;
        execute(
            &tx,
            sql::DELETE_SERVER,
            &[&server_id.to_string(), &tenant_id.to_string()],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn create_account(&self, tenant_id: TenantId, a: NewAccount) -> Result<SmtpAccount> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        load_server(&tx, tenant_id, a.server_id, Lock::KeyShare).await?;
        if let Some(person_id) = a.person_id {
            if matches!(
                load_person(&tx, tenant_id, person_id, Lock::KeyShare).await,
                Err(StoreError::NotFound)
            ) {
                return Err(StoreError::Invalid(
                    Invalid::new("must name a person of this tenant").at("person_id"),
                ));
            }
        }
        let created = write_found(
            &tx,
            sql::INSERT_ACCOUNT,
            &[
                &a.id.to_string(),
                &tenant_id.to_string(),
                &a.server_id.to_string(),
                &a.username,
                &a.mechanism.as_str(),
                &a.sealed_secret,
                &a.oauth2.as_ref().map(|o| o.token_url.as_str()),
                &a.oauth2.as_ref().map(|o| o.client_id.as_str()),
                &a.oauth2.as_ref().and_then(|o| o.scope.as_deref()),
                &a.person_id.map(|p| p.to_string()),
                &now_ms(),
            ],
            "an account with this username exists on the server",
            account,
        )
        .await?;
        tx.commit().await.map_err(pg)?;
        Ok(created)
    }

    async fn account(
        &self,
        tenant_id: TenantId,
        server_id: ServerId,
        account_id: AccountId,
    ) -> Result<SmtpAccount> {
        let c = client(&self.pool).await?;
        load_account(&c, tenant_id, server_id, account_id, Lock::None).await
    }

    async fn list_accounts(
        &self,
        tenant_id: TenantId,
        server_id: ServerId,
    ) -> Result<Vec<SmtpAccount>> {
        let c = client(&self.pool).await?;
        load_server(&c, tenant_id, server_id, Lock::None).await?;
        // Ties in time come by username, as SQLite gives them from its (server_id, username) index.
        query_map(
            &c,
            sql::ACCOUNTS,
            &[&server_id.to_string(), &tenant_id.to_string()],
            account,
        )
        .await
    }

    async fn delete_account(
        &self,
        tenant_id: TenantId,
        server_id: ServerId,
        account_id: AccountId,
    ) -> Result<()> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        load_account(&tx, tenant_id, server_id, account_id, Lock::Update).await?;
        let user = query_opt(
            &tx,
            sql::PROVIDER_OF_ACCOUNT,
            &[&account_id.to_string(), &tenant_id.to_string()],
        )
        .await?;
        rules::account_unused(user.map(|row| get(&row, "name")).transpose()?)?;
        execute(
            &tx,
            sql::DELETE_ACCOUNT,
            &[&account_id.to_string(), &tenant_id.to_string()],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn create_provider(&self, tenant_id: TenantId, s: ProviderSettings) -> Result<Provider> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        check_provider_references(&tx, tenant_id, &s).await?;
        let values = sql::provider_values(tenant_id, ProviderId::new(), &s, now_ms());
        let created = write_found(
            &tx,
            sql::INSERT_PROVIDER,
            &bind(&values),
            "a provider with this name exists",
            provider,
        )
        .await?;
        tx.commit().await.map_err(pg)?;
        Ok(created)
    }

    async fn provider(&self, tenant_id: TenantId, provider_id: ProviderId) -> Result<Provider> {
        let c = client(&self.pool).await?;
        load_provider(&c, tenant_id, provider_id, Lock::None).await
    }

    async fn list_providers(&self, tenant_id: TenantId) -> Result<Vec<Provider>> {
        let c = client(&self.pool).await?;
        // Ties in time come by name, as SQLite gives them from its (tenant_id, name) index.
        query_map(&c, sql::PROVIDERS, &[&tenant_id.to_string()], provider).await
    }

    async fn update_provider(
        &self,
        tenant_id: TenantId,
        provider_id: ProviderId,
        s: ProviderSettings,
    ) -> Result<Provider> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        let old = load_provider(&tx, tenant_id, provider_id, Lock::Update)
            .await?
            .settings;
        check_provider_references(&tx, tenant_id, &s).await?;
        let values = sql::provider_values(tenant_id, provider_id, &s, now_ms());
        let updated = write_found(
            &tx,
            sql::UPDATE_PROVIDER,
            &bind(&values),
            "a provider with this name exists",
            provider,
        )
        .await?;
        if old.smtp_server_id != s.smtp_server_id {
            route_changed(&tx, tenant_id, now_ms()).await?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(updated)
    }

    async fn delete_provider(&self, tenant_id: TenantId, provider_id: ProviderId) -> Result<()> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        // The tenant's row is locked first, as set_active_provider locks it, so
        // the provider cannot become active between the check and the delete.
        let tenant = load_tenant(&tx, tenant_id, Lock::Update).await;
        load_provider(&tx, tenant_id, provider_id, Lock::None).await?;
        rules::provider_not_active(&tenant?, provider_id)?;
        execute(
            &tx,
            sql::DELETE_PROVIDER,
            &[&provider_id.to_string(), &tenant_id.to_string()],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }
}

/// A provider of the tenant with its server and account, read through `c`
/// (a snapshot, where the reads must agree).
pub(super) async fn provider_config(
    c: &impl GenericClient,
    tenant: TenantId,
    provider: ProviderId,
) -> Result<ProviderConfig> {
    let provider = load_provider(c, tenant, provider, Lock::None).await?;
    let server = load_server(c, tenant, provider.settings.smtp_server_id, Lock::None).await?;
    let account = match provider.settings.account_id {
        Some(a) => Some(load_account(c, tenant, server.id, a, Lock::None).await?),
        None => None,
    };
    Ok(ProviderConfig {
        provider,
        server,
        account,
    })
}

/// Every webhook's signing secrets, current and previous, resealed, each
/// bound to its webhook's id: `(current, previous, webhook id)`.
fn resealed_webhook_secrets(
    sealed: &[Row],
    reseal: &crate::Resealer,
) -> Result<Vec<(String, Option<String>, String)>> {
    sealed
        .iter()
        .map(|row| {
            let webhook_id: String = get(row, "id")?;
            let context = herald_core::webhook::seal_context(&webhook_id);
            let reseal_one = |value: &str| {
                reseal(value, &context).map_err(|e| {
                    StoreError::Corrupt(format!("the secret of webhook {webhook_id}: {e}"))
                })
            };
            let current = reseal_one(&get::<String>(row, "sealed_secret")?)?;
            let previous = get::<Option<String>>(row, "previous_sealed_secret")?
                .as_deref()
                .map(reseal_one)
                .transpose()?;
            Ok((current, previous, webhook_id))
        })
        .collect()
}

/// Gives the tenant's waiting pinned mail back to the nodes, due no earlier
/// than `from` (see `sql::UNPIN_TENANT_WAITING`).
pub(super) async fn unpin_waiting(
    tx: &impl GenericClient,
    tenant: TenantId,
    from: i64,
) -> Result<()> {
    execute(tx, sql::UNPIN_TENANT_WAITING, &[&from, &tenant.to_string()])
        .await
        .map_err(pg)?;
    Ok(())
}

/// A change of the tenant's route that applies at once (a server's gateway,
/// a provider's server): its waiting pinned mail goes back to the nodes, and
/// every node forgets its cached provider when the transaction commits (the
/// notification `refresh_properties` sends), so none sends mail that is now
/// pinned, nor hands unpinned mail to a gateway, on a stale view.
async fn route_changed(tx: &impl GenericClient, tenant: TenantId, now: i64) -> Result<()> {
    unpin_waiting(tx, tenant, now).await?;
    execute(
        tx,
        "SELECT pg_notify($1, $2)",
        &[&listen::PROPERTIES, &tenant.to_string()],
    )
    .await
    .map_err(pg)?;
    Ok(())
}
