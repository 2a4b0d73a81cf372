-- LensRoom 0014: a writer's batch of reserves and settles as set-based
-- statements.
--
-- The writer (src/db/pg.c) used to send each reserve and settle of a
-- batch as its own call of lensroom.reserve / lensroom.settle: N PL/pgSQL
-- calls, each running its statements one row at a time, and each row
-- firing the rollup triggers of 0010 (a PL/pgSQL call and an upsert per
-- row). On one writer connection that serial work, not the commit, bounded
-- the throughput. lensroom.write_batch takes the batch's calls as JSON
-- arrays (each call's parameters in the order of the per-call functions)
-- and answers one row per call, as those would have, running a few
-- statements for the whole batch:
--   * it locks the balance rows it may move in user order first (the
--     users of the reserves, of the settles that refund, and p_lock: those
--     of further calls in the same transaction), so batches of several
--     processes never wait on each other in a circle;
--   * reserves are decided in batch order, per user while the balance
--     lasts: a short balance answers that call alone; the idempotency
--     rules are lensroom.reserve's (a live holder answers, an expired one
--     gives the key up, a key taken earlier in the same batch holds for
--     the later calls); a key taken meanwhile by another process makes the
--     insert fail, and the writer reruns the batch one call at a time
--     through lensroom.reserve, which answers that race as it always did;
--   * a settle is lensroom.settle's update, refund row, balance and
--     outbox row, set-based; a second settle of one generation in a batch
--     finds it final;
--   * the rollups (0010) are added once per batch: the row triggers skip
--     rows written while lensroom.rollups = 'batch', which only this
--     function sets, and only for its own statements.
-- lensroom.reserve and lensroom.settle stay as they are: the writer's
-- fallback, the reaper, runs and processes of earlier versions call them.
-- Idempotent: CREATE OR REPLACE and DROP/CREATE TRIGGER only.

