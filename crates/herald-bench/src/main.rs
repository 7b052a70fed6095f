//! `herald-bench`: Herald's throughput benchmark. Run it with
//! `cargo run --release -p herald-bench` (add `--quick` for a smoke run).
//!
//! In one process it starts a fast SMTP sink on 127.0.0.1:0, measures the
//! ceiling (Herald's SMTP client straight into the sink), then nodes on fresh
//! stores: durable ingest through the single and batch APIs, end-to-end
//! delivery, ingest latency at a fixed offered rate, memory with a large queue
//! (in a child process), fairness between a tenant with a slow backlog and one
//! with a trickle, the claim rate with a long queue against a short one, and
//! SMTP ingest into Herald's listener against the same load into Postfix's smtpd.
//! It prints a table and writes every figure as JSON.

mod api;
mod ceiling;
mod claim;
mod content;
mod fairness;
mod gateway;
mod hooks;
mod load;
mod place;
mod poster;
mod postfix;
mod report;
mod rss;
mod sink;
mod smtp_ingest;
mod smtp_load;
mod sys;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use herald::node::Node;
use serde_json::{Map, Value, json};

use crate::api::{Api, Tenant};
use crate::load::{Batch, Outcome};
use crate::place::{Leftovers, NodeSpec, Place};
use crate::sink::Sink;
use crate::smtp_load::SmtpLoad;
use crate::sys::{CpuMark, memory_mib, round};

/// Herald's throughput benchmark: SMTP ceiling, durable ingest, end-to-end
/// delivery, ingest latency, fairness between tenants, memory and claim rate,
/// on this machine's loopback.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Messages per phase: single and batch ingest, end to end; the ceiling sends four times as many,
    /// at least 100,000, so that it runs for seconds [default: 100000; --quick 20000].
    #[arg(long)]
    count: Option<u64>,
    /// Text body of each message in bytes [default: 2048].
    #[arg(long)]
    size: Option<usize>,
    /// SMTP connections: the ceiling's and the sink server's `max_connections` [default: 8].
    #[arg(long)]
    connections: Option<usize>,
    /// The node's delivery concurrency (messages in flight) [default: 256, the node's own default].
    #[arg(long)]
    concurrency: Option<usize>,
    /// Concurrent HTTP clients on the single-message API [default: 32].
    #[arg(long)]
    clients: Option<usize>,
    /// Concurrent HTTP clients on the batch API, each posting 1,000 messages at a time [default: 4].
    #[arg(long)]
    batch_clients: Option<usize>,
    /// Offered rate of the latency measurement, in messages per second [default: 1000].
    #[arg(long)]
    offered_rate: Option<f64>,
    /// How long the latency measurement offers load, in seconds [default: 10; --quick 5].
    #[arg(long)]
    latency_seconds: Option<f64>,
    /// Messages queued for the memory measurement [default: 100000; --quick 20000].
    #[arg(long)]
    rss_queue: Option<u64>,
    /// Messages in the long queue of the claim measurement [default: 1000000; --quick 200000].
    #[arg(long)]
    claim_queue: Option<u64>,
    /// Messages in the short queue of the claim measurement [default: 10000].
    #[arg(long)]
    claim_short: Option<u64>,
    /// Messages in tenant A's backlog in the fairness phase [default: 100000; --quick 10000].
    #[arg(long)]
    fairness_backlog: Option<u64>,
    /// The delay of tenant A's slow sink before each reply to the end of DATA, in milliseconds [default: 50].
    #[arg(long)]
    fairness_delay_ms: Option<u64>,
    /// `max_connections` of tenant A's server in the fairness phase [default: 4].
    #[arg(long)]
    fairness_connections: Option<usize>,
    /// Nodes delivering in the end-to-end and latency phases (more than one makes sense on PostgreSQL) [default: 1].
    #[arg(long)]
    nodes: Option<usize>,
    /// A PostgreSQL URL used as an administrative connection: each phase creates a fresh
    /// database next to it (`herald_bench_<phase>_<id>`) and drops it at the end.
    /// Without it, each phase uses a fresh SQLite file in a temporary directory.
    #[arg(long, env = "HERALD_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Where the JSON results go [default: target/bench/results.json].
    #[arg(long)]
    out: Option<PathBuf>,
    /// A smoke run of about 30 seconds with small counts.
    #[arg(long)]
    quick: bool,
    /// SMTP sessions at once in the SMTP ingest phases (Herald's listener, Postfix's smtpd) [default: 32].
    #[arg(long)]
    smtp_connections: Option<usize>,
    /// Messages each SMTP session sends in those phases [default: 625, 20,000 in all; --quick 150].
    #[arg(long)]
    smtp_messages: Option<u64>,
    /// Body size of the SMTP ingest phases' messages in bytes [default: 1024].
    #[arg(long)]
    smtp_size: Option<usize>,
    /// Runs smtp-ingest with the node's worker role off: ingest alone, without
    /// the delivery that Postfix does meanwhile in postfix-smtpd.
    #[arg(long)]
    smtp_no_delivery: bool,
    /// Phases to leave out, comma-separated: ceiling, ingest, smtp-ingest, postfix-smtpd, e2e,
    /// e2e-single, webhooks, gateway, latency, fairness, memory, claims.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Longest wait for deliveries in a phase, in seconds [default: 180].
    #[arg(long)]
    deadline_seconds: Option<u64>,
    /// Rounds of the webhook comparison, each end to end without a webhook and with one, in
    /// alternating order; the figure is the median of the rounds' ratios (the lower middle
    /// one of an even number) [default: 3].
    #[arg(long)]
    webhook_rounds: Option<usize>,
    /// Internal: run the memory scenario as the child process.
    #[arg(long, hide = true)]
    rss_child: bool,
}

