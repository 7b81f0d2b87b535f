-- phaseserver 0001 (server-core): tenancy, the registry ingest fills, the uplink's records in
-- typed tables, the per-minute transformer series, roll-ups, counters and dead letters.
-- The PostgreSQL twin (migrations/postgres/0001_core.sql) has the same tables, columns and keys,
-- partitioned by day; docs/server.md "Storage" explains each table.
-- Times: t_s is the record's time (Unix seconds, integer, set on the Pi); *_s REAL are the server's.

CREATE TABLE tenant (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_s REAL NOT NULL
);
-- A site first seen by ingest belongs here until an installer or administrator assigns it.
INSERT INTO tenant (id, name, created_s) VALUES ('unassigned', 'Sites not yet assigned to a tenant', 0);

CREATE TABLE site (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenant (id),
    name TEXT,
    first_seen_s REAL NOT NULL
);
CREATE INDEX site_tenant ON site (tenant_id);

CREATE TABLE transformer (
    tenant_id TEXT NOT NULL,
    site TEXT NOT NULL REFERENCES site (id),
    id TEXT NOT NULL,
    name TEXT,
    rating_a REAL,                -- phase current rating, amperes (set by an installer; NULL unknown)
    status TEXT,                  -- the Pi's retained status: online / offline
    status_s REAL,                -- when the status was last received
    first_seen_s REAL NOT NULL,
    last_seen_s REAL,             -- server time of the last record stored
    last_t_s INTEGER,             -- the newest record time stored
    fw TEXT,                      -- the Pi's version, from its heartbeat
    backlog INTEGER,              -- the Pi's buffer backlog, from its heartbeat
    PRIMARY KEY (site, id)
);
CREATE INDEX transformer_tenant ON transformer (tenant_id);

CREATE TABLE node (
    tenant_id TEXT NOT NULL,
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    src INTEGER NOT NULL,         -- link address + 256 x key generation (docs/uplink.md section 4)
    addr INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    phase INTEGER,                -- 0 A, 1 B, 2 C, 3 none: the phase of its newest reading
    status INTEGER,
    last_t_s INTEGER,             -- the newest record time from this node
    last_seen_s REAL,
    fw TEXT,                      -- from its heartbeat
    PRIMARY KEY (site, transformer, src)
);

-- Raw level: one row per record, the de-duplication key is the primary key.
CREATE TABLE reading (
    tenant_id TEXT NOT NULL,
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    t_s INTEGER NOT NULL,
    src INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    voltage_dv INTEGER NOT NULL,
    current_ma INTEGER NOT NULL,
    power_dw INTEGER NOT NULL,
    energy_wh INTEGER NOT NULL,
    frequency_dhz INTEGER NOT NULL,
    pf_centi INTEGER NOT NULL,
    phase INTEGER NOT NULL,
    status INTEGER NOT NULL,
    received_s REAL NOT NULL,      -- when the server received it (ingest lag, drain timing)
    PRIMARY KEY (site, transformer, t_s, src, seq)
) WITHOUT ROWID;

CREATE TABLE aggregate (
    tenant_id TEXT NOT NULL,
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    t_s INTEGER NOT NULL,          -- the period's start
    src INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    period_s INTEGER NOT NULL,
    n INTEGER NOT NULL,
    seq_span INTEGER NOT NULL,
    phase INTEGER NOT NULL,
    phase_first INTEGER,
    status INTEGER NOT NULL,
    n_bad INTEGER,
    i_mean_ma INTEGER,
    i_max_ma INTEGER,
    v_min_dv INTEGER,
    v_max_dv INTEGER,
    de_wh INTEGER,
    pf_mean_centi INTEGER,
    received_s REAL NOT NULL,
    PRIMARY KEY (site, transformer, t_s, src, seq)
) WITHOUT ROWID;

CREATE TABLE summary (
    tenant_id TEXT NOT NULL,
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    t_s INTEGER NOT NULL,
    src INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    period_s INTEGER NOT NULL,
    i_a_da INTEGER NOT NULL,
    i_b_da INTEGER NOT NULL,
    i_c_da INTEGER NOT NULL,
    i_n_da INTEGER,
    cuf_pm INTEGER NOT NULL,
    cuf_max_pm INTEGER,
    moves INTEGER NOT NULL,
    moves_failed INTEGER,
    backlog INTEGER,
    body TEXT NOT NULL,            -- every field, JSON
    received_s REAL NOT NULL,
    PRIMARY KEY (site, transformer, t_s, src, seq)
) WITHOUT ROWID;

-- Events, alarms, command outcomes, the Pi's and the nodes' heartbeats: the fields pages and
-- alarms select on as columns, the whole body as JSON.
CREATE TABLE record (
    tenant_id TEXT NOT NULL,
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    kind TEXT NOT NULL,
    t_s INTEGER NOT NULL,
    src INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    code INTEGER,                  -- event code; for an ack, the command's op
    severity INTEGER,              -- event severity 0..3
    value INTEGER,                 -- event value; for an ack, the outcome
    node INTEGER,                  -- the node the event or command is about (link address)
    body TEXT NOT NULL,
    received_s REAL NOT NULL,
    PRIMARY KEY (site, transformer, kind, t_s, src, seq)
) WITHOUT ROWID;
CREATE INDEX record_time ON record (site, transformer, t_s);

