//! Who may submit mail over SMTP: a tenant's SMTP credentials (a username and
//! a random password, shown once, stored as a hash) and IP connectors (mail
//! from their networks needs no AUTH).

use herald_core::{Invalid, SmtpConnectorId, SmtpCredentialId, token};
use herald_store::ipnet::IpNet;
use herald_store::{NewSmtpCredential, SmtpConnector, SmtpCredential, Tenant};
use rand::Rng;
use serde_json::json;

use crate::routes::smtp::{ConnectorBody, CredentialBody};
use crate::routes::{Check, name};
use crate::{ApiError, AppState, Caller};

/// A credential just created, and its password, which is never shown again.
pub struct CreatedCredential {
    pub record: SmtpCredential,
    pub password: String,
}

/// The most networks one connector may hold.
const MAX_NETWORKS: usize = 50;

fn rate_limit(input: u32) -> Result<u32, Invalid> {
    if (1..=1_000_000).contains(&input) {
        Ok(input)
    } else {
        Err(Invalid::new(
            "must be 1 to 1000000 messages per minute, or null for no limit",
        ))
    }
}

/// A username the installation has not given out: the tenant's slug and
/// ten random letters and digits (AUTH names no tenant, so it must be unique).
fn new_username(tenant: &Tenant) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    let suffix: String = (0..10)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{}.{suffix}", tenant.slug.as_ref())
}

/// Creates an SMTP credential of the tenant, and records it in the audit log.
pub async fn create_smtp_credential(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    body: CredentialBody,
) -> Result<CreatedCredential, ApiError> {
    let mut check = Check::default();
    let name = check.take("name", name(&body.name));
    let limit = body
        .rate_limit_per_minute
        .and_then(|n| check.take("rate_limit_per_minute", rate_limit(n)));
    check.finish()?;
    let password = token::smtp_password();
    let record = state
        .store
        .create_smtp_credential(NewSmtpCredential {
            id: SmtpCredentialId::new(),
            tenant_id: tenant.id,
            name: name.expect("checked above"),
            username: new_username(tenant),
            password_hash: token::hash(&password),
            rate_limit_per_minute: limit,
        })
        .await?;
    caller
        .audit_tenant(
            state,
            tenant.id,
            "smtp_credential.create",
            record.id,
            json!({"name": record.name, "username": record.username}),
        )
        .await;
    Ok(CreatedCredential { record, password })
}

/// Revokes a credential of the tenant: the next AUTH with it fails.
pub async fn revoke_smtp_credential(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: SmtpCredentialId,
) -> Result<(), ApiError> {
    let revoked = state.store.revoke_smtp_credential(tenant.id, id);
    super::audited_removal(state, caller, tenant, "smtp_credential.revoke", id, revoked).await
}

/// One network of a connector: `192.0.2.0/24`, `2001:db8::/48`, or a single
/// address. Host bits must be zero, and a network so wide that it would make
/// an open relay of Herald is refused.
pub fn network(input: &str) -> Result<IpNet, Invalid> {
    let input = input.trim();
    let net: IpNet = match input.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match input.parse::<std::net::IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => {
                return Err(Invalid::new(
                    "must be an IPv4 or IPv6 network in CIDR notation, such as 192.0.2.0/24, or one address",
                ));
            }
        },
    };
    if let IpNet::V6(v6) = net {
        if v6.network().to_ipv4_mapped().is_some() {
            return Err(Invalid::new(
                "is an IPv4 network written as IPv6: write it as IPv4, as clients' addresses are compared",
            ));
        }
    }
    if net.trunc() != net {
        return Err(Invalid::new(format!(
            "has host bits set: the network is {}",
            net.trunc()
        )));
    }
    let narrowest = match net {
        IpNet::V4(_) => 8,
        IpNet::V6(_) => 32,
    };
    if net.prefix_len() < narrowest {
        return Err(Invalid::new(format!(
            "is too wide (a prefix of at least /{narrowest}): every address in it may send without authentication"
        )));
    }
    let address = net.network();
    if address.is_unspecified() || address.is_multicast() {
        return Err(Invalid::new(
            "is no network a client sends from (unspecified or multicast)",
        ));
    }
    Ok(net)
}

/// Creates an IP connector of the tenant, and records it in the audit log.
/// Networks that overlap another connector's are a conflict (409).
pub async fn create_smtp_connector(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    body: ConnectorBody,
) -> Result<SmtpConnector, ApiError> {
    let mut check = Check::default();
    let name = check.take("name", name(&body.name));
    let limit = body
        .rate_limit_per_minute
        .and_then(|n| check.take("rate_limit_per_minute", rate_limit(n)));
    if body.cidrs.is_empty() || body.cidrs.len() > MAX_NETWORKS {
        check.fail("cidrs", &format!("must hold 1 to {MAX_NETWORKS} networks"));
    }
    let cidrs: Vec<IpNet> = body
        .cidrs
        .iter()
        .enumerate()
        .filter_map(|(i, c)| check.take(&format!("cidrs[{i}]"), network(c)))
        .collect();
    for (i, net) in cidrs.iter().enumerate() {
        if let Some(earlier) = cidrs[..i]
            .iter()
            .find(|e| e.contains(&net.network()) || net.contains(&e.network()))
        {
            check.fail(
                &format!("cidrs[{i}]"),
                &format!("overlaps {earlier}, given before it"),
            );
        }
    }
    check.finish()?;
    let connector = state
        .store
        .create_smtp_connector(tenant.id, name.expect("checked above"), cidrs, limit)
        .await?;
    caller
        .audit_tenant(
            state,
            tenant.id,
            "smtp_connector.create",
            connector.id,
            json!({"name": connector.name, "cidrs": connector.cidrs}),
        )
        .await;
    Ok(connector)
}

/// Deletes a connector of the tenant: its networks need AUTH again at once.
pub async fn delete_smtp_connector(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: SmtpConnectorId,
) -> Result<(), ApiError> {
    let deleted = state.store.delete_smtp_connector(tenant.id, id);
    super::audited_removal(state, caller, tenant, "smtp_connector.delete", id, deleted).await
}
