//! The SQLite store's console sign-in: passwords and sessions.

use super::*;

#[async_trait]
impl Sessions for SqliteStore {
    async fn set_operator_password(
        &self,
        email: EmailAddress,
        password_hash: String,
    ) -> Result<()> {
        self.db
            .write(move |c| {
                let email = email.as_ref().to_lowercase();
                c.execute(
                    "INSERT INTO operators (id, email, password_hash, updated_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (email) DO UPDATE SET password_hash = excluded.password_hash, \
                     updated_at = excluded.updated_at",
                    params![uuid::Uuid::now_v7().to_string(), email, password_hash, now_ms()],
                )
                .map_err(sql)?;
                c.execute("DELETE FROM sessions WHERE operator_email = ?1", [email])
                    .map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn set_person_password(
        &self,
        tenant_id: TenantId,
        person_id: PersonId,
        password_hash: String,
    ) -> Result<()> {
        self.db
            .write(move |c| {
                load_person(c, tenant_id, person_id)?;
                let person = person_id.to_string();
                c.execute(
                    "UPDATE persons SET password_hash = ?1 WHERE id = ?2 AND tenant_id = ?3",
                    params![password_hash, person, tenant_id.to_string()],
                )
                .map_err(sql)?;
                c.execute("DELETE FROM sessions WHERE person_id = ?1", [person])
                    .map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn credentials(&self, email: &str) -> Result<Vec<Credential>> {
        let email = email.trim().to_lowercase();
        self.db
            .read(move |c| {
                let mut found: Vec<Credential> = list(
                    c,
                    "SELECT email, password_hash FROM operators WHERE email = ?1",
                    [&email],
                    |r| {
                        Ok(Credential {
                            operator_email: Some(r.get(0)?),
                            person: None,
                            password_hash: r.get(1)?,
                        })
                    },
                )?;
                let persons = list(
                    c,
                    "SELECT p.id, p.tenant_id, p.name, p.email, p.role, p.created_at, p.password_hash \
                     FROM persons p JOIN tenants t ON t.id = p.tenant_id \
                     WHERE lower(p.email) = ?1 AND p.password_hash IS NOT NULL \
                     ORDER BY t.created_at, t.id",
                    [&email],
                    |r| Ok((person_row(r)?, r.get::<_, String>(6)?)),
                )?;
                for (person, password_hash) in persons {
                    found.push(Credential {
                        operator_email: None,
                        person: Some(person?),
                        password_hash,
                    });
                }
                Ok(found)
            })
            .await
    }

    async fn create_session(&self, session: NewSession) -> Result<()> {
        self.db
            .write(move |c| {
                c.execute(
                    "DELETE FROM sessions WHERE expires_at < ?1",
                    [session.created_at],
                )
                .map_err(sql)?;
                let (operator, person) = match &session.subject {
                    SessionSubject::Operator(email) => (Some(email.to_lowercase()), None),
                    SessionSubject::Person(id) => (None, Some(id.to_string())),
                };
                c.execute(
                    "INSERT INTO sessions (hash, id, operator_email, person_id, created_at, expires_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        session.hash,
                        session.id.to_string(),
                        operator,
                        person,
                        session.created_at,
                        session.expires_at
                    ],
                )
                .map_err(sql)
                .map(drop)
            })
            .await
    }

    async fn session_by_hash(&self, hash: &str, now: i64) -> Result<Option<Session>> {
        let hash = hash.to_owned();
        self.db
            .read(move |c| {
                let found = c
                    .query_row(
                        "SELECT id, operator_email, person_id, created_at, expires_at \
                         FROM sessions WHERE hash = ?1 AND expires_at >= ?2",
                        params![hash, now],
                        |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, Option<String>>(1)?,
                                r.get::<_, Option<String>>(2)?,
                                r.get::<_, i64>(3)?,
                                r.get::<_, i64>(4)?,
                            ))
                        },
                    )
                    .optional()
                    .map_err(sql)?;
                let Some((sid, operator_email, person_id, created_at, expires_at)) = found else {
                    return Ok(None);
                };
                let person = match person_id {
                    Some(pid) => Some(
                        c.query_row(
                            &format!("SELECT {PERSON_COLUMNS} FROM persons WHERE id = ?1"),
                            [pid],
                            person_row,
                        )
                        .map_err(sql)??,
                    ),
                    None => None,
                };
                Ok(Some(Session {
                    id: id(sid)?,
                    operator_email,
                    person,
                    created_at,
                    expires_at,
                }))
            })
            .await
    }

    async fn delete_session(&self, hash: &str) -> Result<()> {
        let hash = hash.to_owned();
        self.db
            .write(move |c| {
                c.execute("DELETE FROM sessions WHERE hash = ?1", [hash])
                    .map_err(sql)
                    .map(drop)
            })
            .await
    }
}
