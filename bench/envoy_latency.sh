#!/usr/bin/env bash
# The latency ext_authz adds through real Envoy (issue 20's targets: mcp-authz at most
# 0.1 ms at p50 over a do-nothing authorizer, and at least 0.9 × its throughput).
#
# Usage: bench/envoy_latency.sh
#
# One Envoy (bench/envoy_latency/envoy.yaml) with three front listeners on the same fast
# upstream (Envoy itself: a buffer filter, then a direct_response from a file): ext_authz
# off; ext_authz to a do-nothing authorizer (`cargo bench --bench load -- allow`, a tonic
# Check that always allows: the cost of Envoy's filter and the gRPC hop); ext_authz to
# mcp-authz (release, the reference policies, the demo issuer of examples/identity, token
# erin.jwt, the decision log on, to a file). The three front listeners carry the same MCP
# filter and the same ext_authz settings (request body packed as bytes).
# `cargo bench --bench load -- envoy` sends MCP `tools/call` POSTs with the bearer token,
# one at a time per keep-alive HTTP/1.1 connection, the arms alternating in blocks (their
# order rotating each round): first at saturation (closed loop), then at a fixed rate
# (RATE_FRACTION of the lowest saturation throughput of the three arms) paced evenly, each
# request's latency counted from when it was due. It prints p50/p90/p99 per mode and arm
# and a summary line (mcp-authz's added p50 and p99 over the do-nothing arm, its
# throughput ratio to it): JSON lines on stdout, also in $WORK_DIR/results.jsonl.
#
# Environment (defaults in brackets): DECISION_LOG [on; off: mcp-authz with
# `decision_log.enabled = false`], BLOCK seconds per block [3], ROUNDS [4], WARMUP [1],
# CONNECTIONS at saturation [16], PACED_CONNECTIONS [16], RATE (req/s; unset: RATE_FRACTION
# of saturation) [], RATE_FRACTION [0.5], ENVOY_CONCURRENCY (Envoy worker threads) [1],
# AUTHZ_BIN (a built release mcp-authz; unset: `cargo build --release`), LOAD_BIN (a built
# load benchmark; unset: `cargo bench --no-run --bench load`), CARGO [cargo], JOBS (cargo
# build jobs) [1], VENV (with envoy) [$MCP_AUTHZ_E2E_VENV or .venv],
# WORK_DIR [target/bench-envoy-latency], BASE_PORT [19600], AUTHZ_WORKERS (runtime worker
# threads of both authorizers, mcp-authz's `worker_threads` and the do-nothing one's
# TOKIO_WORKER_THREADS; unset: each runtime's default, one per core) [].
set -euo pipefail
if (($# > 0)); then
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/.."
DECISION_LOG=${DECISION_LOG:-on}
case $DECISION_LOG in
  on) DECISION_LOG_ENABLED=true ;;
  off) DECISION_LOG_ENABLED=false ;;
  *)
    echo "bench/envoy_latency.sh: DECISION_LOG is \`$DECISION_LOG\`: on or off" >&2
    exit 2
    ;;
esac
BLOCK=${BLOCK:-3}
ROUNDS=${ROUNDS:-4}
WARMUP=${WARMUP:-1}
CONNECTIONS=${CONNECTIONS:-16}
PACED_CONNECTIONS=${PACED_CONNECTIONS:-16}
RATE=${RATE:-}
RATE_FRACTION=${RATE_FRACTION:-0.5}
ENVOY_CONCURRENCY=${ENVOY_CONCURRENCY:-1}
CARGO=${CARGO:-cargo}
JOBS=${JOBS:-1}
VENV=${VENV:-${MCP_AUTHZ_E2E_VENV:-.venv}}
WORK_DIR=${WORK_DIR:-target/bench-envoy-latency}
WORK_DIR=$(mkdir -p "$WORK_DIR" && cd "$WORK_DIR" && pwd)
BASE_PORT=${BASE_PORT:-19600}
AUTHZ_WORKERS=${AUTHZ_WORKERS:-}
AUTHZ_GRPC_PORT=$BASE_PORT
AUTHZ_HTTP_PORT=$((BASE_PORT + 1))
ALLOW_GRPC_PORT=$((BASE_PORT + 2))
ADMIN_PORT=$((BASE_PORT + 3))
OFF_PORT=$((BASE_PORT + 4))
ALLOW_PORT=$((BASE_PORT + 5))
AUTHZ_PORT=$((BASE_PORT + 6))
UPSTREAM_PORT=$((BASE_PORT + 7))

log() { echo "== $*" >&2; }
die() {
  echo "bench/envoy_latency.sh: $*" >&2
  exit 1
}
command -v curl >/dev/null || die "curl not found"
ENVOY=$VENV/bin/envoy
[[ -x $ENVOY ]] || die "no envoy in $VENV (run scripts/setup-python, or set VENV)"

# mcp-authz refuses MCP_AUTHZ_* variables it does not know (the tests' venv variable, say).
for name in $(compgen -e | grep '^MCP_AUTHZ_' || true); do unset "$name"; done
unset TOKIO_WORKER_THREADS
# The same worker count for both authorizers, or each runtime's default.
AUTHZ_ENV=() ALLOW_ENV=()
if [[ -n $AUTHZ_WORKERS ]]; then
  AUTHZ_ENV=("MCP_AUTHZ_WORKER_THREADS=$AUTHZ_WORKERS")
  ALLOW_ENV=("TOKIO_WORKER_THREADS=$AUTHZ_WORKERS")
