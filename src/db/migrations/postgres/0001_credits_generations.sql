-- LensRoom on PostgreSQL / Supabase: credits, ledger, generations.
--
-- Compatible with the original design's migration (same tables, columns,
-- functions and signatures), upgrades a project that already ran it in
-- place, and applies to a plain PostgreSQL that lacks Supabase's schemas
-- (it then creates the roles and auth.uid() it needs). Idempotent: running
-- it again changes nothing. `lensroom migrate` applies it in one
-- transaction under an advisory lock; it can also be pasted into the
-- Supabase SQL editor.
--
-- Deliberate changes from the original (see docs/SECURITY.md):
--   * adjust_credits / get_user_balance are SECURITY DEFINER with a fixed
--     search_path and not executable by anon or authenticated users;
--   * signed-in users may read their own generations but not insert or
--     update them (status and credits_used belong to the server);
--   * every change of a balance has a ledger row, including direct
--     INSERT/UPDATE on public.credits (a trigger records the difference).

-- Roles and auth.uid(), only where Supabase has not made them. Creating
-- roles takes a superuser (service_role's BYPASSRLS above all); on plain
-- PostgreSQL with an ordinary owner role, a superuser creates them once
-- (docs/SETUP.md, "Plain PostgreSQL") and this says so instead of failing
-- on the first CREATE ROLE.
DO $$
DECLARE
  missing text;
BEGIN
  SELECT string_agg(r, ', ') INTO missing
    FROM unnest(ARRAY['anon', 'authenticated', 'service_role']) AS r
   WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r);
  IF missing IS NOT NULL
     AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    RAISE EXCEPTION 'the roles % are missing, and % is not a superuser who could create them',
      missing, current_user
      USING HINT = 'Run once as a superuser: CREATE ROLE anon NOLOGIN NOINHERIT; '
                   'CREATE ROLE authenticated NOLOGIN NOINHERIT; '
                   'CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS; '
                   '(docs/SETUP.md, "Plain PostgreSQL"), then run lensroom migrate again.';
  END IF;
  -- Roles are shared by every database of the cluster: another database's
  -- migration may create one between the check and the CREATE.
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    BEGIN
      CREATE ROLE anon NOLOGIN NOINHERIT;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    BEGIN
      CREATE ROLE authenticated NOLOGIN NOINHERIT;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
    BEGIN
      CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
  END IF;
END $$;

CREATE SCHEMA IF NOT EXISTS auth;
DO $$
BEGIN
  IF to_regprocedure('auth.uid()') IS NULL THEN
    -- Supabase's definition: the sub claim of the request's JWT.
    CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $f$
      SELECT nullif(coalesce(
        current_setting('request.jwt.claim.sub', true),
        current_setting('request.jwt.claims', true)::jsonb ->> 'sub'), '')::uuid
    $f$;
  END IF;
END $$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;

-- The server's private functions live here, outside PostgREST's reach.
CREATE SCHEMA IF NOT EXISTS lensroom;
REVOKE ALL ON SCHEMA lensroom FROM PUBLIC;

-- Tables ---------------------------------------------------------------

