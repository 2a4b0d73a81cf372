-- Per-day rollups for the analytics: generations per UTC day of created_at
-- and model (all, succeeded, failed, canceled), and the ledger per UTC day
-- (rows, spent, bought, refunded, granted). Triggers keep them in the
-- transaction that inserts a generation, settles it or writes a ledger
-- row. The analytics read them for a range's whole days and the rows only
-- for its partial first and last day; p50/p95 stay exact over the range's
-- rows, on generations_created_duration.
CREATE TABLE IF NOT EXISTS generation_days (
    day       TEXT NOT NULL,
    model     TEXT NOT NULL,
    created   INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0,
    canceled  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, model)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS ledger_days (
    day      TEXT PRIMARY KEY,
    rows     INTEGER NOT NULL DEFAULT 0,
    spent    INTEGER NOT NULL DEFAULT 0, -- credits charged for generations (positive)
    bought   INTEGER NOT NULL DEFAULT 0, -- purchase
    refunded INTEGER NOT NULL DEFAULT 0, -- refund
    granted  INTEGER NOT NULL DEFAULT 0  -- bonus and adjustment, net
) WITHOUT ROWID;

-- A generation counts once in created and once in the column of a final
-- status; an update takes OLD away and adds NEW (a settle: the same row).
CREATE TRIGGER IF NOT EXISTS generations_days_insert AFTER INSERT ON generations
BEGIN
    INSERT INTO generation_days (day, model, created, succeeded, failed, canceled)
    VALUES (substr(NEW.created_at, 1, 10), NEW.model, 1, NEW.status = 'success',
            NEW.status = 'failed', NEW.status = 'canceled')
    ON CONFLICT (day, model) DO UPDATE SET created = created + excluded.created,
        succeeded = succeeded + excluded.succeeded, failed = failed + excluded.failed,
        canceled = canceled + excluded.canceled;
END;

CREATE TRIGGER IF NOT EXISTS generations_days_delete AFTER DELETE ON generations
BEGIN
    UPDATE generation_days SET created = created - 1,
        succeeded = succeeded - (OLD.status = 'success'),
        failed = failed - (OLD.status = 'failed'), canceled = canceled - (OLD.status = 'canceled')
    WHERE day = substr(OLD.created_at, 1, 10) AND model = OLD.model;
END;

-- Only changes that move a count: a stage update (pending -> processing)
-- or a lease renewal costs nothing here. A settle moves one generation
-- between the status columns of its row: one UPDATE.
CREATE TRIGGER IF NOT EXISTS generations_days_settle
AFTER UPDATE OF status ON generations
WHEN OLD.status IS NOT NEW.status
     AND (OLD.status IN ('success', 'failed', 'canceled')
          OR NEW.status IN ('success', 'failed', 'canceled'))
     AND OLD.model IS NEW.model AND substr(OLD.created_at, 1, 10) IS substr(NEW.created_at, 1, 10)
BEGIN
    UPDATE generation_days
       SET succeeded = succeeded + (NEW.status = 'success') - (OLD.status = 'success'),
           failed = failed + (NEW.status = 'failed') - (OLD.status = 'failed'),
           canceled = canceled + (NEW.status = 'canceled') - (OLD.status = 'canceled')
     WHERE day = substr(NEW.created_at, 1, 10) AND model = NEW.model;
END;

-- A generation moved to another day or model: taken away, added there.
CREATE TRIGGER IF NOT EXISTS generations_days_move
AFTER UPDATE OF model, created_at ON generations
WHEN OLD.model IS NOT NEW.model OR substr(OLD.created_at, 1, 10) IS NOT substr(NEW.created_at, 1, 10)
BEGIN
    UPDATE generation_days SET created = created - 1,
        succeeded = succeeded - (OLD.status = 'success'),
        failed = failed - (OLD.status = 'failed'), canceled = canceled - (OLD.status = 'canceled')
    WHERE day = substr(OLD.created_at, 1, 10) AND model = OLD.model;
    INSERT INTO generation_days (day, model, created, succeeded, failed, canceled)
    VALUES (substr(NEW.created_at, 1, 10), NEW.model, 1, NEW.status = 'success',
            NEW.status = 'failed', NEW.status = 'canceled')
    ON CONFLICT (day, model) DO UPDATE SET created = created + excluded.created,
        succeeded = succeeded + excluded.succeeded, failed = failed + excluded.failed,
        canceled = canceled + excluded.canceled;
END;

