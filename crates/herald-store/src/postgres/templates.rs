//! The PostgreSQL store's message templates and their versions.

use herald_core::TemplateId;

use super::*;
use crate::Templates;

fn pending<T>() -> Result<T> {
    Err(StoreError::Unavailable(
        "templates are not stored yet".into(),
    ))
}

#[async_trait]
impl Templates for PgStore {
    async fn create_template(&self, _t: NewTemplate) -> Result<Template> {
        pending()
    }
    async fn template(&self, _tenant: TenantId, _id: TemplateId) -> Result<Template> {
        pending()
    }
    async fn template_named(&self, _tenant: TenantId, _name: &str) -> Result<Template> {
        pending()
    }
    async fn list_templates(&self, _tenant: TenantId) -> Result<Vec<Template>> {
        pending()
    }
    async fn update_template(
        &self,
        _tenant: TenantId,
        _id: TemplateId,
        _fields: TemplateFields,
        _now: i64,
    ) -> Result<Template> {
        pending()
    }
    async fn delete_template(&self, _tenant: TenantId, _id: TemplateId) -> Result<()> {
        pending()
    }
}
