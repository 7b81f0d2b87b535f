-- phaseserver 0110 (server-api): the tamper-evident audit log (phaseserver.audit) and its signed heads.
-- Append-only: a trigger refuses UPDATE, DELETE and TRUNCATE on both tables, for every role
-- (the table owner included), so no code path and no mistaken SQL changes history; a superuser
-- can still disable it, which the hash chain and the signed heads then reveal
-- (phasekit server audit verify). The SQLite twin is migrations/sqlite/0110_audit.sql.

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    t_ms BIGINT NOT NULL,
    tenant_id TEXT,
    actor TEXT NOT NULL,
    source TEXT NOT NULL,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    before_json TEXT,
    after_json TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_tenant_time ON audit_log (tenant_id, t_ms);
CREATE INDEX audit_log_tenant_object ON audit_log (tenant_id, object, t_ms);

CREATE TABLE audit_head (
    seq BIGINT PRIMARY KEY,
    hash TEXT NOT NULL,
    t_ms BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL
);

CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_head_append_only BEFORE UPDATE OR DELETE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
