-- LensRoom runs 0005: price quotes. What POST /api/quote promised,
-- honoured at submit until expires_at even if the catalog's prices change
-- meanwhile; lines is the priced request, one entry per node (or one for
-- an infer). Read by the server only (RLS on, no policy for users).
CREATE TABLE IF NOT EXISTS public.quotes (
  id         uuid PRIMARY KEY,
  user_id    uuid NOT NULL,
  lines      jsonb NOT NULL DEFAULT '[]'::jsonb,
  total      integer NOT NULL CHECK (total >= 0),
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS quotes_expires ON public.quotes (expires_at);
ALTER TABLE public.quotes ENABLE ROW LEVEL SECURITY;
