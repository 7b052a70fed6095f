//! The human side of the results: the targets checked against the
//! figures, and a table on standard output.

use serde_json::{Value, json};

use crate::Options;

/// 150 MB (decimal, as the target says) in MiB, which /proc reports.
const RSS_TARGET_MIB: f64 = 150.0 * 1_000_000.0 / 1_048_576.0;

fn num(report: &Value, pointer: &str) -> Option<f64> {
    report.pointer(pointer).and_then(Value::as_f64)
}

/// One target: what it asks, what was measured, and whether it was met
/// (`null` when this run could not tell).
fn target(name: &str, wanted: &str, measured: Option<f64>, met: Option<bool>, note: &str) -> Value {
    json!({"target": name, "wanted": wanted, "measured": measured, "met": met, "note": note})
}

/// The targets, for reporting.
pub fn targets(report: &Value, options: &Options) -> Value {
    let e2e = num(report, "/results/end_to_end/delivered_per_second");
    let ratio = num(report, "/results/end_to_end/ratio_to_ceiling");
    let p99 = num(report, "/results/latency/request_latency_ms/p99");
    let rss = num(
        report,
        "/results/memory_with_queue/queue/peak_rss_while_queueing_mib",
    );
    let claims = num(report, "/results/claims/long_over_short");
    let fair_p99 = num(report, "/results/fairness/b/delivery_latency_ms/p99");
    let smtp_ratio = num(report, "/results/smtp_ingest/ratio_to_postfix");
    let hooked = num(
        report,
        "/results/end_to_end_with_webhooks/ratio_to_end_to_end",
    );
    let gateway = num(
        report,
        "/results/end_to_end_through_a_gateway/ratio_to_end_to_end",
    );
    let single_ratio = num(
        report,
        "/results/end_to_end_single/ratio_to_postfix_end_to_end",
    );
    let postgres = options
        .database_url
        .as_deref()
        .is_some_and(|u| u.starts_with("postgres"));
    let at_1000 = (options.offered_rate - 1000.0).abs() < f64::EPSILON;
    let queued_100k = options.rss_queue >= 100_000;
    let claim_1m = options.claim_queue >= 1_000_000;
    let backlog_100k = options.fairness_backlog >= 100_000;
    json!([
        target(
            "end-to-end delivery rate",
            ">= 4000 msg/s",
            e2e,
            e2e.map(|r| r >= 4000.0),
            if options.nodes == 1 {
                "one node"
            } else {
                "all nodes together"
            }
        ),
        target(
            "end to end against the ceiling",
            ">= 0.5",
            ratio,
            ratio.map(|r| r >= 0.5),
            ""
        ),
        target(
            "batch end to end against the ceiling (issue 20)",
            ">= 0.35",
            ratio,
            ratio.map(|r| r >= 0.35),
            ""
        ),
        target(
            "single-API end to end against Postfix end to end",
            ">= 10",
            single_ratio,
            single_ratio.map(|r| r >= 10.0),
            "one message per request against smtp-source-style sessions into Postfix relaying to the same sink, same run"
        ),
        target(
            "ingest latency p99 at 1,000 msg/s offered",
            "<= 25 ms",
            p99,
            p99.filter(|_| at_1000).map(|p| p <= 25.0),
            if at_1000 {
                ""
            } else {
                "not comparable: another offered rate was chosen"
            }
        ),
        target(
            "peak RSS with 100,000 messages queued",
            "<= 150 MB (143.1 MiB)",
            rss,
            rss.filter(|_| queued_100k).map(|r| r <= RSS_TARGET_MIB),
            if queued_100k {
                "MiB; child process holding the node, the load generator and a sink"
            } else {
                "not comparable: fewer than 100,000 queued"
            }
        ),
        target(
            "claim rate with 1M queued against a short queue",
            ">= 0.8",
            claims,
            claims.filter(|_| claim_1m).map(|r| r >= 0.8),
            if claim_1m {
                ""
            } else {
                "not comparable: the long queue is under 1,000,000"
            }
        ),
        target(
            "other tenant's delivery p99 behind a slow backlog",
            "<= 1000 ms",
            fair_p99,
            fair_p99
                .filter(|_| backlog_100k)
                .map(|p| p <= crate::fairness::TARGET_P99_MS),
            if backlog_100k {
                "B's submit→delivered, 10 msg/s, behind A's 100,000 on a slow server"
            } else {
                "not comparable: A's backlog is under 100,000"
            }
        ),
        target(
            "SMTP ingest against Postfix's smtpd → queue",
            ">= 10",
            smtp_ratio,
            smtp_ratio.map(|r| r >= 10.0),
            "accepted messages per second, same load, same machine, each 250 after an fsync"
        ),
        target(
            "end to end with a webhook for every message, against without",
            ">= 0.8",
            hooked,
            hooked.map(|r| r >= 0.8),
            "until every message is in the sink and its message.sent event in the webhook sink; median of alternated rounds"
        ),
        target(
            "end to end through one gateway instance, against the node's own",
            ">= 0.5",
            gateway,
            gateway.map(|r| r >= 0.5),
            "the node stores and hands out over HTTP; the gateway delivers into the sink"
        ),
        target(
            "PostgreSQL, two nodes, end to end",
            ">= 2000 msg/s",
            e2e.filter(|_| postgres && options.nodes >= 2),
            e2e.filter(|_| postgres && options.nodes >= 2)
                .map(|r| r >= 2000.0),
            if postgres && options.nodes >= 2 {
                ""
            } else {
                "not measured: run with --database-url postgres://… --nodes 2"
            }
        ),
    ])
}

