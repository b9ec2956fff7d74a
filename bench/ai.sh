#!/usr/bin/env bash
# bench/ai.sh: Portico's AI gateway against the LiteLLM proxy and the Portkey gateway, each in
# front of the same local mock provider, in one run.
#
# The mock for whole answers is nginx returning a fixed OpenAI chat completion; the mock for
# streams is the test kit's mock provider (crates/portico/examples/ai_mock.rs), streaming
# PIECES chunks PACE_MS apart. wrk drives whole answers; crates/portico/examples/sse_load.rs
# opens concurrent streams. By default the load generator runs on CPU 0 and the gateway and
# the mocks on CPU 1, as in the reference measurements.
#
# Usage (as root on Debian; installs nginx, HAProxy, wrk, Node.js and the pinned peers if missing):
#   bash bench/ai.sh
#   DURATION=5 REPS=1 TARGETS="direct portico" STREAMS="1 1000" bash bench/ai.sh
#
# Settings (environment variables): DURATION (s per wrk run, 10), REPS (2), CONCS ("1 10 64"),
# TARGETS ("direct nginx-proxy haproxy portico litellm portkey"), STREAMS (concurrent streams, "1 100 1000"),
# PEER_STREAMS (largest stream count tried on LiteLLM and Portkey, 100), PACE_MS (20),
# PIECES (50), LITELLM_WORKERS (2), RESULTS_DIR (bench/results/ai-<UTC time>).
#
# Peers are pinned in bench/ai/requirements.txt (litellm[proxy]) and bench/ai/package.json
# with its package-lock.json (@portkey-ai/gateway), installed into bench/ai/.venv and
# bench/ai/node_modules.
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
TARGETS=${TARGETS:-direct nginx-proxy haproxy portico litellm portkey}

need=()
for tool in nginx wrk python3 taskset; do command -v "$tool" >/dev/null || need+=("$tool"); done
[[ $TARGETS == *haproxy* ]] && ! command -v haproxy >/dev/null && need+=(haproxy)
[[ $TARGETS == *portkey* ]] && ! command -v npm >/dev/null && need+=(nodejs npm)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]/nginx/nginx-light}" >/dev/null
fi
if [[ $TARGETS == *litellm* && ! -x $BENCH_DIR/ai/.venv/bin/litellm ]]; then
  python3 -m venv "$BENCH_DIR/ai/.venv"
  "$BENCH_DIR/ai/.venv/bin/pip" install -q --disable-pip-version-check -r "$BENCH_DIR/ai/requirements.txt"
fi
if [[ $TARGETS == *portkey* && ! -d $BENCH_DIR/ai/node_modules/@portkey-ai/gateway ]]; then
  npm ci --prefix "$BENCH_DIR/ai" --no-audit --no-fund --loglevel=error
fi
(cd "$REPO_ROOT" && cargo build --release -q -p portico --bin portico --example ai_mock --example sse_load)
# A thousand streams need two thousand sockets and more.
ulimit -n "$(ulimit -Hn)"
exec python3 "$BENCH_DIR/ai/ai_bench.py"
