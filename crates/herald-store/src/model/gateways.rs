//! The records of gateways: processes inside a tenant's network that fetch
//! the tenant's mail from Herald and deliver it there, and their instances.

use herald_core::{GatewayId, TenantId};
use serde::Serialize;

/// A tenant's gateway, with the instances that reported, newest seen first.
/// Never carries its token's hash.
#[derive(Clone, Debug, Serialize)]
pub struct Gateway {
    pub id: GatewayId,
    #[serde(skip)]
    pub tenant_id: TenantId,
    pub name: String,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub created_at: i64,
    /// When the token in force was made: at creation, or at the latest replacement.
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub token_created_at: i64,
    pub instances: Vec<GatewayInstance>,
}

/// One running copy of a gateway, known by the name it reports.
///
/// `delivered_this_hour` and `failed_this_hour` count the outcomes of the
/// last hour, to the minute: of the [`GATEWAY_WINDOW_MINUTES`] minutes up
/// to the one in which it was read, that one included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GatewayInstance {
    pub name: String,
    pub version: String,
    /// The address it connected from, as the node saw it.
    pub address: String,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub first_seen_at: i64,
    #[serde(serialize_with = "herald_core::timestamp::serialize")]
    pub last_seen_at: i64,
    pub delivered_this_hour: u64,
    pub failed_this_hour: u64,
}

/// A gateway to store: the SHA-256 of its random token only.
#[derive(Clone, Debug)]
pub struct NewGateway {
    pub id: GatewayId,
    pub tenant_id: TenantId,
    pub name: String,
    pub token_hash: String,
    pub created_at: i64,
}

/// That an instance of a gateway reported at `at`.
#[derive(Clone, Debug)]
pub struct GatewaySeen {
    pub gateway_id: GatewayId,
    /// The instance's name, unique within its gateway.
    pub name: String,
    pub version: String,
    pub address: String,
    pub at: i64,
    /// The reporting process: a new one gets the instance's earlier
    /// processes' leases back.
    pub incarnation: String,
}

/// The lease owner of a gateway's instance's claims: `{gateway}/{instance}`.
pub fn gateway_lease_owner(gateway: &str, instance: &str) -> String {
    format!("{gateway}/{instance}")
}

/// How many minutes of an instance's outcomes it shows: an hour.
pub const GATEWAY_WINDOW_MINUTES: i64 = 60;

/// The minute a time (Unix milliseconds) falls in, as outcomes are counted.
pub fn gateway_minute(at: i64) -> i64 {
    at.div_euclid(60_000)
}

/// The minute after which outcomes count in the window read at `now`.
pub fn gateway_window_after(now: i64) -> i64 {
    gateway_minute(now) - GATEWAY_WINDOW_MINUTES
}
