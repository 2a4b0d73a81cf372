-- LensRoom 0010: per-day rollups for the analytics.
--
-- lensroom.generation_days counts generations per UTC day of created_at and
-- model (all, succeeded, failed, canceled); lensroom.ledger_days sums the
-- ledger per UTC day (rows, spent, bought, refunded, granted). Row triggers
-- keep them in the transaction that inserts a generation, settles it or
-- writes a ledger row, whatever wrote it (the server, adjust_credits, a
-- payment, direct SQL). Each row is split by the writing backend's pid, so
-- two connections writing on the same day never wait for each other's row
-- lock (held to the commit: a shared row would serialize every writer's
-- commits); readers sum over backends, a few rows per day.
--
-- The analytics read these for the whole days of a range and the raw rows
-- only for its partial first and last day. p50/p95 stay exact:
-- percentile_disc over the range's rows, one index range scan per model on
-- idx_generations_model_created_duration, which replaces 0004's
-- idx_generations_created_model (its range counts now come from here), so
-- a write maintains as many indexes as before. Plain CREATE INDEX: on a
-- large table, create it first with CREATE INDEX CONCURRENTLY under the
-- same name (docs/ADMIN.md).
--
-- Idempotent: the tables are rebuilt from the rows by
-- lensroom.rollups_rebuild(), which this migration runs after creating the
-- triggers, under a lock that keeps writers out until it commits.

CREATE TABLE IF NOT EXISTS lensroom.generation_days (
  day       date NOT NULL,
  model     text NOT NULL,
  backend   integer NOT NULL DEFAULT 0, -- pg_backend_pid() of the writer; 0: backfill
  created   bigint NOT NULL DEFAULT 0,
  succeeded bigint NOT NULL DEFAULT 0,
  failed    bigint NOT NULL DEFAULT 0,
  canceled  bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (day, model, backend)
) WITH (fillfactor = 30);

CREATE TABLE IF NOT EXISTS lensroom.ledger_days (
  day      date NOT NULL,
  backend  integer NOT NULL DEFAULT 0,
  rows     bigint NOT NULL DEFAULT 0,
  spent    bigint NOT NULL DEFAULT 0, -- credits charged for generations (positive)
  bought   bigint NOT NULL DEFAULT 0, -- purchase
  refunded bigint NOT NULL DEFAULT 0, -- refund
  granted  bigint NOT NULL DEFAULT 0, -- bonus and adjustment, net
  PRIMARY KEY (day, backend)
) WITH (fillfactor = 30);

-- Adds to one rollup row of this backend: an UPDATE, which finds the row
-- but on the day's first write (cheaper than INSERT ... ON CONFLICT on
-- every call; the low fillfactor keeps these updates HOT, so the index is
-- not touched), else an insert.
CREATE OR REPLACE FUNCTION lensroom.generation_days_add(p_day date, p_model text, p_n integer,
  p_ok integer, p_failed integer, p_canceled integer)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  UPDATE lensroom.generation_days d SET created = d.created + p_n,
         succeeded = d.succeeded + p_ok, failed = d.failed + p_failed,
         canceled = d.canceled + p_canceled
   WHERE d.day = p_day AND d.model = p_model AND d.backend = pg_backend_pid();
  IF NOT FOUND THEN
    INSERT INTO lensroom.generation_days AS d (day, model, backend, created, succeeded, failed,
                                               canceled)
    VALUES (p_day, p_model, pg_backend_pid(), p_n, p_ok, p_failed, p_canceled)
    ON CONFLICT (day, model, backend) DO UPDATE SET
      created = d.created + EXCLUDED.created, succeeded = d.succeeded + EXCLUDED.succeeded,
      failed = d.failed + EXCLUDED.failed, canceled = d.canceled + EXCLUDED.canceled;
  END IF;
END $$;

CREATE OR REPLACE FUNCTION lensroom.ledger_days_add(p_day date, p_n integer, p_spent bigint,
  p_bought bigint, p_refunded bigint, p_granted bigint)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  UPDATE lensroom.ledger_days d SET rows = d.rows + p_n, spent = d.spent + p_spent,
         bought = d.bought + p_bought, refunded = d.refunded + p_refunded,
         granted = d.granted + p_granted
   WHERE d.day = p_day AND d.backend = pg_backend_pid();
  IF NOT FOUND THEN
    INSERT INTO lensroom.ledger_days AS d (day, backend, rows, spent, bought, refunded, granted)
    VALUES (p_day, pg_backend_pid(), p_n, p_spent, p_bought, p_refunded, p_granted)
    ON CONFLICT (day, backend) DO UPDATE SET
      rows = d.rows + EXCLUDED.rows, spent = d.spent + EXCLUDED.spent,
      bought = d.bought + EXCLUDED.bought, refunded = d.refunded + EXCLUDED.refunded,
      granted = d.granted + EXCLUDED.granted;
  END IF;
