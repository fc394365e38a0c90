#!/usr/bin/env bash
# Side by side, same machine, same run: mcp-authz (Envoy ext_authz gRPC, gateway gRPC,
# AuthZEN HTTP), Cerbos (CheckResources gRPC and HTTP) and cedar-agent (is_authorized
# HTTP) on the same workload: the same users, applications, tools and expected decisions
# (see benches/load/workload.rs and BENCHMARKS.md).
#
# Usage: bench/compare.sh
#
# It installs the peers if they are missing (Cerbos from npm, cedar-agent with cargo
# install: about 4 minutes) under $PEERS_DIR, builds mcp-authz (release) and the load
# driver (benches/load), writes every PDP's policies and configuration under $WORK_DIR
# (checking the workload's expected decisions against mcp-authz's decision core), then
# for each PDP in turn: starts it on 127.0.0.1, checks its answers to a handful of
# requests, loads it for $DURATION seconds per run (after $WARMUP seconds of warm-up),
# reads its memory and CPU time, and stops it. Everything it starts it stops by PID.
# wrk and h2load re-measure each repeated request as a cross-check of the driver.
# Results: $WORK_DIR/results.jsonl, $WORK_DIR/report.md, $WORK_DIR/logs/ and
# $WORK_DIR/crosscheck/.
#
# Environment (defaults in brackets): DURATION [10], WARMUP [2], GRPC_CONNS [4],
# GRPC_STREAMS [8], HTTP_CONNS [32], USERS [10000], SMALL_USERS (a second, small entity
# data set for mcp-authz AuthZEN / ext_authz and cedar-agent; 0: none) [15],
# AUTHZ_BIN (another mcp-authz binary to measure; not MCP_AUTHZ_*, a prefix mcp-authz
# reserves for its settings) [the release build],
# JOBS (cargo build jobs) [1],
# LOAD_THREADS (load driver threads) [1], QUIET_WAIT (seconds to wait for an idle machine
# before each run) [300],
# PEERS_DIR [target/bench-peers], WORK_DIR [target/bench-work],
# CARGO_TARGET_DIR [target], ONLY (space-separated subset of: mcp-authz cerbos cedar-agent),
# ALTERNATE (that many extra repetitions of the repeated request, ext_authz then Cerbos gRPC,
# each PDP started fresh, into $WORK_DIR/alternating.jsonl; needs both in ONLY) [0],
# ROUNDS (that many rounds of the floors, the do-nothing authorizer and mcp-authz with the
# decision log on and off, each started fresh, the first of each round rotating, into
# $WORK_DIR/rounds.jsonl, table in $WORK_DIR/rounds.md; `ONLY=rounds ROUNDS=6` runs the
# rounds alone) [0].
# Beside them, in the same run: the transport floor (a tonic server whose only handler is gRPC
# health `Check`, `load floor` on 127.0.0.1:19292, loaded as ext_authz is: the report gives each
# gRPC run's share of it), the ext_authz floor (a tonic ext_authz `Check` that reads nothing of
# the request and allows, `load floor --service ext-authz` on :19294: the report gives each
# ext_authz run's share of it too), the do-nothing authorizer (`load allow` on :19293, which
# decodes the request with envoy-types and allows) and ext_authz with the decision log on,
# written to a file.
# Needs: cargo, npm, curl, wrk, h2load (Debian: apt-get install -y wrk nghttp2-client).
set -euo pipefail
if (($# > 0)); then
  # Any argument (--help among them): print the comment above and stop.
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
GRPC_CONNS=${GRPC_CONNS:-4}
GRPC_STREAMS=${GRPC_STREAMS:-8}
HTTP_CONNS=${HTTP_CONNS:-32}
USERS=${USERS:-10000}
SMALL_USERS=${SMALL_USERS:-15}
JOBS=${JOBS:-1}
QUIET_WAIT=${QUIET_WAIT:-300}
LOAD_THREADS=${LOAD_THREADS:-1}
PEERS_DIR=$(realpath -m "${PEERS_DIR:-target/bench-peers}")
WORK_DIR=$(realpath -m "${WORK_DIR:-target/bench-work}")
export CARGO_TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
ONLY=${ONLY:-mcp-authz cerbos cedar-agent}

# Fixed local ports (all on 127.0.0.1).
AUTHZ_GRPC=127.0.0.1:19191
AUTHZ_HTTP=127.0.0.1:18181
FLOOR_GRPC=127.0.0.1:19292
ALLOW_GRPC=127.0.0.1:19293
EXT_FLOOR_GRPC=127.0.0.1:19294
CERBOS_HTTP_PORT=13592
CERBOS_GRPC_PORT=13593
CERBOS_DEBUG=127.0.0.1:13594
CEDAR_AGENT_PORT=18180

CERBOS_VERSION=0.55.0
CEDAR_AGENT_VERSION=0.2.0

log() { printf '\n== %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 2
}
need() { command -v "$1" >/dev/null || die "\`$1\` is missing ($2)"; }

need cargo "https://rustup.rs"
need curl "apt-get install -y curl"
need npm "apt-get install -y npm"
need wrk "apt-get install -y wrk"
need h2load "apt-get install -y nghttp2-client"

mkdir -p "$WORK_DIR/logs" "$WORK_DIR/crosscheck"
RESULTS=$WORK_DIR/results.jsonl
: >"$RESULTS"
CROSS=$WORK_DIR/crosscheck/summary.txt
: >"$CROSS"

# ---- processes: every one started here is stopped here, by its PID ----
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

# start NAME READY_URL CMD...: start CMD in its own session, wait (up to 60 s) until
# READY_URL answers; sets STARTED_PID.
start() {
  local name=$1 ready=$2
  shift 2
  setsid "$@" >"$WORK_DIR/logs/$name.log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
  local i
  for i in $(seq 1 600); do
    if [[ $ready == tcp://* ]]; then
      # A server without HTTP/1.1 (the transport floor): ready once it accepts.
      local hp=${ready#tcp://}
      if (exec 3<>"/dev/tcp/${hp%:*}/${hp##*:}") 2>/dev/null; then
        return 0
      fi
    elif curl -fsS -o /dev/null --max-time 1 "$ready" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$STARTED_PID" 2>/dev/null; then
      cat "$WORK_DIR/logs/$name.log" >&2
      die "$name exited before it was ready"
    fi
    sleep 0.1
  done
  die "$name was not ready after 60 s"
}

stop() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
for p in 19191 18181 19292 $CERBOS_HTTP_PORT $CERBOS_GRPC_PORT 13594 $CEDAR_AGENT_PORT; do
  port_free "$p" || die "port $p on 127.0.0.1 is in use"
done

# ---- peers ----
CERBOS=$PEERS_DIR/cerbos/node_modules/@cerbos/cerbos-linux-x64/cerbos-linux-x64
if [[ $ONLY == *cerbos* && ! -x $CERBOS ]]; then
  log "installing Cerbos $CERBOS_VERSION (npm) into $PEERS_DIR/cerbos"
  mkdir -p "$PEERS_DIR/cerbos"
  (cd "$PEERS_DIR/cerbos" && npm install --no-audit --no-fund --silent "@cerbos/cerbos-linux-x64@$CERBOS_VERSION")
fi
CEDAR_AGENT=$PEERS_DIR/cedar-agent/bin/cedar-agent
if [[ $ONLY == *cedar-agent* && ! -x $CEDAR_AGENT ]]; then
  log "installing cedar-agent $CEDAR_AGENT_VERSION (cargo install, about 4 minutes) into $PEERS_DIR/cedar-agent"
  CARGO_TARGET_DIR=$PEERS_DIR/cedar-agent-build cargo install cedar-agent --version "$CEDAR_AGENT_VERSION" \
    --locked -j "$JOBS" --root "$PEERS_DIR/cedar-agent"
fi

# ---- build ----
log "building mcp-authz (release) and the load driver (benches/load)"
cargo build --release --locked -j "$JOBS" --bin mcp-authz
MCP_AUTHZ=${AUTHZ_BIN:-$CARGO_TARGET_DIR/release/mcp-authz}
LOAD=$(cargo bench --locked -j "$JOBS" --bench load --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -n 1)
[[ -x $LOAD ]] || die "cannot find the load driver executable"

log "writing the bench policies and configurations into $WORK_DIR"
"$LOAD" --bench prepare --out "$WORK_DIR" --users "$USERS" \
  --cerbos-http "$CERBOS_HTTP_PORT" --cerbos-grpc "$CERBOS_GRPC_PORT"
SMALL_DIR=$WORK_DIR/small
if ((SMALL_USERS > 0)); then
  "$LOAD" --bench prepare --out "$SMALL_DIR" --users "$SMALL_USERS" \
    --cerbos-http "$CERBOS_HTTP_PORT" --cerbos-grpc "$CERBOS_GRPC_PORT"
fi

# ---- the machine ----
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
  free -h
  echo "mcp-authz: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  "$CERBOS" --version 2>/dev/null | head -n 1 || true
  echo "cedar-agent $CEDAR_AGENT_VERSION"
  echo "wrk: $(wrk -v 2>&1 | head -n 1)"
  echo "h2load: $(h2load --version 2>&1 | head -n 1)"
  echo "settings: DURATION=$DURATION WARMUP=$WARMUP GRPC_CONNS=$GRPC_CONNS GRPC_STREAMS=$GRPC_STREAMS HTTP_CONNS=$HTTP_CONNS USERS=$USERS"
} >"$WORK_DIR/machine.txt"
cat "$WORK_DIR/machine.txt" >&2

# quiet: wait (up to QUIET_WAIT s) until the machine is at most 15% busy over 2 s:
# the cores are shared, and another user's build would be measured too.
cpu_sample() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat; }
quiet() {
  local n busy=100 b1 i1 b2 i2
  for ((n = 0; n < QUIET_WAIT; n += 2)); do
    read -r b1 i1 < <(cpu_sample)
    sleep 2
    read -r b2 i2 < <(cpu_sample)
    busy=$((100 * (b2 - b1) / (b2 - b1 + i2 - i1 + 1)))
    if ((busy <= 15)); then
      return 0
    fi
  done
  printf 'warning: the machine is still %s%% busy; measuring anyway\n' "$busy" >&2
}

# load TARGET ADDR WORKLOAD PID LABEL [extra driver flags]: one bounded run
# ($RUN_USERS bench users, default $USERS).
load() {
  local target=$1 addr=$2 workload=$3 pid=$4 label=$5
  shift 5
  local users=${RUN_USERS:-$USERS}
  local conns=$HTTP_CONNS streams=1
  case $target in
  ext-authz | gateway | cerbos-grpc | health) conns=$GRPC_CONNS streams=$GRPC_STREAMS ;;
  esac
  quiet
  log "$label: $workload, ${conns} connections × ${streams} in flight, ${DURATION} s"
  timeout --signal=TERM $((DURATION + WARMUP + 300)) \
    "$LOAD" --bench run --target "$target" --addr "$addr" --workload "$workload" \
    --duration "$DURATION" --warmup "$WARMUP" --connections "$conns" --streams "$streams" \
    --users "$users" --threads "$LOAD_THREADS" --pid "$pid" --label "$label" --out "${OUT_FILE:-$RESULTS}" "$@" >/dev/null
}

# crosscheck_grpc NAME ADDR PATH TARGET: h2load on the repeated request.
crosscheck_grpc() {
  local name=$1 addr=$2 path=$3 target=$4
  shift 4
  local body=$WORK_DIR/crosscheck/$name.body
  local headers
  headers=$("$LOAD" --bench body --target "$target" --out "$body" --addr "$addr")
  local -a hflags=(-H 'content-type: application/grpc' -H 'te: trailers')
  if [[ -n $headers ]]; then
    hflags+=(-H "$headers")
  fi
  # h2load counts HTTP statuses only; the driver's probes checked the grpc-status.
  quiet
  local requests=$WORK_DIR/crosscheck/$name.requests.tsv
  rm -f "$requests" # h2load appends to its log
  timeout $((DURATION + WARMUP + 60)) h2load -c "$GRPC_CONNS" -m "$GRPC_STREAMS" -t 1 \
    --warm-up-time="$WARMUP" -D "$DURATION" -d "$body" "${hflags[@]}" --log-file="$requests" \
    "http://$addr$path" >"$WORK_DIR/crosscheck/$name.txt" 2>&1 || true
  # The log holds one line per request; its third column is the time to the response's end.
  local pct
  pct=$(cut -f3 "$requests" 2>/dev/null | sort -n | awk '{v[NR] = $1} END {
    if (NR) printf "p50 %d µs, p99 %d µs, max %d µs", v[int(NR * 0.5 + 0.5)], v[int(NR * 0.99 + 0.5)], v[NR] }')
  rm -f "$requests"
  printf '%-24s h2load -c %s -m %s: %s; %s\n' "$name" "$GRPC_CONNS" "$GRPC_STREAMS" \
    "$(grep -E '^finished in' "$WORK_DIR/crosscheck/$name.txt" || echo failed)" "$pct" | tee -a "$CROSS" >&2
}

# crosscheck_http NAME ADDR PATH TARGET: wrk on the repeated request.
crosscheck_http() {
  local name=$1 addr=$2 path=$3 target=$4
  local body=$WORK_DIR/crosscheck/$name.body
  "$LOAD" --bench body --target "$target" --out "$body" >/dev/null
  local script=$WORK_DIR/crosscheck/$name.lua
  cat >"$script" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("$body", "rb"))
wrk.body = f:read("*a")
f:close()
EOF
  quiet
  # wrk has no warm-up: a short run first.
  timeout 60 wrk -t 1 -c "$HTTP_CONNS" -d "${WARMUP}s" -s "$script" "http://$addr$path" >/dev/null 2>&1 || true
  timeout $((DURATION + 60)) wrk -t 1 -c "$HTTP_CONNS" -d "${DURATION}s" --latency -s "$script" \
    "http://$addr$path" >"$WORK_DIR/crosscheck/$name.txt" 2>&1 || true
  printf '%-24s wrk -t 1 -c %s: %s; %s\n' "$name" "$HTTP_CONNS" \
    "$(grep -E 'Requests/sec' "$WORK_DIR/crosscheck/$name.txt" | tr -s ' ' || echo failed)" \
    "$(grep -E '^ +99%' "$WORK_DIR/crosscheck/$name.txt" | tr -s ' ' || true)" | tee -a "$CROSS" >&2
}

IDLE=$WORK_DIR/idle.txt
: >"$IDLE"

# start_authz NAME CONFIG: mcp-authz on a prepared configuration; sets pid.
start_authz() {
  start "$1" "http://$AUTHZ_HTTP/readyz" \
    "$MCP_AUTHZ" serve --config "$2" --grpc-listen "$AUTHZ_GRPC" --http-listen "$AUTHZ_HTTP"
  pid=$STARTED_PID
  sleep 1
}

# serve_and_load SERVER [driver flags...]: start SERVER fresh and load it with the repeated
# request (gRPC); sets pid, the server left running. SERVER: floor (gRPC health `Check`),
# ext-floor (an ext_authz `Check` that reads nothing and allows), do-nothing (envoy-types
# decode, allows), log-on / log-off (mcp-authz with the decision log on, to a file, or off).
# Neither floor nor the do-nothing authorizer answers the probes as a policy would: not probed.
serve_and_load() {
  local server=$1
  shift
  case $server in
  floor)
    start floor "tcp://$FLOOR_GRPC" "$LOAD" --bench floor --addr "$FLOOR_GRPC"
    pid=$STARTED_PID
    load health "$FLOOR_GRPC" repeated "$pid" "transport floor (tonic gRPC health Check)" "$@"
    ;;
  ext-floor)
    start ext-authz-floor "tcp://$EXT_FLOOR_GRPC" "$LOAD" --bench floor --service ext-authz --addr "$EXT_FLOOR_GRPC"
    pid=$STARTED_PID
    load ext-authz "$EXT_FLOOR_GRPC" repeated "$pid" "ext_authz floor (tonic Check, reads nothing, allows)" \
      --variant transport-floor --no-probe "$@"
    ;;
  do-nothing)
    start do-nothing "tcp://$ALLOW_GRPC" "$LOAD" --bench allow --addr "$ALLOW_GRPC"
    pid=$STARTED_PID
    load ext-authz "$ALLOW_GRPC" repeated "$pid" "do-nothing authorizer (tonic Check, envoy-types decode, allows)" \
      --variant do-nothing --no-probe "$@"
    ;;
  log-on | log-off)
    local enabled=false variant=()
    if [[ $server == log-on ]]; then
      enabled=true variant=(--variant decision-log-file)
    fi
    rm -f "$WORK_DIR/decision-log.jsonl"
    start "mcp-authz-$server" "http://$AUTHZ_HTTP/readyz" \
      env MCP_AUTHZ_DECISION_LOG_ENABLED=$enabled MCP_AUTHZ_DECISION_LOG_FILE="$WORK_DIR/decision-log.jsonl" \
      "$MCP_AUTHZ" serve --config "$WORK_DIR/mcp-authz/mcp-authz.toml" \
      --grpc-listen "$AUTHZ_GRPC" --http-listen "$AUTHZ_HTTP"
    pid=$STARTED_PID
    sleep 1
    load ext-authz "$AUTHZ_GRPC" repeated "$pid" "mcp-authz ext_authz gRPC" "${variant[@]}" "$@"
    ;;
  *) die "serve_and_load: unknown server \`$server\`" ;;
  esac
}

