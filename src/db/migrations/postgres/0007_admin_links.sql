-- One-time sign-in links for the admin dashboard (lensroom admin-link):
-- only the SHA-256 of the token is kept, and a link is spent by setting
-- used_at, so it opens one session once. In the private schema.
CREATE TABLE IF NOT EXISTS lensroom.admin_links (
  token_hash text PRIMARY KEY,
  user_id    uuid NOT NULL,
  expires_at timestamptz NOT NULL,
  used_at    timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);
