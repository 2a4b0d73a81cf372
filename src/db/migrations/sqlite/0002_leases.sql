-- Which process runs a generation, and until when its claim holds. A live
-- process renews its leases; a generation whose lease ran out belongs to a
-- process that died and is failed and refunded by whoever reaps first.
ALTER TABLE generations ADD COLUMN claimed_by TEXT;
ALTER TABLE generations ADD COLUMN lease_until TEXT;
CREATE INDEX IF NOT EXISTS generations_lease
    ON generations (lease_until) WHERE status IN ('pending', 'processing');