# start_cedar_agent DIR: cedar-agent on prepared policies and data; sets pid.
start_cedar_agent() {
  start cedar-agent "http://127.0.0.1:$CEDAR_AGENT_PORT/v1/" \
    "$CEDAR_AGENT" --addr 127.0.0.1 --port "$CEDAR_AGENT_PORT" \
    --policies "$1/policies.json" --data "$1/data.json" --log-level warn
  pid=$STARTED_PID
  sleep 1
}

# ---- mcp-authz ----
if [[ $ONLY == *mcp-authz* ]]; then
  log "mcp-authz idle on the reference policies (policies/)"
  start mcp-authz-reference "http://$AUTHZ_HTTP/readyz" \
    env MCP_AUTHZ_DECISION_LOG_ENABLED=false "$MCP_AUTHZ" serve --policies "$ROOT/policies" \
    --grpc-listen "$AUTHZ_GRPC" --http-listen "$AUTHZ_HTTP"
  pid=$STARTED_PID
  sleep 1
  echo "mcp-authz reference policies, idle: $(rss_kib "$pid") KiB" | tee -a "$IDLE" >&2
  stop "$pid"

  log "mcp-authz on the bench policies ($USERS users)"
  start_authz mcp-authz "$WORK_DIR/mcp-authz/mcp-authz.toml"
  echo "mcp-authz bench policies ($USERS users), idle: $(rss_kib "$pid") KiB" | tee -a "$IDLE" >&2
  for w in repeated randomized; do
    load ext-authz "$AUTHZ_GRPC" $w "$pid" "mcp-authz ext_authz gRPC"
    load gateway "$AUTHZ_GRPC" $w "$pid" "mcp-authz gateway gRPC"
    load authzen "$AUTHZ_HTTP" $w "$pid" "mcp-authz AuthZEN HTTP"
  done
  log "mcp-authz: 120,000 distinct decisions (the cache holds at most 100,000)"
  quiet
  timeout 300 "$LOAD" --bench run --target authzen --addr "$AUTHZ_HTTP" --workload randomized \
    --requests 120000 --duration 120 --warmup 0 --connections "$HTTP_CONNS" --no-probe \
    --users "$USERS" --pid "$pid" >/dev/null
  misses=$(curl -fsS "http://$AUTHZ_HTTP/metrics" | awk '/^mcp_authz_decision_cache_misses_total/ {print $2}')
  echo "mcp-authz after $misses decision cache misses since it started (cache bound 100,000, TTL 60 s): $(rss_kib "$pid") KiB, peak $(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status") KiB" | tee -a "$IDLE" >&2
  crosscheck_grpc mcp-authz-ext_authz "$AUTHZ_GRPC" /envoy.service.auth.v3.Authorization/Check ext-authz
  crosscheck_grpc mcp-authz-gateway "$AUTHZ_GRPC" /mcp_authz.v1.Authorizer/Check gateway
  crosscheck_http mcp-authz-authzen "$AUTHZ_HTTP" /access/v1/evaluation authzen
  stop "$pid"

  if ((SMALL_USERS > 0)); then
    log "mcp-authz on the small entity data ($SMALL_USERS users)"
    start_authz mcp-authz-small "$SMALL_DIR/mcp-authz/mcp-authz.toml"
    export RUN_USERS=$SMALL_USERS
    load ext-authz "$AUTHZ_GRPC" randomized "$pid" "mcp-authz ext_authz gRPC"
    load gateway "$AUTHZ_GRPC" randomized "$pid" "mcp-authz gateway gRPC"
    stop "$pid"
    # AuthZEN on a fresh server, as cedar-agent's runs on the same data are: its
    # repeated run, then its randomized one, and nothing before them.
    start_authz mcp-authz-small-authzen "$SMALL_DIR/mcp-authz/mcp-authz.toml"
    for w in repeated randomized; do
      load authzen "$AUTHZ_HTTP" $w "$pid" "mcp-authz AuthZEN HTTP"
    done
    unset RUN_USERS
    stop "$pid"
  fi