END $$;

-- A settle moves one generation between the status columns of one row:
-- one call. Any other change takes OLD away and adds NEW.
CREATE OR REPLACE FUNCTION lensroom.generation_days_track() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.model = NEW.model
     AND (OLD.created_at AT TIME ZONE 'UTC')::date = (NEW.created_at AT TIME ZONE 'UTC')::date THEN
    PERFORM lensroom.generation_days_add((NEW.created_at AT TIME ZONE 'UTC')::date, NEW.model, 0,
      (NEW.status = 'success')::int - (OLD.status = 'success')::int,
      (NEW.status = 'failed')::int - (OLD.status = 'failed')::int,
      (NEW.status = 'canceled')::int - (OLD.status = 'canceled')::int);
    RETURN NULL;
  END IF;
  IF TG_OP <> 'INSERT' THEN
    PERFORM lensroom.generation_days_add((OLD.created_at AT TIME ZONE 'UTC')::date, OLD.model, -1,
      -(OLD.status = 'success')::int, -(OLD.status = 'failed')::int,
      -(OLD.status = 'canceled')::int);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    PERFORM lensroom.generation_days_add((NEW.created_at AT TIME ZONE 'UTC')::date, NEW.model, 1,
      (NEW.status = 'success')::int, (NEW.status = 'failed')::int, (NEW.status = 'canceled')::int);
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION lensroom.ledger_days_track() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    PERFORM lensroom.ledger_days_add((OLD.created_at AT TIME ZONE 'UTC')::date, -1,
      CASE WHEN OLD.type = 'generation' THEN OLD.amount ELSE 0 END,
      CASE WHEN OLD.type = 'purchase' THEN -OLD.amount ELSE 0 END,
      CASE WHEN OLD.type = 'refund' THEN -OLD.amount ELSE 0 END,
      CASE WHEN OLD.type IN ('bonus', 'adjustment') THEN -OLD.amount ELSE 0 END);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    PERFORM lensroom.ledger_days_add((NEW.created_at AT TIME ZONE 'UTC')::date, 1,
      CASE WHEN NEW.type = 'generation' THEN -NEW.amount ELSE 0 END,
      CASE WHEN NEW.type = 'purchase' THEN NEW.amount ELSE 0 END,
      CASE WHEN NEW.type = 'refund' THEN NEW.amount ELSE 0 END,
      CASE WHEN NEW.type IN ('bonus', 'adjustment') THEN NEW.amount ELSE 0 END);
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION lensroom.rollups_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  IF TG_TABLE_NAME = 'generations' THEN
    DELETE FROM lensroom.generation_days;
  ELSE
    DELETE FROM lensroom.ledger_days;
  END IF;
  RETURN NULL;
END $$;

-- Both tables from the rows (the migration's backfill; also after a bulk
-- load made with triggers off, session_replication_role = replica).
CREATE OR REPLACE FUNCTION lensroom.rollups_rebuild() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  -- Writers wait until the caller's transaction ends: every row is counted
  -- here or, once committed after it, by the triggers.
  LOCK TABLE public.generations, public.credit_transactions IN SHARE ROW EXCLUSIVE MODE;
  DELETE FROM lensroom.generation_days;
  INSERT INTO lensroom.generation_days (day, model, backend, created, succeeded, failed, canceled)
  SELECT (g.created_at AT TIME ZONE 'UTC')::date, g.model, 0, count(*),
         count(*) FILTER (WHERE g.status = 'success'), count(*) FILTER (WHERE g.status = 'failed'),
         count(*) FILTER (WHERE g.status = 'canceled')
    FROM public.generations g GROUP BY 1, 2;
  DELETE FROM lensroom.ledger_days;
  INSERT INTO lensroom.ledger_days (day, backend, rows, spent, bought, refunded, granted)
  SELECT (t.created_at AT TIME ZONE 'UTC')::date, 0, count(*),
         -coalesce(sum(t.amount) FILTER (WHERE t.type = 'generation'), 0),
         coalesce(sum(t.amount) FILTER (WHERE t.type = 'purchase'), 0),
         coalesce(sum(t.amount) FILTER (WHERE t.type = 'refund'), 0),
         coalesce(sum(t.amount) FILTER (WHERE t.type IN ('bonus', 'adjustment')), 0)
    FROM public.credit_transactions t GROUP BY 1;
END $$;

