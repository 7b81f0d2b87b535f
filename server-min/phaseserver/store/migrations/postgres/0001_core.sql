-- phaseserver 0001 (server-core): tenancy, the registry ingest fills, the uplink's records in
-- typed tables, the per-minute transformer series, roll-ups, counters and dead letters.
-- The SQLite twin (migrations/sqlite/0001_core.sql) has the same tables, columns and keys.
-- Here the time-series tables are partitioned by range of t_s: the raw level by UTC day, the
-- hourly roll-ups by UTC month, the daily roll-ups by UTC year. phaseserver.store.postgres
-- creates partitions as records need them and drops whole partitions for retention. Every unique
-- key holds t_s, the partition key (PostgreSQL requires it); a record's time is fixed on the Pi
-- and identical in every resend, so de-duplication stays exact.

CREATE TABLE tenant (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_s DOUBLE PRECISION NOT NULL
);
INSERT INTO tenant (id, name, created_s) VALUES ('unassigned', 'Sites not yet assigned to a tenant', 0);

CREATE TABLE site (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenant (id),
    name TEXT,
    first_seen_s DOUBLE PRECISION NOT NULL
);
CREATE INDEX site_tenant ON site (tenant_id);

CREATE TABLE transformer (
    tenant_id TEXT NOT NULL,
    site TEXT NOT NULL REFERENCES site (id),
    id TEXT NOT NULL,
    name TEXT,
    rating_a DOUBLE PRECISION,
    status TEXT,
    status_s DOUBLE PRECISION,
    first_seen_s DOUBLE PRECISION NOT NULL,
    last_seen_s DOUBLE PRECISION,
    last_t_s BIGINT,
    fw TEXT,
    backlog BIGINT,
    PRIMARY KEY (site, id)
);
CREATE INDEX transformer_tenant ON transformer (tenant_id);

CREATE TABLE node (
    tenant_id TEXT NOT NULL,
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    src INTEGER NOT NULL,
    addr INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    phase SMALLINT,
    status INTEGER,
    last_t_s BIGINT,
    last_seen_s DOUBLE PRECISION,
    fw TEXT,
    PRIMARY KEY (site, transformer, src)
);

-- Columns ordered widest first: PostgreSQL aligns each to its size, so this order wastes no padding.
CREATE TABLE reading (
    t_s BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    energy_wh BIGINT NOT NULL,
    received_s DOUBLE PRECISION NOT NULL,
    src INTEGER NOT NULL,
    current_ma INTEGER NOT NULL,
    power_dw INTEGER NOT NULL,
    voltage_dv SMALLINT NOT NULL,
    frequency_dhz SMALLINT NOT NULL,
    pf_centi SMALLINT NOT NULL,
    phase SMALLINT NOT NULL,
    status SMALLINT NOT NULL,
    tenant_id TEXT NOT NULL,
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    PRIMARY KEY (site, transformer, t_s, src, seq)
) PARTITION BY RANGE (t_s);

CREATE TABLE aggregate (
    t_s BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    seq_span BIGINT NOT NULL,
    de_wh BIGINT,
    received_s DOUBLE PRECISION NOT NULL,
    src INTEGER NOT NULL,
    period_s INTEGER NOT NULL,
    n INTEGER NOT NULL,
    n_bad INTEGER,
    i_mean_ma INTEGER,
    i_max_ma INTEGER,
    phase SMALLINT NOT NULL,
    phase_first SMALLINT,
    status SMALLINT NOT NULL,
    v_min_dv SMALLINT,
    v_max_dv SMALLINT,
    pf_mean_centi SMALLINT,
    tenant_id TEXT NOT NULL,
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    PRIMARY KEY (site, transformer, t_s, src, seq)
) PARTITION BY RANGE (t_s);

CREATE TABLE summary (
    t_s BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    backlog BIGINT,
    received_s DOUBLE PRECISION NOT NULL,
    src INTEGER NOT NULL,
    period_s INTEGER NOT NULL,
    i_a_da INTEGER NOT NULL,
    i_b_da INTEGER NOT NULL,
    i_c_da INTEGER NOT NULL,
    i_n_da INTEGER,
    cuf_pm INTEGER NOT NULL,
    cuf_max_pm INTEGER,
    moves INTEGER NOT NULL,
    moves_failed INTEGER,
    tenant_id TEXT NOT NULL,
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (site, transformer, t_s, src, seq)
) PARTITION BY RANGE (t_s);

CREATE TABLE record (
    t_s BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    value BIGINT,
    received_s DOUBLE PRECISION NOT NULL,
    src INTEGER NOT NULL,
    code INTEGER,
    severity SMALLINT,
    node SMALLINT,
    tenant_id TEXT NOT NULL,
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (site, transformer, kind, t_s, src, seq)
) PARTITION BY RANGE (t_s);
CREATE INDEX record_time ON record (site, transformer, t_s);

