-- LensRoom 0008: graph runs executed on the server. A run is charged once
-- for all its nodes (one 'generation' ledger row naming the run in run_id,
-- no generation_id); each node is a generation row linked by run_id and
-- node_id whose run_cost is its share of that charge. A node that fails or
-- is never reached is refunded like any generation (lensroom.settle, one
-- 'refund' row by generation_id). Nodes are run, resumed and refunded by
-- their run, never by the generic reaper. Idempotent.
CREATE TABLE IF NOT EXISTS public.runs (
  id              uuid PRIMARY KEY,
  user_id         uuid NOT NULL,
  status          text NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'success', 'failed', 'canceled')),
  graph           jsonb NOT NULL DEFAULT '{}'::jsonb,
  quoted          integer NOT NULL DEFAULT 0,
  error_node      text,
  error_code      text,
  error_message   text,
  idempotency_key text,
  request_hash    text,
  claimed_by      uuid,
  lease_until     timestamptz,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  finished_at     timestamptz
);
CREATE INDEX IF NOT EXISTS runs_user_created ON public.runs (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS runs_lease ON public.runs (lease_until) WHERE status = 'running';
CREATE UNIQUE INDEX IF NOT EXISTS runs_idempotency
  ON public.runs (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
ALTER TABLE public.runs ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS "Users can view own runs" ON public.runs;
CREATE POLICY "Users can view own runs" ON public.runs
  FOR SELECT TO authenticated USING (user_id = auth.uid());
REVOKE ALL ON public.runs FROM anon;
GRANT SELECT ON public.runs TO authenticated;
GRANT ALL ON public.runs TO service_role;

ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS run_id uuid;
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS node_id text;
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS run_cost integer;
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS cache_key text;
CREATE UNIQUE INDEX IF NOT EXISTS generations_run_node ON public.generations (run_id, node_id)
  WHERE run_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS generations_cache ON public.generations (user_id, cache_key)
  WHERE cache_key IS NOT NULL AND status = 'success';

ALTER TABLE public.credit_transactions ADD COLUMN IF NOT EXISTS run_id uuid;
CREATE UNIQUE INDEX IF NOT EXISTS credit_transactions_one_run_charge
  ON public.credit_transactions (run_id) WHERE type = 'generation' AND run_id IS NOT NULL;

-- The whole run reserved at once: the debit of its total, the run row, a
-- pending generation per node (p_nodes: [{id, node, type, model, provider,
-- prompt, params, outputs, cost, cache_key}]; a node served from the
-- cache also has cached_from, urls and text, and is written succeeded at
-- cost 0) and the one charge row. A run holding the idempotency key
-- answers instead (holder, same_request).
CREATE OR REPLACE FUNCTION lensroom.reserve_run(
  p_id uuid, p_user_id uuid, p_total integer, p_graph jsonb, p_nodes jsonb, p_meta jsonb,
  p_owner uuid, p_lease_until timestamptz, p_key text, p_request_hash text,
  p_created_at timestamptz,
  OUT ok boolean, OUT balance integer, OUT holder uuid, OUT same_request boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  h record;
BEGIN
  ok := false;
  IF p_key IS NOT NULL THEN
    SELECT r.id, r.request_hash INTO h FROM public.runs r
     WHERE r.user_id = p_user_id AND r.idempotency_key = p_key FOR UPDATE;
    IF FOUND THEN
      holder := h.id;
      same_request := h.request_hash IS NOT DISTINCT FROM p_request_hash;
      RETURN;
    END IF;
  END IF;
  PERFORM set_config('lensroom.ledger', 'on', true);
  UPDATE public.credits c SET amount = c.amount - p_total
   WHERE c.user_id = p_user_id AND c.amount >= p_total
   RETURNING c.amount INTO balance;
  IF NOT FOUND THEN
    PERFORM set_config('lensroom.ledger', 'off', true);
    SELECT coalesce(max(c.amount), 0) INTO balance FROM public.credits c
     WHERE c.user_id = p_user_id;
    RETURN;
  END IF;
  INSERT INTO public.runs (id, user_id, status, graph, quoted, idempotency_key, request_hash,
                           claimed_by, lease_until, created_at, updated_at)
  VALUES (p_id, p_user_id, 'running', p_graph, p_total, p_key, p_request_hash, p_owner,
          p_lease_until, p_created_at, p_created_at)
  ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING;
  IF NOT FOUND THEN
    UPDATE public.credits c SET amount = c.amount + p_total WHERE c.user_id = p_user_id;
    PERFORM set_config('lensroom.ledger', 'off', true);
    SELECT r.id, r.request_hash INTO h FROM public.runs r
     WHERE r.user_id = p_user_id AND r.idempotency_key = p_key;
    holder := h.id;
    same_request := h.request_hash IS NOT DISTINCT FROM p_request_hash;
    balance := NULL;
    RETURN;
  END IF;
  INSERT INTO public.generations
    (id, user_id, type, model, prompt, status, credits_used, outputs_count, succeeded_count,
     provider, params, result_urls, metadata, created_at, updated_at, finished_at, duration_ms,
     claimed_by, lease_until, run_id, node_id, run_cost, cache_key)
  SELECT (n ->> 'id')::uuid, p_user_id, n ->> 'type', n ->> 'model', n ->> 'prompt',
         CASE WHEN x.cached THEN 'success' ELSE 'pending' END,
         (n ->> 'cost')::integer, (n ->> 'outputs')::integer,
         CASE WHEN x.cached THEN (n ->> 'outputs')::integer ELSE 0 END, n ->> 'provider',
         coalesce(n -> 'params', '{}'::jsonb), coalesce(n -> 'urls', '[]'::jsonb),
         CASE WHEN x.cached THEN jsonb_strip_nulls(jsonb_build_object(
                'cached_from', n ->> 'cached_from', 'text', n ->> 'text'))
              ELSE '{}'::jsonb END,
         p_created_at, p_created_at, CASE WHEN x.cached THEN p_created_at END,
         CASE WHEN x.cached THEN 0 END, CASE WHEN x.cached THEN NULL ELSE p_owner END,
         CASE WHEN x.cached THEN NULL ELSE p_lease_until END, p_id, n ->> 'node',
         (n ->> 'cost')::integer, n ->> 'cache_key'
    FROM jsonb_array_elements(p_nodes) n,
         LATERAL (SELECT (n -> 'cached_from') IS NOT NULL AS cached) x;
  INSERT INTO public.credit_transactions
    (user_id, amount, type, description, run_id, metadata, created_at)
  VALUES (p_user_id, -p_total, 'generation',
          'Run: ' || jsonb_array_length(p_nodes) || ' nodes', p_id, p_meta, p_created_at);
  PERFORM set_config('lensroom.ledger', 'off', true);
  ok := true;
END $$;
REVOKE ALL ON FUNCTION lensroom.reserve_run(uuid, uuid, integer, jsonb, jsonb, jsonb, uuid,
  timestamptz, text, text, timestamptz) FROM PUBLIC, anon, authenticated;

-- 0002's reaper, leaving run nodes to their run.
CREATE OR REPLACE FUNCTION lensroom.reap_expired(p_owner uuid, p_limit integer)
RETURNS TABLE (generation_id uuid, refund integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  g record;
  r record;
BEGIN
  FOR g IN
    SELECT x.id, x.credits_used, x.outputs_count FROM public.generations x
     WHERE x.status IN ('pending', 'processing')
       AND (x.lease_until IS NULL OR x.lease_until < now())
       AND x.claimed_by IS DISTINCT FROM p_owner
       AND coalesce(x.provider_task_ids, '[]'::jsonb) = '[]'::jsonb
       AND x.run_id IS NULL
     ORDER BY x.created_at
     LIMIT p_limit
     FOR UPDATE SKIP LOCKED
  LOOP
    SELECT * INTO r FROM lensroom.settle(g.id, 'failed', NULL, NULL, 0, g.outputs_count,
      g.credits_used, 'interrupted',
      'The server running this generation stopped before it finished; the credits were refunded',
      NULL, NULL, NULL);
    IF r.ok THEN
      generation_id := g.id;
      refund := g.credits_used;
      RETURN NEXT;
    END IF;
  END LOOP;
END $$;
REVOKE ALL ON FUNCTION lensroom.reap_expired(uuid, integer) FROM PUBLIC, anon, authenticated;
