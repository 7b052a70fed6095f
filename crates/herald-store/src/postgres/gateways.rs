//! The PostgreSQL store's gateways: their tokens' hashes and their instances.

use herald_core::GatewayId;

use super::*;
use crate::Gateways;

/// A gateway found by `statement`, with its instances; `None` when none matched.
async fn find_gateway(
    c: &impl GenericClient,
    statement: &str,
    args: &[&(dyn ToSql + Sync)],
) -> Result<Option<Gateway>> {
    let Some(row) = query_opt(c, statement, args).await? else {
        return Ok(None);
    };
    let gateway = rows::gateway(&row)?;
    let instances = query_map(
        c,
        sql::GATEWAY_INSTANCES,
        &[&gateway_window_after(now_ms()), &gateway.id.to_string()],
        rows::gateway_instance,
    )
    .await?;
    Ok(rows::with_instances(vec![gateway], instances).pop())
}

/// The tenant's gateway with its instances, or not found; `lock` is added
/// to the statement.
pub(super) async fn load_gateway(
    c: &impl GenericClient,
    tenant: TenantId,
    id: GatewayId,
    lock: Lock,
) -> Result<Gateway> {
    find_gateway(
        c,
        &lock.on(sql::GATEWAY_BY_ID),
        &[&id.to_string(), &tenant.to_string()],
    )
    .await?
    .ok_or(StoreError::NotFound)
}