fi

# ---- the transport floor and the decision log's cost (repeated request, gRPC) ----
# The floor: a tonic server whose only handler is gRPC health `Check` (`load floor`),
# loaded exactly as ext_authz is; the report gives each gRPC run's share of it. Then
# ext_authz again with the decision log on (the production default), written to a file:
# the report compares it with the run above (log off).
if [[ $ONLY == *mcp-authz* ]]; then
  log "transport floor: a tonic server with only gRPC health Check"
  serve_and_load floor
  crosscheck_grpc floor "$FLOOR_GRPC" /grpc.health.v1.Health/Check health
  stop "$pid"

  # The ext_authz floor: the same CheckRequest and an allow carried, nothing read
  # (`load floor --service ext-authz`); then the do-nothing authorizer, which decodes
  # the request with envoy-types (prost) as a typical ext_authz server does and
  # allows (`load allow`). Neither answers the probes as mcp-authz does: not probed.
  log "ext_authz floor: a tonic Check that reads nothing and allows"
  serve_and_load ext-floor
  stop "$pid"
  log "do-nothing ext_authz authorizer: tonic Check, envoy-types decode, allows"
  serve_and_load do-nothing
  stop "$pid"

  log "mcp-authz ext_authz, decision log on, written to a file"
  serve_and_load log-on
  echo "decision log: $(curl -fsS "http://$AUTHZ_HTTP/metrics" | grep '^mcp_authz_decision_log_records_total' | tr '\n' ' ')" |
    tee -a "$IDLE" >&2
  stop "$pid"
