//! SMTP servers and their accounts. Secrets are write-only: sealed on arrival, never returned.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use std::net::IpAddr;

use herald_core::{
    AccountId, EndpointUrl, GatewayId, Invalid, Port, Secret, Security, ServerId, SmtpHost,
};
use herald_smtp::Egress;
use herald_store::{ServerSettings, SmtpAccount, SmtpServer, Warning};
use serde::{Deserialize, Serialize};
use url::Host;

use super::{Check, Id, name, path_id};
use crate::body::Body;
use crate::gate::{Authorised, TenantAdmin};
use crate::openapi::{AccountPath, ObjectPath, TenantPath, answers};
use crate::service::{
    create_account, create_server, delete_account, delete_server, update_server,
    warnings_when_saved,
};
use crate::{ApiError, AppState};

/// The OpenAPI paths of this module's routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    create,
    list,
    show,
    update,
    remove,
    post_account,
    list_accounts,
    show_account,
    remove_account
))]
pub(crate) struct Api;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{tenant}/smtp-servers", post(create).get(list))
        .route(
            "/v1/tenants/{tenant}/smtp-servers/{id}",
            get(show).patch(update).delete(remove),
        )
        .route(
            "/v1/tenants/{tenant}/smtp-servers/{id}/accounts",
            post(post_account).get(list_accounts),
        )
        .route(
            "/v1/tenants/{tenant}/smtp-servers/{id}/accounts/{account}",
            get(show_account).delete(remove_account),
        )
}

/// The fields of a server; all optional so the same shape serves create and PATCH.
/// For PATCH, an empty string clears `tls_ca_pem`, `tls_server_name`, `helo_name` or `gateway_id`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerBody {
    pub name: Option<String>,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub security: Option<String>,
    pub requires_auth: Option<bool>,
    /// Lets AUTH go over a session without TLS (`security: none`); off by default.
    pub allow_plaintext_auth: Option<bool>,
    pub tls_verify: Option<bool>,
    pub tls_ca_pem: Option<String>,
    pub tls_server_name: Option<String>,
    pub helo_name: Option<String>,
    pub max_connections: Option<i64>,
    pub max_messages_per_connection: Option<i64>,
    pub idle_timeout_secs: Option<i64>,
    /// 0 removes the limit.
    pub rate_limit_per_minute: Option<i64>,
    /// 0 returns to the node's default.
    pub command_timeout_secs: Option<i64>,
    /// The id of the tenant's gateway that delivers this server's mail from
    /// inside the tenant's network; absent or empty for delivery from Herald.
    /// Changing it clears the accounts' stored secrets, as a new host does.
    pub gateway_id: Option<String>,
}

/// A whole number within `range`.
fn within(value: i64, range: std::ops::RangeInclusive<i64>) -> Result<u32, Invalid> {
    if range.contains(&value) {
        Ok(value as u32)
    } else {
        Err(Invalid::new(format!(
            "must be from {} to {}",
            range.start(),
            range.end()
        )))
    }
}

/// A limit within `range` where 0 means none.
fn limit(
    check: &mut Check,
    field: &str,
    given: Option<i64>,
    base: Option<u32>,
    range: std::ops::RangeInclusive<i64>,
) -> Option<u32> {
    match given {
        Some(0) => None,
        Some(n) => check.take(
            field,
            within(n, range).map_err(|e| Invalid::new(format!("{e}, or 0 for none"))),
        ),
        None => base,
    }
}

/// Whether the certificate is verified. Without TLS (`security: none`) there
/// is no certificate, so it is off whatever was asked, and shown so; leaving
/// `none` without a word turns it back on rather than keeping that `false`.
fn tls_verify(security: Security, given: Option<bool>, base: Option<&ServerSettings>) -> bool {
    if security == Security::None {
        return false;
    }
    given
        .or(base
            .filter(|b| b.security != Security::None)
            .map(|b| b.tls_verify))
        .unwrap_or(true)
}

