-- Per-hour counts of checks: the sums of `audit_rollups` per hour, kept in the same transaction.
-- `audit stats` reads the whole hours of its period from here, the whole minutes at its two edges
-- (at most 59 on each side) from `audit_rollups`, and the partial minutes from the events, so a
-- period of days reads about a sixtieth of the rows it read from the minutes alone.
CREATE TABLE audit_rollups_hourly (
    hour            BIGINT NOT NULL,             -- ts in microseconds / 3,600,000,000
    agent_id        TEXT NOT NULL,
    agent_name      TEXT NOT NULL,
    decision        TEXT NOT NULL,
    action          TEXT NOT NULL,
    shadow_policy   TEXT NOT NULL,
    shadow_decision TEXT NOT NULL,
    n               BIGINT NOT NULL,
    PRIMARY KEY (hour, agent_id, agent_name, decision, action, shadow_policy, shadow_decision)
);

INSERT INTO audit_rollups_hourly (hour, agent_id, agent_name, decision, action, shadow_policy,
                                  shadow_decision, n)
SELECT minute / 60, agent_id, agent_name, decision, action, shadow_policy, shadow_decision, SUM(n)
FROM audit_rollups
GROUP BY minute / 60, agent_id, agent_name, decision, action, shadow_policy, shadow_decision;
