//! Delivery: resolving a tenant's effective provider, rendering messages, and the
//! worker loop that claims due recipients, sends them and records every attempt.

mod attachment;
mod cache;
pub mod gateway;
pub mod guarded_http;
mod header;
mod http1;
mod oauth;
mod pool;
mod raw;
mod render;
mod retry;
mod route;
mod stats;
pub mod webhook;
mod worker;

pub use cache::ProviderCache;
pub use pool::PoolLimits;
pub use render::{Rendered, render};
pub use retry::RetryPolicy;
pub use route::{
    DefaultProvider, Login, ResolveError, Route, Transport, fallback_recipient, load_config, route,
};
pub use stats::WorkerStats;
pub use worker::{Worker, WorkerConfig};