/// The options of a run, with defaults filled in.
pub struct Options {
    pub count: u64,
    pub size: usize,
    pub connections: usize,
    pub concurrency: usize,
    pub clients: usize,
    pub batch_clients: usize,
    pub offered_rate: f64,
    pub latency_seconds: f64,
    pub rss_queue: u64,
    pub claim_queue: u64,
    pub claim_short: u64,
    pub fairness_backlog: u64,
    pub fairness_delay: Duration,
    pub fairness_connections: usize,
    pub nodes: usize,
    pub database_url: Option<String>,
    pub out: PathBuf,
    pub quick: bool,
    pub skip: Vec<String>,
    pub deadline: Duration,
    pub webhook_rounds: usize,
    pub smtp: SmtpLoad,
    pub smtp_delivery: bool,
}

impl Options {
    fn from(cli: &Cli) -> anyhow::Result<Options> {
        let quick = cli.quick;
        let pick = |given: Option<u64>, normal: u64, smoke: u64| {
            given.unwrap_or(if quick { smoke } else { normal })
        };
        let options = Options {
            count: pick(cli.count, 100_000, 20_000).max(1),
            size: cli.size.unwrap_or(2048),
            connections: cli.connections.unwrap_or(8).clamp(1, 100),
            concurrency: cli.concurrency.unwrap_or(256).max(1),
            clients: cli.clients.unwrap_or(32).max(1),
            batch_clients: cli.batch_clients.unwrap_or(4).max(1),
            offered_rate: cli.offered_rate.unwrap_or(1000.0),
            latency_seconds: cli
                .latency_seconds
                .unwrap_or(if quick { 5.0 } else { 10.0 }),
            rss_queue: pick(cli.rss_queue, 100_000, 20_000).max(1),
            claim_queue: pick(cli.claim_queue, 1_000_000, 200_000).max(1),
            claim_short: pick(cli.claim_short, 10_000, 10_000).max(1),
            fairness_backlog: pick(cli.fairness_backlog, 100_000, 10_000).max(1),
            fairness_delay: Duration::from_millis(cli.fairness_delay_ms.unwrap_or(50)),
            fairness_connections: cli.fairness_connections.unwrap_or(4).clamp(1, 100),
            nodes: cli.nodes.unwrap_or(1).max(1),
            database_url: cli.database_url.clone(),
            out: cli
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("target/bench/results.json")),
            quick,
            skip: cli.skip.iter().map(|s| s.trim().to_owned()).collect(),
            deadline: Duration::from_secs(cli.deadline_seconds.unwrap_or(180)),
            webhook_rounds: cli.webhook_rounds.unwrap_or(3).max(1),
            smtp: SmtpLoad {
                connections: cli.smtp_connections.unwrap_or(32).clamp(1, 1000),
                per_connection: pick(cli.smtp_messages, 625, 150).max(1),
                size: cli.smtp_size.unwrap_or(1024),
            },
            smtp_delivery: !cli.smtp_no_delivery,
        };
        anyhow::ensure!(
            options.offered_rate > 0.0 && options.latency_seconds > 0.0,
            "--offered-rate and --latency-seconds must be positive"
        );
        const PHASES: [&str; 12] = [
            "ceiling",
            "ingest",
            "smtp-ingest",
            "postfix-smtpd",
            "e2e",
            "e2e-single",
            "webhooks",
            "gateway",
            "latency",
            "fairness",
            "memory",
            "claims",
        ];
        if let Some(unknown) = options.skip.iter().find(|s| !PHASES.contains(&s.as_str())) {
            anyhow::bail!("--skip {unknown:?}: the phases are {}", PHASES.join(", "));
        }
        Ok(options)
    }

    /// The ceiling is fast: four times the count, at least 100,000, keeps it
    /// running long enough for a steady rate.
    fn ceiling_count(&self) -> u64 {
        (self.count * 4).max(100_000)
    }

    fn runs(&self, phase: &str) -> bool {
        !self.skip.iter().any(|s| s == phase)
    }

    fn json(&self) -> Value {
        json!({
            "count": self.count,
            "size": self.size,
            "connections": self.connections,
            "concurrency": self.concurrency,
            "clients": self.clients,
            "batch_clients": self.batch_clients,
            "offered_rate": self.offered_rate,
            "latency_seconds": self.latency_seconds,
            "rss_queue": self.rss_queue,
            "claim_queue": self.claim_queue,
            "claim_short": self.claim_short,
            "fairness_backlog": self.fairness_backlog,
            "fairness_delay_ms": self.fairness_delay.as_millis() as u64,
            "fairness_connections": self.fairness_connections,
            "nodes": self.nodes,
            "database": self.database_label(),
            "out": self.out.display().to_string(),
            "quick": self.quick,
            "skip": self.skip,
            "deadline_seconds": self.deadline.as_secs(),
            "webhook_rounds": self.webhook_rounds,
            "smtp": self.smtp.json(),
            "smtp_delivery": self.smtp_delivery,
        })
    }

    /// The database kind and location, without a password.
    fn database_label(&self) -> String {
        match &self.database_url {
            None => "sqlite (a fresh file per phase in a temporary directory)".into(),
            Some(url) => match herald::config::Database::parse(url) {
                Ok(db) => format!("{db} (as admin URL: a fresh database per phase)"),
                Err(_) => "an unparsable URL".into(),
            },
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The node's own warnings (a failed claim, a lost LISTEN connection) go
    // to standard error, except the node's notice that no system default
    // relay is set, which does not matter here: the benchmark's tenant has a
    // provider of its own. RUST_LOG shows more.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,herald::node=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let options = Options::from(&cli)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if cli.rss_child {
        return runtime.block_on(rss::child(rss::ChildArgs {
            queue: options.rss_queue,
            size: options.size,
            connections: options.connections,
            concurrency: options.concurrency,
            batch_clients: options.batch_clients,
            clients: options.clients,
            deadline: options.deadline,
            database_url: options.database_url.clone(),
        }));
    }
    runtime.block_on(run(options))
}

