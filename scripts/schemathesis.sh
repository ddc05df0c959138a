#!/usr/bin/env bash
# Property-based API check: runs schemathesis (PyPI) against a running Paddock built from this tree,
# once with a member token and once with a daemon token, for a bounded number of examples per
# operation. Fails on any 5xx and on any response that violates the OpenAPI document.
#   scripts/schemathesis.sh [max examples per operation, default 25]
# Uses DATABASE_URL (a server where it may create a database) if set, else the embedded cluster in a
# temporary data dir.
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-25}"
command -v schemathesis >/dev/null || pip install --quiet schemathesis
cargo build --quiet --bin paddock

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
admin="pdk_schemathesis_$(date +%s)"
data=$(mktemp -d)
chmod 755 "$data"
log="$data/serve.log"
db_env=()
if [ -n "${DATABASE_URL:-}" ]; then
  db="paddock_st_$(date +%s)"
  psql "$DATABASE_URL" -qc "CREATE DATABASE $db" >/dev/null
  db_env=(DATABASE_URL="${DATABASE_URL%/*}/$db")
else
  db_env=(-u DATABASE_URL)
fi
env -u REDIS_URL "${db_env[@]}" PADDOCK_DATA_DIR="$data" PADDOCK_ADMIN_TOKEN="$admin" \
  PADDOCK_LISTEN="127.0.0.1:$port" "${CARGO_TARGET_DIR:-./target}/debug/paddock" serve >"$log" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server 2>/dev/null || true; rm -rf "$data"' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 1 120); do curl -sf "$base/readyz" >/dev/null && break; sleep 0.5; done
curl -sf "$base/readyz" >/dev/null || { cat "$log"; exit 1; }

post() { curl -sf -X POST "$base$1" -H "Authorization: Bearer $2" -H 'content-type: application/json' -d "$3"; }
ws=$(post /api/v1/workspaces "$admin" '{"name":"schemathesis"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
member=$(post "/api/v1/workspaces/$ws/tokens" "$admin" '{"kind":"member","name":"st"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
daemon=$(post "/api/v1/workspaces/$ws/tokens" "$admin" '{"kind":"daemon","name":"st"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
# Something to find: a runtime, an agent and a task.
rt=$(post /api/v1/daemon/register "$daemon" '{"daemon_id":"st","provider":"claude-code"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["runtime_id"])')
agent=$(post /api/v1/agents "$member" "{\"name\":\"st\",\"runtime_id\":\"$rt\",\"definition\":{}}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
post /api/v1/tasks "$member" "{\"agent_id\":\"$agent\",\"payload\":{}}" >/dev/null

for who in member daemon; do
  token=${!who}
  echo "== schemathesis as $who ($examples examples per operation)"
  schemathesis run "$base/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,response_schema_conformance,content_type_conformance \
    --exclude-path /api/v1/ws \
    --exclude-path-regex ".*/messages/ws$" \
    --max-examples "$examples" \
    --seed 42 \
    --no-color
done
