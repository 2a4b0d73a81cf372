#!/usr/bin/env bash
# Benchmarks of the release build; see bench/README.md for what each figure
# means and how the table is made.
#   bench/run.sh [table]         the comparison table: LensRoom against the Node
#                                peer (bench/peer) and the pgbench floors, in
#                                BENCH_ROUNDS interleaved rounds (default 2) of
#                                BENCH_SECONDS each (default 10); also written
#                                to bench/results/<date>.tsv
#   bench/run.sh throughput      infer/s on the embedded default (1 user, 100 users)
#   bench/run.sh embedded        infer/s on the embedded default, text and image,
#                                100 users: BIN and BASE_BIN (when set) interleaved
#                                over BENCH_ROUNDS rounds, medians and ranges
#   bench/run.sh inflight [N]    N generations held at 15 s mock latency (default
#                                10000, BENCH_LATENCY_MS): held, RSS, threads
#   bench/run.sh idle            idle RSS and start-up time
#   bench/run.sh start_tree [N]  start-up time over a storage folder of N files
#                                (default 100000), BIN and BASE_BIN (when set)
#                                interleaved, BENCH_ROUNDS rounds
#   bench/run.sh arenas          RSS and infer/s under text load for several
#                                MALLOC_ARENA_MAX values (BENCH_ARENAS, BENCH_PG=1)
#   bench/run.sh s3 | s3_store50 | s3_busy   S3 storage (bench/s3.py): infer/s
#                                (BIN, and BASE_BIN when set), a 50 MB upload's
#                                peak RSS, text infer/s during ten of them
#   bench/run.sh postgres        infer/s on a throwaway PostgreSQL 15 (fsync on),
#                                with the pgbench floor of the same two transactions
#   bench/run.sh pg_text         the table's first row alone: text infer/s on PostgreSQL
#                                for BIN, BASE_BIN (when set) and "floor today",
#                                interleaved over BENCH_ROUNDS rounds
#   bench/run.sh store50         peak RSS while a 50 MB Kie.ai result (faked) is
#                                downloaded and stored
#   bench/run.sh kie_inflight [N] N generations held at the fake Kie.ai: RSS, threads
#   bench/run.sh db              generations/s through the database interface alone
#                                (reserve, set_stage, settle), 4 and 64 callers,
#                                SQLite (synchronous=FULL) and PostgreSQL 15 (fsync on)
#   bench/run.sh mock            the mock provider's own cost: PNG and MP4 renders/s
#                                (builds bench/mock_bench.c into build-bench/)
#   bench/run.sh syscalls [MODEL] system calls per infer on the embedded default
#                                (perf stat: madvise, munmap, brk, mkdir, openat)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/build/lensroom}
PORT=${BENCH_PORT:-3190}
PEER_PORT=${BENCH_PEER_PORT:-3192}
ROUNDS=${BENCH_ROUNDS:-2}
SECS=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNS:-64}
PGBIN=/usr/lib/postgresql/15/bin
work=$(mktemp -d /tmp/lensroom-bench-XXXXXX)
chmod 755 "$work" # the PostgreSQL benchmark runs its server as user postgres
pid=""
pgdir=""
aside=0
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; fi
  if [ -n "$pgdir" ]; then scripts/pg.sh stop "$pgdir"; fi
  rm -rf "$work"
}
trap cleanup EXIT
# One secret for every server and token of the run: the peer verifies the
# tokens LensRoom's CLI mints.
SUPABASE_JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export SUPABASE_JWT_SECRET LENSROOM_DATA_DIR=$work/data

