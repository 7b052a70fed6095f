//! The ceiling: Herald's own SMTP client delivering straight to the sink, with
//! no store, no HTTP and no worker — the most any node could deliver here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herald_core::{EmailAddress, Port, Security, SmtpHost};
use herald_smtp::{Connection, Envelope, Target, Timeouts, wire};

use crate::content;
use crate::sink::Sink;

/// What the ceiling measured.
pub struct Ceiling {
    pub messages: u64,
    pub seconds: f64,
    pub failed: u64,
}

impl Ceiling {
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds.max(1e-9)
    }
}

/// The sink as an SMTP target without TLS; `egress: None` is the operator's
/// own relay, which the egress rules do not apply to.
pub fn target(sink: &Sink) -> anyhow::Result<Target> {
    Ok(Target {
        timeouts: Timeouts {
            connect: Duration::from_secs(10),
            command: Duration::from_secs(30),
            data: Duration::from_secs(30),
        },
        allow_plaintext_auth: true,
        ..Target::new(
            SmtpHost::parse("127.0.0.1").map_err(|e| anyhow::anyhow!("{e}"))?,
            Port::new(i64::from(sink.port())).map_err(|e| anyhow::anyhow!("{e}"))?,
            Security::None,
            "bench.example",
        )
    })
}

/// Sends `count` messages of `size` body bytes over `connections` connections,
/// each sending message after message, and waits until the sink has them all.
pub async fn run(
    sink: &Sink,
    count: u64,
    size: usize,
    connections: usize,
) -> anyhow::Result<Ceiling> {
    let target = Arc::new(target(sink)?);
    let envelope = Arc::new(Envelope {
        from: EmailAddress::parse(content::SENDER).map_err(|e| anyhow::anyhow!("{e}"))?,
        to: vec![EmailAddress::parse(content::RECIPIENT).map_err(|e| anyhow::anyhow!("{e}"))?],
    });
    // Stuffed once: the ceiling measures the SMTP path, not the copy.
    let data: Arc<[u8]> = wire::dot_stuffed(&content::rfc5322(size)).into();
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let before = sink.messages();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (target, envelope, data, next, failed) = (
            target.clone(),
            envelope.clone(),
            data.clone(),
            next.clone(),
            failed.clone(),
        );
        tasks.spawn(async move {
            let mut conn = Connection::open(&target, None).await?;
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let tx = conn.send(&envelope, &data).await?;
                if !tx.outcome_for(0).is_positive() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            conn.quit().await;
            Ok::<_, herald_smtp::SmtpError>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    let delivered = sink.wait_for(before + count, Duration::from_secs(30)).await - before;
    Ok(Ceiling {
        messages: delivered,
        seconds: started.elapsed().as_secs_f64(),
        failed: failed.load(Ordering::Relaxed),
    })
}