/// Says which phase is starting, on standard error, so the table stays clean.
fn phase(name: &str) {
    eprintln!("▶ {name}");
}

/// A figure of a phase already run, if it ran and has it.
fn figure(results: &Map<String, Value>, phase: &str, field: &str) -> Option<f64> {
    results.get(phase).and_then(|r| r[field].as_f64())
}

/// Sets `figures[key]` to `part / whole` rounded to `digits`, when both are
/// known and `whole` is above zero.
fn set_ratio(figures: &mut Value, key: &str, part: Option<f64>, whole: Option<f64>, digits: i32) {
    if let (Some(part), Some(whole)) = (part, whole.filter(|w| *w > 0.0)) {
        figures[key] = json!(round(part / whole, digits));
    }
}

/// Runs every phase in order and reports.
async fn run(options: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let date = sys::now_rfc3339();
    let sink = Sink::start().await?;
    let mut results = Map::new();
    let mut leftovers = Leftovers::default();
    let single_body: &'static [u8] = content::submission_bytes(options.size).leak();
    let per_batch = options.count.clamp(1, 1000);
    let batch = Batch {
        body: content::batch_bytes(options.size, per_batch as usize).leak(),
        size: per_batch,
    };

    let mut ceiling_rate = None;
    if options.runs("ceiling") {
        phase("ceiling: Herald's SMTP client straight into the sink");
        let cpu = CpuMark::now();
        let bytes_before = sink.bytes();
        let c = ceiling::run(
            &sink,
            options.ceiling_count(),
            options.size,
            options.connections,
        )
        .await?;
        ceiling_rate = Some(c.rate());
        results.insert(
            "ceiling".into(),
            json!({
                "what": "herald_smtp::Connection (PIPELINING, one write per body) into the sink, each connection sending message after message",
                "messages": c.messages,
                "failed": c.failed,
                "connections": options.connections,
                "seconds": round(c.seconds, 3),
                "messages_per_second": round(c.rate(), 0),
                "wire_bytes_per_message": (sink.bytes() - bytes_before) / c.messages.max(1),
                "cpu": cpu.since(),
            }),
        );
    }

    if options.runs("ingest") {
        phase("ingest: single and batch API on an API-only node (delivery off)");
        let figures = ingest(&options, &sink, single_body, batch, &mut leftovers).await?;
        results.insert("ingest".into(), figures);
    }

    if options.runs("smtp-ingest") {
        phase(&format!(
            "smtp-ingest: {} SMTP sessions × {} messages into Herald's listener (connector), {}",
            options.smtp.connections,
            options.smtp.per_connection,
            if options.smtp_delivery {
                "delivering to the sink"
            } else {
                "worker off"
            }
        ));
        results.insert(
            "smtp_ingest".into(),
            smtp_ingest::run(&options, &sink, options.smtp, &mut leftovers).await?,
        );
    }

    if options.runs("postfix-smtpd") {
        phase(
            "postfix-smtpd: the same sessions into a private Postfix's smtpd, relaying to the sink",
        );
        let figures = match postfix::run(&sink, options.smtp, options.deadline).await? {
            Ok(figures) => figures,
            Err(why) => {
                eprintln!("  postfix-smtpd left out: {why}");
                json!({ "skipped": why })
            }
        };
        results.insert("postfix_smtpd".into(), figures);
    }
    let postfix = figure(&results, "postfix_smtpd", "accepted_per_second");
    if let Some(smtp_ingest) = results.get_mut("smtp_ingest") {
        let herald = smtp_ingest["accepted_per_second"].as_f64();
        set_ratio(smtp_ingest, "ratio_to_postfix", herald, postfix, 2);
    }

    if options.runs("e2e") || options.runs("latency") {
        let place = Place::fresh(options.database_url.as_deref(), "e2e").await?;
        let cluster = start_nodes(&options, &place, &sink).await?;
        if options.runs("e2e") {
            phase("end to end: submit, deliver into the sink");
            let mut e2e = end_to_end(&options, &sink, &cluster, single_body, Some(batch)).await?;
            let rate = e2e["delivered_per_second"].as_f64();
            set_ratio(&mut e2e, "ratio_to_ceiling", rate, ceiling_rate, 3);
            results.insert("end_to_end".into(), e2e);
        }
        if options.runs("latency") {
            phase("latency: open-loop submissions at a fixed rate, delivery running");
            results.insert(
                "latency".into(),
                latency(
                    &options,
                    &sink,
                    &cluster.apis[0],
                    &cluster.tenant,
                    single_body,
                )
                .await,
            );
        }
        let (rss, hwm) = memory_mib();
        results.insert(
            "memory_after_e2e".into(),
            json!({
                "what": "this benchmark process after the phases so far: sink, load generator and the node(s) of the end-to-end phase",
                "rss_mib": round(rss, 1),
                "peak_rss_mib": round(hwm, 1),
            }),
        );
        cluster.shutdown().await;
        leftovers.retire(place).await;
    }

    if options.runs("e2e-single") {
        phase(&format!(
            "end to end, single API: {} clients, one message per request, into the sink",
            options.clients
        ));
        let place = Place::fresh(options.database_url.as_deref(), "e2e_single").await?;
        let cluster = start_nodes(&options, &place, &sink).await?;
        let mut figures = end_to_end(&options, &sink, &cluster, single_body, None).await?;
        cluster.shutdown().await;
        leftovers.retire(place).await;
        let rate = figures["delivered_per_second"].as_f64();
        let postfix = figure(&results, "postfix_smtpd", "delivered_per_second");
        set_ratio(
            &mut figures,
            "ratio_to_postfix_end_to_end",
            rate,
            postfix,
            2,
        );
        set_ratio(&mut figures, "ratio_to_ceiling", rate, ceiling_rate, 3);
        results.insert("end_to_end_single".into(), figures);
    }

    if options.runs("webhooks") {
        phase(&format!(
            "end to end with webhooks: every message's event posted to a webhook sink, against without, {} round(s) in alternating order",
            options.webhook_rounds
        ));
        let figures = webhook_rounds(&options, &sink, &mut leftovers, single_body, batch).await?;
        results.insert("end_to_end_with_webhooks".into(), figures);
    }

    if options.runs("gateway") {
        phase("end to end through a gateway: the node stores, a gateway in this process delivers");
        let place = Place::fresh(options.database_url.as_deref(), "gateway").await?;
        let mut figures = gateway::run(&options, &sink, &place, single_body, batch).await?;
        let through = figures["delivered_per_second"].as_f64();
        let plain = figure(&results, "end_to_end", "delivered_per_second");
        set_ratio(&mut figures, "ratio_to_end_to_end", through, plain, 3);
        results.insert("end_to_end_through_a_gateway".into(), figures);
        leftovers.retire(place).await;
    }

    if options.runs("fairness") {
        phase(&format!(
            "fairness: {} messages at {}/s for tenant B behind tenant A's backlog of {} on a slow server",
            fairness::B_MESSAGES,
            fairness::B_RATE,
            options.fairness_backlog
        ));
        results.insert(
            "fairness".into(),
            fairness::run(&options, &mut leftovers).await?,
        );
    }

    if options.runs("memory") {
        phase(&format!(
            "memory: {} messages queued on an API-only node, then drained, in a child process",
            options.rss_queue
        ));
        results.insert("memory_with_queue".into(), rss::run(&options).await?);
    }

    if options.runs("claims") {
        phase(&format!(
            "claims: a queue of {} against one of {} (filling takes a while)",
            options.claim_queue, options.claim_short
        ));
        let claims = claim::run(
            &mut leftovers,
            options.database_url.as_deref(),
            options.claim_short,
            options.claim_queue,
            5,
        )
        .await?;
        results.insert("claims".into(), claims);
    }

    leftovers.remove_all().await;
    let (rss, hwm) = memory_mib();
    results.insert(
        "memory_process".into(),
        json!({
            "what": "this benchmark process at the end: everything above except the memory child, including the claim phase's stores",
            "rss_mib": round(rss, 1),
            "peak_rss_mib": round(hwm, 1),
        }),
    );
    let mut report = json!({
        "tool": format!("herald-bench {}", env!("CARGO_PKG_VERSION")),
        "date": date,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": sys::machine(),
        "options": options.json(),
        "results": Value::Object(results),
        "total_seconds": round(started.elapsed().as_secs_f64(), 1),
    });
    report["targets"] = report::targets(&report, &options);
    report::print(&report);
    if let Some(dir) = options.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&options.out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", options.out.display()))?;
    println!("\nJSON written to {}", options.out.display());
    Ok(())
}

