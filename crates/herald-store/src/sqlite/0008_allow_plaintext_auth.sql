-- Whether AUTH may go over a session without TLS (security none). Off unless
-- the administrator says so: the password would travel unencrypted.
ALTER TABLE smtp_servers ADD COLUMN allow_plaintext_auth INTEGER NOT NULL DEFAULT 0;
