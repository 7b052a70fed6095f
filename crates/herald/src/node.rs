//! Starting and stopping a node: open the store, bootstrap the operator token,
//! start the worker and the HTTP listener, and shut both down gracefully.

use herald_core::timestamp::now_ms;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use anyhow::Context;
use herald_api::{AppState, NodeState};
use herald_core::{NodeRole, Role, Secret, TokenId, token};
use herald_delivery::{ProviderCache, Transport, Worker, WorkerConfig, WorkerStats};
use herald_store::{BootstrapOutcome, NewToken, NodeRecord, Store, StoreEvent};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Database, Settings, key_file};
use crate::{files, http, keys};

/// A running node.
pub struct Node {
    /// The address the HTTP API listens on (useful with port 0).
    pub http_addr: SocketAddr,
    /// The SMTP submission listener's address (STARTTLS), when it runs.
    pub smtp_addr: Option<SocketAddr>,
    /// The implicit-TLS submission address, when it runs.
    pub smtps_addr: Option<SocketAddr>,
    /// The Prometheus metrics listener's address, when it runs.
    pub metrics_addr: Option<SocketAddr>,
    /// The operator token generated on this start, when the database was new and none was given.
    pub generated_operator_token: Option<String>,
    /// What this node's worker has done.
    pub worker_stats: Arc<WorkerStats>,
    shutdown: watch::Sender<bool>,
    http: JoinHandle<()>,
    smtp: Option<JoinHandle<()>>,
    metrics: Option<JoinHandle<()>>,
    worker: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    /// The embedded database's lock, held while the node runs.
    _lock: Option<std::fs::File>,
}

/// How long a stopping node waits for SMTP sessions still receiving a message.
const SMTP_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// The shortest `HERALD_BOOTSTRAP_TOKEN` accepted: an operator token must not
/// be guessable, and generated tokens are longer still.
pub const MIN_BOOTSTRAP_TOKEN_CHARS: usize = 32;

/// Refuses a `HERALD_BOOTSTRAP_TOKEN` too short to be safe, before the node
/// changes anything.
fn check_bootstrap_token(settings: &Settings) -> anyhow::Result<()> {
    if let Some(given) = &settings.bootstrap_token {
        let chars = given.expose().chars().count();
        anyhow::ensure!(
            chars >= MIN_BOOTSTRAP_TOKEN_CHARS,
            "HERALD_BOOTSTRAP_TOKEN must be at least {MIN_BOOTSTRAP_TOKEN_CHARS} characters long \
             (it has {chars}); `openssl rand -hex 32` makes a good one"
        );
    }
    Ok(())
}

/// Makes sure an operator token exists: the bootstrap token (which replaces an
/// earlier, different one), or a new token when the database has none, which
/// the caller prints once. It runs last in [`start`], once the node listens
/// and nothing else can fail, so a start that fails never leaves behind a
/// token nobody saw; the next start makes one.
async fn bootstrap(
    store: &dyn Store,
    bootstrap_token: Option<&Secret>,
) -> anyhow::Result<Option<String>> {
    let Some(given) = bootstrap_token else {
        if store.operator_token_exists().await? {
            return Ok(None);
        }
        let secret = token::generate();
        store
            .create_token(NewToken {
                id: TokenId::new(),
                tenant_id: None,
                name: "generated at first start".into(),
                role: Role::Operator,
                person_id: None,
                hash: token::hash(&secret),
            })
            .await?;
        return Ok(Some(secret));
    };
    let outcome = store
        .set_bootstrap_token(NewToken {
            id: TokenId::new(),
            tenant_id: None,
            name: "HERALD_BOOTSTRAP_TOKEN".into(),
            role: Role::Operator,
            person_id: None,
            hash: token::hash(given.expose()),
        })
        .await?;
    match outcome {
        BootstrapOutcome::Installed { replaced, .. } if replaced > 0 => tracing::warn!(
            replaced,
            "HERALD_BOOTSTRAP_TOKEN changed: the earlier bootstrap token is revoked"
        ),
        BootstrapOutcome::Installed { .. } => {}
        // The value was revoked earlier and stays revoked; a bootstrap token
        // in force until now was revoked too, since it no longer matches.
        BootstrapOutcome::Revoked { replaced } if replaced > 0 => tracing::warn!(
            replaced,
            "HERALD_BOOTSTRAP_TOKEN changed to a value revoked earlier, which stays revoked; \
             the bootstrap token in force until now is revoked, so this node has no valid \
             bootstrap token: set HERALD_BOOTSTRAP_TOKEN to a new value, or make an operator \
             token with `herald operator token create`"
        ),
        BootstrapOutcome::Revoked { .. } => tracing::warn!(
            "HERALD_BOOTSTRAP_TOKEN was revoked earlier and stays revoked, so this node has \
             no valid bootstrap token: set HERALD_BOOTSTRAP_TOKEN to a new value, or make an \
             operator token with `herald operator token create`"
        ),
    }
    Ok(None)
}

