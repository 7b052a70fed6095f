//! The SQLite store's configuration: SMTP servers, their accounts, notification providers, the sealed secrets.

use super::*;

#[async_trait]
impl Configuration for SqliteStore {
    async fn reseal_secrets(&self, reseal: crate::Resealer) -> Result<usize> {
        let count = self
            .db
            .write(move |c| {
                let sealed = list(
                    c,
                    "SELECT id, sealed_secret FROM smtp_accounts WHERE sealed_secret IS NOT NULL",
                    [],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                )?;
                for (account_id, value) in &sealed {
                    let resealed = reseal(value, account_id).map_err(|e| {
                        StoreError::Corrupt(format!("the secret of account {account_id}: {e}"))
                    })?;
                    c.execute(
                        "UPDATE smtp_accounts SET sealed_secret = ?1 WHERE id = ?2",
                        [resealed, account_id.clone()],
                    )
                    .map_err(sql)?;
                }
                Ok(sealed.len())
            })
            .await?;
        // The old ciphertexts must not stay behind in the log.
        self.db.checkpoint().await?;
        Ok(count)
    }

    async fn create_server(&self, tenant_id: TenantId, s: ServerSettings) -> Result<SmtpServer> {
        self.db
            .write(move |c| {
                let server_id = ServerId::new();
                let now = now_ms();
                c.execute(
                    "INSERT INTO smtp_servers (id, tenant_id, name, host, port, security, requires_auth, \
                     tls_verify, tls_ca_pem, tls_server_name, helo_name, max_connections, \
                     max_messages_per_connection, idle_timeout_secs, rate_limit_per_minute, \
                     command_timeout_secs, allow_plaintext_auth, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?18)",
                    params![
                        server_id.to_string(), tenant_id.to_string(), s.name, s.host.as_ref(),
                        s.port.get(), s.security.as_str(), s.requires_auth, s.tls_verify,
                        s.tls_ca_pem, s.tls_server_name, s.helo_name, s.max_connections,
                        s.max_messages_per_connection, s.idle_timeout_secs, s.rate_limit_per_minute,
                        s.command_timeout_secs, s.allow_plaintext_auth, now
                    ],
                )
                .map_err(unique("an SMTP server with this name exists"))?;
                load_server(c, tenant_id, server_id)
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
            .read(move |c| {
                list(
                    c,
                    &format!("SELECT {SERVER_COLUMNS} FROM smtp_servers WHERE tenant_id = ?1 ORDER BY created_at"),
                    [tenant_id.to_string()],
                    server_row,
                )?
                .into_iter()
                .collect()
            })
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
                c.execute(
                    "UPDATE smtp_servers SET name = ?1, host = ?2, port = ?3, security = ?4, requires_auth = ?5, \
                     tls_verify = ?6, tls_ca_pem = ?7, tls_server_name = ?8, helo_name = ?9, \
                     max_connections = ?10, max_messages_per_connection = ?11, idle_timeout_secs = ?12, \
                     rate_limit_per_minute = ?13, command_timeout_secs = ?14, updated_at = ?15, \
                     allow_plaintext_auth = ?18 \
                     WHERE id = ?16 AND tenant_id = ?17",
                    params![
                        s.name, s.host.as_ref(), s.port.get(), s.security.as_str(), s.requires_auth,
                        s.tls_verify, s.tls_ca_pem, s.tls_server_name, s.helo_name, s.max_connections,
                        s.max_messages_per_connection, s.idle_timeout_secs, s.rate_limit_per_minute,
                        s.command_timeout_secs, now_ms(), server_id.to_string(), tenant_id.to_string(),
                        s.allow_plaintext_auth
                    ],
                )
                .map_err(unique("an SMTP server with this name exists"))?;
                // A stored password must never follow the server entry to a new
                // destination or to weaker trust (the rule is `change_clears_secrets`).
                if old.change_clears_secrets(&s) {
                    c.execute(
                        "UPDATE smtp_accounts SET sealed_secret = NULL WHERE server_id = ?1 AND tenant_id = ?2",
                        [server_id.to_string(), tenant_id.to_string()],
                    )
                    .map_err(sql)?;
                }
                load_server(c, tenant_id, server_id)
            })
            .await
    }

