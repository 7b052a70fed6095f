//! A tenant's API tokens: create one (its value is returned once, never
//! stored) and revoke one. Personal tokens act as their person; service
//! tokens (no person) only send.

use herald_core::{Invalid, PersonId, PersonRole, Role, TokenId, token};
use herald_store::{NewToken, Tenant, TokenRecord};
use serde_json::json;

use crate::routes::people::TokenBody;
use crate::routes::{Check, name};
use crate::{ApiError, AppState, Caller};

/// A token just created: its record, and its value, which is never shown again.
pub struct CreatedToken {
    pub record: TokenRecord,
    /// The token itself; only its hash is stored.
    pub token: String,
}

/// The most a personal token of a person with this role may do.
fn token_role(person: PersonRole) -> Role {
    match person {
        PersonRole::TenantAdmin => Role::TenantAdmin,
        PersonRole::Member => Role::Sender,
    }
}

/// Creates a token of the tenant, and records it in the audit log. Without a
/// person it is a service token and may only send; a personal token may do at
/// most what its person may (the role defaults to that).
pub async fn create_token(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    body: TokenBody,
) -> Result<CreatedToken, ApiError> {
    let mut check = Check::default();
    let name = check.take("name", name(&body.name));
    let role = match body.role.as_deref().map(Role::parse) {
        Some(Ok(Role::Operator)) | Some(Err(_)) => {
            check.fail("role", "must be one of: tenant_admin, sender");
            None
        }
        Some(Ok(role)) => Some(role),
        None => None,
    };
    let person_id = check.opt(
        "person_id",
        body.person_id.as_deref(),
        str::parse::<PersonId>,
    );
    check.finish()?;
    let name = name.expect("checked above");
    let role = match person_id {
        Some(person_id) => {
            let person = match state.store.person(tenant.id, person_id).await {
                Err(herald_store::StoreError::NotFound) => {
                    return Err(ApiError::field(
                        Invalid::new("must name a person of this tenant").at("person_id"),
                    ));
                }
                other => other?,
            };
            let most = token_role(person.role);
            match role {
                Some(Role::TenantAdmin) if most != Role::TenantAdmin => {
                    return Err(ApiError::field(
                        Invalid::new(
                            "may be tenant_admin only for a person whose role is tenant_admin",
                        )
                        .at("role"),
                    ));
                }
                Some(role) => role,
                None => most,
            }
        }
        None => match role {
            Some(Role::Sender) | None => Role::Sender,
            Some(_) => {
                return Err(ApiError::field(
                    Invalid::new(
                        "tenant_admin needs a person_id: administrator tokens are personal",
                    )
                    .at("role"),
                ));
            }
        },
    };
    let secret = token::generate();
    let record = state
        .store
        .create_token(NewToken {
            id: TokenId::new(),
            tenant_id: Some(tenant.id),
            name,
            role,
            person_id,
            hash: token::hash(&secret),
        })
        .await?;
    caller
        .audit_tenant(
            state,
            tenant.id,
            "token.create",
            record.id,
            json!({"name": record.name, "role": record.role, "person_id": record.person_id}),
        )
        .await;
    Ok(CreatedToken {
        record,
        token: secret,
    })
}

/// Revokes a token of the tenant (it stops working at once), and records it
/// in the audit log.
pub async fn revoke_token(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: TokenId,
) -> Result<(), ApiError> {
    let revoked = state.store.revoke_token(tenant.id, id);
    super::audited_removal(state, caller, tenant, "token.revoke", id, revoked).await
}
