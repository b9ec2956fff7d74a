#!/usr/bin/env bash
# bench/instructions.sh: user-space instructions per proxied request, counted by callgrind.
#
# Unlike requests/s, an instruction count does not move with the machine's load or clock, so
# it shows the effect of a change to the request path even on a noisy shared machine. It
# counts only user space (the kernel's share is about the same for every proxy here: one
# read and one write on each side per request).
#
# Usage: bash bench/instructions.sh [PORTICO_BIN]   (default: target/release/portico)
#   ONLY="portico-auth nginx"  measures only these; KEEP=DIR keeps each callgrind profile
#   there as callgrind.<name> (read it with callgrind_annotate).
# Needs valgrind, nginx and wrk (installed from Debian's packages if missing).
# Prints instructions/request for Portico (plain; with two targets, health checks and a
# circuit breaker: portico-2; with an API key and a local rate limit on the route:
# portico-auth; writing an access log file, counting analytics and exporting 1% of traces
# over OTLP: portico-observe; an AI route posting an OpenAI chat completion to an
# OpenAI-compatible provider: portico-ai; all but portico-observe with analytics off) and for
# nginx as a reverse proxy.
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORTICO=${1:-$REPO_ROOT/target/release/portico}
BODY='{"status":"ok","service":"peerbench-backend","payload":"0123456789abcdefghijklmnopqrstuvwxyzABCDEF"}'
# What the AI route's provider answers: a fixed OpenAI chat completion, as in bench/ai.sh.
COMPLETION='{"id":"chatcmpl-mock123","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}'

need=()
for tool in valgrind nginx wrk curl; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
  apt-get update -qq && apt-get install -y -qq "${need[@]/nginx/nginx-light}" >/dev/null
fi
[[ -x $PORTICO ]] || { echo "no Portico binary at $PORTICO (cargo build --release -p portico)" >&2; exit 1; }

SCRATCH=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$SCRATCH"; }
trap cleanup EXIT

