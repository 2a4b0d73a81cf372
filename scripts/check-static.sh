#!/usr/bin/env bash
# Static analysis of the C sources with Debian 12's cppcheck 2.10: the
# warning, performance and portability checks, every finding fatal.
# Suppressed everywhere: readdirCalled (glibc's readdir is safe per DIR
# stream, and readdir_r is deprecated). A false positive at one line is
# suppressed there with a comment: // cppcheck-suppress <id>, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cppcheck >/dev/null || { echo "check-static: cppcheck missing (scripts/deps.sh test installs it)" >&2; exit 1; }
exec cppcheck --quiet --error-exitcode=1 --std=c11 --library=posix -D__GNUC__ -I src \
  --enable=warning,performance,portability --inline-suppr \
  --suppress=missingIncludeSystem --suppress=readdirCalled \
  -j 2 src
