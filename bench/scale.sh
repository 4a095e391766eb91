#!/usr/bin/env bash
# Scale run: seed N sealed connections (examples/seed.rs), start the release server over them and
# measure cold start to /readyz, the first maintenance pass (1 % due: time and peak RSS), the first
# and a deep admin page, every page of a full walk, and the status route under wrk at 64
# connections (one hot user, then random users). SQLite with SCALE_SQLITE_COUNT rows (100k) and
# PostgreSQL with SCALE_POSTGRES_COUNT rows (1M) in a database of its own, dropped afterwards.
# Prints Markdown tables for docs/performance.md.
#
#   bench/scale.sh                      # both backends
#   SCALE_BACKENDS=sqlite bench/scale.sh
#   SCALE_POSTGRES_URL=postgres://postgres@127.0.0.1:5432 SCALE_POSTGRES_COUNT=1000000 bench/scale.sh
#
# To measure again without seeding again: keep a seeding of PostgreSQL (with --serve-fake, its
# fake still running) as a template database and name it and its --out folder (which holds
# keys.env with GRANTRY_ENCRYPTION_KEY and GRANTRY_JWT_SECRET):
#   SCALE_BACKENDS=postgres SCALE_POSTGRES_TEMPLATE=grantry_scale_seed SCALE_SEEDED=target/scale-pg bench/scale.sh
# The seed's fake takes a rotated-out refresh token again for a day, so every copy's first
# maintenance pass refreshes the due rows for real.
set -euo pipefail
cd "$(dirname "$0")/.."

