-- Operator reads: analytics over a date range and the admin searches run on
-- these indexes (index-only scans for the per-day sums), and the admin
-- audit log. Plain CREATE INDEX (migrations run in a transaction): on a
-- large existing table it blocks writes while it builds; see docs/ADMIN.md.
CREATE INDEX IF NOT EXISTS idx_generations_created_model
  ON public.generations (created_at, model, status) INCLUDE (duration_ms);
CREATE INDEX IF NOT EXISTS idx_generations_model_created
  ON public.generations (model, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS idx_generations_status_created
  ON public.generations (status, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS idx_generations_all_created
  ON public.generations (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS idx_credit_transactions_created
  ON public.credit_transactions (created_at) INCLUDE (type, amount, user_id);

-- Who did what as an admin, when, from which request. Append-only; in the
-- private schema, so PostgREST never exposes it.
CREATE TABLE IF NOT EXISTS lensroom.admin_audit (
  id         uuid PRIMARY KEY,
  actor      text NOT NULL,
  action     text NOT NULL,
  subject    text,
  detail     jsonb NOT NULL DEFAULT '{}'::jsonb,
  request_id text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS admin_audit_created ON lensroom.admin_audit (created_at DESC, id DESC);
