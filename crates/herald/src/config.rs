//! Settings of a node, from flags, then environment, then an optional TOML file, then defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use herald_core::{EmailAddress, Mechanism, Port, Secret, Security, SmtpHost};
use herald_delivery::webhook::WebhookConfig;
use herald_delivery::{DefaultProvider, RetryPolicy, Transport};
use herald_smtp::{Credentials, Egress, Target, Timeouts, TlsSettings};
use serde::Deserialize;

#[derive(Subcommand, Debug)]
pub enum OperatorCommand {
    /// Set an operator's console password, from HERALD_OPERATOR_PASSWORD or a
    /// prompt; a new address becomes an operator. Ends the operator's sessions.
    SetPassword(Box<SetPasswordArgs>),
    /// Create, list and revoke operator API tokens, on the node's database.
    #[command(subcommand)]
    Token(OperatorTokenCommand),
}

/// `herald operator token …`: works on the database directly, like `set-password`.
#[derive(Subcommand, Debug)]
pub enum OperatorTokenCommand {
    /// Create an operator token and print it once (only its hash is stored).
    Create(Box<TokenCreateArgs>),
    /// List the operator tokens in force: id, name, created, last used, and which came from HERALD_BOOTSTRAP_TOKEN.
    List(Box<StoreArgs>),
    /// Revoke an operator token by its id (see `list`); it stops working at once.
    Revoke(Box<TokenRevokeArgs>),
}

