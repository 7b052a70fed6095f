-- Sign-in to the web console: passwords of operators and persons (argon2 hashes,
-- never the password), and sessions (stored only as a hash of the session id).

CREATE TABLE operators (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- NULL until the person's password is set: then they may sign in.
ALTER TABLE persons ADD COLUMN password_hash TEXT;

CREATE TABLE sessions (
    hash TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    operator_email TEXT REFERENCES operators (email) ON DELETE CASCADE,
    person_id TEXT REFERENCES persons (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    CHECK ((operator_email IS NULL) <> (person_id IS NULL))
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
