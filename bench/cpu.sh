#!/usr/bin/env bash
# Server CPU time per request: GET /healthz against :encrypt (32 B), measured from the server
# process's own user + system time (/proc/PID/stat) over each wrk run, so the load generator's
# share of the two cores is left out. This is what says where a throughput ratio comes from.
#
#   bash bench/cpu.sh                      # the default SQLite file, release build
#   STORAGE=memory bash bench/cpu.sh       # --in-memory (same audit entry and commit, no fsync)
#   BIN=/path/to/keyhold bash bench/cpu.sh # another build (A/B: run both, alternately)
#   DURATION=10s ROUNDS=3 bash bench/cpu.sh
#   FLOOR=1 bash bench/cpu.sh              # also the bare :encrypt of bench/http-floor (its own
#                                          # process: JSON, AES-256-GCM, JSON, nothing else)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-2}
source bench/lib.sh
need_tools wrk curl
if [ -z "${BIN:-}" ]; then cargo build --release -p keyhold -q; BIN=target/release/keyhold; fi
FLAGS=(); [ "${STORAGE:-file}" = memory ] && FLAGS=(--in-memory)
start_encrypt_server "$BIN" "${FLAGS[@]}"
wrk -t2 -c64 -d2s -s bench/encrypt.lua "$ENC" >/dev/null  # warm-up
if [ "${FLOOR:-0}" = 1 ]; then
  cargo build --release -q --manifest-path bench/http-floor/Cargo.toml --target-dir target/http-floor
  BARE_PORT=$(free_port)
  target/http-floor/release/http-floor encrypt "$BARE_PORT" &
  BARE_PID=$!
  BENCH_PIDS+=("$BARE_PID")
  BARE_ENC=http://127.0.0.1:$BARE_PORT/v1/projects/bench/locations/global/keyRings/r/cryptoKeys/k:encrypt
  for _ in $(seq 50); do curl -sf -d '{"plaintext":"AA=="}' "$BARE_ENC" >/dev/null && break; sleep 0.1; done
  wrk -t2 -c64 -d2s -s bench/encrypt.lua "$BARE_ENC" >/dev/null  # warm-up (and fails if it is not up)
fi
TICK=$(getconf CLK_TCK)
one() { # name wrk-args... (the server measured is $SERVER, Keyhold's unless set)
  local name=$1; shift
  local t0 t1 out reqs pid=${SERVER:-$PID}
  t0=$(awk '{print $14 + $15}' /proc/$pid/stat)
  out=$(wrk --latency "$@")
  t1=$(awk '{print $14 + $15}' /proc/$pid/stat)
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  awk -v n="$name" -v r="$reqs" -v t="$((t1 - t0))" -v hz="$TICK" \
      -v rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")" -v p99="$(awk '$1=="99%" {print $2}' <<<"$out")" \
      'BEGIN {printf "| %s | %.0f | %s | %.1f |\n", n, rps, p99, t / hz * 1e6 / r}'
}
echo "== $(nproc) cores; $("$BIN" --version); storage ${STORAGE:-file}; $DURATION per run, $ROUNDS rounds"
echo "| scenario | requests/s | p99 | server CPU µs per request |"
echo "|---|---|---|---|"
for _ in $(seq "$ROUNDS"); do
  one health-c64 -t2 -c64 -d"$DURATION" "$HEALTH"
  one encrypt-c64 -t2 -c64 -d"$DURATION" -s bench/encrypt.lua "$ENC"
  one health-c1 -t1 -c1 -d"$DURATION" "$HEALTH"
  one encrypt-c1 -t1 -c1 -d"$DURATION" -s bench/encrypt.lua "$ENC"
  if [ "${FLOOR:-0}" = 1 ]; then
    SERVER=$BARE_PID one bare-encrypt-c64 -t2 -c64 -d"$DURATION" -s bench/encrypt.lua "$BARE_ENC"
  fi
done
