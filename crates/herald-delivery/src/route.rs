//! Which provider a tenant's mail goes through now, resolved into everything a send needs.

use herald_core::{EmailAddress, ProviderId, Sealer, TenantId};
use herald_smtp::{Credentials, Target, Timeouts, TlsSettings};
use herald_store::{ProviderConfig, Store, StoreError};

/// How a route delivers.
#[derive(Clone, Debug)]
pub enum Transport {
    /// The built-in capture mailbox: stored and readable through the API, sent nowhere.
    Capture,
    /// An SMTP server, with the account's login when it needs one.
    Smtp {
        target: Target,
        credentials: Option<Credentials>,
    },
}

/// A resolved provider: where mail goes and whose name it carries.
#[derive(Clone, Debug)]
pub struct Route {
    pub transport: Transport,
    pub from: EmailAddress,
    pub from_name: Option<String>,
    pub reply_to: Option<EmailAddress>,
    /// The tenant's provider; `None` for the system default.
    pub provider: Option<ProviderId>,
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
    fn route(&self) -> Route {
        Route {
            transport: self.transport.clone(),
            from: self.from.clone(),
            from_name: self.from_name.clone(),
            reply_to: None,
            provider: None,
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

/// Resolves the tenant's effective provider into a route.
pub async fn resolve(
    store: &dyn Store,
    sealer: &Sealer,
    default: &DefaultProvider,
    timeouts: Timeouts,
    tenant: TenantId,
) -> Result<Route, ResolveError> {
    let Some(config) = store.active_provider(tenant).await? else {
        return Ok(default.route());
    };
    let ProviderConfig {
        provider,
        server,
        account,
    } = config;
    let credentials = match account {
        Some(account) => {
            let sealed = account.sealed_secret.as_deref().ok_or_else(|| {
                ResolveError::Secret(
                    "no secret is stored (it is cleared when the server's host, port or security changes)".into(),
                )
            })?;
            let secret = sealer
                .open(sealed, &account.id.to_string())
                .map_err(|e| ResolveError::Secret(e.to_string()))?;
            Some(Credentials {
                mechanism: account.mechanism,
                username: account.username,
                secret,
            })
        }
        None => None,
    };
    let s = server.settings;
    let target = Target {
        helo_name: s
            .helo_name
            .unwrap_or_else(|| provider.settings.from_address.domain().to_owned()),
        host: s.host,
        port: s.port,
        security: s.security,
        tls: TlsSettings {
            verify: s.tls_verify,
            ca_pem: s.tls_ca_pem,
            server_name: s.tls_server_name,
        },
        timeouts,
    };
    Ok(Route {
        transport: Transport::Smtp {
            target,
            credentials,
        },
        from: provider.settings.from_address,
        from_name: provider.settings.from_name.map(|n| n.as_ref().to_owned()),
        reply_to: provider.settings.reply_to,
        provider: Some(provider.id),
    })
}

/// The fallback recipient of the tenant's effective provider, for messages submitted without one.
pub async fn fallback_recipient(
    store: &dyn Store,
    default: &DefaultProvider,
    tenant: TenantId,
) -> Result<Option<EmailAddress>, StoreError> {
    Ok(match store.active_provider(tenant).await? {
        Some(config) => config.provider.settings.fallback_recipient,
        None => default.fallback.clone(),
    })
}
