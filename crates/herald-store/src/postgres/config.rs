//! The PostgreSQL store's configuration: SMTP servers, their accounts, notification providers, the sealed secrets.

use super::*;

#[async_trait]
impl Configuration for PgStore {
    async fn reseal_secrets(&self, reseal: crate::Resealer) -> Result<usize> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        // No account may be created or changed while its neighbours are being
        // re-sealed: the count returned must cover every stored secret.
        tx.batch_execute("LOCK TABLE smtp_accounts IN EXCLUSIVE MODE")
            .await
            .map_err(pg)?;
        let sealed = query(
            &tx,
            "SELECT id, sealed_secret FROM smtp_accounts WHERE sealed_secret IS NOT NULL ORDER BY id",
            &[],
        )
        .await?;
        for row in &sealed {
            let account_id: String = get(row, "id")?;
            let value: String = get(row, "sealed_secret")?;
            let resealed = reseal(&value, &account_id).map_err(|e| {
                StoreError::Corrupt(format!("the secret of account {account_id}: {e}"))
            })?;
            execute(
                &tx,
                "UPDATE smtp_accounts SET sealed_secret = $1 WHERE id = $2",
                &[&resealed, &account_id],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        // Unlike SQLite with secure_delete and a checkpoint, PostgreSQL keeps
        // the replaced ciphertexts in dead row versions and its WAL until
        // vacuum and recycling remove them; they are sealed with the old key,
        // which the operator retires after the rotation.
        Ok(sealed.len())
    }

    async fn create_server(&self, tenant_id: TenantId, s: ServerSettings) -> Result<SmtpServer> {
        let c = client(&self.pool).await?;
        let now = now_ms();
        let statement = c
            .prepare_cached(&format!(
                "INSERT INTO smtp_servers (id, tenant_id, name, host, port, security, requires_auth, \
                 tls_verify, tls_ca_pem, tls_server_name, helo_name, max_connections, \
                 max_messages_per_connection, idle_timeout_secs, rate_limit_per_minute, \
                 command_timeout_secs, created_at, updated_at, allow_plaintext_auth) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17, $18) \
                 RETURNING {SERVER_COLUMNS}"
            ))
            .await
            .map_err(pg)?;
        let row = c
            .query_one(
                &statement,
                &[
                    &ServerId::new().to_string(),
                    &tenant_id.to_string(),
                    &s.name,
                    &s.host.as_ref(),
                    &i32::from(s.port.get()),
                    &s.security.as_str(),
                    &s.requires_auth,
                    &s.tls_verify,
                    &s.tls_ca_pem,
                    &s.tls_server_name,
                    &s.helo_name,
                    &i64::from(s.max_connections),
                    &i64::from(s.max_messages_per_connection),
                    &i64::from(s.idle_timeout_secs),
                    &s.rate_limit_per_minute.map(i64::from),
                    &s.command_timeout_secs.map(i64::from),
                    &now,
                    &s.allow_plaintext_auth,
                ],
            )
            .await
            .map_err(unique("an SMTP server with this name exists"))?;
        server(&row)
    }

    async fn server(&self, tenant_id: TenantId, server_id: ServerId) -> Result<SmtpServer> {
        let c = client(&self.pool).await?;
        load_server(&c, tenant_id, server_id, Lock::None).await
    }

    async fn list_servers(&self, tenant_id: TenantId) -> Result<Vec<SmtpServer>> {
        let c = client(&self.pool).await?;
        // Ties in time come by name, as SQLite gives them from its (tenant_id, name) index.
        query(
            &c,
            &format!(
                "SELECT {SERVER_COLUMNS} FROM smtp_servers WHERE tenant_id = $1 ORDER BY created_at, name"
            ),
            &[&tenant_id.to_string()],
        )
        .await?
        .iter()
        .map(server)
        .collect()
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
        let statement = tx
            .prepare_cached(&format!(
                "UPDATE smtp_servers SET name = $1, host = $2, port = $3, security = $4, requires_auth = $5, \
                 tls_verify = $6, tls_ca_pem = $7, tls_server_name = $8, helo_name = $9, \
                 max_connections = $10, max_messages_per_connection = $11, idle_timeout_secs = $12, \
                 rate_limit_per_minute = $13, command_timeout_secs = $14, updated_at = $15, \
                 allow_plaintext_auth = $18 \
                 WHERE id = $16 AND tenant_id = $17 RETURNING {SERVER_COLUMNS}"
            ))
            .await
            .map_err(pg)?;
        let row = tx
            .query_one(
                &statement,
                &[
                    &s.name,
                    &s.host.as_ref(),
                    &i32::from(s.port.get()),
                    &s.security.as_str(),
                    &s.requires_auth,
                    &s.tls_verify,
                    &s.tls_ca_pem,
                    &s.tls_server_name,
                    &s.helo_name,
                    &i64::from(s.max_connections),
                    &i64::from(s.max_messages_per_connection),
                    &i64::from(s.idle_timeout_secs),
                    &s.rate_limit_per_minute.map(i64::from),
                    &s.command_timeout_secs.map(i64::from),
                    &now_ms(),
                    &server_id.to_string(),
                    &tenant_id.to_string(),
                    &s.allow_plaintext_auth,
                ],
            )
            .await
            .map_err(unique("an SMTP server with this name exists"))?;
        let updated = server(&row)?;
        // A stored password must never follow the server entry to a new
        // destination or to weaker trust (the rule is `change_clears_secrets`).
        if old.change_clears_secrets(&s) {
            execute(
                &tx,
                "UPDATE smtp_accounts SET sealed_secret = NULL WHERE server_id = $1 AND tenant_id = $2",
                &[&server_id.to_string(), &tenant_id.to_string()],
            )
            .await
            .map_err(pg)?;
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
            "SELECT name FROM providers WHERE smtp_server_id = $1 AND tenant_id = $2 LIMIT 1",
            &[&server_id.to_string(), &tenant_id.to_string()],
        )
        .await?;
        rules::server_unused(user.map(|row| get(&row, "name")).transpose()?)?;
        execute(
            &tx,
            "DELETE FROM smtp_servers WHERE id = $1 AND tenant_id = $2",
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
        let statement = tx
            .prepare_cached(&format!(
                "INSERT INTO smtp_accounts (id, tenant_id, server_id, username, mechanism, sealed_secret, \
                 oauth2_token_url, oauth2_client_id, oauth2_scope, person_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {ACCOUNT_COLUMNS}"
            ))
            .await
            .map_err(pg)?;
        let row = tx
            .query_one(
                &statement,
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
            )
            .await
            .map_err(unique("an account with this username exists on the server"))?;
        let created = account(&row)?;
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
        query(
            &c,
            &format!(
                "SELECT {ACCOUNT_COLUMNS} FROM smtp_accounts WHERE server_id = $1 AND tenant_id = $2 \
                 ORDER BY created_at, username"
            ),
            &[&server_id.to_string(), &tenant_id.to_string()],
        )
        .await?
        .iter()
        .map(account)
        .collect()
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
            "SELECT name FROM providers WHERE account_id = $1 AND tenant_id = $2 LIMIT 1",
            &[&account_id.to_string(), &tenant_id.to_string()],
        )
        .await?;
        rules::account_unused(user.map(|row| get(&row, "name")).transpose()?)?;
        execute(
            &tx,
            "DELETE FROM smtp_accounts WHERE id = $1 AND tenant_id = $2",
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
        let now = now_ms();
        let statement = tx
            .prepare_cached(&format!(
                "INSERT INTO providers (id, tenant_id, name, smtp_server_id, account_id, from_address, from_name, \
                 reply_to, fallback_recipient, sender_policy, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) RETURNING {PROVIDER_COLUMNS}"
            ))
            .await
            .map_err(pg)?;
        let row = tx
            .query_one(
                &statement,
                &[
                    &ProviderId::new().to_string(),
                    &tenant_id.to_string(),
                    &s.name,
                    &s.smtp_server_id.to_string(),
                    &s.account_id.map(|a| a.to_string()),
                    &s.from_address.as_ref(),
                    &s.from_name.as_ref().map(AsRef::<str>::as_ref),
                    &s.reply_to.as_ref().map(ToString::to_string),
                    &s.fallback_recipient.as_ref().map(AsRef::<str>::as_ref),
                    &s.sender_policy.as_str(),
                    &now,
                ],
            )
            .await
            .map_err(unique("a provider with this name exists"))?;
        let created = provider(&row)?;
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
        query(
            &c,
            &format!(
                "SELECT {PROVIDER_COLUMNS} FROM providers WHERE tenant_id = $1 ORDER BY created_at, name"
            ),
            &[&tenant_id.to_string()],
        )
        .await?
        .iter()
        .map(provider)
        .collect()
    }

    async fn update_provider(
        &self,
        tenant_id: TenantId,
        provider_id: ProviderId,
        s: ProviderSettings,
    ) -> Result<Provider> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        load_provider(&tx, tenant_id, provider_id, Lock::Update).await?;
        check_provider_references(&tx, tenant_id, &s).await?;
        let statement = tx
            .prepare_cached(&format!(
                "UPDATE providers SET name = $1, smtp_server_id = $2, account_id = $3, from_address = $4, \
                 from_name = $5, reply_to = $6, fallback_recipient = $7, sender_policy = $8, updated_at = $9 \
                 WHERE id = $10 AND tenant_id = $11 RETURNING {PROVIDER_COLUMNS}"
            ))
            .await
            .map_err(pg)?;
        let row = tx
            .query_one(
                &statement,
                &[
                    &s.name,
                    &s.smtp_server_id.to_string(),
                    &s.account_id.map(|a| a.to_string()),
                    &s.from_address.as_ref(),
                    &s.from_name.as_ref().map(AsRef::<str>::as_ref),
                    &s.reply_to.as_ref().map(ToString::to_string),
                    &s.fallback_recipient.as_ref().map(AsRef::<str>::as_ref),
                    &s.sender_policy.as_str(),
                    &now_ms(),
                    &provider_id.to_string(),
                    &tenant_id.to_string(),
                ],
            )
            .await
            .map_err(unique("a provider with this name exists"))?;
        let updated = provider(&row)?;
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
            "DELETE FROM providers WHERE id = $1 AND tenant_id = $2",
            &[&provider_id.to_string(), &tenant_id.to_string()],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn active_provider(&self, tenant_id: TenantId) -> Result<Option<ProviderConfig>> {
        let mut c = client(&self.pool).await?;
        // One snapshot for the four reads, so a provider deleted meanwhile
        // cannot turn into an error between reading the tenant and the provider.
        let tx = c
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let Some(provider_id) = load_tenant(&tx, tenant_id, Lock::None)
            .await?
            .notification_provider_id
        else {
            return Ok(None);
        };
        let provider = load_provider(&tx, tenant_id, provider_id, Lock::None).await?;
        let server =
            load_server(&tx, tenant_id, provider.settings.smtp_server_id, Lock::None).await?;
        let account = match provider.settings.account_id {
            Some(a) => Some(load_account(&tx, tenant_id, server.id, a, Lock::None).await?),
            None => None,
        };
        tx.commit().await.map_err(pg)?;
        Ok(Some(ProviderConfig {
            provider,
            server,
            account,
        }))
    }
}
