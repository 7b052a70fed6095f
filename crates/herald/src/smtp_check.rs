//! `herald smtp-check`: the step-by-step diagnosis of a test message, from the
//! command line, against a stored server or one given by flags; nothing is queued.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use herald_core::terminal::escape_unprintable;
use herald_core::{EmailAddress, Mechanism, Port, Secret, Security, SmtpHost};
use herald_smtp::{
    Connection, Credentials, Egress, Envelope, ErrorKind, SmtpError, Target, Timeouts, TlsSettings,
    Tracer,
};

/// Flags of `herald smtp-check`.
#[derive(Args, Debug)]
pub struct SmtpCheckArgs {
    /// Check a stored server: the tenant's slug (with --server; the database
    /// and keyring come from --data-dir, HERALD_DATABASE_URL and HERALD_MASTER_KEY,
    /// and the node's egress rules from --egress-allow and --egress-deny).
    #[arg(long, requires = "server")]
    pub tenant: Option<String>,
    /// The stored server's id; its first account logs in (or --account).
    #[arg(long, requires = "tenant")]
    pub server: Option<String>,
    /// The stored account's id.
    #[arg(long, requires = "server")]
    pub account: Option<String>,
    /// Where the embedded database and key file are [default: ./herald-data].
    #[arg(long, env = "HERALD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The server's host name or IP address.
    #[arg(long, required_unless_present = "server", default_value = "")]
    pub host: String,
    /// Its port.
    #[arg(long, default_value_t = 587)]
    pub port: u16,
    /// none, starttls or tls.
    #[arg(long, default_value = "starttls")]
    pub security: String,
    /// Log in as this user; the password comes from HERALD_SMTP_PASSWORD or a prompt.
    #[arg(long)]
    pub user: Option<String>,
    /// With --security none: send AUTH although the password then travels
    /// unencrypted (refused otherwise), like a server entry's allow_plaintext_auth.
    #[arg(long)]
    pub allow_plaintext_auth: bool,
    /// plain, login or xoauth2 (the secret is then the access token).
    #[arg(long, default_value = "plain")]
    pub mechanism: String,
    /// A PEM file of CAs to trust instead of the system's.
    #[arg(long)]
    pub tls_ca_file: Option<PathBuf>,
    /// The certificate name to verify, for a server addressed by IP.
    #[arg(long)]
    pub tls_server_name: Option<String>,
    /// Do not verify the certificate (shown in the output).
    #[arg(long)]
    pub no_verify: bool,
    /// The name to give in EHLO.
    #[arg(long, default_value = "herald.localhost")]
    pub helo: String,
    /// With --to: ask whether the server would take MAIL FROM this address (nothing is sent).
    #[arg(long)]
    pub from: Option<String>,
    /// With --from: ask whether the server would take RCPT TO this address.
    #[arg(long)]
    pub to: Option<String>,
    /// CIDR ranges the server may be in although the built-in egress rules
    /// forbid them (loopback, link-local), as for `herald serve`: the check
    /// reaches only what the node's worker would.
    #[arg(long, env = "HERALD_EGRESS_ALLOW")]
    pub egress_allow: Option<String>,
    /// CIDR ranges the server may never be in, as for `herald serve`.
    #[arg(long, env = "HERALD_EGRESS_DENY")]
    pub egress_deny: Option<String>,
    /// Timeout of each step, e.g. 30s.
    #[arg(long, default_value = "30s")]
    pub timeout: String,
}

fn invalid(field: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("--{field} {e}")
}

/// The egress rules of the node, from the same flags and variables as `herald serve`.
fn egress(args: &SmtpCheckArgs) -> anyhow::Result<Egress> {
    let list = |flag: &str, value: &Option<String>| {
        Egress::parse_list(value.as_deref().unwrap_or_default()).map_err(|e| invalid(flag, e))
    };
    Ok(Egress::new(
        list("egress-allow", &args.egress_allow)?,
        list("egress-deny", &args.egress_deny)?,
    ))
}

