#!/usr/bin/env bash
# Installs the Debian packages LensRoom needs, and nothing when all are
# there (then it prints nothing). Usage: scripts/deps.sh [build|test|bench]...
# Idempotent; needs root only when something is missing.
set -euo pipefail

build=(build-essential cmake pkg-config libmicrohttpd-dev libcurl4-openssl-dev libssl-dev libpq-dev
       libsqlite3-dev libjansson-dev libpng-dev libavformat-dev libavcodec-dev libavutil-dev
       libswscale-dev libwebp-dev libarchive-dev postgresql-client-15)
# postgresql-client-15: pg_dump/pg_restore for `lensroom backup` on PostgreSQL 15.
test=(libcmocka-dev python3 python3-pil python3-psycopg2 python3-botocore python3-yaml
      python3-jsonschema curl postgresql-15 chromium zstd clang-format cppcheck prometheus ffmpeg
      strace libfaketime)
# ffmpeg: its ffprobe checks the video previews and makes the test clips.
# prometheus: its promtool checks the /metrics scrape (the service stays off under policy-rc.d).
# strace: test_files watches the stored files' folders being fsynced.
# libfaketime: test_postgres runs a server whose clock is behind the database's.
bench=(wrk postgresql-15 curl python3)

want=()
for set in "${@:-build}"; do
  case "$set" in
    build) want+=("${build[@]}") ;;
    test) want+=("${build[@]}" "${test[@]}") ;;
    bench) want+=("${build[@]}" "${bench[@]}") ;;
    *) echo "deps.sh: unknown set '$set' (build, test, bench)" >&2; exit 2 ;;
  esac
done

# The S3 test server (s3rver) and the benchmark's Node peer run on Node.js:
# Debian's unless one is there.
case " $* " in
  *" test "* | *" bench "*) command -v npm >/dev/null 2>&1 || want+=(nodejs npm) ;;
esac

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps.sh: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "deps.sh: not root; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# A fresh machine has no package lists yet; refresh them once when needed.
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/lensroom-apt.log 2>&1; then
  apt-get update -qq >>/tmp/lensroom-apt.log 2>&1
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >>/tmp/lensroom-apt.log 2>&1 || {
    tail -20 /tmp/lensroom-apt.log >&2
    echo "deps.sh: apt-get install failed (log: /tmp/lensroom-apt.log)" >&2
    exit 1
  }
fi
