//! Counters of what a node's worker has done, for tests now and for metrics later.

use std::sync::atomic::{AtomicU64, Ordering};

/// Running totals since the worker started.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Recipients claimed.
    pub claimed: AtomicU64,
    /// Recipients handed to this worker as they were stored, claimed in
    /// their submission's transaction (see `herald_store::handoff`).
    pub handed: AtomicU64,
    /// Outcomes recorded.
    pub recorded: AtomicU64,
    /// Outcomes refused because their lease was no longer current.
    pub refused: AtomicU64,
    /// Recipients given back without an attempt (their route was busy).
    pub released: AtomicU64,
    /// Calls to record outcomes that the store refused (the outcomes were kept and retried).
    pub record_failures: AtomicU64,
    /// Outcomes given up because their lease ended before the store accepted them.
    pub dropped: AtomicU64,
    /// Turns of the loop that claimed nothing because this node's heartbeats
    /// were late (see `WorkerConfig::standing`).
    pub late_turns: AtomicU64,
}

impl WorkerStats {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
