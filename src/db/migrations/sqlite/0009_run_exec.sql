-- Graph runs executed on the server. A run is charged once for all its
-- nodes (one 'generation' ledger row naming the run in run_id, no
-- generation_id); each node is a generation row linked by run_id and
-- node_id whose run_cost is its share of that charge. A node that fails or
-- is never reached is refunded like any generation (one 'refund' row by
-- generation_id). cache_key lets a later run reuse a node's outputs.
CREATE TABLE IF NOT EXISTS runs (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'success', 'failed', 'canceled')),
    graph           TEXT NOT NULL DEFAULT '{}',
    quoted          INTEGER NOT NULL DEFAULT 0,
    error_node      TEXT,
    error_code      TEXT,
    error_message   TEXT,
    idempotency_key TEXT,
    request_hash    TEXT,
    claimed_by      TEXT,
    lease_until     TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    finished_at     TEXT
);
CREATE INDEX IF NOT EXISTS runs_user_created ON runs (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS runs_lease ON runs (lease_until) WHERE status = 'running';
CREATE UNIQUE INDEX IF NOT EXISTS runs_idempotency
    ON runs (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

ALTER TABLE generations ADD COLUMN run_id TEXT;
ALTER TABLE generations ADD COLUMN node_id TEXT;
ALTER TABLE generations ADD COLUMN run_cost INTEGER;
ALTER TABLE generations ADD COLUMN cache_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS generations_run_node ON generations (run_id, node_id)
    WHERE run_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS generations_cache ON generations (user_id, cache_key)
    WHERE cache_key IS NOT NULL AND status = 'success';

ALTER TABLE credit_transactions ADD COLUMN run_id TEXT;
-- One charge per run, as one per generation.
CREATE UNIQUE INDEX IF NOT EXISTS credit_transactions_one_run_charge
    ON credit_transactions (run_id) WHERE type = 'generation' AND run_id IS NOT NULL;
