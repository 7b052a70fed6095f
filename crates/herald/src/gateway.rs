//! `herald gateway`: a process inside a tenant's network that fetches the
//! tenant's mail pinned to its gateway from a node and delivers it there,
//! with the node's own delivery worker running on a remote store.
//!
//! It opens outbound connections only (HTTPS to the node, SMTP to the
//! tenant's servers), holds no database and writes nothing to disk: the key
//! its accounts' secrets come sealed under is made at start and lives in
//! memory only.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use herald_core::{EmailAddress, Sealer, token};
use herald_delivery::gateway::{RemoteConfig, RemoteStore};
use herald_delivery::{DefaultProvider, ProviderCache, Transport, Worker, WorkerConfig};
use herald_smtp::Egress;
use tokio::sync::watch;
use tracing::info;

/// The flags of `herald gateway`. Its `Debug` leaves the token out.
#[derive(clap::Args)]
pub struct GatewayArgs {
    /// The node's URL, such as https://herald.example.com (https; http only to a loopback address).
    // The text is the flag's help, where a URL is printed as it is.
    #[allow(rustdoc::bare_urls)]
    #[arg(long, env = "HERALD_GATEWAY_SERVER")]
    pub server: String,
    /// The gateway's token (hrldg_…), as its creation or its latest new token showed it.
    #[arg(long, env = "HERALD_GATEWAY_TOKEN", hide_env_values = true)]
    pub token: String,
    /// This instance's name, unique among the gateway's instances [default: the host name].
    #[arg(long, env = "HERALD_GATEWAY_NAME")]
    pub name: Option<String>,
    /// CIDR ranges the tenant's servers may be in even where the built-in rules forbid them (loopback, e.g. 127.0.0.0/8); private ranges are allowed without it.
    #[arg(long, env = "HERALD_EGRESS_ALLOW")]
    pub egress_allow: Option<String>,
    /// CIDR ranges the tenant's servers may never be in, besides the built-in rules.
    #[arg(long, env = "HERALD_EGRESS_DENY")]
    pub egress_deny: Option<String>,
    /// A PEM file of CA certificates to trust for the node's certificate, besides the system's roots (a private CA).
    #[arg(long, env = "HERALD_GATEWAY_SERVER_CA")]
    pub server_ca: Option<std::path::PathBuf>,
    /// Messages in flight at once.
    #[arg(long, env = "HERALD_GATEWAY_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,
}

impl std::fmt::Debug for GatewayArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayArgs")
            .field("server", &self.server)
            .field("name", &self.name)
            .field("egress_allow", &self.egress_allow)
            .field("egress_deny", &self.egress_deny)
            .field("server_ca", &self.server_ca)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// The node's URL: https, or http to a loopback address (a node on the same
/// machine, or a test). Anything else would carry the token and the mail's
/// credentials in clear.
pub fn server_url(input: &str) -> anyhow::Result<url::Url> {
    let url = url::Url::parse(input.trim()).context("--server must be a URL")?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::from(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::from(ip).is_loopback(),
        _ => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            bail!("--server must use https (http only to a loopback address such as 127.0.0.1)")
        }
        other => bail!("--server must be an https URL, not {other}:"),
    }
    if !url.username().is_empty() || url.password().is_some() {
        bail!("--server must not carry user information; the token goes in --token");
    }
    Ok(url)
}

/// Runs the gateway until SIGTERM or Ctrl-C, or until the node refuses its
/// token (then it fails: it can do nothing more until started with the new one).
pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    run_until(args, crate::node::stop_signal()).await
}

