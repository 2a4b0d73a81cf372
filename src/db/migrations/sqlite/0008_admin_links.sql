-- One-time sign-in links for the admin dashboard (lensroom admin-link):
-- only the SHA-256 of the token is kept, and a link is spent by setting
-- used_at, so it opens one session once.
CREATE TABLE IF NOT EXISTS admin_links (
    token_hash  TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT,
    created_at  TEXT NOT NULL
);