/// A whole number with thousands separators.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

fn rate(report: &Value, pointer: &str) -> String {
    num(report, pointer).map_or_else(|| "—".into(), |r| format!("{} msg/s", thousands(r)))
}

fn ms(report: &Value, pointer: &str) -> String {
    num(report, pointer).map_or_else(|| "—".into(), |v| format!("{v:.1} ms"))
}

fn mib(report: &Value, pointer: &str) -> String {
    num(report, pointer).map_or_else(|| "—".into(), |v| format!("{v:.0} MiB"))
}

fn row(label: &str, figure: &str, detail: &str) {
    println!("{label:<44} {figure:>16}  {detail}");
}

/// Prints the table.
pub fn print(report: &Value) {
    let m = &report["machine"];
    let o = &report["options"];
    println!();
    println!(
        "Herald benchmark — {} — {} cores, {}, Linux {}",
        report["date"].as_str().unwrap_or_default(),
        m["nproc"],
        m["cpu_model"].as_str().unwrap_or_default(),
        m["kernel"].as_str().unwrap_or_default()
    );
    println!(
        "options: count {}, size {} B, connections {}, concurrency {}, clients {}, batch clients {}, nodes {}, database {}",
        o["count"],
        o["size"],
        o["connections"],
        o["concurrency"],
        o["clients"],
        o["batch_clients"],
        o["nodes"],
        o["database"].as_str().unwrap_or_default()
    );
    println!();
    let r = "/results";
    if report.pointer("/results/ceiling").is_some() {
        row(
            &format!("SMTP ceiling ({} connections)", o["connections"]),
            &rate(report, &format!("{r}/ceiling/messages_per_second")),
            "herald_smtp::Connection → sink, no store",
        );
    }
    if report.pointer("/results/ingest").is_some() {
        row(
            &format!("Durable ingest, single API ({} clients)", o["clients"]),
            &rate(report, &format!("{r}/ingest/single/accepted_per_second")),
            &format!(
                "p50 {}, p99 {}; worker off",
                ms(report, &format!("{r}/ingest/single/request_latency_ms/p50")),
                ms(report, &format!("{r}/ingest/single/request_latency_ms/p99"))
            ),
        );
        match report.pointer("/results/ingest/batch") {
            Some(Value::String(s)) => row("Durable ingest, batch API", "n/a", s),
            _ => row(
                &format!(
                    "Durable ingest, batch API ({} × {})",
                    o["batch_clients"],
                    report
                        .pointer("/results/ingest/batch/messages_per_request")
                        .unwrap_or(&Value::Null)
                ),
                &rate(report, &format!("{r}/ingest/batch/accepted_per_second")),
                &format!(
                    "request p50 {}; worker off",
                    ms(report, &format!("{r}/ingest/batch/request_latency_ms/p50"))
                ),
            ),
        }
    }
    if let Some(smtp) = report.pointer("/results/smtp_ingest") {
        row(
            &format!(
                "SMTP ingest, Herald ({} sessions × {})",
                smtp["load"]["connections"], smtp["load"]["messages_per_connection"]
            ),
            &rate(report, &format!("{r}/smtp_ingest/accepted_per_second")),
            &format!(
                "p50 {}, p99 {}; connector, {}",
                ms(report, &format!("{r}/smtp_ingest/message_latency_ms/p50")),
                ms(report, &format!("{r}/smtp_ingest/message_latency_ms/p99")),
                if smtp["delivery"] == false {
                    "worker off"
                } else {
                    "delivering meanwhile"
                }
            ),
        );
    }
    match report.pointer("/results/postfix_smtpd") {
        Some(Value::Object(p)) if p.contains_key("skipped") => row(
            "SMTP ingest, Postfix smtpd",
            "n/a",
            p["skipped"].as_str().unwrap_or_default(),
        ),
        Some(_) => row(
            "SMTP ingest, Postfix smtpd (same load)",
            &rate(report, &format!("{r}/postfix_smtpd/accepted_per_second")),
            &format!(
                "p50 {}, p99 {}; relaying meanwhile; end to end {}",
                ms(report, &format!("{r}/postfix_smtpd/message_latency_ms/p50")),
                ms(report, &format!("{r}/postfix_smtpd/message_latency_ms/p99")),
                rate(report, &format!("{r}/postfix_smtpd/delivered_per_second"))
            ),
        ),
        None => {}
    }
    if let Some(ratio) = num(report, &format!("{r}/smtp_ingest/ratio_to_postfix")) {
        row(
            "SMTP ingest, Herald ÷ Postfix",
            &format!("{ratio:.1}×"),
            "accepted messages per second",
        );
    }
    if let Some(e2e) = report.pointer("/results/end_to_end") {
        let ratio = e2e["ratio_to_ceiling"]
            .as_f64()
            .map_or_else(String::new, |x| format!("{x:.2} of the ceiling; "));
        row(
            &format!(
                "End to end ({}, {} node(s))",
                e2e["submitted_through"].as_str().unwrap_or_default(),
                e2e["nodes"]
            ),
            &rate(report, &format!("{r}/end_to_end/delivered_per_second")),
            &format!(
                "{ratio}{} of {} delivered in {} s",
                e2e["delivered"], e2e["accepted"], e2e["seconds"]
            ),
        );
    }
    if let Some(single) = report.pointer("/results/end_to_end_single") {
        let ratio = single["ratio_to_postfix_end_to_end"]
            .as_f64()
            .map_or_else(String::new, |x| format!("{x:.1}× Postfix end to end; "));
        row(
            &format!("End to end (single API, {} node(s))", single["nodes"]),
            &rate(
                report,
                &format!("{r}/end_to_end_single/delivered_per_second"),
            ),
            &format!(
                "{ratio}{} of {} delivered in {} s",
                single["delivered"], single["accepted"], single["seconds"]
            ),
        );
    }
    if let Some(hooked) = report.pointer("/results/end_to_end_with_webhooks") {
        let rounds: Vec<String> = hooked["rounds"]
            .as_array()
            .map(|rounds| {
                rounds
                    .iter()
                    .filter_map(|r| r["ratio"].as_f64())
                    .map(|r| format!("{r:.2}"))
                    .collect()
            })
            .unwrap_or_default();
        let ratio = hooked["ratio_to_end_to_end"]
            .as_f64()
            .map_or_else(String::new, |x| {
                format!(
                    "{x:.2} of end to end without (median of rounds {}); ",
                    rounds.join(" · ")
                )
            });
        row(
            "End to end with a webhook (an event per message)",
            &rate(
                report,
                &format!("{r}/end_to_end_with_webhooks/with_every_event_per_second"),
            ),
            &format!(
                "{ratio}{} of {} events in {} s; mail alone {}",
                hooked["events_received"],
                hooked["events_expected"],
                hooked["seconds_until_every_event"],
                rate(
                    report,
                    &format!("{r}/end_to_end_with_webhooks/delivered_per_second")
                )
            ),
        );
    }
    if let Some(through) = report.pointer("/results/end_to_end_through_a_gateway") {
        let ratio = through["ratio_to_end_to_end"]
            .as_f64()
            .map_or_else(String::new, |x| format!("{x:.2} of end to end; "));
        row(
            "End to end through a gateway (one instance)",
            &rate(
                report,
                &format!("{r}/end_to_end_through_a_gateway/delivered_per_second"),
            ),
            &format!(
                "{ratio}{} of {} delivered in {} s",
                through["delivered"], through["accepted"], through["seconds"]
            ),
        );
    }
    if let Some(lat) = report.pointer("/results/latency") {
        row(
            &format!(
                "Ingest latency at {} msg/s offered",
                lat["offered_per_second"]
            ),
            &ms(report, &format!("{r}/latency/request_latency_ms/p99")),
            &format!(
                "p99; p50 {}, max {}; {} accepted, {} failed",
                ms(report, &format!("{r}/latency/request_latency_ms/p50")),
                ms(report, &format!("{r}/latency/request_latency_ms/max")),
                lat["accepted"],
                lat["failed_requests"]
            ),
        );
    }
    if let Some(fair) = report.pointer("/results/fairness") {
        let f = format!("{r}/fairness");
        row(
            &format!("Fairness: B's delivery behind A's {}", fair["a"]["backlog"]),
            &ms(report, &format!("{f}/b/delivery_latency_ms/p99")),
            &format!(
                "p99; p50 {}, max {}; B {} of {} delivered{}; A {} delivered meanwhile, {} left",
                ms(report, &format!("{f}/b/delivery_latency_ms/p50")),
                ms(report, &format!("{f}/b/delivery_latency_ms/max")),
                fair["b"]["delivered"],
                fair["b"]["messages"],
                match fair["b"]["undelivered_counted_at_phase_end"].as_u64() {
                    Some(n) if n > 0 =>
                        format!(" (figures are lower bounds: {n} counted at the deadline)"),
                    _ => String::new(),
                },
                fair["a"]["delivered_during_phase"],
                fair["a"]["backlog_left_at_end"]
            ),
        );
    }
    if let Some(mem) = report.pointer("/results/memory_with_queue") {
        row(
            &format!("Peak RSS, {} queued (child)", mem["queue"]["queued"]),
            &mib(
                report,
                &format!("{r}/memory_with_queue/queue/peak_rss_while_queueing_mib"),
            ),
            &format!(
                "after draining {}; drain {}",
                mib(
                    report,
                    &format!("{r}/memory_with_queue/drain/peak_rss_including_draining_mib")
                ),
                rate(
                    report,
                    &format!("{r}/memory_with_queue/drain/delivered_per_second")
                )
            ),
        );
    }
    if report.pointer("/results/memory_after_e2e").is_some() {
        row(
            "Peak RSS, this process after e2e/latency",
            &mib(report, &format!("{r}/memory_after_e2e/peak_rss_mib")),
            "sink + generator + node(s)",
        );
    }
    if let Some(c) = report.pointer("/results/claims") {
        row(
            &format!(
                "Claim rate, {} vs {} queued",
                c["long_queue"]["queued"], c["short_queue"]["queued"]
            ),
            &format!("{:.2}", c["long_over_short"].as_f64().unwrap_or(f64::NAN)),
            &format!(
                "{} rows/s against {} rows/s",
                thousands(c["long_queue"]["rows_per_second"].as_f64().unwrap_or(0.0)),
                thousands(c["short_queue"]["rows_per_second"].as_f64().unwrap_or(0.0))
            ),
        );
    }
    row(
        "Peak RSS, this process at the end",
        &mib(report, &format!("{r}/memory_process/peak_rss_mib")),
        "everything but the child, claim stores included",
    );
    println!();
    println!("Targets (for reporting):");
    for t in report["targets"].as_array().into_iter().flatten() {
        let verdict = match t["met"].as_bool() {
            Some(true) => "met    ",
            Some(false) => "MISSED ",
            None => "n/a    ",
        };
        let measured = t["measured"]
            .as_f64()
            .map_or_else(|| "—".into(), |x| format!("{x}"));
        let note = t["note"].as_str().unwrap_or_default();
        println!(
            "  {verdict} {:<48} wanted {:<22} measured {measured}{}",
            t["target"].as_str().unwrap_or_default(),
            t["wanted"].as_str().unwrap_or_default(),
            if note.is_empty() {
                String::new()
            } else {
                format!("  ({note})")
            }
        );
    }
    println!("\ntotal {} s", report["total_seconds"]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_thousands() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }
}
