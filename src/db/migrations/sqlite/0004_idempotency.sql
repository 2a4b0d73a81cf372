-- Idempotency-Key on POST /api/infer: one generation per user and key
-- (kept 24 h, then the key is released), and the request's SHA-256 so a
-- reuse with another body is told apart from a retry.
ALTER TABLE generations ADD COLUMN request_hash TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS generations_idempotency
    ON generations (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
