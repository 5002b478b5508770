-- Signed checkpoints of each chain (crates/store/src/checkpoint.rs): the gateway's Ed25519
-- signature over (gateway, seq, hash) every N events or minutes. `audit verify` starts from the
-- newest checkpoint an earlier verification walked through (`verified_at`), `--full` from the
-- anchor; exports carry them so that a trail verifies offline with the public key. Rows are
-- never trusted by themselves: every use checks the signature again.
CREATE TABLE audit_checkpoints (
    gateway     TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    ts          INTEGER NOT NULL,           -- microseconds since the epoch, UTC
    key_id      TEXT NOT NULL,
    signature   TEXT NOT NULL,
    verified_at INTEGER,                    -- when a verification last walked through it
    PRIMARY KEY (gateway, seq)
);
