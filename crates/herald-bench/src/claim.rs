//! The claim measurement: how fast a worker can claim due recipients from a
//! short queue and from a very long one, straight on the store.
//!
//! Two stores are filled — a short queue and a long one — and claimed from in
//! alternating rounds, so that a noisy disk (see FINDINGS.md: the same fsync
//! loop measured 490/s and 4,900/s minutes apart) hits both alike and the ratio
//! stays meaningful.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use herald_core::{EmailAddress, Subject, TenantId, TenantSlug};
use herald_store::{ClaimRequest, NewMessage, Store};
use serde_json::{Value, json};

use crate::place::{Leftovers, Place};
use crate::sys::{CpuMark, round};

/// Recipients per claim, as a worker with free slots would ask.
pub const CLAIM_BATCH: u32 = 100;
/// Claims (and next-due look-ups) with the queue's tenant passed over, per store.
const EXCLUDED_CLAIMS: usize = 20;
/// Claims per round on each store.
const CLAIMS_PER_ROUND: usize = 10;
/// Concurrent submitters while filling: enough to give the SQLite writer big groups.
const FILLERS: usize = 256;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A queue on its own store.
struct Queue {
    place: Place,
    store: Arc<dyn Store>,
    /// The one tenant whose mail fills the queue.
    tenant: Option<TenantId>,
    queued: u64,
    fill_seconds: f64,
    /// Claim times, one per claim.
    claims: Vec<Duration>,
    rows: u64,
    /// Claims and next-due look-ups with the tenant excluded, as a worker
    /// asks while the tenant's connections are all in use.
    excluded_claims: Vec<Duration>,
    excluded_next_due: Vec<Duration>,
}

impl Queue {
    async fn new(admin_url: Option<&str>, phase: &str) -> anyhow::Result<Queue> {
        let place = Place::fresh(admin_url, phase).await?;
        let store = place.open_store().await?;
        Ok(Queue {
            place,
            store,
            tenant: None,
            queued: 0,
            fill_seconds: 0.0,
            claims: Vec::new(),
            rows: 0,
            excluded_claims: Vec::new(),
            excluded_next_due: Vec::new(),
        })
    }

    /// Queues `count` small messages with one recipient each, through
    /// `Store::submit` from many tasks at once, printing progress on stderr.
    async fn fill(&mut self, count: u64, label: &str) -> anyhow::Result<()> {
        let slug = TenantSlug::parse("claims").map_err(|e| anyhow::anyhow!("{e}"))?;
        let tenant = self.store.create_tenant(slug, "Claims".into()).await?.id;
        self.tenant = Some(tenant);
        let next = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..FILLERS {
            let (store, next) = (self.store.clone(), next.clone());
            tasks.spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    store.submit(message(tenant)?).await?;
                }
                anyhow::Ok(())
            });
        }
        let progress = {
            let next = next.clone();
            let label = label.to_owned();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    let done = next.load(Ordering::Relaxed).min(count);
                    eprintln!("  … {label}: {done} of {count} queued");
                }
            })
        };
        let mut result = Ok(());
        while let Some(joined) = tasks.join_next().await {
            if let Err(error) = joined.context("a filler task panicked").and_then(|r| r) {
                result = Err(error);
            }
        }
        progress.abort();
        result?;
        self.queued = count;
        self.fill_seconds = started.elapsed().as_secs_f64();
        Ok(())
    }

    /// Claims `CLAIMS_PER_ROUND` batches one after another, as one worker does.
    async fn round(&mut self) -> anyhow::Result<()> {
        for _ in 0..CLAIMS_PER_ROUND {
            let started = Instant::now();
            let claimed = self
                .store
                .claim(claim_request(std::collections::HashMap::new()))
                .await?;
            self.claims.push(started.elapsed());
            self.rows += claimed.len() as u64;
        }
        Ok(())
    }

    /// What a worker does when its only tenant's pool is full: claim with the
    /// tenant excluded (nothing can come back), then ask when the next
    /// recipient of another tenant is due.
    async fn excluded(&mut self, times: usize) -> anyhow::Result<()> {
        let tenant = self.tenant.context("the queue was filled")?;
        for _ in 0..times {
            let started = Instant::now();
            self.store
                .claim(claim_request(std::collections::HashMap::from([(
                    tenant, 0,
                )])))
                .await?;
            self.excluded_claims.push(started.elapsed());
            let started = Instant::now();
            self.store.next_due(&[tenant]).await?;
            self.excluded_next_due.push(started.elapsed());
        }
        Ok(())
    }

    fn rate(&self) -> f64 {
        self.rows as f64 / self.claims.iter().sum::<Duration>().as_secs_f64().max(1e-9)
    }

    fn json(&self) -> Value {
        json!({
            "queued": self.queued,
            "fill_seconds": round(self.fill_seconds, 1),
            "fill_per_second": round(self.queued as f64 / self.fill_seconds.max(1e-9), 0),
            "claims": self.claims.len(),
            "rows_claimed": self.rows,
            "rows_per_second": round(self.rate(), 0),
            "claim_ms": crate::load::percentiles(&self.claims),
            "claim_excluding_the_tenant_ms": crate::load::percentiles(&self.excluded_claims),
            "next_due_excluding_the_tenant_ms": crate::load::percentiles(&self.excluded_next_due),
            "sqlite_file_mib": round(self.place.sqlite_mib(), 1),
        })
    }
}

