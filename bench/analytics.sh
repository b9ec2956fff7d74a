#!/usr/bin/env bash
# bench/analytics.sh: the analytics queries at scale.
#
# Fills a store with a week of synthetic traffic, EVENTS access-log rows (default 10
# million) and the rollups Portico's analytics writes for them (see
# crates/portico-store/examples/traffic_history.rs), then starts Portico on that store and
# times the admin API's dashboard queries over the whole week with curl: one cold run,
# then RUNS warm ones.
#
# Usage:
#   bash bench/analytics.sh                                   # SQLite, in a scratch dir
#   STORE=postgres://postgres@127.0.0.1:5432/portico_analytics_bench bash bench/analytics.sh
#
# Settings (environment variables):
#   EVENTS       access events to store                         (default 10000000)
#   RUNS         warm runs per query                            (default 20)
#   STORE        the store URL (a PostgreSQL database is dropped and created again)
#   PORTICO_BIN  use this portico binary instead of building it
#   KEEP         1 = keep the scratch dir (the SQLite store, Portico's log)
#   LOADED       1 = STORE already holds the traffic (from a run with KEEP=1): only time
#                the queries
#
# Output: one line per query (cold ms, warm median and worst ms); the last line gives the
# 7-day dashboard series' warm median.
set -euo pipefail
export LC_ALL=C
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EVENTS=${EVENTS:-10000000}
RUNS=${RUNS:-20}
ADMIN_PORT=${ADMIN_PORT:-9095}
SCRATCH=$(mktemp -d)
STORE=${STORE:-sqlite://$SCRATCH/portico.db}
PID=

cleanup() {
  [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  if [[ ${KEEP:-0} == 1 ]]; then echo "kept $SCRATCH" >&2; else rm -rf "$SCRATCH"; fi
}
trap cleanup EXIT
log() { echo "== $*" >&2; }

command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 >/dev/null; }

log "building the loader (and Portico unless PORTICO_BIN is set)"
(cd "$REPO_ROOT" && cargo build -q --release -p portico-store --example traffic_history)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
if [[ -z ${PORTICO_BIN:-} ]]; then
  (cd "$REPO_ROOT" && cargo build -q --release -p portico)
  PORTICO_BIN=$TARGET_DIR/release/portico
fi

if [[ ${LOADED:-0} == 1 ]]; then
  log "timing the queries on the traffic already in $STORE"
elif [[ $STORE == postgres* ]]; then
  command -v psql >/dev/null || { apt-get update -qq && apt-get install -y -qq postgresql-client >/dev/null; }
  db=${STORE##*/}
  log "recreating PostgreSQL database $db"
  psql -q "${STORE%/*}/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
fi

if [[ ${LOADED:-0} != 1 ]]; then
  log "storing $EVENTS access events and their rollups in $STORE"
  "$TARGET_DIR/release/examples/traffic_history" "$STORE" "$EVENTS"
fi
if [[ $STORE == sqlite* ]]; then log "store size: $(du -sh "${STORE#sqlite://}" | cut -f1)"; fi

TOKEN=$("$PORTICO_BIN" --store "$STORE" admin token create --name analytics-bench --role viewer 2>/dev/null)
"$PORTICO_BIN" serve --store "$STORE" --listen 127.0.0.1:0 --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --analytics false >"$SCRATCH/portico.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/api/v1/health" && break
  sleep 0.1
done

# Prints "query cold median worst" in ms.
time_query() {
  local url="http://127.0.0.1:$ADMIN_PORT/api/v1/analytics/$1" times=()
  for _ in $(seq 0 "$RUNS"); do
    times+=("$(curl -sf -o /dev/null -w '%{time_total}' -H "authorization: Bearer $TOKEN" "$url")")
  done
  python3 - "$1" "${times[@]}" <<'PY'
import statistics, sys
query, cold, *warm = sys.argv[1], *map(float, sys.argv[2:])
print(f"{query:<48} cold {cold*1000:7.1f} ms   warm median {statistics.median(warm)*1000:6.1f} ms   worst {max(warm)*1000:6.1f} ms")
PY
}

total=$(curl -sf -H "authorization: Bearer $TOKEN" "http://127.0.0.1:$ADMIN_PORT/api/v1/analytics/series?range=8d" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["total"]["requests"])')
log "the rollups count $total requests over the week"
for query in "series?range=7d" "top?dimension=route&range=7d" "top?dimension=consumer&range=7d" \
  "top?dimension=route&range=7d&by=latency" "top?dimension=consumer&range=7d&by=latency" \
  "top?dimension=error&range=7d" "top?dimension=consumer&route=route-00&range=7d" \
  "top?dimension=route&consumer=app-000&range=7d" "series?range=6h" \
  "series?range=7d&dimension=consumer&key=app-000"; do
  time_query "$query"
done | tee "$SCRATCH/results.txt"
median=$(awk '/^series\?range=7d  / {print $7}' "$SCRATCH/results.txt")
echo "7-day dashboard series over $EVENTS events: warm median $median ms"
