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
                    sql::UPSERT_OPERATOR,
                    params![
                        uuid::Uuid::now_v7().to_string(),
                        email,
                        password_hash,
                        now_ms()
                    ],
                )
                .map_err(sql)?;
                c.execute(sql::DELETE_OPERATOR_SESSIONS, [email])
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
                    sql::SET_PERSON_PASSWORD,
                    params![password_hash, person, tenant_id.to_string()],
                )
                .map_err(sql)?;
                c.execute(sql::DELETE_PERSON_SESSIONS, [person])
                    .map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn credentials(&self, email: &str) -> Result<Vec<Credential>> {
        let email = email.trim().to_lowercase();
        self.db
            .read(move |c| {
                let mut found: Vec<Credential> =
                    list(c, sql::OPERATOR_CREDENTIALS, [&email], |r| {
                        Ok(Credential {
                            principal: Principal::Operator(r.get(0)?),
                            password_hash: r.get(1)?,
                        })
                    })?;
                let persons = list(c, sql::PERSON_CREDENTIALS, [&email], |r| {
                    Ok((person_row(r)?, r.get::<_, String>(6)?))
                })?;
                for (person, password_hash) in persons {
                    found.push(Credential {
                        principal: Principal::Person(person?),
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
                c.execute(sql::DELETE_EXPIRED_SESSIONS, [session.created_at])
                    .map_err(sql)?;
                let (operator, person) = match &session.subject {
                    SessionSubject::Operator(email) => (Some(email.to_lowercase()), None),
                    SessionSubject::Person(id) => (None, Some(id.to_string())),
                };
                c.execute(
                    sql::INSERT_SESSION,
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
                    .query_row(sql::SESSION_BY_HASH, params![hash, now], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, Option<String>>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    })
                    .optional()
                    .map_err(sql)?;
                let Some((sid, operator_email, person_id, created_at, expires_at)) = found else {
                    return Ok(None);
                };
                let person = match person_id {
                    Some(pid) => Some(
                        c.query_row(sql::SESSION_PERSON, [pid], person_row)
                            .map_err(sql)??,
                    ),
                    None => None,
                };
                Ok(Some(Session {
                    id: id(sid)?,
                    principal: rows::principal(operator_email, person)?,
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
                c.execute(sql::DELETE_SESSION, [hash])
                    .map_err(sql)
                    .map(drop)
            })
            .await
    }
}
