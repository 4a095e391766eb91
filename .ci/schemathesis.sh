#!/usr/bin/env bash
# A 60-second schemathesis run against /openapi.json of the running demo server: no server errors.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v st >/dev/null 2>&1; then
  python3 -m pip install -q 'schemathesis>=4,<5'
fi
cargo build -q --bin grantry
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
out=$(mktemp)
GRANTRY_BIND="127.0.0.1:${port}" LOG_LEVEL=warn "${CARGO_TARGET_DIR:-target}/debug/grantry" demo >"$out" 2>/dev/null &
demo=$!
trap 'kill $demo 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:${port}/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
admin=$(sed -n 's/^ADMIN=//p' "$out")
if [ -z "$admin" ]; then
  echo "error: the demo did not start" >&2
  exit 1
fi
deadline=$((SECONDS + 60))
runs=0
while [ $SECONDS -lt $deadline ]; do
  runs=$((runs + 1))
  st run "http://127.0.0.1:${port}/openapi.json" \
    -H "Authorization: Bearer ${admin}" \
    --checks not_a_server_error \
    --max-examples 100 \
    --seed "$runs" \
    --no-color | tail -n 6
done
echo "schemathesis: ${runs} runs over 60 s, no server errors"
