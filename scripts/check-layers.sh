#!/usr/bin/env bash
# Checks that no #include in src/ points up a layer. Each folder of src/ is a
# layer; a file may include its own folder and the layers below it, never
# one above or beside it. The order (lowest first):
#   core < loop < db, storage, http, net < auth, providers, media < pipeline, backup, billing
#        < cli, app.h < api < main.c
# Prints each offending include and exits 1; silent when all is well.
set -euo pipefail
cd "$(dirname "$0")/../src"

level() {
  case "$1" in
    core) echo 0 ;; loop) echo 1 ;;
    db | storage | http | net) echo 2 ;;
    auth | providers | media) echo 3 ;;
    pipeline | backup | billing) echo 4 ;;
    cli | app.h) echo 5 ;;
    api) echo 6 ;;
    main.c) echo 7 ;;
    *) echo "check-layers: no layer for '$1' (add it above)" >&2; exit 2 ;;
  esac
}

bad=0
while IFS= read -r line; do
  file=${line%%:*}
  target=$(sed -E 's/.*#include "([^"]+)".*/\1/' <<<"${line#*:}")
  from=${file%%/*}
  to=${target%%/*}
  [ "$from" = "$to" ] && continue
  if [ "$(level "$to")" -ge "$(level "$from")" ]; then
    echo "src/$file includes \"$target\": layer $to is not below $from" >&2
    bad=1
  fi
done < <(grep -rn --include='*.c' --include='*.h' -E '^#include "' . | sed 's|^\./||; s/:[0-9]*:/:/')
exit $bad
