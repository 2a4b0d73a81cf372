-- LensRoom 0003: lensroom.reserve without an exception block.
-- A PL/pgSQL EXCEPTION block opens a subtransaction on every call. The
-- server now runs many reservations in one transaction (group commit), and
-- more than 64 subtransactions in one transaction overflow PostgreSQL's
-- per-backend cache, which slows every snapshot on the server. The race
-- the block caught (two requests with one Idempotency-Key at once) is now
-- settled by INSERT ... ON CONFLICT DO NOTHING on the key's unique index
-- (the loser gives its debit back). Same signature and answers as 0001's.
-- Idempotent: CREATE OR REPLACE only.

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
  -- When a concurrent request took the key since the check above, the
  -- insert waits for it and then inserts nothing: its generation answers
  -- and the debit is given back (a net change of zero, no ledger row).
  INSERT INTO public.generations
    (id, user_id, type, model, prompt, status, credits_used, outputs_count, provider, params,
     created_at, updated_at, claimed_by, lease_until, idempotency_key, request_hash)
  VALUES (p_id, p_user_id, p_type, p_model, p_prompt, 'pending', p_cost, p_outputs,
          p_provider, coalesce(p_params, '{}'::jsonb), p_created_at, p_created_at, p_owner,
          p_lease_until, p_key, p_request_hash)
  ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING;
  IF NOT FOUND THEN
    UPDATE public.credits c SET amount = c.amount + p_cost WHERE c.user_id = p_user_id;
    PERFORM set_config('lensroom.ledger', 'off', true);
    SELECT g.id, g.request_hash INTO h FROM public.generations g
     WHERE g.user_id = p_user_id AND g.idempotency_key = p_key;
    holder := h.id;
    same_request := h.request_hash IS NOT DISTINCT FROM p_request_hash;
    balance := NULL;
    RETURN;
  END IF;
  INSERT INTO public.credit_transactions
    (user_id, amount, type, description, generation_id, metadata, created_at)
  VALUES (p_user_id, -p_cost, 'generation', 'Generation: ' || p_model || ' x' || p_outputs,
          p_id, jsonb_build_object('model', p_model, 'outputs', p_outputs), p_created_at);
  PERFORM set_config('lensroom.ledger', 'off', true);
  ok := true;
END $$;

REVOKE ALL ON FUNCTION lensroom.reserve(uuid, uuid, text, text, text, text, jsonb, integer,
  integer, timestamptz, uuid, timestamptz, text, text, timestamptz)
  FROM PUBLIC, anon, authenticated;