#[async_trait]
impl Gateways for PgStore {
    async fn create_gateway(&self, g: NewGateway) -> Result<Gateway> {
        self.noted(async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            execute(
                &tx,
                sql::INSERT_GATEWAY,
                &[
                    &g.id.to_string(),
                    &g.tenant_id.to_string(),
                    &g.name,
                    &g.token_hash,
                    &g.created_at,
                ],
            )
            .await
            .map_err(unique(rules::name_taken("gateway", &g.name)))?;
            let created = load_gateway(&tx, g.tenant_id, g.id, Lock::None).await?;
            tx.commit().await.map_err(pg)?;
            Ok(created)
        })
        .await
    }

    async fn gateway(&self, tenant: TenantId, id: GatewayId) -> Result<Gateway> {
        let c = client(&self.pool).await?;
        load_gateway(&c, tenant, id, Lock::None).await
    }

    async fn list_gateways(&self, tenant: TenantId) -> Result<Vec<Gateway>> {
        let c = client(&self.pool).await?;
        let tenant = tenant.to_string();
        let gateways = query_map(&c, sql::GATEWAYS, &[&tenant], rows::gateway).await?;
        let instances = query_map(
            &c,
            sql::TENANT_GATEWAY_INSTANCES,
            &[&gateway_window_after(now_ms()), &tenant],
            rows::gateway_instance,
        )
        .await?;
        Ok(rows::with_instances(gateways, instances))
    }

    async fn delete_gateway(&self, tenant: TenantId, id: GatewayId) -> Result<()> {
        self.noted(async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            // Locked, so no server can take the gateway up (it locks the
            // gateway FOR KEY SHARE) between the check and the delete.
            load_gateway(&tx, tenant, id, Lock::Update).await?;
            let (id, tenant) = (id.to_string(), tenant.to_string());
            let used_by = query_map(&tx, sql::SERVERS_OF_GATEWAY, &[&id, &tenant], |r| {
                get::<String>(r, "name")
            })
            .await?;
            rules::gateway_unused(&used_by)?;
            execute(&tx, sql::UNPIN_GATEWAY, &[&id, &tenant])
                .await
                .map_err(pg)?;
            execute(&tx, sql::DELETE_GATEWAY, &[&id, &tenant])
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)
        })
        .await
    }

    async fn replace_gateway_token(
        &self,
        tenant: TenantId,
        id: GatewayId,
        token_hash: String,
        now: i64,
    ) -> Result<Gateway> {
        self.noted(async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            let changed = execute(
                &tx,
                sql::REPLACE_GATEWAY_TOKEN,
                &[&token_hash, &now, &id.to_string(), &tenant.to_string()],
            )
            .await
            .map_err(pg)?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            let replaced = load_gateway(&tx, tenant, id, Lock::None).await?;
            tx.commit().await.map_err(pg)?;
            Ok(replaced)
        })
        .await
    }

    async fn gateway_by_token(&self, hash: &str) -> Result<Option<Gateway>> {
        let c = client(&self.pool).await?;
        find_gateway(&c, sql::GATEWAY_BY_TOKEN, &[&hash]).await
    }

    async fn pinned_to_gateway(
        &self,
        gateway: GatewayId,
        recipients: &[RecipientId],
    ) -> Result<Vec<bool>> {
        let c = client(&self.pool).await?;
        let gateway = gateway.to_string();
        let mut pinned = Vec::with_capacity(recipients.len());
        for id in recipients {
            let row = query_opt(&c, sql::RECIPIENT_PINNED_TO, &[&id.to_string(), &gateway]).await?;
            pinned.push(match row {
                Some(row) => row.try_get::<_, bool>(0).map_err(pg)?,
                None => false,
            });
        }
        Ok(pinned)
    }

    async fn gateway_seen(&self, seen: GatewaySeen) -> Result<()> {
        self.noted(async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            let gateway_id = seen.gateway_id.to_string();
            // Locked against a deletion until the instance is recorded.
            if query_opt(
                &tx,
                "SELECT 1 FROM gateways WHERE id = $1 FOR KEY SHARE",
                &[&gateway_id],
            )
            .await?
            .is_none()
            {
                return Err(StoreError::NotFound);
            }
            let values = sql::gateway_seen_values(&seen);
            execute(&tx, sql::UPSERT_GATEWAY_INSTANCE, &bind(&values))
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(())
        })
        .await
    }

    async fn release_stale_gateway_instances(
        &self,
        stale_before: i64,
        now: i64,
    ) -> Result<Vec<(String, u64)>> {
        self.noted(async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            // Rows another sweep holds are skipped: that sweep releases them.
            let stale = query(
                &tx,
                &format!(
                    "{} FOR UPDATE OF i SKIP LOCKED",
                    sql::STALE_GATEWAY_INSTANCES
                ),
                &[&stale_before],
            )
            .await?;
            let mut released = Vec::with_capacity(stale.len());
            for row in &stale {
                let gateway_id: String = get(row, "gateway_id")?;
                let name: String = get(row, "name")?;
                let owner = gateway_lease_owner(&get::<String>(row, "gateway_name")?, &name);
                let incarnations: [Option<String>; 2] =
                    [get(row, "incarnation")?, get(row, "previous_incarnation")?];
                let mut n = 0;
                for incarnation in incarnations.iter().flatten() {
                    n += execute(
                        &tx,
                        &release_crashed("gateway_id = $3 AND lease_incarnation = $4"),
                        &[&now, &owner, &gateway_id, incarnation],
                    )
                    .await
                    .map_err(pg)?;
                }
                execute(
                    &tx,
                    sql::GATEWAY_INSTANCE_TAKEN_OVER,
                    &[&stale_before, &gateway_id, &name],
                )
                .await
                .map_err(pg)?;
                released.push((owner, n));
            }
            tx.commit().await.map_err(pg)?;
            Ok(released)
        })
        .await
    }

    async fn count_gateway_outcomes(
        &self,
        gateway: GatewayId,
        instance: &str,
        delivered: u32,
        failed: u32,
        at: i64,
    ) -> Result<()> {
        self.noted(async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            let (gateway, minute) = (gateway.to_string(), gateway_minute(at));
            let changed = execute(
                &tx,
                sql::COUNT_GATEWAY_OUTCOMES,
                &[
                    &minute,
                    &i64::from(delivered),
                    &i64::from(failed),
                    &gateway,
                    &instance,
                ],
            )
            .await
            .map_err(pg)?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            execute(
                &tx,
                sql::PRUNE_GATEWAY_MINUTES,
                &[&gateway, &instance, &(minute - GATEWAY_WINDOW_MINUTES)],
            )
            .await
            .map_err(pg)?;
            tx.commit().await.map_err(pg)
        })
        .await
    }
}
