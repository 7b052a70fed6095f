//! Delivery webhooks: signing (Standard Webhooks), posting one event, and the
//! dispatcher that drains the outbox with retries.

mod dispatch;
mod send;
mod sign;

pub use dispatch::{Dispatcher, EventRoom, WebhookConfig};
pub use send::{Event, Posted, keys, post};
pub use sign::{SigningKey, signature};