/// Runs the check and prints each step; an error when a step failed.
///
/// The failing step's line already says what went wrong, so the error that
/// ends the command only names the step (and, when the egress rules refused
/// the server, how to allow it) instead of saying it all again.
pub async fn run(args: SmtpCheckArgs) -> anyhow::Result<()> {
    if args.from.is_some() != args.to.is_some() {
        bail!(
            "--from and --to go together: give both to ask whether the server would take that envelope, or neither"
        );
    }
    let egress = Arc::new(egress(&args)?);
    let timeout = crate::config::parse_duration(&args.timeout).context("--timeout")?;
    let ca_pem = match &args.tls_ca_file {
        Some(path) => Some(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        None => None,
    };
    let stored_mode = args.server.is_some();
    let target = Target {
        host: SmtpHost::parse(if stored_mode {
            "placeholder.invalid"
        } else {
            &args.host
        })
        .map_err(|e| invalid("host", e))?,
        port: Port::new(args.port.into()).map_err(|e| invalid("port", e))?,
        security: Security::parse(&args.security).map_err(|e| invalid("security", e))?,
        tls: TlsSettings {
            verify: !args.no_verify,
            ca_pem,
            server_name: args.tls_server_name.clone(),
        },
        helo_name: args.helo.clone(),
        timeouts: Timeouts {
            connect: timeout,
            command: timeout,
            data: timeout,
        },
        // The same rules as the node's worker: a check that succeeds here
        // must mean the worker may reach the server too.
        egress: Some(egress.clone()),
        allow_plaintext_auth: args.allow_plaintext_auth,
    };
    let credentials = match if stored_mode { &None } else { &args.user } {
        Some(user) => Some(Credentials {
            mechanism: Mechanism::parse(&args.mechanism).map_err(|e| invalid("mechanism", e))?,
            username: user.clone(),
            secret: secret()?,
        }),
        None => None,
    };
    if args.no_verify {
        println!("note: certificate verification is OFF for this check");
    }
    let (target, credentials) = match (&args.tenant, &args.server) {
        (Some(tenant), Some(server)) => stored(&args, tenant, server, timeout, egress).await?,
        _ => (target, credentials),
    };
    let tracer = Tracer::default();
    let result = async {
        let mut conn = Connection::open_traced(&target, credentials.as_ref(), &tracer).await?;
        if let (Some(from), Some(to)) = (&args.from, &args.to) {
            let envelope = Envelope {
                from: EmailAddress::parse(from).map_err(|e| invalid("from", e))?,
                to: vec![EmailAddress::parse(to).map_err(|e| invalid("to", e))?],
            };
            let replies = conn
                .check_envelope(&envelope)
                .await
                .inspect_err(|e| tracer.fail(e))?;
            if replies.iter().any(|r| !r.is_positive()) {
                conn.quit().await;
                bail!("the server refused the envelope; its reply is above");
            }
        }
        conn.quit().await;
        anyhow::Ok(())
    }
    .await;
    for step in tracer.steps() {
        let mark = if step.ok { "ok  " } else { "FAIL" };
        // Everything in a step may come from the server (its replies, its
        // certificate's names): escaped, so it cannot drive the terminal.
        let detail = step
            .detail
            .lines()
            .map(escape_unprintable)
            .collect::<Vec<_>>()
            .join("\n               ");
        println!(
            "{mark} {:<9} {:>5} ms  {detail}",
            step.step.as_str(),
            step.elapsed_ms
        );
    }
    result.map_err(|error| match error.downcast_ref::<SmtpError>() {
        Some(e) if matches!(e.kind, ErrorKind::EgressDenied(_)) => anyhow::anyhow!(
            "the egress rules refuse every address of the server; if the node may reach it, \
             allow its range with --egress-allow or HERALD_EGRESS_ALLOW (e.g. 192.0.2.0/24)"
        ),
        Some(e) => anyhow::anyhow!("the check failed at the {} step", e.step),
        None => anyhow::anyhow!("{}", escape_unprintable(&error.to_string())),
    })
}

/// The target and login of a stored server, its secret opened with the keyring.
async fn stored(
    args: &SmtpCheckArgs,
    tenant: &str,
    server: &str,
    timeout: std::time::Duration,
    egress: Arc<Egress>,
) -> anyhow::Result<(Target, Option<Credentials>)> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let serve = crate::config::ServeArgs {
        data_dir: args.data_dir.clone(),
        database_url: env("HERALD_DATABASE_URL"),
        ..Default::default()
    };
    let settings = serve.resolve()?;
    let store = settings.database.open().await?;
    let sealer = crate::keys::load(
        settings.master_key.as_ref(),
        &crate::config::key_file(&settings.data_dir),
    )?;
    let store = &*store;
    let tenant = store
        .tenant_by_slug(tenant)
        .await
        .context("no such tenant")?;
    let server_id = server.parse().map_err(|e| invalid("server", e))?;
    let server = store
        .server(tenant.id, server_id)
        .await
        .context("no such SMTP server in the tenant")?;
    let accounts = store.list_accounts(tenant.id, server.id).await?;
    let account = match &args.account {
        Some(id) => Some(
            accounts
                .into_iter()
                .find(|a| a.id.to_string() == *id)
                .context("no such account on the server")?,
        ),
        None => accounts.into_iter().next(),
    };
    let s = server.settings;
    let credentials = match account {
        Some(account) if account.oauth2.is_none() => match &account.sealed_secret {
            Some(sealed) => Some(Credentials {
                mechanism: account.mechanism,
                username: account.username,
                secret: sealer.open(sealed, &account.id.to_string())?,
            }),
            None => None,
        },
        _ => None,
    };
    let target = Target {
        host: s.host,
        port: s.port,
        security: s.security,
        tls: TlsSettings {
            verify: s.tls_verify,
            ca_pem: s.tls_ca_pem,
            server_name: s.tls_server_name.map(|h| h.to_string()),
        },
        helo_name: s
            .helo_name
            .map_or_else(|| args.helo.clone(), |h| h.ehlo_form()),
        timeouts: Timeouts {
            connect: timeout,
            command: timeout,
            data: timeout,
        },
        egress: Some(egress),
        allow_plaintext_auth: s.allow_plaintext_auth,
    };
    println!(
        "checking the stored server \"{}\" of tenant {} ({}:{})",
        // A tenant typed the name: it reaches the operator's terminal escaped too.
        escape_unprintable(&s.name),
        tenant.slug,
        target.host,
        target.port.get()
    );
    Ok((target, credentials))
}

/// The password from HERALD_SMTP_PASSWORD, or a prompt without echo.
fn secret() -> anyhow::Result<Secret> {
    if let Ok(password) = std::env::var("HERALD_SMTP_PASSWORD") {
        return Ok(Secret::new(password));
    }
    let password = rpassword::prompt_password("password: ").map_err(|e| {
        anyhow::anyhow!(
            "cannot read the password from a terminal ({e}); without one, give it in HERALD_SMTP_PASSWORD"
        )
    })?;
    Ok(Secret::new(password))
}
