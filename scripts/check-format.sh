#!/usr/bin/env bash
# Checks that the C sources are formatted as .clang-format says (Debian 12's
# clang-format 14). Prints the files that are not and exits 1; to fix them:
#   clang-format -i $(git ls-files 'src/*.[ch]' 'tests/unit/*.c' 'bench/*.c')
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "check-format: clang-format missing (scripts/deps.sh test installs it)" >&2; exit 1; }
bad=0
while IFS= read -r f; do
  if ! clang-format --style=file --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "check-format: $f is not formatted (clang-format -i $f)" >&2
    bad=1
  fi
done < <(find src tests/unit bench -name '*.[ch]' -not -path '*/node_modules/*' | sort)
exit $bad
