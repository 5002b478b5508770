-- A narrower audit event row (docs/architecture/audit-log.md, "The indexed row"): every event is
-- copied once into a table where
-- - the chain is a number (`audit_chains.chain`) instead of the gateway's instance id, in the row
--   and in the (chain, seq) index;
-- - the agent is a number (`audit_agents.agent`) instead of its id, in the row and in the
--   (agent, pos) index;
-- - `prev_hash` and `hash` are 32 bytes instead of 64 hex digits (the hashes themselves do not
--   change: they are over the event's JSON, where they stay hex);
-- - the (kind, ts) index is gone: stats read rollups, retention counts through (chain, seq), and
--   listings read in `pos` order.
-- A stored hash that is not 64 lowercase hex digits (only a hand edit writes one) is kept as its
-- text's bytes, so that verification still reports it.

CREATE TABLE audit_chains_numbered (
    chain       INTEGER PRIMARY KEY,
    gateway     TEXT NOT NULL UNIQUE,
    head_seq    INTEGER NOT NULL,
    head_hash   TEXT NOT NULL,
    anchor_seq  INTEGER NOT NULL,
    anchor_hash TEXT NOT NULL
);
INSERT INTO audit_chains_numbered (gateway, head_seq, head_hash, anchor_seq, anchor_hash)
SELECT gateway, head_seq, head_hash, anchor_seq, anchor_hash FROM audit_chains ORDER BY gateway;
-- Events of a gateway that has no chain record (its record was deleted behind MeshGuard's back)
-- get a chain whose head is at 0: verification reports them as past the head.
INSERT INTO audit_chains_numbered (gateway, head_seq, head_hash, anchor_seq, anchor_hash)
SELECT DISTINCT gateway, 0, '0000000000000000000000000000000000000000000000000000000000000000',
       0, '0000000000000000000000000000000000000000000000000000000000000000'
FROM audit_events WHERE gateway NOT IN (SELECT gateway FROM audit_chains) ORDER BY gateway;

-- Every agent id the trail names, numbered. Rows are never deleted: events outlive their agent.
CREATE TABLE audit_agents (
    agent    INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL UNIQUE
);
INSERT INTO audit_agents (agent_id)
SELECT DISTINCT agent_id FROM audit_events WHERE agent_id IS NOT NULL ORDER BY agent_id;

CREATE TABLE audit_events_compact (
    pos             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL,
    chain           INTEGER NOT NULL,                -- audit_chains.chain
    seq             INTEGER NOT NULL,
    ts              INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    agent           INTEGER,                -- audit_agents.agent
    agent_name      TEXT,
    action          TEXT NOT NULL,
    resource        TEXT,
    decision        TEXT,
    code            TEXT,
    reason          TEXT,
    policy          TEXT,
    rule            TEXT,
    trace_id        TEXT,
    approval_id     TEXT,
    status          TEXT,
    result          TEXT,
    context         TEXT NOT NULL,                   -- canonical JSON object
    latency_us      INTEGER,
    prev_hash       BLOB NOT NULL,                   -- 32 bytes of SHA-256
    hash            BLOB NOT NULL,
    shadow_decision TEXT,
    shadow_code     TEXT,
    shadow_policy   TEXT,
    shadow_rule     TEXT
);
INSERT INTO audit_events_compact (pos, id, chain, seq, ts, kind, agent, agent_name, action,
    resource, decision, code, reason, policy, rule, trace_id, approval_id, status, result,
    context, latency_us, prev_hash, hash, shadow_decision, shadow_code, shadow_policy,
    shadow_rule)
SELECT e.pos, e.id, c.chain, e.seq, e.ts, e.kind, a.agent, e.agent_name, e.action,
       e.resource, e.decision, e.code, e.reason, e.policy, e.rule, e.trace_id, e.approval_id,
       e.status, e.result, e.context, e.latency_us,
       CASE WHEN length(e.prev_hash) = 64 AND lower(e.prev_hash) = e.prev_hash
                 AND unhex(e.prev_hash) IS NOT NULL
            THEN unhex(e.prev_hash) ELSE CAST(e.prev_hash AS BLOB) END,
       CASE WHEN length(e.hash) = 64 AND lower(e.hash) = e.hash AND unhex(e.hash) IS NOT NULL
            THEN unhex(e.hash) ELSE CAST(e.hash AS BLOB) END,
       e.shadow_decision, e.shadow_code, e.shadow_policy, e.shadow_rule
FROM audit_events e JOIN audit_chains_numbered c ON c.gateway = e.gateway
LEFT JOIN audit_agents a ON a.agent_id = e.agent_id
ORDER BY e.pos;

-- `pos` never goes back: the new table continues the old one's sequence.
DELETE FROM sqlite_sequence WHERE name = 'audit_events_compact';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'audit_events_compact', seq FROM sqlite_sequence WHERE name = 'audit_events';

DROP TABLE audit_events;
DROP TABLE audit_chains;
ALTER TABLE audit_events_compact RENAME TO audit_events;
ALTER TABLE audit_chains_numbered RENAME TO audit_chains;

CREATE UNIQUE INDEX audit_event_ids ON audit_events (id);
CREATE UNIQUE INDEX audit_chain_seqs ON audit_events (chain, seq);
CREATE INDEX audit_by_ts ON audit_events (ts);
CREATE INDEX audit_by_agent ON audit_events (agent, pos);
CREATE INDEX audit_by_trace ON audit_events (trace_id);