start() { # start LATENCY_MS: LensRoom on $DATABASE_URL (or SQLite in $work/data)
  # per-user limits off: the benchmark is one or a hundred very busy users
  export LENSROOM_DATA_DIR=$work/data PORT LENSROOM_LOG_LEVEL=warn LENSROOM_MOCK_LATENCY_MS=$1 \
    LENSROOM_USER_RATE_PER_MIN=0 LENSROOM_USER_MAX_IN_FLIGHT=0
  local t0; t0=$(date +%s%N)
  "$BIN" serve 2>>"${BENCH_LOG:-$work/server.log}" &
  pid=$!
  until curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null; do sleep 0.01; done
  startup_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
}
start_peer() { # the Node peer on $DATABASE_URL
  PEER_PORT=$PEER_PORT PEER_DATA_DIR=$work/peer-data node bench/peer/server.mjs \
    >/dev/null 2>>"${BENCH_LOG:-$work/peer.log}" &
  pid=$!
  until curl -fs "http://127.0.0.1:$PEER_PORT/healthz" >/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/peer.log" >&2; exit 1; }
    sleep 0.02
  done
}
stop() { kill "$pid"; wait "$pid" || true; pid=""; }
# Moves a previous run's folders out of the way; they are deleted at exit.
# Deleting them now would slow the next run: on ext4 without a journal (this
# machine's disk) a new file's inode is allocated past every inode deleted in
# the last 60 s (up to 6 min; the kernel's recently_deleted), which made each
# stored output's open() cost ~0.7 ms after an `rm -rf` of 10,000 files.
set_aside() { # set_aside DIR...
  local d
  for d; do
    if [ -e "$d" ]; then aside=$((aside + 1)); mv "$d" "$work/old.$aside"; fi
  done
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
threads() { awk '/^Threads/ {print $2}' "/proc/$pid/status"; }

users() { # users N CREDITS_EACH -> tokens file (random users, granted with the CLI)
  : >"$work/tokens"
  for _ in $(seq "$1"); do
    u=$(cat /proc/sys/kernel/random/uuid)
    "$BIN" credits grant "$u" "$2" >/dev/null
    "$BIN" token "$u" --ttl 3600 >>"$work/tokens"
  done
}

# The table's users are numbered, 00000000-0000-4000-8000-000000000001 up,
# so pgbench can name one without a lookup.
uid() { printf '00000000-0000-4000-8000-%012d' "$1"; }
numbered_tokens() { # -> $work/tokens100 and $work/tokens1 (user 1: the hot row)
  : >"$work/tokens100"
  for i in $(seq 100); do "$BIN" token "$(uid "$i")" --ttl 86400 >>"$work/tokens100"; done
  head -1 "$work/tokens100" >"$work/tokens1"
}

succeeded() {
  if [ -n "${DATABASE_URL:-}" ]; then
    psql -X -qAt "$DATABASE_URL" -c "select count(*) from generations where status='success'"
  else
    /usr/bin/python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute(\"select count(*) from generations where status='success'\").fetchone()[0])" "$work/data/lensroom.db"
  fi
}

# A fresh database "bench" on the cluster at $PG_URL, migrated by LensRoom,
# users 1..100 granted a billion credits, checkpointed so no run inherits
# another's dirty pages.
fresh_pg() {
  PGOPTIONS="-c client_min_messages=warning" psql -X -q "$PG_URL" \
    -c "DROP DATABASE IF EXISTS bench WITH (FORCE)" -c "CREATE DATABASE bench"
  export DATABASE_URL=${PG_URL/\/postgres\?//bench?}
  "$BIN" migrate >/dev/null 2>>"$work/migrate.log"
  psql -X -q "$DATABASE_URL" -c "SELECT count(public.adjust_credits(
      ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 1000000000, 'bonus'))
    FROM generate_series(1, 100) i" -c CHECKPOINT >/dev/null
}

# A fresh embedded data folder with users 1..100 granted through the CLI.
fresh_sqlite() {
  unset DATABASE_URL
  set_aside "$work/data"
  export LENSROOM_DATA_DIR=$work/data
  for i in $(seq 100); do "$BIN" credits grant "$(uid "$i")" 1000000000 >/dev/null; done
}

# wrk against PORT with MODEL and TOKENS; sets rps, p99_ms, requests, non2xx.
drive() { # drive PORT MODEL TOKENS CONNS
  local out
  out=$(MODEL=$2 TOKENS_FILE=$3 wrk -t2 -c"$4" -d"${SECS}s" --latency -s bench/infer.lua \
        "http://127.0.0.1:$1" 2>&1)
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99_ms=$(echo "$out" | awk '$1 == "99%" {v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
    print v * (u == "us" ? 0.001 : u == "s" ? 1000 : u == "m" ? 60000 : 1)}')
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  non2xx=${non2xx:-0}
}

# The database floors: pgbench with CONNS clients over users 1..100, each
# transaction one text generation as the statements alone (no HTTP, no JSON,
# no mock). "today": LensRoom's own lensroom.reserve + lensroom.settle, one
# transaction each. "peer": the Node peer's statements (lock, insert,
# debit, ledger row in one transaction; the settle UPDATE in a second).
write_floor_scripts() {
  local u="('00000000-0000-4000-8000-' || lpad(:n::text, 12, '0'))::uuid"
  local g="(lpad(:a::text, 8, '0') || '-0000-4000-8000-' || lpad(:b::text, 12, '0'))::uuid"
  local head="\\set n random(1, ${1:-100})
\\set a random(0, 99999999)
\\set b random(0, 999999999999)"
  cat >"$work/floor_today.sql" <<SQL
$head
SELECT * FROM lensroom.reserve($g, $u, 'text', 'anthropic_text', 'mock', 'p', '{}', 1, 2, now(), NULL, NULL, NULL, NULL, NULL);
SELECT * FROM lensroom.settle($g, 'success', '[]', '["k"]', 1, 0, 0, NULL, NULL, 1, 'Mock answer to: p', '[]');
SQL
  cat >"$work/floor_peer.sql" <<SQL
$head
BEGIN;
SELECT amount FROM credits WHERE user_id = $u FOR UPDATE;
INSERT INTO generations (id, user_id, type, model, prompt, status, credits_used, outputs_count, provider, params, created_at, updated_at) VALUES ($g, $u, 'text', 'anthropic_text', 'p', 'processing', 2, 1, 'mock', '{}', now(), now());
UPDATE credits SET amount = amount - 2 WHERE user_id = $u RETURNING amount;
INSERT INTO credit_transactions (user_id, amount, type, description, generation_id, metadata, created_at) VALUES ($u, -2, 'generation', 'Generation: anthropic_text x1', $g, '{"model": "anthropic_text", "outputs": 1}', now());
COMMIT;
UPDATE generations SET status = 'success', result_urls = '[]', provider_task_ids = '["k"]', succeeded_count = 1, duration_ms = 1, finished_at = now(), storage_keys = '[]', metadata = coalesce(metadata, '{}'::jsonb) || '{"text": "Mock answer to: p"}' WHERE id = $g AND status = 'processing';
SQL
  chmod 644 "$work"/floor_*.sql
}
floor() { # floor today|peer -> tps (generations/s)
  local as_pg_user="" url=$DATABASE_URL
  [ "$(id -u)" -eq 0 ] && as_pg_user="runuser -u postgres --"
  # The peer writes its own ledger rows: tell the schema's guard trigger.
  [ "$1" = peer ] && url="$url&options=-c%20lensroom.ledger%3Don"
  tps=$($as_pg_user "$PGBIN/pgbench" -M prepared -n -c "$CONNS" -j 2 -T "$SECS" \
        -f "$work/floor_$1.sql" "$url" 2>&1 | awk '/^tps = / {print $3}')
}

# The embedded default (SQLite, local storage, mock provider), one line per run.
# seedream_image: the full path (reserve, PNG render, file write, settle).
# anthropic_text: the same path without a file (HTTP + ledger + pipeline).
throughput() {
  for model in seedream_image anthropic_text; do
    for n in 1 100; do
      unset DATABASE_URL
      [ -n "${PG_URL:-}" ] && fresh_pg
      set_aside "$work/data"
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

# The embedded default (SQLite, local storage, mock at 0 ms), BIN against
# BASE_BIN (when set) in one run: the text and the image model, 100 users,
# BENCH_CONNS connections, BENCH_ROUNDS rounds, BIN first in odd rounds and
# BASE_BIN first in even ones, each run on a fresh data folder. One line per
# run, then the median and range of each binary per model.
embedded() {
  local bins=("$BIN") r b model ok
  [ -n "${BASE_BIN:-}" ] && bins+=("$BASE_BIN")
  numbered_tokens
  : >"$work/embedded.tsv"
  echo "embedded: ${#bins[@]} binaries, $ROUNDS rounds x ${SECS}s, wrk -t2 -c$CONNS, load $(cut -d' ' -f1-3 /proc/loadavg) before"
  for r in $(seq "$ROUNDS"); do
    local order=("${bins[@]}")
    if [ $((r % 2)) -eq 0 ] && [ ${#bins[@]} -eq 2 ]; then order=("${bins[1]}" "${bins[0]}"); fi
    for model in anthropic_text seedream_image; do
      for b in "${order[@]}"; do
        BIN=$b fresh_sqlite
        BIN=$b start 0
        drive "$PORT" "$model" "$work/tokens100" "$CONNS"
        ok=$(succeeded)
        stop
        echo "embedded round=$r model=$model bin=$b infer/s=$rps requests=$requests non2xx=$non2xx succeeded=$ok"
        printf '%s\t%s\t%s\n' "$model" "$b" "$rps" >>"$work/embedded.tsv"
      done
    done
  done
  echo "embedded: load $(cut -d' ' -f1-3 /proc/loadavg) after"
  sort -t$'\t' -k1,1 -k2,2 -k3,3n "$work/embedded.tsv" | awk -F'\t' '
    function flush() { if (n) printf "embedded model=%s bin=%s median=%.0f min=%.0f max=%.0f runs=%d\n",
      m, b, n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2, v[1], v[n], n }
    $1 != m || $2 != b { flush(); m = $1; b = $2; n = 0 }
    { v[++n] = $3 } END { flush() }'
}

# N connections each holding one infer for BENCH_LATENCY_MS (default 15 s)
# of mock latency, on the default settings (LENSROOM_MAX_CONNECTIONS 10000).
# wrk stops before the first answer could come, so every connection carries
# exactly one request. While it runs, every half second: generations
# reserved and not settled (read from the database: at the connection limit
# no probe connection is free), server-side established connections, RSS
# and threads; the line reports the peak and what RSS and threads were then.
inflight() {
  local n=${1:-10000} lat=${BENCH_LATENCY_MS:-15000}
  set_aside "$work/data"
  start "$lat"
  users 1 1000000000
  local idle_rss idle_threads; idle_rss=$(rss_kb); idle_threads=$(threads)
  TOKENS_FILE=$work/tokens MODEL=${BENCH_MODEL:-seedream_image} wrk -t2 -c"$n" \
    -d"$(( lat / 1000 - 1 ))s" --timeout 60s -s bench/infer.lua \
    "http://127.0.0.1:$PORT" >"$work/wrk.out" 2>&1 &
  local w=$! held=0 est=0 rss=0 thr=0 t_min=999999 t_max=0 peak_s=0 t0=$SECONDS
  while kill -0 "$w" 2>/dev/null; do
    local h e r t
    h=$(/usr/bin/python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=30); print(c.execute(\"select count(*) from generations where status in ('pending','processing')\").fetchone()[0])" "$work/data/lensroom.db")
    e=$(ss -Htn state established "( sport = :$PORT )" | wc -l)
    r=$(rss_kb); t=$(threads)
    [ "$t" -lt "$t_min" ] && t_min=$t
    [ "$t" -gt "$t_max" ] && t_max=$t
    [ "$e" -gt "$est" ] && est=$e
    if [ "$h" -gt "$held" ] || { [ "$h" -eq "$held" ] && [ "$r" -gt "$rss" ]; }; then
      held=$h; rss=$r; thr=$t; peak_s=$(( SECONDS - t0 ))
    fi
    sleep 0.5
  done
  wait "$w" || true
  echo "inflight target=$n latency_ms=$lat held=$held established_max=$est rss_kb=$rss" \
    "threads=$thr threads_range=$t_min-$t_max idle_rss_kb=$idle_rss idle_threads=$idle_threads" \
    "peak_after_s=$peak_s $(grep -E '^requests:' "$work/wrk.out" || true)"
  stop
}

idle() {
  set_aside "$work/data"
  start 100
  sleep 0.5
  echo "idle rss_kb=$(rss_kb) threads=$(threads) startup_ms=$startup_ms"
  stop
}

# Start-up over a large bucket: N files under 1,000 users' photo folders
# (page cache warm: the tree was just written), the same folder for every
# binary; the sweep of leftovers walks it.
start_tree() {
  local n=${1:-100000}
  set_aside "$work/data"
  mkdir -p "$work/data/storage/generations"
  /usr/bin/python3 - "$work/data/storage/generations" "$n" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "00000000-0000-4000-8000-%012d" % (i % 1000), "photo")
    if i < 1000:
        os.makedirs(d)
    open(os.path.join(d, "%08d.png" % i), "wb").close()
PY
  local bins=("$BIN") b r
  [ -n "${BASE_BIN:-}" ] && bins+=("$BASE_BIN")
  start 100 # the database is made once, outside the timed starts
  stop
  for r in $(seq "$ROUNDS"); do
    for b in "${bins[@]}"; do
      BIN=$b start 100
      echo "start_tree files=$n round=$r bin=$b startup_ms=$startup_ms"
      stop
    done
  done
}

# glibc's malloc arenas under text load: the same binary with
# MALLOC_ARENA_MAX unset (glibc: 8 per core) and set to each of
# BENCH_ARENAS (default "1 2 4"), interleaved over BENCH_ROUNDS rounds;
# embedded SQLite, or PostgreSQL with BENCH_PG=1; anthropic_text, 100 users.
# LensRoom caps the arenas itself unless MALLOC_ARENA_MAX is set, so "unset"
# is LensRoom's default, and BASE_BIN (when set) runs as a further column.
arenas() {
  [ -n "${BENCH_PG:-}" ] && pg_cluster
  local a b r
  for r in $(seq "$ROUNDS"); do
    for a in unset ${BENCH_ARENAS:-1 2 4} ${BASE_BIN:+base}; do
      if [ -n "${BENCH_PG:-}" ]; then fresh_pg; else fresh_sqlite; fi
      numbered_tokens
      b=$BIN
      [ "$a" = base ] && b=$BASE_BIN
      if [ "$a" = unset ] || [ "$a" = base ]; then BIN=$b start 0; else MALLOC_ARENA_MAX=$a BIN=$b start 0; fi
      drive "$PORT" anthropic_text "$work/tokens100" "$CONNS"
      echo "arenas round=$r arena_max=$a infer/s=$rps non2xx=$non2xx rss_kb=$(rss_kb)" \
        "peak_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status") threads=$(threads)"
      stop
    done
  done
}

pg_cluster() {
  pgdir=$work/pg
  PG_URL=$(scripts/pg.sh start "$pgdir")
  export PG_URL
}

postgres() {
  pg_cluster
  throughput
  fresh_pg
  write_floor_scripts 100
  floor today
  echo "pgbench floor (reserve+settle per generation, 100 users) generations/s=$tps"
}

# The table's first row alone (PostgreSQL, text, 100 users), for comparing
# two builds: BIN, BASE_BIN (when set) and the "floor today" pgbench, in an
# order that rotates every round so drift falls on each alike; one line per
# run, then each one's median and range.
pg_text() {
  pg_cluster
  numbered_tokens
  write_floor_scripts 100
  local names=(bin floor) r i k
  [ -n "${BASE_BIN:-}" ] && names=(bin base floor)
  local n=${#names[@]} res="$work/pg_text"
  : >"$res"
  echo "pg_text: load before $(cut -d' ' -f1-3 /proc/loadavg)"
  for r in $(seq "$ROUNDS"); do
    for i in $(seq 0 $((n - 1))); do
      k=${names[$(( (i + r) % n ))]}
      fresh_pg
      if [ "$k" = floor ]; then
        floor today
        rps=$tps non2xx=0
      else
        local b=$BIN
        [ "$k" = base ] && b=$BASE_BIN
        BIN=$b start 0
        drive "$PORT" anthropic_text "$work/tokens100" "$CONNS"
        stop
        "$b" audit >/dev/null 2>&1 || { echo "bench: ledger audit failed after $k" >&2; exit 1; }
      fi
      echo "pg_text round=$r $k infer/s=$rps non2xx=$non2xx load=$(cut -d' ' -f1 /proc/loadavg)"
      echo "$k $rps" >>"$res"
    done
  done
  for k in "${names[@]}"; do
    awk -v k="$k" '$1 == k {print $2}' "$res" | sort -n | awk -v k="$k" '{v[++n] = $1} END {
      m = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
      printf "pg_text %s median=%.0f range=%.0f-%.0f runs=%d\n", k, m, v[1], v[n], n}'
  done
  echo "pg_text: load after $(cut -d' ' -f1-3 /proc/loadavg)"
}

# The mock's own cost, without the server: bench/mock_bench.c, one thread.
mock() {
  local dir=${BENCH_BUILD:-$PWD/build-bench}
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLENSROOM_TESTS=OFF >/dev/null
  cmake --build "$dir" -j2 --target mock_bench >/dev/null
  "$dir/mock_bench" "${BENCH_MOCK_SECONDS:-3}"
}

# Kernel calls per infer while wrk drives MODEL (default seedream_image) on
# the embedded default for BENCH_SECONDS: counted by perf on the server's
# process (all threads), divided by the generations stored.
syscalls() {
  local model=${1:-seedream_image} ev="" c
  for c in madvise munmap brk mkdir openat rename fdatasync; do ev="$ev,syscalls:sys_enter_$c"; done
  set_aside "$work/data"
  start 0
  users 100 1000000000
  local before; before=$(succeeded)
  perf stat -x, -e "${ev#,}" -p "$pid" -o "$work/perf.out" &
  local perf_pid=$!
  sleep 0.2
  out=$(MODEL=$model TOKENS_FILE=$work/tokens wrk -t2 -c64 -d"${SECS}s" -s bench/infer.lua \
        "http://127.0.0.1:$PORT" 2>&1)
  kill -INT "$perf_pid"; wait "$perf_pid" || true
  local n=$(( $(succeeded) - before ))
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  printf 'syscalls model=%s infer/s=%s succeeded=%s' "$model" "$rps" "$n"
  awk -F, -v n="$n" '$3 ~ /sys_enter_/ {sub(/.*sys_enter_/, "", $3);
    printf " %s/infer=%.2f", $3, n ? $1 / n : 0}' "$work/perf.out"
  echo
  stop
}

# --- the comparison table ----------------------------------------------------

record() { # record FIGURE SYSTEM ROUND VALUE [REQUESTS NON2XX SUCCEEDED]
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" "${6:-}" "${7:-}" >>"$runs"
  printf '  %-16s %-12s round %s: %s\n' "$1" "$2" "$3" "$4" >&2
}

pg_run() { # pg_run FIGURE SYSTEM ROUND MODEL TOKENS CONNS METRIC(rps|p99)
  fresh_pg
  set_aside "$work/data" "$work/peer-data"
  if [ "$2" = lensroom ]; then start 0; else start_peer; fi
  drive "$([ "$2" = lensroom ] && echo "$PORT" || echo "$PEER_PORT")" "$4" "$5" "$6"
  local ok; ok=$(succeeded)
  stop
  # Both servers must leave a sound ledger (balance = sum of its rows, one
  # charge per generation), or the figure is not worth printing.
  "$BIN" audit >/dev/null 2>&1 || { echo "bench: ledger audit failed after the $2 run" >&2; exit 1; }
  record "$1" "$2" "$3" "$([ "$7" = p99 ] && echo "$p99_ms" || echo "$rps")" "$requests" "$non2xx" "$ok"
}

table() {
  pg_cluster
  bench/peer/install.sh
  numbered_tokens
  write_floor_scripts 100
  mkdir -p bench/results
  local stamp; stamp=$(date -u +%Y-%m-%dT%H%MZ)
  runs=bench/results/$stamp-runs.tsv
  printf 'figure\tsystem\tround\tvalue\trequests\tnon2xx\tsucceeded\n' >"$runs"
  local load0; load0=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "bench: $ROUNDS rounds x ${SECS}s, wrk -t2 -c$CONNS (p99: -c16); progress on stderr" >&2
  for r in $(seq "$ROUNDS"); do
    # LensRoom first in odd rounds, the peer first in even ones: drift over
    # the run (other load, a warming disk) lands on both sides alike.
    local order="lensroom peer" floors="today peer"
    if [ $((r % 2)) -eq 0 ]; then order="peer lensroom"; floors="peer today"; fi
    for s in $order; do pg_run pg_text_100 "$s" "$r" anthropic_text "$work/tokens100" "$CONNS" rps; done
    for s in $order; do pg_run pg_image_100 "$s" "$r" seedream_image "$work/tokens100" "$CONNS" rps; done
    for s in $order; do pg_run pg_text_hot "$s" "$r" anthropic_text "$work/tokens1" "$CONNS" rps; done
    for s in $order; do pg_run pg_p99_16 "$s" "$r" anthropic_text "$work/tokens100" 16 p99; done
    for f in $floors; do fresh_pg; floor "$f"; record pg_text_100 "floor_$f" "$r" "$tps"; done
    for model in anthropic_text seedream_image; do
      fresh_sqlite
      start 0
      drive "$PORT" "$model" "$work/tokens100" "$CONNS"
      local ok; ok=$(succeeded)
      stop
      record "sqlite_${model##*_}_100" lensroom "$r" "$rps" "$requests" "$non2xx" "$ok"
    done
  done
  /usr/bin/python3 bench/table.py "$runs" "bench/results/$stamp.tsv" \
    "commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo +dirty) rounds=$ROUNDS seconds=$SECS conns=$CONNS cpus=$(nproc) load_before=${load0// /,} load_after=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"
}

# The group commit seen without HTTP: many callers at once, 100 users.
db() {
  local dbbench=${DBBENCH:-$(dirname "$BIN")/bench/lensroom-dbbench}
  [ -n "${DBBENCH:-}" ] || cmake --build "$(dirname "$BIN")" --target lensroom-dbbench >/dev/null
  pg_cluster
  for t in 4 64; do
    rm -f "$work"/db.sqlite*
    echo "sqlite $("$dbbench" "$work/db.sqlite" "$t" 100 4000 2>/dev/null)"
    psql -X -q "$PG_URL" -c "DROP DATABASE IF EXISTS dbbench WITH (FORCE)" -c "CREATE DATABASE dbbench"
    echo "postgres $("$dbbench" "${PG_URL/\/postgres\?//dbbench?}" "$t" 100 4000 2>/dev/null)"
  done
}

case "${1:-table}" in
  table) table ;;
  throughput) throughput ;;
  embedded) embedded ;;
  inflight) inflight "${2:-10000}" ;;
  idle) idle ;;
  start_tree) start_tree "${2:-100000}" ;;
  arenas) arenas ;;
  s3) /usr/bin/python3 bench/s3.py throughput "$BIN" ${BASE_BIN:+"$BASE_BIN"} ;;
  s3_store50) /usr/bin/python3 bench/s3.py store50 "$BIN" ;;
  s3_busy) /usr/bin/python3 bench/s3.py busy "$BIN" ;;
  postgres) postgres ;;
  pg_text) pg_text ;;
  store50) /usr/bin/python3 bench/store50.py "$BIN" ;;
  kie_inflight) /usr/bin/python3 bench/kie_inflight.py "${2:-1000}" "$BIN" ;;
  db) db ;;
  mock) mock ;;
  syscalls) syscalls "${2:-seedream_image}" ;;
  all) idle; throughput; inflight 10000; /usr/bin/python3 bench/store50.py "$BIN"; table ;;
  *) echo "usage: $0 [table|throughput|embedded|inflight [N]|idle|start_tree [N]|arenas|s3|s3_store50|s3_busy|postgres|store50|kie_inflight [N]|db|mock|syscalls [MODEL]]" >&2; exit 2 ;;
esac
