//! The SQLite store's SMTP ingress: tenants' SMTP credentials and IP connectors.

use super::*;

fn credential_row(r: &Row) -> rusqlite::Result<Result<SmtpCredential>> {
    Ok(rows::smtp_credential(r))
}

fn connector_row(r: &Row) -> rusqlite::Result<Result<SmtpConnector>> {
    Ok(rows::smtp_connector(r))
}

/// Turns "no row was deleted" into `NotFound`.
fn deleted(count: usize) -> Result<()> {
    if count == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

impl SqliteStore {
    /// The row of `tenant` with this id, if any, read inline: the listener
    /// asks before each message whether what admitted its session stands.
    fn of_tenant<T>(
        &self,
        statement: &str,
        id: String,
        tenant: TenantId,
        row: fn(&Row) -> rusqlite::Result<Result<T>>,
    ) -> Result<Option<T>> {
        self.db.read_here(|c| {
            c.prepare_cached(statement)
                .map_err(sql)?
                .query_row([id, tenant.to_string()], row)
                .optional()
                .map_err(sql)?
                .transpose()
        })
    }
}

#[async_trait]
impl Ingress for SqliteStore {
    async fn create_smtp_credential(&self, new: NewSmtpCredential) -> Result<SmtpCredential> {
        self.db
            .write(move |c| {
                c.query_row(
                    sql::INSERT_SMTP_CREDENTIAL,
                    params![
                        new.id.to_string(),
                        new.tenant_id.to_string(),
                        new.name,
                        new.username,
                        new.password_hash,
                        new.rate_limit_per_minute,
                        now_ms()
                    ],
                    credential_row,
                )
                .map_err(unique("this username is taken"))?
            })
            .await
    }

    async fn list_smtp_credentials(&self, tenant_id: TenantId) -> Result<Vec<SmtpCredential>> {
        self.db
            .read(move |c| {
                list(
                    c,
                    sql::SMTP_CREDENTIALS,
                    [tenant_id.to_string()],
                    credential_row,
                )?
                .into_iter()
                .collect()
            })
            .await
    }

    async fn smtp_credential(
        &self,
        tenant_id: TenantId,
        id: SmtpCredentialId,
    ) -> Result<Option<SmtpCredential>> {
        self.of_tenant(
            sql::SMTP_CREDENTIAL_BY_ID,
            id.to_string(),
            tenant_id,
            credential_row,
        )
    }

    async fn revoke_smtp_credential(
        &self,
        tenant_id: TenantId,
        id: SmtpCredentialId,
    ) -> Result<()> {
        self.db
            .write(move |c| {
                deleted(
                    c.execute(
                        sql::DELETE_SMTP_CREDENTIAL,
                        [id.to_string(), tenant_id.to_string()],
                    )
                    .map_err(sql)?,
                )
            })
            .await
    }

    async fn smtp_login(&self, username: &str) -> Result<Option<(SmtpCredential, String)>> {
        let username = username.to_owned();
        let found = self
            .db
            .read(move |c| {
                c.query_row(sql::SMTP_LOGIN, [username], |r| {
                    Ok(rows::smtp_credential(r)
                        .map(|found| (found, r.get::<_, String>("password_hash"))))
                })
                .optional()
                .map_err(sql)
            })
            .await?;
        let Some((credential, hash)) = found.transpose()? else {
            return Ok(None);
        };
        Ok(Some((credential, hash.map_err(sql)?)))
    }

    async fn smtp_credential_used(&self, id: SmtpCredentialId, now: i64) -> Result<()> {
        self.db
            .write(move |c| {
                c.execute(sql::SMTP_CREDENTIAL_USED, params![now, id.to_string()])
                    .map_err(sql)
                    .map(drop)
            })
            .await
    }

    async fn create_smtp_connector(
        &self,
        tenant_id: TenantId,
        name: String,
        cidrs: Vec<ipnet::IpNet>,
        rate_limit_per_minute: Option<u32>,
    ) -> Result<SmtpConnector> {
        // On the single writer, the check and the insert see the same connectors.
        self.db
            .write(move |c| {
                let existing: Vec<SmtpConnector> =
                    list(c, sql::ALL_SMTP_CONNECTORS, [], connector_row)?
                        .into_iter()
                        .collect::<Result<_>>()?;
                rules::connector_networks(tenant_id, &cidrs, &existing)?;
                c.query_row(
                    sql::INSERT_SMTP_CONNECTOR,
                    params![
                        SmtpConnectorId::new().to_string(),
                        tenant_id.to_string(),
                        name,
                        rows::cidrs_json(&cidrs),
                        rate_limit_per_minute,
                        now_ms()
                    ],
                    connector_row,
                )
                .map_err(sql)?
            })
            .await
    }

    async fn list_smtp_connectors(&self, tenant_id: TenantId) -> Result<Vec<SmtpConnector>> {
        self.db
            .read(move |c| {
                list(
                    c,
                    sql::SMTP_CONNECTORS,
                    [tenant_id.to_string()],
                    connector_row,
                )?
                .into_iter()
                .collect()
            })
            .await
    }

    async fn smtp_connector(
        &self,
        tenant_id: TenantId,
        id: SmtpConnectorId,
    ) -> Result<Option<SmtpConnector>> {
        self.of_tenant(
            sql::SMTP_CONNECTOR_BY_ID,
            id.to_string(),
            tenant_id,
            connector_row,
        )
    }

    async fn delete_smtp_connector(&self, tenant_id: TenantId, id: SmtpConnectorId) -> Result<()> {
        self.db
            .write(move |c| {
                deleted(
                    c.execute(
                        sql::DELETE_SMTP_CONNECTOR,
                        [id.to_string(), tenant_id.to_string()],
                    )
                    .map_err(sql)?,
                )
            })
            .await
    }

    async fn all_smtp_connectors(&self) -> Result<Vec<SmtpConnector>> {
        self.db
            .read(|c| {
                list(c, sql::ALL_SMTP_CONNECTORS, [], connector_row)?
                    .into_iter()
                    .collect()
            })
            .await
    }
}
