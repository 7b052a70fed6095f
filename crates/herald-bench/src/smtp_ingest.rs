//! The `smtp-ingest` phase: a node with its SMTP listener on, a tenant whose
//! IP connector covers 127.0.0.0/8 (so sessions need neither AUTH nor TLS, as
//! a relay on a trusted network), and the `smtp-source`-style load; each `250`
//! after DATA comes after the message's group commit (SQLite WAL,
//! `synchronous = FULL`). The tenant's provider points at the benchmark's
//! sink and the worker runs, so delivery goes on during the load as it does
//! in Postfix (`--smtp-no-delivery` turns the worker off, to see ingest alone).

use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};

use crate::Options;
use crate::api::Api;
use crate::place::{Leftovers, NodeSpec, Place};
use crate::sink::Sink;
use crate::smtp_load::{self, SmtpLoad};
use crate::sys::{CpuMark, round};

/// Runs the phase on a fresh store.
pub async fn run(
    options: &Options,
    sink: &Sink,
    load: SmtpLoad,
    leftovers: &mut Leftovers,
) -> anyhow::Result<Value> {
    let place = Place::fresh(options.database_url.as_deref(), "smtp_ingest").await?;
    let mut settings = place.settings(&NodeSpec {
        name: "bench-smtp",
        worker: options.smtp_delivery,
        concurrency: options.concurrency,
    })?;
    let mut smtp = herald_ingress::Settings::new("bench-smtp");
    smtp.listen = Some("127.0.0.1:0".parse().expect("a valid address"));
    // Every session of the load comes from 127.0.0.1; the default limit per
    // client address (20) is for the open Internet.
    smtp.max_sessions_per_ip = smtp.max_sessions_per_ip.max(load.connections);
    settings.smtp = Some(smtp);
    let node = herald::node::start(settings).await?;
    let addr = node.smtp_addr.context("the node's SMTP listener")?;
    let api = Api::new(node.http_addr)?;
    let tenant = api.set_up_tenant(sink.port(), options.connections).await?;
    api.create_connector(&tenant, "loopback", "127.0.0.0/8")
        .await?;

    let before = sink.messages();
    let cpu = CpuMark::now();
    let out = smtp_load::run(addr, load).await;
    let cpu = cpu.since();
    let delivered_meanwhile = sink.messages() - before;
    // The rest of the delivery, for the record: not part of the rate.
    let drain_started = Instant::now();
    let delivered = if options.smtp_delivery {
        sink.wait_for(before + out.accepted, options.deadline).await - before
    } else {
        0
    };
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    drop(api);
    node.shutdown().await;
    let sqlite_mib = place.sqlite_mib();
    leftovers.retire(place).await;

    let mut json = smtp_load::json(&out);
    json["what"] = json!(if options.smtp_delivery {
        "SMTP sessions into Herald's listener (IP connector, no TLS), each 250 after DATA after the group commit; delivery to the sink running meanwhile"
    } else {
        "SMTP sessions into Herald's listener (IP connector, no TLS), each 250 after DATA after the group commit; the worker role off, nothing delivered"
    });
    json["delivery"] = json!(options.smtp_delivery);
    json["load"] = load.json();
    json["delivered_during_load"] = json!(delivered_meanwhile);
    json["delivered_in_the_end"] = json!(delivered);
    json["drain_seconds_after_load"] = json!(round(drain_seconds, 3));
    json["sqlite_file_mib_after"] = json!(round(sqlite_mib, 1));
    json["cpu"] = cpu;
    Ok(json)
}
