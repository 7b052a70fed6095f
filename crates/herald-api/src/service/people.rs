//! The people of a tenant: create one, set the password they sign in to
//! the console with, and delete one.

use herald_core::timestamp::now_ms;
use herald_core::{EmailAddress, PersonId, PersonRole};
use herald_store::{Person, Tenant};
use serde_json::json;

use crate::routes::people::PersonBody;
use crate::routes::{Check, name};
use crate::{ApiError, AppState, Caller};

/// Creates a person of the tenant, and records it in the audit log.
pub async fn create_person(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    body: PersonBody,
) -> Result<Person, ApiError> {
    let mut check = Check::default();
    let name = check.take("name", name(&body.name));
    let email = check.take("email", EmailAddress::parse(&body.email));
    let role = check.take(
        "role",
        PersonRole::parse(body.role.as_deref().unwrap_or("member")),
    );
    check.finish()?;
    let (Some(name), Some(email), Some(role)) = (name, email, role) else {
        unreachable!("checked above")
    };
    let person = Person {
        id: PersonId::new(),
        tenant_id: tenant.id,
        name,
        email,
        role,
        created_at: now_ms(),
    };
    let person = state.store.create_person(tenant.id, person).await?;
    caller
        .audit_tenant(
            state,
            tenant.id,
            "person.create",
            person.id,
            json!({"email": person.email, "role": person.role}),
        )
        .await;
    Ok(person)
}

/// Sets the console password of a person of the tenant (stored as an argon2
/// hash) and ends the person's console sessions.
pub async fn set_person_password(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    person: PersonId,
    password: &str,
) -> Result<(), ApiError> {
    let password =
        crate::password::parse(password).map_err(|e| ApiError::field(e.at("password")))?;
    // Hashing is deliberately slow: keep it off the async workers.
    let hash = tokio::task::spawn_blocking(move || crate::password::hash(&password))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    state
        .store
        .set_person_password(tenant.id, person, hash)
        .await?;
    caller
        .audit_tenant(state, tenant.id, "person.set_password", person, json!({}))
        .await;
    Ok(())
}

/// Deletes a person of the tenant; their personal tokens go with them.
pub async fn delete_person(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    id: PersonId,
) -> Result<(), ApiError> {
    let deleted = state.store.delete_person(tenant.id, id);
    super::audited_removal(state, caller, tenant, "person.delete", id, deleted).await
}
