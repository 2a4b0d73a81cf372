-- One heartbeat per server process: a process renews only its row here
-- instead of the lease of every row it owns, and work counts as abandoned
-- only when its row's lease ran out AND the process that claimed it has
-- no live heartbeat. A process that stops cleanly expires its heartbeat.
CREATE TABLE IF NOT EXISTS instances (
    owner       TEXT PRIMARY KEY,
    alive_until TEXT NOT NULL
) WITHOUT ROWID;
