#!/usr/bin/env bash
# Instructions per request of a running mcp-authz, counted by valgrind's callgrind: a figure that
# does not move with what else the machine is doing (throughput and CPU time on a shared 2-core
# machine move by 30 % between two runs), for comparing two builds of the same code path.
#
# Usage: bench/instructions.sh BIN [log] [requests] [workload] [target]
#   BIN       the mcp-authz binary (a release build: target/release/mcp-authz)
#   log       on | off: the decision log (written to a file) [off]
#   requests  requests counted, after 300 uncounted ones [3000]
#   workload  repeated | randomized [repeated]
#   target    ext-authz | gateway | authzen [ext-authz]
#
# It starts BIN under callgrind on the load benchmark's prepared configuration ($WORK_DIR, made
# by `cargo bench --bench load -- prepare --out $WORK_DIR` if missing), sends 300 requests
# (randomized ext_authz: after every prepared request once, however long that takes under
# callgrind, so that each user's token is verified before counting, as in the load benchmark; the
# driver's tokens are the same within a clock hour, and a run that crosses one fails: run it
# again), zeroes the counters, sends `requests` more with the load driver (4 connections × 8 streams
# for gRPC, 8 connections for HTTP), dumps the counters and prints the instructions of every
# thread of the server (the decision log writer among them, each thread's own line: the writer is
# the thread whose share appears only with the log on) divided by the requests counted.
# Only user-space instructions are counted: the kernel's share (system calls, the loopback's TCP)
# is not in them. Under callgrind the CPU has no SHA extensions: SHA-256 (the token cache's key)
# counts as its software form, several times what it costs natively.
#
# Environment: WORK_DIR [target/bench-work], USERS (bench users WORK_DIR was prepared with) [10000], LOAD (the load driver executable) [built with cargo],
# OUT_DIR (callgrind's output, kept for callgrind_annotate) [target/bench-instructions].
# Needs: valgrind, curl. Ports 127.0.0.1:19191 and :18181 must be free.
set -euo pipefail
if (($# < 1)) || [[ $1 == -h || $1 == --help ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/.."
BIN=$(realpath "$1")
LOG=${2:-off}
N=${3:-3000}
WORKLOAD=${4:-repeated}
TARGET=${5:-ext-authz}
WORK_DIR=$(realpath -m "${WORK_DIR:-target/bench-work}")
USERS=${USERS:-10000}
OUT_DIR=$(realpath -m "${OUT_DIR:-target/bench-instructions}")
command -v valgrind >/dev/null || { echo "error: valgrind is missing (apt-get install -y valgrind)" >&2; exit 2; }
if [[ -z ${LOAD:-} ]]; then
  LOAD=$(cargo bench --locked --bench load --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -n 1)
fi
[[ -x $LOAD ]] || { echo "error: cannot find the load driver executable" >&2; exit 2; }
[[ -f $WORK_DIR/mcp-authz/mcp-authz.toml ]] || "$LOAD" --bench prepare --out "$WORK_DIR" --users "$USERS" >/dev/null
mkdir -p "$OUT_DIR"
case $LOG in
on) envs=(MCP_AUTHZ_DECISION_LOG_ENABLED=true "MCP_AUTHZ_DECISION_LOG_FILE=$OUT_DIR/decisions.jsonl") ;;
off) envs=(MCP_AUTHZ_DECISION_LOG_ENABLED=false) ;;
*) echo "error: log is \`on\` or \`off\`, not \`$LOG\`" >&2; exit 2 ;;
esac
case $TARGET in
authzen) addr=127.0.0.1:18181 conns=8 streams=1 ;;
ext-authz | gateway) addr=127.0.0.1:19191 conns=4 streams=8 ;;
*) echo "error: unknown target \`$TARGET\`" >&2; exit 2 ;;
esac
stamp=$(date +%s)
out=$OUT_DIR/callgrind.$stamp
setsid env "${envs[@]}" valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out.%p" "$BIN" serve \
  --config "$WORK_DIR/mcp-authz/mcp-authz.toml" --grpc-listen 127.0.0.1:19191 --http-listen 127.0.0.1:18181 \
  >"$OUT_DIR/server.$stamp.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  curl -fsS -o /dev/null http://127.0.0.1:18181/readyz 2>/dev/null && break
  kill -0 $pid 2>/dev/null || { cat "$OUT_DIR/server.$stamp.log" >&2; exit 1; }
  sleep 0.2
done
drive() {
  "$LOAD" --bench run --target "$TARGET" --addr "$addr" --workload "$WORKLOAD" --requests "$1" \
    --duration 600 --warmup 0 --connections "$conns" --streams "$streams" --users "$USERS" --no-probe "${@:2}" \
    >/dev/null 2>>"$OUT_DIR/driver.$stamp.log"
}
hour=$(date -u +%Y%m%d%H)
drive 300 --prime-secs 1800
sleep 1
callgrind_control -z $pid >/dev/null 2>&1
rm -f "$OUT_DIR/run.$stamp.jsonl"
# The uncounted run primed the token cache (randomized ext_authz); the counted one does not again.
drive "$N" --no-prime --out "$OUT_DIR/run.$stamp.jsonl"
sleep 1
callgrind_control -d $pid >/dev/null 2>&1
sleep 1
kill $pid
wait $pid 2>/dev/null || true
trap - EXIT
if [[ $WORKLOAD == randomized && $TARGET == ext-authz && $(date -u +%Y%m%d%H) != "$hour" ]]; then
  echo "error: a clock hour began between priming and counting, so the counted tokens were new; run again" >&2
  exit 1
fi
# One dump per thread (`OUT.PID.1-NN`): the request's instructions are their sum.
dumps=$(ls "$out".*.1-* 2>/dev/null) || { echo "error: callgrind wrote no dump" >&2; exit 1; }
requests=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["requests"])' "$OUT_DIR/run.$stamp.jsonl")
ir=0
per_thread=()
for dump in $dumps; do
  n=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
  ir=$((ir + ${n:-0}))
  ((${n:-0} / requests > 0)) && per_thread+=("thread ${dump##*-}: $((n / requests))")
done
echo "$(basename "$BIN") log=$LOG $WORKLOAD $TARGET: $((ir / requests)) instructions per request ($ir over $requests; $out.*.1-*)"
printf '  %s\n' "${per_thread[@]}"