DROP TRIGGER IF EXISTS generations_days_insert ON public.generations;
CREATE TRIGGER generations_days_insert AFTER INSERT OR DELETE ON public.generations
  FOR EACH ROW EXECUTE FUNCTION lensroom.generation_days_track();
-- Only changes that move a count: a stage update (pending -> processing)
-- or a lease renewal costs nothing here.
DROP TRIGGER IF EXISTS generations_days_update ON public.generations;
CREATE TRIGGER generations_days_update AFTER UPDATE OF status, model, created_at
  ON public.generations FOR EACH ROW
  WHEN ((OLD.status IS DISTINCT FROM NEW.status
         AND (OLD.status IN ('success', 'failed', 'canceled')
              OR NEW.status IN ('success', 'failed', 'canceled')))
        OR OLD.model IS DISTINCT FROM NEW.model OR OLD.created_at IS DISTINCT FROM NEW.created_at)
  EXECUTE FUNCTION lensroom.generation_days_track();
DROP TRIGGER IF EXISTS generations_days_truncate ON public.generations;
CREATE TRIGGER generations_days_truncate AFTER TRUNCATE ON public.generations
  FOR EACH STATEMENT EXECUTE FUNCTION lensroom.rollups_truncated();

DROP TRIGGER IF EXISTS credit_transactions_days_insert ON public.credit_transactions;
CREATE TRIGGER credit_transactions_days_insert AFTER INSERT OR DELETE
  ON public.credit_transactions FOR EACH ROW EXECUTE FUNCTION lensroom.ledger_days_track();
DROP TRIGGER IF EXISTS credit_transactions_days_update ON public.credit_transactions;
CREATE TRIGGER credit_transactions_days_update AFTER UPDATE OF type, amount, created_at
  ON public.credit_transactions FOR EACH ROW
  WHEN (OLD.type IS DISTINCT FROM NEW.type OR OLD.amount IS DISTINCT FROM NEW.amount
        OR OLD.created_at IS DISTINCT FROM NEW.created_at)
  EXECUTE FUNCTION lensroom.ledger_days_track();
DROP TRIGGER IF EXISTS credit_transactions_days_truncate ON public.credit_transactions;
CREATE TRIGGER credit_transactions_days_truncate AFTER TRUNCATE ON public.credit_transactions
  FOR EACH STATEMENT EXECUTE FUNCTION lensroom.rollups_truncated();

SELECT lensroom.rollups_rebuild();

CREATE INDEX IF NOT EXISTS idx_generations_model_created_duration
  ON public.generations (model, created_at) INCLUDE (status, duration_ms);
DROP INDEX IF EXISTS public.idx_generations_created_model;

REVOKE ALL ON lensroom.generation_days, lensroom.ledger_days FROM PUBLIC, anon, authenticated;
REVOKE ALL ON FUNCTION lensroom.rollups_rebuild(),
  lensroom.generation_days_add(date, text, integer, integer, integer, integer),
  lensroom.ledger_days_add(date, integer, bigint, bigint, bigint, bigint),
  lensroom.generation_days_track(), lensroom.ledger_days_track(), lensroom.rollups_truncated()
  FROM PUBLIC, anon, authenticated;

-- The email of each user as the token claims seen last said it (lowercased
-- copy for the admin search by prefix, compared bytewise). Written once
-- per user and process unless it changes.
CREATE TABLE IF NOT EXISTS lensroom.user_emails (
  user_id  uuid PRIMARY KEY,
  email    text NOT NULL,
  email_lc text NOT NULL,
  seen_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS user_emails_email ON lensroom.user_emails (email_lc COLLATE "C");
REVOKE ALL ON lensroom.user_emails FROM PUBLIC, anon, authenticated;

-- Ids whose email starts with a prefix: lo <= lower(email) < hi, bytewise.
-- Those seen in tokens, and on Supabase those of auth.users (which also
-- finds users who never used this server since it learnt emails).
CREATE OR REPLACE FUNCTION lensroom.user_ids_by_email(p_lo text, p_hi text)
RETURNS SETOF uuid LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  RETURN QUERY SELECT e.user_id FROM lensroom.user_emails e
   WHERE e.email_lc COLLATE "C" >= p_lo AND e.email_lc COLLATE "C" < p_hi;
  IF to_regclass('auth.users') IS NOT NULL THEN
    RETURN QUERY EXECUTE 'SELECT u.id FROM auth.users u WHERE lower(u.email) COLLATE "C" >= $1 '
                         'AND lower(u.email) COLLATE "C" < $2' USING p_lo, p_hi;
  END IF;
END $$;
REVOKE ALL ON FUNCTION lensroom.user_ids_by_email(text, text) FROM PUBLIC, anon, authenticated;
