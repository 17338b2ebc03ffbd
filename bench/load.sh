#!/usr/bin/env bash
# Load benchmark of the KMS over loopback HTTP: :encrypt (32-byte plaintext) next to the
# server's cheapest endpoint (GET /healthz), at 1 and 64 keep-alive connections, in one run.
# Figures are reported as ratios against that baseline because shared machines drift.
# The server runs as `keyhold serve` does by default (a SQLite file, synchronous=FULL), so every
# :encrypt pays for its authorization check and its durable audit entry.
#
#   bash bench/load.sh            # 10 s per scenario
#   DURATION=3s bash bench/load.sh
#   STORAGE=memory bash bench/load.sh   # --in-memory: the same checks, audit without fsync
#   TLS=1 bash bench/load.sh            # over HTTPS (a development certificate; wrk does not verify it)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
source bench/lib.sh
need_tools wrk
cargo build --release -p keyhold -q
STORE_FLAGS=(); [ "${STORAGE:-file}" = memory ] && STORE_FLAGS=(--in-memory)
start_encrypt_server target/release/keyhold "${STORE_FLAGS[@]}"

# wrk prints "Requests/sec: N" and, with --latency, the 50% and 99% percentiles.
run() { # name threads conns url [script]
  local out
  if [ -n "${5:-}" ]; then out=$(wrk -t"$2" -c"$3" -d"$DURATION" --latency -s "$5" "$4"); else out=$(wrk -t"$2" -c"$3" -d"$DURATION" --latency "$4"); fi
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  printf '%s %s %s %s\n' "$1" "$rps" "$p50" "$p99"
}
echo "== machine: $(nproc) cores, $(uname -r); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); duration $DURATION per scenario; storage ${STORAGE:-file}; transport $([ "${TLS:-0}" = 1 ] && echo HTTPS || echo HTTP)"
RESULTS=$(
  run health-c1 1 1 "$HEALTH"
  run encrypt-c1 1 1 "$ENC" bench/encrypt.lua
  run health-c64 2 64 "$HEALTH"
  run encrypt-c64 2 64 "$ENC" bench/encrypt.lua
)
echo
printf '| scenario | requests/s | p50 | p99 | ratio to health check |\n|---|---|---|---|---|\n'
awk '{rps[$1]=$2; p50[$1]=$3; p99[$1]=$4; order[NR]=$1}
     END {for (i=1;i<=NR;i++) {n=order[i]; split(n,a,"-"); b=rps["health-" a[2]];
          printf "| %s | %.0f | %s | %s | %.2f |\n", n, rps[n], p50[n], p99[n], rps[n]/b}}' <<<"$RESULTS"