impl ServerBody {
    /// Validates the body on top of `base` (the stored settings for PATCH).
    pub(crate) fn settings(
        self,
        base: Option<&ServerSettings>,
    ) -> Result<ServerSettings, ApiError> {
        let mut check = Check::default();
        let name = check.required(
            "name",
            self.name.as_deref(),
            base.map(|b| b.name.clone()),
            name,
        );
        let host = check.required(
            "host",
            self.host.as_deref(),
            base.map(|b| b.host.clone()),
            SmtpHost::parse,
        );
        let port = check.required("port", self.port, base.map(|b| b.port), Port::new);
        // Without a word from the administrator, 465 means implicit TLS and
        // every other port STARTTLS, which never falls back to plaintext.
        let security = match (self.security, base) {
            (Some(s), _) => check.take("security", Security::parse(&s)),
            (None, Some(b)) => Some(b.security),
            (None, None) => Some(if port.map(Port::get) == Some(465) {
                Security::Tls
            } else {
                Security::StartTls
            }),
        };
        let tls_ca_pem = check.clearable(
            "tls_ca_pem",
            self.tls_ca_pem,
            base.and_then(|b| b.tls_ca_pem.as_ref()),
            |pem| {
                herald_smtp::validate_ca_pem(pem)
                    .map(|_| pem.to_owned())
                    .map_err(Invalid::new)
            },
        );
        let tls_server_name = check.clearable(
            "tls_server_name",
            self.tls_server_name,
            base.and_then(|b| b.tls_server_name.as_ref()),
            SmtpHost::parse,
        );
        let helo_name = check.clearable(
            "helo_name",
            self.helo_name,
            base.and_then(|b| b.helo_name.as_ref()),
            SmtpHost::parse,
        );
        let mut number =
            |field: &str, given: Option<i64>, base: Option<u32>, default: u32, range| match given {
                Some(n) => check.take(field, within(n, range)).unwrap_or(default),
                None => base.unwrap_or(default),
            };
        let max_connections = number(
            "max_connections",
            self.max_connections,
            base.map(|b| b.max_connections),
            4,
            1..=100,
        );
        let max_messages_per_connection = number(
            "max_messages_per_connection",
            self.max_messages_per_connection,
            base.map(|b| b.max_messages_per_connection),
            100,
            1..=100_000,
        );
        let idle_timeout_secs = number(
            "idle_timeout_secs",
            self.idle_timeout_secs,
            base.map(|b| b.idle_timeout_secs),
            30,
            1..=3600,
        );
        let rate_limit_per_minute = limit(
            &mut check,
            "rate_limit_per_minute",
            self.rate_limit_per_minute,
            base.and_then(|b| b.rate_limit_per_minute),
            1..=1_000_000,
        );
        let command_timeout_secs = limit(
            &mut check,
            "command_timeout_secs",
            self.command_timeout_secs,
            base.and_then(|b| b.command_timeout_secs),
            1..=600,
        );
        // Whether the gateway is the tenant's is the store's to say, where it is loaded.
        let gateway_id = check.clearable(
            "gateway_id",
            self.gateway_id,
            base.and_then(|b| b.gateway_id.as_ref()),
            |id| id.trim().parse::<GatewayId>(),
        );
        check.finish()?;
        let (Some(name), Some(host), Some(port), Some(security)) = (name, host, port, security)
        else {
            unreachable!("checked above")
        };
        Ok(ServerSettings {
            name,
            host,
            port,
            security,
            requires_auth: self
                .requires_auth
                .or(base.map(|b| b.requires_auth))
                .unwrap_or(false),
            allow_plaintext_auth: self
                .allow_plaintext_auth
                .or(base.map(|b| b.allow_plaintext_auth))
                .unwrap_or(false),
            tls_verify: tls_verify(security, self.tls_verify, base),
            tls_ca_pem,
            tls_server_name,
            helo_name,
            max_connections,
            max_messages_per_connection,
            idle_timeout_secs,
            rate_limit_per_minute,
            command_timeout_secs,
            gateway_id,
        })
    }
}