CREATE OR REPLACE FUNCTION lensroom.write_batch(p_reserves jsonb, p_settles jsonb, p_lock jsonb)
RETURNS TABLE (a_kind "char", a_i integer, a_ok boolean, a_balance integer, a_holder uuid,
               a_same boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  n integer := coalesce(jsonb_array_length(p_reserves), 0);
  r_user uuid[];
  r_cost integer[];
  r_key text[];
  r_hash text[];
  r_created timestamptz[];
  r_expiry timestamptz[];
  r_ok boolean[] := array_fill(false, ARRAY[n]);
  r_bal integer[] := array_fill(NULL::integer, ARRAY[n]);
  r_holder uuid[] := array_fill(NULL::uuid, ARRAY[n]);
  r_same boolean[] := array_fill(NULL::boolean, ARRAY[n]);
  u_id uuid[];
  u_bal integer[];
  s_id uuid[];
  s_user uuid[];
  -- idempotency keys in use: user id || key (a uuid's text is 36 long),
  -- the holder, its request hash and creation, and the batch call that
  -- took it (NULL: a row already in the table)
  h_uk text[];
  h_id uuid[];
  h_hash text[];
  h_created timestamptz[];
  h_call integer[];
  expired uuid[] := '{}';
  v_k integer;
  v_j integer;
  v_u integer;
BEGIN
  SELECT array_agg((t.e->>1)::uuid ORDER BY t.i), array_agg((t.e->>8)::integer ORDER BY t.i),
         array_agg(t.e->>12 ORDER BY t.i), array_agg(t.e->>13 ORDER BY t.i),
         array_agg((t.e->>9)::timestamptz ORDER BY t.i),
         array_agg((t.e->>14)::timestamptz ORDER BY t.i)
    INTO r_user, r_cost, r_key, r_hash, r_created, r_expiry
    FROM jsonb_array_elements(p_reserves) WITH ORDINALITY AS t(e, i);

  -- The keys' current holders, locked (before the balances, as
  -- lensroom.reserve does).
  IF n > 0 AND EXISTS (SELECT 1 FROM unnest(r_key) AS x(key) WHERE x.key IS NOT NULL) THEN
    SELECT array_agg(h.user_id::text || h.idempotency_key), array_agg(h.id),
           array_agg(h.request_hash), array_agg(h.created_at), array_agg(NULL::integer)
      INTO h_uk, h_id, h_hash, h_created, h_call
      FROM (SELECT g.user_id, g.idempotency_key, g.id, g.request_hash, g.created_at
              FROM public.generations g
             WHERE g.user_id = ANY (r_user) AND g.idempotency_key = ANY (r_key)
               AND g.user_id::text || g.idempotency_key = ANY
                   (SELECT x.u::text || x.key FROM unnest(r_user, r_key) AS x(u, key))
             ORDER BY g.user_id, g.idempotency_key FOR UPDATE) h;
  END IF;

  -- The generations it settles, locked in id order BEFORE any balance:
  -- the reaper (0013) takes generation rows without waiting (SKIP LOCKED)
  -- and then waits for balances, so a batch that waited for a generation
  -- row while holding a balance could close a circle with it. Their users
  -- come from the rows, whatever the caller passed.
  IF coalesce(jsonb_array_length(p_settles), 0) > 0 THEN
    SELECT array_agg((e->>0)::uuid) INTO s_id FROM jsonb_array_elements(p_settles) e;
    SELECT array_agg(x.user_id) INTO s_user
      FROM (SELECT g.id, g.user_id FROM public.generations g WHERE g.id = ANY (s_id)
             ORDER BY g.id FOR UPDATE) x;
  END IF;

  -- (arrays compared with = ANY: the plans, cached once for every batch
  -- size, then look rows up by index whatever the tables hold)
  SELECT array_agg(x.u) INTO u_id
    FROM (SELECT unnest(r_user) AS u
          UNION SELECT unnest(s_user)
          UNION SELECT (e#>>'{}')::uuid FROM jsonb_array_elements(p_lock) e) x;
  SELECT array_agg(c.user_id), array_agg(c.amount) INTO u_id, u_bal
    FROM (SELECT c.user_id, c.amount FROM public.credits c WHERE c.user_id = ANY (u_id)
           ORDER BY c.user_id FOR UPDATE) c;

  FOR v_k IN 1..n LOOP
    IF r_key[v_k] IS NOT NULL THEN
      v_j := array_position(h_uk, r_user[v_k]::text || r_key[v_k]);
      IF v_j IS NOT NULL THEN
        IF h_created[v_j] >= r_expiry[v_k] THEN
          r_holder[v_k] := h_id[v_j];
          r_same[v_k] := h_hash[v_j] IS NOT DISTINCT FROM r_hash[v_k];
          CONTINUE;
        END IF;
        IF h_call[v_j] IS NULL THEN
          expired := expired || h_id[v_j];
        ELSE
          r_key[h_call[v_j]] := NULL;
        END IF;
        h_uk[v_j] := NULL;
      END IF;
    END IF;
    v_u := array_position(u_id, r_user[v_k]);
    IF v_u IS NULL OR u_bal[v_u] < r_cost[v_k] THEN
      r_bal[v_k] := coalesce(u_bal[v_u], 0);
      CONTINUE;
    END IF;
    u_bal[v_u] := u_bal[v_u] - r_cost[v_k];
    r_ok[v_k] := true;
    r_bal[v_k] := u_bal[v_u];
    IF r_key[v_k] IS NOT NULL THEN
      h_uk := h_uk || (r_user[v_k]::text || r_key[v_k]);
      h_id := h_id || (p_reserves->(v_k - 1)->>0)::uuid;
      h_hash := h_hash || r_hash[v_k];
      h_created := h_created || r_created[v_k];
      h_call := h_call || v_k;
    END IF;
  END LOOP;

  IF expired <> '{}' THEN
    UPDATE public.generations g SET idempotency_key = NULL WHERE g.id = ANY (expired);
  END IF;
  PERFORM set_config('lensroom.ledger', 'on', true);
  PERFORM set_config('lensroom.rollups', 'batch', true);
  IF n > 0 AND true = ANY (r_ok) THEN
    UPDATE public.credits c SET amount = u_bal[array_position(u_id, c.user_id)]
     WHERE c.user_id = ANY (u_id) AND c.amount <> u_bal[array_position(u_id, c.user_id)];
    WITH charged AS (
      SELECT (t.e->>0)::uuid AS id, (t.e->>1)::uuid AS user_id, t.e->>2 AS type,
             t.e->>3 AS model, t.e->>4 AS provider, t.e->>5 AS prompt, (t.e->>6)::jsonb AS params,
             t.e->>7 AS outputs, (t.e->>8)::integer AS cost,
             (t.e->>9)::timestamptz AS created_at, (t.e->>10)::uuid AS owner,
             (t.e->>11)::timestamptz AS lease_until, r_key[t.i] AS key, t.e->>13 AS hash
        FROM jsonb_array_elements(p_reserves) WITH ORDINALITY AS t(e, i)
       WHERE r_ok[t.i]),
    gen AS (
      INSERT INTO public.generations
        (id, user_id, type, model, prompt, status, credits_used, outputs_count, provider, params,
         created_at, updated_at, claimed_by, lease_until, idempotency_key, request_hash)
      SELECT c.id, c.user_id, c.type, c.model, c.prompt, 'pending', c.cost, c.outputs::integer,
             c.provider, coalesce(c.params, '{}'::jsonb), c.created_at, c.created_at, c.owner,
             c.lease_until, c.key, c.hash
        FROM charged c),
    ledger AS (
      INSERT INTO public.credit_transactions
        (user_id, amount, type, description, generation_id, metadata, created_at)
      SELECT c.user_id, -c.cost, 'generation', 'Generation: ' || c.model || ' x' || c.outputs,
             c.id, jsonb_build_object('model', c.model, 'outputs', c.outputs::integer),
             c.created_at
        FROM charged c),
    days AS (
      INSERT INTO lensroom.generation_days AS d (day, model, backend, created)
      SELECT (c.created_at AT TIME ZONE 'UTC')::date, c.model, pg_backend_pid(), count(*)
        FROM charged c GROUP BY 1, 2
      ON CONFLICT (day, model, backend) DO UPDATE SET created = d.created + EXCLUDED.created)
    INSERT INTO lensroom.ledger_days AS d (day, backend, rows, spent)
    SELECT (c.created_at AT TIME ZONE 'UTC')::date, pg_backend_pid(), count(*), sum(c.cost)
      FROM charged c GROUP BY 1
    ON CONFLICT (day, backend) DO UPDATE SET rows = d.rows + EXCLUDED.rows,
                                             spent = d.spent + EXCLUDED.spent;
  END IF;
  RETURN QUERY SELECT 'r'::"char", x.c, r_ok[x.c], r_bal[x.c], r_holder[x.c], r_same[x.c]
                 FROM generate_series(1, n) AS x(c);

  IF coalesce(jsonb_array_length(p_settles), 0) > 0 THEN
    RETURN QUERY
    WITH s AS (
      SELECT t.i::integer AS i, (t.e->>0)::uuid AS id, t.e->>1 AS status, (t.e->>2)::jsonb AS urls,
             (t.e->>3)::jsonb AS task_ids, (t.e->>4)::integer AS succeeded,
             (t.e->>5)::integer AS failed, (t.e->>6)::integer AS refund, t.e->>7 AS error_code,
             t.e->>8 AS error_message, (t.e->>9)::bigint AS duration_ms, t.e->>10 AS text,
             (t.e->>11)::jsonb AS storage_keys
        FROM jsonb_array_elements(p_settles) WITH ORDINALITY AS t(e, i)),
    first AS (SELECT DISTINCT ON (s.id) s.* FROM s ORDER BY s.id, s.i),
    upd AS (
      UPDATE public.generations g SET
        status = f.status, stage = NULL, result_urls = coalesce(f.urls, '[]'::jsonb),
        provider_task_ids = coalesce(f.task_ids, '[]'::jsonb), succeeded_count = f.succeeded,
        failed_count = f.failed, credits_used = g.credits_used - f.refund,
        error_code = f.error_code, error_message = f.error_message, duration_ms = f.duration_ms,
        finished_at = now(), lease_until = NULL,
        storage_keys = coalesce(f.storage_keys, '[]'::jsonb),
        metadata = CASE WHEN f.text IS NULL THEN coalesce(g.metadata, '{}'::jsonb)
                        ELSE coalesce(g.metadata, '{}'::jsonb) || jsonb_build_object('text', f.text)
                   END
        FROM first f
       WHERE g.id = ANY (s_id) AND g.id = f.id AND g.status IN ('pending', 'processing')
      RETURNING f.i, g.id, g.user_id, g.model, g.created_at, f.status, f.refund, f.failed,
                f.error_code, f.error_message,
                'generation.' || CASE f.status WHEN 'success' THEN 'succeeded'
                                                ELSE f.status END AS event),
    refund AS (
      INSERT INTO public.credit_transactions
        (user_id, amount, type, description, generation_id, metadata)
      SELECT u.user_id, u.refund, 'refund', 'Refund: ' || coalesce(u.error_code, 'failed'), u.id,
             jsonb_build_object('failed_outputs', u.failed, 'error', u.error_message)
        FROM upd u WHERE u.refund > 0),
    credit AS (
      UPDATE public.credits c SET amount = c.amount + x.total
        FROM (SELECT u.user_id, sum(u.refund) AS total FROM upd u WHERE u.refund > 0
               GROUP BY u.user_id) x
       WHERE c.user_id = x.user_id
      RETURNING c.user_id, c.amount),
    outbox AS (
      INSERT INTO lensroom.webhook_outbox (generation_id, user_id, event_type, created_at)
      SELECT u.id, u.user_id, u.event, (extract(epoch FROM clock_timestamp()) * 1000)::bigint
        FROM upd u
       WHERE EXISTS (SELECT 1 FROM lensroom.webhook_endpoints e
                      WHERE ',' || e.events || ',' LIKE '%,' || u.event || ',%'
                         OR ',' || e.events || ',' LIKE '%,credits.low,%')
          OR EXISTS (SELECT 1 FROM lensroom.generation_webhooks h WHERE h.generation_id = u.id)
      ON CONFLICT (generation_id) DO NOTHING),
    days AS (
      INSERT INTO lensroom.generation_days AS d (day, model, backend, succeeded, failed, canceled)
      SELECT (u.created_at AT TIME ZONE 'UTC')::date, u.model, pg_backend_pid(),
             count(*) FILTER (WHERE u.status = 'success'),
             count(*) FILTER (WHERE u.status = 'failed'),
             count(*) FILTER (WHERE u.status = 'canceled')
        FROM upd u GROUP BY 1, 2
      ON CONFLICT (day, model, backend) DO UPDATE SET
        succeeded = d.succeeded + EXCLUDED.succeeded, failed = d.failed + EXCLUDED.failed,
        canceled = d.canceled + EXCLUDED.canceled),
    ledger_days AS (
      INSERT INTO lensroom.ledger_days AS d (day, backend, rows, refunded)
      SELECT (now() AT TIME ZONE 'UTC')::date, pg_backend_pid(), count(*), sum(u.refund)
        FROM upd u WHERE u.refund > 0 HAVING count(*) > 0
      ON CONFLICT (day, backend) DO UPDATE SET rows = d.rows + EXCLUDED.rows,
                                               refunded = d.refunded + EXCLUDED.refunded)
    -- a settle's balance is the one after its own refund: the user's
    -- balance now less the refunds of the user's later settles
    SELECT 's'::"char", s.i, u.id IS NOT NULL,
           CASE WHEN u.id IS NOT NULL THEN
             coalesce(cr.amount, c.amount)
             - coalesce(sum(u.refund) OVER (PARTITION BY u.user_id ORDER BY u.i
                                            ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING), 0)
           END::integer,
           NULL::uuid, NULL::boolean
      FROM s LEFT JOIN upd u ON u.i = s.i
      LEFT JOIN credit cr ON cr.user_id = u.user_id
      LEFT JOIN public.credits c ON c.user_id = u.user_id;
  END IF;
  PERFORM set_config('lensroom.ledger', 'off', true);
  PERFORM set_config('lensroom.rollups', '', true);
END $$;

REVOKE ALL ON FUNCTION lensroom.write_batch(jsonb, jsonb, jsonb) FROM PUBLIC, anon, authenticated;

-- 0010's row triggers, skipping the rows lensroom.write_batch books itself.
DROP TRIGGER IF EXISTS generations_days_insert ON public.generations;
CREATE TRIGGER generations_days_insert AFTER INSERT OR DELETE ON public.generations
  FOR EACH ROW WHEN (current_setting('lensroom.rollups', true) IS DISTINCT FROM 'batch')
  EXECUTE FUNCTION lensroom.generation_days_track();
DROP TRIGGER IF EXISTS generations_days_update ON public.generations;
CREATE TRIGGER generations_days_update AFTER UPDATE OF status, model, created_at
  ON public.generations FOR EACH ROW
  WHEN (((OLD.status IS DISTINCT FROM NEW.status
          AND (OLD.status IN ('success', 'failed', 'canceled')
               OR NEW.status IN ('success', 'failed', 'canceled')))
         OR OLD.model IS DISTINCT FROM NEW.model OR OLD.created_at IS DISTINCT FROM NEW.created_at)
        AND current_setting('lensroom.rollups', true) IS DISTINCT FROM 'batch')
  EXECUTE FUNCTION lensroom.generation_days_track();
DROP TRIGGER IF EXISTS credit_transactions_days_insert ON public.credit_transactions;
CREATE TRIGGER credit_transactions_days_insert AFTER INSERT OR DELETE
  ON public.credit_transactions FOR EACH ROW
  WHEN (current_setting('lensroom.rollups', true) IS DISTINCT FROM 'batch')
  EXECUTE FUNCTION lensroom.ledger_days_track();