/// Flags of `herald operator token create`.
#[derive(Args, Debug)]
pub struct TokenCreateArgs {
    /// A name that says what the token is for.
    #[arg(long, default_value = "created on the command line")]
    pub name: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Flags of `herald operator token revoke`.
#[derive(Args, Debug)]
pub struct TokenRevokeArgs {
    /// The token's id, as `herald operator token list` shows it.
    pub id: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Flags of `herald operator set-password`: the address, and where the database is.
#[derive(Args, Debug)]
pub struct SetPasswordArgs {
    /// The operator's e-mail address, with which they sign in.
    #[arg(long, env = "HERALD_OPERATOR_EMAIL")]
    pub email: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Flags of `herald migrate-store`.
#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The embedded database to copy from: sqlite://PATH, e.g. sqlite://herald-data/herald.db.
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// The PostgreSQL database to copy into: postgres://USER@HOST:PORT/DATABASE; it must hold no Herald data yet.
    #[arg(long, value_name = "URL")]
    pub to: String,
}

impl MigrateArgs {
    /// The SQLite file to read and the PostgreSQL database to fill. Only that
    /// direction is supported: it is the one an installation grows in.
    pub fn endpoints(&self) -> anyhow::Result<(PathBuf, String)> {
        let Database::Sqlite(from) = Database::parse(&self.from).context("--from")? else {
            bail!(
                "--from must be the embedded database, sqlite://PATH; only copying from SQLite to PostgreSQL is supported"
            )
        };
        let Database::Postgres(to) = Database::parse(&self.to).context("--to")? else {
            bail!("--to must be a PostgreSQL database, postgres://USER@HOST:PORT/DATABASE")
        };
        Ok((from, to))
    }
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Re-seal every stored secret under a new key (run it while the nodes are stopped).
    Rotate(Box<StoreArgs>),
    /// Print a new random key, for keyrings kept in HERALD_MASTER_KEY.
    Generate,
}

/// The help of the flags that say where a node's data is, shared by `herald
/// serve` and the commands that work on that data directly.
const CONFIG_HELP: &str =
    "A TOML file with any of `herald serve`'s settings; flags and environment override it";
const DATA_DIR_HELP: &str =
    "Directory for the embedded database and the master key file [default: ./herald-data]";
const DATABASE_URL_HELP: &str = "Database: sqlite://PATH for the embedded database [default: herald.db in the data directory], \
     or postgres://USER:PASSWORD@HOST:PORT/DATABASE for PostgreSQL (several nodes on one database)";

/// Where a node's data is, for the commands that work on it directly
/// (`herald keys rotate`, `herald operator …`): the same flags, variables and
/// file keys as `herald serve`, and none of the flags only a running node uses.
#[derive(Args, Debug, Default)]
pub struct StoreArgs {
    #[arg(long, env = "HERALD_CONFIG", help = CONFIG_HELP)]
    pub config: Option<PathBuf>,
    #[arg(long, env = "HERALD_DATA_DIR", help = DATA_DIR_HELP)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, env = "HERALD_DATABASE_URL", help = DATABASE_URL_HELP)]
    pub database_url: Option<String>,
}

impl StoreArgs {
    /// The node's settings as `herald serve` would resolve them from the same
    /// file and variables; the node's address (for the console's URL) comes
    /// from `HERALD_HTTP_ADDR` or the file.
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let http = match std::env::var("HERALD_HTTP_ADDR") {
            Ok(addr) if !addr.trim().is_empty() => Some(
                addr.trim()
                    .parse()
                    .with_context(|| format!("HERALD_HTTP_ADDR {addr:?} is not an address:port"))?,
            ),
            _ => None,
        };
        ServeArgs {
            config: self.config,
            data_dir: self.data_dir,
            database_url: self.database_url,
            http,
            ..ServeArgs::default()
        }
        .resolve()
    }
}

/// Flags of `herald serve`. Each also reads an environment variable, and each
/// has a key of the same name (with underscores) in the TOML file.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    #[arg(long, env = "HERALD_CONFIG", help = CONFIG_HELP)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address of the HTTP API [default: 127.0.0.1:8025].
    #[arg(long = "http", env = "HERALD_HTTP_ADDR")]
    pub http: Option<SocketAddr>,
    #[arg(long, env = "HERALD_DATA_DIR", help = DATA_DIR_HELP)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, env = "HERALD_DATABASE_URL", help = DATABASE_URL_HELP)]
    pub database_url: Option<String>,
    /// The system default relay: smtp://host[:port], smtp+starttls://host[:port] or smtps://host[:port].
    /// Without it, the default provider is the capture mailbox.
    // The text is the flag's help, where brackets are brackets, not links.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, env = "HERALD_DEFAULT_SMTP")]
    pub default_smtp: Option<String>,
    /// User name for the default relay; the password comes from HERALD_DEFAULT_SMTP_PASSWORD.
    #[arg(long, env = "HERALD_DEFAULT_SMTP_USER")]
    pub default_smtp_user: Option<String>,
    /// Verify the default relay's certificate [default: true].
    #[arg(long, env = "HERALD_DEFAULT_SMTP_TLS_VERIFY")]
    pub default_smtp_tls_verify: Option<bool>,
    /// From address of the system default provider.
    #[arg(long, env = "HERALD_DEFAULT_FROM")]
    pub default_from: Option<String>,
    /// Display name of the system default provider.
    #[arg(long, env = "HERALD_DEFAULT_FROM_NAME")]
    pub default_from_name: Option<String>,
    /// Where the system default provider sends messages that name no recipient.
    #[arg(long, env = "HERALD_DEFAULT_FALLBACK")]
    pub default_fallback: Option<String>,
    /// This node's name on leases and attempts [default: the host name].
    #[arg(long, env = "HERALD_NODE_NAME")]
    pub node_name: Option<String>,
    /// Delay after the first failed attempt, e.g. 60s [default: 60s].
    #[arg(long, env = "HERALD_RETRY_BASE")]
    pub retry_base: Option<String>,
    /// Longest delay between attempts [default: 1h].
    #[arg(long, env = "HERALD_RETRY_MAX")]
    pub retry_max: Option<String>,
    /// Age after which undelivered mail fails [default: 2d].
    #[arg(long, env = "HERALD_MAX_AGE")]
    pub max_age: Option<String>,
    /// How often the worker looks for due mail when nothing wakes it [default: 5s].
    #[arg(long, env = "HERALD_POLL_INTERVAL")]
    pub poll_interval: Option<String>,
    /// How long a claim holds a recipient [default: 5m].
    #[arg(long, env = "HERALD_LEASE")]
    pub lease: Option<String>,
    /// Timeout of each SMTP command [default: 60s].
    #[arg(long, env = "HERALD_SMTP_TIMEOUT")]
    pub smtp_timeout: Option<String>,
    /// CIDR ranges tenants' SMTP servers and OAuth2 token endpoints may be in even where the built-in rules forbid them (e.g. 127.0.0.0/8 for tests); plain-http token endpoints only here.
    #[arg(long, env = "HERALD_EGRESS_ALLOW")]
    pub egress_allow: Option<String>,
    /// CIDR ranges tenants' SMTP servers and OAuth2 token endpoints may never be in, besides the built-in rules (loopback, link-local, cloud metadata, unspecified, multicast, and IPv6 forms embedding a forbidden IPv4 address; see README's Egress).
    #[arg(long, env = "HERALD_EGRESS_DENY")]
    pub egress_deny: Option<String>,
    /// How stale a node's view of a tenant's provider may be; a refresh applies a change at once [default: 30s].
    #[arg(long, env = "HERALD_PROVIDER_STALENESS")]
    pub provider_staleness: Option<String>,
    /// What this node does: api (the REST API), worker (delivery), or both [default: api,worker].
    #[arg(long, env = "HERALD_ROLES")]
    pub roles: Option<String>,
    /// How often the node records that it is alive [default: 5s].
    #[arg(long, env = "HERALD_HEARTBEAT")]
    pub heartbeat: Option<String>,
    /// How old a node's latest heartbeat may be before it is taken for gone and
    /// another node gives back the mail it was delivering; longer than the heartbeat [default: three heartbeats].
    #[arg(long, env = "HERALD_NODE_STALE_AFTER")]
    pub node_stale_after: Option<String>,
    /// Largest text plus HTML of one message, in bytes [default: 10485760].
    #[arg(long, env = "HERALD_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<usize>,
    /// Most recipients (to, cc and bcc together) of one message [default: 100].
    #[arg(long, env = "HERALD_MAX_RECIPIENTS")]
    pub max_recipients: Option<usize>,
    /// Most custom header fields of one message [default: 50].
    #[arg(long, env = "HERALD_MAX_HEADERS")]
    pub max_headers: Option<usize>,
    /// Most recipients one tenant may have waiting (queued, deferred or being
    /// sent); past it submissions answer 429 [default: 1000000].
    #[arg(long, env = "HERALD_MAX_QUEUED_PER_TENANT")]
    pub max_queued_per_tenant: Option<u64>,
    /// Most test messages one tenant may have queued or being sent; past it
    /// a test message answers 429 [default: 5].
    #[arg(long, env = "HERALD_MAX_TEST_MESSAGES_PER_TENANT")]
    pub max_test_messages_per_tenant: Option<u32>,
    /// Messages delivered at once by this node [default: 256].
    #[arg(long, env = "HERALD_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// CIDR ranges of the reverse proxies in front of this node, whose X-Forwarded-For, -Host and -Proto are believed (e.g. 10.0.0.0/8); nobody's by default.
    #[arg(long, env = "HERALD_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// HTTP connections open at once; beyond, new connections wait until one closes [default: 10000].
    #[arg(long, env = "HERALD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Address of the SMTP submission listener with STARTTLS, e.g. 0.0.0.0:587; off by default.
    #[arg(long, env = "HERALD_SMTP_LISTEN")]
    pub smtp_listen: Option<SocketAddr>,
    /// Address of the SMTP submission listener over implicit TLS, e.g. 0.0.0.0:465; needs
    /// --smtp-tls-cert and --smtp-tls-key; off by default.
    #[arg(long, env = "HERALD_SMTPS_LISTEN")]
    pub smtps_listen: Option<SocketAddr>,
    /// PEM certificate chain (leaf first) of the SMTP listener, reloaded on SIGHUP and when the
    /// file changes. Without it STARTTLS is not offered and AUTH only taken from loopback clients.
    #[arg(long, env = "HERALD_SMTP_TLS_CERT")]
    pub smtp_tls_cert: Option<PathBuf>,
    /// PEM private key of --smtp-tls-cert.
    #[arg(long, env = "HERALD_SMTP_TLS_KEY")]
    pub smtp_tls_key: Option<PathBuf>,
    /// Address of the Prometheus metrics listener (GET /metrics, no token: keep it on a
    /// private network), e.g. 10.0.0.5:9187; off by default.
    #[arg(long, env = "HERALD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// How long one webhook POST may take, answer included [default: 10s].
    #[arg(long, env = "HERALD_WEBHOOK_TIMEOUT")]
    pub webhook_timeout: Option<String>,
    /// Waits between a webhook event's attempts, comma-separated; the last one
    /// repeats until a day after the event [default: 5s,30s,2m,10m,30m,1h,2h,4h].
    #[arg(long, env = "HERALD_WEBHOOK_RETRY")]
    pub webhook_retry: Option<String>,
    /// Connections this node keeps to one webhook's host, each carrying up
    /// to 16 requests pipelined [default: 16].
    #[arg(long, env = "HERALD_WEBHOOK_CONCURRENCY")]
    pub webhook_concurrency: Option<usize>,
}

