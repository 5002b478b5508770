-- Named operators of the web console: who may read, decide approvals, or administer. The password
-- is kept only as an argon2id PHC string; names follow the agent-name syntax.
CREATE TABLE operators (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'approver', 'viewer')),
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
