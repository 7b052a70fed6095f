//! `spawn_app()` and typed helpers for talking to a running node like a client would.

use std::future::Future;
use std::time::Duration;

use herald::config::{ServeArgs, Settings};
use herald::node::{Node, start};
use herald_core::Secret;
use herald_testsmtp::{Action, Command, Rule, ServerConfig, TestSmtpServer, TestTls};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

/// The operator token every test node accepts.
pub const OPERATOR: &str = "hrld_test_operator_token_0123456789abcdef";

/// How long any test waits for a condition before failing.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A node running in this process, with its own data directory.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    /// The in-process node, if any; held so it runs for the whole test.
    #[allow(dead_code)]
    pub node: Option<Node>,
    /// The node's data directory, removed when the test ends.
    #[allow(dead_code)]
    pub dir: TempDir,
}

/// A tenant created for a test, with an admin and a sender token.
pub struct TestTenant {
    pub slug: String,
    pub admin: String,
    pub sender: String,
}

// Nodes and tenants.

/// Settings for a test node: port 0, fast retries and polls.
/// Milliseconds since the epoch of an RFC 3339 time the API answered.
/// Reads until the server ends the request; returns what it answered.
pub async fn answer_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("the server ends the request")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Writes `request` as it is to the node at `addr` (host:port) and returns
/// everything it answers until it closes the connection.
pub async fn raw_exchange(addr: &str, request: &[u8]) -> String {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    answer_until_closed(&mut stream).await
}

pub fn ms(value: &Value) -> i64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"));
    herald_core::timestamp::parse_rfc3339(text).unwrap()
}

pub fn test_settings(dir: &TempDir) -> Settings {
    let args = ServeArgs {
        http: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(dir.path().to_owned()),
        node_name: Some("test-node".into()),
        retry_base: Some("200ms".into()),
        retry_max: Some("1s".into()),
        poll_interval: Some("200ms".into()),
        smtp_timeout: Some("5s".into()),
        // The test SMTP servers listen on loopback, which tenants may not use by default.
        egress_allow: Some("127.0.0.0/8".into()),
        ..ServeArgs::default()
    };
    let mut settings = args.resolve().expect("test settings are valid");
    settings.bootstrap_token = Some(Secret::new(OPERATOR));
    // The node renders templates in this build's binary, as `herald serve` does.
    settings.render_exe = Some(env!("CARGO_BIN_EXE_herald").into());
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut settings = test_settings(&dir);
    adjust(&mut settings);
    start_app(dir, settings).await
}

/// Spawns a node with the SMTP submission listener on 127.0.0.1:0 (read it
/// with [`TestApp::smtp_addr`]), offering STARTTLS with `tls`'s certificate
/// when given (its files written to the node's data directory), and the
/// listener's settings changed by `adjust`.
pub async fn spawn_app_with_smtp(
    tls: Option<&TestTls>,
    adjust: impl FnOnce(&mut herald_ingress::Settings),
) -> TestApp {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut settings = test_settings(&dir);
    let mut smtp = herald_ingress::Settings::new("herald.test");
    smtp.listen = Some("127.0.0.1:0".parse().unwrap());
    if let Some(tls) = tls {
        let (cert, key) = (
            dir.path().join("smtp-cert.pem"),
            dir.path().join("smtp-key.pem"),
        );
        std::fs::write(&cert, tls.cert_pem()).unwrap();
        std::fs::write(&key, tls.key_pem()).unwrap();
        (smtp.tls_cert, smtp.tls_key) = (Some(cert), Some(key));
    }
    adjust(&mut smtp);
    settings.smtp = Some(smtp);
    start_app(dir, settings).await
}

async fn start_app(dir: TempDir, settings: Settings) -> TestApp {
    let node = start(settings).await.expect("the node starts");
    TestApp {
        base: format!("http://{}", node.http_addr),
        client: reqwest::Client::new(),
        node: Some(node),
        dir,
    }
}

/// Spawns a node with tenant `acme`, whose mail goes to the system default.
pub async fn app_with_acme() -> (TestApp, TestTenant) {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    (app, acme)
}

/// Spawns a node with tenant `acme` whose mail goes to `smtp`.
pub async fn app_sending_to(smtp: &TestSmtpServer) -> (TestApp, TestTenant) {
    let app = spawn_app().await;
    let acme = app.tenant_sending_to("acme", smtp.port()).await;
    (app, acme)
}

