//! Which provider a tenant's mail goes through now, resolved into everything a send needs.

use std::time::Duration;

use herald_core::{
    AccountId, EmailAddress, Mailbox, ProviderId, Sealer, Secret, SenderPolicy, SmtpHost, TenantId,
};
use std::sync::Arc;

use herald_smtp::{Credentials, Egress, Target, Timeouts, TlsSettings};
use herald_store::{DeliveryStore, OAuth2Client, ProviderConfig, StoreError};

use crate::pool::PoolLimits;

/// How a route logs in to its server.
#[derive(Clone, Debug)]
pub enum Login {
    /// No AUTH: the server trusts the sender's address (a relay or a connector).
    None,
    /// A stored password, or a stored XOAUTH2 access token.
    Stored(Credentials),
    /// XOAUTH2 with a token obtained from OAuth2 client credentials.
    OAuth2 {
        account: AccountId,
        username: String,
        client: OAuth2Client,
        client_secret: Secret,
    },
}

/// How a route delivers.
#[derive(Clone, Debug)]
pub enum Transport {
    /// The built-in capture mailbox: stored and readable through the API, sent nowhere.
    Capture,
    /// An SMTP server.
    Smtp {
        target: Box<Target>,
        login: Login,
        limits: PoolLimits,
        /// Names the pool: routes with the same key share connections.
        pool_key: String,
    },
}

/// A resolved provider: where mail goes and whose name it carries.
#[derive(Clone, Debug)]
pub struct Route {
    pub transport: Transport,
    pub from: EmailAddress,
    pub from_name: Option<String>,
    pub reply_to: Option<Mailbox>,
    /// The tenant's provider; `None` for the system default.
    pub provider: Option<ProviderId>,
    /// The version of the provider's configuration: its newest change, in ms.
    pub config_version: Option<i64>,
    /// How From is chosen for mail sent on behalf of a person.
    pub sender_policy: SenderPolicy,
    /// What is weak about the server entry (see `ServerSettings::warnings`),
    /// told in a test message's diagnosis.
    pub warnings: Vec<String>,
}

impl Route {
    /// How attempts name the server: `host:port`, or `capture`.
    pub fn server_label(&self) -> String {
        match &self.transport {
            Transport::Capture => "capture".into(),
            Transport::Smtp { target, .. } => format!("{}:{}", target.host, target.port.get()),
        }
    }
}

/// The system default provider, used by every tenant that has not chosen its own.
#[derive(Clone, Debug)]
pub struct DefaultProvider {
    /// The capture mailbox, or the operator's relay.
    pub transport: Transport,
    pub from: EmailAddress,
    pub from_name: Option<String>,
    /// Where messages without recipients go.
    pub fallback: Option<EmailAddress>,
}

impl DefaultProvider {
    /// The default provider as an operator's relay.
    pub fn relay(target: Target, credentials: Option<Credentials>) -> Transport {
        Transport::Smtp {
            target: Box::new(target),
            login: credentials.map_or(Login::None, Login::Stored),
            limits: PoolLimits {
                max_connections: 16,
                ..PoolLimits::default()
            },
            pool_key: "system-default".into(),
        }
    }

    fn route(&self) -> Route {
        Route {
            transport: self.transport.clone(),
            from: self.from.clone(),
            from_name: self.from_name.clone(),
            reply_to: None,
            provider: None,
            config_version: None,
            sender_policy: SenderPolicy::Fixed,
            warnings: Vec::new(),
        }
    }
}

/// Why a tenant's provider cannot be used right now.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The account's secret cannot be opened: a missing key, or one cleared by a server change.
    #[error("the SMTP account's secret is unusable: {0}")]
    Secret(String),
}

/// Loads a provider with its server and account: the tenant's active one, or
/// (for a test message) the one named.
pub async fn load_config(
    store: &dyn DeliveryStore,
    tenant: TenantId,
    provider: Option<ProviderId>,
) -> Result<Option<ProviderConfig>, StoreError> {
    match provider {
        Some(provider) => store.provider_config(tenant, provider).await.map(Some),
        None => store.active_provider(tenant).await,
    }
}

