//! The PostgreSQL store's message templates and their versions.

use herald_core::TemplateId;

use super::*;
use crate::Templates;

/// The tenant's template, or not found; `lock` is added to the statement
/// (PostgreSQL locks only the rows of the table named).
pub(super) async fn load_template(
    c: &impl GenericClient,
    tenant: TenantId,
    id: TemplateId,
    lock: Lock,
) -> Result<Template> {
    let statement = match lock {
        Lock::None => sql::TEMPLATE_BY_ID.to_owned(),
        lock => format!("{}{} OF t", sql::TEMPLATE_BY_ID, lock.clause()),
    };
    query_found(
        c,
        &statement,
        &[&id.to_string(), &tenant.to_string()],
        rows::template,
    )
    .await
}

/// Stores a version of a template: what its fields say from `at` on.
async fn insert_version(
    c: &impl GenericClient,
    id: TemplateId,
    version: i32,
    f: &TemplateFields,
    at: i64,
) -> Result<()> {
    execute(
        c,
        sql::INSERT_TEMPLATE_VERSION,
        &[
            &id.to_string(),
            &version,
            &f.name,
            &f.description,
            &f.content.subject,
            &f.content.text,
            &f.content.html,
            &at,
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

#[async_trait]
impl Templates for PgStore {
    async fn create_template(&self, t: NewTemplate) -> Result<Template> {
        self.noted(async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            let f = &t.fields;
            execute(
                &tx,
                sql::INSERT_TEMPLATE,
                &[
                    &t.id.to_string(),
                    &t.tenant_id.to_string(),
                    &f.name,
                    &f.description,
                    &t.created_at,
                ],
            )
            .await
            .map_err(unique(rules::name_taken("template", &f.name)))?;
            insert_version(&tx, t.id, 1, f, t.created_at).await?;
            let created = load_template(&tx, t.tenant_id, t.id, Lock::None).await?;
            tx.commit().await.map_err(pg)?;
            Ok(created)
        })
        .await
    }

    async fn template(&self, tenant: TenantId, id: TemplateId) -> Result<Template> {
        let c = client(&self.pool).await?;
        load_template(&c, tenant, id, Lock::None).await
    }

    async fn template_named(&self, tenant: TenantId, name: &str) -> Result<Template> {
        let c = client(&self.pool).await?;
        query_found(
            &c,
            sql::TEMPLATE_BY_NAME,
            &[&tenant.to_string(), &name],
            rows::template,
        )
        .await
    }

    async fn list_templates(&self, tenant: TenantId) -> Result<Vec<Template>> {
        let c = client(&self.pool).await?;
        query_map(&c, sql::TEMPLATES, &[&tenant.to_string()], rows::template).await
    }

    async fn update_template(
        &self,
        tenant: TenantId,
        id: TemplateId,
        fields: TemplateFields,
        now: i64,
    ) -> Result<Template> {
        self.noted(async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            // The update locks the template: concurrent changes take their
            // versions one after another.
            let version: i32 = write_found(
                &tx,
                sql::UPDATE_TEMPLATE,
                &[
                    &fields.name,
                    &fields.description,
                    &now,
                    &id.to_string(),
                    &tenant.to_string(),
                ],
                rules::name_taken("template", &fields.name),
                |row| get(row, "version"),
            )
            .await?;
            insert_version(&tx, id, version, &fields, now).await?;
            let updated = load_template(&tx, tenant, id, Lock::None).await?;
            tx.commit().await.map_err(pg)?;
            Ok(updated)
        })
        .await
    }

    async fn delete_template(&self, tenant: TenantId, id: TemplateId) -> Result<()> {
        self.noted(async {
            let mut c = client(&self.pool).await?;
            let tx = c.transaction().await.map_err(pg)?;
            // Locked, so no schedule can take the template up (it locks the
            // template FOR KEY SHARE) between the check and the delete.
            load_template(&tx, tenant, id, Lock::Update).await?;
            let (id, tenant) = (id.to_string(), tenant.to_string());
            let used_by = query_map(&tx, sql::SCHEDULES_OF_TEMPLATE, &[&id, &tenant], |r| {
                get::<String>(r, "name")
            })
            .await?;
            rules::template_unused(&used_by)?;
            execute(&tx, sql::DELETE_TEMPLATE, &[&id, &tenant])
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)
        })
        .await
    }
}
