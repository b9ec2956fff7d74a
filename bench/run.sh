#!/usr/bin/env bash
# bench/run.sh: benchmark Portico side by side with nginx and HAProxy.
#
# Method: shared/design/benchmarking.md (summary in bench/README.md). One nginx
# backend (1 worker, fixed 100-byte JSON body) on 127.0.0.1:9001. Proxies in
# front of it: nginx :8081, HAProxy :8082, Portico :8085. wrk drives each
# target in turn. Targets are interleaved within every repetition, so slow
# drift hits them all equally.
#
# Usage (as root on Debian; installs nginx/haproxy/wrk/curl if missing):
#   bash bench/run.sh
#   TARGETS="direct nginx haproxy" DURATION=2 REPS=1 CONNS=64 bash bench/run.sh
#
# Settings (environment variables):
#   DURATION     seconds per wrk run                             (default 10)
#   REPS         repetitions per concurrency level               (default 3)
#   CONNS        wrk connection counts, space-separated          (default "64 256")
#   TARGETS      subset of "direct nginx nginx-fwd haproxy portico nginx-2 portico-2
#                portico-auth portico-observe",
#                in this order. nginx-fwd is nginx doing what Portico does on every
#                request: X-Forwarded-For/Proto/Host and an X-Request-Id sent upstream
#                and returned to the client. nginx-2 and portico-2 balance over two
#                targets (the backend listens on a second port too) with health checks:
#                nginx's passive max_fails (open-source nginx has no active checks or
#                circuit breakers); Portico's active probes, passive ejection and a
#                circuit breaker. portico-auth is plain Portico with an API key
#                (key_auth) and a local per-consumer rate limit on the route; wrk
#                sends the key. These three run with analytics off, like nginx with
#                access_log off. portico-observe is plain Portico writing an access
#                log file, counting analytics rollups into its SQLite store, and
#                exporting the spans of 1% of requests over OTLP (to the
#                backend nginx, which answers 200); metrics, traceparent and
#                Server-Timing are always on (default: all). Without a portico target, no cargo
#                build happens.
#   MODE         pinned-w1 (default): wrk on CPU 0, backend + proxy on CPU 1,
#                1 worker each. unpinned-w1 / unpinned-w2: no CPU affinity,
#                1 or 2 proxy workers (the backend always has 1 worker).
#   WARMUP       warm-up seconds per target before measuring     (default 2, 0 = none)
#   COOLDOWN     idle seconds before each measured run            (default 3)
#   PORTICO_BIN  use this portico binary instead of running
#                `cargo build --release -p portico` in the repo root
#   RESULTS_DIR  where raw wrk outputs + metadata go
#                (default bench/results/<UTC time>-<MODE>, git-ignored)
#   KEEP         1 = keep the scratch dir (configs, server logs) (default 0)
#   BACKEND_PORT NGINX_PORT HAPROXY_PORT PORTICO_PORT ADMIN_PORT
#                127.0.0.1 ports (default 9001 8081 8082 8085 9085)
#
# Output: progress lines, then a markdown table from bench/report.py. The last
# line is "portico/nginx requests/s ratio: X.XX (c64)" (or ": n/a").
# Re-print a table later with: python3 bench/report.py RESULTS_DIR

set -euo pipefail

# nginx and haproxy live in /usr/sbin, which `su` without `-` leaves out of PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C   # byte-oriented string lengths, stable number formats

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)

DURATION=${DURATION:-10}
REPS=${REPS:-3}
CONNS=${CONNS:-64 256}
TARGETS=${TARGETS:-direct nginx nginx-fwd haproxy portico nginx-2 portico-2 portico-auth portico-observe}
MODE=${MODE:-pinned-w1}
WARMUP=${WARMUP:-2}
COOLDOWN=${COOLDOWN:-3}
KEEP=${KEEP:-0}
PORTICO_BIN=${PORTICO_BIN:-}