/// An SMTP server as the API answers it: the stored entry and what is weak about it.
#[derive(Serialize)]
pub struct ServerAnswer {
    #[serde(flatten)]
    pub server: SmtpServer,
    /// What the administrator should know: a password that would travel
    /// unencrypted, a certificate that is not checked, and (in the answer to
    /// a save) a host the egress guard refuses.
    pub warnings: Vec<Warning>,
}

impl ServerAnswer {
    /// The answer to a create or a change: the settings' warnings, and
    /// whether the egress guard refuses the host as it resolves now.
    async fn saved(state: &AppState, server: SmtpServer) -> ServerAnswer {
        ServerAnswer {
            warnings: warnings_when_saved(state, &server.settings).await,
            server,
        }
    }
}

impl From<SmtpServer> for ServerAnswer {
    fn from(server: SmtpServer) -> Self {
        ServerAnswer {
            warnings: server.settings.warnings(),
            server,
        }
    }
}

/// Creates an SMTP server; `warnings` says what is weak about it.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/smtp-servers", tag = "servers", params(TenantPath),
    request_body = ServerBody,
    responses((status = 201, description = "The server", body = answers::SmtpServer)))]
async fn create(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    body: Body<ServerBody>,
) -> Result<(StatusCode, Json<ServerAnswer>), ApiError> {
    let server = create_server(&state, &caller, &tenant, body.parse()?).await?;
    Ok((
        StatusCode::CREATED,
        Json(ServerAnswer::saved(&state, server).await),
    ))
}

/// Lists the tenant's SMTP servers.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/smtp-servers", tag = "servers", params(TenantPath),
    responses((status = 200, description = "The servers", body = Vec<answers::SmtpServer>)))]
async fn list(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<TenantAdmin>,
) -> Result<Json<Vec<ServerAnswer>>, ApiError> {
    let servers = state.store.list_servers(tenant.id).await?;
    Ok(Json(servers.into_iter().map(ServerAnswer::from).collect()))
}

/// One SMTP server.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/smtp-servers/{id}", tag = "servers", params(ObjectPath),
    responses((status = 200, description = "The server", body = answers::SmtpServer)))]
async fn show(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<TenantAdmin>,
    Id(id): Id<ServerId>,
) -> Result<Json<ServerAnswer>, ApiError> {
    let server = state.store.server(tenant.id, id).await?;
    Ok(Json(server.into()))
}

/// Changes an SMTP server: absent fields keep their value.
///
/// A change of destination or a weaker trust clears its accounts' secrets.
#[utoipa::path(patch, path = "/v1/tenants/{tenant}/smtp-servers/{id}", tag = "servers", params(ObjectPath),
    request_body = ServerBody,
    responses((status = 200, description = "The server", body = answers::SmtpServer)))]
async fn update(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    Id(id): Id<ServerId>,
    body: Body<ServerBody>,
) -> Result<Json<ServerAnswer>, ApiError> {
    let body = body.parse()?;
    let server = update_server(&state, &caller, &tenant, id, body).await?;
    Ok(Json(ServerAnswer::saved(&state, server).await))
}

handlers! {
    /// Deletes an SMTP server no provider uses.
    #[utoipa::path(delete, path = "/v1/tenants/{tenant}/smtp-servers/{id}", tag = "servers", params(ObjectPath),
        responses((status = 204, description = "Deleted")))]
    async fn remove(Authorised<TenantAdmin>, Id<ServerId>) -> Deleted = delete_server;
}

/// An SMTP account to create; the secret is one of `password`, `access_token` or `oauth2.client_secret`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountBody {
    pub username: String,
    pub mechanism: Option<String>,
    pub password: Option<String>,
    pub access_token: Option<String>,
    #[serde(default, deserialize_with = "crate::body::optional_object")]
    pub oauth2: Option<OAuth2Body>,
    pub person_id: Option<String>,
}

/// OAuth2 client credentials for XOAUTH2 (Microsoft 365, Google).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Body {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub scope: Option<String>,
}