fi

# ---- Cerbos (roles come in the request: it holds no entity data) ----
if [[ $ONLY == *cerbos* ]]; then
  log "Cerbos"
  start cerbos "http://127.0.0.1:$CERBOS_HTTP_PORT/_cerbos/health" \
    env CERBOS_NO_TELEMETRY=1 "$CERBOS" server --config="$WORK_DIR/cerbos/config.yaml" \
    --debug-listen-addr="$CERBOS_DEBUG" --log-level=warn
  pid=$STARTED_PID
  sleep 1
  echo "Cerbos, idle: $(rss_kib "$pid") KiB" | tee -a "$IDLE" >&2
  for w in repeated randomized; do
    load cerbos-grpc "127.0.0.1:$CERBOS_GRPC_PORT" $w "$pid" "Cerbos CheckResources gRPC"
    load cerbos-http "127.0.0.1:$CERBOS_HTTP_PORT" $w "$pid" "Cerbos CheckResources HTTP"
  done
  crosscheck_grpc cerbos-grpc "127.0.0.1:$CERBOS_GRPC_PORT" /cerbos.svc.v1.CerbosService/CheckResources cerbos-grpc
  crosscheck_http cerbos-http "127.0.0.1:$CERBOS_HTTP_PORT" /api/check/resources cerbos-http
  echo "Cerbos, after the runs: $(rss_kib "$pid") KiB" | tee -a "$IDLE" >&2
  stop "$pid"