# Topology: the design doc's ports. Override only if one is taken on a shared
# machine (the port does not change the numbers).
BACKEND_PORT=${BACKEND_PORT:-9001}
BACKEND_PORT2=${BACKEND_PORT2:-9002}
ADMIN_PORT=${ADMIN_PORT:-9085}
ADMIN_PORT2=${ADMIN_PORT2:-9087}
ADMIN_PORT_AUTH=${ADMIN_PORT_AUTH:-9089}
ADMIN_PORT_OBSERVE=${ADMIN_PORT_OBSERVE:-9091}
declare -A PORT=([direct]=$BACKEND_PORT [nginx]=${NGINX_PORT:-8081}
                 [nginx-fwd]=${NGINX_FWD_PORT:-8083}
                 [haproxy]=${HAPROXY_PORT:-8082} [portico]=${PORTICO_PORT:-8085}
                 [nginx-2]=${NGINX2_PORT:-8086} [portico-2]=${PORTICO2_PORT:-8088}
                 [portico-auth]=${PORTICO_AUTH_PORT:-8089}
                 [portico-observe]=${PORTICO_OBSERVE_PORT:-8090})
ALL_TARGETS="direct nginx nginx-fwd haproxy portico nginx-2 portico-2 portico-auth portico-observe"
# The API key wrk and the checks send to portico-auth (its consumer is in its config).
API_KEY=bench-key-0123456789abcdef
# Extra request headers per target.
declare -A HEADER=([portico-auth]="x-api-key: $API_KEY")

# The backend's response body. It must be exactly 100 bytes (checked below),
# as in the design-doc runs.
BODY='{"status":"ok","service":"peerbench-backend","payload":"0123456789abcdefghijklmnopqrstuvwxyzABCDEF"}'

SCRATCH=""
RESULTS=""
CREATED_POLICY_RC=0
declare -A SERVER_PID=()     # name -> PID of the process we started
SERVER_ORDER=()              # start order, so we stop in reverse