/// Everything a node needs, resolved and validated.
#[derive(Debug)]
pub struct Settings {
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    pub database: Database,
    pub default_provider: DefaultProvider,
    pub node_name: String,
    pub retry: RetryPolicy,
    pub poll: Duration,
    pub lease: Duration,
    pub timeouts: Timeouts,
    pub concurrency: usize,
    /// How often the node records that it is alive.
    pub heartbeat: Duration,
    /// How old a node's heartbeat may be before it is taken for gone.
    pub node_stale_after: Duration,
    /// Limits on submitted messages.
    pub limits: herald_api::Limits,
    /// This node serves the REST API.
    pub api: bool,
    /// This node delivers mail.
    pub worker: bool,
    /// The staleness bound of the provider cache.
    pub provider_staleness: Duration,
    /// Where tenants' SMTP servers may be.
    pub egress: Egress,
    /// The HTTP server's timeouts and connection cap.
    pub http_limits: crate::http::HttpLimits,
    /// Reverse proxies whose forwarding headers the console believes.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How much anonymous sign-in work the console takes on.
    pub sign_in: herald_console::SignInLimits,
    /// From HERALD_BOOTSTRAP_TOKEN: an operator token accepted from the first start on.
    pub bootstrap_token: Option<Secret>,
    /// From HERALD_MASTER_KEY: the key that seals secrets, instead of the key file.
    pub master_key: Option<Secret>,
    /// The SMTP submission listener, when --smtp-listen or --smtps-listen is given.
    pub smtp: Option<herald_ingress::Settings>,
    /// The Prometheus metrics listener's address, when --metrics-listen is given.
    pub metrics_listen: Option<SocketAddr>,
    /// How this node's webhook dispatcher behaves (its egress is `egress`).
    pub webhooks: WebhookConfig,
    /// The `herald` executable the node runs as its template renderer
    /// processes (`herald render-worker`); `herald serve` sets it to its own.
    /// `None` renders in this process on a blocking thread, without the
    /// memory limit (see `herald_api::template::Renderer`): for programs
    /// that embed a node and render no tenant templates.
    pub render_exe: Option<PathBuf>,
}

