//! The PostgreSQL store's console sign-in: passwords and sessions.

use super::*;

#[async_trait]
impl Sessions for PgStore {
    async fn set_operator_password(
        &self,
        email: EmailAddress,
        password_hash: String,
    ) -> Result<()> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        let email = email.as_ref().to_lowercase();
        execute(
            &tx,
            sql::UPSERT_OPERATOR,
            &[
                &uuid::Uuid::now_v7().to_string(),
                &email,
                &password_hash,
                &now_ms(),
            ],
        )
        .await
        .map_err(pg)?;
        execute(&tx, sql::DELETE_OPERATOR_SESSIONS, &[&email])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn set_person_password(
        &self,
        tenant_id: TenantId,
        person_id: PersonId,
        password_hash: String,
    ) -> Result<()> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg)?;
        load_person(&tx, tenant_id, person_id, Lock::Update).await?;
        let person = person_id.to_string();
        execute(
            &tx,
            sql::SET_PERSON_PASSWORD,
            &[&password_hash, &person, &tenant_id.to_string()],
        )
        .await
        .map_err(pg)?;
        execute(&tx, sql::DELETE_PERSON_SESSIONS, &[&person])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn credentials(&self, email: &str) -> Result<Vec<Credential>> {
        let email = email.trim().to_lowercase();
        let c = client(&self.pool).await?;
        let mut found = query_map(
            &c,
            sql::OPERATOR_CREDENTIALS,
            &[&email],
            rows::operator_credential,
        )
        .await?;
        let persons = query_map(
            &c,
            sql::PERSON_CREDENTIALS,
            &[&email],
            rows::person_credential,
        )
        .await?;
        found.extend(persons);
        Ok(found)
    }

    async fn create_session(&self, session: NewSession) -> Result<()> {
        let c = client(&self.pool).await?;
        execute(&c, sql::DELETE_EXPIRED_SESSIONS, &[&session.created_at])
            .await
            .map_err(pg)?;
        let (operator, person) = rows::session_subject_values(&session.subject);
        execute(
            &c,
            sql::INSERT_SESSION,
            &[
                &session.hash,
                &session.id.to_string(),
                &operator,
                &person,
                &session.created_at,
                &session.expires_at,
            ],
        )
        .await
        .map_err(pg)
        .map(drop)
    }

    async fn session_by_hash(&self, hash: &str, now: i64) -> Result<Option<Session>> {
        let c = client(&self.pool).await?;
        let Some(row) = query_opt(&c, sql::SESSION_BY_HASH, &[&hash, &now]).await? else {
            return Ok(None);
        };
        let person = match get::<Option<String>>(&row, "person_id")? {
            Some(pid) => Some(query_found(&c, sql::SESSION_PERSON, &[&pid], person).await?),
            None => None,
        };
        rows::session(&row, person).map(Some)
    }

    async fn delete_session(&self, hash: &str) -> Result<()> {
        let c = client(&self.pool).await?;
        execute(&c, sql::DELETE_SESSION, &[&hash])
            .await
            .map_err(pg)
            .map(drop)
    }
}