log() { printf '[bench] %s\n' "$*"; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Settings validation
# ---------------------------------------------------------------------------
validate_settings() {
  [[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be whole seconds > 0 (got '$DURATION')"
  [[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be an integer > 0 (got '$REPS')"
  [[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be whole seconds >= 0 (got '$WARMUP')"
  local c t
  [[ -n ${CONNS// /} ]] || die "CONNS is empty"
  for c in $CONNS; do
    [[ $c =~ ^[1-9][0-9]*$ ]] || die "CONNS entries must be integers > 0 (got '$c')"
  done
  [[ -n ${TARGETS// /} ]] || die "TARGETS is empty"
  for t in $TARGETS; do
    [[ " $ALL_TARGETS " == *" $t "* ]] || die "unknown target '$t' (known: $ALL_TARGETS)"
  done
  case $MODE in
    pinned-w1)   WORKERS=1; PINNED=1 ;;
    unpinned-w1) WORKERS=1; PINNED=0 ;;
    unpinned-w2) WORKERS=2; PINNED=0 ;;
    *) die "MODE must be pinned-w1, unpinned-w1 or unpinned-w2 (got '$MODE')" ;;
  esac
  if (( PINNED )); then
    # wrk gets CPU 0 and the servers CPU 1: both must exist.
    (( $(nproc --all) >= 2 )) || die "pinned mode needs at least 2 CPUs"
    WRK_PREFIX=(taskset -c 0)
    SERVER_PREFIX=(taskset -c 1)
  else
    WRK_PREFIX=()
    SERVER_PREFIX=()
  fi
  local p
  for p in "$BACKEND_PORT" "$BACKEND_PORT2" "$ADMIN_PORT" "$ADMIN_PORT2" "${PORT[@]}"; do
    [[ $p =~ ^[1-9][0-9]*$ ]] && (( p < 65536 )) || die "bad port '$p'"
  done
  (( ${#BODY} == 100 )) || die "backend body is ${#BODY} bytes, expected 100"
}

has_target() { [[ " $TARGETS " == *" $1 "* ]]; }
has_portico() { has_target portico || has_target portico-2 || has_target portico-auth || has_target portico-observe; }

# ---------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------

# Installs missing tools from Debian's packages. Debian's nginx and haproxy
# packages start their system services on install; we only want the
# binaries, so a policy-rc.d that denies service starts is put in place for
# the install (unless one exists already), and any service that started
# anyway (e.g. under systemd) is stopped and disabled afterwards.
ensure_packages() {
  local missing=() pkg_nginx_needed=0
  command -v nginx >/dev/null   || pkg_nginx_needed=1
  command -v wrk >/dev/null     || missing+=(wrk)
  command -v curl >/dev/null    || missing+=(curl)
  command -v python3 >/dev/null || missing+=(python3)
  command -v taskset >/dev/null || missing+=(util-linux)
  if has_target haproxy; then command -v haproxy >/dev/null || missing+=(haproxy); fi
  if (( ${#missing[@]} == 0 && pkg_nginx_needed == 0 )); then
    return 0
  fi

  (( EUID == 0 )) || die "missing tools (${missing[*]} $( ((pkg_nginx_needed)) && echo nginx)); run as root to install them"
  command -v apt-get >/dev/null || die "apt-get not found; install nginx, haproxy, wrk, curl, python3 by hand"

  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\n# written by portico bench/run.sh for the install; removed after\nexit 101\n' \
      > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    CREATED_POLICY_RC=1
  fi

  export DEBIAN_FRONTEND=noninteractive
  log "installing packages: ${missing[*]} $( ((pkg_nginx_needed)) && echo 'nginx-light (or nginx)')"
  apt-get update -qq
  if (( ${#missing[@]} > 0 )); then
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  if (( pkg_nginx_needed )); then
    # nginx-light is the smallest build with everything we use; newer Debian
    # releases may not have it, then the plain package does.
    apt-get install -y -qq --no-install-recommends nginx-light \
      || apt-get install -y -qq --no-install-recommends nginx
  fi

  remove_policy_rc
  local svc
  for svc in nginx haproxy; do
    if [[ $svc == nginx ]] && (( ! pkg_nginx_needed )); then continue; fi
    if [[ $svc == haproxy && " ${missing[*]} " != *" haproxy "* ]]; then continue; fi
    stop_package_service "$svc"
  done
  for svc in nginx haproxy wrk curl python3 taskset; do
    if [[ $svc == haproxy ]] && ! has_target haproxy; then continue; fi
    command -v "$svc" >/dev/null || die "$svc still missing after apt-get install"
  done
}

remove_policy_rc() {
  if (( CREATED_POLICY_RC )); then
    rm -f /usr/sbin/policy-rc.d
    CREATED_POLICY_RC=0
  fi
}

# Stops (and disables) a system service that a package we just installed may
# have started, so e.g. Debian's default nginx is not left listening on :80.
stop_package_service() {
  local svc=$1 pidfile=/run/$1.pid
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  elif [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    invoke-rc.d "$svc" stop >/dev/null 2>&1 || kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
  fi
  if [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    die "the $svc system service is still running (pid $(cat "$pidfile")); stop it and re-run"
  fi
}

# ---------------------------------------------------------------------------
# Portico binary
# ---------------------------------------------------------------------------
resolve_portico() {
  if [[ -n $PORTICO_BIN ]]; then
    [[ -x $PORTICO_BIN && -f $PORTICO_BIN ]] || die "PORTICO_BIN=$PORTICO_BIN is not an executable file"
    PORTICO=$(cd "$(dirname "$PORTICO_BIN")" && pwd)/$(basename "$PORTICO_BIN")
    return
  fi
  command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) or set PORTICO_BIN"
  log "building portico: cargo build --release -p portico"
  (cd "$REPO_ROOT" && cargo build --release -p portico)
  PORTICO=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/portico
  [[ $PORTICO == /* ]] || PORTICO=$REPO_ROOT/$PORTICO   # relative CARGO_TARGET_DIR
  [[ -x $PORTICO ]] || die "build finished but $PORTICO is missing"
}

# ---------------------------------------------------------------------------
# Configs (written into the scratch dir)
# ---------------------------------------------------------------------------

# nginx keeps temp files under its compiled-in prefix unless told otherwise;
# point them into the scratch dir so nothing outside it is touched.
nginx_common() { # $1 = dir
  cat <<EOF
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 8192; multi_accept on; }
EOF
}

nginx_temp_paths() { # $1 = dir
  cat <<EOF
  client_body_temp_path $1/tmp_body;
  proxy_temp_path $1/tmp_proxy;
  fastcgi_temp_path $1/tmp_fcgi;
  uwsgi_temp_path $1/tmp_uwsgi;
  scgi_temp_path $1/tmp_scgi;
EOF
}

# An nginx reverse proxy config: $1 = dir, $2 = listen port, $3 = extra location lines,
# $4 = the upstream's server lines (default: the backend's first port).
nginx_proxy_config() {
  local d=$1 port=$2 extra=$3 servers=${4:-"server 127.0.0.1:$BACKEND_PORT;"}
  {
    echo "# nginx reverse proxy :$port -> $servers with upstream keepalive"
    nginx_common "$d"
    echo "http {"
    echo "  access_log off;"
    nginx_temp_paths "$d"
    cat <<EOF
  keepalive_timeout 300s;
  keepalive_requests 10000000;
  upstream backend {
    $servers
    keepalive 512;               # idle upstream conns cached per worker
    keepalive_requests 10000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;$extra
    }
  }
}
EOF
  } > "$d/nginx.conf"
}

write_configs() {
  local d
  mkdir -p "$SCRATCH"/{backend,nginx-proxy,nginx-fwd,nginx-2,haproxy,portico,portico-data,portico-2,portico-2-data}
  mkdir -p "$SCRATCH"/{portico-auth,portico-auth-data,portico-observe,portico-observe-data}

  d=$SCRATCH/backend
  {
    echo "# Backend: nginx serving a fixed 200 with a 100-byte body"
    nginx_common "$d"
    echo "http {"
    echo "  access_log off;"
    nginx_temp_paths "$d"
    cat <<EOF
  keepalive_timeout 300s;
  keepalive_requests 10000000;
  server {
    listen 127.0.0.1:$BACKEND_PORT backlog=4096;
    listen 127.0.0.1:$BACKEND_PORT2 backlog=4096;
    location / {
      default_type application/json;
      return 200 '$BODY';
    }
  }
}
EOF
  } > "$d/nginx.conf"

  nginx_proxy_config "$SCRATCH/nginx-proxy" "${PORT[nginx]}" ""
  # The same proxy, also doing the per-request header work Portico always does.
  nginx_proxy_config "$SCRATCH/nginx-fwd" "${PORT[nginx-fwd]}" '
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Request-Id $request_id;
      add_header X-Request-Id $request_id;'

  # Two targets (the backend's two ports), with nginx's passive health checks.
  nginx_proxy_config "$SCRATCH/nginx-2" "${PORT[nginx-2]}" "" \
    "server 127.0.0.1:$BACKEND_PORT max_fails=3 fail_timeout=10s; server 127.0.0.1:$BACKEND_PORT2 max_fails=3 fail_timeout=10s;"

  # maxconn 4096, not more: HAProxy sizes its FD needs from maxconn.
  cat > "$SCRATCH/haproxy/haproxy.cfg" <<EOF
# HAProxy :${PORT[haproxy]} -> 127.0.0.1:$BACKEND_PORT, http mode, keep-alive both sides
global
    nbthread $WORKERS
    maxconn 4096
    pidfile $SCRATCH/haproxy/haproxy.pid
    tune.bufsize 16384
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
frontend fe
    bind 127.0.0.1:${PORT[haproxy]} backlog 4096
    default_backend be
backend be
    server s1 127.0.0.1:$BACKEND_PORT
EOF

  cat > "$SCRATCH/portico/portico.yaml" <<EOF
# Portico :${PORT[portico]} -> 127.0.0.1:$BACKEND_PORT (listen/admin/workers are CLI flags)
services:
  - name: backend
    targets:
      - address: 127.0.0.1:$BACKEND_PORT
routes:
  - name: all
    paths: ["/*"]
    service: backend
EOF

  cat > "$SCRATCH/portico-2/portico.yaml" <<EOF
# Portico :${PORT[portico-2]} -> two targets, with active and passive health checks and a
# circuit breaker: the protections a production service would have on.
services:
  - name: backend
    targets:
      - address: 127.0.0.1:$BACKEND_PORT
      - address: 127.0.0.1:$BACKEND_PORT2
    health:
      active: {path: /, interval_ms: 1000}
      passive: {failures: 5}
    circuit_breaker: {failure_rate_percent: 50, minimum_requests: 20}
routes:
  - name: all
    paths: ["/*"]
    service: backend
EOF

  cat > "$SCRATCH/portico-auth/portico.yaml" <<EOF
# Portico :${PORT[portico-auth]} -> 127.0.0.1:$BACKEND_PORT, with two policies on the route: an
# API key identifies the consumer, and a local rate limit counts its requests (set high
# enough never to refuse, so that every request pays for the full check).
services:
  - name: backend
    targets:
      - address: 127.0.0.1:$BACKEND_PORT
routes:
  - name: all
    paths: ["/*"]
    service: backend
    policies:
      key_auth: {header: x-api-key}
      rate_limit: {by: consumer, limits: [{requests: 1000000000, per: second}]}
consumers:
  - name: bench
    credentials:
      - {type: key_auth, key: "$API_KEY"}
EOF
}

# ---------------------------------------------------------------------------
# Process helpers
# ---------------------------------------------------------------------------

# Prints PID and all its descendants (nginx's workers are child processes;
# threads need no special care: /proc/PID/stat already sums them).
pid_tree() {
  local root=$1 f line pid rest
  local -A kids=()
  local -a fields
  for f in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null < "$f" || continue
    pid=${line%% *}
    rest=${line##*) }            # fields after "(comm)"; comm may hold spaces
    read -r -a fields <<< "$rest"
    kids[${fields[1]}]+=" $pid"  # fields[1] = ppid
  done
  local queue=("$root") out=() p
  while (( ${#queue[@]} )); do
    p=${queue[0]}; queue=("${queue[@]:1}")
    [[ -e /proc/$p ]] || continue
    out+=("$p")
    # shellcheck disable=SC2206
    [[ -n ${kids[$p]:-} ]] && queue+=(${kids[$p]})
  done
  echo "${out[@]}"
}

# CPU time (utime+stime, in clock ticks) of a process and its descendants.
cpu_ticks() {
  local total=0 p line rest
  local -a fields
  for p in $(pid_tree "$1"); do
    read -r line 2>/dev/null < "/proc/$p/stat" || continue
    rest=${line##*) }
    read -r -a fields <<< "$rest"
    # rest starts at stat field 3 (state); utime = field 14, stime = field 15
    total=$(( total + fields[11] + fields[12] ))
  done
  echo "$total"
}

# Resident memory (kB) of a process and its descendants.
rss_kb() {
  local total=0 p kb
  for p in $(pid_tree "$1"); do
    kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    total=$(( total + ${kb:-0} ))
  done
  echo "$total"
}

# start_server NAME LOGFILE CMD...: starts CMD in the background (pinned to
# the server CPU in pinned mode) and records its PID. taskset execs the
# command, so $! is the server's own PID.
start_server() {
  local name=$1 logfile=$2; shift 2
  "${SERVER_PREFIX[@]}" "$@" > "$logfile" 2>&1 &
  SERVER_PID[$name]=$!
  SERVER_ORDER+=("$name")
}

server_alive() { kill -0 "${SERVER_PID[$1]}" 2>/dev/null; }

die_with_log() { # name logfile message
  echo "---- last lines of $2 ----" >&2
  tail -n 20 "$2" >&2 || true
  die "$3"
}

# Stops one server by PID: TERM, wait up to 10 s, then KILL what is left of
# its process tree (snapshotted first, so orphaned workers are caught too).
stop_server() {
  local name=$1 pid=${SERVER_PID[$1]:-} tree i p
  [[ -n $pid ]] || return 0
  unset "SERVER_PID[$name]"
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  tree=$(pid_tree "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  for p in $tree; do kill -KILL "$p" 2>/dev/null || true; done
  wait "$pid" 2>/dev/null || true
}

stop_all() {
  local i
  for ((i = ${#SERVER_ORDER[@]} - 1; i >= 0; i--)); do
    stop_server "${SERVER_ORDER[$i]}"
  done
  SERVER_ORDER=()
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_all
  remove_policy_rc
  if [[ -n $SCRATCH && -d $SCRATCH ]]; then
    if [[ $KEEP == 1 || $rc -ne 0 ]]; then
      # On failure the server logs are the useful part: keep them.
      [[ $KEEP == 1 ]] || echo "[bench] scratch dir kept for inspection: $SCRATCH" >&2
    else
      rm -rf "$SCRATCH"
    fi
  fi
  exit "$rc"
}

# Fails if something already listens on PORT: otherwise we would measure it.
assert_port_free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    die "127.0.0.1:$1 is already in use; stop whatever listens there and re-run"
  fi
}

# Polls http://127.0.0.1:PORT/ until it answers 200 (bounded: ~30 s), failing
# early if the server process died.
wait_ready() { # name port logfile
  local name=$1 port=$2 logfile=$3 i code
  local -a extra=()
  [[ -n ${HEADER[$name]:-} ]] && extra=(-H "${HEADER[$name]}")
  for ((i = 0; i < 300; i++)); do
    server_alive "$name" || die_with_log "$name" "$logfile" "$name exited during start-up"
    code=$(curl -s "${extra[@]}" -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/" || true)
    [[ $code == 200 ]] && return 0
    sleep 0.1
  done
  die_with_log "$name" "$logfile" "$name did not answer 200 on :$port within 30 s (last status: ${code:-none})"
}

# One request: status must be 200 and the body exactly our 100-byte BODY.
check_target() { # name port
  local name=$1 port=$2 out=$SCRATCH/check-$1 code size
  local -a extra=()
  [[ -n ${HEADER[$name]:-} ]] && extra=(-H "${HEADER[$name]}")
  code=$(curl -sS "${extra[@]}" -D "$out.headers" -o "$out.body" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/") \
    || die "$name: curl to :$port failed"
  size=$(wc -c < "$out.body")
  [[ $code == 200 ]] || die "$name: expected 200 from :$port, got $code"
  (( size == 100 )) || die "$name: expected a 100-byte body from :$port, got $size bytes"
  [[ $(cat "$out.body") == "$BODY" ]] || die "$name: body from :$port differs from the backend's"
  log "check ok: $name :$port -> 200, 100-byte body"
}

# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------
start_servers() {
  local t logf
  assert_port_free "$BACKEND_PORT"
  for t in $TARGETS; do
    [[ $t == direct ]] || assert_port_free "${PORT[$t]}"
  done
  has_target portico && assert_port_free "$ADMIN_PORT"
  has_target portico-2 && assert_port_free "$ADMIN_PORT2"
  has_target portico-auth && assert_port_free "$ADMIN_PORT_AUTH"
  has_target portico-observe && assert_port_free "$ADMIN_PORT_OBSERVE"
  assert_port_free "$BACKEND_PORT2"

  # The backend always runs with 1 worker, in every mode.
  logf=$SCRATCH/backend/stderr.log
  start_server backend "$logf" nginx -e "$SCRATCH/backend/error.log" \
    -c "$SCRATCH/backend/nginx.conf" -g 'daemon off; worker_processes 1;'
  wait_ready backend "$BACKEND_PORT" "$SCRATCH/backend/error.log"
  check_target direct "$BACKEND_PORT"

  for t in $TARGETS; do
    case $t in
      direct) continue ;;
      nginx | nginx-fwd | nginx-2)
        local dir=$SCRATCH/nginx-proxy
        [[ $t == nginx-fwd || $t == nginx-2 ]] && dir=$SCRATCH/$t
        logf=$dir/error.log
        start_server "$t" "$dir/stderr.log" nginx -e "$logf" \
          -c "$dir/nginx.conf" -g "daemon off; worker_processes $WORKERS;"
        ;;
      haproxy)
        logf=$SCRATCH/haproxy/haproxy.log
        start_server haproxy "$logf" haproxy -db -f "$SCRATCH/haproxy/haproxy.cfg"
        ;;
      portico)
        logf=$SCRATCH/portico/portico.log   # Portico logs to stderr
        start_server portico "$logf" "$PORTICO" serve \
          --config "$SCRATCH/portico/portico.yaml" \
          --listen "127.0.0.1:${PORT[portico]}" \
          --admin-listen "127.0.0.1:$ADMIN_PORT" \
          --workers "$WORKERS" \
          --data-dir "$SCRATCH/portico-data" \
          --analytics false
        ;;
      portico-2)
        logf=$SCRATCH/portico-2/portico.log
        start_server portico-2 "$logf" "$PORTICO" serve \
          --config "$SCRATCH/portico-2/portico.yaml" \
          --listen "127.0.0.1:${PORT[portico-2]}" \
          --admin-listen "127.0.0.1:$ADMIN_PORT2" \
          --workers "$WORKERS" \
          --data-dir "$SCRATCH/portico-2-data" \
          --analytics false
        ;;
      portico-auth)
        logf=$SCRATCH/portico-auth/portico.log
        start_server portico-auth "$logf" "$PORTICO" serve \
          --config "$SCRATCH/portico-auth/portico.yaml" \
          --listen "127.0.0.1:${PORT[portico-auth]}" \
          --admin-listen "127.0.0.1:$ADMIN_PORT_AUTH" \
          --workers "$WORKERS" \
          --data-dir "$SCRATCH/portico-auth-data" \
          --analytics false
        ;;
      portico-observe)
        logf=$SCRATCH/portico-observe/portico.log
        start_server portico-observe "$logf" "$PORTICO" serve \
          --config "$SCRATCH/portico/portico.yaml" \
          --listen "127.0.0.1:${PORT[portico-observe]}" \
          --admin-listen "127.0.0.1:$ADMIN_PORT_OBSERVE" \
          --workers "$WORKERS" \
          --data-dir "$SCRATCH/portico-observe-data" \
          --access-log "$SCRATCH/portico-observe/access.log" --access-log-max-mb 50 --access-log-keep 1 \
          --trace-sample-ratio 0.01 --otlp-endpoint "http://127.0.0.1:$BACKEND_PORT"
        ;;
    esac
    wait_ready "$t" "${PORT[$t]}" "$logf"
    check_target "$t" "${PORT[$t]}"
  done
}

# The process whose CPU a target's runs are charged to.
server_of() { [[ $1 == direct ]] && echo backend || echo "$1"; }

record_idle_rss() {
  local t kb
  for t in $TARGETS; do
    kb=$(rss_kb "${SERVER_PID[$(server_of "$t")]}")
    echo "rss_idle_kb.$t=$kb" >> "$RESULTS/meta.txt"
    if [[ $t == portico ]]; then
      log "portico idle RSS: $kb kB ($(awk -v k="$kb" 'BEGIN{printf "%.1f", k/1024}') MiB)"
    fi
  done
}

# ---------------------------------------------------------------------------
# Load runs
# ---------------------------------------------------------------------------
run_wrk() { # target conns seconds outfile
  local t=$1 c=$2 secs=$3 out=$4
  local -a extra=()
  [[ -n ${HEADER[$t]:-} ]] && extra=(-H "${HEADER[$t]}")
  "${WRK_PREFIX[@]}" wrk -t1 -c"$c" -d"${secs}s" --latency "${extra[@]}" "http://127.0.0.1:${PORT[$t]}/" > "$out" 2>&1 \
    || { cat "$out" >&2; assert_servers_alive; die "wrk failed against $t (c$c)"; }
  grep -q '^Requests/sec:' "$out" || { cat "$out" >&2; die "no Requests/sec in wrk output for $t (c$c)"; }
}

assert_servers_alive() {
  local name
  for name in "${SERVER_ORDER[@]}"; do
    server_alive "$name" || die "$name (pid ${SERVER_PID[$name]}) died during the run; logs in $SCRATCH"
  done
}

measure() { # target conns rep
  local t=$1 c=$2 rep=$3 srv b0 b1 s0 s1
  local out=$RESULTS/wrk_${t}_c${c}_r${rep}.txt
  local spid=${SERVER_PID[$(server_of "$t")]} bpid=${SERVER_PID[backend]}
  s0=$(cpu_ticks "$spid"); b0=$(cpu_ticks "$bpid")
  run_wrk "$t" "$c" "$DURATION" "$out"
  s1=$(cpu_ticks "$spid"); b1=$(cpu_ticks "$bpid")
  printf '%s\t%s\t%s\t%s\t%s\n' "$t" "$c" "$rep" $((s1 - s0)) $((b1 - b0)) >> "$RESULTS/cpu.tsv"
  assert_servers_alive
  log "$(printf '%-8s c%-4s rep %s: %s req/s' "$t" "$c" "$rep" \
    "$(awk '/^Requests\/sec:/ {print $2}' "$out")")"
}

run_matrix() {
  local c rep t first_c
  first_c=${CONNS%% *}
  printf 'target\tconns\trep\tserver_ticks\tbackend_ticks\n' > "$RESULTS/cpu.tsv"
  if (( WARMUP > 0 )); then
    for t in $TARGETS; do
      log "warm-up: $t, ${WARMUP} s at c$first_c"
      run_wrk "$t" "$first_c" "$WARMUP" "$SCRATCH/warmup-$t.txt"
    done
  fi
  # Targets innermost: each repetition visits every target once, so slow
  # drift (thermal, background load) hits all of them alike. The order rotates
  # from one repetition to the next, and a pause (COOLDOWN) precedes each run:
  # on shared machines the CPU slows under sustained load, which would
  # otherwise always penalise whichever target runs last.
  local -a order=($TARGETS)
  local n=${#order[@]}
  for c in $CONNS; do
    for ((rep = 1; rep <= REPS; rep++)); do
      for ((i = 0; i < n; i++)); do
        sleep "$COOLDOWN"
        measure "${order[(i + rep - 1) % n]}" "$c" "$rep"
      done
    done
  done
}

write_meta() {
  {
    echo "mode=$MODE"
    echo "workers=$WORKERS"
    echo "duration_s=$DURATION"
    echo "reps=$REPS"
    echo "conns=$CONNS"
    echo "targets=$TARGETS"
    echo "warmup_s=$WARMUP"
    echo "clk_tck=$(getconf CLK_TCK)"
    echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "kernel=$(uname -r)"
    echo "cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "ncpu=$(nproc --all)"
    echo "nginx_version=$(nginx -v 2>&1 | sed 's/^nginx version: //')"
    if has_target haproxy; then echo "haproxy_version=$(haproxy -v 2>&1 | head -n1)"; fi
    echo "wrk_version=$(wrk -v 2>&1 | head -n1 || true)"
    if has_portico; then
      echo "portico_bin=$PORTICO"
      # bounded: a binary that ignores --version must not hang the run
      echo "portico_version=$(timeout 5 "$PORTICO" --version 2>/dev/null < /dev/null | head -n1 || true)"
      echo "portico_git=$(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || true)"
    fi
  } > "$RESULTS/meta.txt"
}

# ---------------------------------------------------------------------------
main() {
  validate_settings
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  ensure_packages
  has_portico && resolve_portico

  # Raise the FD limit: 8192 worker_connections and HAProxy's maxconn 4096
  # need more than Debian's default soft limit of 1024.
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

  SCRATCH=$(mktemp -d -t portico-bench.XXXXXX)
  chmod 755 "$SCRATCH"   # nginx workers run as 'nobody' when started by root
  RESULTS=${RESULTS_DIR:-$BENCH_DIR/results/$(date -u +%Y%m%dT%H%M%SZ)-$MODE}
  mkdir -p "$RESULTS"
  RESULTS=$(cd "$RESULTS" && pwd)
  log "mode $MODE (W=$WORKERS), targets: $TARGETS, conns: $CONNS, $REPS x ${DURATION}s"
  log "scratch: $SCRATCH   results: $RESULTS"

  write_configs
  write_meta
  start_servers
  record_idle_rss

  local n_t n_c
  n_t=$(wc -w <<< "$TARGETS"); n_c=$(wc -w <<< "$CONNS")
  log "measuring: about $(( n_t * (WARMUP + n_c * REPS * (DURATION + 1)) )) s"
  run_matrix

  stop_all
  [[ $KEEP == 1 ]] && log "scratch dir kept: $SCRATCH"
  log "raw wrk outputs: $RESULTS"
  echo
  python3 "$BENCH_DIR/report.py" "$RESULTS"
}

main "$@"
