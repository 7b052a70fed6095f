//! The SQLite store's message templates and their versions.

use herald_core::TemplateId;

use super::*;
use crate::Templates;

fn template_row(r: &Row) -> rusqlite::Result<Result<Template>> {
    Ok(rows::template(r))
}

/// The tenant's template, or not found.
pub(super) fn load_template(c: &Connection, tenant: TenantId, id: TemplateId) -> Result<Template> {
    let args = [id.to_string(), tenant.to_string()];
    one(c, sql::TEMPLATE_BY_ID, args, template_row)
}

/// Stores a version of a template: what its fields say from `at` on.
fn insert_version(
    c: &Connection,
    id: TemplateId,
    version: i64,
    fields: &TemplateFields,
    at: i64,
) -> Result<()> {
    c.prepare_cached(sql::INSERT_TEMPLATE_VERSION)
        .map_err(sql)?
        .execute(params![
            id.to_string(),
            version,
            fields.name,
            fields.description,
            fields.content.subject,
            fields.content.text,
            fields.content.html,
            at
        ])
        .map_err(sql)?;
    Ok(())
}

#[async_trait]
impl Templates for SqliteStore {
    async fn create_template(&self, t: NewTemplate) -> Result<Template> {
        self.db
            .write(move |c| {
                let f = &t.fields;
                c.prepare_cached(sql::INSERT_TEMPLATE)
                    .map_err(sql)?
                    .execute(params![
                        t.id.to_string(),
                        t.tenant_id.to_string(),
                        f.name,
                        f.description,
                        t.created_at
                    ])
                    .map_err(unique(rules::name_taken("template", &f.name)))?;
                insert_version(c, t.id, 1, f, t.created_at)?;
                load_template(c, t.tenant_id, t.id)
            })
            .await
    }

    async fn template(&self, tenant: TenantId, id: TemplateId) -> Result<Template> {
        self.db.read(move |c| load_template(c, tenant, id)).await
    }

    async fn template_named(&self, tenant: TenantId, name: &str) -> Result<Template> {
        let name = name.to_owned();
        self.db
            .read(move |c| {
                one(
                    c,
                    sql::TEMPLATE_BY_NAME,
                    [tenant.to_string(), name],
                    template_row,
                )
            })
            .await
    }

    async fn list_templates(&self, tenant: TenantId) -> Result<Vec<Template>> {
        self.db
            .read(move |c| list_parsed(c, sql::TEMPLATES, [tenant.to_string()], template_row))
            .await
    }

    async fn update_template(
        &self,
        tenant: TenantId,
        id: TemplateId,
        fields: TemplateFields,
        now: i64,
    ) -> Result<Template> {
        self.db
            .write(move |c| {
                let version: i64 = c
                    .prepare_cached(sql::UPDATE_TEMPLATE)
                    .map_err(sql)?
                    .query_row(
                        params![
                            fields.name,
                            fields.description,
                            now,
                            id.to_string(),
                            tenant.to_string()
                        ],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(unique(rules::name_taken("template", &fields.name)))?
                    .ok_or(StoreError::NotFound)?;
                insert_version(c, id, version, &fields, now)?;
                load_template(c, tenant, id)
            })
            .await
    }

    async fn delete_template(&self, tenant: TenantId, id: TemplateId) -> Result<()> {
        self.db
            .write(move |c| {
                let args = [id.to_string(), tenant.to_string()];
                load_template(c, tenant, id)?;
                // Checked before the foreign key would refuse the delete, to say which schedule.
                let used_by = list(c, sql::SCHEDULES_OF_TEMPLATE, args.clone(), |r| {
                    r.get::<_, String>(0)
                })?;
                rules::template_unused(&used_by)?;
                c.execute(sql::DELETE_TEMPLATE, args).map_err(sql)?;
                Ok(())
            })
            .await
    }
}