CREATE TABLE series_minute (
    t_s BIGINT NOT NULL,
    i_a_ma BIGINT NOT NULL DEFAULT 0, i_b_ma BIGINT NOT NULL DEFAULT 0, i_c_ma BIGINT NOT NULL DEFAULT 0,
    p_a_ma BIGINT NOT NULL DEFAULT 0, p_b_ma BIGINT NOT NULL DEFAULT 0, p_c_ma BIGINT NOT NULL DEFAULT 0,
    q_a_ma BIGINT NOT NULL DEFAULT 0, q_b_ma BIGINT NOT NULL DEFAULT 0, q_c_ma BIGINT NOT NULL DEFAULT 0,
    nodes INTEGER NOT NULL DEFAULT 0,
    tenant_id TEXT NOT NULL,
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    PRIMARY KEY (site, transformer, t_s)
) PARTITION BY RANGE (t_s);

CREATE TABLE rollup_node_hour (
    t_s BIGINT NOT NULL, i_sum_ma BIGINT NOT NULL, pf_sum BIGINT NOT NULL, e_wh BIGINT,
    src INTEGER NOT NULL, n INTEGER NOT NULL, i_max_ma INTEGER, v_min_dv SMALLINT, v_max_dv SMALLINT, phase SMALLINT,
    tenant_id TEXT NOT NULL, site TEXT NOT NULL, transformer TEXT NOT NULL,
    PRIMARY KEY (site, transformer, t_s, src)
) PARTITION BY RANGE (t_s);
CREATE TABLE rollup_node_day (
    t_s BIGINT NOT NULL, i_sum_ma BIGINT NOT NULL, pf_sum BIGINT NOT NULL, e_wh BIGINT,
    src INTEGER NOT NULL, n INTEGER NOT NULL, i_max_ma INTEGER, v_min_dv SMALLINT, v_max_dv SMALLINT, phase SMALLINT,
    tenant_id TEXT NOT NULL, site TEXT NOT NULL, transformer TEXT NOT NULL,
    PRIMARY KEY (site, transformer, t_s, src)
) PARTITION BY RANGE (t_s);
CREATE TABLE rollup_phase_hour (
    t_s BIGINT NOT NULL, minutes INTEGER NOT NULL, i_mean_ma INTEGER NOT NULL, i_max_ma INTEGER NOT NULL,
    phase SMALLINT NOT NULL, tenant_id TEXT NOT NULL, site TEXT NOT NULL, transformer TEXT NOT NULL,
    PRIMARY KEY (site, transformer, t_s, phase)
) PARTITION BY RANGE (t_s);
CREATE TABLE rollup_phase_day (
    t_s BIGINT NOT NULL, minutes INTEGER NOT NULL, i_mean_ma INTEGER NOT NULL, i_max_ma INTEGER NOT NULL,
    phase SMALLINT NOT NULL, tenant_id TEXT NOT NULL, site TEXT NOT NULL, transformer TEXT NOT NULL,
    PRIMARY KEY (site, transformer, t_s, phase)
) PARTITION BY RANGE (t_s);
CREATE TABLE rollup_tx_hour (
    t_s BIGINT NOT NULL, minutes INTEGER NOT NULL, i_n_mean_ma INTEGER NOT NULL, i_n_max_ma INTEGER NOT NULL,
    cuf_mean_pm INTEGER NOT NULL, cuf_max_pm INTEGER NOT NULL,
    tenant_id TEXT NOT NULL, site TEXT NOT NULL, transformer TEXT NOT NULL,
    PRIMARY KEY (site, transformer, t_s)
) PARTITION BY RANGE (t_s);
CREATE TABLE rollup_tx_day (
    t_s BIGINT NOT NULL, minutes INTEGER NOT NULL, i_n_mean_ma INTEGER NOT NULL, i_n_max_ma INTEGER NOT NULL,
    cuf_mean_pm INTEGER NOT NULL, cuf_max_pm INTEGER NOT NULL,
    tenant_id TEXT NOT NULL, site TEXT NOT NULL, transformer TEXT NOT NULL,
    PRIMARY KEY (site, transformer, t_s)
) PARTITION BY RANGE (t_s);
CREATE TABLE rollup_dirty (
    site TEXT NOT NULL, transformer TEXT NOT NULL, t_s BIGINT NOT NULL,
    PRIMARY KEY (site, transformer, t_s)
);

CREATE TABLE ingest_counter (
    tenant_id TEXT NOT NULL,
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    name TEXT NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (site, transformer, name)
);

CREATE TABLE dead_letter (
    id BIGSERIAL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    received_s DOUBLE PRECISION NOT NULL,
    source TEXT NOT NULL,
    topic TEXT NOT NULL,
    site TEXT,
    transformer TEXT,
    kind TEXT,
    reason TEXT NOT NULL,
    payload_len INTEGER NOT NULL,
    payload_prefix BYTEA NOT NULL
);
CREATE INDEX dead_letter_time ON dead_letter (received_s);