fi

# ---- cedar-agent ----
if [[ $ONLY == *cedar-agent* ]]; then
  log "cedar-agent ($USERS users)"
  start_cedar_agent "$WORK_DIR/cedar-agent"
  echo "cedar-agent ($USERS users), idle: $(rss_kib "$pid") KiB" | tee -a "$IDLE" >&2
  for w in repeated randomized; do
    load cedar-agent "127.0.0.1:$CEDAR_AGENT_PORT" $w "$pid" "cedar-agent is_authorized HTTP"
  done
  crosscheck_http cedar-agent "127.0.0.1:$CEDAR_AGENT_PORT" /v1/is_authorized cedar-agent
  echo "cedar-agent ($USERS users), after the runs: $(rss_kib "$pid") KiB" | tee -a "$IDLE" >&2
  stop "$pid"

  if ((SMALL_USERS > 0)); then
    log "cedar-agent on the small entity data ($SMALL_USERS users)"
    start_cedar_agent "$SMALL_DIR/cedar-agent"
    echo "cedar-agent ($SMALL_USERS users), idle: $(rss_kib "$pid") KiB" | tee -a "$IDLE" >&2
    export RUN_USERS=$SMALL_USERS
    for w in repeated randomized; do
      load cedar-agent "127.0.0.1:$CEDAR_AGENT_PORT" $w "$pid" "cedar-agent is_authorized HTTP"
    done
    unset RUN_USERS
    stop "$pid"
  fi