SQLITE_COUNT=${SCALE_SQLITE_COUNT:-100000}
POSTGRES_COUNT=${SCALE_POSTGRES_COUNT:-1000000}
POSTGRES_URL=${SCALE_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
BACKENDS=${SCALE_BACKENDS:-sqlite postgres}
DURATION=${SCALE_WRK_DURATION:-10s}
WALK_LIMIT=${SCALE_WALK_LIMIT:-1000}
PROVIDER=atlassian

if ! command -v wrk >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --bin grantry --example seed
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
# SCALE_GRANTRY measures another build of the server (an A/B run) with this one's seed tool.
GRANTRY=${SCALE_GRANTRY:-$TARGET/release/grantry}
SEED="$TARGET/release/examples/seed"
WORK="$TARGET/scale"
mkdir -p "$WORK"

now_ms() { date +%s%3N; }
kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}
trap 'cleanup; drop_pg' EXIT
PG_DB=""
drop_pg() {
  if [ -n "$PG_DB" ]; then
    psql -q "$POSTGRES_URL/postgres" -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true
    PG_DB=""
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts the server; sets SERVER_PID, BASE and COLD_MS (milliseconds to the first 200 of /readyz).
start_server() {
  local url=$1 log=$2 port
  port=$(free_port)
  BASE="http://127.0.0.1:$port"
  local started
  started=$(now_ms)
  env -i PATH="$PATH" GRANTRY_BIND="127.0.0.1:$port" DATABASE_URL="$url" \
    GRANTRY_ENCRYPTION_KEY="$KEY" GRANTRY_JWT_SECRET="$JWT" \
    LOG_LEVEL="warn,grantry_server=debug,grantry_core=info" GRANTRY_MAINTENANCE_INTERVAL=86400 \
    ENABLE_ATLASSIAN_INTEGRATION=true $(cat "$WORK/fake.env") \
    "$GRANTRY" serve >/dev/null 2>"$log" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  until curl -sf -o /dev/null "$BASE/readyz"; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "the server died; its log:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.005
  done
  COLD_MS=$(($(now_ms) - started))
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}

# wrk at 64 connections; prints "requests/s p50 p99" (milliseconds).
run_wrk() {
  local out
  out=$(wrk -t1 -c64 -d"$DURATION" --latency "$@")
  if grep -q "Non-2xx" <<<"$out"; then
    echo "errors during wrk $*:" >&2
    echo "$out" >&2
    exit 1
  fi
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec:/ {rps = $2}
    $1 == "50%" {p50 = ms($2)}
    $1 == "99%" {p99 = ms($2)}
    END {printf "%.0f %.2f %.2f\n", rps, p50, p99}' <<<"$out"
}

# One admin page: prints "status seconds next-path" (next-path empty on the last page).
admin_page() {
  local path=$1 headers
  headers=$(mktemp)
  local line
  line=$(curl -s -o /dev/null -D "$headers" -w '%{http_code} %{time_total}' \
    -H "Authorization: Bearer $ADMIN" "$BASE$path")
  local next
  next=$(tr -d '\r' <"$headers" | awk 'tolower($1) == "link:" && /rel="next"/ {print}' |
    sed -E 's/^[^<]*<([^>]*)>.*/\1/' | sed -E 's#^https?://[^/]+##')
  rm -f "$headers"
  echo "$line $next"
}

scale_run() {
  local label=$1 url=$2 count=$3 seed_pid="" seed_s
  if [ -n "${SCALE_SEEDED:-}" ]; then
    WORK=$SCALE_SEEDED
    KEY=$(sed -n 's/^GRANTRY_ENCRYPTION_KEY=//p' "$WORK/keys.env")
    JWT=$(sed -n 's/^GRANTRY_JWT_SECRET=//p' "$WORK/keys.env")
    seed_s="(seeded before)"
  else
    echo "== $label: seeding $count connections" >&2
    KEY=$("$GRANTRY" keygen)
    JWT=$("$GRANTRY" keygen)
    printf 'GRANTRY_ENCRYPTION_KEY=%s\nGRANTRY_JWT_SECRET=%s\n' "$KEY" "$JWT" >"$WORK/keys.env"
    rm -f "$WORK/fake.env" "$WORK/seed.out"
    local seeded_at
    seeded_at=$(now_ms)
    DATABASE_URL="$url" GRANTRY_ENCRYPTION_KEY="$KEY" GRANTRY_JWT_SECRET="$JWT" \
      "$SEED" --count "$count" --out "$WORK" --serve-fake >"$WORK/seed.out" &
    seed_pid=$!
    PIDS+=("$seed_pid")
    until grep -q "fake Atlassian serving" "$WORK/seed.out" 2>/dev/null; do
      kill -0 "$seed_pid" 2>/dev/null || { echo "seeding failed" >&2; exit 1; }
      sleep 1
    done
    seed_s="$(awk -v ms=$(($(now_ms) - seeded_at)) 'BEGIN {printf "%.0f", ms / 1000}') s"
    # The statistics autovacuum would gather by itself, some time after a bulk load: without
    # them the planner takes the freshly loaded tables for empty ones (seen: status reads joining
    # the sites by a sequential scan, 1 s each, on a 200k-row seeding measured at once).
    case $url in postgres*) psql -q "$url" -c "VACUUM ANALYZE" ;; esac
  fi
  # Migrations first (a template seeded by an older version gets its new indexes here).
  local migrate_ms
  migrate_ms=$(now_ms)
  env -i PATH="$PATH" DATABASE_URL="$url" GRANTRY_ENCRYPTION_KEY="$KEY" GRANTRY_JWT_SECRET="$JWT" \
    "$GRANTRY" migrate >/dev/null
  migrate_ms=$(($(now_ms) - migrate_ms))
  ADMIN=$(cat "$WORK/admin-token.txt")
  head -n1 "$WORK/user-tokens.txt" >"$WORK/hot-token.txt"

  echo "== $label: cold start and the first maintenance pass" >&2
  local log="$WORK/server-$label.log"
  local started cold
  started=$(now_ms)
  start_server "$url" "$log"
  cold=$COLD_MS
  until grep -qi "maintenance pass" "$log"; do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.05
  done
  local pass_ms=$(($(now_ms) - started))
  local pass_rss
  pass_rss=$(kib "$SERVER_PID")
  local pass_line
  pass_line=$(grep -i "maintenance pass" "$log" | head -n1 | sed -E 's/\x1b\[[0-9;]*m//g')
  local refreshes
  refreshes=$(curl -s "$BASE/metrics" | awk '/^grantry_keep_alive_refreshes_total/ {print $2}')

  echo "== $label: admin pages" >&2
  local first first_s deep_path deep_s
  first=$(admin_page "/api/v1/$PROVIDER/admin/connections?limit=100")
  first_s=$(awk '{print $2}' <<<"$first")
  # A walk over every page (limit $WALK_LIMIT); the cursor of the page 90 % deep is re-read at 100.
  local path="/api/v1/$PROVIDER/admin/connections?limit=$WALK_LIMIT" pages=0 times=() cursors=()
  while [ -n "$path" ]; do
    local page
    page=$(admin_page "$path")
    read -r code secs next <<<"$page"
    [ "$code" = 200 ] || { echo "admin page $path answered $code" >&2; exit 1; }
    times+=("$secs")
    pages=$((pages + 1))
    cursors+=("$next")
    path=$next
  done
  local walk
  walk=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR] = $1} END {
    p50 = a[int((NR + 1) / 2)]; p99 = a[int(NR * 0.99) > 0 ? int(NR * 0.99) : 1]; printf "%.1f %.1f %.1f", p50 * 1000, p99 * 1000, a[NR] * 1000}')
  deep_path=""
  if [ "$pages" -gt 1 ]; then
    deep_path=${cursors[$((pages * 9 / 10 - 1))]}
  fi
  if [ -n "$deep_path" ]; then
    deep_path=$(sed -E "s/limit=$WALK_LIMIT/limit=100/" <<<"$deep_path")
    deep_s=$(admin_page "$deep_path" | awk '{print $2}')
  else
    deep_s=NaN
  fi

  echo "== $label: status under wrk" >&2
  local hot random
  hot=$(run_wrk -s bench/status.lua "$BASE/api/v1/$PROVIDER/connection/status" -- "$WORK/hot-token.txt")
  random=$(run_wrk -s bench/status.lua "$BASE/api/v1/$PROVIDER/connection/status" -- "$WORK/user-tokens.txt")
  local serve_rss
  serve_rss=$(kib "$SERVER_PID")
  stop_server

  echo "== $label: two more cold starts" >&2
  local colds=("$cold")
  for _ in 1 2; do
    start_server "$url" "$WORK/server-$label-restart.log"
    colds+=("$COLD_MS")
    stop_server
  done

  if [ -n "$seed_pid" ]; then
    kill "$seed_pid" 2>/dev/null || true
    wait "$seed_pid" 2>/dev/null || true
  fi

  read -r hot_rps hot_p50 hot_p99 <<<"$hot"
  read -r rnd_rps rnd_p50 rnd_p99 <<<"$random"
  read -r walk_p50 walk_p99 walk_max <<<"$walk"
  local users
  users=$(wc -l <"$WORK/user-tokens.txt")
  cat <<EOF