CREATE TRIGGER IF NOT EXISTS credit_transactions_days_insert AFTER INSERT ON credit_transactions
BEGIN
    INSERT INTO ledger_days (day, rows, spent, bought, refunded, granted)
    VALUES (substr(NEW.created_at, 1, 10), 1,
            CASE WHEN NEW.type = 'generation' THEN -NEW.amount ELSE 0 END,
            CASE WHEN NEW.type = 'purchase' THEN NEW.amount ELSE 0 END,
            CASE WHEN NEW.type = 'refund' THEN NEW.amount ELSE 0 END,
            CASE WHEN NEW.type IN ('bonus', 'adjustment') THEN NEW.amount ELSE 0 END)
    ON CONFLICT (day) DO UPDATE SET rows = rows + 1, spent = spent + excluded.spent,
        bought = bought + excluded.bought, refunded = refunded + excluded.refunded,
        granted = granted + excluded.granted;
END;

CREATE TRIGGER IF NOT EXISTS credit_transactions_days_delete AFTER DELETE ON credit_transactions
BEGIN
    UPDATE ledger_days SET rows = rows - 1,
        spent = spent - CASE WHEN OLD.type = 'generation' THEN -OLD.amount ELSE 0 END,
        bought = bought - CASE WHEN OLD.type = 'purchase' THEN OLD.amount ELSE 0 END,
        refunded = refunded - CASE WHEN OLD.type = 'refund' THEN OLD.amount ELSE 0 END,
        granted = granted - CASE WHEN OLD.type IN ('bonus', 'adjustment') THEN OLD.amount ELSE 0 END
    WHERE day = substr(OLD.created_at, 1, 10);
END;

CREATE TRIGGER IF NOT EXISTS credit_transactions_days_update
AFTER UPDATE OF type, amount, created_at ON credit_transactions
WHEN OLD.type IS NOT NEW.type OR OLD.amount IS NOT NEW.amount
     OR substr(OLD.created_at, 1, 10) IS NOT substr(NEW.created_at, 1, 10)
BEGIN
    UPDATE ledger_days SET rows = rows - 1,
        spent = spent - CASE WHEN OLD.type = 'generation' THEN -OLD.amount ELSE 0 END,
        bought = bought - CASE WHEN OLD.type = 'purchase' THEN OLD.amount ELSE 0 END,
        refunded = refunded - CASE WHEN OLD.type = 'refund' THEN OLD.amount ELSE 0 END,
        granted = granted - CASE WHEN OLD.type IN ('bonus', 'adjustment') THEN OLD.amount ELSE 0 END
    WHERE day = substr(OLD.created_at, 1, 10);
    INSERT INTO ledger_days (day, rows, spent, bought, refunded, granted)
    VALUES (substr(NEW.created_at, 1, 10), 1,
            CASE WHEN NEW.type = 'generation' THEN -NEW.amount ELSE 0 END,
            CASE WHEN NEW.type = 'purchase' THEN NEW.amount ELSE 0 END,
            CASE WHEN NEW.type = 'refund' THEN NEW.amount ELSE 0 END,
            CASE WHEN NEW.type IN ('bonus', 'adjustment') THEN NEW.amount ELSE 0 END)
    ON CONFLICT (day) DO UPDATE SET rows = rows + 1, spent = spent + excluded.spent,
        bought = bought + excluded.bought, refunded = refunded + excluded.refunded,
        granted = granted + excluded.granted;
END;

-- The backfill: rebuilt from the rows. The migration is one BEGIN IMMEDIATE
-- transaction, so no row lands between it and the triggers.
DELETE FROM generation_days;
INSERT INTO generation_days (day, model, created, succeeded, failed, canceled)
SELECT substr(created_at, 1, 10), model, count(*), sum(status = 'success'), sum(status = 'failed'),
       sum(status = 'canceled')
FROM generations GROUP BY 1, 2;
DELETE FROM ledger_days;
INSERT INTO ledger_days (day, rows, spent, bought, refunded, granted)
SELECT substr(created_at, 1, 10), count(*),
       -sum(CASE WHEN type = 'generation' THEN amount ELSE 0 END),
       sum(CASE WHEN type = 'purchase' THEN amount ELSE 0 END),
       sum(CASE WHEN type = 'refund' THEN amount ELSE 0 END),
       sum(CASE WHEN type IN ('bonus', 'adjustment') THEN amount ELSE 0 END)
FROM credit_transactions GROUP BY 1;

-- p50/p95 over a range's rows: the durations come with the index.
DROP INDEX IF EXISTS generations_created;
CREATE INDEX IF NOT EXISTS generations_created_duration
    ON generations (created_at, model, status, duration_ms);

-- The email of each user as the token claims seen last said it (lowercased
-- copy for the admin search by prefix). Written once per user and process
-- unless it changes; not a source of truth for anything but the search.
CREATE TABLE IF NOT EXISTS user_emails (
    user_id  TEXT PRIMARY KEY,
    email    TEXT NOT NULL,
    email_lc TEXT NOT NULL,
    seen_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS user_emails_email ON user_emails (email_lc);
