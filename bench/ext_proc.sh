#!/usr/bin/env bash
# Latency that ext_proc list filtering adds through real Envoy (issue 19's targets: at most
# 1 ms at p50 for a 200-tool tools/list, at most 0.1 ms for a request that is not a list).
#
# Usage: bench/ext_proc.sh
#
# One Envoy (bench/ext_proc/envoy.yaml, the filters of examples/envoy/envoy-ext-proc.yaml)
# with two front listeners on the same upstream: ext_authz + ext_proc, and ext_authz only.
# The upstream is Envoy itself answering from files (direct_response), so that the MCP
# server costs nothing: a 200-tool tools/list (the docs server of tests/e2e/mcp_server.py
# with --extra-tools 196, fetched once at the start) as application/json and as one SSE
# event, and a tools/call result. mcp-authz (release) runs on the reference policies with
# the demo issuer (examples/identity), token erin.jwt, and `decisions.allow_undeclared_tools`
# so that the list keeps 199 of its 200 tools (the filter rewrites nearly all of it).
# bench/ext_proc/load.py sends one request at a time on one keep-alive connection per
# listener, the arms alternating in blocks, and prints p50/p90/p99 per case and arm, then
# the added latency (stdout: JSON lines, also in $WORK_DIR/results.jsonl).
#
# Environment (defaults in brackets): REQUESTS per case and arm [4000], ROUNDS [8],
# WARMUP [200], CASES [list-json,list-sse,call], CACHE [on; off: mcp-authz with
# `cache.enabled = false`, no decision and no list cache, so every list is decided entry by
# entry], AUTHZ_BIN (a built release binary; unset: `cargo build --release`), JOBS (cargo
# build jobs) [1], VENV (with envoy and the MCP SDK) [$MCP_AUTHZ_E2E_VENV or .venv],
# WORK_DIR [target/bench-ext-proc], BASE_PORT [19500].
set -euo pipefail
if (($# > 0)); then
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-4000}
ROUNDS=${ROUNDS:-8}
WARMUP=${WARMUP:-200}
CASES=${CASES:-list-json,list-sse,call}
CACHE=${CACHE:-on}
case $CACHE in
  on) CACHE_ENABLED=true ;;
  off) CACHE_ENABLED=false ;;
  *)
    echo "bench/ext_proc.sh: CACHE is \`$CACHE\`: on or off" >&2
    exit 2
    ;;
esac
JOBS=${JOBS:-1}
VENV=${VENV:-${MCP_AUTHZ_E2E_VENV:-.venv}}
WORK_DIR=${WORK_DIR:-target/bench-ext-proc}
WORK_DIR=$(mkdir -p "$WORK_DIR" && cd "$WORK_DIR" && pwd)
BASE_PORT=${BASE_PORT:-19500}
GRPC_PORT=$BASE_PORT
HTTP_PORT=$((BASE_PORT + 1))
ADMIN_PORT=$((BASE_PORT + 2))
WITH_PORT=$((BASE_PORT + 3))
WITHOUT_PORT=$((BASE_PORT + 4))
UPSTREAM_PORT=$((BASE_PORT + 5))

log() { echo "== $*" >&2; }
die() {
  echo "bench/ext_proc.sh: $*" >&2
  exit 1
}
command -v curl >/dev/null || die "curl not found"
PYTHON=$VENV/bin/python
ENVOY=$VENV/bin/envoy
[[ -x $PYTHON && -x $ENVOY ]] || die "no python or envoy in $VENV (run scripts/setup-python, or set VENV)"

# mcp-authz refuses MCP_AUTHZ_* variables it does not know (the tests' venv variable, say).
for name in $(compgen -e | grep '^MCP_AUTHZ_' || true); do unset "$name"; done

if [[ -n ${AUTHZ_BIN:-} ]]; then
  AUTHZ=$AUTHZ_BIN
else
  log "building mcp-authz (release)"
  cargo build --release --locked -j "$JOBS" --bin mcp-authz
  AUTHZ=target/release/mcp-authz
fi
[[ -x $AUTHZ ]] || die "no mcp-authz binary at $AUTHZ"

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

