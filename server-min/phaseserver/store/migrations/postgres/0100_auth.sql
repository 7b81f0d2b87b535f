-- phaseserver 0100 (server-api): accounts, browser sessions, refresh tokens, API keys.
-- The SQLite twin is migrations/sqlite/0100_auth.sql. Tokens and key secrets are stored
-- as SHA-256 (hex) only; passwords as Argon2id PHC strings. Rows are revoked, never deleted.

CREATE TABLE account (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT REFERENCES tenant (id),   -- NULL: the system administrator, above tenants
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_s DOUBLE PRECISION NOT NULL,
    disabled_s DOUBLE PRECISION                          -- revoked at (NULL: active)
);
CREATE INDEX account_tenant ON account (tenant_id);

CREATE TABLE auth_session (
    token_hash TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES account (id),
    csrf_hash TEXT NOT NULL,
    created_s DOUBLE PRECISION NOT NULL,
    seen_s DOUBLE PRECISION NOT NULL,
    expires_s DOUBLE PRECISION NOT NULL,
    revoked_s DOUBLE PRECISION,
    source TEXT NOT NULL
);
CREATE INDEX auth_session_account ON auth_session (account_id);

CREATE TABLE refresh_token (
    token_hash TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES account (id),
    family TEXT NOT NULL,
    created_s DOUBLE PRECISION NOT NULL,
    expires_s DOUBLE PRECISION NOT NULL,
    used_s DOUBLE PRECISION,
    revoked_s DOUBLE PRECISION
);
CREATE INDEX refresh_token_account ON refresh_token (account_id);
CREATE INDEX refresh_token_family ON refresh_token (family);

CREATE TABLE api_key (
    id TEXT PRIMARY KEY,                     -- public part of the key (16 hex digits)
    tenant_id TEXT REFERENCES tenant (id),   -- NULL: a system key (role monitor)
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_s DOUBLE PRECISION NOT NULL,
    expires_s DOUBLE PRECISION,
    revoked_s DOUBLE PRECISION
);
CREATE INDEX api_key_tenant ON api_key (tenant_id);