/// Where a node's data lives. `Debug` and `Display` show a PostgreSQL URL
/// without its password.
#[derive(Clone)]
pub enum Database {
    /// The embedded database: one SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server shared by many nodes (the URL may hold a password).
    Postgres(String),
}

impl Database {
    /// Parses `sqlite://PATH` or `postgres://…` (also `postgresql://…`).
    pub fn parse(url: &str) -> anyhow::Result<Database> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            return Ok(Database::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Database::Postgres(url.to_owned()));
        }
        bail!("the database URL must be sqlite://PATH or postgres://USER@HOST:PORT/DATABASE")
    }

    /// Opens the store, applying migrations.
    pub async fn open(&self) -> anyhow::Result<std::sync::Arc<dyn herald_store::Store>> {
        Ok(match self {
            Database::Sqlite(path) => std::sync::Arc::new(
                herald_store::SqliteStore::open(path)
                    .with_context(|| format!("opening {}", path.display()))?,
            ),
            Database::Postgres(url) => std::sync::Arc::new(
                herald_store::PgStore::connect(url)
                    .await
                    .with_context(|| format!("connecting to {self}"))?,
            ),
        })
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database({self})")
    }
}

impl std::fmt::Display for Database {
    /// The location without any password, for logs and errors.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Database::Postgres(url) => f.write_str(&herald_core::redact_url(url)),
        }
    }
}

/// Parses `500ms`, `30s`, `5m`, `2h` or `2d`.
pub fn parse_duration(input: &str) -> anyhow::Result<Duration> {
    let input = input.trim();
    let split = input
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(input.len());
    let (number, unit) = input.split_at(split);
    let n: u64 = number
        .parse()
        .with_context(|| format!("{input:?} is not a duration like 30s"))?;
    let ms = match unit {
        "ms" => n,
        "s" | "" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => bail!("{input:?} has an unknown unit; use ms, s, m, h or d"),
    };
    Ok(Duration::from_millis(ms))
}

fn duration(name: &str, value: Option<String>, default: Duration) -> anyhow::Result<Duration> {
    value.map_or(Ok(default), |v| {
        parse_duration(&v).with_context(|| format!("--{name}"))
    })
}

