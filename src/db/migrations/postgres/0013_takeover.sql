-- LensRoom 0013: a dead process's work is taken over within one lease.
--
-- 0012 took a row only when its own lease had run out AND its owner had no
-- live heartbeat, so the newest rows of a killed process waited a whole
-- lease after its heartbeat had already stopped. Now the heartbeat alone
-- decides for an owner that has one (the server beats every lease/10 and
-- its heartbeat lives lease/2); the row's lease decides only for owners
-- without a heartbeat row: processes that stopped cleanly (they delete
-- theirs and end their rows' leases) and versions before 0012. A caller
-- that may have missed others' beats (just started, or back from a
-- database outage) passes p_dead false and takes only the latter.
--
-- The reaper was a loop of settle() calls in created_at order: it took
-- users' balance rows in that order while a live server's batches take
-- them in user order, so the two deadlocked (PostgreSQL broke the circle
-- after deadlock_timeout and the reaper's whole batch was lost until its
-- next round), and it cost a PL/pgSQL call per row; each batch also
-- sorted every unfinished row by age (0.07 s per batch at 55k rows, so a
-- big backlog was quadratic). Now one statement fails, refunds and records
-- a batch, after locking the balances in user order, and a batch takes
-- the first abandoned rows it finds. Idempotent.

-- The rule, in one place: work claimed by p_claimed_by (lease p_lease_until;
-- p_alive_until the owner's heartbeat, NULL when it has none) is abandoned
-- for p_owner; an ended heartbeat counts only when p_dead. A plain SQL
-- expression, so the planner inlines it.
CREATE OR REPLACE FUNCTION lensroom.abandoned(p_owner uuid, p_claimed_by uuid,
  p_lease_until timestamptz, p_alive_until timestamptz, p_dead boolean)
RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT p_claimed_by IS DISTINCT FROM p_owner
     AND CASE WHEN p_alive_until IS NULL
              THEN p_lease_until IS NULL OR p_lease_until < pg_catalog.now()
              ELSE p_dead AND p_alive_until <= pg_catalog.now() END
$$;
REVOKE ALL ON FUNCTION lensroom.abandoned(uuid, uuid, timestamptz, timestamptz, boolean)
  FROM PUBLIC, anon, authenticated;

-- The 2-argument reaper stays 0012's, for processes of earlier versions
-- during a rolling upgrade.
CREATE OR REPLACE FUNCTION lensroom.reap_expired(p_owner uuid, p_limit integer, p_dead boolean)
RETURNS TABLE (generation_id uuid, refund integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_ids uuid[];
  v_msg text := 'The server running this generation stopped before it finished; '
                'the credits were refunded';
BEGIN
  SELECT array_agg(s.id) INTO v_ids FROM (
    SELECT x.id FROM public.generations x
      LEFT JOIN lensroom.instances i ON i.owner = x.claimed_by
     WHERE x.status IN ('pending', 'processing')
       AND lensroom.abandoned(p_owner, x.claimed_by, x.lease_until, i.alive_until, p_dead)
       AND coalesce(x.provider_task_ids, '[]'::jsonb) = '[]'::jsonb
       AND x.run_id IS NULL
     LIMIT p_limit
     FOR UPDATE OF x SKIP LOCKED) s;
  IF v_ids IS NULL THEN
    RETURN;
  END IF;
  PERFORM 1 FROM public.credits c
   WHERE c.user_id IN (SELECT g.user_id FROM public.generations g WHERE g.id = ANY (v_ids))
   ORDER BY c.user_id
     FOR UPDATE;
  PERFORM set_config('lensroom.ledger', 'on', true);
  RETURN QUERY
  WITH charged AS (
    SELECT g.id, g.credits_used AS back FROM public.generations g WHERE g.id = ANY (v_ids)
  ), failed AS (
    UPDATE public.generations g SET
      status = 'failed', stage = NULL, result_urls = '[]'::jsonb,
      provider_task_ids = '[]'::jsonb, succeeded_count = 0, failed_count = g.outputs_count,
      credits_used = 0, error_code = 'interrupted', error_message = v_msg, duration_ms = NULL,
      finished_at = now(), lease_until = NULL, storage_keys = '[]'::jsonb,
      metadata = coalesce(g.metadata, '{}'::jsonb)
      FROM charged
     WHERE g.id = charged.id AND g.status IN ('pending', 'processing')
    RETURNING g.id, g.user_id, g.outputs_count, charged.back
  ), ledger AS (
    INSERT INTO public.credit_transactions
      (user_id, amount, type, description, generation_id, metadata)
    SELECT f.user_id, f.back, 'refund', 'Refund: interrupted', f.id,
           jsonb_build_object('failed_outputs', f.outputs_count, 'error', v_msg)
      FROM failed f WHERE f.back > 0
  ), balances AS (
    UPDATE public.credits c SET amount = c.amount + s.total
      FROM (SELECT f.user_id, sum(f.back)::integer AS total FROM failed f
             WHERE f.back > 0 GROUP BY f.user_id) s
     WHERE c.user_id = s.user_id
  ), outbox AS (
    INSERT INTO lensroom.webhook_outbox (generation_id, user_id, event_type, created_at)
    SELECT f.id, f.user_id, 'generation.failed',
           (extract(epoch FROM clock_timestamp()) * 1000)::bigint
      FROM failed f
     WHERE EXISTS (SELECT 1 FROM lensroom.webhook_endpoints e
                    WHERE ',' || e.events || ',' LIKE '%,generation.failed,%'
                       OR ',' || e.events || ',' LIKE '%,credits.low,%')
        OR EXISTS (SELECT 1 FROM lensroom.generation_webhooks h WHERE h.generation_id = f.id)
    ON CONFLICT (generation_id) DO NOTHING
  )
  SELECT f.id, coalesce(f.back, 0) FROM failed f;
  PERFORM set_config('lensroom.ledger', 'off', true);
END $$;
REVOKE ALL ON FUNCTION lensroom.reap_expired(uuid, integer, boolean)
  FROM PUBLIC, anon, authenticated;
