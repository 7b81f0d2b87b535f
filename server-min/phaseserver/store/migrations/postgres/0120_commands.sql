-- phaseserver 0120 (server-api): operator commands the server sealed and sent (phaseserver.commands),
-- and the Pi's refusals of operator commands it has audited. The SQLite twin is
-- migrations/sqlite/0120_commands.sql.

CREATE TABLE command (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenant (id),
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    node INTEGER NOT NULL,               -- link address 1..247
    op TEXT NOT NULL,                    -- move, lock, unlock, set_limits, report
    fields TEXT NOT NULL,                -- the phasecore.msg command fields sealed, JSON
    operator_id TEXT NOT NULL,
    seq BIGINT NOT NULL,                 -- the operator's sequence number (the COSE Partial IV)
    deadline_s INTEGER NOT NULL,
    requested_by TEXT NOT NULL,          -- the audit actor
    source TEXT NOT NULL,
    requested_s DOUBLE PRECISION NOT NULL,
    sent_s DOUBLE PRECISION,                         -- the broker's PUBACK
    state TEXT NOT NULL,                 -- sealed, sent, send_failed, done, refused, failed, expired,
                                         -- unsupported, no_ack, timeout
    outcome_s DOUBLE PRECISION,
    ack TEXT,                            -- the node's ack fields, JSON
    detail TEXT,
    UNIQUE (operator_id, seq)
);
CREATE INDEX command_tenant ON command (tenant_id, requested_s);
CREATE INDEX command_open ON command (state, site, transformer);

CREATE TABLE command_refusal (
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    kind TEXT NOT NULL,
    t_s BIGINT NOT NULL,
    src INTEGER NOT NULL,
    seq BIGINT NOT NULL,
    audited_s DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (site, transformer, kind, t_s, src, seq)
);
