//! The gateway phase: the end-to-end phase with the tenant's server pinned
//! to a gateway run in this process, so every message goes from the node to
//! the gateway (long-polled claims and batched outcomes over HTTP on
//! loopback) and from the gateway into the sink.

use std::time::Duration;

use serde_json::{Value, json};

use crate::place::Place;
use crate::sink::Sink;
use crate::{Batch, Options};

/// Runs the phase on `place`; the figures are the end-to-end phase's.
pub async fn run(
    options: &Options,
    sink: &Sink,
    place: &Place,
    single_body: &'static [u8],
    batch: Batch,
) -> anyhow::Result<Value> {
    let cluster = crate::start_nodes(options, place, sink).await?;
    let token = cluster.apis[0]
        .pin_to_new_gateway(&cluster.tenant, "bench")
        .await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(herald::gateway::run_until(
        herald::gateway::GatewayArgs {
            server: format!("http://{}", cluster.nodes[0].http_addr),
            token,
            name: Some("bench-1".into()),
            // The sink is on loopback, which a gateway reaches only when allowed.
            egress_allow: Some("127.0.0.1/32".into()),
            egress_deny: None,
            server_ca: None,
            concurrency: options.concurrency,
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let mut figures = crate::end_to_end(options, sink, &cluster, single_body, Some(batch)).await?;
    figures["what"] = json!(
        "end to end through one gateway instance in this process: the node stores, the gateway claims over HTTP, delivers into the sink and reports the outcomes"
    );
    let _ = stop.send(());
    match tokio::time::timeout(Duration::from_secs(60), gateway).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => figures["gateway_error"] = json!(format!("{e:#}")),
        Ok(Err(e)) => figures["gateway_error"] = json!(e.to_string()),
        Err(_) => figures["gateway_error"] = json!("the gateway did not stop within 60 s"),
    }
    cluster.shutdown().await;
    Ok(figures)
}
