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
            "INSERT INTO operators (id, email, password_hash, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (email) DO UPDATE SET password_hash = excluded.password_hash, \
             updated_at = excluded.updated_at",
            &[
                &uuid::Uuid::now_v7().to_string(),
                &email,
                &password_hash,
                &now_ms(),
            ],
        )
        .await
        .map_err(pg)?;
        execute(
            &tx,
            "DELETE FROM sessions WHERE operator_email = $1",
            &[&email],
        )
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
            "UPDATE persons SET password_hash = $1 WHERE id = $2",
            &[&password_hash, &person],
        )
        .await
        .map_err(pg)?;
        execute(&tx, "DELETE FROM sessions WHERE person_id = $1", &[&person])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn credentials(&self, email: &str) -> Result<Vec<Credential>> {
        let email = email.trim().to_lowercase();
        let c = client(&self.pool).await?;
        let mut found = Vec::new();
        for row in query(
            &c,
            "SELECT email, password_hash FROM operators WHERE email = $1",
            &[&email],
        )
        .await?
        {
            found.push(Credential {
                operator_email: Some(get(&row, "email")?),
                person: None,
                password_hash: get(&row, "password_hash")?,
            });
        }
        for row in query(
            &c,
            "SELECT p.id, p.tenant_id, p.name, p.email, p.role, p.created_at, p.password_hash \
             FROM persons p JOIN tenants t ON t.id = p.tenant_id \
             WHERE lower(p.email) = $1 AND p.password_hash IS NOT NULL \
             ORDER BY t.created_at, t.id",
            &[&email],
        )
        .await?
        {
            found.push(Credential {
                operator_email: None,
                person: Some(person(&row)?),
                password_hash: get(&row, "password_hash")?,
            });
        }
        Ok(found)
    }

    async fn create_session(&self, session: NewSession) -> Result<()> {
        let c = client(&self.pool).await?;
        execute(
            &c,
            "DELETE FROM sessions WHERE expires_at < $1",
            &[&session.created_at],
        )
        .await
        .map_err(pg)?;
        let (operator, person) = match &session.subject {
            SessionSubject::Operator(email) => (Some(email.to_lowercase()), None),
            SessionSubject::Person(id) => (None, Some(id.to_string())),
        };
        execute(
            &c,
            "INSERT INTO sessions (hash, id, operator_email, person_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
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
        let Some(row) = query_opt(
            &c,
            "SELECT id, operator_email, person_id, created_at, expires_at \
             FROM sessions WHERE hash = $1 AND expires_at >= $2",
            &[&hash, &now],
        )
        .await?
        else {
            return Ok(None);
        };
        let person_id: Option<String> = get(&row, "person_id")?;
        let person = match person_id {
            Some(pid) => {
                let found = query_opt(
                    &c,
                    &format!("SELECT {PERSON_COLUMNS} FROM persons WHERE id = $1"),
                    &[&pid],
                )
                .await?
                .ok_or(StoreError::NotFound)?;
                Some(person(&found)?)
            }
            None => None,
        };
        Ok(Some(Session {
            id: id(get(&row, "id")?)?,
            operator_email: get(&row, "operator_email")?,
            person,
            created_at: get(&row, "created_at")?,
            expires_at: get(&row, "expires_at")?,
        }))
    }

    async fn delete_session(&self, hash: &str) -> Result<()> {
        let c = client(&self.pool).await?;
        execute(&c, "DELETE FROM sessions WHERE hash = $1", &[&hash])
            .await
            .map_err(pg)
            .map(drop)
    }
}
