//! The SQLite store's gateways: their tokens' hashes and their instances.

use herald_core::GatewayId;

use super::*;
use crate::Gateways;

fn gateway_row(r: &Row) -> rusqlite::Result<Result<Gateway>> {
    Ok(rows::gateway(r))
}

fn instance_row(r: &Row) -> rusqlite::Result<Result<(GatewayId, GatewayInstance)>> {
    Ok(rows::gateway_instance(r))
}

/// A gateway found by `query`, with its instances; `None` when none matched.
fn find_gateway(
    c: &Connection,
    query: &str,
    args: impl rusqlite::Params,
) -> Result<Option<Gateway>> {
    let Some(gateway) = c
        .query_row(query, args, gateway_row)
        .optional()
        .map_err(sql)?
        .transpose()?
    else {
        return Ok(None);
    };
    let instances = list_parsed(
        c,
        sql::GATEWAY_INSTANCES,
        params![gateway_window_after(now_ms()), gateway.id.to_string()],
        instance_row,
    )?;
    Ok(rows::with_instances(vec![gateway], instances).pop())
}

/// The tenant's gateway with its instances, or not found.
pub(super) fn load_gateway(c: &Connection, tenant: TenantId, id: GatewayId) -> Result<Gateway> {
    find_gateway(c, sql::GATEWAY_BY_ID, [id.to_string(), tenant.to_string()])?
        .ok_or(StoreError::NotFound)
}

#[async_trait]
impl Gateways for SqliteStore {
    async fn create_gateway(&self, g: NewGateway) -> Result<Gateway> {
        self.db
            .write(move |c| {
                c.prepare_cached(sql::INSERT_GATEWAY)
                    .map_err(sql)?
                    .execute(params![
                        g.id.to_string(),
                        g.tenant_id.to_string(),
                        g.name,
                        g.token_hash,
                        g.created_at
                    ])
                    .map_err(unique(rules::name_taken("gateway", &g.name)))?;
                load_gateway(c, g.tenant_id, g.id)
            })
            .await
    }

    async fn gateway(&self, tenant: TenantId, id: GatewayId) -> Result<Gateway> {
        self.db.read(move |c| load_gateway(c, tenant, id)).await
    }

    async fn list_gateways(&self, tenant: TenantId) -> Result<Vec<Gateway>> {
        self.db
            .read(move |c| {
                let gateways = list_parsed(c, sql::GATEWAYS, [tenant.to_string()], gateway_row)?;
                let instances = list_parsed(
                    c,
                    sql::TENANT_GATEWAY_INSTANCES,
                    params![gateway_window_after(now_ms()), tenant.to_string()],
                    instance_row,
                )?;
                Ok(rows::with_instances(gateways, instances))
            })
            .await
    }

    async fn delete_gateway(&self, tenant: TenantId, id: GatewayId) -> Result<()> {
        self.db
            .write(move |c| {
                let args = [id.to_string(), tenant.to_string()];
                load_gateway(c, tenant, id)?;
                // Checked before the foreign key would refuse the delete, to say which server.
                let used_by = list(c, sql::SERVERS_OF_GATEWAY, args.clone(), |r| {
                    r.get::<_, String>(0)
                })?;
                rules::gateway_unused(&used_by)?;
                c.execute(sql::UNPIN_GATEWAY, args.clone()).map_err(sql)?;
                c.execute(sql::DELETE_GATEWAY, args).map_err(sql)?;
                Ok(())
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
        self.db
            .write(move |c| {
                let changed = c
                    .execute(
                        sql::REPLACE_GATEWAY_TOKEN,
                        params![token_hash, now, id.to_string(), tenant.to_string()],
                    )
                    .map_err(sql)?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                load_gateway(c, tenant, id)
            })
            .await
    }

    async fn gateway_by_token(&self, hash: &str) -> Result<Option<Gateway>> {
        let hash = hash.to_owned();
        self.db
            .read(move |c| find_gateway(c, sql::GATEWAY_BY_TOKEN, [hash]))
            .await
    }

    async fn pinned_to_gateway(
        &self,
        gateway: GatewayId,
        recipients: &[RecipientId],
    ) -> Result<Vec<bool>> {
        let ids: Vec<String> = recipients.iter().map(ToString::to_string).collect();
        let gateway = gateway.to_string();
        self.db
            .read(move |c| {
                let mut statement = c.prepare_cached(sql::RECIPIENT_PINNED_TO).map_err(sql)?;
                ids.iter()
                    .map(|id| {
                        statement
                            .query_row(params![id, gateway], |r| r.get(0))
                            .map_err(sql)
                    })
                    .collect()
            })
            .await
    }

    async fn gateway_seen(&self, seen: GatewaySeen) -> Result<()> {
        self.db
            .write(move |c| {
                let gateway_id = seen.gateway_id.to_string();
                let known: bool = c
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM gateways WHERE id = ?1)",
                        [&gateway_id],
                        |r| r.get(0),
                    )
                    .map_err(sql)?;
                if !known {
                    return Err(StoreError::NotFound);
                }
                c.prepare_cached(sql::UPSERT_GATEWAY_INSTANCE)
                    .map_err(sql)?
                    .execute(rusqlite::params_from_iter(&sql::gateway_seen_values(&seen)))
                    .map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn release_stale_gateway_instances(
        &self,
        stale_before: i64,
        now: i64,
    ) -> Result<Vec<(String, u64)>> {
        self.db
            .write(move |c| {
                let stale = list(c, sql::STALE_GATEWAY_INSTANCES, [stale_before], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        [r.get::<_, Option<String>>(3)?, r.get::<_, Option<String>>(4)?],
                    ))
                })?;
                let mut released = Vec::with_capacity(stale.len());
                for (gateway_id, gateway_name, name, incarnations) in stale {
                    let owner = gateway_lease_owner(&gateway_name, &name);
                    let mut n = 0;
                    for incarnation in incarnations.iter().flatten() {
                        n += c
                            .execute(
                                &format!(
                                    "{RELEASE_CRASHED} WHERE status = 'sending' AND gateway_id = ?2 \
                                     AND lease_owner = ?3 AND lease_incarnation = ?4"
                                ),
                                params![now, gateway_id, owner, incarnation],
                            )
                            .map_err(sql)? as u64;
                    }
                    c.execute(
                        sql::GATEWAY_INSTANCE_TAKEN_OVER,
                        params![stale_before, gateway_id, name],
                    )
                    .map_err(sql)?;
                    released.push((owner, n));
                }
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
        let instance = instance.to_owned();
        self.db
            .write(move |c| {
                let (gateway, minute) = (gateway.to_string(), gateway_minute(at));
                let changed = c
                    .prepare_cached(sql::COUNT_GATEWAY_OUTCOMES)
                    .map_err(sql)?
                    .execute(params![
                        minute,
                        i64::from(delivered),
                        i64::from(failed),
                        gateway,
                        instance
                    ])
                    .map_err(sql)?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                c.prepare_cached(sql::PRUNE_GATEWAY_MINUTES)
                    .map_err(sql)?
                    .execute(params![gateway, instance, minute - GATEWAY_WINDOW_MINUTES])
                    .map_err(sql)?;
                Ok(())
            })
            .await
    }
}
