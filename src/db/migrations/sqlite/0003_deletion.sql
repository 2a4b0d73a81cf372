-- Deleting a generation: the row stays (the ledger points at it) but is
-- hidden from its owner; its stored objects are removed, and purge_pending
-- keeps a failed removal on the list until a retry succeeds.
ALTER TABLE generations ADD COLUMN storage_keys TEXT NOT NULL DEFAULT '[]';
ALTER TABLE generations ADD COLUMN deleted_at TEXT;
ALTER TABLE generations ADD COLUMN purge_pending INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS generations_purge ON generations (purge_pending) WHERE purge_pending = 1;
