-- Operator reads: analytics over a date range and the admin searches run on
-- these indexes instead of scanning every row; and the admin audit log.
CREATE INDEX IF NOT EXISTS generations_created ON generations (created_at, model, status);
CREATE INDEX IF NOT EXISTS generations_model_created ON generations (model, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS generations_status_created ON generations (status, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS generations_all_created ON generations (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS credit_transactions_created
    ON credit_transactions (created_at, type, amount, user_id);

-- Who did what as an admin, when, from which request. Append-only.
CREATE TABLE IF NOT EXISTS admin_audit (
    id          TEXT PRIMARY KEY,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    subject     TEXT,
    detail      TEXT NOT NULL DEFAULT '{}',
    request_id  TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS admin_audit_created ON admin_audit (created_at DESC, id DESC);