fi

if [[ -n ${AUTHZ_BIN:-} ]]; then
  AUTHZ=$AUTHZ_BIN
else
  log "building mcp-authz (release)"
  $CARGO build --release --locked -j "$JOBS" --bin mcp-authz
  AUTHZ=target/release/mcp-authz
fi
[[ -x $AUTHZ ]] || die "no mcp-authz binary at $AUTHZ"
if [[ -n ${LOAD_BIN:-} ]]; then
  LOAD=$LOAD_BIN
else
  log "building the load benchmark (bench profile)"
  LOAD=$($CARGO bench --locked -j "$JOBS" --no-run --bench load --message-format=json |
    sed -n 's/.*"executable":"\([^"]*\/load-[^"]*\)".*/\1/p' | tail -1)
fi
[[ -n $LOAD && -x $LOAD ]] || die "no load benchmark binary (${LOAD:-none})"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
mkdir -p "$WORK_DIR/logs"

wait_for() { # URL, what
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "$2 not ready at $1 (logs in $WORK_DIR/logs)"
}
wait_port() { # port, what
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "$2 not listening on $1 (logs in $WORK_DIR/logs)"
}

printf '%s' '{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"Project Titan Q1 strategy: ship the MCP gateway."}],"isError":false}}' \
  >"$WORK_DIR/call.json"

log "starting mcp-authz ($AUTHZ, decision log $DECISION_LOG, to $WORK_DIR/decisions.jsonl; workers ${AUTHZ_WORKERS:-default})"
: >"$WORK_DIR/decisions.jsonl"
env "${AUTHZ_ENV[@]}" MCP_AUTHZ_DECISIONS_ALLOW_UNDECLARED_TOOLS=true MCP_AUTHZ_DECISION_LOG_ENABLED=$DECISION_LOG_ENABLED \
  MCP_AUTHZ_DECISION_LOG_FILE="$WORK_DIR/decisions.jsonl" \
  "$AUTHZ" serve --policies policies --config examples/identity/mcp-authz.toml \
  --grpc-listen "127.0.0.1:$AUTHZ_GRPC_PORT" --http-listen "127.0.0.1:$AUTHZ_HTTP_PORT" \
  >"$WORK_DIR/logs/mcp-authz.log" 2>&1 &
PIDS+=($!)
AUTHZ_PID=$!
wait_for "http://127.0.0.1:$AUTHZ_HTTP_PORT/readyz" mcp-authz

log "starting the do-nothing authorizer ($LOAD allow; workers ${AUTHZ_WORKERS:-default})"
env "${ALLOW_ENV[@]}" "$LOAD" allow --addr "127.0.0.1:$ALLOW_GRPC_PORT" >"$WORK_DIR/logs/allow.log" 2>&1 &
PIDS+=($!)
wait_port "$ALLOW_GRPC_PORT" "the do-nothing authorizer"

log "starting envoy (--concurrency $ENVOY_CONCURRENCY)"
sed -e "s#\${ADMIN_PORT}#$ADMIN_PORT#g; s#\${OFF_PORT}#$OFF_PORT#g; s#\${ALLOW_PORT}#$ALLOW_PORT#g" \
  -e "s#\${AUTHZ_PORT}#$AUTHZ_PORT#g; s#\${UPSTREAM_PORT}#$UPSTREAM_PORT#g" \
  -e "s#\${ALLOW_GRPC_PORT}#$ALLOW_GRPC_PORT#g; s#\${AUTHZ_GRPC_PORT}#$AUTHZ_GRPC_PORT#g" \
  -e "s#\${CALL_FILE}#$WORK_DIR/call.json#g" \
  bench/envoy_latency/envoy.yaml >"$WORK_DIR/envoy.yaml"
"$ENVOY" -c "$WORK_DIR/envoy.yaml" --disable-hot-restart --concurrency "$ENVOY_CONCURRENCY" \
  --log-level warn --component-log-level misc:error >"$WORK_DIR/logs/envoy.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$ADMIN_PORT/ready" envoy

log "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
RATE_ARGS=(--rate-fraction "$RATE_FRACTION")
[[ -n $RATE ]] && RATE_ARGS+=(--rate "$RATE")
"$LOAD" envoy --off "127.0.0.1:$OFF_PORT" --allow "127.0.0.1:$ALLOW_PORT" \
  --authz "127.0.0.1:$AUTHZ_PORT" --token-file examples/identity/erin.jwt \
  --block "$BLOCK" --rounds "$ROUNDS" --warmup "$WARMUP" --connections "$CONNECTIONS" \
  --paced-connections "$PACED_CONNECTIONS" "${RATE_ARGS[@]}" | tee "$WORK_DIR/results.jsonl"
log "machine after: load average $(cut -d' ' -f1-3 /proc/loadavg)"
log "decision log: $(wc -l <"$WORK_DIR/decisions.jsonl") records; mcp-authz pid $AUTHZ_PID"
curl -fsS "http://127.0.0.1:$ADMIN_PORT/stats?filter=ext_authz" >"$WORK_DIR/envoy-ext-authz-stats.txt" || true
log "results: $WORK_DIR/results.jsonl; Envoy's ext_authz counters: $WORK_DIR/envoy-ext-authz-stats.txt"
