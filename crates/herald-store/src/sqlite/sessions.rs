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
                let mut found = list_parsed(c, sql::OPERATOR_CREDENTIALS, [&email], |r| {
                    Ok(rows::operator_credential(r))
                })?;
                found.extend(list_parsed(c, sql::PERSON_CREDENTIALS, [&email], |r| {
                    Ok(rows::person_credential(r))
                })?);
                Ok(found)
            })
            .await
    }

    async fn create_session(&self, session: NewSession) -> Result<()> {
        self.db
            .write(move |c| {
                c.execute(sql::DELETE_EXPIRED_SESSIONS, [session.created_at])
                    .map_err(sql)?;
                let (operator, person) = rows::session_subject_values(&session.subject);
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
                let session = |r: &Row| {
                    let person_id: Option<String> = r.get("person_id")?;
                    let person = person_id
                        .map(|pid| {
                            c.query_row(sql::SESSION_PERSON, [pid], person_row)
                                .map_err(sql)?
                        })
                        .transpose();
                    Ok(person.and_then(|person| rows::session(r, person)))
                };
                c.query_row(sql::SESSION_BY_HASH, params![hash, now], session)
                    .optional()
                    .map_err(sql)?
                    .transpose()
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