/// Durable ingest on a node without a worker, so that nothing but accepting
/// and committing runs: first the single API, then the batch API.
async fn ingest(
    options: &Options,
    sink: &Sink,
    single_body: &'static [u8],
    batch: Batch,
    leftovers: &mut Leftovers,
) -> anyhow::Result<Value> {
    let place = Place::fresh(options.database_url.as_deref(), "ingest").await?;
    let node = place
        .start(&NodeSpec {
            name: "bench-ingest",
            worker: false,
            concurrency: options.concurrency,
        })
        .await?;
    let api = Api::new(node.http_addr)?;
    let tenant = api.set_up_tenant(sink.port(), options.connections).await?;
    let apis = std::slice::from_ref(&api);

    let cpu = CpuMark::now();
    let single = load::single(apis, &tenant, single_body, options.count, options.clients).await;
    let single_cpu = cpu.since();

    let batch_json = if api.has_batch(&tenant).await? {
        let cpu = CpuMark::now();
        let batches = (options.count / batch.size).max(1);
        let out = load::batches(apis, &tenant, batch, batches, options.batch_clients).await;
        let mut json = out.json();
        json["messages_per_request"] = json!(batch.size);
        json["clients"] = json!(options.batch_clients);
        json["cpu"] = cpu.since();
        json
    } else {
        json!("not available: POST /v1/tenants/{tenant}/messages/batch answered 404")
    };
    drop(api);
    node.shutdown().await;
    let sqlite_mib = place.sqlite_mib();
    leftovers.retire(place).await;
    let mut single_json = single.json();
    single_json["clients"] = json!(options.clients);
    single_json["cpu"] = single_cpu;
    Ok(json!({
        "what": "POSTs answered 202 (committed) per second on a node with the worker role off; nothing is delivered meanwhile",
        "single": single_json,
        "batch": batch_json,
        "sqlite_file_mib_after": round(sqlite_mib, 1),
    }))
}