log "fetching a 200-tool tools/list from the docs MCP server (--extra-tools 196)"
"$PYTHON" tests/e2e/mcp_server.py --server docs --extra-tools 196 --port 0 \
  >"$WORK_DIR/logs/mcp-server.out" 2>"$WORK_DIR/logs/mcp-server.err" &
PIDS+=($!)
MCP_URL=
for _ in $(seq 1 300); do
  MCP_URL=$(sed -n 's/.*"url": "\([^"]*\)".*/\1/p' "$WORK_DIR/logs/mcp-server.out")
  [[ -n $MCP_URL ]] && break
  sleep 0.1
done
[[ -n $MCP_URL ]] || die "the MCP server did not start (see $WORK_DIR/logs/mcp-server.err)"
curl -fsS "$MCP_URL" -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
  -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/list' \
  -d '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}' \
  >"$WORK_DIR/tools.json"
kill -TERM "${PIDS[0]}" 2>/dev/null || true
"$PYTHON" - "$WORK_DIR" <<'EOF'
import json, sys
work = sys.argv[1]
message = json.load(open(f"{work}/tools.json"))
tools = message["result"]["tools"]
assert len(tools) == 200, len(tools)
with open(f"{work}/tools.json", "w") as f:
    json.dump(message, f, separators=(",", ":"))
with open(f"{work}/tools.sse", "w") as f:
    f.write("event: message\r\ndata: " + json.dumps(message, separators=(",", ":")) + "\r\n\r\n")
call = {"jsonrpc": "2.0", "id": 2, "result": {"content": [{"type": "text", "text": "Project Titan Q1 strategy: ship the MCP gateway."}], "isError": False}}
with open(f"{work}/call.json", "w") as f:
    json.dump(call, f, separators=(",", ":"))
print(f"{len(tools)} tools, {len(json.dumps(message, separators=(',', ':')))} bytes", file=sys.stderr)
EOF

log "starting mcp-authz ($AUTHZ, cache $CACHE)"
MCP_AUTHZ_DECISIONS_ALLOW_UNDECLARED_TOOLS=true MCP_AUTHZ_DECISION_LOG_ENABLED=false \
  MCP_AUTHZ_CACHE_ENABLED=$CACHE_ENABLED \
  "$AUTHZ" serve --policies policies --config examples/identity/mcp-authz.toml \
  --grpc-listen "127.0.0.1:$GRPC_PORT" --http-listen "127.0.0.1:$HTTP_PORT" \
  >"$WORK_DIR/logs/mcp-authz.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$HTTP_PORT/readyz" mcp-authz

log "starting envoy"
sed -e "s#\${ADMIN_PORT}#$ADMIN_PORT#g; s#\${WITH_PORT}#$WITH_PORT#g; s#\${WITHOUT_PORT}#$WITHOUT_PORT#g" \
  -e "s#\${UPSTREAM_PORT}#$UPSTREAM_PORT#g; s#\${AUTHZ_GRPC_PORT}#$GRPC_PORT#g" \
  -e "s#\${LIST_JSON_FILE}#$WORK_DIR/tools.json#g; s#\${LIST_SSE_FILE}#$WORK_DIR/tools.sse#g" \
  -e "s#\${CALL_FILE}#$WORK_DIR/call.json#g" \
  bench/ext_proc/envoy.yaml >"$WORK_DIR/envoy.yaml"
"$ENVOY" -c "$WORK_DIR/envoy.yaml" --disable-hot-restart --concurrency 1 --log-level warn \
  --component-log-level misc:error >"$WORK_DIR/logs/envoy.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$ADMIN_PORT/ready" envoy

log "measuring: $REQUESTS requests per case and arm, $ROUNDS rounds ($CASES)"
"$PYTHON" bench/ext_proc/load.py --with-port "$WITH_PORT" --without-port "$WITHOUT_PORT" \
  --token-file examples/identity/erin.jwt --requests "$REQUESTS" --rounds "$ROUNDS" \
  --warmup "$WARMUP" --cases "$CASES" | tee "$WORK_DIR/results.jsonl"
curl -fsS "http://127.0.0.1:$ADMIN_PORT/stats?filter=ext_proc" >"$WORK_DIR/envoy-ext-proc-stats.txt" || true
log "results: $WORK_DIR/results.jsonl; Envoy's ext_proc counters: $WORK_DIR/envoy-ext-proc-stats.txt"
