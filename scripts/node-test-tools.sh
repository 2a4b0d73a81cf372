#!/usr/bin/env bash
# Installs the test-time Node.js tools (s3rver, jose, @supabase/ssr, OpenAPI
# linters; from npm, pinned by
# tests/node/package-lock.json) when it is missing or out of date. Quiet when
# it is there.
set -euo pipefail
cd "$(dirname "$0")/../tests/node"
stamp=node_modules/.lensroom-installed
if [ -x node_modules/.bin/s3rver ] && [ -d node_modules/@seriousme ] && [ "$stamp" -nt package-lock.json ]; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error >/tmp/lensroom-npm.log 2>&1 || {
  cat /tmp/lensroom-npm.log >&2
  echo "node-test-tools.sh: npm ci failed" >&2
  exit 1
}
touch "$stamp"