-- One transformer's phase currents per minute, from its nodes' raw readings (each node's mean
-- over the minute, summed by phase); maintained at ingest from the rows that were new.
CREATE TABLE series_minute (
    tenant_id TEXT NOT NULL,
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    t_s INTEGER NOT NULL,
    i_a_ma INTEGER NOT NULL DEFAULT 0, i_b_ma INTEGER NOT NULL DEFAULT 0, i_c_ma INTEGER NOT NULL DEFAULT 0,
    p_a_ma INTEGER NOT NULL DEFAULT 0, p_b_ma INTEGER NOT NULL DEFAULT 0, p_c_ma INTEGER NOT NULL DEFAULT 0,
    q_a_ma INTEGER NOT NULL DEFAULT 0, q_b_ma INTEGER NOT NULL DEFAULT 0, q_c_ma INTEGER NOT NULL DEFAULT 0,
    nodes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (site, transformer, t_s)
) WITHOUT ROWID;

-- Roll-ups: hourly and daily, per node, per phase, per transformer (rebuilt by Store.rollup for
-- the hours ingest marked in rollup_dirty).
CREATE TABLE rollup_node_hour (
    tenant_id TEXT NOT NULL, site TEXT NOT NULL, transformer TEXT NOT NULL, t_s INTEGER NOT NULL,
    src INTEGER NOT NULL, n INTEGER NOT NULL, i_sum_ma INTEGER NOT NULL, i_max_ma INTEGER,
    v_min_dv INTEGER, v_max_dv INTEGER, pf_sum INTEGER NOT NULL, e_wh INTEGER, phase INTEGER,
    PRIMARY KEY (site, transformer, t_s, src)
) WITHOUT ROWID;
CREATE TABLE rollup_node_day (
    tenant_id TEXT NOT NULL, site TEXT NOT NULL, transformer TEXT NOT NULL, t_s INTEGER NOT NULL,
    src INTEGER NOT NULL, n INTEGER NOT NULL, i_sum_ma INTEGER NOT NULL, i_max_ma INTEGER,
    v_min_dv INTEGER, v_max_dv INTEGER, pf_sum INTEGER NOT NULL, e_wh INTEGER, phase INTEGER,
    PRIMARY KEY (site, transformer, t_s, src)
) WITHOUT ROWID;
CREATE TABLE rollup_phase_hour (
    tenant_id TEXT NOT NULL, site TEXT NOT NULL, transformer TEXT NOT NULL, t_s INTEGER NOT NULL,
    phase INTEGER NOT NULL, minutes INTEGER NOT NULL, i_mean_ma INTEGER NOT NULL, i_max_ma INTEGER NOT NULL,
    PRIMARY KEY (site, transformer, t_s, phase)
) WITHOUT ROWID;
CREATE TABLE rollup_phase_day (
    tenant_id TEXT NOT NULL, site TEXT NOT NULL, transformer TEXT NOT NULL, t_s INTEGER NOT NULL,
    phase INTEGER NOT NULL, minutes INTEGER NOT NULL, i_mean_ma INTEGER NOT NULL, i_max_ma INTEGER NOT NULL,
    PRIMARY KEY (site, transformer, t_s, phase)
) WITHOUT ROWID;
CREATE TABLE rollup_tx_hour (
    tenant_id TEXT NOT NULL, site TEXT NOT NULL, transformer TEXT NOT NULL, t_s INTEGER NOT NULL,
    minutes INTEGER NOT NULL, i_n_mean_ma INTEGER NOT NULL, i_n_max_ma INTEGER NOT NULL,
    cuf_mean_pm INTEGER NOT NULL, cuf_max_pm INTEGER NOT NULL,
    PRIMARY KEY (site, transformer, t_s)
) WITHOUT ROWID;
CREATE TABLE rollup_tx_day (
    tenant_id TEXT NOT NULL, site TEXT NOT NULL, transformer TEXT NOT NULL, t_s INTEGER NOT NULL,
    minutes INTEGER NOT NULL, i_n_mean_ma INTEGER NOT NULL, i_n_max_ma INTEGER NOT NULL,
    cuf_mean_pm INTEGER NOT NULL, cuf_max_pm INTEGER NOT NULL,
    PRIMARY KEY (site, transformer, t_s)
) WITHOUT ROWID;
CREATE TABLE rollup_dirty (
    site TEXT NOT NULL, transformer TEXT NOT NULL, t_s INTEGER NOT NULL,   -- the hour to rebuild
    PRIMARY KEY (site, transformer, t_s)
) WITHOUT ROWID;

CREATE TABLE ingest_counter (
    tenant_id TEXT NOT NULL,
    site TEXT NOT NULL,            -- '' for input that names no known site
    transformer TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (site, transformer, name)
);

-- What ingest could not store, for an operator to read (phasekit server dead-letters).
CREATE TABLE dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    received_s REAL NOT NULL,
    source TEXT NOT NULL,          -- mqtt, amqp, ...
    topic TEXT NOT NULL,           -- cut to 200 characters
    site TEXT,
    transformer TEXT,
    kind TEXT,
    reason TEXT NOT NULL,          -- a bounded summary
    payload_len INTEGER NOT NULL,
    payload_prefix BLOB NOT NULL   -- the first bytes only
);
CREATE INDEX dead_letter_time ON dead_letter (received_s);
