#!/usr/bin/env bash
# Instructions executed per request, counted by valgrind's callgrind: unlike times, the counts
# do not drift with the load of a shared machine, so two builds compare even days apart.
# The server runs --in-memory under callgrind; counting is switched on only around a wrk run
# of :encrypt (or the health check) at 8 connections, then divided by the requests served.
#
#   bash bench/callgrind.sh                  # :encrypt, release build
#   bash bench/callgrind.sh health           # GET /healthz
#   BIN=/path/to/keyhold bash bench/callgrind.sh
#   callgrind_annotate --inclusive=yes /tmp/keyhold-callgrind.out.1 | less   # the profile
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk valgrind; do
  command -v $tool >/dev/null || { SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $tool >/dev/null; }
done
if [ -z "${BIN:-}" ]; then cargo build --release -p keyhold -q; BIN=target/release/keyhold; fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DATA=$(mktemp -d)
OUT=${OUT:-/tmp/keyhold-callgrind.out}
rm -f "$OUT" "$OUT".*
KEYHOLD_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$OUT" --instr-atstart=no \
  "$BIN" serve --in-memory --data-dir "$DATA" --listen 127.0.0.1:$PORT 2>/dev/null &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 300); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.2; done
export KEYHOLD_TOKEN; KEYHOLD_TOKEN=$(cat "$DATA/owner.token")
BASE=http://127.0.0.1:$PORT/v1/projects/bench/locations/global/keyRings
curl -sf -H "Authorization: Bearer $KEYHOLD_TOKEN" -X POST "$BASE?keyRingId=r" -d '' >/dev/null
curl -sf -H "Authorization: Bearer $KEYHOLD_TOKEN" -X POST "$BASE/r/cryptoKeys?cryptoKeyId=k" -d '{"purpose":"ENCRYPT_DECRYPT"}' >/dev/null
ENC="$BASE/r/cryptoKeys/k:encrypt"
wrk -t1 -c8 -d2s -s bench/encrypt.lua "$ENC" >/dev/null  # warm-up: caches, unsealed key
callgrind_control -i on $PID >/dev/null
if [ "${1:-encrypt}" = health ]; then
  out=$(wrk -t1 -c8 -d8s "http://127.0.0.1:$PORT/healthz")
else
  out=$(wrk -t1 -c8 -d8s -s bench/encrypt.lua "$ENC")
fi
callgrind_control -d $PID >/dev/null
callgrind_control -i off $PID >/dev/null
reqs=$(awk '/requests in/ {print $1}' <<<"$out")
ir=$(callgrind_annotate "$OUT.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "${1:-encrypt}: $reqs requests, $ir instructions, $((ir / reqs)) per request (profile: $OUT.1)"
