-- Per-minute counts of checks, kept in the transaction that appends (or retention deletes) their
-- events, so that `audit stats` reads whole minutes from here and only the partial minutes at the
-- edges of its period from `audit_events`. Absent values are '' (NULLs would make every row of a
-- unique key distinct); the stats queries read them back as NULL. Events before 1970 (a negative
-- ts) are never rolled up: stats count them from `audit_events`.
CREATE TABLE audit_rollups (
    minute          BIGINT NOT NULL,             -- ts in microseconds / 60,000,000
    agent_id        TEXT NOT NULL,
    agent_name      TEXT NOT NULL,
    decision        TEXT NOT NULL,
    action          TEXT NOT NULL,
    shadow_policy   TEXT NOT NULL,
    shadow_decision TEXT NOT NULL,
    n               BIGINT NOT NULL,
    PRIMARY KEY (minute, agent_id, agent_name, decision, action, shadow_policy, shadow_decision)
);

INSERT INTO audit_rollups (minute, agent_id, agent_name, decision, action, shadow_policy,
                           shadow_decision, n)
SELECT ts / 60000000, COALESCE(agent_id, ''), COALESCE(agent_name, ''), COALESCE(decision, ''),
       action, COALESCE(shadow_policy, ''), COALESCE(shadow_decision, ''), COUNT(*)
FROM audit_events
WHERE kind = 'check' AND ts >= 0
GROUP BY ts / 60000000, COALESCE(agent_id, ''), COALESCE(agent_name, ''),
         COALESCE(decision, ''), action, COALESCE(shadow_policy, ''),
         COALESCE(shadow_decision, '');