/// The dispatcher's settings from their flags, the rest at their defaults.
fn webhook_config(
    timeout: Option<String>,
    retry: Option<String>,
    concurrency: Option<usize>,
) -> anyhow::Result<WebhookConfig> {
    let default = WebhookConfig::default();
    let timeout = duration("webhook-timeout", timeout, default.timeout)?;
    if timeout.is_zero() {
        bail!("--webhook-timeout must be longer than 0s");
    }
    let retry_delays = match retry {
        None => default.retry_delays,
        Some(list) => list
            .split(',')
            .map(|d| parse_duration(d.trim()).context("--webhook-retry"))
            .collect::<anyhow::Result<Vec<_>>>()?,
    };
    Ok(WebhookConfig {
        timeout,
        retry_delays,
        per_webhook: match concurrency {
            Some(0) => bail!("--webhook-concurrency must be at least 1"),
            Some(n) => n,
            None => default.per_webhook,
        },
        ..default
    })
}

fn address(name: &str, value: &str) -> anyhow::Result<EmailAddress> {
    EmailAddress::parse(value).map_err(|e| anyhow::anyhow!("--{name} {e}"))
}

fn env_secret(name: &str) -> Option<Secret> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Secret::new)
}

/// Parses a list of CIDR ranges (or single addresses), separated by commas.
fn cidr_list(flag: &str, list: &str) -> anyhow::Result<Vec<ipnet::IpNet>> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    anyhow::anyhow!("--{flag}: {item:?} is not a CIDR range such as 10.0.0.0/8")
                })
        })
        .collect()
}

/// This machine's name, for a node or a gateway instance that is not given one.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "herald".into())
}

/// Parses the default relay's URL into a target.
fn relay_target(
    url: &str,
    timeouts: Timeouts,
    tls_verify: bool,
    helo: &str,
) -> anyhow::Result<Target> {
    let (scheme, rest) = url
        .split_once("://")
        .context("--default-smtp must look like smtp://host:port")?;
    let (security, default_port) = match scheme {
        "smtp" => (Security::None, 25),
        "smtp+starttls" => (Security::StartTls, 587),
        "smtps" => (Security::Tls, 465),
        _ => bail!("--default-smtp scheme must be smtp, smtp+starttls or smtps"),
    };
    let authority = rest.trim_end_matches('/');
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') => (h, p.parse::<i64>().context("--default-smtp port")?),
        _ => (authority, default_port),
    };
    Ok(Target {
        host: SmtpHost::parse(host).map_err(|e| anyhow::anyhow!("--default-smtp host {e}"))?,
        port: Port::new(port).map_err(|e| anyhow::anyhow!("--default-smtp port {e}"))?,
        security,
        tls: TlsSettings {
            verify: tls_verify,
            ..TlsSettings::default()
        },
        helo_name: helo.to_owned(),
        timeouts,
        egress: None,
        // The operator's own relay is the operator's choice, like its egress.
        allow_plaintext_auth: true,
    })
}

