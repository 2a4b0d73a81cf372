-- LensRoom 0002: resuming provider tasks after a crash.
-- A generation whose process died is failed and refunded only when the
-- provider never accepted it (no task id recorded); one with task ids is
-- claimed by a live process (lensroom.claim_resumable) and its tasks are
-- polled to the end. Idempotent: CREATE OR REPLACE only.

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

CREATE OR REPLACE FUNCTION lensroom.claim_resumable(p_owner uuid, p_until timestamptz,
                                                    p_limit integer)
RETURNS SETOF jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = '' AS $$
  UPDATE public.generations g SET claimed_by = p_owner, lease_until = p_until
   WHERE g.id IN (
     SELECT x.id FROM public.generations x
      WHERE x.status IN ('pending', 'processing')
        AND (x.lease_until IS NULL OR x.lease_until < now())
        AND x.claimed_by IS DISTINCT FROM p_owner
        AND coalesce(x.provider_task_ids, '[]'::jsonb) <> '[]'::jsonb
      ORDER BY x.created_at
      LIMIT p_limit
      FOR UPDATE SKIP LOCKED)
  RETURNING lensroom.generation_json(g);
$$;

REVOKE ALL ON FUNCTION lensroom.claim_resumable(uuid, timestamptz, integer)
  FROM PUBLIC, anon, authenticated;
REVOKE ALL ON FUNCTION lensroom.reap_expired(uuid, integer) FROM PUBLIC, anon, authenticated;