/// A token endpoint: an https URL (parsed as a client would, so userinfo and
/// fragments are refused), or plain http where the operator's --egress-allow
/// can cover it. The egress policy is judged here as far as it can be (an IP
/// literal); the fetch judges it again on the addresses it connects to.
pub(crate) fn token_url(input: &str, egress: &Egress) -> Result<String, Invalid> {
    let url = EndpointUrl::parse(input)?;
    let literal: Option<IpAddr> = match url.host() {
        Host::Ipv4(v4) => Some(v4.into()),
        Host::Ipv6(v6) => Some(v6.into()),
        Host::Domain(_) => None,
    };
    if literal.is_some_and(|ip| !egress.permits(ip)) {
        return Err(Invalid::new(
            "must not point at an address this installation's egress policy forbids",
        ));
    }
    let plain_http_allowed = match literal {
        Some(ip) => egress.allows(ip),
        None => egress.has_allow_list(),
    };
    if !url.is_https() && !plain_http_allowed {
        return Err(Invalid::new(
            "must be an https:// URL (plain http:// only to addresses in the operator's --egress-allow)",
        ));
    }
    Ok(url.as_str().to_owned())
}

/// A short printable value such as a client id or a scope.
pub(crate) fn printable(input: &str) -> Result<String, Invalid> {
    if input.is_empty() || input.len() > 1024 || input.chars().any(char::is_control) {
        return Err(Invalid::new(
            "must be 1 to 1024 characters without control characters",
        ));
    }
    Ok(input.to_owned())
}

/// A secret must survive SMTP AUTH intact: no line breaks, no NUL (PLAIN's separator).
pub(crate) fn secret(input: &str) -> Result<Secret, Invalid> {
    if input.is_empty() || input.len() > 8192 || input.contains(['\r', '\n', '\0']) {
        return Err(Invalid::new(
            "must be 1 to 8192 characters without CR, LF or NUL",
        ));
    }
    Ok(Secret::new(input))
}

/// Creates an account on an SMTP server; its secret is sealed and never returned.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/smtp-servers/{id}/accounts", tag = "servers", params(ObjectPath),
    request_body = AccountBody,
    responses((status = 201, description = "The account", body = answers::SmtpAccount)))]
async fn post_account(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    Id(server): Id<ServerId>,
    body: Body<AccountBody>,
) -> Result<(StatusCode, Json<SmtpAccount>), ApiError> {
    let body = body.parse()?;
    let account = create_account(&state, &caller, &tenant, server, body).await?;
    Ok((StatusCode::CREATED, Json(account)))
}

handlers! {
    /// Lists a server's accounts.
    #[utoipa::path(get, path = "/v1/tenants/{tenant}/smtp-servers/{id}/accounts", tag = "servers", params(ObjectPath),
        responses((status = 200, description = "The accounts", body = Vec<answers::SmtpAccount>)))]
    async fn list_accounts(Authorised<TenantAdmin>, Id<ServerId>) -> Vec<SmtpAccount> = store.list_accounts;
}

/// One account.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/smtp-servers/{id}/accounts/{account}", tag = "servers", params(AccountPath),
    responses((status = 200, description = "The account", body = answers::SmtpAccount)))]
async fn show_account(
    State(state): State<AppState>,
    Authorised { tenant, .. }: Authorised<TenantAdmin>,
    Path((_, id, account)): Path<(String, String, String)>,
) -> Result<Json<SmtpAccount>, ApiError> {
    let account = state
        .store
        .account(
            tenant.id,
            path_id(&id, "SMTP server")?,
            path_id(&account, "SMTP account")?,
        )
        .await?;
    Ok(Json(account))
}

/// Deletes an account no provider uses.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/smtp-servers/{id}/accounts/{account}", tag = "servers", params(AccountPath),
    responses((status = 204, description = "Deleted")))]
async fn remove_account(
    State(state): State<AppState>,
    Authorised { caller, tenant, .. }: Authorised<TenantAdmin>,
    Path((_, id, account)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let account: AccountId = path_id(&account, "SMTP account")?;
    let server: ServerId = path_id(&id, "SMTP server")?;
    delete_account(&state, &caller, &tenant, server, account).await?;
    Ok(StatusCode::NO_CONTENT)
}
