-- Outcomes as numbers (docs/architecture/audit-log.md, "Outcomes as numbers"): an event's kind,
-- decision, code, policy, rule and shadow verdict are stored as the number of their
-- combination in `audit_outcomes`, and the row's nine columns are NULL; reads take them from
-- there. Every event is copied once, in `pos` order, as in migrations 8 and 9.

-- Every combination the trail's events make, numbered. Rows are never deleted. `key` names a
-- combination: each field as its length in characters, ':' and the field, or '-' for none
-- (what the gateway writes too, `outcomes.rs`).
CREATE TABLE audit_outcomes (
    outcome         INTEGER PRIMARY KEY,
    key             TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    decision        TEXT,
    code            TEXT,
    policy          TEXT,
    rule            TEXT,
    shadow_decision TEXT,
    shadow_code     TEXT,
    shadow_policy   TEXT,
    shadow_rule     TEXT
);
INSERT INTO audit_outcomes (key, kind, decision, code, policy, rule, shadow_decision,
    shadow_code, shadow_policy, shadow_rule)
SELECT COALESCE(length(kind) || ':' || kind, '-')
       || COALESCE(length(decision) || ':' || decision, '-')
       || COALESCE(length(code) || ':' || code, '-')
       || COALESCE(length(policy) || ':' || policy, '-')
       || COALESCE(length(rule) || ':' || rule, '-')
       || COALESCE(length(shadow_decision) || ':' || shadow_decision, '-')
       || COALESCE(length(shadow_code) || ':' || shadow_code, '-')
       || COALESCE(length(shadow_policy) || ':' || shadow_policy, '-')
       || COALESCE(length(shadow_rule) || ':' || shadow_rule, '-'),
       kind, decision, code, policy, rule, shadow_decision, shadow_code, shadow_policy,
       shadow_rule
FROM (SELECT DISTINCT kind, decision, code, policy, rule, shadow_decision, shadow_code,
             shadow_policy, shadow_rule
      FROM audit_events)
-- Texts that are not text (a hand edit) stay in their rows.
WHERE typeof(kind) = 'text'
  AND typeof(decision) IN ('text', 'null') AND typeof(code) IN ('text', 'null')
  AND typeof(policy) IN ('text', 'null') AND typeof(rule) IN ('text', 'null')
  AND typeof(shadow_decision) IN ('text', 'null') AND typeof(shadow_code) IN ('text', 'null')
  AND typeof(shadow_policy) IN ('text', 'null') AND typeof(shadow_rule) IN ('text', 'null')
ORDER BY 1;

CREATE TABLE audit_events_next (
    pos             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              BLOB NOT NULL,                   -- docs/architecture/audit-log.md, "Ids as bytes"
    chain           INTEGER NOT NULL,                -- audit_chains.chain
    seq             INTEGER NOT NULL,
    ts              INTEGER NOT NULL,
    kind            TEXT,                            -- NULL: read from the outcome
    agent           INTEGER,                         -- audit_agents.agent
    agent_name      TEXT,
    action          TEXT NOT NULL,
    resource        TEXT,
    decision        TEXT,
    code            TEXT,
    reason          TEXT,
    policy          TEXT,
    rule            TEXT,
    trace_id        BLOB,
    approval_id     TEXT,
    status          TEXT,
    result          TEXT,
    context         TEXT NOT NULL,                   -- canonical JSON object
    latency_us      INTEGER,
    prev_hash       BLOB,                            -- NULL: the hash of the event before
    hash            BLOB NOT NULL,
    shadow_decision TEXT,
    shadow_code     TEXT,
    shadow_policy   TEXT,
    shadow_rule     TEXT,
    reason_ref      INTEGER,                         -- audit_reasons.reason, when reason is NULL
    outcome         INTEGER                          -- audit_outcomes.outcome, when kind is NULL
);
INSERT INTO audit_events_next (pos, id, chain, seq, ts, kind, agent, agent_name, action,
    resource, decision, code, reason, policy, rule, trace_id, approval_id, status, result,
    context, latency_us, prev_hash, hash, shadow_decision, shadow_code, shadow_policy,
    shadow_rule, reason_ref, outcome)
SELECT e.pos, e.id, e.chain, e.seq, e.ts,
       CASE WHEN o.outcome IS NULL THEN e.kind END, e.agent, e.agent_name, e.action,
       e.resource,
       CASE WHEN o.outcome IS NULL THEN e.decision END,
       CASE WHEN o.outcome IS NULL THEN e.code END,
       e.reason,
       CASE WHEN o.outcome IS NULL THEN e.policy END,
       CASE WHEN o.outcome IS NULL THEN e.rule END,
       e.trace_id, e.approval_id, e.status, e.result, e.context, e.latency_us, e.prev_hash,
       e.hash,
       CASE WHEN o.outcome IS NULL THEN e.shadow_decision END,
       CASE WHEN o.outcome IS NULL THEN e.shadow_code END,
       CASE WHEN o.outcome IS NULL THEN e.shadow_policy END,
       CASE WHEN o.outcome IS NULL THEN e.shadow_rule END,
       e.reason_ref, o.outcome
FROM audit_events e
LEFT JOIN audit_outcomes o
    ON o.key = COALESCE(length(e.kind) || ':' || e.kind, '-')
               || COALESCE(length(e.decision) || ':' || e.decision, '-')
               || COALESCE(length(e.code) || ':' || e.code, '-')
               || COALESCE(length(e.policy) || ':' || e.policy, '-')
               || COALESCE(length(e.rule) || ':' || e.rule, '-')
               || COALESCE(length(e.shadow_decision) || ':' || e.shadow_decision, '-')
               || COALESCE(length(e.shadow_code) || ':' || e.shadow_code, '-')
               || COALESCE(length(e.shadow_policy) || ':' || e.shadow_policy, '-')
               || COALESCE(length(e.shadow_rule) || ':' || e.shadow_rule, '-')
    -- The key finds the outcome through its index; the columns must match exactly (a value of
    -- another type, which only a hand edit stores, stays in its row).
    AND o.kind IS e.kind AND o.decision IS e.decision
    AND o.code IS e.code AND o.policy IS e.policy AND o.rule IS e.rule
    AND o.shadow_decision IS e.shadow_decision AND o.shadow_code IS e.shadow_code
    AND o.shadow_policy IS e.shadow_policy AND o.shadow_rule IS e.shadow_rule
ORDER BY e.pos;

-- `pos` never goes back: the new table continues the old one's sequence.
DELETE FROM sqlite_sequence WHERE name = 'audit_events_next';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'audit_events_next', seq FROM sqlite_sequence WHERE name = 'audit_events';

DROP TABLE audit_events;
ALTER TABLE audit_events_next RENAME TO audit_events;

CREATE UNIQUE INDEX audit_event_ids ON audit_events (id);
CREATE UNIQUE INDEX audit_chain_seqs ON audit_events (chain, seq);
CREATE INDEX audit_by_ts ON audit_events (ts);
CREATE INDEX audit_by_agent ON audit_events (agent, pos);
CREATE INDEX audit_by_trace ON audit_events (trace_id);