### $label, $count connections (load before the run: $LOAD)

| measure | value |
| --- | ---: |
| seeding ($count rows through \`Vault::save_grant\`, 16 workers) | ${seed_s} |
| \`grantry migrate\` on the seeded database | ${migrate_ms} ms |
| cold start to \`/readyz\` (3 starts) | ${colds[0]} ms, ${colds[1]} ms, ${colds[2]} ms |
| start-up plus the first maintenance pass (1 % due) | ${pass_ms} ms |
| keep-alive refreshes in that pass | ${refreshes:-?} |
| peak RSS after that pass | $(mib "$pass_rss") MiB |
| first admin page (\`limit=100\`) | $(awk -v s="$first_s" 'BEGIN {printf "%.1f", s * 1000}') ms |
| deep admin page (\`limit=100\`, 90 % in) | $(awk -v s="$deep_s" 'BEGIN {printf "%.1f", s * 1000}') ms |
| full walk, $pages pages of $WALK_LIMIT: p50 / p99 / max | $walk_p50 / $walk_p99 / $walk_max ms |
| status, one user, wrk -t1 -c64 | $hot_rps req/s, p50 $hot_p50 ms, p99 $hot_p99 ms |
| status, $users random users, wrk -t1 -c64 | $rnd_rps req/s, p50 $rnd_p50 ms, p99 $rnd_p99 ms |
| peak RSS of the server at the end | $(mib "$serve_rss") MiB |

maintenance log: \`$pass_line\`
EOF
}

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
echo "machine: $(nproc) cores, $(free -h | awk '/Mem:/ {print $2}') memory, $(uname -srm)"
for backend in $BACKENDS; do
  LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
  case $backend in
    sqlite)
      rm -f "$WORK"/scale.db*
      scale_run SQLite "sqlite://$WORK/scale.db" "$SQLITE_COUNT"
      rm -f "$WORK"/scale.db*
      ;;
    postgres)
      PG_DB="grantry_scale_$$"
      if [ -n "${SCALE_POSTGRES_TEMPLATE:-}" ]; then
        psql -q "$POSTGRES_URL/postgres" -c "CREATE DATABASE $PG_DB TEMPLATE $SCALE_POSTGRES_TEMPLATE" >/dev/null
      else
        psql -q "$POSTGRES_URL/postgres" -c "CREATE DATABASE $PG_DB" >/dev/null
      fi
      scale_run PostgreSQL "$POSTGRES_URL/$PG_DB" "$POSTGRES_COUNT"
      drop_pg
      ;;
    *) echo "unknown backend $backend" >&2; exit 1 ;;
  esac
done