fi

# ---- alternating repetitions: ext_authz and Cerbos gRPC, minutes apart at most ----
ALTERNATE=${ALTERNATE:-0}
if ((ALTERNATE > 0)) && [[ $ONLY == *mcp-authz* && $ONLY == *cerbos* ]]; then
  export OUT_FILE=$WORK_DIR/alternating.jsonl
  : >"$OUT_FILE"
  for ((i = 1; i <= ALTERNATE; i++)); do
    log "alternating repetition $i of $ALTERNATE"
    start_authz mcp-authz-alternating "$WORK_DIR/mcp-authz/mcp-authz.toml"
    load ext-authz "$AUTHZ_GRPC" repeated "$pid" "mcp-authz ext_authz gRPC (alternating $i)"
    stop "$pid"
    start cerbos-alternating "http://127.0.0.1:$CERBOS_HTTP_PORT/_cerbos/health" \
      env CERBOS_NO_TELEMETRY=1 "$CERBOS" server --config="$WORK_DIR/cerbos/config.yaml" \
      --debug-listen-addr="$CERBOS_DEBUG" --log-level=warn
    pid=$STARTED_PID
    load cerbos-grpc "127.0.0.1:$CERBOS_GRPC_PORT" repeated "$pid" "Cerbos CheckResources gRPC (alternating $i)"
    stop "$pid"
  done
  unset OUT_FILE
  # One line per run (the ratio of each pair from the req/s column); the ratio printed
  # below the table is the last pair's.
  "$LOAD" --bench report --results "$WORK_DIR/alternating.jsonl" | tee "$WORK_DIR/alternating.md"