/// An SMTP credential as created: its password is shown only then.
pub struct SmtpLogin {
    pub id: String,
    pub username: String,
    pub password: String,
}

/// A response's status and body.
pub type Answer = (StatusCode, Value);

/// The path of `rest` under the tenant: `/v1/tenants/{slug}/{rest}`.
pub fn tenant_path(tenant: &TestTenant, rest: &str) -> String {
    format!("/v1/tenants/{}/{rest}", tenant.slug)
}

// Test SMTP servers, server entries and accounts.

/// A test SMTP server offering STARTTLS with a new certificate for 127.0.0.1
/// and accepting the login `user` with `password`; with its certificate.
pub async fn starttls_server_with_auth(user: &str, password: &str) -> (TestTls, TestSmtpServer) {
    let tls = TestTls::generate(&["127.0.0.1"]);
    let config = ServerConfig::new()
        .starttls(tls.clone())
        .auth(user, password);
    (tls, TestSmtpServer::start_with(config).await)
}

/// A test SMTP server without TLS that takes the login herald@acme.example
/// with `password`.
pub async fn clear_auth_server(password: &str) -> TestSmtpServer {
    let config = ServerConfig::new().auth("herald@acme.example", password);
    TestSmtpServer::start_with(config).await
}

/// A server entry for 127.0.0.1:`port` without TLS that logs in, and may send
/// the password in clear when `allowed`.
pub fn clear_auth_entry(port: u16, allowed: bool) -> Value {
    json!({"name": "mx", "host": "127.0.0.1", "port": port, "security": "none",
           "requires_auth": true, "allow_plaintext_auth": allowed})
}

/// Runs `python3` with `args` and returns what it printed; the test fails,
/// showing its output, unless it succeeds (`what` says what it was doing).
pub async fn python3<S: AsRef<std::ffi::OsStr>>(
    what: &str,
    args: impl IntoIterator<Item = S>,
) -> Vec<u8> {
    let output = tokio::process::Command::new("python3")
        .args(args)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{what}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The number a `SELECT count(*) …` query answers on a PostgreSQL database.
pub async fn count(client: &tokio_postgres::Client, query: &str) -> i64 {
    client.query_one(query, &[]).await.unwrap().get(0)
}

/// An account for `configure`: herald@acme.example with `password`.
pub fn account_with(password: &str) -> Value {
    json!({"username": "herald@acme.example", "password": password})
}

/// A server entry answer's warnings as (code, message) pairs.
pub fn server_warnings(server: &Value) -> Vec<(String, String)> {
    server["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings list: {server}"))
        .iter()
        .map(|w| {
            let field = |name: &str| w[name].as_str().unwrap().to_owned();
            (field("code"), field("message"))
        })
        .collect()
}

/// A script rule: the test SMTP server answers `command` with `code` and `text`.
pub fn reply(command: Command, code: u16, text: &str) -> Rule {
    Rule::new(command, Action::Reply(code, text.into()))
}

// Messages: submitting, reading, waiting.

/// Submits `n` messages (to u0@acme.example, …) and waits until `smtp` has
/// been sent DATA for each (a server told to stall there keeps them `sending`);
/// returns their ids.
pub async fn submit_until_each_reaches_data(
    app: &TestApp,
    tenant: &TestTenant,
    smtp: &TestSmtpServer,
    n: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let body =
            json!({"to": [format!("u{i}@acme.example")], "subject": format!("m{i}"), "text": "x"});
        ids.push(app.submit(tenant, body).await);
    }
    eventually("every message to reach DATA", || async {
        let at_data = smtp.commands().iter().filter(|c| *c == "DATA").count();
        (at_data == ids.len()).then_some(())
    })
    .await;
    ids
}

