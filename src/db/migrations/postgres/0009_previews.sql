-- Derived media (posters, previews, thumbnails): a preview job that could
-- not finish ends as 'failed' with its reason in metadata.preview, and the
-- jobs a stopped process left ('processing') are found again at start.
ALTER TABLE public.generations DROP CONSTRAINT IF EXISTS generations_preview_status_check;
ALTER TABLE public.generations ADD CONSTRAINT generations_preview_status_check
  CHECK (preview_status IN ('none', 'processing', 'ready', 'failed'));
CREATE INDEX IF NOT EXISTS generations_preview_pending ON public.generations (finished_at)
  WHERE status = 'success' AND preview_status IN ('none', 'processing');
