#!/usr/bin/env bash
# Benchmarks of the release build on the embedded default (SQLite, local
# storage, mock provider). Prints one line per figure; see bench/README.md.
#   bench/run.sh                 all
#   bench/run.sh throughput      infer/s at 0 ms mock latency (1 user, 100 users)
#   bench/run.sh inflight [N]    N generations held at 10 s mock latency: RSS, threads
#   bench/run.sh idle            idle RSS and start-up time
#   bench/run.sh postgres        infer/s on a throwaway PostgreSQL 15 (fsync on),
#                                with the pgbench floor of the same two transactions
#   bench/run.sh store50         peak RSS while a 50 MB Kie.ai result (faked) is
#                                downloaded and stored
#   bench/run.sh kie_inflight [N] N generations held at the fake Kie.ai: RSS, threads
#   bench/run.sh db              generations/s through the database interface alone
#                                (reserve, set_stage, settle), 4 and 64 callers,
#                                SQLite (synchronous=FULL) and PostgreSQL 15 (fsync on)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/build/lensroom}
PORT=${BENCH_PORT:-3190}
work=$(mktemp -d /tmp/lensroom-bench-XXXXXX)
chmod 755 "$work" # the PostgreSQL benchmark runs its server as user postgres
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

start() { # start LATENCY_MS
  rm -rf "$work/data"
  if [ -n "${PG_URL:-}" ]; then
    psql -X -q "$PG_URL" -c "DROP DATABASE IF EXISTS bench WITH (FORCE)" -c "CREATE DATABASE bench"
    export DATABASE_URL=${PG_URL/\/postgres\?//bench?}
  fi
  # per-user limits off: the benchmark is one or a hundred very busy users
  export LENSROOM_DATA_DIR=$work/data PORT LENSROOM_LOG_LEVEL=warn LENSROOM_MOCK_LATENCY_MS=$1 \
    LENSROOM_USER_RATE_PER_MIN=0 LENSROOM_USER_MAX_IN_FLIGHT=0
  local t0; t0=$(date +%s%N)
  "$BIN" serve 2>>"${BENCH_LOG:-$work/server.log}" &
  pid=$!
  until curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null; do sleep 0.01; done
  startup_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
}
stop() { kill "$pid"; wait "$pid" || true; pid=""; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
threads() { awk '/^Threads/ {print $2}' "/proc/$pid/status"; }

users() { # users N CREDITS_EACH -> tokens file
  : >"$work/tokens"
  for _ in $(seq "$1"); do
    u=$(cat /proc/sys/kernel/random/uuid)
    "$BIN" credits grant "$u" "$2" >/dev/null
    "$BIN" token "$u" --ttl 3600 >>"$work/tokens"
  done
}

succeeded() {
  if [ -n "${PG_URL:-}" ]; then
    psql -X -qAt "$DATABASE_URL" -c "select count(*) from generations where status='success'"
  else
    /usr/bin/python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute(\"select count(*) from generations where status='success'\").fetchone()[0])" "$work/data/lensroom.db"
  fi
}

# seedream_image: the full path (reserve, PNG render, file write, settle).
# anthropic_text: the same path without a file (HTTP + ledger + pipeline).
throughput() {
  for model in seedream_image anthropic_text; do
    for n in 1 100; do
      start 0
      users "$n" 1000000000
      out=$(MODEL=$model TOKENS_FILE=$work/tokens wrk -t2 -c64 -d10s -s bench/infer.lua \
            "http://127.0.0.1:$PORT" 2>&1)
      rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
      echo "throughput model=$model users=$n infer/s=$rps succeeded=$(succeeded) rss_kb=$(rss_kb) threads=$(threads) $(echo "$out" | grep '^requests:')"
      stop
    done
  done
}

inflight() {
  local n=${1:-5000}
  start 10000
  users 1 1000000000
  TOKENS_FILE=$work/tokens wrk -t2 -c"$n" -d8s --timeout 30s -s bench/infer.lua \
    "http://127.0.0.1:$PORT" >"$work/wrk.out" 2>&1 &
  local w=$!
  sleep 7
  local held
  held=$(curl -s "http://127.0.0.1:$PORT/healthz" | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['inFlight'])")
  echo "inflight target=$n held=$held rss_kb=$(rss_kb) threads=$(threads)"
  wait "$w" || true
  stop
}

idle() {
  start 100
  sleep 0.5
  echo "idle rss_kb=$(rss_kb) threads=$(threads) startup_ms=$startup_ms"
  stop
}

# The database floor: pgbench running the server's own reserve and settle
# functions (two transactions per generation) with 64 clients, 100 users.
pgbench_floor() {
  /usr/bin/python3 - "$DATABASE_URL" <<'PY'
import subprocess, sys, uuid
url = sys.argv[1]
sql = "".join(f"SELECT adjust_credits('{uuid.uuid4()}'::uuid, 1000000000, 'bonus');" for _ in range(100))
subprocess.run(["psql", "-X", "-q", url, "-c", sql], check=True, stdout=subprocess.DEVNULL)
PY
  cat >"$work/gen.sql" <<'SQL'
\set n random(0, 99)
SELECT user_id AS u FROM credits ORDER BY user_id OFFSET :n LIMIT 1 \gset
SELECT gen_random_uuid() AS g \gset
SELECT * FROM lensroom.reserve(:g, :u, 'photo', 'seedream_image', 'mock', 'p', '{}', 1, 8, now(), NULL, NULL, NULL, NULL, NULL);
SELECT * FROM lensroom.settle(:g, 'success', '["u"]', '[]', 1, 0, 0, NULL, NULL, 1, NULL, '["k"]');
SQL
  as_pg_user=""; [ "$(id -u)" -eq 0 ] && as_pg_user="runuser -u postgres --"
  chmod 644 "$work/gen.sql"; chmod 755 "$work"
  $as_pg_user /usr/lib/postgresql/15/bin/pgbench -M prepared -n -c 64 -j 2 -T 10 -f "$work/gen.sql" "$DATABASE_URL" 2>&1 \
    | awk '/tps = / {print "pgbench floor (reserve+settle per generation, 100 users) generations/s=" $3}'
}

postgres() {
  pgdir=$work/pg
  PG_URL=$(scripts/pg.sh start "$pgdir")
  trap 'scripts/pg.sh stop "$pgdir"; cleanup' EXIT
  export PG_URL
  throughput
  start 0
  pgbench_floor
  stop
}

# The group commit seen without HTTP: many callers at once, 100 users.
db() {
  local dbbench=${DBBENCH:-$(dirname "$BIN")/bench/lensroom-dbbench}
  pgdir=$work/pg
  PG_URL=$(scripts/pg.sh start "$pgdir")
  trap 'scripts/pg.sh stop "$pgdir"; cleanup' EXIT
  for t in 4 64; do
    rm -f "$work"/db.sqlite*
    echo "sqlite $("$dbbench" "$work/db.sqlite" "$t" 100 4000 2>/dev/null)"
    psql -X -q "$PG_URL" -c "DROP DATABASE IF EXISTS dbbench WITH (FORCE)" -c "CREATE DATABASE dbbench"
    echo "postgres $("$dbbench" "${PG_URL/\/postgres\?//dbbench?}" "$t" 100 4000 2>/dev/null)"
  done
}

case "${1:-all}" in
  throughput) throughput ;;
  inflight) inflight "${2:-5000}" ;;
  idle) idle ;;
  postgres) postgres ;;
  store50) /usr/bin/python3 bench/store50.py "$BIN" ;;
  kie_inflight) /usr/bin/python3 bench/kie_inflight.py "${2:-1000}" "$BIN" ;;
  db) db ;;
  all) idle; throughput; inflight 5000; postgres; /usr/bin/python3 bench/store50.py "$BIN" ;;
  *) echo "usage: $0 [throughput|inflight [N]|idle|postgres|store50|kie_inflight [N]|db]" >&2; exit 2 ;;
esac
