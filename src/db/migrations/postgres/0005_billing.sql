-- LensRoom 0003: money in and events out (Stripe payments, outgoing
-- webhooks). public.credit_transactions gets no CHECK on type here (it
-- never had one); a purchase names its lensroom.payments row in payment_id,
-- once. The queue and the endpoints live in the private lensroom schema.
-- Times in the new tables: ms since the epoch. Idempotent.

CREATE UNIQUE INDEX IF NOT EXISTS credit_transactions_one_purchase
  ON public.credit_transactions (payment_id) WHERE type = 'purchase';

CREATE TABLE IF NOT EXISTS lensroom.payments (
  id               uuid PRIMARY KEY,
  session_id       text NOT NULL UNIQUE,
  payment_intent   text,
  user_id          uuid NOT NULL,
  pack_id          text NOT NULL,
  credits          integer NOT NULL CHECK (credits > 0),
  amount           bigint NOT NULL,
  currency         text NOT NULL,
  event_id         text NOT NULL,
  credits_reversed integer NOT NULL DEFAULT 0,
  created_at       bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS payments_intent ON lensroom.payments (payment_intent);

CREATE TABLE IF NOT EXISTS lensroom.stripe_events (
  id          text PRIMARY KEY,
  type        text NOT NULL,
  received_at bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS lensroom.webhook_endpoints (
  id         uuid PRIMARY KEY,
  url        text NOT NULL,
  events     text NOT NULL,
  secret     text NOT NULL,
  created_at bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS lensroom.user_webhook_secrets (
  user_id    uuid PRIMARY KEY,
  secret     text NOT NULL,
  created_at bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS lensroom.generation_webhooks (
  generation_id uuid PRIMARY KEY,
  user_id       uuid NOT NULL,
  url           text NOT NULL,
  events        text NOT NULL,
  created_at    bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS lensroom.webhook_deliveries (
  id              text PRIMARY KEY,
  endpoint_id     uuid,
  user_id         uuid,
  url             text NOT NULL,
  event_type      text NOT NULL,
  payload         text NOT NULL,
  status          text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'delivered', 'failed')),
  attempts        integer NOT NULL DEFAULT 0,
  next_attempt_at bigint NOT NULL,
  claim_token     text,
  claimed_until   bigint,
  last_status     integer,
  last_error      text,
  created_at      bigint NOT NULL,
  delivered_at    bigint
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due
  ON lensroom.webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint
  ON lensroom.webhook_deliveries (endpoint_id, created_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_claim ON lensroom.webhook_deliveries (claim_token);

CREATE TABLE IF NOT EXISTS lensroom.webhook_attempts (
  id          bigserial PRIMARY KEY,
  delivery_id text NOT NULL,
  endpoint_id uuid,
  attempt     integer NOT NULL,
  status_code integer,
  latency_ms  bigint NOT NULL,
  error       text,
  created_at  bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_attempts_endpoint ON lensroom.webhook_attempts (endpoint_id, id);

CREATE TABLE IF NOT EXISTS lensroom.low_balance_alerts (
  user_id uuid PRIMARY KEY,
  below   integer NOT NULL
);
