-- LensRoom 0012: one heartbeat per server process. A process used to renew
-- the lease of every row it owned, one UPDATE as large as its backlog; run
-- late under load, it let live rows expire and another process reaped them
-- as 'interrupted'. Now a process renews only its row in lensroom.instances,
-- and work counts as abandoned only when its row's lease ran out AND the
-- process that claimed it has no live heartbeat. A process that stops
-- cleanly expires its heartbeat (and its rows' leases), so a successor
-- takes over at once. Idempotent.
CREATE TABLE IF NOT EXISTS lensroom.instances (
  owner       uuid PRIMARY KEY,
  alive_until timestamptz NOT NULL
);
REVOKE ALL ON lensroom.instances FROM PUBLIC, anon, authenticated;

-- 0008's reaper, sparing the work of a process with a live heartbeat.
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
       AND NOT EXISTS (SELECT 1 FROM lensroom.instances i
                        WHERE i.owner = x.claimed_by AND i.alive_until > now())
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

-- 0002's claimer (called by processes of the first version only, during a
-- rolling upgrade), under the same rule.
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
        AND NOT EXISTS (SELECT 1 FROM lensroom.instances i
                         WHERE i.owner = x.claimed_by AND i.alive_until > now())
        AND coalesce(x.provider_task_ids, '[]'::jsonb) <> '[]'::jsonb
      ORDER BY x.created_at
      LIMIT p_limit
      FOR UPDATE SKIP LOCKED)
  RETURNING lensroom.generation_json(g);
$$;
REVOKE ALL ON FUNCTION lensroom.claim_resumable(uuid, timestamptz, integer)
  FROM PUBLIC, anon, authenticated;
