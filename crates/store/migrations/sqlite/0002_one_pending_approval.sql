-- One pending approval per request, SQLite dialect.
--
-- At most one approval per (agent, action, resource) is pending, whichever gateway asks: the
-- store's create inserts with ON CONFLICT on this index and returns the pending approval that won.
--
-- Gateways before this migration could each create a pending approval for the very first check
-- of one request. Of such duplicates the newest stays pending (the one plain retries already
-- followed); the older ones become `expired`, as if their time had run out. Nothing else changes.
UPDATE approvals SET status = 'expired'
WHERE status = 'pending'
  AND EXISTS (
      SELECT 1 FROM approvals AS newer
      WHERE newer.agent_id = approvals.agent_id
        AND newer.action = approvals.action
        AND newer.resource = approvals.resource
        AND newer.status = 'pending'
        AND (newer.created_at > approvals.created_at
             OR (newer.created_at = approvals.created_at AND newer.id > approvals.id))
  );

CREATE UNIQUE INDEX approvals_one_pending ON approvals (agent_id, action, resource)
    WHERE status = 'pending';
