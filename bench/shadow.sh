#!/usr/bin/env bash
# Live Envoy ext_authz throughput with a shadow policy set as large as the live one, beside
# the same service without one, in one run (issue 18's target: within 10 %).
#
# Usage: bench/shadow.sh
#
# Builds mcp-authz (release) and the load driver (benches/load), prepares the load
# benchmark's workload (the reference policies with $USERS bench users), copies the live
# policy directory as the shadow set (so every live decision is decided a second time, on a
# set of the same size, and compared), and loads ext_authz over gRPC for $DURATION seconds
# per run with the repeated and the randomized request, arms alternating $ROUNDS times:
# `off` (no shadow), `shadow` (shadow.sample = 1.0) and `sampled` (shadow.sample = 0.1).
# Results: $WORK_DIR/results.jsonl, and a table on stdout.
#
# Environment (defaults in brackets): DURATION [10], WARMUP [2], ROUNDS [2], USERS [10000],
# GRPC_CONNS [4], GRPC_STREAMS [8], JOBS (cargo build jobs) [1], WORK_DIR [target/bench-shadow].
set -euo pipefail
if (($# > 0)); then
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-2}
USERS=${USERS:-10000}
GRPC_CONNS=${GRPC_CONNS:-4}
GRPC_STREAMS=${GRPC_STREAMS:-8}
JOBS=${JOBS:-1}
WORK_DIR=${WORK_DIR:-target/bench-shadow}
WORK_DIR=$(mkdir -p "$WORK_DIR" && cd "$WORK_DIR" && pwd)
GRPC=127.0.0.1:19391
HTTP=127.0.0.1:19381

log() { echo "== $*" >&2; }
die() {
  echo "bench/shadow.sh: $*" >&2
  exit 1
}
command -v curl >/dev/null || die "curl not found"

log "building mcp-authz (release) and the load driver"
cargo build --release --locked -j "$JOBS" --bin mcp-authz
AUTHZ=target/release/mcp-authz
LOAD=$(cargo bench --locked -j "$JOBS" --bench load --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -n 1)
[[ -x $LOAD ]] || die "cannot find the load driver executable"

log "preparing the workload in $WORK_DIR"
rm -rf "$WORK_DIR/mcp-authz" "$WORK_DIR/shadow"
"$LOAD" --bench prepare --out "$WORK_DIR" --users "$USERS" --cerbos-http 1 --cerbos-grpc 2 >/dev/null
cp -r "$WORK_DIR/mcp-authz/policies" "$WORK_DIR/shadow"
CONFIG=$WORK_DIR/mcp-authz/mcp-authz.toml
RESULTS=$WORK_DIR/results.jsonl
: >"$RESULTS"
mkdir -p "$WORK_DIR/logs"

PID=
cleanup() { [[ -n $PID ]] && kill -TERM "$PID" 2>/dev/null || true; }
trap cleanup EXIT

# run ARM: start the service for ARM, load it with both workloads, stop it.
run() {
  local arm=$1
  local -a env=()
  case $arm in
  shadow) env=(MCP_AUTHZ_SHADOW_POLICIES="$WORK_DIR/shadow" MCP_AUTHZ_SHADOW_SAMPLE=1.0) ;;
  sampled) env=(MCP_AUTHZ_SHADOW_POLICIES="$WORK_DIR/shadow" MCP_AUTHZ_SHADOW_SAMPLE=0.1) ;;
  esac
  env "${env[@]}" "$AUTHZ" serve --config "$CONFIG" --grpc-listen "$GRPC" --http-listen "$HTTP" \
    >"$WORK_DIR/logs/$arm.log" 2>&1 &
  PID=$!
  local i
  for i in $(seq 1 600); do
    curl -fsS -o /dev/null --max-time 1 "http://$HTTP/readyz" 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || { cat "$WORK_DIR/logs/$arm.log" >&2; die "mcp-authz ($arm) exited"; }
    sleep 0.1
  done
  sleep 1
  local workload
  for workload in repeated randomized; do
    log "$arm: $workload, $GRPC_CONNS connections x $GRPC_STREAMS streams, $DURATION s"
    "$LOAD" --bench run --target ext-authz --addr "$GRPC" --workload "$workload" \
      --duration "$DURATION" --warmup "$WARMUP" --connections "$GRPC_CONNS" --streams "$GRPC_STREAMS" \
      --users "$USERS" --pid "$PID" --label "$arm" --out "$RESULTS" >/dev/null
  done
  if [[ $arm != off ]]; then
    curl -fsS "http://$HTTP/metrics" | grep -E '^mcp_authz_shadow_(decisions|dropped)' \
      >"$WORK_DIR/logs/$arm.metrics" || true
  fi
  kill -TERM "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=
}

for round in $(seq 1 "$ROUNDS"); do
  for arm in off shadow sampled; do
    run "$arm"
  done
done

python3 - "$RESULTS" <<'PY'
import json, sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[(r["label"], r["workload"])].append(r)
print("| workload | arm | req/s (each run) | mean req/s | vs off | p50 µs | p99 µs | wrong |")
print("|---|---|---|---:|---:|---:|---:|---:|")
for workload in ("repeated", "randomized"):
    base = None
    for arm in ("off", "shadow", "sampled"):
        rs = runs.get((arm, workload), [])
        if not rs:
            continue
        mean = sum(r["rps"] for r in rs) / len(rs)
        base = base or mean
        print(f"| {workload} | {arm} | {', '.join(str(int(r['rps'])) for r in rs)} | {mean:.0f} | "
              f"{mean / base:.1%} | {rs[-1]['p50_us']:.0f} | {rs[-1]['p99_us']:.0f} | {sum(r['wrong'] for r in rs)} |")
PY
for arm in shadow sampled; do
  [[ -f $WORK_DIR/logs/$arm.metrics ]] && { echo "$arm:"; cat "$WORK_DIR/logs/$arm.metrics"; }
done
