-- Per-server connection pool, rate and timeout settings; OAuth2 client credentials on accounts.

ALTER TABLE smtp_servers ADD COLUMN max_connections INTEGER NOT NULL DEFAULT 4;
ALTER TABLE smtp_servers ADD COLUMN max_messages_per_connection INTEGER NOT NULL DEFAULT 100;
ALTER TABLE smtp_servers ADD COLUMN idle_timeout_secs INTEGER NOT NULL DEFAULT 30;
ALTER TABLE smtp_servers ADD COLUMN rate_limit_per_minute INTEGER;
ALTER TABLE smtp_servers ADD COLUMN command_timeout_secs INTEGER;

ALTER TABLE smtp_accounts ADD COLUMN oauth2_token_url TEXT;
ALTER TABLE smtp_accounts ADD COLUMN oauth2_client_id TEXT;
ALTER TABLE smtp_accounts ADD COLUMN oauth2_scope TEXT;