impl ServeArgs {
    /// Fills what flags and environment left unset from the TOML file, then from defaults.
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<ServeArgs>(&text)
                    .with_context(|| format!("parsing {}", path.display()))?
            }
            None => ServeArgs::default(),
        };
        macro_rules! pick {
            ($field:ident) => {
                self.$field.or(file.$field)
            };
        }
        let data_dir = pick!(data_dir).unwrap_or_else(|| PathBuf::from("herald-data"));
        let database = match pick!(database_url) {
            None => Database::Sqlite(data_dir.join("herald.db")),
            Some(url) => Database::parse(&url)?,
        };
        let command = duration("smtp-timeout", pick!(smtp_timeout), Duration::from_secs(60))?;
        let roles_given = pick!(roles).unwrap_or_else(|| "api,worker".into());
        let roles: Vec<&str> = roles_given
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .collect();
        if roles.is_empty() || roles.iter().any(|r| !["api", "worker"].contains(r)) {
            bail!("--roles must be api, worker or api,worker (got {roles_given:?})");
        }
        let timeouts = Timeouts {
            connect: command.min(Duration::from_secs(30)),
            command,
            data: command * 3,
        };
        let default_provider = match pick!(default_smtp) {
            None => DefaultProvider {
                transport: Transport::Capture,
                from: address(
                    "default-from",
                    pick!(default_from)
                        .as_deref()
                        .unwrap_or("herald@herald.localhost"),
                )?,
                from_name: pick!(default_from_name).or(Some("Herald".into())),
                fallback: Some(address(
                    "default-fallback",
                    pick!(default_fallback)
                        .as_deref()
                        .unwrap_or("fallback@herald.localhost"),
                )?),
            },
            Some(url) => {
                let from = address(
                    "default-from",
                    &pick!(default_from)
                        .context("--default-from is required with --default-smtp")?,
                )?;
                let target = relay_target(
                    &url,
                    timeouts,
                    pick!(default_smtp_tls_verify).unwrap_or(true),
                    from.domain(),
                )?;
                let credentials = match pick!(default_smtp_user) {
                    None => None,
                    Some(username) => Some(Credentials {
                        mechanism: Mechanism::Plain,
                        username,
                        secret: env_secret("HERALD_DEFAULT_SMTP_PASSWORD").context(
                            "HERALD_DEFAULT_SMTP_PASSWORD is required with --default-smtp-user",
                        )?,
                    }),
                };
                DefaultProvider {
                    transport: DefaultProvider::relay(target, credentials),
                    from,
                    from_name: pick!(default_from_name),
                    fallback: pick!(default_fallback)
                        .map(|a| address("default-fallback", &a))
                        .transpose()?,
                }
            }
        };
        let heartbeat = duration("heartbeat", pick!(heartbeat), Duration::from_secs(5))?;
        if heartbeat.is_zero() {
            bail!("--heartbeat must be longer than 0s");
        }
        let node_stale_after =
            duration("node-stale-after", pick!(node_stale_after), heartbeat * 3)?;
        if node_stale_after <= heartbeat {
            // A node would be taken for gone between two of its own beats.
            bail!(
                "--node-stale-after ({node_stale_after:?}) must be longer than --heartbeat ({heartbeat:?})"
            );
        }
        let node_name = pick!(node_name).unwrap_or_else(host_name);
        let smtp = smtp_settings(
            pick!(smtp_listen),
            pick!(smtps_listen),
            pick!(smtp_tls_cert),
            pick!(smtp_tls_key),
            &node_name,
        )?
        .map(|mut smtp| {
            let default = herald_api::Limits::default();
            smtp.max_message_size = pick!(max_message_size).unwrap_or(default.max_message_bytes);
            smtp.max_recipients = pick!(max_recipients).unwrap_or(default.max_recipients);
            smtp
        });
        Ok(Settings {
            http: pick!(http).unwrap_or_else(|| "127.0.0.1:8025".parse().expect("a valid address")),
            data_dir,
            database,
            default_provider,
            node_name,
            retry: RetryPolicy {
                base: duration("retry-base", pick!(retry_base), Duration::from_secs(60))?,
                max: duration("retry-max", pick!(retry_max), Duration::from_secs(3600))?,
                max_age: duration("max-age", pick!(max_age), Duration::from_secs(2 * 86_400))?,
            },
            poll: duration(
                "poll-interval",
                pick!(poll_interval),
                Duration::from_secs(5),
            )?,
            lease: duration("lease", pick!(lease), Duration::from_secs(300))?,
            timeouts,
            concurrency: pick!(concurrency).unwrap_or(256).max(1),
            heartbeat,
            node_stale_after,
            limits: {
                let default = herald_api::Limits::default();
                herald_api::Limits {
                    max_message_bytes: pick!(max_message_size).unwrap_or(default.max_message_bytes),
                    max_recipients: pick!(max_recipients).unwrap_or(default.max_recipients),
                    max_headers: pick!(max_headers).unwrap_or(default.max_headers),
                    max_queued_per_tenant: match pick!(max_queued_per_tenant) {
                        Some(0) => bail!("--max-queued-per-tenant must be at least 1"),
                        Some(n) => n,
                        None => default.max_queued_per_tenant,
                    },
                    max_pending_tests: match pick!(max_test_messages_per_tenant) {
                        Some(0) => bail!("--max-test-messages-per-tenant must be at least 1"),
                        Some(n) => n,
                        None => default.max_pending_tests,
                    },
                }
            },
            api: roles.contains(&"api"),
            worker: roles.contains(&"worker"),
            provider_staleness: duration(
                "provider-staleness",
                pick!(provider_staleness),
                Duration::from_secs(30),
            )?,
            egress: Egress::new(
                Egress::parse_list(&pick!(egress_allow).unwrap_or_default())
                    .map_err(|e| anyhow::anyhow!("--egress-allow: {e}"))?,
                Egress::parse_list(&pick!(egress_deny).unwrap_or_default())
                    .map_err(|e| anyhow::anyhow!("--egress-deny: {e}"))?,
            ),
            http_limits: crate::http::HttpLimits {
                max_connections: match pick!(max_connections) {
                    Some(0) => bail!("--max-connections must be at least 1"),
                    Some(n) => n,
                    None => crate::http::HttpLimits::default().max_connections,
                },
                ..crate::http::HttpLimits::default()
            },
            trusted_proxies: cidr_list(
                "trusted-proxies",
                &pick!(trusted_proxies).unwrap_or_default(),
            )?,
            sign_in: herald_console::SignInLimits::default(),
            render_exe: None,
            bootstrap_token: env_secret("HERALD_BOOTSTRAP_TOKEN"),
            master_key: env_secret("HERALD_MASTER_KEY"),
            smtp,
            metrics_listen: pick!(metrics_listen),
            webhooks: webhook_config(
                pick!(webhook_timeout),
                pick!(webhook_retry),
                pick!(webhook_concurrency),
            )?,
        })
    }
}

