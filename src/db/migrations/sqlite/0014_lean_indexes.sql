-- Fewer indexes on the write path. Every generation is written twice (the
-- reserve inserts it, the settle moves its status), and every index on
-- generations is written with it: before this migration 8 entries at the
-- insert and 8 at the settle, the largest part of the writer's work per
-- generation. The indexes below either duplicated another one or served no
-- query (EXPLAIN QUERY PLAN of every statement the server prepares):
--   generations_status         (status): the first column of
--                              generations_status_created;
--   generations_status_created (status, created_at, id): the admin list
--                              filters status as "?2 IS NULL OR status = ?2",
--                              which no index can serve, and orders by
--                              created_at; the reaper, claims and lease
--                              renewal now use the partial generations_lease
--                              (only unfinished rows), the preview queue its
--                              own partial index;
--   generations_model_created  (model, created_at, id): likewise for model;
--   generations_all_created    (created_at, id) and
--   generations_created_duration (created_at, model, status, duration_ms):
--                              one index in created_at order serves both
--                              the admin list (newest first, id breaking
--                              ties, read backwards) and the analytics'
--                              ranges (model, status and duration covered).
-- generations_preview_pending also held every finished text generation
-- (its preview_status stays 'none'); only media get previews.
-- Creating the new index reads the table once: 2.9 s for a million
-- generations on the 2-core benchmark machine (bench/analytics.py), with
-- the write lock held (docs/SETUP.md: upgrade a large store while nothing
-- else writes to it).
DROP INDEX IF EXISTS generations_status;
DROP INDEX IF EXISTS generations_status_created;
DROP INDEX IF EXISTS generations_model_created;
DROP INDEX IF EXISTS generations_all_created;
DROP INDEX IF EXISTS generations_created_duration;
CREATE INDEX IF NOT EXISTS generations_created
    ON generations (created_at, id, model, status, duration_ms);
DROP INDEX IF EXISTS generations_preview_pending;
CREATE INDEX IF NOT EXISTS generations_preview_pending ON generations (finished_at)
    WHERE status = 'success' AND type IN ('photo', 'video', 'edit')
      AND preview_status IN ('none', 'processing');
