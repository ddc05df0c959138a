#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine. It installs what the tests need and is missing —
# PostgreSQL and Redis server binaries (the harness starts private instances unless DATABASE_URL /
# REDIS_URL are set), promtool (the metrics check), Chromium and playwright-core (the dashboard
# test) — then runs `cargo test` over the whole workspace with any arguments given.
set -euo pipefail
cd "$(dirname "$0")"

have_pg() {
  command -v initdb >/dev/null 2>&1 && return 0
  [ -x "$(pg_config --bindir 2>/dev/null)/initdb" ] && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}
need=()
have_pg || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
command -v promtool >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
command -v node >/dev/null || need+=(nodejs npm)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]} — install them (Debian: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "== npm install (tests/browser)"
  (cd tests/browser && npm install --no-audit --no-fund --silent)
fi
exec cargo test --workspace --no-fail-fast "$@"
