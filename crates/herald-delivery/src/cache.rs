//! The per-node cache of tenants' effective providers, with bounded staleness.
//!
//! A change of a tenant's provider reaches every node within the staleness
//! bound; a refresh (`POST …/properties/refresh`) clears the entry at once.
//! Secrets stay sealed in the cache: they are opened per send.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use herald_core::TenantId;
use herald_store::{DeliveryStore, ProviderConfig, StoreError};

/// Cached provider configurations by tenant.
pub struct ProviderCache {
    staleness: Duration,
    entries: Mutex<HashMap<TenantId, (Option<ProviderConfig>, Instant)>>,
}

impl ProviderCache {
    /// A cache whose entries are at most `staleness` old.
    pub fn new(staleness: Duration) -> Self {
        ProviderCache {
            staleness,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The staleness bound.
    pub fn staleness(&self) -> Duration {
        self.staleness
    }

    /// The tenant's active provider (`None`: the system default), from the
    /// cache while the entry is fresh, else from the store.
    pub async fn get(
        &self,
        store: &dyn DeliveryStore,
        tenant: TenantId,
    ) -> Result<Option<ProviderConfig>, StoreError> {
        if let Some((config, at)) = self.entries.lock().expect("cache lock").get(&tenant) {
            if at.elapsed() < self.staleness {
                return Ok(config.clone());
            }
        }
        let config = store.active_provider(tenant).await?;
        self.entries
            .lock()
            .expect("cache lock")
            .insert(tenant, (config.clone(), Instant::now()));
        Ok(config)
    }

    /// Forgets the tenant's entry, so the next send reads the store.
    pub fn invalidate(&self, tenant: TenantId) {
        self.entries.lock().expect("cache lock").remove(&tenant);
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        self.entries.lock().expect("cache lock").clear();
    }
}