/// The field errors of a 422 answer, as (field, rule).
pub fn field_errors(answer: &Value) -> Vec<(String, String)> {
    answer["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {answer}"))
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_owned(),
                e["rule"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The fields a 422 answer names, in its order.
pub fn error_fields(answer: &Value) -> Vec<String> {
    field_errors(answer)
        .into_iter()
        .map(|(field, _)| field)
        .collect()
}

/// The attempts on the message's first recipient.
pub fn attempts_of(message: &Value) -> &Vec<Value> {
    message["recipients"][0]["attempts"]
        .as_array()
        .expect("the first recipient's attempts")
}

/// The first attempt on the message's first recipient.
pub fn first_attempt_of(message: &Value) -> &Value {
    &message["recipients"][0]["attempts"][0]
}

/// Asserts that the attempt records its TLS version (starting with
/// `version_prefix`) and a cipher: it went over TLS.
pub fn assert_encrypted(attempt: &Value, version_prefix: &str) {
    assert!(
        attempt["tls_version"]
            .as_str()
            .is_some_and(|v| v.starts_with(version_prefix)),
        "{attempt}"
    );
    assert!(
        attempt["tls_cipher"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{attempt}"
    );
}

/// Polls `probe` until it returns `Some`, failing the test after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    herald_testkit::eventually(what, DEADLINE, probe).await
}

impl TestApp {
    /// The address of the node's SMTP submission listener (STARTTLS port).
    pub fn smtp_addr(&self) -> std::net::SocketAddr {
        self.node
            .as_ref()
            .and_then(|node| node.smtp_addr)
            .expect("a node spawned with its SMTP listener")
    }

    /// The address of the node's SMTP listener with implicit TLS.
    pub fn smtps_addr(&self) -> std::net::SocketAddr {
        self.node
            .as_ref()
            .and_then(|node| node.smtps_addr)
            .expect("a node spawned with its implicit-TLS SMTP listener")
    }

    /// Creates an SMTP credential of the tenant as its administrator.
    pub async fn smtp_credential(&self, tenant: &TestTenant) -> SmtpLogin {
        let body = json!({"name": "application"});
        let (status, created) = self.post_as_admin(tenant, "smtp-credentials", body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let field = |name: &str| created[name].as_str().unwrap().to_owned();
        SmtpLogin {
            id: field("id"),
            username: field("username"),
            password: field("password"),
        }
    }

    /// Creates an IP connector of the tenant over `cidrs`; returns its id.
    pub async fn smtp_connector(&self, tenant: &TestTenant, cidrs: &[&str]) -> String {
        let body = json!({"name": "relay", "cidrs": cidrs});
        let (status, created) = self.post_as_admin(tenant, "smtp-connectors", body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["id"].as_str().unwrap().to_owned()
    }

    /// Sends a request with a token and an optional JSON body; returns status and parsed body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the request reaches the node");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Sends a raw body with a content type.
    pub async fn call_raw(
        &self,
        path: &str,
        token: &str,
        content_type: &str,
        body: &str,
    ) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("the request reaches the node");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// GETs `/v1/tenants/{slug}/{rest}` with the tenant's admin token.
    pub async fn get_as_admin(&self, tenant: &TestTenant, rest: &str) -> Answer {
        self.get(&tenant_path(tenant, rest), &tenant.admin).await
    }

    /// GETs `/v1/tenants/{slug}/{rest}` with the tenant's sender token.
    pub async fn get_as_sender(&self, tenant: &TestTenant, rest: &str) -> Answer {
        self.get(&tenant_path(tenant, rest), &tenant.sender).await
    }

    /// POSTs `body` to `/v1/tenants/{slug}/{rest}` with the tenant's admin token.
    pub async fn post_as_admin(&self, tenant: &TestTenant, rest: &str, body: Value) -> Answer {
        self.send_as_admin(Method::POST, tenant, rest, body).await
    }

    /// POSTs `body` to `/v1/tenants/{slug}/{rest}` with the tenant's sender token.
    pub async fn post_as_sender(&self, tenant: &TestTenant, rest: &str, body: Value) -> Answer {
        self.post(&tenant_path(tenant, rest), &tenant.sender, body)
            .await
    }

    /// PUTs `body` to `/v1/tenants/{slug}/{rest}` with the tenant's admin token.
    pub async fn put_as_admin(&self, tenant: &TestTenant, rest: &str, body: Value) -> Answer {
        self.send_as_admin(Method::PUT, tenant, rest, body).await
    }

    /// PATCHes `/v1/tenants/{slug}/{rest}` with `body` and the tenant's admin token.
    pub async fn patch_as_admin(&self, tenant: &TestTenant, rest: &str, body: Value) -> Answer {
        self.send_as_admin(Method::PATCH, tenant, rest, body).await
    }

    /// DELETEs `/v1/tenants/{slug}/{rest}` with the tenant's admin token.
    pub async fn delete_as_admin(&self, tenant: &TestTenant, rest: &str) -> Answer {
        let path = tenant_path(tenant, rest);
        self.call(Method::DELETE, &path, Some(&tenant.admin), None)
            .await
    }

    async fn send_as_admin(
        &self,
        method: Method,
        tenant: &TestTenant,
        rest: &str,
        body: Value,
    ) -> Answer {
        let path = tenant_path(tenant, rest);
        self.call(method, &path, Some(&tenant.admin), Some(body))
            .await
    }

    /// Makes `provider` (an id) the tenant's notification provider; returns
    /// the tenant's properties as answered.
    pub async fn activate_provider(&self, tenant: &TestTenant, provider: &Value) -> Value {
        let body = json!({ "notification_provider_id": provider });
        let (status, props) = self.put_as_admin(tenant, "properties", body).await;
        assert_eq!(status, StatusCode::OK, "{props}");
        props
    }

    /// POSTs `body` to the tenant's collection `rest` as its administrator,
    /// which must answer 201 Created; what was created.
    pub async fn create_as_admin(&self, tenant: &TestTenant, rest: &str, body: Value) -> Value {
        let (status, created) = self.post_as_admin(tenant, rest, body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created
    }

    /// The id of the tenant's first provider, as its administrator lists them.
    pub async fn first_provider_id(&self, tenant: &TestTenant) -> String {
        let (status, providers) = self.get_as_admin(tenant, "providers").await;
        assert_eq!(status, StatusCode::OK, "{providers}");
        providers[0]["id"].as_str().expect("a provider").to_owned()
    }

    /// Sends a test message through the tenant's first provider (`body`:
    /// where to, if not to the fallback recipient); returns its id.
    pub async fn send_test_message(&self, tenant: &TestTenant, body: Value) -> String {
        let id = self.first_provider_id(tenant).await;
        let (status, answer) = self.test_provider(tenant, &id, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        answer["message_id"].as_str().unwrap().to_owned()
    }

    /// Tenant acme sending through `smtp` (a [`clear_auth_server`]) without
    /// TLS, logging in with `password`, AUTH in clear `allowed` or not.
    pub async fn clear_auth_tenant(
        &self,
        smtp: &TestSmtpServer,
        allowed: bool,
        password: &str,
    ) -> TestTenant {
        let entry = clear_auth_entry(smtp.port(), allowed);
        self.configured_tenant("acme", entry, Some(account_with(password)))
            .await
    }

    /// Asks for a test message through the provider (`body`: where to, if
    /// not to the fallback recipient); returns the status and the answer.
    pub async fn test_provider(
        &self,
        tenant: &TestTenant,
        provider: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let rest = format!("providers/{provider}/test");
        self.post_as_admin(tenant, &rest, body).await
    }

    /// Creates a tenant with an admin and a sender token.
    pub async fn tenant(&self, slug: &str) -> TestTenant {
        let (status, body) = self
            .post("/v1/tenants", OPERATOR, json!({"slug": slug, "name": slug}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        // The administrator is a person with a personal token; the sender a service token.
        let (status, person) = self
            .post(
                &format!("/v1/tenants/{slug}/persons"),
                OPERATOR,
                json!({"name": "Admin", "email": format!("admin@{slug}.example"), "role": "tenant_admin"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{person}");
        let token = |body: Value| async move {
            let (status, body) = self
                .post(&format!("/v1/tenants/{slug}/tokens"), OPERATOR, body)
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body["token"].as_str().unwrap().to_owned()
        };
        TestTenant {
            slug: slug.into(),
            admin: token(json!({"name": "admin", "person_id": person["id"]})).await,
            sender: token(json!({"name": "sender", "role": "sender"})).await,
        }
    }

    /// Creates an SMTP server entry as the tenant's administrator; the answer
    /// (which must be 201 Created), with its warnings.
    pub async fn create_smtp_server(&self, tenant: &TestTenant, body: Value) -> Value {
        let (status, server) = self.post_as_admin(tenant, "smtp-servers", body).await;
        assert_eq!(status, StatusCode::CREATED, "{server}");
        server
    }

    /// Points the tenant at an SMTP server on 127.0.0.1:`port` without TLS, through a new active provider.
    pub async fn use_smtp_server(&self, tenant: &TestTenant, port: u16) -> String {
        let body = json!({"name": format!("test-{port}"), "host": "127.0.0.1", "port": port, "security": "none"});
        let server = self.create_smtp_server(tenant, body).await;
        let (status, provider) = self
            .post_as_admin(
                tenant,
                "providers",
                json!({
                    "name": format!("corporate-{port}"), "smtp_server_id": server["id"],
                    "from_address": "alerts@acme.example", "from_name": "Acme Alerts",
                    "fallback_recipient": "ops@acme.example"
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{provider}");
        self.activate_provider(tenant, &provider["id"]).await;
        self.refresh(tenant).await;
        provider["id"].as_str().unwrap().to_owned()
    }

    /// Creates a tenant whose mail goes to the SMTP server on 127.0.0.1:`port`.
    pub async fn tenant_sending_to(&self, slug: &str, port: u16) -> TestTenant {
        let tenant = self.tenant(slug).await;
        self.use_smtp_server(&tenant, port).await;
        tenant
    }

    /// The operator grants the tenant the credential storage entitlement;
    /// returns the tenant as answered.
    pub async fn grant_credential_storage(&self, slug: &str) -> Value {
        let (status, tenant) = self
            .call(
                Method::PUT,
                &format!("/v1/tenants/{slug}/entitlements"),
                Some(OPERATOR),
                Some(json!({"credential_storage": true})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{tenant}");
        tenant
    }

    /// Grants the tenant credential storage, creates the server (and the
    /// account, when given), a provider through them, and makes it active.
    /// Returns the server's JSON.
    pub async fn configure(
        &self,
        tenant: &TestTenant,
        server: Value,
        account: Option<Value>,
    ) -> Value {
        let slug = &tenant.slug;
        self.grant_credential_storage(slug).await;
        let server = self.create_smtp_server(tenant, server).await;
        let mut provider = json!({
            "name": "corporate", "smtp_server_id": server["id"],
            "from_address": "alerts@acme.example", "fallback_recipient": "ops@acme.example"
        });
        if let Some(account) = account {
            let accounts = format!("smtp-servers/{}/accounts", server["id"].as_str().unwrap());
            let (status, account) = self.post_as_admin(tenant, &accounts, account).await;
            assert_eq!(status, StatusCode::CREATED, "{account}");
            provider["account_id"] = account["id"].clone();
        }
        let (status, provider) = self.post_as_admin(tenant, "providers", provider).await;
        assert_eq!(status, StatusCode::CREATED, "{provider}");
        self.activate_provider(tenant, &provider["id"]).await;
        self.refresh(tenant).await;
        server
    }

    /// Creates a tenant and [`TestApp::configure`]s it with `server` and `account`.
    pub async fn configured_tenant(
        &self,
        slug: &str,
        server: Value,
        account: Option<Value>,
    ) -> TestTenant {
        let tenant = self.tenant(slug).await;
        self.configure(&tenant, server, account).await;
        tenant
    }

    /// Makes the tenant's latest provider change effective at once.
    pub async fn refresh(&self, tenant: &TestTenant) {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/v1/tenants/{}/properties/refresh", tenant.slug),
                Some(&tenant.admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// Waits until the message's first recipient has at least `n` attempts and returns the message.
    pub async fn wait_for_attempts(&self, tenant: &TestTenant, id: &str, n: usize) -> Value {
        eventually(&format!("message {id} to have {n} attempts"), || async {
            let message = self.message(tenant, id).await;
            let count = message["recipients"][0]["attempts"]
                .as_array()
                .map_or(0, Vec::len);
            (count >= n).then_some(message)
        })
        .await
    }

    /// Submits a plain message (text "x") to one address and returns its id.
    pub async fn submit_to(&self, tenant: &TestTenant, to: &str, subject: &str) -> String {
        self.submit(tenant, json!({"to": [to], "subject": subject, "text": "x"}))
            .await
    }

    /// Submits `messages` as one batch; returns the status and the answer.
    pub async fn submit_batch(
        &self,
        tenant: &TestTenant,
        messages: Vec<Value>,
    ) -> (StatusCode, Value) {
        self.post_as_sender(tenant, "messages/batch", json!({ "messages": messages }))
            .await
    }

    /// Submits a message and returns its id.
    pub async fn submit(&self, tenant: &TestTenant, message: Value) -> String {
        let (status, body) = self.post_as_sender(tenant, "messages", message).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// The message as the tenant's administrator reads it: with a test
    /// message's diagnosis, which senders and members do not see.
    pub async fn message(&self, tenant: &TestTenant, id: &str) -> Value {
        let (status, body) = self.get_as_admin(tenant, &format!("messages/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Waits until the message reaches `status` and returns it.
    pub async fn wait_for_status(&self, tenant: &TestTenant, id: &str, status: &str) -> Value {
        eventually(&format!("message {id} to be {status}"), || async {
            let message = self.message(tenant, id).await;
            (message["status"] == status).then_some(message)
        })
        .await
    }

    /// Counts messages stored for a tenant.
    pub async fn message_count(&self, tenant: &TestTenant) -> usize {
        let (status, body) = self.get_as_sender(tenant, "messages?limit=500").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["next_cursor"].is_null(), "more than one page: {body}");
        body["messages"].as_array().unwrap().len()
    }
}

/// A node running as a child process of the real `herald` binary.
pub struct NodeProcess {
    pub child: tokio::process::Child,
    /// Its API, `http://127.0.0.1:port`.
    pub base: String,
    /// Everything it printed on standard output and standard error so far.
    pub output: std::sync::Arc<std::sync::Mutex<String>>,
    /// The data directory, when the process owns it ([`NodeProcess::keeping`]);
    /// last, so that it is removed after the process was killed.
    dir: Option<TempDir>,
}

impl NodeProcess {
    /// The process with its temporary data directory, removed when it is dropped
    /// (also when the test panics).
    pub fn keeping(mut self, dir: TempDir) -> NodeProcess {
        self.dir = Some(dir);
        self
    }

    /// The address of its SMTP submission listener, once it has said it.
    pub async fn smtp_addr(&self) -> std::net::SocketAddr {
        eventually("the node to print its SMTP address", || async {
            let output = self.output.lock().unwrap();
            let line = output
                .lines()
                .find_map(|l| l.strip_prefix("SMTP submission on "))?;
            line.split_whitespace().next()?.parse().ok()
        })
        .await
    }

    /// The lines it printed so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        let output = self.output.lock().unwrap();
        output
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// A client for its API.
    pub fn app(&self) -> TestApp {
        TestApp {
            base: self.base.clone(),
            client: reqwest::Client::new(),
            node: None,
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

/// Starts `herald serve` on port 0 with its data in `dir`, loopback SMTP servers
/// allowed, fast retries, and `args` and `envs` added; returns once it listens.
pub async fn start_process(
    dir: &std::path::Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> NodeProcess {
    use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--egress-allow",
            "127.0.0.0/8",
        ])
        .args(
            // Fast retries and polls, unless the test chose its own.
            [["--retry-base", "200ms"], ["--poll-interval", "200ms"]]
                .iter()
                .filter(|[flag, _]| !args.contains(flag))
                .flatten(),
        )
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("HERALD_BOOTSTRAP_TOKEN", OPERATOR)
        .env("NO_COLOR", "1")
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the herald binary starts");
    let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (listening, mut heard) = tokio::sync::mpsc::unbounded_channel::<String>();
    fn collect(
        stream: impl AsyncRead + Unpin + Send + 'static,
        output: std::sync::Arc<std::sync::Mutex<String>>,
        listening: tokio::sync::mpsc::UnboundedSender<String>,
    ) {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("herald listening on ") {
                    let _ = listening.send(url.to_owned());
                }
                let mut output = output.lock().unwrap();
                output.push_str(&line);
                output.push('\n');
            }
        });
    }
    collect(
        child.stdout.take().unwrap(),
        output.clone(),
        listening.clone(),
    );
    collect(child.stderr.take().unwrap(), output.clone(), listening);
    let base = tokio::time::timeout(DEADLINE, heard.recv())
        .await
        .expect("the node listens within the deadline")
        .unwrap_or_else(|| {
            panic!(
                "the node exited before listening: {}",
                output.lock().unwrap()
            )
        });
    NodeProcess {
        child,
        base,
        output,
        dir: None,
    }
}
