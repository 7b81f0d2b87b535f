-- phaseserver 0200 (server-alarms): alarms (one row per episode), their lifecycle history, the
-- notification outbox and its delivery log, and the rules' memory of nodes and transformers.
-- The PostgreSQL twin (migrations/postgres/0200_alarms.sql) has the same tables, columns and keys;
-- docs/server.md "Alarms" and "Notifications" explain them.
-- Times: *_s are the server's injected clock (site time); *_wall_s the wall clock (network retries).

-- One row per alarm episode: raised, updated in place while active, acknowledged, cleared.
CREATE TABLE alarm (
    id INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,          -- the site's tenant when raised ('system' for the server's own)
    object TEXT NOT NULL,             -- 'site', 'site/transformer', 'site/transformer/addr' or 'server'
    object_kind TEXT NOT NULL,        -- site, transformer, node, server
    site TEXT,
    transformer TEXT,
    node INTEGER,
    type TEXT NOT NULL,
    severity INTEGER NOT NULL,        -- 1 warning, 2 minor, 3 major, 4 critical (now)
    max_severity INTEGER NOT NULL,    -- the worst of the episode
    value REAL,
    detail TEXT NOT NULL,             -- JSON
    since_s REAL,                     -- when the condition started (data time)
    raised_s REAL NOT NULL,
    updated_s REAL NOT NULL,
    updates INTEGER NOT NULL,
    acked_s REAL,
    acked_by TEXT,
    ack_comment TEXT,
    escalated_s REAL,
    cleared_s REAL,
    cleared_by TEXT,
    clear_comment TEXT
);
-- One active alarm per (object, type): a condition that holds again updates it in place.
CREATE UNIQUE INDEX alarm_one_active ON alarm (object, type) WHERE cleared_s IS NULL;
CREATE INDEX alarm_site_active ON alarm (site, transformer) WHERE cleared_s IS NULL;
CREATE INDEX alarm_raised ON alarm (site, raised_s);
CREATE INDEX alarm_escalation ON alarm (raised_s) WHERE cleared_s IS NULL AND acked_s IS NULL AND escalated_s IS NULL;

-- Every transition of every alarm, with who and why.
CREATE TABLE alarm_event (
    id INTEGER PRIMARY KEY,
    alarm_id INTEGER NOT NULL REFERENCES alarm (id),
    tenant_id TEXT NOT NULL,
    t_s REAL NOT NULL,
    what TEXT NOT NULL,               -- raised, updated, acknowledged, escalated, cleared
    actor TEXT NOT NULL,              -- 'system' or the user
    comment TEXT,
    severity INTEGER
);
CREATE INDEX alarm_event_alarm ON alarm_event (alarm_id, id);

-- The outbox: one row per alarm, transition, channel and target, written in the transaction that
-- changes the alarm; the UNIQUE key is what makes one episode's transition one notification.
CREATE TABLE notification (
    id INTEGER PRIMARY KEY,
    alarm_id INTEGER NOT NULL REFERENCES alarm (id),
    tenant_id TEXT NOT NULL,
    transition TEXT NOT NULL,         -- raised, escalated, cleared
    channel TEXT NOT NULL,            -- email, webhook
    target TEXT NOT NULL,             -- which list or URL of the channel: to, escalate_to, url, escalate_url
    state TEXT NOT NULL,              -- pending, sent, failed, dropped
    attempts INTEGER NOT NULL,
    created_s REAL NOT NULL,
    next_wall_s REAL NOT NULL,
    done_wall_s REAL,
    last_status TEXT,
    last_detail TEXT,
    UNIQUE (alarm_id, transition, channel, target)
);
CREATE INDEX notification_due ON notification (state, next_wall_s);

-- The delivery log: one row per attempt.
CREATE TABLE delivery (
    id INTEGER PRIMARY KEY,
    notification_id INTEGER NOT NULL REFERENCES notification (id),
    attempt INTEGER NOT NULL,
    wall_s REAL NOT NULL,
    duration_ms REAL NOT NULL,
    ok INTEGER NOT NULL,
    status TEXT NOT NULL,             -- HTTP status, SMTP reply code, or network / config / unsupported
    detail TEXT,
    UNIQUE (notification_id, attempt)
);

-- The rules' memory (phaseserver.alarms.rules), saved about once a minute so a restart keeps silences.
CREATE TABLE alarm_node (
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    addr INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    last_s REAL NOT NULL,             -- last heard, data time
    period_s INTEGER NOT NULL,        -- > 0: interval mode, its aggregation period
    lora INTEGER NOT NULL,            -- 1: its heartbeat carries an RSSI (a LoRa node)
    PRIMARY KEY (site, transformer, addr)
);
CREATE TABLE alarm_stream (
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    data_s REAL NOT NULL,             -- the newest reading or aggregate time
    allow_s REAL,                     -- its learned arrival rhythm
    PRIMARY KEY (site, transformer)
);