/// Runs the gateway until `until` completes (or the node refuses its token):
/// [`run`] for a gateway inside another program, such as the benchmark.
pub async fn run_until(
    args: GatewayArgs,
    until: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let server = server_url(&args.server)?;
    let token = args.token.trim().to_owned();
    if !token.starts_with(token::GATEWAY_TOKEN_PREFIX) {
        bail!(
            "--token must be a gateway token ({}…)",
            token::GATEWAY_TOKEN_PREFIX
        );
    }
    let instance = args
        .name
        .map(|n| n.trim().to_owned())
        .unwrap_or_else(crate::config::host_name);
    if instance.is_empty()
        || instance.chars().count() > 100
        || instance.chars().any(char::is_control)
    {
        bail!("--name must be 1 to 100 characters without control characters");
    }
    let egress = Egress::new(
        Egress::parse_list(&args.egress_allow.unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("--egress-allow: {e}"))?,
        Egress::parse_list(&args.egress_deny.unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("--egress-deny: {e}"))?,
    );
    let server_ca = match &args.server_ca {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("--server-ca: reading {}", path.display()))?,
        ),
        None => None,
    };

    // The key the node seals accounts' secrets under for this process: made
    // now, kept in memory, gone when the process ends.
    let key = Sealer::generate_key();
    let (stop, shutdown) = watch::channel(false);
    let store = Arc::new(
        RemoteStore::new(RemoteConfig {
            server: server.clone(),
            token,
            instance: instance.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            key,
            wait: Duration::from_secs(25),
            shutdown: shutdown.clone(),
            server_ca,
        })
        .context("setting up the connection to the node")?,
    );
    let mut refused = store.refused();
    // A gateway sends only through its tenant's servers, whose configuration
    // comes with each claim; the system default is never its route.
    let default = DefaultProvider {
        transport: Transport::Capture,
        from: EmailAddress::parse("gateway@herald.invalid").expect("a valid address"),
        from_name: None,
        fallback: None,
    };
    let worker = Worker::new(
        store.clone(),
        Arc::new(Sealer::new(&key)),
        Arc::new(default),
        // Each claim brings the configuration to use: nothing is cached.
        Arc::new(ProviderCache::new(Duration::ZERO)),
        WorkerConfig {
            node: format!("gw:{instance}"),
            concurrency: args.concurrency.max(1),
            egress: Arc::new(egress),
            hands_pinned_mail_over: false,
            ..WorkerConfig::default()
        },
    );
    let running = tokio::spawn(worker.run(shutdown));
    // Reports go on until the deliveries in flight at shutdown have ended.
    let (reports_stop, reports_stopping) = watch::channel(false);
    let reporting = tokio::spawn(report_alive(store.clone(), reports_stopping));
    info!(server = %server, instance, "gateway started: claiming the tenant's mail from the node");
    let token_refused = tokio::select! {
        _ = until => false,
        _ = refused.wait_for(|refused| *refused) => true,
    };
    info!("gateway stopping: finishing the deliveries in flight");
    let _ = stop.send(true);
    let _ = running.await;
    let _ = reports_stop.send(true);
    let _ = reporting.await;
    if token_refused {
        bail!(
            "the node refused this gateway's token (a new token was made, or the gateway was deleted); start the gateway with its new token"
        );
    }
    info!("gateway stopped");
    Ok(())
}

/// How often the gateway tells the node it is alive besides its claims: well
/// within a third of the nodes' default `--node-stale-after` (15 s).
const REPORT_EVERY: Duration = Duration::from_secs(4);

/// Tells the node every [`REPORT_EVERY`] that this instance is alive, until
/// `stop`, so that one whose delivery slots are all taken (and which
/// therefore does not claim) keeps its leases.
async fn report_alive(store: Arc<RemoteStore>, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if let Err(error) = store.report().await {
            tracing::debug!(%error, "could not report to the node; the next claim or report will");
        }
        tokio::select! {
            _ = tokio::time::sleep(REPORT_EVERY) => {}
            changed = stop.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_is_https_or_loopback_http() {
        assert!(server_url("https://herald.example.com").is_ok());
        assert!(server_url("http://127.0.0.1:8080/").is_ok());
        assert!(server_url("http://[::1]:8080").is_ok());
        assert!(server_url("http://herald.example.com").is_err());
        assert!(server_url("http://10.0.0.1").is_err());
        assert!(server_url("ftp://herald.example.com").is_err());
        assert!(server_url("https://user:pw@herald.example.com").is_err());
        assert!(server_url("not a url").is_err());
    }
}
