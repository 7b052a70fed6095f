//! A gateway's store: the [`DeliveryStore`] the worker runs on inside a
//! tenant's network, backed by HTTPS calls to the central node instead of a
//! database.
//!
//! A claim is a long poll (`POST /v1/gateway/claim`); its answer brings the
//! claimed recipients together with their messages and provider
//! configurations, which are kept in memory only until the worker asks for
//! them right after the claim. Outcomes and releases go back as they come.
//! Nothing is written to disk.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use herald_core::timestamp::now_ms;
use herald_core::{GatewayId, MessageId, ProviderId, RecipientId, Sealer, TenantId};
use herald_store::{
    Cause, ClaimRequest, Claimed, Completed, DeliveryStore, EventLease, MessageContent, NewCapture,
    Outcome, ProviderConfig, StoreError,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::warn;

use super::wire::{
    ClaimAnswer, ClaimBody, MAX_CLAIM, MAX_WAIT_SECONDS, OutcomesAnswer, OutcomesBody, ReleaseBody,
    WireLease, WireOutcome,
};

type Result<T> = std::result::Result<T, StoreError>;

/// How a gateway reaches its node.
pub struct RemoteConfig {
    /// The node's base URL, such as `https://herald.example.com/`.
    pub server: url::Url,
    /// The gateway's token (`hrldg_…`).
    pub token: String,
    /// This instance's name, unique within its gateway.
    pub instance: String,
    /// The gateway program's version, reported with each claim.
    pub version: String,
    /// The key the node seals accounts' secrets under for this instance:
    /// the worker's [`Sealer`] is made from it. It lives in memory only.
    pub key: [u8; Sealer::KEY_LEN],
    /// How long a claim waits at the node when nothing is due.
    pub wait: Duration,
    /// Turns true at shutdown: a waiting claim is given up at once.
    pub shutdown: watch::Receiver<bool>,
    /// PEM certificates of CAs to trust for the node, besides the system's roots.
    pub server_ca: Option<Vec<u8>>,
}

/// What a claim brought that the worker has not asked for yet.
#[derive(Default)]
struct Held {
    messages: HashMap<MessageId, MessageContent>,
    /// Configurations by test provider (`None`: the tenant's active one),
    /// with how many claimed messages will still ask for each.
    providers: HashMap<Option<ProviderId>, (ProviderConfig, usize)>,
}

/// A [`DeliveryStore`] over the node's gateway protocol.
pub struct RemoteStore {
    http: reqwest::Client,
    server: url::Url,
    token: String,
    instance: String,
    version: String,
    key: String,
    wait_seconds: u32,
    shutdown: watch::Receiver<bool>,
    refused: watch::Sender<bool>,
    held: Mutex<Held>,
    /// Claims that failed in a row: each waits longer before it answers,
    /// so an unreachable node is not asked in a tight loop.
    failed_claims: AtomicU32,
    /// The worker's incarnation, known from its first claim: reports name it
    /// too, since a report with another would give the worker's leases back.
    incarnation: Mutex<Option<String>>,
}

/// The first pause after a failed claim, doubled per failure up to [`CLAIM_RETRY_MAX`].
const CLAIM_RETRY_FIRST: Duration = Duration::from_millis(500);
const CLAIM_RETRY_MAX: Duration = Duration::from_secs(30);

/// A failure to reach the node or to understand it: the worker retries
/// later, like a database that does not answer.
fn unavailable(what: impl Into<String>) -> StoreError {
    StoreError::Unavailable(Cause::node(what))
}

/// An error with its causes, which reqwest keeps beneath a general message
/// ("error sending request"): the refused connection, the certificate.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl RemoteStore {
    pub fn new(config: RemoteConfig) -> Result<Self> {
        // No redirects: a claim carries the token and the instance's sealing
        // key, which must go to the node named by --server and nowhere else.
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(format!("herald-gateway/{}", config.version));
        if let Some(pem) = &config.server_ca {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| unavailable(format!("the server CA file is not PEM: {e}")))?;
            if certificates.is_empty() {
                return Err(unavailable("the server CA file holds no certificate"));
            }
            for certificate in certificates {
                http = http.add_root_certificate(certificate);
            }
        }
        let http = http
            .build()
            .map_err(|e| unavailable(format!("cannot build the HTTP client: {e}")))?;
        let mut server = config.server;
        // `join` keeps the base's path only when it ends with a slash.
        if !server.path().ends_with('/') {
            server.set_path(&format!("{}/", server.path()));
        }
        Ok(RemoteStore {
            http,
            server,
            token: config.token,
            instance: config.instance,
            version: config.version,
            key: B64.encode(config.key),
            wait_seconds: u32::try_from(config.wait.as_secs())
                .unwrap_or(MAX_WAIT_SECONDS)
                .min(MAX_WAIT_SECONDS),
            shutdown: config.shutdown,
            refused: watch::channel(false).0,
            held: Mutex::default(),
            failed_claims: AtomicU32::new(0),
            incarnation: Mutex::default(),
        })
    }

    /// Tells the node this instance is alive, claiming nothing: a claim with
    /// limit 0, at once. While every delivery slot is taken the worker does
    /// not claim, and an instance the node does not hear from for its
    /// stale-after period has its leases given to another instance; the
    /// gateway reports every few seconds so that never happens to one that
    /// is only busy. Nothing is sent before the worker's first claim.
    pub async fn report(&self) -> Result<()> {
        let Some(incarnation) = self.incarnation.lock().expect("incarnation lock").clone() else {
            return Ok(());
        };
        let body = ClaimBody {
            instance: self.instance.clone(),
            version: self.version.clone(),
            incarnation,
            limit: 0,
            wait_seconds: 0,
            key: self.key.clone(),
        };
        let _: ClaimAnswer = self
            .post("v1/gateway/claim", &body, Duration::from_secs(10))
            .await?;
        Ok(())
    }

    /// Turns true once the node refused the token (it was replaced, or the
    /// gateway deleted): this instance can do nothing more.
    pub fn refused(&self) -> watch::Receiver<bool> {
        self.refused.subscribe()
    }

    async fn post<B: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<A> {
        let url = self
            .server
            .join(path)
            .map_err(|e| unavailable(format!("bad server URL: {e}")))?;
        let response = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| unavailable(format!("the node could not be reached: {}", chain(&e))))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            self.refused.send_replace(true);
            return Err(unavailable(
                "the node refused the gateway's token (401): it was replaced or the gateway deleted",
            ));
        }
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("nowhere")
                .chars()
                .take(200)
                .collect::<String>();
            return Err(unavailable(format!(
                "the node answered {status}, a redirect to {location}, which a gateway never follows: give --server the address that answers"
            )));
        }
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let text: String = text.chars().take(500).collect();
            return Err(unavailable(format!("the node answered {status}: {text}")));
        }
        response.json().await.map_err(|e| {
            unavailable(format!(
                "the node's answer is not understood: {}",
                chain(&e)
            ))
        })
    }

    fn protocol(e: super::wire::WireError) -> StoreError {
        StoreError::Corrupt(e.to_string())
    }

    /// Keeps what a claim brought for the worker's next questions.
    fn hold(&self, answer: ClaimAnswer) -> Result<()> {
        let messages: Vec<MessageContent> = answer
            .messages
            .into_iter()
            .map(MessageContent::try_from)
            .collect::<std::result::Result<_, _>>()
            .map_err(Self::protocol)?;
        let mut held = self.held.lock().expect("held lock");
        for provider in answer.providers {
            let config = ProviderConfig::try_from(provider.config).map_err(Self::protocol)?;
            let uses = messages
                .iter()
                .filter(|m| m.test_provider == provider.test_provider)
                .count();
            let entry = held
                .providers
                .entry(provider.test_provider)
                .or_insert_with(|| (config.clone(), 0));
            // The newest configuration serves every message still to come.
            entry.0 = config;
            entry.1 += uses;
        }
        held.messages
            .extend(messages.into_iter().map(|m| (m.id, m)));
        Ok(())
    }

    /// The configuration a claim brought for `key`, forgotten once its
    /// last message took it.
    fn take_provider(&self, key: Option<ProviderId>) -> Result<ProviderConfig> {
        let mut held = self.held.lock().expect("held lock");
        let Some((config, uses)) = held.providers.get_mut(&key) else {
            return Err(unavailable(
                "the node sent no provider configuration for this message",
            ));
        };
        let config = config.clone();
        *uses = uses.saturating_sub(1);
        if *uses == 0 {
            held.providers.remove(&key);
        }
        Ok(config)
    }
}