/// The worker nodes of an end-to-end phase, a client of each, and the
/// tenant whose provider delivers into the sink.
struct Cluster {
    nodes: Vec<Node>,
    apis: Vec<Api>,
    tenant: Tenant,
    /// Whether the nodes offer the batch API.
    has_batch: bool,
}

impl Cluster {
    async fn shutdown(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
    }
}

/// The `--nodes` worker nodes of an end-to-end phase on `place`, a client of
/// each, and the tenant whose provider delivers into `sink`.
async fn start_nodes(options: &Options, place: &Place, sink: &Sink) -> anyhow::Result<Cluster> {
    let mut nodes = Vec::new();
    for i in 0..options.nodes {
        let name = format!("bench-node-{}", i + 1);
        nodes.push(
            place
                .start(&NodeSpec {
                    name: &name,
                    worker: true,
                    concurrency: options.concurrency,
                })
                .await?,
        );
    }
    let apis: Vec<Api> = nodes
        .iter()
        .map(|n| Api::new(n.http_addr))
        .collect::<anyhow::Result<_>>()?;
    let tenant = apis[0]
        .set_up_tenant(sink.port(), options.connections)
        .await?;
    let has_batch = apis[0].has_batch(&tenant).await?;
    Ok(Cluster {
        nodes,
        apis,
        tenant,
        has_batch,
    })
}

