//! LISTEN/NOTIFY: one dedicated connection per node hears other nodes' new
//! mail and refreshed properties, so nobody waits for the next poll, and
//! changes of tokens, people and tenants, so that the node forgets what it
//! looked up of them ([`AccessCache`]). Polling stays the fallback: a lost
//! connection is reopened, and nothing is lost meanwhile, only heard later;
//! the access cache keeps nothing until it is back.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use herald_core::TenantId;
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls};

use super::db::describe;
use crate::StoreEvent;
use crate::access::{self, AccessCache};

/// The channel on which submissions are announced.
pub(crate) const MAIL: &str = "herald_mail";
/// The channel on which refreshed properties are announced, with the tenant id.
pub(crate) const PROPERTIES: &str = "herald_properties";

/// The pause before reopening a connection that listened; it doubles, up
/// to 10 s, while connecting fails.
const FIRST_PAUSE: Duration = Duration::from_millis(200);

/// Listens until the process ends, reconnecting after a failure.
pub(crate) async fn run(
    url: String,
    events: broadcast::Sender<StoreEvent>,
    access: Arc<AccessCache>,
) {
    let mut backoff = FIRST_PAUSE;
    loop {
        let mut listened = false;
        let heard = listen(&url, &events, &access, &mut listened).await;
        access.listening(false);
        if let Err(error) = heard {
            // The server's own words: the error's display alone is "db error".
            let error = describe(&error);
            tracing::warn!(%error, "the LISTEN connection failed; polling covers the gap until it is back");
        }
        // A connection that listened starts the pauses afresh: a cut after
        // hours of listening is not kept waiting by an outage long before.
        if listened {
            backoff = FIRST_PAUSE;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Listens on one connection until it ends; `listened` turns true once
/// the LISTEN commands have run.
async fn listen(
    url: &str,
    events: &broadcast::Sender<StoreEvent>,
    access: &AccessCache,
    listened: &mut bool,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let commands = format!(
        "LISTEN {MAIL}; LISTEN {PROPERTIES}; LISTEN {}",
        access::CHANNEL
    );
    let subscribe = client.batch_execute(&commands);
    tokio::pin!(subscribe);
    // The connection must be driven while the LISTEN commands run.
    loop {
        tokio::select! {
            done = &mut subscribe => { done?; break; }
            message = messages.next() => match message {
                Some(Ok(message)) => forward(message, events, access),
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
    // A missed notification is possible while reconnecting: wake the worker
    // once; from here on every change of access is heard.
    let _ = events.send(StoreEvent::Mail);
    access.listening(true);
    *listened = true;
    while let Some(message) = messages.next().await {
        forward(message?, events, access);
    }
    Ok(())
}

fn forward(message: AsyncMessage, events: &broadcast::Sender<StoreEvent>, access: &AccessCache) {
    let AsyncMessage::Notification(note) = message else {
        return;
    };
    let event = match note.channel() {
        access::CHANNEL => return access.forget(),
        MAIL => StoreEvent::Mail,
        PROPERTIES => match note.payload().parse::<TenantId>() {
            Ok(tenant) => StoreEvent::Properties(tenant),
            Err(_) => return,
        },
        _ => return,
    };
    // No receiver yet (a node still starting) is fine: nothing is waiting.
    let _ = events.send(event);
}
