-- LensRoom embedded schema: the original design's three tables, with the
-- columns the server needs to keep money rules (refund once, idempotent
-- grants) and to resume work after a crash. Timestamps are ISO-8601 UTC
-- strings written by the server, so they sort as text.
CREATE TABLE IF NOT EXISTS credits (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL UNIQUE,
    amount      INTEGER NOT NULL DEFAULT 0 CHECK (amount >= 0),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS credit_transactions (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    amount          INTEGER NOT NULL,
    type            TEXT NOT NULL
                    CHECK (type IN ('generation', 'purchase', 'bonus', 'refund', 'adjustment')),
    description     TEXT,
    metadata        TEXT NOT NULL DEFAULT '{}',
    payment_id      TEXT,
    generation_id   TEXT,
    idempotency_key TEXT,
    created_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS credit_transactions_user_created
    ON credit_transactions (user_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS credit_transactions_generation
    ON credit_transactions (generation_id);
-- Exactly one charge and at most one refund per generation.
CREATE UNIQUE INDEX IF NOT EXISTS credit_transactions_one_charge
    ON credit_transactions (generation_id) WHERE type = 'generation';
CREATE UNIQUE INDEX IF NOT EXISTS credit_transactions_one_refund
    ON credit_transactions (generation_id) WHERE type = 'refund';
CREATE UNIQUE INDEX IF NOT EXISTS credit_transactions_idempotency
    ON credit_transactions (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS generations (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL,
    type             TEXT NOT NULL CHECK (type IN ('photo', 'video', 'edit', 'text')),
    model            TEXT NOT NULL,
    prompt           TEXT,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processing', 'success', 'failed', 'canceled')),
    stage            TEXT,
    result_urls      TEXT NOT NULL DEFAULT '[]',
    credits_used     INTEGER NOT NULL DEFAULT 0,
    outputs_count    INTEGER NOT NULL DEFAULT 1,
    succeeded_count  INTEGER NOT NULL DEFAULT 0,
    failed_count     INTEGER NOT NULL DEFAULT 0,
    provider         TEXT,
    provider_task_ids TEXT NOT NULL DEFAULT '[]',
    params           TEXT NOT NULL DEFAULT '{}',
    error_code       TEXT,
    error_message    TEXT,
    duration_ms      INTEGER,
    idempotency_key  TEXT,
    preview_path     TEXT,
    poster_path      TEXT,
    preview_status   TEXT NOT NULL DEFAULT 'none'
                     CHECK (preview_status IN ('none', 'processing', 'ready')),
    metadata         TEXT NOT NULL DEFAULT '{}',
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    finished_at      TEXT
);
CREATE INDEX IF NOT EXISTS generations_user_created
    ON generations (user_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS generations_status ON generations (status);
