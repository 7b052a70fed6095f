//! Accounts on a tenant's SMTP servers: create (sealing the secret, under the
//! credential storage entitlement) and delete.

use herald_core::{AccountId, Invalid, Mechanism, PersonId, ServerId};
use herald_store::{NewAccount, OAuth2Client, SmtpAccount, Tenant};
use serde_json::json;

use crate::routes::Check;
use crate::routes::servers::{AccountBody, printable, secret, token_url};
use crate::{ApiError, AppState, Caller};

/// Creates an account on a server of the tenant, sealing its secret; storing
/// a secret needs the tenant's credential storage entitlement.
pub async fn create_account(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    server_id: ServerId,
    body: AccountBody,
) -> Result<SmtpAccount, ApiError> {
    state.store.server(tenant.id, server_id).await?;
    let mut check = Check::default();
    let username = body.username.trim().to_owned();
    if username.is_empty() || username.len() > 320 || username.contains(['\r', '\n', '\0']) {
        check.fail(
            "username",
            "must be 1 to 320 characters without CR, LF or NUL",
        );
    }
    let mechanism = check.take(
        "mechanism",
        Mechanism::parse(body.mechanism.as_deref().unwrap_or("plain")),
    );
    let mut oauth2 = None;
    let secret = match (mechanism, body.oauth2) {
        (Some(Mechanism::Xoauth2), Some(o)) => {
            if body.password.is_some() || body.access_token.is_some() {
                check.fail("oauth2", "cannot be combined with password or access_token");
            }
            let token_url = check.take("oauth2.token_url", token_url(&o.token_url, &state.egress));
            let client_id = check.take("oauth2.client_id", printable(&o.client_id));
            let scope = check.opt("oauth2.scope", o.scope.as_deref(), printable);
            if let (Some(token_url), Some(client_id)) = (token_url, client_id) {
                oauth2 = Some(OAuth2Client {
                    token_url,
                    client_id,
                    scope,
                });
            }
            check.take("oauth2.client_secret", secret(&o.client_secret))
        }
        (Some(Mechanism::Xoauth2), None) => {
            if body.password.is_some() {
                check.fail(
                    "password",
                    "is not used by xoauth2; give access_token or oauth2",
                );
            }
            check.opt("access_token", body.access_token.as_deref(), secret)
        }
        (Some(_), oauth) => {
            if body.access_token.is_some() {
                check.fail("access_token", "is only used by the xoauth2 mechanism");
            }
            if oauth.is_some() {
                check.fail("oauth2", "is only used by the xoauth2 mechanism");
            }
            check.opt("password", body.password.as_deref(), secret)
        }
        (None, _) => None,
    };
    let person_id = check.opt(
        "person_id",
        body.person_id.as_deref(),
        str::parse::<PersonId>,
    );
    check.finish()?;
    let mechanism = mechanism.expect("checked above");
    // The account is the mailbox of a person: the one named, or the caller's own.
    let Some(person_id) = person_id.or(caller.0.person_id) else {
        return Err(ApiError::field(
            Invalid::new("is required: this token acts for no person, so name the person whose mailbox the account is")
                .at("person_id"),
        ));
    };
    if secret.is_some() && !tenant.credential_storage {
        return Err(ApiError::NotEntitled);
    }
    let account_id = AccountId::new();
    let sealed_secret = secret.map(|s| state.sealer.seal(&s, &account_id.to_string()));
    let account = NewAccount {
        id: account_id,
        server_id,
        username,
        mechanism,
        sealed_secret,
        oauth2,
        person_id: Some(person_id),
    };
    let account = state.store.create_account(tenant.id, account).await?;
    caller
        .audit_tenant(state, tenant.id, "smtp_account.create", account.id, // What was stored, never the secret itself.
            json!({"server_id": server_id, "username": account.username, "mechanism": account.mechanism,
                   "person_id": person_id, "secret_set": account.secret_set, "oauth2": account.oauth2}))
        .await;
    Ok(account)
}

/// Deletes an account of a server; a conflict while a provider uses it.
pub async fn delete_account(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    server: ServerId,
    account: AccountId,
) -> Result<(), ApiError> {
    state
        .store
        .delete_account(tenant.id, server, account)
        .await?;
    caller
        .audit_tenant(state, tenant.id, "smtp_account.delete", account, json!({}))
        .await;
    Ok(())
}