/// Who this node is, as its heartbeats say.
struct Identity {
    name: String,
    incarnation: String,
    roles: Vec<NodeRole>,
    started_at: i64,
}

impl Identity {
    fn record(&self) -> NodeRecord {
        NodeRecord {
            name: self.name.clone(),
            roles: self.roles.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: self.started_at,
            heartbeat_at: now_ms(),
            incarnation: Some(self.incarnation.clone()),
        }
    }
}

/// Records this node's heartbeat until shutdown (and, in `standing`, until
/// when the others will count this node alive), and after each gives back
/// the leases of nodes whose heartbeat is older than `stale_after`: a node
/// that died mid-delivery has its mail delivered by the others within
/// seconds, not at its leases' end.
async fn heartbeat(
    store: Arc<dyn Store>,
    identity: Identity,
    every: std::time::Duration,
    stale_after: std::time::Duration,
    standing: Arc<AtomicI64>,
    wake: Arc<tokio::sync::Notify>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        check_own_record(&*store, &identity).await;
        let record = identity.record();
        let beat_at = record.heartbeat_at;
        match store.heartbeat(record).await {
            // The others take this node for gone `stale_after` after this beat;
            // its sends stop somewhat before.
            Ok(()) => standing.store(
                standing_after(beat_at, every, stale_after),
                Ordering::Release,
            ),
            Err(error) => tracing::warn!(%error, "could not record this node's heartbeat"),
        }
        let now = now_ms();
        match store
            .release_stale_nodes(now - stale_after.as_millis() as i64, now)
            .await
        {
            Ok(released) => {
                for (node, recipients) in &released {
                    if *recipients > 0 {
                        tracing::warn!(
                            %node,
                            recipients,
                            "a node stopped beating; the mail it was delivering is due again"
                        );
                    } else {
                        tracing::info!(%node, "a node stopped beating; it held no mail");
                    }
                }
                if released.iter().any(|(_, n)| *n > 0) {
                    wake.notify_one();
                }
            }
            Err(error) => tracing::warn!(%error, "could not look for nodes that stopped"),
        }
        // Gateway instances are judged by the same period: one not seen for
        // that long gives its leases back, and another instance of its
        // gateway delivers the mail (their waiting claims look every second).
        match store
            .release_stale_gateway_instances(now - stale_after.as_millis() as i64, now)
            .await
        {
            Ok(released) => {
                for (instance, recipients) in &released {
                    tracing::info!(
                        %instance,
                        recipients,
                        "a gateway instance stopped reporting; the mail it held is due again"
                    );
                }
            }
            Err(error) => {
                tracing::warn!(%error, "could not look for gateway instances that stopped")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Says what the node's own record shows before this process overwrites it:
/// another process's incarnation means a second node runs under the same name
/// (each would give back the other's leases when it starts); none means
/// another node took this one for gone, its heartbeats having been too late,
/// and gave back the mail it was delivering (whose outcomes are now refused).
async fn check_own_record(store: &dyn Store, identity: &Identity) {
    let Ok(nodes) = store.list_nodes().await else {
        return;
    };
    match nodes.iter().find(|n| n.name == identity.name) {
        Some(NodeRecord {
            incarnation: Some(other),
            ..
        }) if *other != identity.incarnation => tracing::error!(
            node = %identity.name,
            "another herald runs under this node name on the same database; give each node a name of its own (--node-name)"
        ),
        Some(NodeRecord {
            incarnation: None, ..
        }) => tracing::warn!(
            node = %identity.name,
            "this node's heartbeat was late and another node gave back the mail it was delivering; their outcomes here will be refused"
        ),
        _ => {}
    }
}

/// Until when a node whose heartbeat was recorded at `beat_at` may start a
/// send: halfway between its next heartbeat and the moment the others take it
/// for gone, so that a healthy node never stops and a late one stops before
/// its mail is taken over.
fn standing_after(
    beat_at: i64,
    every: std::time::Duration,
    stale_after: std::time::Duration,
) -> i64 {
    let stale = stale_after.as_millis() as i64;
    let every = every.as_millis() as i64;
    beat_at + stale - (stale - every).max(0) / 2
}

/// Announces this process and gives back the leases of the node's earlier
/// processes, before its worker claims anything: what a crashed process had in
/// flight is due again at once. The heartbeat comes first: it records the new
/// incarnation, so that the node is seen alive from its first claim on.
async fn recover(store: &dyn Store, identity: &Identity) -> anyhow::Result<()> {
    store
        .heartbeat(identity.record())
        .await
        .context("recording this node's first heartbeat")?;
    let released = store
        .release_earlier_incarnations(&identity.name, &identity.incarnation, now_ms())
        .await
        .context("giving back the leases of this node's earlier processes")?;
    if released > 0 {
        tracing::warn!(
            recipients = released,
            "this node stopped without finishing its deliveries; they are due again"
        );
    }
    let events = store
        .release_webhook_leases(&identity.name, &identity.incarnation, now_ms())
        .await
        .context("giving back the webhook events of this node's earlier processes")?;
    if events > 0 {
        tracing::warn!(
            events,
            "this node stopped without finishing its webhook posts; they are due again"
        );
    }
    Ok(())
}

/// Acts on other nodes' notifications: new mail wakes the worker and the
/// gateways' waiting claims, a refresh empties the tenant's cached provider.
async fn follow(
    mut events: tokio::sync::broadcast::Receiver<StoreEvent>,
    wake: Arc<tokio::sync::Notify>,
    mail_arrived: Arc<tokio::sync::Notify>,
    cache: Arc<ProviderCache>,
    mut stop: watch::Receiver<bool>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = stop.changed() => return,
        };
        match event {
            Ok(StoreEvent::Mail) => {
                wake.notify_one();
                mail_arrived.notify_waiters();
            }
            Ok(StoreEvent::Properties(tenant)) => cache.invalidate(tenant),
            // Too many to keep up with: assume everything changed.
            Err(RecvError::Lagged(_)) => {
                cache.clear();
                wake.notify_one();
                mail_arrived.notify_waiters();
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Starts a node with these settings.
pub async fn start(settings: Settings) -> anyhow::Result<Node> {
    files::create_data_dir(&settings.data_dir)?;
    let lock = match &settings.database {
        Database::Sqlite(path) => {
            files::create_database_file(path)?;
            Some(files::lock_database(path)?)
        }
        Database::Postgres(_) => None,
    };
    check_bootstrap_token(&settings)?;
    // The address first: a start that cannot listen stops before it changes
    // anything, above all before it makes an operator token.
    let listener = listen(settings.http, "--http ADDRESS:PORT (or HERALD_HTTP_ADDR)").await?;
    let http_addr = listener.local_addr()?;
    let metrics_listener = match settings.metrics_listen {
        Some(addr) => Some(
            listen(
                addr,
                "--metrics-listen ADDRESS:PORT (or HERALD_METRICS_LISTEN)",
            )
            .await?,
        ),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
    let metrics = Arc::new(herald_metrics::Metrics::new());
    let store = settings.database.open().await?;
    let (sealer, form_key) =
        keys::load_with_form_key(settings.master_key.as_ref(), &key_file(&settings.data_dir))?;
    let sealer = Arc::new(sealer);

    let default_provider = Arc::new(settings.default_provider);
    match &default_provider.transport {
        Transport::Capture => tracing::warn!(
            "no system default relay is configured (--default-smtp): tenants without their own provider deliver into the capture mailbox, readable at GET /v1/tenants/{{tenant}}/captured, and nothing leaves this machine"
        ),
        Transport::Smtp { target, .. } => {
            tracing::info!(relay = %format!("{}:{}", target.host, target.port.get()), security = %target.security, "system default relay")
        }
    }

    let mut roles = Vec::new();
    if settings.api {
        roles.push(NodeRole::Api);
    }
    if settings.worker {
        roles.push(NodeRole::Worker);
    }
    let role_names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    metrics.node_info(env!("CARGO_PKG_VERSION"), &role_names.join(","));
    let identity = Identity {
        name: settings.node_name.clone(),
        incarnation: herald_core::ids::new_incarnation(),
        roles,
        started_at: now_ms(),
    };
    let recovered_at = now_ms();
    recover(&*store, &identity).await?;
    // The worker starts a send only while the others still count this node
    // alive; each heartbeat recorded moves this on.
    let standing = Arc::new(AtomicI64::new(standing_after(
        recovered_at,
        settings.heartbeat,
        settings.node_stale_after,
    )));

    let cache = Arc::new(ProviderCache::new(settings.provider_staleness));
    let egress = Arc::new(settings.egress);
    let dispatcher = herald_delivery::webhook::Dispatcher::new(
        store.clone(),
        sealer.clone(),
        herald_delivery::webhook::WebhookConfig {
            node: settings.node_name.clone(),
            incarnation: identity.incarnation.clone(),
            egress: egress.clone(),
            metrics: metrics.clone(),
            ..settings.webhooks
        },
    );
    let worker = Worker::new(
        Arc::new(store.clone()),
        sealer.clone(),
        default_provider.clone(),
        cache.clone(),
        WorkerConfig {
            node: settings.node_name.clone(),
            incarnation: identity.incarnation.clone(),
            lease: settings.lease,
            poll: settings.poll,
            concurrency: settings.concurrency,
            retry: settings.retry,
            timeouts: settings.timeouts,
            egress: egress.clone(),
            standing: Some(standing.clone()),
            metrics: metrics.clone(),
            webhooks: Some(dispatcher.clone()),
            hands_pinned_mail_over: true,
        },
    );
    let worker_stats = worker.stats();
    // A node that delivers takes the mail it stores straight into its worker
    // while the worker has room (one commit fewer per message than a claim).
    let handoff = settings
        .worker
        .then(|| Arc::new(worker.clone()) as Arc<dyn herald_store::handoff::Handoff>);
    // Gateways' claims waiting at this node for mail: told of every message
    // stored, through the API, SMTP or another node.
    let mail_arrived = Arc::new(tokio::sync::Notify::new());
    // The SMTP submission listener, when asked for: bound before the token
    // below is made, so that a start that cannot listen changes nothing more.
    let smtp = match settings.smtp {
        Some(smtp) => {
            let backend = herald_ingress::StoreBackend::new(
                store.clone(),
                worker.waker(),
                settings.limits.max_queued_per_tenant,
            )
            .with_mail_arrived(mail_arrived.clone());
            let backend = match &handoff {
                Some(handoff) => backend.with_handoff(handoff.clone()),
                None => backend,
            };
            Some(
                herald_ingress::Listener::bind_metered(smtp, Arc::new(backend), metrics.clone())
                    .await
                    .context("the SMTP submission listener")?,
            )
        }
        None => None,
    };
    let smtp_addr = smtp.as_ref().and_then(herald_ingress::Listener::local_addr);
    let smtps_addr = smtp.as_ref().and_then(herald_ingress::Listener::smtps_addr);
    // The last step that can fail: from here on the node runs, and the token
    // made here is printed below.
    let generated_operator_token = bootstrap(&*store, settings.bootstrap_token.as_ref()).await?;
    let (shutdown, stop) = watch::channel(false);
    let heartbeat = tokio::spawn(heartbeat(
        store.clone(),
        identity,
        settings.heartbeat,
        settings.node_stale_after,
        standing,
        worker.waker(),
        stop.clone(),
    ));
    if let Some(events) = store.subscribe() {
        tokio::spawn(follow(
            events,
            worker.waker(),
            mail_arrived.clone(),
            cache.clone(),
            stop.clone(),
        ));
    }
    let store_for_metrics = store.clone();
    let state = AppState::from(NodeState {
        store,
        sealer,
        default_provider,
        wake: worker.waker(),
        events_written: dispatcher.waker(),
        handoff,
        cache,
        alive_within: settings.node_stale_after,
        limits: settings.limits,
        egress,
        submission: herald_api::Submission {
            starttls_port: smtp_addr.map(|a| a.port()),
            tls_port: smtps_addr.map(|a| a.port()),
        },
        metrics: metrics.clone(),
        webhook_http: dispatcher.http(),
        node: settings.node_name.clone().into(),
        schedules_changed: Arc::new(tokio::sync::Notify::new()),
        mail_arrived,
        gateway_lease: settings.lease,
        gateway_longest_deferral: settings.retry.max_age,
        stopping: stop.clone(),
        trusted_proxies: settings.trusted_proxies.clone(),
        renderer: Arc::new(herald_api::template::Renderer::new(
            settings.render_exe.clone(),
        )),
        waiting_claims: Arc::default(),
    });
    let worker = if settings.worker {
        let dispatcher = tokio::spawn(dispatcher.run(stop.clone()));
        let scheduler = tokio::spawn(herald_api::scheduler::run(state.clone(), stop.clone()));
        let worker = worker.run(stop.clone());
        tokio::spawn(async move {
            worker.await;
            let _ = dispatcher.await;
            let _ = scheduler.await;
        })
    } else {
        tokio::spawn(async {})
    };

    // The web console is served next to the API by nodes with the api role.
    let app = if settings.api {
        let console = herald_console::Options {
            trusted_proxies: settings.trusted_proxies.clone(),
            sign_in: settings.sign_in,
            form_key,
        };
        herald_api::router(state.clone(), true)
            .merge(herald_console::router(state, console))
            .fallback(herald_console::not_found)
    } else {
        herald_api::router(state, false)
    };
    // After routing, so each request is counted under its route template.
    let app = app.layer(axum::middleware::from_fn_with_state(
        metrics.clone(),
        crate::metrics::count_requests,
    ));
    // Every connection holds a descriptor: the cap must fit under the limit,
    // beside the worker's SMTP connections and the store's files.
    let mut limits = settings.http_limits;
    limits.max_connections = http::connection_cap(
        limits.max_connections,
        http::raise_file_limit(),
        settings.concurrency + 256,
    );
    let smtp = smtp.map(|listener| tokio::spawn(listener.serve(stop.clone())));
    let metrics_task = metrics_listener.map(|listener| {
        tokio::spawn(crate::metrics::count_queue(
            store_for_metrics.clone(),
            metrics.clone(),
            stop.clone(),
        ));
        tokio::spawn(http::serve(
            listener,
            crate::metrics::router(metrics.clone()),
            http::HttpLimits {
                max_connections: 64,
                ..http::HttpLimits::default()
            },
            stop.clone(),
        ))
    });
    let http = tokio::spawn(http::serve(listener, app, limits, stop));
    tracing::info!(http = %http_addr, node = %settings.node_name, database = %settings.database, "herald is running");
    // One plain line on standard output that people and scripts can read the address from.
    println!("herald listening on http://{http_addr}");
    if let Some(addr) = smtp_addr {
        println!("SMTP submission on {addr} (STARTTLS when a certificate is given)");
    }
    if let Some(addr) = smtps_addr {
        println!("SMTP submission with implicit TLS on {addr}");
    }
    if let Some(addr) = metrics_addr {
        println!(
            "Prometheus metrics on http://{addr}/metrics (no token: keep it on a private network)"
        );
    }
    if let Some(token) = &generated_operator_token {
        // Printed once, to standard output, so it does not end up in log collectors.
        println!("\nOperator token (shown once, stored only as a hash):\n\n    {token}\n");
    }
    if settings.api {
        println!(
            "Web console: http://{http_addr}/ (for the operator's sign-in, set a password once with \
             `herald operator set-password --email you@example.com`, on the same data directory or database)"
        );
    }
    Ok(Node {
        http_addr,
        smtp_addr,
        smtps_addr,
        metrics_addr,
        smtp,
        metrics: metrics_task,
        generated_operator_token,
        worker_stats,
        shutdown,
        http,
        worker,
        heartbeat,
        _lock: lock,
    })
}

/// Binds an HTTP listener; a failure says how to choose another address
/// with `flag`.
async fn listen(addr: SocketAddr, flag: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|error| {
        let why = match error.kind() {
            std::io::ErrorKind::AddrInUse => "another program listens there",
            std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
                "ports below 1024 need privileges"
            }
            std::io::ErrorKind::AddrNotAvailable => "the address is not one of this machine's",
            _ => "the system refused it",
        };
        let next = SocketAddr::new(addr.ip(), addr.port().checked_add(1).unwrap_or(8025));
        let name = flag.split(' ').next().unwrap_or(flag);
        anyhow::anyhow!(
            "cannot listen on {addr}: {error}, {why}; choose another address with \
             {flag}, e.g. {name} {next}"
        )
    })
}

impl Node {
    /// Waits for Ctrl-C or SIGTERM.
    pub async fn wait_for_signal(&self) {
        stop_signal().await;
        tracing::info!("shutting down: finishing requests and deliveries in flight");
    }

    /// Stops accepting requests, lets the worker finish what it has in flight, and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.http.await;
        if let Some(mut smtp) = self.smtp {
            // A session in DATA finishes its message; one that crawls is
            // cut off after the grace period, before any 250, so its client
            // sends the message again.
            if tokio::time::timeout(SMTP_SHUTDOWN_GRACE, &mut smtp)
                .await
                .is_err()
            {
                tracing::warn!("SMTP sessions still open after the grace period are closed");
                smtp.abort();
            }
        }
        if let Some(metrics) = self.metrics {
            let _ = metrics.await;
        }
        let _ = self.worker.await;
        let _ = self.heartbeat.await;
        tracing::info!("stopped");
    }
}

/// Returns at SIGTERM or Ctrl-C: a node's and a gateway's signal to stop.
pub async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