#[async_trait]
impl DeliveryStore for RemoteStore {
    async fn claim(&self, request: ClaimRequest) -> Result<Vec<Claimed>> {
        let mut shutdown = self.shutdown.clone();
        if *shutdown.borrow() || *self.refused.borrow() {
            return Ok(Vec::new());
        }
        *self.incarnation.lock().expect("incarnation lock") = Some(request.incarnation.clone());
        let body = ClaimBody {
            instance: self.instance.clone(),
            version: self.version.clone(),
            incarnation: request.incarnation,
            limit: request.limit.clamp(1, MAX_CLAIM),
            wait_seconds: self.wait_seconds,
            key: self.key.clone(),
        };
        let timeout = Duration::from_secs(u64::from(self.wait_seconds) + 30);
        let answer: Result<ClaimAnswer> = tokio::select! {
            answer = self.post("v1/gateway/claim", &body, timeout) => answer,
            _ = shutdown.changed() => return Ok(Vec::new()),
        };
        let answer = match answer {
            Ok(answer) => {
                self.failed_claims.store(0, Ordering::Relaxed);
                answer
            }
            Err(error) => {
                // The worker asks again at once (the claim is its wait):
                // the pause between failed claims is taken here.
                let failed = self.failed_claims.fetch_add(1, Ordering::Relaxed);
                let pause = CLAIM_RETRY_FIRST
                    .saturating_mul(1 << failed.min(10))
                    .min(CLAIM_RETRY_MAX);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => {}
                }
                return Err(error);
            }
        };
        // Leases end on this machine's clock what was left of them when the
        // node answered, counted from the answer's arrival: the clocks may
        // differ, and a claim may have waited long at the node. It is late
        // only by the answer's time on the way, which the worker's margin
        // before a lease's end (it starts no send in the last seconds) covers.
        let received = now_ms();
        let claimed: Vec<Claimed> = answer
            .recipients
            .iter()
            .cloned()
            .map(|c| {
                Claimed::try_from(c).map(|mut c| {
                    c.lease_until = received.saturating_add(c.lease_until - answer.now);
                    c
                })
            })
            .collect::<std::result::Result<_, _>>()
            .map_err(Self::protocol)?;
        self.hold(answer)?;
        Ok(claimed)
    }

    async fn message_contents(&self, ids: &[MessageId]) -> Result<Vec<MessageContent>> {
        let mut held = self.held.lock().expect("held lock");
        Ok(ids
            .iter()
            .filter_map(|id| held.messages.remove(id))
            .collect())
    }

    /// A gateway's dispatcher-less outcomes: no lease to hand events to.
    async fn record_outcomes(
        &self,
        outcomes: Vec<Outcome>,
        captures: Vec<NewCapture>,
        _lease: Option<EventLease>,
    ) -> Result<Completed> {
        if !captures.is_empty() {
            // A gateway delivers only through its tenant's servers; the
            // capture mailbox is the system default's, which it never gets.
            warn!(
                count = captures.len(),
                "a gateway keeps no captured messages"
            );
        }
        let body = OutcomesBody {
            instance: self.instance.clone(),
            outcomes: outcomes.iter().map(WireOutcome::from).collect(),
        };
        let answer: OutcomesAnswer = self
            .post("v1/gateway/outcomes", &body, Duration::from_secs(60))
            .await?;
        if answer.accepted.len() != outcomes.len() {
            return Err(unavailable("the node's answer does not match the outcomes"));
        }
        // The node wakes its own dispatcher for the events the outcomes
        // wrote; the gateway has none.
        Ok(Completed {
            accepted: answer.accepted,
            events: 0,
            handed: Vec::new(),
        })
    }

    async fn release(&self, leases: Vec<(RecipientId, i64)>) -> Result<()> {
        let body = ReleaseBody {
            instance: self.instance.clone(),
            leases: leases
                .into_iter()
                .map(|(recipient, lease_token)| WireLease {
                    recipient,
                    lease_token,
                })
                .collect(),
        };
        let _: serde_json::Value = self
            .post("v1/gateway/release", &body, Duration::from_secs(60))
            .await?;
        Ok(())
    }

    async fn repin(
        &self,
        _leases: Vec<(RecipientId, i64)>,
        _gateway: Option<GatewayId>,
        _now: i64,
    ) -> Result<u64> {
        // The node checks the route before it hands mail to a gateway, and
        // hands back what is no longer pinned here; a gateway never repins.
        Err(StoreError::Conflict(
            "a gateway does not hand mail over".into(),
        ))
    }

    async fn next_due(&self, _exclude_tenants: &[TenantId]) -> Result<Option<i64>> {
        // The claim itself waits at the node for mail: claim again at once.
        Ok(Some(now_ms()))
    }

    async fn active_provider(&self, _tenant: TenantId) -> Result<Option<ProviderConfig>> {
        self.take_provider(None).map(Some)
    }

    async fn provider_config(
        &self,
        _tenant: TenantId,
        provider: ProviderId,
    ) -> Result<ProviderConfig> {
        self.take_provider(Some(provider))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn config(server: url::Url) -> RemoteConfig {
        RemoteConfig {
            server,
            token: "hrldg_test".into(),
            instance: "gw-1".into(),
            version: "test".into(),
            key: [7; Sealer::KEY_LEN],
            wait: Duration::ZERO,
            shutdown: watch::channel(false).1,
            server_ca: None,
        }
    }

    #[tokio::test]
    async fn a_redirect_from_the_node_is_an_error_and_never_followed() {
        let elsewhere = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = format!(
            "http://{}/v1/gateway/claim",
            elsewhere.local_addr().unwrap()
        );
        let base = format!("http://{}/", node.local_addr().unwrap());
        let answering = tokio::spawn(async move {
            let (mut socket, _) = node.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await.unwrap();
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n"
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
        });
        let store = RemoteStore::new(config(base.parse().unwrap())).unwrap();
        let error = store
            .post::<_, serde_json::Value>(
                "v1/gateway/claim",
                &serde_json::json!({"key": "secret"}),
                Duration::from_secs(10),
            )
            .await
            .unwrap_err()
            .to_string();
        answering.await.unwrap();
        // What is unavailable is the node, not a database of the gateway's.
        assert!(error.starts_with("node unavailable: "), "{error}");
        assert!(error.contains("307"), "{error}");
        assert!(error.contains("never follows"), "{error}");
        // Had the client followed, it would have connected before answering.
        let followed = tokio::time::timeout(Duration::ZERO, elsewhere.accept()).await;
        assert!(followed.is_err(), "the redirect was followed");
    }

    #[test]
    fn a_server_ca_file_must_hold_a_certificate() {
        let mut with = config("https://herald.example/".parse().unwrap());
        with.server_ca = Some(b"not a certificate".to_vec());
        assert!(RemoteStore::new(with).is_err());
        let mut with = config("https://herald.example/".parse().unwrap());
        let tls = herald_testsmtp::TestTls::generate(&["herald.example"]);
        with.server_ca = Some(tls.cert_pem().as_bytes().to_vec());
        assert!(RemoteStore::new(with).is_ok());
    }
}
