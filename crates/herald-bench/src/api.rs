//! Talking to a node over its REST API like a client would: one keep-alive HTTP
//! client, and the set-up of a tenant whose provider delivers to the sink.

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::place::OPERATOR;

/// The tenant every phase uses.
pub const TENANT: &str = "bench";

/// A node's API.
#[derive(Clone)]
pub struct Api {
    pub addr: std::net::SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
}

/// A tenant ready to submit: its slug and a sender token.
#[derive(Clone)]
pub struct Tenant {
    pub slug: String,
    pub sender: String,
}

impl Api {
    /// A client for the node at `addr`, keeping every connection it opens.
    pub fn new(addr: std::net::SocketAddr) -> anyhow::Result<Api> {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(usize::MAX)
            .build()?;
        Ok(Api {
            addr,
            base: format!("http://{addr}"),
            client,
        })
    }

    /// Sends a request with the operator token and an optional JSON body.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(OPERATOR);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{method} {path} answered {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Gives the tenant a webhook to `url` for `events`.
    pub async fn create_webhook(
        &self,
        tenant: &Tenant,
        url: &str,
        events: &[&str],
    ) -> anyhow::Result<()> {
        self.call(
            Method::POST,
            &format!("/v1/tenants/{}/webhooks", tenant.slug),
            Some(json!({"url": url, "events": events})),
        )
        .await?;
        Ok(())
    }

    /// Creates the tenant, a sender token, an SMTP server pointing at the sink
    /// (no TLS, `connections` connections, each reused for up to 100,000
    /// messages) and a provider through it, makes the provider active and
    /// refreshes, so it applies at once.
    pub async fn set_up_tenant(
        &self,
        sink_port: u16,
        connections: usize,
    ) -> anyhow::Result<Tenant> {
        self.set_up_tenant_named(TENANT, "Benchmark", sink_port, connections)
            .await
    }

    /// [`Api::set_up_tenant`] for a tenant of another slug, so that a phase can
    /// have several tenants, each with its own server and provider.
    pub async fn set_up_tenant_named(
        &self,
        slug: &str,
        name: &str,
        sink_port: u16,
        connections: usize,
    ) -> anyhow::Result<Tenant> {
        self.call(
            Method::POST,
            "/v1/tenants",
            Some(json!({"slug": slug, "name": name})),
        )
        .await?;
        let base = format!("/v1/tenants/{slug}");
        let token = self
            .call(
                Method::POST,
                &format!("{base}/tokens"),
                Some(json!({"name": "bench-sender", "role": "sender"})),
            )
            .await?;
        let sender = token["token"]
            .as_str()
            .context("the token answer has no token")?
            .to_owned();
        let server = self
            .call(
                Method::POST,
                &format!("{base}/smtp-servers"),
                Some(json!({
                    "name": "sink", "host": "127.0.0.1", "port": sink_port, "security": "none",
                    "max_connections": connections, "max_messages_per_connection": 100_000,
                    "idle_timeout_secs": 600
                })),
            )
            .await?;
        let provider = self
            .call(
                Method::POST,
                &format!("{base}/providers"),
                Some(json!({
                    "name": "sink", "smtp_server_id": server["id"],
                    "from_address": "alerts@bench.example", "from_name": "Bench Alerts",
                    "fallback_recipient": "ops@bench.example"
                })),
            )
            .await?;
        self.call(
            Method::PUT,
            &format!("{base}/properties"),
            Some(json!({"notification_provider_id": provider["id"]})),
        )
        .await?;
        self.call(Method::POST, &format!("{base}/properties/refresh"), None)
            .await?;
        Ok(Tenant {
            slug: slug.into(),
            sender,
        })
    }

    /// Gives the tenant an IP connector: SMTP sessions from `cidr` submit to
    /// it without AUTH.
    pub async fn create_connector(
        &self,
        tenant: &Tenant,
        name: &str,
        cidr: &str,
    ) -> anyhow::Result<()> {
        self.call(
            Method::POST,
            &format!("/v1/tenants/{}/smtp-connectors", tenant.slug),
            Some(json!({"name": name, "cidrs": [cidr]})),
        )
        .await?;
        Ok(())
    }

    /// Gives the tenant a gateway and pins every one of its SMTP servers to
    /// it: from then on only the gateway's instances deliver its mail.
    /// Returns the gateway's token.
    pub async fn pin_to_new_gateway(&self, tenant: &Tenant, name: &str) -> anyhow::Result<String> {
        let base = format!("/v1/tenants/{}", tenant.slug);
        let gateway = self
            .call(
                Method::POST,
                &format!("{base}/gateways"),
                Some(json!({ "name": name })),
            )
            .await?;
        let servers = self
            .call(Method::GET, &format!("{base}/smtp-servers"), None)
            .await?;
        for server in servers.as_array().context("the servers answer is a list")? {
            let id = server["id"].as_str().context("a server has an id")?;
            self.call(
                Method::PATCH,
                &format!("{base}/smtp-servers/{id}"),
                Some(json!({ "gateway_id": gateway["id"] })),
            )
            .await?;
        }
        self.call(Method::POST, &format!("{base}/properties/refresh"), None)
            .await?;
        Ok(gateway["token"]
            .as_str()
            .context("the gateway answer has no token")?
            .to_owned())
    }

    /// Whether the batch endpoint exists on this node (an empty batch is
    /// answered by it; a missing route answers 404 or 405).
    pub async fn has_batch(&self, tenant: &Tenant) -> anyhow::Result<bool> {
        let response = self
            .client
            .post(self.batch_url(tenant))
            .bearer_auth(&tenant.sender)
            .json(&json!({"messages": []}))
            .send()
            .await?;
        Ok(!matches!(
            response.status(),
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
        ))
    }

    pub fn messages_url(&self, tenant: &Tenant) -> String {
        format!("{}{}", self.base, Api::messages_path(tenant))
    }

    /// The single-message API's path for `tenant`.
    pub fn messages_path(tenant: &Tenant) -> String {
        format!("/v1/tenants/{}/messages", tenant.slug)
    }

    pub fn batch_url(&self, tenant: &Tenant) -> String {
        format!("{}/v1/tenants/{}/messages/batch", self.base, tenant.slug)
    }
}
