-- Derived media (posters, previews, thumbnails): a preview job that could
-- not finish ends as 'failed' with its reason in metadata.preview, and the
-- jobs a stopped process left ('processing') are found again at start.
-- SQLite cannot alter a CHECK constraint; its documented way for a change
-- that leaves the stored rows valid is to edit the table's SQL text in the
-- schema (every column stays as it is, whoever added it), then reload
-- the schema (RESET), which also makes the next statement bump the
-- schema cookie so other connections re-read it.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, 'CHECK (preview_status IN (''none'', ''processing'', ''ready''))',
                     'CHECK (preview_status IN (''none'', ''processing'', ''ready'', ''failed''))')
 WHERE type = 'table' AND name = 'generations';
PRAGMA writable_schema = RESET;
CREATE INDEX IF NOT EXISTS generations_preview_pending ON generations (finished_at)
    WHERE status = 'success' AND preview_status IN ('none', 'processing');