/// The webhook comparison: `--webhook-rounds` rounds, each the end-to-end
/// phase on fresh places without a webhook and with one, the order
/// alternating between rounds so that a machine slowing or speeding up over
/// the run weighs on both alike. On a machine whose disk syncs at varying
/// speed, one pair's ratio moves by a tenth from run to run; the figure is
/// the median of the rounds' ratios, and every round is in the report.
async fn webhook_rounds(
    options: &Options,
    sink: &Sink,
    leftovers: &mut Leftovers,
    single_body: &'static [u8],
    batch: Batch,
) -> anyhow::Result<Value> {
    let database = options.database_url.as_deref();
    // Each round's run with a webhook (its ratio set) and the one without.
    let mut rounds: Vec<(Value, Value)> = Vec::new();
    for round in 0..options.webhook_rounds {
        let hooked_first = round % 2 == 1;
        let (mut without, mut with) = (Value::Null, Value::Null);
        for hooked in [hooked_first, !hooked_first] {
            if hooked {
                let place = Place::fresh(database, "webhooks").await?;
                with = with_webhooks(options, sink, &place, single_body, batch).await?;
                leftovers.retire(place).await;
            } else {
                let place = Place::fresh(database, "webhooks_without").await?;
                let cluster = start_nodes(options, &place, sink).await?;
                without = end_to_end(options, sink, &cluster, single_body, Some(batch)).await?;
                cluster.shutdown().await;
                leftovers.retire(place).await;
            }
        }
        let (hooked, plain) = (
            with["with_every_event_per_second"].as_f64(),
            without["delivered_per_second"].as_f64(),
        );
        set_ratio(&mut with, "ratio_to_end_to_end", hooked, plain, 3);
        with["order"] = json!(if hooked_first {
            "with first"
        } else {
            "without first"
        });
        rounds.push((with, without));
    }
    let listed: Vec<Value> = rounds
        .iter()
        .map(|(with, without)| {
            json!({
                "order": with["order"],
                "without_per_second": without["delivered_per_second"],
                "with_every_event_per_second": with["with_every_event_per_second"],
                "ratio": with["ratio_to_end_to_end"],
            })
        })
        .collect();
    let ratio = |with: &Value| with["ratio_to_end_to_end"].as_f64().unwrap_or(0.0);
    rounds.sort_by(|a, b| ratio(&a.0).total_cmp(&ratio(&b.0)));
    // The middle round; of an even number, the lower of the two middle ones.
    let (mut figures, without) = rounds.swap_remove((rounds.len() - 1) / 2);
    figures["end_to_end_without_per_second"] = without["delivered_per_second"].clone();
    figures["rounds"] = json!(listed);
    figures["what"] = json!(format!(
        "{} The figures are the median round's (by its ratio) of {} rounds, each end to end without a webhook and with one on fresh places, in alternating order; ratio_to_end_to_end is with_every_event_per_second against that round's run without.",
        figures["what"].as_str().unwrap_or_default(),
        listed.len()
    ));
    Ok(figures)
}

