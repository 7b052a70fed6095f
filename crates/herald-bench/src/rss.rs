//! Memory with a large queue, measured in a child process of this same binary
//! so that its peak (VmHWM) holds only this scenario and none of the other
//! phases: queue N messages on an API-only node, then let a worker node drain
//! them into a sink of the child's own.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::api::Api;
use crate::load::{self, Batch};
use crate::place::{NodeSpec, Place};
use crate::sink::Sink;
use crate::sys::{CpuMark, memory_mib, round};
use crate::{Options, content};

/// The line prefix the child's result is printed after.
const RESULT: &str = "HERALD_BENCH_RSS_RESULT ";

/// What the child needs to know.
pub struct ChildArgs {
    pub queue: u64,
    pub size: usize,
    pub connections: usize,
    pub concurrency: usize,
    pub batch_clients: usize,
    pub clients: usize,
    pub deadline: Duration,
    pub database_url: Option<String>,
}

/// Runs the scenario in a child process and returns its figures.
pub async fn run(options: &Options) -> anyhow::Result<Value> {
    let exe = std::env::current_exe().context("finding this program to run it again")?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("--rss-child")
        .args(["--rss-queue", &options.rss_queue.to_string()])
        .args(["--size", &options.size.to_string()])
        .args(["--connections", &options.connections.to_string()])
        .args(["--concurrency", &options.concurrency.to_string()])
        .args(["--batch-clients", &options.batch_clients.to_string()])
        .args(["--clients", &options.clients.to_string()])
        .args([
            "--deadline-seconds",
            &options.deadline.as_secs().to_string(),
        ]);
    if let Some(url) = &options.database_url {
        command.args(["--database-url", url]);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting the memory child process")?;
    let mut lines = BufReader::new(child.stdout.take().context("the child's output")?).lines();
    let mut result = None;
    while let Some(line) = lines.next_line().await? {
        if let Some(json) = line.strip_prefix(RESULT) {
            result = Some(serde_json::from_str::<Value>(json)?);
        }
    }
    let status = child.wait().await?;
    match result {
        Some(result) => Ok(result),
        None => bail!("the memory child process ended ({status}) without a result"),
    }
}

/// The child's side: queue, measure, drain, measure, print.
pub async fn child(args: ChildArgs) -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let place = Place::fresh(args.database_url.as_deref(), "memory").await?;
    let (rss_start, _) = memory_mib();

    let queue_node = place
        .start(&NodeSpec {
            name: "bench-queue",
            worker: false,
            concurrency: args.concurrency,
        })
        .await?;
    let api = Api::new(queue_node.http_addr)?;
    let tenant = api.set_up_tenant(sink.port(), args.connections).await?;
    let cpu = CpuMark::now();
    let queued = if api.has_batch(&tenant).await? {
        let per_batch = args.queue.clamp(1, 1000);
        let body: &'static [u8] = content::batch_bytes(args.size, per_batch as usize).leak();
        let batch = Batch {
            body,
            size: per_batch,
        };
        load::batches(
            std::slice::from_ref(&api),
            &tenant,
            batch,
            args.queue / per_batch,
            args.batch_clients,
        )
        .await
    } else {
        let body: &'static [u8] = content::submission_bytes(args.size).leak();
        load::single(
            std::slice::from_ref(&api),
            &tenant,
            body,
            args.queue,
            args.clients,
        )
        .await
    };
    let queue_cpu = cpu.since();
    let (rss_queued, hwm_queued) = memory_mib();
    drop(api);
    queue_node.shutdown().await;

    let cpu = CpuMark::now();
    let started = Instant::now();
    let drain_node = place
        .start(&NodeSpec {
            name: "bench-drain",
            worker: true,
            concurrency: args.concurrency,
        })
        .await?;
    let delivered = sink.wait_for(queued.accepted, args.deadline).await;
    let drain_seconds = started.elapsed().as_secs_f64();
    let drain_cpu = cpu.since();
    let (rss_drained, hwm_drained) = memory_mib();
    drain_node.shutdown().await;
    let sqlite_mib = place.sqlite_mib();

    let result = json!({
        "what": "a child process holding one node (API only while queueing, then a worker-only restart on the same store), the load generator and a sink",
        "rss_at_start_mib": round(rss_start, 1),
        "queue": {
            "queued": queued.accepted,
            "ingest": queued.json(),
            "cpu": queue_cpu,
            "rss_after_queueing_mib": round(rss_queued, 1),
            "peak_rss_while_queueing_mib": round(hwm_queued, 1),
        },
        "drain": {
            "delivered": delivered,
            "seconds": round(drain_seconds, 2),
            "delivered_per_second": round(delivered as f64 / drain_seconds.max(1e-9), 0),
            "cpu": drain_cpu,
            "rss_after_draining_mib": round(rss_drained, 1),
            "peak_rss_including_draining_mib": round(hwm_drained, 1),
        },
        "sqlite_file_mib": round(sqlite_mib, 1),
    });
    println!("{RESULT}{result}");
    // After the result, so that the LISTEN task's complaints about the dropped
    // database cannot get in its way.
    place.remove().await;
    Ok(())
}
