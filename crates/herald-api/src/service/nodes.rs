//! The nodes of the installation as the services need them: whether a worker is alive.

use herald_core::NodeRole;
use herald_core::timestamp::now_ms;

use crate::{ApiError, AppState};

/// True when some node with the worker role sent a heartbeat recently.
pub async fn worker_alive(state: &AppState) -> Result<bool, ApiError> {
    let now = now_ms();
    Ok(state.store.list_nodes().await?.iter().any(|node| {
        node.roles.contains(&NodeRole::Worker) && crate::is_alive(node, now, state.alive_within)
    }))
}
