//! The real `herald gateway` process against a node: pinned mail waits
//! until an instance runs and then flows through it (logging in with the
//! account's secret, re-sealed for the instance); an instance killed
//! mid-delivery loses nothing; two instances share the work, each message
//! sent once; a new token stops the running instance at once; and a
//! gateway's token opens the gateway routes only, which nothing else opens.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_testsmtp::{Action, Command, Rule, TestSmtpServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

const PASSWORD: &str = "gateway-secret-1";

/// A `herald gateway` child process, killed when dropped.
struct GatewayProcess {
    child: tokio::process::Child,
    output: Arc<Mutex<String>>,
}

impl GatewayProcess {
    /// Starts instance `name` of the gateway whose token is `token`,
    /// polling the node at `base`; returns once it says it started.
    async fn start(base: &str, token: &str, name: &str) -> GatewayProcess {
        Self::start_with(base, token, name, 4).await
    }

    /// [`GatewayProcess::start`] with `concurrency` messages in flight at most.
    async fn start_with(base: &str, token: &str, name: &str, concurrency: u32) -> GatewayProcess {
        use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["gateway", "--server", base, "--name", name])
            // The test SMTP server listens on loopback.
            .args(["--egress-allow", "127.0.0.0/8"])
            .args(["--concurrency", &concurrency.to_string()])
            .env("HERALD_GATEWAY_TOKEN", token)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the herald binary starts");
        let output = Arc::new(Mutex::new(String::new()));
        fn collect(stream: impl AsyncRead + Unpin + Send + 'static, output: Arc<Mutex<String>>) {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut output = output.lock().unwrap();
                    output.push_str(&line);
                    output.push('\n');
                }
            });
        }
        collect(child.stdout.take().unwrap(), output.clone());
        collect(child.stderr.take().unwrap(), output.clone());
        let process = GatewayProcess { child, output };
        eventually(&format!("gateway {name} to start"), || async {
            process.output().contains("gateway started").then_some(())
        })
        .await;
        process
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits for the process to end by itself; its exit status.
    async fn exits(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the gateway did not exit: {}", self.output()))
            .unwrap()
    }
}

/// A node that sweeps every 500 ms and takes instances (and nodes) for
/// dead after `stale_after` without a sighting.
async fn app_taking_instances_for_dead_after(stale_after: Duration) -> TestApp {
    spawn_app_with(|s| {
        s.heartbeat = Duration::from_millis(500);
        s.node_stale_after = stale_after;
    })
    .await
}

/// Tenant `slug` whose active provider's server is 127.0.0.1:`port`,
/// logging in as herald@acme.example with [`PASSWORD`] (AUTH in clear,
/// allowed), pinned to a new gateway `office`. Returns the tenant, the
/// gateway's id and its token.
async fn office_tenant(app: &TestApp, slug: &str, port: u16) -> (TestTenant, String, String) {
    let tenant = app.tenant(slug).await;
    let gateway = app
        .create_as_admin(&tenant, "gateways", json!({"name": "office"}))
        .await;
    let mut server = clear_auth_entry(port, true);
    server["gateway_id"] = gateway["id"].clone();
    app.configure(&tenant, server, Some(account_with(PASSWORD)))
        .await;
    (
        tenant,
        gateway["id"].as_str().unwrap().to_owned(),
        gateway["token"].as_str().unwrap().to_owned(),
    )
}

