-- Price quotes: what POST /api/quote promised, honoured at submit until
-- expires_at even if the catalog's prices change meanwhile. lines is the
-- priced request, one entry per node (or one for an infer).
CREATE TABLE IF NOT EXISTS quotes (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    lines       TEXT NOT NULL DEFAULT '[]',
    total       INTEGER NOT NULL CHECK (total >= 0),
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS quotes_expires ON quotes (expires_at);