/// A claim of `CLAIM_BATCH` recipients for this benchmark's node, with the
/// tenants' `rooms`, under a lease longer than the run: a claimed recipient
/// is never due again.
fn claim_request(rooms: std::collections::HashMap<TenantId, u32>) -> ClaimRequest {
    ClaimRequest {
        node: "bench-claims".into(),
        incarnation: "bench".into(),
        now: now_ms(),
        lease_ms: 3_600_000,
        limit: CLAIM_BATCH,
        rooms,
        default_room: u32::MAX,
    }
}

/// One small message: the claim is about recipient rows, so the body is kept
/// short to fill a million quickly; the body size does not enter the claim query.
fn message(tenant: TenantId) -> anyhow::Result<NewMessage> {
    let invalid = |e: herald_core::Invalid| anyhow::anyhow!("{e}");
    Ok(NewMessage::plain(
        tenant,
        vec![
            EmailAddress::parse(crate::content::RECIPIENT)
                .map_err(invalid)?
                .into(),
        ],
        Subject::parse("Claim benchmark").map_err(invalid)?,
        "A queued message for the claim benchmark.",
        now_ms(),
    ))
}

/// Fills a short and a long queue, then claims from both in alternating
/// rounds; returns both rates and their ratio.
pub async fn run(
    leftovers: &mut Leftovers,
    admin_url: Option<&str>,
    short: u64,
    long: u64,
    rounds: usize,
) -> anyhow::Result<Value> {
    let cpu = CpuMark::now();
    let mut small = Queue::new(admin_url, "claims_short").await?;
    let mut large = Queue::new(admin_url, "claims_long").await?;
    small.fill(short, "short queue").await?;
    large.fill(long, "long queue").await?;
    // The rounds leave at least half of the short queue queued.
    let rounds = rounds
        .min((short / (2 * CLAIMS_PER_ROUND as u64 * u64::from(CLAIM_BATCH))).max(1) as usize);
    for _ in 0..rounds {
        small.round().await?;
        large.round().await?;
    }
    small.excluded(EXCLUDED_CLAIMS).await?;
    large.excluded(EXCLUDED_CLAIMS).await?;
    let ratio = large.rate() / small.rate().max(1e-9);
    let median = |samples: &[Duration]| {
        let mut sorted = samples.to_vec();
        sorted.sort();
        sorted.get(sorted.len() / 2).copied().unwrap_or_default()
    };
    // The cost of passing over a stalled tenant holding the long queue, as a
    // multiple of passing over one holding the short queue: flat means ≈ 1.
    let stalled_ratio = median(&large.excluded_claims).as_secs_f64()
        / median(&small.excluded_claims).as_secs_f64().max(1e-9);
    let result = json!({
        "method": format!(
            "Store::claim of {CLAIM_BATCH} recipients at a time, one claim after another (one worker), \
             {rounds} rounds of {CLAIMS_PER_ROUND} claims alternating between the two stores; \
             then {EXCLUDED_CLAIMS} claims and next_due calls each with the queue's tenant excluded (room 0), \
             as the worker asks while that tenant's connections are all busy"
        ),
        "stalled_long_over_short": round(stalled_ratio, 3),
        "short_queue": small.json(),
        "long_queue": large.json(),
        "long_over_short": round(ratio, 3),
        // Read before the stores close: their writer threads' time goes with them.
        "cpu": cpu.since(),
    });
    drop(small.store);
    drop(large.store);
    leftovers.retire(small.place).await;
    leftovers.retire(large.place).await;
    Ok(result)
}