    async fn delete_server(&self, tenant_id: TenantId, server_id: ServerId) -> Result<()> {
        self.db
            .write(move |c| {
                load_server(c, tenant_id, server_id)?;
                let user: Option<String> = c
                    .query_row(
                        "SELECT name FROM providers WHERE smtp_server_id = ?1 AND tenant_id = ?2 LIMIT 1",
                        [server_id.to_string(), tenant_id.to_string()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                rules::server_unused(user)?;
                c.execute(
                    "DELETE FROM smtp_servers WHERE id = ?1 AND tenant_id = ?2",
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
                    if matches!(load_person(c, tenant_id, person_id), Err(StoreError::NotFound)) {
                        return Err(StoreError::Invalid(
                            Invalid::new("must name a person of this tenant").at("person_id"),
                        ));
                    }
                }
                c.execute(
                    "INSERT INTO smtp_accounts (id, tenant_id, server_id, username, mechanism, sealed_secret, \
                     oauth2_token_url, oauth2_client_id, oauth2_scope, person_id, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    params![
                        a.id.to_string(), tenant_id.to_string(), a.server_id.to_string(), a.username,
                        a.mechanism.as_str(), a.sealed_secret,
                        a.oauth2.as_ref().map(|o| o.token_url.as_str()),
                        a.oauth2.as_ref().map(|o| o.client_id.as_str()),
                        a.oauth2.as_ref().and_then(|o| o.scope.as_deref()),
                        a.person_id.map(|p| p.to_string()), now_ms()
                    ],
                )
                .map_err(unique("an account with this username exists on the server"))?;
                load_account(c, tenant_id, a.server_id, a.id)
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
                list(
                    c,
                    &format!("SELECT {ACCOUNT_COLUMNS} FROM smtp_accounts WHERE server_id = ?1 AND tenant_id = ?2 ORDER BY created_at"),
                    [server_id.to_string(), tenant_id.to_string()],
                    account_row,
                )?
                .into_iter()
                .collect()
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
                        "SELECT name FROM providers WHERE account_id = ?1 AND tenant_id = ?2 LIMIT 1",
                        [account_id.to_string(), tenant_id.to_string()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                rules::account_unused(user)?;
                c.execute(
                    "DELETE FROM smtp_accounts WHERE id = ?1 AND tenant_id = ?2",
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
                let provider_id = ProviderId::new();
                c.execute(
                    "INSERT INTO providers (id, tenant_id, name, smtp_server_id, account_id, from_address, from_name, \
                     reply_to, fallback_recipient, sender_policy, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
                    params![
                        provider_id.to_string(), tenant_id.to_string(), s.name, s.smtp_server_id.to_string(),
                        s.account_id.map(|a| a.to_string()), s.from_address.as_ref(),
                        s.from_name.as_ref().map(AsRef::<str>::as_ref), s.reply_to.as_ref().map(ToString::to_string),
                        s.fallback_recipient.as_ref().map(AsRef::<str>::as_ref), s.sender_policy.as_str(), now_ms()
                    ],
                )
                .map_err(unique("a provider with this name exists"))?;
                load_provider(c, tenant_id, provider_id)
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
            .read(move |c| {
                list(
                    c,
                    &format!("SELECT {PROVIDER_COLUMNS} FROM providers WHERE tenant_id = ?1 ORDER BY created_at"),
                    [tenant_id.to_string()],
                    provider_row,
                )?
                .into_iter()
                .collect()
            })
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
                load_provider(c, tenant_id, provider_id)?;
                check_provider_references(c, tenant_id, &s)?;
                c.execute(
                    "UPDATE providers SET name = ?1, smtp_server_id = ?2, account_id = ?3, from_address = ?4, \
                     from_name = ?5, reply_to = ?6, fallback_recipient = ?7, sender_policy = ?8, updated_at = ?9 \
                     WHERE id = ?10 AND tenant_id = ?11",
                    params![
                        s.name, s.smtp_server_id.to_string(), s.account_id.map(|a| a.to_string()),
                        s.from_address.as_ref(), s.from_name.as_ref().map(AsRef::<str>::as_ref),
                        s.reply_to.as_ref().map(ToString::to_string),
                        s.fallback_recipient.as_ref().map(AsRef::<str>::as_ref), s.sender_policy.as_str(),
                        now_ms(), provider_id.to_string(), tenant_id.to_string()
                    ],
                )
                .map_err(unique("a provider with this name exists"))?;
                load_provider(c, tenant_id, provider_id)
            })
            .await
    }

    async fn delete_provider(&self, tenant_id: TenantId, provider_id: ProviderId) -> Result<()> {
        self.db
            .write(move |c| {
                load_provider(c, tenant_id, provider_id)?;
                rules::provider_not_active(&load_tenant(c, tenant_id)?, provider_id)?;
                c.execute(
                    "DELETE FROM providers WHERE id = ?1 AND tenant_id = ?2",
                    [provider_id.to_string(), tenant_id.to_string()],
                )
                .map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn active_provider(&self, tenant_id: TenantId) -> Result<Option<ProviderConfig>> {
        self.db
            .read(move |c| {
                let Some(provider_id) = load_tenant(c, tenant_id)?.notification_provider_id else {
                    return Ok(None);
                };
                let provider = load_provider(c, tenant_id, provider_id)?;
                let server = load_server(c, tenant_id, provider.settings.smtp_server_id)?;
                let account = provider
                    .settings
                    .account_id
                    .map(|a| load_account(c, tenant_id, server.id, a))
                    .transpose()?;
                Ok(Some(ProviderConfig {
                    provider,
                    server,
                    account,
                }))
            })
            .await
    }
}
