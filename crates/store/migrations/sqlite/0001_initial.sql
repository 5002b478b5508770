-- MeshGuard schema, SQLite dialect. Timestamps are integer microseconds since the Unix epoch.

CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    trust       TEXT NOT NULL CHECK (trust IN ('unverified', 'verified', 'trusted', 'privileged')),
    tags        TEXT NOT NULL DEFAULT '[]',            -- JSON array of strings, sorted
    status      TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    description TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE tokens (
    jti        TEXT PRIMARY KEY,
    agent_id   TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX tokens_by_agent ON tokens (agent_id);

-- The policy in force, one row per name.
CREATE TABLE policies (
    name       TEXT PRIMARY KEY,
    revision   INTEGER NOT NULL,
    version    TEXT NOT NULL,
    origin     TEXT NOT NULL,
    source     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Every body ever applied; kept when the policy is deleted.
CREATE TABLE policy_revisions (
    name       TEXT NOT NULL,
    revision   INTEGER NOT NULL,
    version    TEXT NOT NULL,
    origin     TEXT NOT NULL,
    source     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (name, revision)
);

CREATE TABLE approvals (
    id           TEXT PRIMARY KEY,
    agent_id     TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    action       TEXT NOT NULL,
    resource     TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'used')),
    timeout_secs INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    decided_at   INTEGER,
    decided_by   TEXT,
    reason       TEXT,
    used_at      INTEGER,
    trace_id     TEXT
);
CREATE INDEX approvals_by_request ON approvals (agent_id, action, resource, created_at);
CREATE INDEX approvals_by_status ON approvals (status, created_at);

-- One row per gateway chain: its head (last committed event) and its anchor (last event removed
-- by retention; seq 0 and 64 zeros when none).
CREATE TABLE audit_chains (
    gateway     TEXT PRIMARY KEY,
    head_seq    INTEGER NOT NULL,
    head_hash   TEXT NOT NULL,
    anchor_seq  INTEGER NOT NULL,
    anchor_hash TEXT NOT NULL
);

-- `pos` is the commit order across chains (pages and cursors); AUTOINCREMENT so that it never
-- goes back after retention empties the table.
CREATE TABLE audit_events (
    pos         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    gateway     TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    ts          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    agent_id    TEXT,
    agent_name  TEXT,
    action      TEXT NOT NULL,
    resource    TEXT,
    decision    TEXT,
    code        TEXT,
    reason      TEXT,
    policy      TEXT,
    rule        TEXT,
    trace_id    TEXT,
    approval_id TEXT,
    status      TEXT,
    result      TEXT,
    context     TEXT NOT NULL,                           -- canonical JSON object
    latency_us  INTEGER,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    UNIQUE (gateway, seq)
);
CREATE INDEX audit_by_ts ON audit_events (ts);
CREATE INDEX audit_by_agent ON audit_events (agent_id, pos);
CREATE INDEX audit_by_trace ON audit_events (trace_id);
CREATE INDEX audit_by_kind_ts ON audit_events (kind, ts);
