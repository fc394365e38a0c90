#!/usr/bin/env bash
# Soak: `mcp-authz serve` (release build) under mixed load on 127.0.0.1 for a bounded
# time, while its policies flip every second between two versions and its issuer's
# signing key rotates. Not run by CI. The driver (bench/soak/main.rs) checks afterwards:
# no failed request, every answer equal to its decision-log record and to what the
# policy version of the record's generation decides (`mcp-authz check --json`), and
# resident memory flat. Results: RELIABILITY.md.
#
#   bench/soak.sh                          # 3 minutes
#   SOAK_SECS=600 bench/soak.sh            # 10 minutes
#   SOAK_WORKERS=1 SOAK_FLIP_MS=500 SOAK_ROTATE_SECS=20 SOAK_RATE=3000 bench/soak.sh
#
# The work directory (policy versions, config, server log, decisions.jsonl, rss.txt,
# summary.json) is kept: SOAK_DIR, default target/soak/<timestamp>.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${SOAK_SECS:-180}"
workers="${SOAK_WORKERS:-2}"
flip_ms="${SOAK_FLIP_MS:-1000}"
rotate="${SOAK_ROTATE_SECS:-30}"
rate="${SOAK_RATE:-1500}"
queue="${SOAK_QUEUE:-262144}"   # decision-log queue: large, so that no record is dropped
dir="${SOAK_DIR:-target/soak/$(date +%Y%m%d-%H%M%S)}"

# Bounded: the driver stops the load after $secs; this is the backstop.
limit=$((secs + 600))

cargo build --release --bin mcp-authz
cargo bench --bench soak --no-run
mkdir -p "$dir"
echo "soak: ${secs}s, ${rate} requests/s over ${workers} worker(s) per interface, flip every ${flip_ms} ms, key rotation every ${rotate}s; work dir $dir"
timeout "$limit" cargo bench --bench soak -- run \
    --bin target/release/mcp-authz --work "$dir" --duration "$secs" \
    --workers "$workers" --flip-ms "$flip_ms" --rotate-secs "$rotate" --rate "$rate" --queue "$queue"
