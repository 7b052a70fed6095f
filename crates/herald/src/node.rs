//! Starting and stopping a node: open the store, bootstrap the operator token,
//! start the worker and the HTTP listener, and shut both down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use herald_api::AppState;
use herald_core::{Role, TokenId, token};
use herald_delivery::{Transport, Worker, WorkerConfig, WorkerStats};
use herald_store::{NewToken, SqliteStore, Store};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Settings, key_file};
use crate::keys;

/// A running node.
pub struct Node {
    /// The address the HTTP API listens on (useful with port 0).
    pub http_addr: SocketAddr,
    /// The operator token generated on this start, when the database was new and none was given.
    pub generated_operator_token: Option<String>,
    /// What this node's worker has done.
    pub worker_stats: Arc<WorkerStats>,
    shutdown: watch::Sender<bool>,
    http: JoinHandle<()>,
    worker: JoinHandle<()>,
}

/// Makes sure an operator token exists: the bootstrap token's hash, or a new token printed once.
async fn bootstrap(store: &dyn Store, settings: &Settings) -> anyhow::Result<Option<String>> {
    let (secret, generated) = match &settings.bootstrap_token {
        Some(given) => (given.expose().to_owned(), false),
        None if store.operator_token_exists().await? => return Ok(None),
        None => (token::generate(), true),
    };
    let hash = token::hash(&secret);
    if store.token_by_hash(&hash).await?.is_none() {
        let name = if generated {
            "generated at first start"
        } else {
            "HERALD_BOOTSTRAP_TOKEN"
        };
        store
            .create_token(NewToken {
                id: TokenId::new(),
                tenant_id: None,
                name: name.into(),
                role: Role::Operator,
                person_id: None,
                hash,
            })
            .await?;
    }
    Ok(generated.then_some(secret))
}

/// Starts a node with these settings.
pub async fn start(settings: Settings) -> anyhow::Result<Node> {
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "creating the data directory {}",
            settings.data_dir.display()
        )
    })?;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&settings.database)
            .with_context(|| format!("opening {}", settings.database.display()))?,
    );
    let sealer = Arc::new(keys::load(
        settings.master_key.as_ref(),
        &key_file(&settings.data_dir),
    )?);
    let generated_operator_token = bootstrap(&*store, &settings).await?;
    if let Some(token) = &generated_operator_token {
        // Printed once, to standard output, so it does not end up in log collectors.
        println!("\nOperator token (shown once, stored only as a hash):\n\n    {token}\n");
    }

    let default_provider = Arc::new(settings.default_provider);
    match &default_provider.transport {
        Transport::Capture => tracing::warn!(
            "no system default relay is configured (--default-smtp): tenants without their own provider deliver into the capture mailbox, readable at GET /v1/tenants/{{tenant}}/captured, and nothing leaves this machine"
        ),
        Transport::Smtp { target, .. } => {
            tracing::info!(relay = %format!("{}:{}", target.host, target.port.get()), security = %target.security, "system default relay")
        }
    }

    let worker = Worker::new(
        store.clone(),
        sealer.clone(),
        default_provider.clone(),
        WorkerConfig {
            node: settings.node_name.clone(),
            lease: settings.lease,
            poll: settings.poll,
            concurrency: settings.concurrency,
            retry: settings.retry,
            timeouts: settings.timeouts,
            egress: Arc::new(settings.egress),
        },
    );
    let worker_stats = worker.stats();
    let state = AppState {
        store,
        sealer,
        default_provider,
        wake: worker.waker(),
    };
    let (shutdown, stop) = watch::channel(false);
    let worker = tokio::spawn(worker.run(stop.clone()));

    let listener = tokio::net::TcpListener::bind(settings.http)
        .await
        .with_context(|| format!("listening on {}", settings.http))?;
    let http_addr = listener.local_addr()?;
    let mut stop_http = stop;
    let app = herald_api::router(state);
    let http = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stop_http.wait_for(|stopping| *stopping).await;
        });
        if let Err(error) = serve.await {
            tracing::error!(%error, "the HTTP server stopped");
        }
    });
    tracing::info!(http = %http_addr, node = %settings.node_name, database = %settings.database.display(), "herald is running");
    // One plain line on standard output that people and scripts can read the address from.
    println!("herald listening on http://{http_addr}");
    Ok(Node {
        http_addr,
        generated_operator_token,
        worker_stats,
        shutdown,
        http,
        worker,
    })
}

impl Node {
    /// Waits for Ctrl-C or SIGTERM.
    pub async fn wait_for_signal(&self) {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down: finishing requests and deliveries in flight");
    }

    /// Stops accepting requests, lets the worker finish what it has in flight, and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.http.await;
        let _ = self.worker.await;
        tracing::info!("stopped");
    }
}