CREATE TABLE IF NOT EXISTS public.credits (
  id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id    uuid NOT NULL UNIQUE,
  amount     integer NOT NULL DEFAULT 0 CHECK (amount >= 0),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.credit_transactions (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id       uuid NOT NULL,
  amount        integer NOT NULL,
  type          text NOT NULL,
  description   text,
  metadata      jsonb DEFAULT '{}'::jsonb,
  payment_id    uuid,
  generation_id uuid,
  created_at    timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.credit_transactions ADD COLUMN IF NOT EXISTS idempotency_key text;

CREATE TABLE IF NOT EXISTS public.generations (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id        uuid NOT NULL,
  type           text NOT NULL,
  model          text NOT NULL,
  prompt         text,
  status         text NOT NULL DEFAULT 'pending',
  result_urls    jsonb DEFAULT '[]'::jsonb,
  credits_used   integer DEFAULT 0,
  preview_path   text,
  poster_path    text,
  preview_status text DEFAULT 'none',
  metadata       jsonb DEFAULT '{}'::jsonb,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS stage text;
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS outputs_count integer NOT NULL DEFAULT 1;
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS succeeded_count integer NOT NULL DEFAULT 0;
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS failed_count integer NOT NULL DEFAULT 0;
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS provider text;
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS provider_task_ids jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS params jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS error_code text;
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS error_message text;
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS duration_ms bigint;
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS idempotency_key text;
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS finished_at timestamptz;
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS claimed_by uuid;
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS lease_until timestamptz;
-- Deletion: the row stays (the ledger points at it) but is hidden; its
-- objects are removed, purge_pending keeps a failed removal for a retry.
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS storage_keys jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS deleted_at timestamptz;
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS purge_pending boolean NOT NULL DEFAULT false;
-- Idempotency-Key on POST /api/infer: one generation per user and key (24 h).
ALTER TABLE public.generations ADD COLUMN IF NOT EXISTS request_hash text;

-- The original's CHECKs, widened by 'text' generations and 'canceled'.
ALTER TABLE public.generations DROP CONSTRAINT IF EXISTS generations_type_check;
ALTER TABLE public.generations ADD CONSTRAINT generations_type_check
  CHECK (type IN ('photo', 'video', 'edit', 'text'));
ALTER TABLE public.generations DROP CONSTRAINT IF EXISTS generations_status_check;
ALTER TABLE public.generations ADD CONSTRAINT generations_status_check
  CHECK (status IN ('pending', 'processing', 'success', 'failed', 'canceled'));
ALTER TABLE public.generations DROP CONSTRAINT IF EXISTS generations_preview_status_check;
ALTER TABLE public.generations ADD CONSTRAINT generations_preview_status_check
  CHECK (preview_status IN ('none', 'processing', 'ready'));

-- Indexes --------------------------------------------------------------

CREATE INDEX IF NOT EXISTS idx_credits_user_id ON public.credits (user_id);
CREATE INDEX IF NOT EXISTS idx_credit_transactions_user_created
  ON public.credit_transactions (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_credit_transactions_generation
  ON public.credit_transactions (generation_id);
-- Money rules as constraints: one charge and at most one refund per
-- generation, grants idempotent per user and key.
CREATE UNIQUE INDEX IF NOT EXISTS credit_transactions_one_charge
  ON public.credit_transactions (generation_id) WHERE type = 'generation' AND generation_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS credit_transactions_one_refund
  ON public.credit_transactions (generation_id) WHERE type = 'refund' AND generation_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS credit_transactions_idempotency
  ON public.credit_transactions (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_generations_user_created
  ON public.generations (user_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS idx_generations_status ON public.generations (status);
CREATE UNIQUE INDEX IF NOT EXISTS generations_idempotency
  ON public.generations (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_generations_purge
  ON public.generations (id) WHERE purge_pending;
CREATE INDEX IF NOT EXISTS idx_generations_lease
  ON public.generations (lease_until) WHERE status IN ('pending', 'processing');

-- updated_at -----------------------------------------------------------

CREATE OR REPLACE FUNCTION lensroom.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS credits_updated_at ON public.credits;
CREATE TRIGGER credits_updated_at BEFORE UPDATE ON public.credits
  FOR EACH ROW EXECUTE FUNCTION lensroom.touch_updated_at();
DROP TRIGGER IF EXISTS generations_updated_at ON public.generations;
CREATE TRIGGER generations_updated_at BEFORE UPDATE ON public.generations
  FOR EACH ROW EXECUTE FUNCTION lensroom.touch_updated_at();

-- Direct changes to public.credits keep the ledger whole -----------------
-- The functions below announce themselves with lensroom.ledger = on for
-- the rows they touch; any other change (an operator's INSERT ... ON
-- CONFLICT, a dashboard edit) gets an 'adjustment' row with the difference,
-- so balance = sum(ledger) holds and `lensroom audit` stays clean.

CREATE OR REPLACE FUNCTION lensroom.credits_ledger_guard() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  diff integer := NEW.amount - CASE WHEN TG_OP = 'INSERT' THEN 0 ELSE OLD.amount END;
BEGIN
  IF coalesce(current_setting('lensroom.ledger', true), '') = 'on' OR diff = 0 THEN
    RETURN NULL;
  END IF;
  INSERT INTO public.credit_transactions (user_id, amount, type, description, metadata)
  VALUES (NEW.user_id, diff, 'adjustment', 'Direct change to public.credits',
          jsonb_build_object('source', 'direct_sql', 'operation', TG_OP));
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS credits_ledger ON public.credits;
CREATE TRIGGER credits_ledger AFTER INSERT OR UPDATE OF amount ON public.credits
  FOR EACH ROW EXECUTE FUNCTION lensroom.credits_ledger_guard();

-- Credits functions ----------------------------------------------------

-- lensroom.adjust: the one place a balance moves outside a generation.
-- Idempotent by key; never below zero; no read-then-write race (the
-- guarded UPDATE takes the row lock).
CREATE OR REPLACE FUNCTION lensroom.adjust(
  p_user_id uuid, p_amount integer, p_type text, p_description text,
  p_generation_id uuid, p_metadata jsonb, p_key text,
  OUT status text, OUT balance integer, OUT transaction_id uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  prior record;
BEGIN
  IF p_key IS NOT NULL THEN
    SELECT t.id, t.amount, t.type INTO prior FROM public.credit_transactions t
     WHERE t.user_id = p_user_id AND t.idempotency_key = p_key;
    IF FOUND THEN
      transaction_id := prior.id;
      SELECT c.amount INTO balance FROM public.credits c WHERE c.user_id = p_user_id;
      status := CASE WHEN prior.amount = p_amount AND prior.type = p_type
                     THEN 'replayed' ELSE 'conflict' END;
      RETURN;
    END IF;
  END IF;
  PERFORM set_config('lensroom.ledger', 'on', true);
  INSERT INTO public.credits (user_id, amount) VALUES (p_user_id, 0)
    ON CONFLICT (user_id) DO NOTHING;
  UPDATE public.credits c SET amount = c.amount + p_amount
   WHERE c.user_id = p_user_id AND c.amount + p_amount >= 0
   RETURNING c.amount INTO balance;
  IF NOT FOUND THEN
    PERFORM set_config('lensroom.ledger', 'off', true);
    SELECT c.amount INTO balance FROM public.credits c WHERE c.user_id = p_user_id;
    status := 'insufficient';
    RETURN;
  END IF;
  INSERT INTO public.credit_transactions
    (user_id, amount, type, description, generation_id, metadata, idempotency_key)
  VALUES (p_user_id, p_amount, p_type, p_description, p_generation_id,
          coalesce(p_metadata, '{}'::jsonb), p_key)
  RETURNING id INTO transaction_id;
  PERFORM set_config('lensroom.ledger', 'off', true);
  status := 'ok';
END $$;

-- The original's RPC, same signature and result shape.
CREATE OR REPLACE FUNCTION public.adjust_credits(
  p_user_id uuid, p_amount integer, p_type text, p_description text DEFAULT NULL,
  p_generation_id uuid DEFAULT NULL, p_metadata jsonb DEFAULT '{}'::jsonb)
RETURNS json LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  r record;
BEGIN
  SELECT * INTO r FROM lensroom.adjust(p_user_id, p_amount, p_type, p_description,
                                       p_generation_id, p_metadata, NULL);
  IF r.status = 'insufficient' THEN
    RETURN json_build_object('success', false, 'error', 'Insufficient credits',
                             'current_balance', coalesce(r.balance, 0), 'required', -p_amount,
                             'new_balance', coalesce(r.balance, 0), 'transaction_id', NULL);
  END IF;
  RETURN json_build_object('success', true, 'new_balance', r.balance,
                           'transaction_id', r.transaction_id, 'error', NULL);
END $$;

CREATE OR REPLACE FUNCTION public.get_user_balance(p_user_id uuid)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v integer;
BEGIN
  PERFORM set_config('lensroom.ledger', 'on', true);
  INSERT INTO public.credits (user_id, amount) VALUES (p_user_id, 0)
    ON CONFLICT (user_id) DO NOTHING;
  PERFORM set_config('lensroom.ledger', 'off', true);
  SELECT c.amount INTO v FROM public.credits c WHERE c.user_id = p_user_id;
  RETURN v;
END $$;

-- Generations: reserve and settle, each one transaction and one round trip.

CREATE OR REPLACE FUNCTION lensroom.reserve(
  p_id uuid, p_user_id uuid, p_type text, p_model text, p_provider text, p_prompt text,
  p_params jsonb, p_outputs integer, p_cost integer, p_created_at timestamptz,
  p_owner uuid, p_lease_until timestamptz, p_key text, p_request_hash text,
  p_key_expired_before timestamptz,
  OUT ok boolean, OUT balance integer, OUT holder uuid, OUT same_request boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  h record;
BEGIN
  ok := false;
  -- A live generation holding the idempotency key answers instead; an
  -- expired one gives the key up.
  IF p_key IS NOT NULL THEN
    SELECT g.id, g.request_hash, g.created_at INTO h FROM public.generations g
     WHERE g.user_id = p_user_id AND g.idempotency_key = p_key FOR UPDATE;
    IF FOUND THEN
      IF h.created_at >= p_key_expired_before THEN
        holder := h.id;
        same_request := h.request_hash IS NOT DISTINCT FROM p_request_hash;
        RETURN;
      END IF;
      UPDATE public.generations SET idempotency_key = NULL WHERE id = h.id;
    END IF;
  END IF;
  BEGIN
    PERFORM set_config('lensroom.ledger', 'on', true);
    UPDATE public.credits c SET amount = c.amount - p_cost
     WHERE c.user_id = p_user_id AND c.amount >= p_cost
     RETURNING c.amount INTO balance;
    IF NOT FOUND THEN
      PERFORM set_config('lensroom.ledger', 'off', true);
      SELECT coalesce(max(c.amount), 0) INTO balance FROM public.credits c
       WHERE c.user_id = p_user_id;
      RETURN;
    END IF;
    INSERT INTO public.generations
      (id, user_id, type, model, prompt, status, credits_used, outputs_count, provider, params,
       created_at, updated_at, claimed_by, lease_until, idempotency_key, request_hash)
    VALUES (p_id, p_user_id, p_type, p_model, p_prompt, 'pending', p_cost, p_outputs,
            p_provider, coalesce(p_params, '{}'::jsonb), p_created_at, p_created_at, p_owner,
            p_lease_until, p_key, p_request_hash);
    INSERT INTO public.credit_transactions
      (user_id, amount, type, description, generation_id, metadata, created_at)
    VALUES (p_user_id, -p_cost, 'generation', 'Generation: ' || p_model || ' x' || p_outputs,
            p_id, jsonb_build_object('model', p_model, 'outputs', p_outputs), p_created_at);
    PERFORM set_config('lensroom.ledger', 'off', true);
  EXCEPTION WHEN unique_violation THEN
    -- A concurrent request with the same key won: its generation answers,
    -- and this block's debit was rolled back with it.
    SELECT g.id, g.request_hash INTO h FROM public.generations g
     WHERE g.user_id = p_user_id AND g.idempotency_key = p_key;
    holder := h.id;
    same_request := h.request_hash IS NOT DISTINCT FROM p_request_hash;
    balance := NULL;
    RETURN;
  END;
  ok := true;
END $$;

-- Final status, result or error, and one refund row for failed outputs.
-- Only unfinished rows are touched: settling twice changes nothing.
CREATE OR REPLACE FUNCTION lensroom.settle(
  p_id uuid, p_status text, p_urls jsonb, p_task_ids jsonb, p_succeeded integer,
  p_failed integer, p_refund integer, p_error_code text, p_error_message text,
  p_duration_ms bigint, p_text text, p_storage_keys jsonb,
  OUT ok boolean, OUT balance integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_user uuid;
BEGIN
  UPDATE public.generations g SET
    status = p_status, stage = NULL, result_urls = coalesce(p_urls, '[]'::jsonb),
    provider_task_ids = coalesce(p_task_ids, '[]'::jsonb), succeeded_count = p_succeeded,
    failed_count = p_failed, credits_used = g.credits_used - p_refund,
    error_code = p_error_code, error_message = p_error_message, duration_ms = p_duration_ms,
    finished_at = now(), lease_until = NULL,
    storage_keys = coalesce(p_storage_keys, '[]'::jsonb),
    metadata = CASE WHEN p_text IS NULL THEN coalesce(g.metadata, '{}'::jsonb)
                    ELSE coalesce(g.metadata, '{}'::jsonb) || jsonb_build_object('text', p_text) END
   WHERE g.id = p_id AND g.status IN ('pending', 'processing')
   RETURNING g.user_id INTO v_user;
  IF NOT FOUND THEN
    ok := false;
    RETURN;
  END IF;
  IF p_refund > 0 THEN
    PERFORM set_config('lensroom.ledger', 'on', true);
    INSERT INTO public.credit_transactions
      (user_id, amount, type, description, generation_id, metadata)
    VALUES (v_user, p_refund, 'refund', 'Refund: ' || coalesce(p_error_code, 'failed'), p_id,
            jsonb_build_object('failed_outputs', p_failed, 'error', p_error_message));
    UPDATE public.credits c SET amount = c.amount + p_refund WHERE c.user_id = v_user
      RETURNING c.amount INTO balance;
    PERFORM set_config('lensroom.ledger', 'off', true);
  ELSE
    SELECT c.amount INTO balance FROM public.credits c WHERE c.user_id = v_user;
  END IF;
  ok := true;
END $$;

-- Fails and refunds unfinished generations whose lease ran out (their
-- process died). Rows are claimed with FOR UPDATE SKIP LOCKED, so
-- concurrent reapers on several processes never take the same one.
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

-- Who may call what ----------------------------------------------------

REVOKE ALL ON FUNCTION public.adjust_credits(uuid, integer, text, text, uuid, jsonb)
  FROM PUBLIC, anon, authenticated;
REVOKE ALL ON FUNCTION public.get_user_balance(uuid) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.adjust_credits(uuid, integer, text, text, uuid, jsonb)
  TO service_role;
GRANT EXECUTE ON FUNCTION public.get_user_balance(uuid) TO service_role;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA lensroom FROM PUBLIC, anon, authenticated;

-- Row level security: users read their own rows; only the server and the
-- service role write.
ALTER TABLE public.credits ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.credit_transactions ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.generations ENABLE ROW LEVEL SECURITY;

-- Drop every write policy a client role could use (the original let users
-- insert and update their own generations), then (re)create ours.
DO $$
DECLARE
  p record;
BEGIN
  FOR p IN SELECT policyname, tablename FROM pg_policies
            WHERE schemaname = 'public'
              AND tablename IN ('credits', 'credit_transactions', 'generations')
              AND cmd <> 'SELECT'
  LOOP
    EXECUTE format('DROP POLICY %I ON public.%I', p.policyname, p.tablename);
  END LOOP;
END $$;

DROP POLICY IF EXISTS "Users can view own credits" ON public.credits;
CREATE POLICY "Users can view own credits" ON public.credits
  FOR SELECT TO authenticated USING (user_id = auth.uid());
DROP POLICY IF EXISTS "Users can view own transactions" ON public.credit_transactions;
CREATE POLICY "Users can view own transactions" ON public.credit_transactions
  FOR SELECT TO authenticated USING (user_id = auth.uid());
DROP POLICY IF EXISTS "Users can view own generations" ON public.generations;
CREATE POLICY "Users can view own generations" ON public.generations
  FOR SELECT TO authenticated USING (user_id = auth.uid() AND deleted_at IS NULL);

REVOKE ALL ON public.credits, public.credit_transactions, public.generations FROM anon;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE
  ON public.credits, public.credit_transactions, public.generations FROM authenticated;
GRANT SELECT ON public.credits, public.credit_transactions, public.generations TO authenticated;
GRANT ALL ON public.credits, public.credit_transactions, public.generations TO service_role;

-- Supabase Storage, when present: the public bucket and folder policies.
DO $$
BEGIN
  IF to_regclass('storage.buckets') IS NULL THEN
    RETURN;
  END IF;
  INSERT INTO storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
  VALUES ('generations', 'generations', true, 52428800,
          ARRAY['image/png', 'image/jpeg', 'image/webp', 'image/gif', 'video/mp4', 'video/webm'])
  ON CONFLICT (id) DO UPDATE SET public = true, file_size_limit = EXCLUDED.file_size_limit,
                                 allowed_mime_types = EXCLUDED.allowed_mime_types;
  IF to_regclass('storage.objects') IS NOT NULL THEN
    EXECUTE 'DROP POLICY IF EXISTS "LensRoom public read" ON storage.objects';
    EXECUTE 'CREATE POLICY "LensRoom public read" ON storage.objects FOR SELECT '
            'USING (bucket_id = ''generations'')';
    EXECUTE 'DROP POLICY IF EXISTS "LensRoom users upload to own folder" ON storage.objects';
    EXECUTE 'CREATE POLICY "LensRoom users upload to own folder" ON storage.objects FOR INSERT '
            'TO authenticated WITH CHECK (bucket_id = ''generations'' AND '
            '(storage.foldername(name))[1] = auth.uid()::text)';
    EXECUTE 'DROP POLICY IF EXISTS "LensRoom users update own folder" ON storage.objects';
    EXECUTE 'CREATE POLICY "LensRoom users update own folder" ON storage.objects FOR UPDATE '
            'TO authenticated USING (bucket_id = ''generations'' AND '
            '(storage.foldername(name))[1] = auth.uid()::text)';
  END IF;
END $$;

-- JSON shapes the server answers with (camelCase, ISO-8601 UTC times).
CREATE OR REPLACE FUNCTION lensroom.iso(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = '' AS $$
  SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE OR REPLACE FUNCTION lensroom.generation_json(g public.generations) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT jsonb_build_object(
    'id', g.id, 'userId', g.user_id, 'type', g.type, 'modelId', g.model, 'prompt', g.prompt,
    'status', g.status, 'stage', g.stage, 'url', coalesce(g.result_urls, '[]'::jsonb) -> 0,
    'resultUrls', coalesce(g.result_urls, '[]'::jsonb), 'creditsUsed', g.credits_used,
    'outputsCount', g.outputs_count, 'succeededCount', g.succeeded_count,
    'failedCount', g.failed_count, 'provider', g.provider, 'taskIds', g.provider_task_ids,
    'params', g.params,
    'error', CASE WHEN g.error_code IS NULL THEN NULL
                  ELSE jsonb_build_object('code', g.error_code, 'message', g.error_message) END,
    'durationMs', g.duration_ms, 'createdAt', lensroom.iso(g.created_at),
    'updatedAt', lensroom.iso(g.updated_at), 'finishedAt', lensroom.iso(g.finished_at),
    'text', g.metadata -> 'text')
$$;

CREATE OR REPLACE FUNCTION lensroom.transaction_json(t public.credit_transactions) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT jsonb_build_object(
    'id', t.id, 'amount', t.amount, 'type', t.type, 'description', t.description,
    'metadata', coalesce(t.metadata, '{}'::jsonb), 'generationId', t.generation_id,
    'createdAt', lensroom.iso(t.created_at))
$$;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA lensroom FROM PUBLIC, anon, authenticated;
