//! Operability: the Prometheus metrics on their own listener, read as a
//! scraper reads them (`promtool check metrics`), count what the node did
//! and name no secret; the listener is off unless asked for; JSON logs put
//! the tenant, the message and the recipient on every delivery line.

use std::collections::HashMap;
use std::net::SocketAddr;

use herald_testkit::{Dependency, require};
use herald_testsmtp::TestSmtpServer;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::helpers::*;

/// The SMTP account's password: it must never appear in the metrics.
const CANARY: &str = "canary-smtp-password-7f3a9c1e";

/// `promtool` runs here, or the test is skipped (failed where required).
fn promtool() -> bool {
    let found = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .map_err(|e| format!("promtool (Debian package prometheus) cannot run: {e}"))
        .and_then(|out| {
            out.status
                .success()
                .then_some(())
                .ok_or_else(|| "promtool --version failed".to_owned())
        });
    require(Dependency::Promtool, found).is_some()
}

/// What `/metrics` answers, after checking its Content-Type.
async fn scrape(addr: SocketAddr) -> String {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("the metrics listener answers");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

/// `promtool check metrics` on `text`: its parser and its lint must accept it.
async fn promtool_accepts(text: &str) {
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The samples of the text, by series as written (`name{labels}`); promtool
/// has checked the syntax, so a sample line is a series and a value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a series and a value");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// A series' value, 0 when absent (a counter not counted yet).
fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

/// The sum of the series of `name` whose labels include every one of `labels` (`key="value"`).
fn sum(samples: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            series
                .strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
                && labels.iter().all(|l| series.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Submits one message over SMTP (the client's address is a connector's, so
/// no AUTH); returns the reply code to the end of DATA.
async fn submit_over_smtp(addr: SocketAddr, body: &str) -> u16 {
    let (read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
    let mut read = BufReader::new(read);
    let mut reply = async || {
        let mut code = 0;
        loop {
            let mut line = String::new();
            tokio::time::timeout(DEADLINE, read.read_line(&mut line))
                .await
                .expect("a reply within the deadline")
                .unwrap();
            assert!(line.len() >= 4, "{line:?}");
            code = line[..3].parse().unwrap_or(code);
            if line.as_bytes()[3] != b'-' {
                return code;
            }
        }
    };
    assert_eq!(reply().await, 220);
    for (command, expected) in [
        ("EHLO client.test\r\n", 250),
        ("MAIL FROM:<app@metered.example>\r\n", 250),
        ("RCPT TO:<someone@customer.example>\r\n", 250),
        ("DATA\r\n", 354),
    ] {
        write.write_all(command.as_bytes()).await.unwrap();
        assert_eq!(reply().await, expected, "{command}");
    }
    write.write_all(body.as_bytes()).await.unwrap();
    write.write_all(b"\r\n.\r\n").await.unwrap();
    let code = reply().await;
    write.write_all(b"QUIT\r\n").await.unwrap();
    code
}

#[tokio::test]
async fn metrics_count_what_the_node_did_and_name_no_secret() {
    if !promtool() {
        return;
    }
    let smtp = clear_auth_server(CANARY).await;
    let app = spawn_app_with(|settings| {
        settings.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        let mut ingress = herald_ingress::Settings::new("herald.test");
        ingress.listen = Some("127.0.0.1:0".parse().unwrap());
        settings.smtp = Some(ingress);
    })
    .await;
    let metrics = app.node.as_ref().unwrap().metrics_addr.expect("metrics on");
    let tenant = app
        .configured_tenant(
            "metered",
            clear_auth_entry(smtp.port(), true),
            Some(account_with(CANARY)),
        )
        .await;
    app.smtp_connector(&tenant, &["127.0.0.1/32"]).await;
    let credential = app.smtp_credential(&tenant).await;
    let receiver = crate::receiver::Receiver::start().await;
    let (status, webhook) = app
        .post_as_admin(
            &tenant,
            "webhooks",
            serde_json::json!({"url": receiver.url, "events": ["message.sent"]}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{webhook}");
    let before = samples(&scrape(metrics).await);

    let subject = "Subject: quarterly-canary-subject";
    for _ in 0..3 {
        let body = format!(
            "From: app@metered.example\r\nTo: someone@customer.example\r\n{subject}\r\n\r\nHello."
        );
        assert_eq!(submit_over_smtp(app.smtp_addr(), &body).await, 250);
    }
    // A bare LF is refused once the message has been read.
    let refused = format!("From: app@metered.example\r\n{subject}\r\n\r\nbare\nline");
    assert_eq!(submit_over_smtp(app.smtp_addr(), &refused).await, 554);
    app.send_test_message(&tenant, serde_json::json!({})).await;
    // Through the API: two accepted, the second once more by its key, one refused.
    for key in ["first", "second", "second"] {
        app.submit(
            &tenant,
            serde_json::json!({"to": ["someone@customer.example"], "subject": "api",
                               "text": "hello", "idempotency_key": key}),
        )
        .await;
    }
    let (status, _) = app
        .post_as_sender(
            &tenant,
            "messages",
            serde_json::json!({"subject": "no body"}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::UNPROCESSABLE_ENTITY);

    smtp.wait_for_messages(6, DEADLINE).await;
    // Outcomes are counted once committed, a moment after the server took the mail.
    let after = eventually("six sent deliveries in the metrics", || async {
        let text = scrape(metrics).await;
        let after = samples(&text);
        let sent = sum(&after, "herald_deliveries_total", &[r#"outcome="sent""#])
            - sum(&before, "herald_deliveries_total", &[r#"outcome="sent""#]);
        (sent >= 6.0).then_some(text)
    })
    .await;
    promtool_accepts(&after).await;
    // The pools' state is read every turn of the worker's loop.
    eventually("the route's pool in the metrics", || async {
        let now = samples(&scrape(metrics).await);
        (value(&now, "herald_pool_routes") == 1.0).then_some(())
    })
    .await;
    let text = after;
    let after = samples(&text);
    let delta = |series: &str| value(&after, series) - value(&before, series);
    let delta_sum =
        |name: &str, labels: &[&str]| sum(&after, name, labels) - sum(&before, name, labels);

    for (source, result, expected) in [
        ("smtp", "accepted", 3.0),
        ("smtp", "refused", 1.0),
        ("test", "accepted", 1.0),
        ("api", "accepted", 2.0),
        ("api", "duplicate", 1.0),
        ("api", "refused", 1.0),
    ] {
        let series = format!(r#"herald_submissions_total{{source="{source}",result="{result}"}}"#);
        assert_eq!(delta(&series), expected, "{series}");
    }
    // One recipient per message: one transaction and one latency each.
    for series in [
        "herald_delivery_duration_seconds_count",
        "herald_delivery_latency_seconds_count",
        r#"herald_delivery_latency_seconds_bucket{le="+Inf"}"#,
    ] {
        assert_eq!(delta(series), 6.0, "{series}");
    }
    for (outcome, expected) in [(r#"outcome="sent""#, 6.0), (r#"outcome="failed""#, 0.0)] {
        assert_eq!(
            delta_sum("herald_deliveries_total", &[outcome]),
            expected,
            "{outcome}"
        );
    }
    // Each recipient was claimed, or handed to the worker as it was stored.
    assert!(
        delta("herald_claim_recipients_sum") + delta("herald_handed_recipients_total") >= 6.0,
        "{text}"
    );
    assert!(delta("herald_commit_outcomes_sum") >= 4.0, "{text}");
    assert!(delta("herald_smtp_sessions_total") >= 4.0, "{text}");
    assert!(
        delta(r#"herald_smtp_replies_total{class="5xx"}"#) >= 1.0,
        "{text}"
    );
    assert!(
        text.contains(r#"herald_node_info{version=""#) && text.contains(r#"roles="api,worker"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"herald_queue_recipients{status="queued"}"#),
        "{text}"
    );
    // Requests are counted by route template, not by path.
    assert_eq!(
        value(
            &after,
            r#"herald_http_requests_total{method="POST",route="/v1/tenants/{tenant}/smtp-connectors",status="201"}"#
        ),
        1.0,
        "{text}"
    );
    assert!(
        delta_sum("herald_http_requests_total", &[r#"status="202""#]) >= 1.0,
        "{text}"
    );

    // Each message's event posted once to the webhook (the test message has none).
    receiver.wait_for(5).await;
    let text = eventually("five webhook posts in the metrics", || async {
        let text = scrape(metrics).await;
        let now = samples(&text);
        let posted = value(&now, r#"herald_webhook_posts_total{result="delivered"}"#)
            - value(&before, r#"herald_webhook_posts_total{result="delivered"}"#);
        (posted == 5.0).then_some(text)
    })
    .await;
    assert!(
        text.contains("herald_webhook_post_duration_seconds_count"),
        "{text}"
    );

    // Neither a secret nor what names a tenant or its mail.
    for secret in [
        webhook["secret"].as_str().unwrap(),
        receiver.url.as_str(),
        CANARY,
        credential.password.as_str(),
        OPERATOR,
        tenant.admin.as_str(),
        tenant.sender.as_str(),
        "metered",
        "customer.example",
        "quarterly-canary-subject",
    ] {
        assert!(
            !text.contains(secret),
            "{secret:?} is in the metrics:\n{text}"
        );
    }
}

#[tokio::test]
async fn the_metrics_listener_is_off_unless_asked_for() {
    let app = spawn_app().await;
    assert_eq!(app.node.as_ref().unwrap().metrics_addr, None);
    // Nor are the metrics served on the API's address.
    let response = reqwest::get(format!("{}/metrics", app.base)).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(!response.text().await.unwrap().contains("herald_"));
}

#[tokio::test]
async fn json_logs_name_the_tenant_message_and_recipient_of_each_delivery() {
    let smtp = TestSmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Sent attempts are logged at debug.
    let node = start_process(
        dir.path(),
        &["--log-format", "json"],
        &[("HERALD_LOG", "info,herald_delivery=debug")],
    )
    .await
    .keeping(dir);
    let app = node.app();
    let tenant = app.tenant_sending_to("logged", smtp.port()).await;
    let id = app.submit_to(&tenant, "reader@example.org", "logged").await;
    let view = app.wait_for_status(&tenant, &id, "sent").await;
    let recipient = view["recipients"][0]["id"].as_str().unwrap().to_owned();
    let (_, tenant_view) = app
        .get(&format!("/v1/tenants/{}", tenant.slug), OPERATOR)
        .await;
    let tenant_id = tenant_view["id"].as_str().unwrap().to_owned();

    let line = eventually("the delivery's log line", || async {
        let output = node.output.lock().unwrap().clone();
        output
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str::<Value>(l).expect("each log line is JSON"))
            .find(|l| l["fields"]["message"] == "delivery attempt sent")
    })
    .await;
    assert_eq!(line["fields"]["recipient_id"], recipient.as_str(), "{line}");
    assert_eq!(line["level"], "DEBUG", "{line}");
    assert_eq!(line["span"]["name"], "deliver", "{line}");
    assert_eq!(line["span"]["message_id"], id.as_str(), "{line}");
    assert_eq!(line["span"]["tenant"], tenant_id.as_str(), "{line}");

    // Standard error is JSON only; standard output keeps its plain lines for people and scripts.
    let output = node.output.lock().unwrap().clone();
    for l in output.lines() {
        if l.starts_with('{') {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        } else {
            assert!(
                l.is_empty()
                    || l.starts_with("herald listening on")
                    || l.starts_with("Web console:"),
                "not a JSON log line: {l:?}"
            );
        }
    }
}