cat > "$SCRATCH/backend.conf" <<NGINX
pid $SCRATCH/backend.pid;
error_log $SCRATCH/backend.err warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_timeout 300s; keepalive_requests 10000000;
  client_body_temp_path $SCRATCH; proxy_temp_path $SCRATCH; fastcgi_temp_path $SCRATCH; uwsgi_temp_path $SCRATCH; scgi_temp_path $SCRATCH;
  server { listen 127.0.0.1:19001; listen 127.0.0.1:19002; default_type application/json;
    location / { return 200 '$BODY'; }
    location = /v1/chat/completions { client_body_buffer_size 64k; return 200 '$COMPLETION'; } }
}
NGINX
cat > "$SCRATCH/proxy.conf" <<NGINX
pid $SCRATCH/proxy.pid;
error_log $SCRATCH/proxy.err warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_timeout 300s; keepalive_requests 10000000;
  client_body_temp_path $SCRATCH; proxy_temp_path $SCRATCH; fastcgi_temp_path $SCRATCH; uwsgi_temp_path $SCRATCH; scgi_temp_path $SCRATCH;
  upstream backend { server 127.0.0.1:19001; keepalive 512; }
  server { listen 127.0.0.1:18081; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
NGINX
cat > "$SCRATCH/portico.yaml" <<YAML
services:
  - name: backend
    targets: [{address: 127.0.0.1:19001}]
routes:
  - name: all
    service: backend
YAML
# The same with two targets, active and passive health checks and a circuit breaker.
cat > "$SCRATCH/portico-2.yaml" <<YAML
services:
  - name: backend
    targets: [{address: 127.0.0.1:19001}, {address: 127.0.0.1:19002}]
    health: {active: {path: /, interval_ms: 1000}, passive: {failures: 5}}
    circuit_breaker: {failure_rate_percent: 50, minimum_requests: 20}
routes:
  - name: all
    service: backend
YAML

# The plain route with an API key and a per-consumer rate limit high enough never to refuse.
API_KEY=bench-key-0123456789abcdef
cat > "$SCRATCH/portico-auth.yaml" <<YAML
services:
  - name: backend
    targets: [{address: 127.0.0.1:19001}]
routes:
  - name: all
    service: backend
    policies:
      key_auth: {header: x-api-key}
      rate_limit: {by: consumer, limits: [{requests: 1000000000, per: second}]}
consumers:
  - name: bench
    credentials: [{type: key_auth, key: "$API_KEY"}]
YAML

# An AI service: the chat model served by an OpenAI-compatible provider (the backend).
cat > "$SCRATCH/portico-ai.yaml" <<YAML
ai_providers:
  - {name: mock, kind: openai_compatible, base_url: "http://127.0.0.1:19001/v1", keys: [{name: k, key: dummy}]}
ai_models:
  - {name: gpt-4o-mini, targets: [{provider: mock, model: gpt-4o-mini}]}
services: [{name: llm, ai: {}}]
routes: [{name: llm, paths: ["/v1/*"], service: llm}]
YAML
cat > "$SCRATCH/chat.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
wrk.headers["Content-Type"] = "application/json"
LUA

nginx -c "$SCRATCH/backend.conf" -g 'daemon off; worker_processes 1;' & PIDS+=($!)

# Runs "$@" under callgrind, serving on $port; prints instructions per request. Requests
# carry the API key (only portico-auth looks at it); with URL_PATH and WRK_SCRIPT set, wrk
# sends what the script says to that path.
measure() {
  local name=$1 port=$2; shift 2
  [[ -z ${ONLY:-} || " $ONLY " == *" $name "* ]] || return 0
  local key="x-api-key: $API_KEY" url="http://127.0.0.1:$port${URL_PATH:-/}"
  local script=(${WRK_SCRIPT:+-s "$WRK_SCRIPT"})
  local out="$SCRATCH/callgrind.$name"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" 2>"$SCRATCH/$name.log" & local pid=$!
  PIDS+=($pid)
  for _ in $(seq 1 200); do curl -s -H "$key" -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.3; done
  wrk -t1 -c16 -d3s -H "$key" "${script[@]}" "$url" >/dev/null          # warm up: pools, caches
  callgrind_control -z "$pid" >/dev/null 2>&1
  local requests
  requests=$(wrk -t1 -c16 -d5s -H "$key" "${script[@]}" "$url" | awk '/requests in/ {print $1}')
  callgrind_control -d "$pid" >/dev/null 2>&1
  sleep 1
  local dump instructions
  dump=$(ls -t "$out"* | head -n1)
  instructions=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
  printf '%-12s %8d requests  %7d instructions/request\n' "$name" "$requests" $((instructions / requests))
  if [[ -n ${KEEP:-} ]]; then mkdir -p "$KEEP" && cp "$dump" "$KEEP/callgrind.$name"; fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

measure portico 18085 "$PORTICO" --data-dir "$SCRATCH/data" --listen 127.0.0.1:18085 \
  --admin-listen 127.0.0.1:19085 --workers 1 --analytics false serve --config "$SCRATCH/portico.yaml"
measure portico-2 18086 "$PORTICO" --data-dir "$SCRATCH/data-2" --listen 127.0.0.1:18086 \
  --admin-listen 127.0.0.1:19086 --workers 1 --analytics false serve --config "$SCRATCH/portico-2.yaml"
measure portico-auth 18087 "$PORTICO" --data-dir "$SCRATCH/data-auth" --listen 127.0.0.1:18087 \
  --admin-listen 127.0.0.1:19087 --workers 1 --analytics false serve --config "$SCRATCH/portico-auth.yaml"
measure portico-observe 18088 "$PORTICO" --data-dir "$SCRATCH/data-observe" --listen 127.0.0.1:18088 \
  --admin-listen 127.0.0.1:19088 --workers 1 --access-log "$SCRATCH/access.log" \
  --otlp-endpoint http://127.0.0.1:19001 serve \
  --config "$SCRATCH/portico.yaml"
URL_PATH=/v1/chat/completions WRK_SCRIPT=$SCRATCH/chat.lua measure portico-ai 18089 "$PORTICO" \
  --data-dir "$SCRATCH/data-ai" --listen 127.0.0.1:18089 --admin-listen 127.0.0.1:19089 --workers 1 \
  --analytics false serve --config "$SCRATCH/portico-ai.yaml"
measure nginx 18081 nginx -c "$SCRATCH/proxy.conf" -g 'daemon off; master_process off; worker_processes 1;'
