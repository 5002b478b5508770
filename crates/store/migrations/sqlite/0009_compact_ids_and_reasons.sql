-- Event ids, trace ids, reasons and prev_hash, compact (docs/architecture/audit-log.md, "Ids as
-- bytes", "Reasons as templates" and "prev_hash from the event before"). Reads write every text back as it was: the hashes over them do not
-- change. Every event is copied once, in `pos` order, as in migration 8.
-- - Ids and trace ids as bytes: a UUID in its canonical text (lowercase, hyphenated) is stored
--   as its 16 bytes, 32 lowercase hex digits (a W3C trace id) as 0xFE and their 16 bytes, any
--   other text of 16 bytes as 0xFF and the text, and any other text as its bytes. The id's
--   unique index and the trace index shrink with the row.
-- - A reason is stored as the number of its template (`audit_reasons`): the reason with every
--   occurrence of the row's action replaced by the character U+0001. A reason that contains
--   U+0001 stays in the row as it is.
-- - `prev_hash` is NULL where it is the hash of the event before (or the chain's anchor for
--   the first event after it): reads take it from there. A row whose `prev_hash` is anything
--   else (only a hand edit writes one) keeps it, so verification still reports it.

-- Every template the trail's reasons make, numbered. Rows are never deleted.
CREATE TABLE audit_reasons (
    reason   INTEGER PRIMARY KEY,
    template TEXT NOT NULL UNIQUE
);
INSERT INTO audit_reasons (template)
SELECT DISTINCT CASE WHEN action = '' THEN reason ELSE replace(reason, action, char(1)) END
FROM audit_events WHERE instr(reason, char(1)) = 0;

CREATE TABLE audit_events_next (
    pos             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              BLOB NOT NULL,                   -- docs/architecture/audit-log.md, "Ids as bytes"
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
    reason_ref      INTEGER                          -- audit_reasons.reason, when reason is NULL
);
INSERT INTO audit_events_next (pos, id, chain, seq, ts, kind, agent, agent_name, action,
    resource, decision, code, reason, policy, rule, trace_id, approval_id, status, result,
    context, latency_us, prev_hash, hash, shadow_decision, shadow_code, shadow_policy,
    shadow_rule, reason_ref)
SELECT e.pos,
       CASE WHEN id GLOB '????????-????-????-????-????????????' AND lower(id) = id
                 AND length(unhex(replace(id, '-', ''))) = 16
                 THEN unhex(replace(id, '-', ''))
            WHEN length(id) = 32 AND lower(id) = id AND length(unhex(id)) = 16
                 THEN CAST(X'FE' || unhex(id) AS BLOB)
            WHEN length(CAST(id AS BLOB)) = 16 THEN CAST(X'FF' || id AS BLOB)
            ELSE CAST(id AS BLOB) END,
       e.chain, e.seq, ts, kind, agent, agent_name, action, resource, decision, code,
       CASE WHEN r.reason IS NULL THEN e.reason END, policy, rule,
       CASE WHEN trace_id GLOB '????????-????-????-????-????????????' AND lower(trace_id) = trace_id
                 AND length(unhex(replace(trace_id, '-', ''))) = 16
                 THEN unhex(replace(trace_id, '-', ''))
            WHEN length(trace_id) = 32 AND lower(trace_id) = trace_id AND length(unhex(trace_id)) = 16
                 THEN CAST(X'FE' || unhex(trace_id) AS BLOB)
            WHEN length(CAST(trace_id AS BLOB)) = 16 THEN CAST(X'FF' || trace_id AS BLOB)
            ELSE CAST(trace_id AS BLOB) END,
       approval_id, status, result, context, latency_us,
       CASE WHEN e.prev_hash = (SELECT b.hash FROM audit_events b
                                WHERE b.chain = e.chain AND b.seq = e.seq - 1)
                 OR (e.seq = c.anchor_seq + 1 AND e.prev_hash = unhex(c.anchor_hash))
            THEN NULL ELSE e.prev_hash END,
       hash, shadow_decision, shadow_code, shadow_policy, shadow_rule, r.reason
FROM audit_events e
LEFT JOIN audit_chains c ON c.chain = e.chain
LEFT JOIN audit_reasons r ON instr(e.reason, char(1)) = 0
    AND r.template = CASE WHEN e.action = '' THEN e.reason
                          ELSE replace(e.reason, e.action, char(1)) END
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
