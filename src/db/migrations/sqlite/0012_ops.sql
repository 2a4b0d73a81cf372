-- Outgoing webhooks without a write of their own on the request path.
--
-- webhook_outbox is a transactional outbox: settle writes a row here in
-- its own transaction when any webhook wants to hear of the generation's
-- end (an endpoint subscribed to its event type or to credits.low, or
-- the generation's own webhook). The webhook engine claims rows (like
-- deliveries: claim_token until claimed_until, taken again when a dead
-- process's claim runs out), renders the event and turns each row into
-- its deliveries, off the request path and many rows per transaction.
-- An event is never lost between the settlement and its queuing.
CREATE TABLE IF NOT EXISTS webhook_outbox (
    generation_id TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    claim_token   TEXT,
    claimed_until INTEGER,
    created_at    INTEGER NOT NULL
);

-- A rotated endpoint secret keeps signing beside the new one until
-- valid_until (ms since the epoch), so a receiver can switch without losing
-- deliveries (Standard Webhooks allows several signatures). A table of
-- its own, so applying this twice changes nothing.
CREATE TABLE IF NOT EXISTS webhook_previous_secrets (
    endpoint_id TEXT PRIMARY KEY,
    secret      TEXT NOT NULL,
    valid_until INTEGER NOT NULL
);
