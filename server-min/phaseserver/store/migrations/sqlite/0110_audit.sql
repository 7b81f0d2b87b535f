-- phaseserver 0110 (server-api): the tamper-evident audit log (phaseserver.audit) and its signed heads.
-- Append-only: the triggers refuse UPDATE and DELETE, so no code path (and no mistaken SQL) can
-- change history; someone with the file can still drop them, which the hash chain and the signed
-- heads then reveal (phasekit server audit verify). Times are wall-clock milliseconds.

CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY,        -- 1, 2, 3, ... without gaps
    t_ms INTEGER NOT NULL,
    tenant_id TEXT,                 -- the tenant the action concerns; NULL: system level
    actor TEXT NOT NULL,            -- user:NAME, key:ID, cli:USER, pi:SITE/TRANSFORMER, server
    source TEXT NOT NULL,           -- client address, or cli
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    before_json TEXT,
    after_json TEXT,
    prev_hash TEXT NOT NULL,        -- hex SHA-256 of the entry before (64 zeros for the first)
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_tenant_time ON audit_log (tenant_id, t_ms);
CREATE INDEX audit_log_tenant_object ON audit_log (tenant_id, object, t_ms);

CREATE TABLE audit_head (
    seq INTEGER PRIMARY KEY,        -- the entry this head signs
    hash TEXT NOT NULL,
    t_ms INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL         -- Ed25519 over phaseserver.audit.head_message, hex
);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_head_no_update BEFORE UPDATE ON audit_head
BEGIN
    SELECT RAISE(ABORT, 'audit_head is append-only');
END;
CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
BEGIN
    SELECT RAISE(ABORT, 'audit_head is append-only');
END;
