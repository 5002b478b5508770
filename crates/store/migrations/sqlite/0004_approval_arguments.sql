-- An approval is bound to the exact call: a check that sends `context.arguments` is approved for
-- those arguments only (SPEC 3). `arguments_digest` is the SHA-256 hex of their canonical JSON,
-- empty for a check without arguments (every approval before this migration), and part of the
-- request key, so the one-pending index moves to it; `arguments` is the canonical JSON the
-- approver sees.
ALTER TABLE approvals ADD COLUMN arguments_digest TEXT NOT NULL DEFAULT '';
ALTER TABLE approvals ADD COLUMN arguments TEXT;

DROP INDEX approvals_one_pending;
CREATE UNIQUE INDEX approvals_one_pending ON approvals (agent_id, action, resource, arguments_digest)
    WHERE status = 'pending';
