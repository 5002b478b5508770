-- What the shadow policies would have decided, on the checks where that differs from the enforced
-- decision (`mode: shadow` policies). NULL on every other event, so earlier events and their
-- hashes are unchanged.
ALTER TABLE audit_events ADD COLUMN shadow_decision TEXT;
ALTER TABLE audit_events ADD COLUMN shadow_code TEXT;
ALTER TABLE audit_events ADD COLUMN shadow_policy TEXT;
ALTER TABLE audit_events ADD COLUMN shadow_rule TEXT;