fi

# ---- rounds: the floors, the do-nothing authorizer and mcp-authz side by side ----
# ROUNDS rounds of five runs of the repeated request (gRPC, loaded as above), each server
# started fresh for its run: the health floor, the ext_authz floor, the do-nothing
# authorizer, mcp-authz with the decision log on (to a file) and off. Each round starts
# with the next of the five, so that no server always runs first or after the same one.
# After a run with the log on, the log must hold every decision the run made (records
# written = decisions, none dropped or failed); a round that lost one fails the script
# after the report. The report's rounds table: each round's throughputs and ratios
# (issue 20's first two targets among them), the most CPU steal of any of its runs, the
# medians over all rounds and over the quiet ones.
ROUNDS=${ROUNDS:-0}
LOST=0

# check_decision_log ROUND: the log of the running mcp-authz holds all its decisions.
check_decision_log() {
  local metrics written=-1 decisions=0 dropped failed
  for _ in $(seq 1 50); do
    metrics=$(curl -fsS "http://$AUTHZ_HTTP/metrics")
    written=$(awk '/^mcp_authz_decision_log_records_total\{result="written"\}/ {print $2}' <<<"$metrics")
    decisions=$(awk '/^mcp_authz_decisions_total\{/ {s += $2} END {print s + 0}' <<<"$metrics")
    [[ $written == "$decisions" ]] && break
    sleep 0.1 # the writer is a few records behind
  done
  dropped=$(awk '/^mcp_authz_decision_log_records_total\{result="dropped"\}/ {print $2}' <<<"$metrics")
  failed=$(awk '/^mcp_authz_decision_log_records_total\{result="failed"\}/ {print $2}' <<<"$metrics")
  echo "round $1: decision log: $written records written of $decisions decisions, $dropped dropped, $failed failed" |
    tee -a "$WORK_DIR/rounds-log.txt" >&2
  if [[ $written != "$decisions" || $dropped != 0 || $failed != 0 ]]; then
    printf 'error: round %s: the decision log does not hold every decision\n' "$1" >&2
    LOST=$((LOST + 1))
  fi
}

# round_run ROUND SERVER: one run of a round, its server started fresh and stopped after.
round_run() {
  serve_and_load "$2" --round "$1"
  if [[ $2 == log-on ]]; then
    check_decision_log "$1"
  fi
  stop "$pid"
}

if ((ROUNDS > 0)); then
  export OUT_FILE=$WORK_DIR/rounds.jsonl
  : >"$OUT_FILE"
  : >"$WORK_DIR/rounds-log.txt"
  servers=(floor ext-floor do-nothing log-on log-off)
  for ((r = 1; r <= ROUNDS; r++)); do
    log "round $r of $ROUNDS"
    for ((i = 0; i < ${#servers[@]}; i++)); do
      round_run "$r" "${servers[$(((i + r - 1) % ${#servers[@]}))]}"
    done
  done
  unset OUT_FILE
  "$LOAD" --bench report --results "$WORK_DIR/rounds.jsonl" | tee "$WORK_DIR/rounds.md"
fi

log "results"
"$LOAD" --bench report --results "$RESULTS" | tee "$WORK_DIR/report.md"
echo
cat "$IDLE"
echo
cat "$CROSS"
((LOST == 0)) || die "$LOST round(s) lost decision log records (see $WORK_DIR/rounds-log.txt)"