/// The SMTP listener's settings, when one of its addresses is given; the
/// node's name is the name in its greeting and `Received:` headers.
fn smtp_settings(
    listen: Option<SocketAddr>,
    smtps_listen: Option<SocketAddr>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    node_name: &str,
) -> anyhow::Result<Option<herald_ingress::Settings>> {
    match (&cert, &key) {
        (Some(_), None) | (None, Some(_)) => {
            bail!("--smtp-tls-cert and --smtp-tls-key go together: give both or neither")
        }
        _ => {}
    }
    if listen.is_none() && smtps_listen.is_none() {
        if cert.is_some() {
            bail!("--smtp-tls-cert needs --smtp-listen or --smtps-listen");
        }
        return Ok(None);
    }
    if smtps_listen.is_some() && cert.is_none() {
        bail!("--smtps-listen needs a certificate: give --smtp-tls-cert and --smtp-tls-key");
    }
    let mut settings = herald_ingress::Settings::new(node_name);
    settings.listen = listen;
    settings.smtps_listen = smtps_listen;
    settings.tls_cert = cert;
    settings.tls_key = key;
    Ok(Some(settings))
}

/// Where the master key lives in embedded mode.
pub fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("master.key")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The help states the default that `resolve` really applies.
    #[test]
    fn the_concurrency_help_states_the_real_default() {
        let default = ServeArgs::default().resolve().unwrap().concurrency;
        let help = ServeArgs::augment_args(clap::Command::new("serve"))
            .render_long_help()
            .to_string();
        let text = help.split("--concurrency").nth(1).unwrap();
        let text = text.split("\n      --").next().unwrap();
        assert!(
            text.contains(&format!("[default: {default}]")),
            "--concurrency help: {text}"
        );
    }

    #[test]
    fn the_smtp_listener_settings() {
        assert!(ServeArgs::default().resolve().unwrap().smtp.is_none());
        let smtp = ServeArgs {
            smtp_listen: Some("0.0.0.0:587".parse().unwrap()),
            max_message_size: Some(1234),
            node_name: Some("mx1.example".into()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap()
        .smtp
        .unwrap();
        assert_eq!(smtp.listen, Some("0.0.0.0:587".parse().unwrap()));
        assert_eq!(smtp.smtps_listen, None);
        assert_eq!(smtp.max_message_size, 1234);
        assert_eq!(smtp.hostname, "mx1.example");
        let error = ServeArgs {
            smtps_listen: Some("0.0.0.0:465".parse().unwrap()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("--smtps-listen needs a certificate"),
            "{error}"
        );
        let error = ServeArgs {
            smtp_listen: Some("0.0.0.0:587".parse().unwrap()),
            smtp_tls_cert: Some("cert.pem".into()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(error.to_string().contains("--smtp-tls-key"), "{error}");
        let file: ServeArgs = toml::from_str(
            "smtp_listen = \"127.0.0.1:2587\"\nsmtp_tls_cert = \"c.pem\"\nsmtp_tls_key = \"k.pem\"\n",
        )
        .unwrap();
        let smtp = file.resolve().unwrap().smtp.unwrap();
        assert_eq!(smtp.tls_key, Some(PathBuf::from("k.pem")));
    }

    #[test]
    fn the_metrics_listener_is_off_unless_an_address_is_given() {
        assert_eq!(ServeArgs::default().resolve().unwrap().metrics_listen, None);
        let file: ServeArgs = toml::from_str("metrics_listen = \"127.0.0.1:9187\"\n").unwrap();
        assert_eq!(
            file.resolve().unwrap().metrics_listen,
            Some("127.0.0.1:9187".parse().unwrap())
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("5 weeks").is_err());
    }

    #[test]
    fn flags_beat_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(
            &path,
            "http = \"127.0.0.1:9000\"\nnode_name = \"from-file\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            node_name: Some("from-flag".into()),
            ..Default::default()
        };
        let settings = args.resolve().unwrap();
        assert_eq!(settings.http.port(), 9000);
        assert_eq!(settings.node_name, "from-flag");
    }

    #[test]
    fn migrate_store_copies_from_sqlite_to_postgres_only() {
        let args = |from: &str, to: &str| MigrateArgs {
            from: from.into(),
            to: to.into(),
        };
        let (from, to) = args("sqlite://data/herald.db", "postgres://h@db:5432/herald")
            .endpoints()
            .unwrap();
        assert_eq!(from, PathBuf::from("data/herald.db"));
        assert_eq!(to, "postgres://h@db:5432/herald");
        assert!(
            args("postgres://h@db/a", "postgres://h@db/b")
                .endpoints()
                .is_err()
        );
        assert!(args("sqlite://a.db", "sqlite://b.db").endpoints().is_err());
        assert!(args("a.db", "postgres://h@db/b").endpoints().is_err());
    }

    #[test]
    fn trusted_proxies_and_the_connection_cap() {
        let args = ServeArgs {
            trusted_proxies: Some("10.0.0.0/8, 192.0.2.1,2001:db8::/32".into()),
            max_connections: Some(50),
            ..Default::default()
        };
        let settings = args.resolve().unwrap();
        assert_eq!(settings.trusted_proxies.len(), 3);
        assert_eq!(settings.http_limits.max_connections, 50);
        let bad = ServeArgs {
            trusted_proxies: Some("10.0.0.0/33".into()),
            ..Default::default()
        };
        let error = format!("{:#}", bad.resolve().unwrap_err());
        assert!(
            error.contains("--trusted-proxies") && error.contains("10.0.0.0/33"),
            "{error}"
        );
        let zero = ServeArgs {
            max_connections: Some(0),
            ..Default::default()
        };
        let error = format!("{:#}", zero.resolve().unwrap_err());
        assert!(
            error.contains("--max-connections must be at least 1"),
            "{error}"
        );
        assert!(
            ServeArgs::default()
                .resolve()
                .unwrap()
                .trusted_proxies
                .is_empty(),
            "no proxy is trusted by default"
        );
    }

    #[test]
    fn the_queue_limit_per_tenant() {
        let default = ServeArgs::default().resolve().unwrap();
        assert_eq!(default.limits.max_queued_per_tenant, 1_000_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, "max_queued_per_tenant = 500\n").unwrap();
        let from_file = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        assert_eq!(
            from_file.resolve().unwrap().limits.max_queued_per_tenant,
            500
        );
        let zero = ServeArgs {
            max_queued_per_tenant: Some(0),
            ..Default::default()
        };
        let error = zero.resolve().unwrap_err().to_string();
        assert!(error.contains("--max-queued-per-tenant"), "{error}");
    }

    #[test]
    fn a_node_is_taken_for_gone_only_after_more_than_one_heartbeat() {
        let settings = ServeArgs {
            heartbeat: Some("2s".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(settings.node_stale_after, Duration::from_secs(6));
        let error = ServeArgs {
            heartbeat: Some("2s".into()),
            node_stale_after: Some("2s".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        let error = format!("{error:#}");
        assert!(
            error.contains("--node-stale-after") && error.contains("--heartbeat"),
            "{error}"
        );
    }

    #[test]
    fn relay_urls() {
        let t = relay_target("smtps://mail.example", Timeouts::default(), true, "x").unwrap();
        assert_eq!((t.security, t.port.get()), (Security::Tls, 465));
        let t = relay_target("smtp://127.0.0.1:2525", Timeouts::default(), true, "x").unwrap();
        assert_eq!((t.security, t.port.get()), (Security::None, 2525));
        assert!(relay_target("http://x", Timeouts::default(), true, "x").is_err());
    }
}