/// The nodes named by the message's attempts.
fn attempt_nodes(message: &Value) -> BTreeSet<String> {
    message["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["attempts"].as_array().unwrap().iter())
        .map(|a| a["node"].as_str().unwrap().to_owned())
        .collect()
}

/// Asserts that the test SMTP server received `subjects` different
/// subjects, each once.
fn assert_each_subject_received_once(smtp: &TestSmtpServer, subjects: usize) {
    let received = received_subjects(smtp);
    assert_eq!(received.len(), subjects, "{received:?}");
    assert!(received.values().all(|n| *n == 1), "{received:?}");
}

/// How many times the test SMTP server received each subject.
fn received_subjects(smtp: &TestSmtpServer) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for message in smtp.messages() {
        *counts
            .entry(message.header("Subject").unwrap_or_default())
            .or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn pinned_mail_waits_until_a_gateway_runs_and_then_flows_through_it() {
    let smtp = clear_auth_server(PASSWORD).await;
    let other_smtp = TestSmtpServer::start().await;
    let app = spawn_app().await;
    let (acme, gateway, token) = office_tenant(&app, "acme", smtp.port()).await;
    let globex = app.tenant_sending_to("globex", other_smtp.port()).await;

    let pinned = app.submit_to(&acme, "ops@acme.example", "pinned").await;
    // The node delivers other mail meanwhile, and sends none of the pinned.
    let other = app.submit_to(&globex, "ops@globex.example", "other").await;
    app.wait_for_status(&globex, &other, "sent").await;
    let message = app.message(&acme, &pinned).await;
    assert_eq!(message["status"], "queued", "{message}");
    assert!(attempts_of(&message).is_empty(), "{message}");
    assert!(smtp.messages().is_empty());

    let gw = GatewayProcess::start(&app.base, &token, "office-1").await;
    let message = app.wait_for_status(&acme, &pinned, "sent").await;
    assert_eq!(
        attempt_nodes(&message),
        BTreeSet::from(["gw:office-1".to_owned()]),
        "{message}"
    );
    let received = smtp.messages();
    assert_eq!(received.len(), 1);
    // The account's secret reached the instance sealed for it, and opened there.
    assert_eq!(
        received[0].authenticated_as.as_deref(),
        Some("herald@acme.example")
    );
    assert_eq!(received[0].rcpt_to, ["ops@acme.example"]);

    // The instance is listed, with where it called from and what it delivered.
    let instance = eventually("the instance to count its delivery", || async {
        let (status, shown) = app
            .get_as_admin(&acme, &format!("gateways/{gateway}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{shown}");
        let instance = shown["instances"][0].clone();
        (instance["delivered_this_hour"] == 1).then_some(instance)
    })
    .await;
    assert_eq!(instance["name"], "office-1", "{instance}");
    assert_eq!(instance["address"], "127.0.0.1", "{instance}");
    assert_eq!(instance["alive"], true, "{instance}");
    // A test message through the provider goes through the instance too,
    // with its provider's configuration, and tells every step.
    let test = app
        .send_test_message(&acme, json!({"to": "check@acme.example"}))
        .await;
    let message = app.wait_for_status(&acme, &test, "sent").await;
    assert_eq!(
        attempt_nodes(&message),
        BTreeSet::from(["gw:office-1".to_owned()]),
        "{message}"
    );
    let steps: Vec<&str> = first_attempt_of(&message)["diagnosis"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["step"].as_str())
        .collect();
    assert!(
        steps.contains(&"auth") && steps.contains(&"data"),
        "{message}"
    );
    assert_eq!(smtp.messages().len(), 2);

    // Nothing secret in its logs.
    let logs = gw.output();
    assert!(!logs.contains(PASSWORD) && !logs.contains(&token), "{logs}");
}

#[tokio::test]
async fn an_instance_killed_mid_delivery_loses_nothing() {
    let smtp = clear_auth_server(PASSWORD).await;
    // A short lease, so that the killed instance's claim runs out soon.
    let app = spawn_app_with(|s| s.lease = Duration::from_secs(4)).await;
    let (acme, _, token) = office_tenant(&app, "acme", smtp.port()).await;
    // The server never answers DATA: the first instance hangs there.
    smtp.script(Rule::new(Command::Data, Action::Stall));
    let mut first = GatewayProcess::start(&app.base, &token, "office-1").await;
    let ids = [
        app.submit_to(&acme, "a@acme.example", "one").await,
        app.submit_to(&acme, "b@acme.example", "two").await,
    ];
    for id in &ids {
        eventually("the first instance to claim the message", || async {
            let message = app.message(&acme, id).await;
            (message["recipients"][0]["status"] == "sending").then_some(())
        })
        .await;
    }
    first.child.kill().await.unwrap();

    smtp.clear_script();
    let _second = GatewayProcess::start(&app.base, &token, "office-2").await;
    for id in &ids {
        let message = app.wait_for_status(&acme, id, "sent").await;
        assert!(attempt_nodes(&message).contains("gw:office-2"), "{message}");
    }
    assert_eq!(
        received_subjects(&smtp),
        BTreeMap::from([("one".to_owned(), 1), ("two".to_owned(), 1)])
    );
}

#[tokio::test]
async fn two_instances_share_the_work_and_each_message_goes_once() {
    let smtp = clear_auth_server(PASSWORD).await;
    let app = spawn_app().await;
    let (acme, gateway, token) = office_tenant(&app, "acme", smtp.port()).await;
    let _one = GatewayProcess::start(&app.base, &token, "office-1").await;
    let _two = GatewayProcess::start(&app.base, &token, "office-2").await;
    // Both wait for mail at the node before it comes.
    eventually("both instances to poll", || async {
        let (_, shown) = app
            .get_as_admin(&acme, &format!("gateways/{gateway}"))
            .await;
        (shown["instances"].as_array().map_or(0, Vec::len) == 2).then_some(())
    })
    .await;

    let messages: Vec<Value> = (0..50)
        .map(|i| json!({"to": ["ops@acme.example"], "subject": format!("m{i:02}"), "text": "x"}))
        .collect();
    let (status, answer) = app.submit_batch(&acme, messages).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let ids: Vec<String> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 50, "{answer}");

    let mut nodes = BTreeSet::new();
    for id in &ids {
        nodes.extend(attempt_nodes(&app.wait_for_status(&acme, id, "sent").await));
    }
    assert_eq!(
        nodes,
        BTreeSet::from(["gw:office-1".to_owned(), "gw:office-2".to_owned()])
    );
    assert_each_subject_received_once(&smtp, 50);
}

#[tokio::test]
async fn two_processes_under_one_name_share_the_work_and_each_message_goes_once() {
    let smtp = clear_auth_server(PASSWORD).await;
    // A slow server, so that both processes hold mail while both report.
    smtp.script(Rule::new(
        Command::DataEnd,
        Action::Delay(Duration::from_millis(300)),
    ));
    let app = app_taking_instances_for_dead_after(Duration::from_secs(3)).await;
    let (acme, _, token) = office_tenant(&app, "acme", smtp.port()).await;
    // Two processes under one name: a rolling restart, or two on one host.
    let _one = GatewayProcess::start(&app.base, &token, "office-1").await;
    let _two = GatewayProcess::start(&app.base, &token, "office-1").await;
    let messages: Vec<Value> = (0..30)
        .map(|i| json!({"to": ["ops@acme.example"], "subject": format!("m{i:02}"), "text": "x"}))
        .collect();
    let (status, answer) = app.submit_batch(&acme, messages).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    for result in answer["results"].as_array().unwrap() {
        app.wait_for_status(&acme, result["id"].as_str().unwrap(), "sent")
            .await;
    }
    assert_each_subject_received_once(&smtp, 30);
}

#[tokio::test]
async fn a_gateway_keeps_at_most_sixteen_claims_waiting_at_a_node() {
    let smtp = clear_auth_server(PASSWORD).await;
    let app = Arc::new(spawn_app().await);
    let (acme, gateway, token) = office_tenant(&app, "acme", smtp.port()).await;
    let (_, _, globex_token) = office_tenant(&app, "globex", smtp.port()).await;
    let waiting = |instance: &str, seconds: u32| {
        let mut claim = claim_now();
        claim["instance"] = json!(instance);
        claim["wait_seconds"] = json!(seconds);
        claim
    };
    let mut held = tokio::task::JoinSet::new();
    for i in 0..herald_api::MAX_WAITING_CLAIMS {
        let (app, token) = (app.clone(), token.clone());
        let claim = waiting(&format!("held-{i}"), 25);
        held.spawn(async move { app.post("/v1/gateway/claim", &token, claim).await });
    }
    // A claim takes its place before its instance is recorded: once all
    // sixteen instances show, the sixteen wait.
    eventually("the sixteen claims to wait", || async {
        let (_, shown) = app
            .get_as_admin(&acme, &format!("gateways/{gateway}"))
            .await;
        let count = shown["instances"].as_array().map_or(0, Vec::len);
        (count == herald_api::MAX_WAITING_CLAIMS).then_some(())
    })
    .await;
    let (status, answer) = app
        .post("/v1/gateway/claim", &token, waiting("one-more", 1))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(
        answer["type"], "urn:herald:problem:too-many-waiting-claims",
        "{answer}"
    );
    // A claim that does not wait, and another gateway's, are not refused.
    let (status, answer) = app.post("/v1/gateway/claim", &token, claim_now()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = app
        .post("/v1/gateway/claim", &globex_token, waiting("theirs", 1))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(held.try_join_next().is_none(), "the sixteen still wait");
    held.abort_all();
}

#[tokio::test]
async fn a_new_token_stops_the_running_instance_at_once() {
    let smtp = clear_auth_server(PASSWORD).await;
    let app = spawn_app().await;
    let (acme, gateway, token) = office_tenant(&app, "acme", smtp.port()).await;
    let mut old = GatewayProcess::start(&app.base, &token, "office-1").await;
    let before = app.submit_to(&acme, "ops@acme.example", "before").await;
    app.wait_for_status(&acme, &before, "sent").await;

    let (status, renewed) = app
        .post_as_admin(&acme, &format!("gateways/{gateway}/token"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    let new_token = renewed["token"].as_str().unwrap().to_owned();
    let after = app.submit_to(&acme, "ops@acme.example", "after").await;

    // The running instance's claim is refused: it says so and fails.
    let exit = old.exits().await;
    assert!(!exit.success(), "{}", old.output());
    assert!(old.output().contains("refused"), "{}", old.output());
    let message = app.message(&acme, &after).await;
    assert_eq!(message["status"], "queued", "{message}");
    assert!(attempts_of(&message).is_empty(), "{message}");

    let _new = GatewayProcess::start(&app.base, &new_token, "office-1").await;
    app.wait_for_status(&acme, &after, "sent").await;
    assert_eq!(
        received_subjects(&smtp),
        BTreeMap::from([("after".to_owned(), 1), ("before".to_owned(), 1)])
    );
}

/// A claim body that waits for nothing.
fn claim_now() -> Value {
    json!({"instance": "probe", "version": "test", "incarnation": "i1", "limit": 10,
           "wait_seconds": 0, "key": herald_core_key()})
}

/// Sends a claim that waits up to 25 s for mail, from a task of its own
/// that ends with the node's answer.
fn spawn_waiting_claim(app: &TestApp, token: String) -> tokio::task::JoinHandle<reqwest::Response> {
    let mut body = claim_now();
    body["wait_seconds"] = json!(25);
    let (client, base) = (app.client.clone(), app.base.clone());
    tokio::spawn(async move {
        client
            .post(format!("{base}/v1/gateway/claim"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    })
}

fn herald_core_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
}

#[tokio::test]
async fn a_gateway_token_opens_the_gateway_routes_only_and_nothing_else_opens_them() {
    let smtp = clear_auth_server(PASSWORD).await;
    let app = spawn_app().await;
    let (acme, gateway, token) = office_tenant(&app, "acme", smtp.port()).await;
    let t = |rest: &str| format!("/v1/tenants/{}/{rest}", acme.slug);

    for (method, path) in [
        (Method::GET, t("messages")),
        (Method::GET, t("gateways")),
        (Method::GET, t(&format!("gateways/{gateway}"))),
        (Method::GET, "/v1/tenants".to_owned()),
        (Method::GET, "/v1/nodes".to_owned()),
    ] {
        let (status, answer) = app.call(method.clone(), &path, Some(&token), None).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}: {answer}"
        );
    }
    let (status, answer) = app
        .call(
            Method::POST,
            &t("messages"),
            Some(&token),
            Some(json!({"to": ["ops@acme.example"], "subject": "s", "text": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");

    for other in [
        acme.admin.as_str(),
        acme.sender.as_str(),
        OPERATOR,
        "hrldg_not_a_token",
    ] {
        for path in [
            "/v1/gateway/claim",
            "/v1/gateway/outcomes",
            "/v1/gateway/release",
        ] {
            let (status, answer) = app
                .call(Method::POST, path, Some(other), Some(claim_now()))
                .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {answer}");
        }
    }
    let (status, answer) = app
        .call(Method::POST, "/v1/gateway/claim", None, Some(claim_now()))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");

    // The gateway's own token claims (nothing is due).
    let (status, answer) = app.post("/v1/gateway/claim", &token, claim_now()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["recipients"], json!([]), "{answer}");
}

#[tokio::test]
async fn a_claim_sends_nothing_of_mail_whose_route_left_the_gateway_and_outcomes_are_fenced() {
    let smtp = clear_auth_server(PASSWORD).await;
    let elsewhere = TestSmtpServer::start().await;
    let app = spawn_app().await;
    let (acme, _, token) = office_tenant(&app, "acme", smtp.port()).await;
    let (globex, _, globex_token) = office_tenant(&app, "globex", smtp.port()).await;
    let id = app.submit_to(&acme, "ops@acme.example", "moved").await;
    let globex_id = app.submit_to(&globex, "ops@globex.example", "g").await;

    // Another tenant's gateway claims its own mail only.
    let (status, claimed) = app
        .post("/v1/gateway/claim", &globex_token, claim_now())
        .await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    assert_eq!(claimed["recipients"].as_array().unwrap().len(), 1);
    assert_eq!(claimed["messages"][0]["id"], globex_id.as_str());
    let account = &claimed["providers"][0]["config"]["account"];
    // The secret travels sealed under the claim's key, never in clear.
    let sealed = account["sealed_secret"].as_str().unwrap();
    assert!(sealed.starts_with("hk1."), "{account}");
    assert!(!claimed.to_string().contains(PASSWORD));

    // acme's gateway may not report for globex's recipient.
    let lease = &claimed["recipients"][0];
    let outcome = json!({"instance": "probe", "outcomes": [{
        "recipient": lease["recipient"], "lease_token": lease["lease_token"],
        "next": {"state": "sent"},
        "attempt": {"at": 1, "node": "gw:probe", "server": "x:25", "outcome": "sent",
            "step": null, "code": 250, "enhanced_code": null, "response": "ok", "duration_ms": 1,
            "remote_addr": null, "tls_version": null, "tls_cipher": null, "provider_id": null,
            "config_version": null, "sender_policy": null, "diagnosis": null}}]});
    let (status, answer) = app
        .post("/v1/gateway/outcomes", &token, outcome.clone())
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let (status, answer) = app
        .post(
            "/v1/gateway/release",
            &token,
            json!({"instance": "probe", "leases": [
                {"recipient": lease["recipient"], "lease_token": lease["lease_token"]}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    // Its own gateway's may.
    let (status, answer) = app
        .post("/v1/gateway/outcomes", &globex_token, outcome)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], json!([true]));
    app.wait_for_status(&globex, &globex_id, "sent").await;

    // acme's route moves to a server of the nodes after its mail was pinned:
    // the gateway's claim gets none of it, and a node sends it there.
    let relay = app
        .create_smtp_server(
            &acme,
            json!({"name": "relay", "host": "127.0.0.1", "port": elsewhere.port(),
                   "security": "none"}),
        )
        .await;
    let provider = app
        .create_as_admin(
            &acme,
            "providers",
            json!({"name": "relay", "smtp_server_id": relay["id"],
                   "from_address": "alerts@acme.example"}),
        )
        .await;
    app.activate_provider(&acme, &provider["id"]).await;
    app.refresh(&acme).await;
    let (status, claimed) = app.post("/v1/gateway/claim", &token, claim_now()).await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    assert_eq!(claimed["recipients"], json!([]), "{claimed}");
    assert_eq!(claimed["messages"], json!([]), "{claimed}");
    assert_eq!(claimed["providers"], json!([]), "{claimed}");
    let message = app.wait_for_status(&acme, &id, "sent").await;
    assert_eq!(
        attempt_nodes(&message),
        BTreeSet::from(["test-node".to_owned()])
    );
    elsewhere.wait_for_messages(1, DEADLINE).await;
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn a_waiting_claim_does_not_hold_the_nodes_shutdown() {
    let smtp = clear_auth_server(PASSWORD).await;
    let mut app = spawn_app().await;
    let (acme, gateway, token) = office_tenant(&app, "acme", smtp.port()).await;
    let claim = spawn_waiting_claim(&app, token);
    // Seen: the claim waits for mail now.
    eventually("the claim to be waiting", || async {
        let (_, shown) = app
            .get_as_admin(&acme, &format!("gateways/{gateway}"))
            .await;
        (shown["instances"].as_array().map_or(0, Vec::len) == 1).then_some(())
    })
    .await;
    let node = app.node.take().unwrap();
    tokio::time::timeout(DEADLINE / 4, node.shutdown())
        .await
        .expect("the node stops without waiting out the claim");
    let answered = claim.await.unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
    let answer: Value = answered.json().await.unwrap();
    assert_eq!(answer["recipients"], json!([]), "{answer}");
}

#[tokio::test]
async fn an_instance_whose_claim_waits_stays_alive_past_the_stale_after_period() {
    let smtp = clear_auth_server(PASSWORD).await;
    // Instances (and nodes) count as dead after 3 s without a sighting,
    // much less than the claim's 25 s wait.
    let stale_after = Duration::from_secs(3);
    let app = app_taking_instances_for_dead_after(stale_after).await;
    let (acme, gateway, token) = office_tenant(&app, "acme", smtp.port()).await;
    let claim = spawn_waiting_claim(&app, token);
    let instance = || async {
        let (status, shown) = app
            .get_as_admin(&acme, &format!("gateways/{gateway}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{shown}");
        shown["instances"].as_array().unwrap().first().cloned()
    };
    let first = eventually("the claim to be waiting", instance).await;
    let since = tokio::time::Instant::now();
    // Alive at every look until twice the stale-after period has passed
    // since the claim began, with the claim still waiting all along.
    eventually("twice the stale-after period to pass", || async {
        let shown = instance().await.unwrap();
        assert_eq!(shown["alive"], true, "first {first}, now {shown}");
        assert!(!claim.is_finished(), "the claim waits for mail");
        (since.elapsed() > stale_after * 2).then_some(())
    })
    .await;
    claim.abort();
}

#[tokio::test]
async fn the_node_decides_what_a_gateways_attempt_record_says() {
    let smtp = clear_auth_server(PASSWORD).await;
    let app = spawn_app().await;
    let (acme, _, token) = office_tenant(&app, "acme", smtp.port()).await;
    let id = app.submit_to(&acme, "ops@acme.example", "claimed").await;
    let (status, claimed) = app.post("/v1/gateway/claim", &token, claim_now()).await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    let lease = &claimed["recipients"][0];
    let outcome = |server: &str, response: &str| {
        json!({"instance": "probe", "outcomes": [{
            "recipient": lease["recipient"], "lease_token": lease["lease_token"],
            "next": {"state": "sent"},
            "attempt": {"at": 1, "node": "vm", "server": server, "outcome": "sent",
                "step": null, "code": 250, "enhanced_code": null, "response": response,
                "duration_ms": -5, "remote_addr": null, "tls_version": null,
                "tls_cipher": null, "provider_id": null, "config_version": null,
                "sender_policy": null, "diagnosis": null}}]})
    };
    // A field that cannot be made sane is refused, by name.
    let long_server = format!("{}:25", "a".repeat(400));
    let (status, answer) = app
        .post(
            "/v1/gateway/outcomes",
            &token,
            outcome(&long_server, "250 ok"),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(
        field_errors(&answer),
        [(
            "outcomes[0].attempt.server".to_owned(),
            "must be at most 300 characters".to_owned()
        )]
    );

    // The rest is made sane: the node, the time, the duration, the length.
    let response = format!("250 {}", "x".repeat(herald_smtp::MAX_REPLY_BYTES));
    let (status, answer) = app
        .post(
            "/v1/gateway/outcomes",
            &token,
            outcome("127.0.0.1:25", &response),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], json!([true]));
    let message = app.wait_for_status(&acme, &id, "sent").await;
    let attempt = first_attempt_of(&message);
    assert_eq!(attempt["node"], "gw:probe", "{attempt}");
    assert_eq!(attempt["duration_ms"], 0, "{attempt}");
    let at = attempt["at"].as_str().unwrap();
    assert!(!at.starts_with("1970"), "{at}");
    let recorded = attempt["response"].as_str().unwrap();
    assert_eq!(recorded.len(), herald_smtp::MAX_REPLY_BYTES);
    assert!(response.starts_with(recorded));
}

#[tokio::test]
async fn a_gateways_deferral_is_kept_between_now_and_the_nodes_longest() {
    let smtp = clear_auth_server(PASSWORD).await;
    let app = spawn_app().await;
    let (acme, _, token) = office_tenant(&app, "acme", smtp.port()).await;
    let far = app.submit_to(&acme, "far@acme.example", "far").await;
    let past = app.submit_to(&acme, "past@acme.example", "past").await;
    let (status, claimed) = app.post("/v1/gateway/claim", &token, claim_now()).await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    let leases = claimed["recipients"].as_array().unwrap();
    assert_eq!(leases.len(), 2, "{claimed}");
    let deferred = |lease: &Value, until: i64| {
        json!({"recipient": lease["recipient"], "lease_token": lease["lease_token"],
            "next": {"state": "deferred", "until": until},
            "attempt": {"at": 1, "node": "vm", "server": "x:25", "outcome": "deferred",
                "step": "rcpt", "code": 451, "enhanced_code": null, "response": "451 later",
                "duration_ms": 1, "remote_addr": null, "tls_version": null,
                "tls_cipher": null, "provider_id": null, "config_version": null,
                "sender_policy": null, "diagnosis": null}})
    };
    // The far one asks for the year 9999, the other for 1970.
    let untils: Vec<i64> = leases
        .iter()
        .map(|l| match l["address"].as_str() {
            Some("far@acme.example") => 253_402_300_799_000,
            _ => 1,
        })
        .collect();
    let before = herald_core::timestamp::now_ms();
    let (status, answer) = app
        .post(
            "/v1/gateway/outcomes",
            &token,
            json!({"instance": "probe", "outcomes": [
                deferred(&leases[0], untils[0]), deferred(&leases[1], untils[1])]}),
        )
        .await;
    let after = herald_core::timestamp::now_ms();
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], json!([true, true]));
    // The node's longest: its --max-age, two days by default.
    let longest = 2 * 86_400_000;
    let next = |message: Value| ms(&message["recipients"][0]["next_attempt_at"]);
    let far_next = next(app.wait_for_status(&acme, &far, "deferred").await);
    assert!(
        (before + longest..=after + longest).contains(&far_next),
        "{far_next} against {before}..{after}"
    );
    let past_next = next(app.wait_for_status(&acme, &past, "deferred").await);
    assert!(
        (before..=after).contains(&past_next),
        "{past_next} against {before}..{after}"
    );
}

/// Starts instance `name`, has it claim one message whose DATA the server
/// never answers, and kills it there (SIGKILL); returns the message's id.
async fn killed_mid_delivery(
    app: &TestApp,
    acme: &TestTenant,
    smtp: &TestSmtpServer,
    token: &str,
    name: &str,
) -> String {
    smtp.script(Rule::new(Command::Data, Action::Stall));
    let mut instance = GatewayProcess::start(&app.base, token, name).await;
    let id = app.submit_to(acme, "a@acme.example", "one").await;
    eventually("the instance to claim the message", || async {
        let message = app.message(acme, &id).await;
        (message["recipients"][0]["status"] == "sending").then_some(())
    })
    .await;
    instance.child.kill().await.unwrap();
    smtp.clear_script();
    id
}

/// Kills process `office-1` mid-delivery under the default lease (5
/// minutes), with processes taken for dead after 3 s of silence, then
/// starts a process named `next`: the mail is delivered by it, once.
async fn a_killed_processs_mail_goes_to(next: &str) {
    let smtp = clear_auth_server(PASSWORD).await;
    let app = app_taking_instances_for_dead_after(Duration::from_secs(3)).await;
    let (acme, _, token) = office_tenant(&app, "acme", smtp.port()).await;
    let id = killed_mid_delivery(&app, &acme, &smtp, &token, "office-1").await;

    let _next = GatewayProcess::start(&app.base, &token, next).await;
    let message = app.wait_for_status(&acme, &id, "sent").await;
    assert!(
        attempt_nodes(&message).contains(&format!("gw:{next}")),
        "{message}"
    );
    assert_eq!(
        received_subjects(&smtp),
        BTreeMap::from([("one".to_owned(), 1)])
    );
}

#[tokio::test]
async fn a_restarted_instance_gets_its_killed_processs_mail_back_after_the_stale_after_period() {
    // The new process reports under the same name; the killed one's lease
    // comes back once that one has been silent for the period all the same.
    a_killed_processs_mail_goes_to("office-1").await;
}

#[tokio::test]
async fn a_silent_instances_mail_goes_to_another_after_the_stale_after_period() {
    a_killed_processs_mail_goes_to("office-2").await;
}

#[tokio::test]
async fn a_busy_instance_that_does_not_claim_keeps_its_leases() {
    let smtp = clear_auth_server(PASSWORD).await;
    // Instances count as dead after 6 s of silence (nodes sweep every
    // 500 ms); the gateway reports every 4 s even while it does not claim.
    let stale_after = Duration::from_secs(6);
    let app = app_taking_instances_for_dead_after(stale_after).await;
    let (acme, gateway, token) = office_tenant(&app, "acme", smtp.port()).await;
    // One message in flight at most, and it hangs in DATA: the instance
    // does not claim while it lasts.
    smtp.script(Rule::new(Command::Data, Action::Stall));
    let _busy = GatewayProcess::start_with(&app.base, &token, "office-1", 1).await;
    let id = app.submit_to(&acme, "a@acme.example", "one").await;
    eventually("the instance to claim the message", || async {
        let message = app.message(&acme, &id).await;
        (message["recipients"][0]["status"] == "sending").then_some(())
    })
    .await;
    let since = tokio::time::Instant::now();
    eventually("twice the stale-after period to pass", || async {
        let message = app.message(&acme, &id).await;
        assert_eq!(
            message["recipients"][0]["status"], "sending",
            "the busy instance keeps its lease: {message}"
        );
        let (_, shown) = app
            .get_as_admin(&acme, &format!("gateways/{gateway}"))
            .await;
        assert_eq!(shown["instances"][0]["alive"], true, "{shown}");
        (since.elapsed() > stale_after * 2).then_some(())
    })
    .await;
}
