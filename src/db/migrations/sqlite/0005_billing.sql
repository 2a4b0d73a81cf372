-- Money in and events out: Stripe payments and outgoing webhooks.
--
-- The ledger learns the rows a payment makes: 'purchase' (a paid Checkout
-- Session), 'payment_refund' and 'payment_dispute' (credits taken back as
-- far as the balance allows) and 'payment_uncollected' (amount 0: what
-- could not be taken back, in metadata). SQLite cannot widen a CHECK in
-- place, so credit_transactions is rebuilt with the same columns and
-- indexes. A purchase names its payment in payment_id, once.
CREATE TABLE credit_transactions_v5 (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    amount          INTEGER NOT NULL,
    type            TEXT NOT NULL
                    CHECK (type IN ('generation', 'purchase', 'bonus', 'refund', 'adjustment',
                                    'payment_refund', 'payment_dispute', 'payment_uncollected')),
    description     TEXT,
    metadata        TEXT NOT NULL DEFAULT '{}',
    payment_id      TEXT,
    generation_id   TEXT,
    idempotency_key TEXT,
    created_at      TEXT NOT NULL
);
INSERT INTO credit_transactions_v5 (id, user_id, amount, type, description, metadata, payment_id,
                                    generation_id, idempotency_key, created_at)
    SELECT id, user_id, amount, type, description, metadata, payment_id, generation_id,
           idempotency_key, created_at FROM credit_transactions;
DROP TABLE credit_transactions;
ALTER TABLE credit_transactions_v5 RENAME TO credit_transactions;
CREATE INDEX IF NOT EXISTS credit_transactions_user_created
    ON credit_transactions (user_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS credit_transactions_generation
    ON credit_transactions (generation_id);
CREATE UNIQUE INDEX IF NOT EXISTS credit_transactions_one_charge
    ON credit_transactions (generation_id) WHERE type = 'generation';
CREATE UNIQUE INDEX IF NOT EXISTS credit_transactions_one_refund
    ON credit_transactions (generation_id) WHERE type = 'refund';
CREATE UNIQUE INDEX IF NOT EXISTS credit_transactions_idempotency
    ON credit_transactions (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS credit_transactions_one_purchase
    ON credit_transactions (payment_id) WHERE type = 'purchase';

-- One row per paid Checkout Session (times: ms since the epoch).
CREATE TABLE IF NOT EXISTS payments (
    id               TEXT PRIMARY KEY,
    session_id       TEXT NOT NULL UNIQUE,
    payment_intent   TEXT,
    user_id          TEXT NOT NULL,
    pack_id          TEXT NOT NULL,
    credits          INTEGER NOT NULL CHECK (credits > 0),
    amount           INTEGER NOT NULL,
    currency         TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    credits_reversed INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS payments_intent ON payments (payment_intent);

-- Stripe events handled to the end, by event id.
CREATE TABLE IF NOT EXISTS stripe_events (
    id          TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    received_at INTEGER NOT NULL
);

-- Outgoing webhooks: operator endpoints (events: comma-separated types),
-- each user's secret for the webhook of a single generation, and those.
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id         TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    events     TEXT NOT NULL,
    secret     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS user_webhook_secrets (
    user_id    TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS generation_webhooks (
    generation_id TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    url           TEXT NOT NULL,
    events        TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

-- The delivery queue: one row per message and destination; id is the
-- webhook-id, the same on every attempt. A process claims due rows until
-- claimed_until; a claim that ran out (its process died) is taken again.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id              TEXT PRIMARY KEY,
    endpoint_id     TEXT,
    user_id         TEXT,
    url             TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    claim_token     TEXT,
    claimed_until   INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due
    ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint
    ON webhook_deliveries (endpoint_id, created_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_claim ON webhook_deliveries (claim_token);

-- Every attempt: the delivery log of an endpoint.
CREATE TABLE IF NOT EXISTS webhook_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL,
    endpoint_id TEXT,
    attempt     INTEGER NOT NULL,
    status_code INTEGER,
    latency_ms  INTEGER NOT NULL,
    error       TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id);

-- credits.low fires once per crossing: below is set when it fired and
-- cleared when the balance is back at or over the threshold.
CREATE TABLE IF NOT EXISTS low_balance_alerts (
    user_id TEXT PRIMARY KEY,
    below   INTEGER NOT NULL
);