/// Turns a provider's configuration (or the system default, for `None`) into a
/// route, opening the account's secret: this happens for each send, so a
/// secret is never kept open longer than one delivery.
pub fn route(
    config: Option<&ProviderConfig>,
    sealer: &Sealer,
    default: &DefaultProvider,
    timeouts: Timeouts,
    egress: &Arc<Egress>,
) -> Result<Route, ResolveError> {
    let Some(ProviderConfig {
        provider,
        server,
        account,
    }) = config
    else {
        return Ok(default.route());
    };
    let s = &server.settings;
    let login = match account {
        None => Login::None,
        Some(account) => match &account.sealed_secret {
            None if s.requires_auth => {
                return Err(ResolveError::Secret(
                    "no secret is stored (it is cleared when the server's host, port or security changes)".into(),
                ));
            }
            None => Login::None,
            Some(sealed) => {
                let secret = sealer
                    .open(sealed, &account.id.to_string())
                    .map_err(|e| ResolveError::Secret(e.to_string()))?;
                match &account.oauth2 {
                    Some(client) => Login::OAuth2 {
                        account: account.id,
                        username: account.username.clone(),
                        client: client.clone(),
                        client_secret: secret,
                    },
                    None => Login::Stored(Credentials {
                        mechanism: account.mechanism,
                        username: account.username.clone(),
                        secret,
                    }),
                }
            }
        },
    };
    let timeouts = match s.command_timeout_secs {
        Some(secs) => {
            let command = Duration::from_secs(secs.into());
            Timeouts {
                connect: command.min(timeouts.connect),
                command,
                data: command * 3,
            }
        }
        None => timeouts,
    };
    let limits = PoolLimits {
        max_connections: s.max_connections,
        max_messages_per_connection: s.max_messages_per_connection,
        idle_timeout: Duration::from_secs(s.idle_timeout_secs.into()),
        rate_per_minute: s.rate_limit_per_minute,
    };
    // A changed server entry (updated_at) or another account gets a new pool,
    // so no connection opened under old settings is reused.
    let pool_key = format!(
        "{}@{}/{}",
        server.id,
        server.updated_at,
        account
            .as_ref()
            .map(|a| a.id.to_string())
            .unwrap_or_default()
    );
    let config_version = [provider.updated_at, server.updated_at]
        .into_iter()
        .chain(account.as_ref().map(|a| a.created_at))
        .max();
    let target = Target {
        helo_name: s.helo_name.as_ref().map_or_else(
            || provider.settings.from_address.domain().to_owned(),
            SmtpHost::ehlo_form,
        ),
        host: s.host.clone(),
        port: s.port,
        security: s.security,
        tls: TlsSettings {
            verify: s.tls_verify,
            ca_pem: s.tls_ca_pem.clone(),
            server_name: s.tls_server_name.as_ref().map(ToString::to_string),
        },
        timeouts,
        egress: Some(egress.clone()),
        allow_plaintext_auth: s.allow_plaintext_auth,
    };
    Ok(Route {
        transport: Transport::Smtp {
            target: Box::new(target),
            login,
            limits,
            pool_key,
        },
        from: provider.settings.from_address.clone(),
        from_name: provider
            .settings
            .from_name
            .as_ref()
            .map(|n| n.as_ref().to_owned()),
        reply_to: provider.settings.reply_to.clone(),
        provider: Some(provider.id),
        config_version,
        sender_policy: provider.settings.sender_policy,
        warnings: s.warnings().into_iter().map(|w| w.message).collect(),
    })
}

/// The fallback recipient of the tenant's effective provider, for messages submitted without one.
pub async fn fallback_recipient(
    store: &dyn DeliveryStore,
    default: &DefaultProvider,
    tenant: TenantId,
) -> Result<Option<EmailAddress>, StoreError> {
    Ok(match store.active_provider(tenant).await? {
        Some(config) => config.provider.settings.fallback_recipient,
        None => default.fallback.clone(),
    })
}
