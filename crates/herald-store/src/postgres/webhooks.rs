//! The PostgreSQL store's delivery webhooks: endpoints, the outbox's claims and attempts.

use herald_core::WebhookId;

use super::*;
use crate::Webhooks;

#[async_trait]
impl Webhooks for PgStore {
    async fn create_webhook(&self, _w: NewWebhook) -> Result<Webhook> {
        todo!()
    }
    async fn webhook(&self, _t: TenantId, _id: WebhookId) -> Result<Webhook> {
        todo!()
    }
    async fn list_webhooks(&self, _t: TenantId) -> Result<Vec<Webhook>> {
        todo!()
    }
    async fn update_webhook(
        &self,
        _t: TenantId,
        _id: WebhookId,
        _c: WebhookChange,
        _now: i64,
    ) -> Result<Webhook> {
        todo!()
    }
    async fn rotate_webhook_secret(
        &self,
        _t: TenantId,
        _id: WebhookId,
        _s: String,
        _u: i64,
        _now: i64,
    ) -> Result<Webhook> {
        todo!()
    }
    async fn delete_webhook(&self, _t: TenantId, _id: WebhookId) -> Result<()> {
        todo!()
    }
    async fn webhook_deliveries(
        &self,
        _t: TenantId,
        _id: WebhookId,
        _l: u32,
    ) -> Result<Vec<WebhookDelivery>> {
        todo!()
    }
    async fn webhook_secrets(
        &self,
        _t: TenantId,
        _id: WebhookId,
        _now: i64,
    ) -> Result<(String, Option<String>)> {
        todo!()
    }
    async fn record_webhook_test(&self, _r: WebhookTestRecord) -> Result<()> {
        todo!()
    }
    async fn claim_webhook_events(&self, _c: WebhookClaim) -> Result<Vec<ClaimedEvent>> {
        todo!()
    }
    async fn finish_webhook_events(
        &self,
        _a: Vec<WebhookAttempt>,
        _d: i64,
    ) -> Result<Vec<DisabledWebhook>> {
        todo!()
    }
    async fn release_webhook_leases(&self, _n: &str, _i: &str, _now: i64) -> Result<u64> {
        todo!()
    }
    async fn next_webhook_due(&self) -> Result<Option<i64>> {
        todo!()
    }
    async fn prune_webhook_events(&self, _b: i64) -> Result<u64> {
        todo!()
    }
}
