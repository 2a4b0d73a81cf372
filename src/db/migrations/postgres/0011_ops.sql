-- Outgoing webhooks without a write of their own on the request path.
--
-- lensroom.webhook_outbox is a transactional outbox: lensroom.settle
-- writes a row in its own transaction when any webhook wants to hear of
-- the generation's end (an endpoint subscribed to its event type or to
-- credits.low, or the generation's own webhook). The webhook engine
-- claims rows with FOR UPDATE SKIP LOCKED (several processes never take
-- the same one; a dead process's claim runs out), renders the event and
-- turns each row into its deliveries, off the request path. An event is
-- never lost between the settlement and its queuing. Idempotent.
CREATE TABLE IF NOT EXISTS lensroom.webhook_outbox (
  generation_id uuid PRIMARY KEY,
  user_id       uuid NOT NULL,
  event_type    text NOT NULL,
  claim_token   text,
  claimed_until bigint,
  created_at    bigint NOT NULL
);

-- A rotated endpoint secret keeps signing beside the new one until
-- valid_until (ms since the epoch).
CREATE TABLE IF NOT EXISTS lensroom.webhook_previous_secrets (
  endpoint_id uuid PRIMARY KEY,
  secret      text NOT NULL,
  valid_until bigint NOT NULL
);

-- settle as before, plus the outbox row (same signature: reap_expired
-- and every caller get it).
CREATE OR REPLACE FUNCTION lensroom.settle(
  p_id uuid, p_status text, p_urls jsonb, p_task_ids jsonb, p_succeeded integer,
  p_failed integer, p_refund integer, p_error_code text, p_error_message text,
  p_duration_ms bigint, p_text text, p_storage_keys jsonb,
  OUT ok boolean, OUT balance integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_user uuid;
  v_type text := 'generation.' || CASE p_status WHEN 'success' THEN 'succeeded' ELSE p_status END;
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
  IF EXISTS (SELECT 1 FROM lensroom.webhook_endpoints e
              WHERE ',' || e.events || ',' LIKE '%,' || v_type || ',%'
                 OR ',' || e.events || ',' LIKE '%,credits.low,%')
     OR EXISTS (SELECT 1 FROM lensroom.generation_webhooks h WHERE h.generation_id = p_id) THEN
    INSERT INTO lensroom.webhook_outbox (generation_id, user_id, event_type, created_at)
    VALUES (p_id, v_user, v_type, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
    ON CONFLICT (generation_id) DO NOTHING;
  END IF;
  ok := true;
END $$;
