#!/usr/bin/env bash
# Installs the Node peer's packages (pg, jose; pinned by package-lock.json)
# when they are missing or older than the lock file. Quiet when they are there.
set -euo pipefail
cd "$(dirname "$0")"
stamp=node_modules/.lensroom-installed
if [ -d node_modules/pg ] && [ -d node_modules/jose ] && [ "$stamp" -nt package-lock.json ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "bench/peer: npm not found (apt-get install nodejs npm)" >&2; exit 1; }
npm ci --no-audit --no-fund --loglevel=error >/tmp/lensroom-peer-npm.log 2>&1 || {
  cat /tmp/lensroom-peer-npm.log >&2
  echo "bench/peer/install.sh: npm ci failed" >&2
  exit 1
}
touch "$stamp"
