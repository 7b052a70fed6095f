//! The PostgreSQL store's SMTP ingress: tenants' SMTP credentials and IP connectors.

use super::*;

/// A rate limit as PostgreSQL's `integer` column takes it.
fn per_minute(limit: Option<u32>) -> Option<i32> {
    limit.map(|n| i32::try_from(n).unwrap_or(i32::MAX))
}

/// Turns "no row was deleted" into `NotFound`.
fn deleted(count: u64) -> Result<()> {
    if count == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

/// Serialises the creation of connectors, so that two nodes cannot store
/// overlapping networks at the same time: "smtpconn" in ASCII.
const CONNECTOR_LOCK: i64 = 0x736d_7470_636f_6e6e;

impl PgStore {
    /// The row of `tenant` with this id, if any.
    async fn of_tenant<T>(
        &self,
        statement: &str,
        id: String,
        tenant: TenantId,
        row: fn(&tokio_postgres::Row) -> Result<T>,
    ) -> Result<Option<T>> {
        let c = client(&self.pool).await?;
        query_opt(&c, statement, &[&id, &tenant.to_string()])
            .await?
            .as_ref()
            .map(row)
            .transpose()
    }
}

#[async_trait]
impl Ingress for PgStore {
    async fn create_smtp_credential(&self, new: NewSmtpCredential) -> Result<SmtpCredential> {
        let c = client(&self.pool).await?;
        write_found(
            &c,
            sql::INSERT_SMTP_CREDENTIAL,
            &[
                &new.id.to_string(),
                &new.tenant_id.to_string(),
                &new.name,
                &new.username,
                &new.password_hash,
                &per_minute(new.rate_limit_per_minute),
                &now_ms(),
            ],
            "this username is taken",
            rows::smtp_credential,
        )
        .await
    }

    async fn list_smtp_credentials(&self, tenant_id: TenantId) -> Result<Vec<SmtpCredential>> {
        let c = client(&self.pool).await?;
        query(&c, sql::SMTP_CREDENTIALS, &[&tenant_id.to_string()])
            .await?
            .iter()
            .map(rows::smtp_credential)
            .collect()
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
            rows::smtp_credential,
        )
        .await
    }

    async fn revoke_smtp_credential(
        &self,
        tenant_id: TenantId,
        id: SmtpCredentialId,
    ) -> Result<()> {
        let c = client(&self.pool).await?;
        let count = execute(
            &c,
            sql::DELETE_SMTP_CREDENTIAL,
            &[&id.to_string(), &tenant_id.to_string()],
        )
        .await
        .map_err(pg)?;
        deleted(count)
    }

    async fn smtp_login(&self, username: &str) -> Result<Option<(SmtpCredential, String)>> {
        let c = client(&self.pool).await?;
        let Some(row) = query_opt(&c, sql::SMTP_LOGIN, &[&username]).await? else {
            return Ok(None);
        };
        let credential = rows::smtp_credential(&row)?;
        let hash: String = get(&row, "password_hash")?;
        Ok(Some((credential, hash)))
    }

    async fn smtp_credential_used(&self, id: SmtpCredentialId, now: i64) -> Result<()> {
        let c = client(&self.pool).await?;
        execute(&c, sql::SMTP_CREDENTIAL_USED, &[&now, &id.to_string()])
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn create_smtp_connector(
        &self,
        tenant_id: TenantId,
        name: String,
        cidrs: Vec<ipnet::IpNet>,
        rate_limit_per_minute: Option<u32>,
    ) -> Result<SmtpConnector> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        // Held to the commit: the check and the insert see the same connectors.
        execute(&tx, "SELECT pg_advisory_xact_lock($1)", &[&CONNECTOR_LOCK])
            .await
            .map_err(pg)?;
        let existing: Vec<SmtpConnector> = query(&tx, sql::ALL_SMTP_CONNECTORS, &[])
            .await?
            .iter()
            .map(rows::smtp_connector)
            .collect::<Result<_>>()?;
        rules::connector_networks(tenant_id, &cidrs, &existing)?;
        let row = query_opt(
            &tx,
            sql::INSERT_SMTP_CONNECTOR,
            &[
                &SmtpConnectorId::new().to_string(),
                &tenant_id.to_string(),
                &name,
                &rows::cidrs_json(&cidrs),
                &per_minute(rate_limit_per_minute),
                &now_ms(),
            ],
        )
        .await?
        .ok_or_else(|| StoreError::Unavailable("the new connector was not returned".into()))?;
        let connector = rows::smtp_connector(&row)?;
        tx.commit().await.map_err(pg)?;
        Ok(connector)
    }

    async fn list_smtp_connectors(&self, tenant_id: TenantId) -> Result<Vec<SmtpConnector>> {
        let c = client(&self.pool).await?;
        query(&c, sql::SMTP_CONNECTORS, &[&tenant_id.to_string()])
            .await?
            .iter()
            .map(rows::smtp_connector)
            .collect()
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
            rows::smtp_connector,
        )
        .await
    }

    async fn delete_smtp_connector(&self, tenant_id: TenantId, id: SmtpConnectorId) -> Result<()> {
        let c = client(&self.pool).await?;
        let count = execute(
            &c,
            sql::DELETE_SMTP_CONNECTOR,
            &[&id.to_string(), &tenant_id.to_string()],
        )
        .await
        .map_err(pg)?;
        deleted(count)
    }

    async fn all_smtp_connectors(&self) -> Result<Vec<SmtpConnector>> {
        let c = client(&self.pool).await?;
        query(&c, sql::ALL_SMTP_CONNECTORS, &[])
            .await?
            .iter()
            .map(rows::smtp_connector)
            .collect()
    }
}