/// The end-to-end phase again, the tenant with a webhook for what becomes of
/// each message (`message.sent`, `message.failed`, `message.deferred`): one
/// signed post per message, each recorded. The rate that counts is until the
/// sink has every message and the webhook sink every event.
async fn with_webhooks(
    options: &Options,
    sink: &Sink,
    place: &Place,
    single_body: &'static [u8],
    batch: Batch,
) -> anyhow::Result<Value> {
    let cluster = start_nodes(options, place, sink).await?;
    let hooks = hooks::Hooks::start().await?;
    cluster.apis[0]
        .create_webhook(
            &cluster.tenant,
            &hooks.url,
            &["message.sent", "message.failed", "message.deferred"],
        )
        .await?;
    let started = Instant::now();
    let mut figures = end_to_end(options, sink, &cluster, single_body, Some(batch)).await?;
    let accepted = figures["accepted"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + options.deadline;
    while hooks.wait_for(accepted, Duration::from_millis(200)).await < accepted
        && Instant::now() < deadline
    {}
    let seconds = started.elapsed().as_secs_f64();
    let events = hooks.total();
    figures["what"] = json!(
        "end to end with a webhook for message.sent, message.failed and message.deferred: from the first submission until the sink has every accepted message (delivered_per_second) and the webhook sink every message's event (with_every_event_per_second)"
    );
    figures["events_expected"] = json!(accepted);
    figures["events_received"] = json!(events);
    figures["events_by_type"] = json!(hooks.counts());
    figures["events_complete"] = json!(events >= accepted);
    figures["seconds_until_every_event"] = json!(round(seconds, 3));
    figures["with_every_event_per_second"] = json!(round(accepted as f64 / seconds.max(1e-9), 0));
    cluster.shutdown().await;
    Ok(figures)
}

/// Submits `--count` messages to `cluster` (in batches of `batch` when
/// given and the node offers the batch API, one by one otherwise) and
/// measures from the first submission until the sink has them all.
async fn end_to_end(
    options: &Options,
    sink: &Sink,
    cluster: &Cluster,
    single_body: &'static [u8],
    batch: Option<Batch>,
) -> anyhow::Result<Value> {
    let Cluster {
        nodes,
        apis,
        tenant,
        has_batch,
    } = cluster;
    let batch = batch.filter(|_| *has_batch);
    let before = sink.messages();
    let bytes_before = sink.bytes();
    let connections_before = sink.connections();
    let worker_before: Vec<[u64; 4]> = nodes.iter().map(worker_counts).collect();
    let cpu = CpuMark::now();
    let started = Instant::now();
    // Until the submissions are answered, the target is everything submitted;
    // then it is what was accepted.
    let expected = Arc::new(AtomicU64::new(options.count));
    let submit = {
        let (apis, tenant, expected) = (apis.to_vec(), tenant.clone(), expected.clone());
        let (count, clients, batch_clients) =
            (options.count, options.clients, options.batch_clients);
        tokio::spawn(async move {
            let out = match batch {
                Some(batch) => {
                    let batches = (count / batch.size).max(1);
                    load::batches(&apis, &tenant, batch, batches, batch_clients).await
                }
                None => load::single(&apis, &tenant, single_body, count, clients).await,
            };
            expected.store(out.accepted, Ordering::Relaxed);
            out
        })
    };
    let deadline = Instant::now() + options.deadline;
    let mut submitted: Option<Outcome> = None;
    let mut submit = Some(submit);
    loop {
        if let Some(handle) = submit.take_if(|h| h.is_finished()) {
            submitted = Some(handle.await?);
        }
        let target = before + expected.load(Ordering::Relaxed);
        let reached = sink.wait_for(target, Duration::from_millis(200)).await;
        if (reached >= target && submitted.is_some()) || Instant::now() >= deadline {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu.since();
    let submitted = match submitted {
        Some(out) => out,
        None => submit.context("the submission task")?.await?,
    };
    let delivered = sink.messages() - before;
    let worker: Vec<Value> = nodes
        .iter()
        .zip(&worker_before)
        .map(|(node, before)| {
            let now = worker_counts(node);
            json!({
                "claimed": now[0] - before[0],
                "handed": now[3] - before[3],
                "recorded": now[1] - before[1],
                "released_busy": now[2] - before[2],
            })
        })
        .collect();
    Ok(json!({
        "what": "from the first submission until the sink has every accepted message; submissions and delivery run at once",
        "submitted_through": if batch.is_some() { "batch API" } else { "single API" },
        "accepted": submitted.accepted,
        "delivered": delivered,
        "complete": delivered >= submitted.accepted,
        "seconds": round(seconds, 3),
        "delivered_per_second": round(delivered as f64 / seconds.max(1e-9), 0),
        "submission": submitted.json(),
        "smtp_connections_opened": sink.connections() - connections_before,
        // What the node put on the wire per message, to compare with the ceiling's.
        "wire_bytes_per_message": (sink.bytes() - bytes_before) / delivered.max(1),
        "worker_per_node": worker,
        "nodes": nodes.len(),
        "cpu": cpu,
    }))
}

/// A node's worker counters: claimed, recorded, released, handed over as stored.
fn worker_counts(node: &Node) -> [u64; 4] {
    let stats = &node.worker_stats;
    [
        stats.claimed.load(Ordering::Relaxed),
        stats.recorded.load(Ordering::Relaxed),
        stats.released.load(Ordering::Relaxed),
        stats.handed.load(Ordering::Relaxed),
    ]
}

/// Open-loop submissions at the offered rate while the node delivers them.
async fn latency(
    options: &Options,
    sink: &Sink,
    api: &Api,
    tenant: &Tenant,
    body: &'static [u8],
) -> Value {
    let before = sink.messages();
    let cpu = CpuMark::now();
    let run = load::open_loop(
        api,
        tenant,
        &[body],
        options.offered_rate,
        options.latency_seconds,
    )
    .await;
    let cpu = cpu.since();
    // Whether delivery kept up: everything accepted should reach the sink soon after.
    let delivered = sink
        .wait_for(before + run.outcome.accepted, Duration::from_secs(30))
        .await
        - before;
    let mut json = run.outcome.json();
    json["what"] = json!(
        "single-API submissions issued on a fixed schedule (open loop), each latency counted from its scheduled time, on the end-to-end node while it delivers"
    );
    json["offered_per_second"] = json!(run.offered_per_second);
    json["achieved_offered_per_second"] = json!(round(run.achieved_per_second, 1));
    json["worst_dispatch_lag_ms"] = json!(round(run.worst_dispatch_lag.as_secs_f64() * 1000.0, 2));
    json["delivered_within_30s_after"] = json!(delivered);
    json["cpu"] = cpu;
    json
}
