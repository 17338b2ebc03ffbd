#!/usr/bin/env bash
# Server CPU time per request: GET /healthz against :encrypt (32 B), measured from the server
# process's own user + system time (/proc/PID/stat) over each wrk run, so the load generator's
# share of the two cores is left out. This is what says where a throughput ratio comes from.
#
#   bash bench/cpu.sh                      # the default SQLite file, release build
#   STORAGE=memory bash bench/cpu.sh       # --in-memory (same audit entry and commit, no fsync)
#   BIN=/path/to/keyhold bash bench/cpu.sh # another build (A/B: run both, alternately)
#   DURATION=10s ROUNDS=3 bash bench/cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-2}
command -v wrk >/dev/null || { SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null; }
if [ -z "${BIN:-}" ]; then cargo build --release -p keyhold -q; BIN=target/release/keyhold; fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DATA=$(mktemp -d)
FLAGS=(); [ "${STORAGE:-file}" = memory ] && FLAGS=(--in-memory)
KEYHOLD_LOG=warn "$BIN" serve "${FLAGS[@]}" --data-dir "$DATA" --listen 127.0.0.1:$PORT 2>/dev/null &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
export KEYHOLD_TOKEN; KEYHOLD_TOKEN=$(cat "$DATA/owner.token")
BASE=http://127.0.0.1:$PORT/v1/projects/bench/locations/global/keyRings
curl -sf -H "Authorization: Bearer $KEYHOLD_TOKEN" -X POST "$BASE?keyRingId=r" -d '' >/dev/null
curl -sf -H "Authorization: Bearer $KEYHOLD_TOKEN" -X POST "$BASE/r/cryptoKeys?cryptoKeyId=k" -d '{"purpose":"ENCRYPT_DECRYPT"}' >/dev/null
ENC="$BASE/r/cryptoKeys/k:encrypt"
wrk -t2 -c64 -d2s -s bench/encrypt.lua "$ENC" >/dev/null  # warm-up
TICK=$(getconf CLK_TCK)
one() { # name wrk-args...
  local name=$1; shift
  local t0 t1 out reqs
  t0=$(awk '{print $14 + $15}' /proc/$PID/stat)
  out=$(wrk --latency "$@")
  t1=$(awk '{print $14 + $15}' /proc/$PID/stat)
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  awk -v n="$name" -v r="$reqs" -v t="$((t1 - t0))" -v hz="$TICK" \
      -v rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")" -v p99="$(awk '$1=="99%" {print $2}' <<<"$out")" \
      'BEGIN {printf "| %s | %.0f | %s | %.1f |\n", n, rps, p99, t / hz * 1e6 / r}'
}
echo "== $(nproc) cores; $("$BIN" --version); storage ${STORAGE:-file}; $DURATION per run, $ROUNDS rounds"
echo "| scenario | requests/s | p99 | server CPU µs per request |"
echo "|---|---|---|---|"
for _ in $(seq "$ROUNDS"); do
  one health-c64 -t2 -c64 -d"$DURATION" "http://127.0.0.1:$PORT/healthz"
  one encrypt-c64 -t2 -c64 -d"$DURATION" -s bench/encrypt.lua "$ENC"
  one health-c1 -t1 -c1 -d"$DURATION" "http://127.0.0.1:$PORT/healthz"
  one encrypt-c1 -t1 -c1 -d"$DURATION" -s bench/encrypt.lua "$ENC"
done
