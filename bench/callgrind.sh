#!/usr/bin/env bash
# Instructions executed per request, counted by valgrind's callgrind: unlike times, the counts
# do not drift with the load of a shared machine, so two builds compare even days apart.
# The server runs --in-memory under callgrind (STORAGE=file: the default server, SQLite file and
# audit journal, every thread counted); counting is switched on only around a wrk run of
# :encrypt (or the health check) at 8 connections, then divided by the requests served.
#
#   bash bench/callgrind.sh                  # :encrypt, release build
#   bash bench/callgrind.sh health           # GET /healthz
#   STORAGE=file bash bench/callgrind.sh     # on the default server
#   BIN=/path/to/keyhold bash bench/callgrind.sh
#   callgrind_annotate --inclusive=yes /tmp/keyhold-callgrind.out.1 | less   # the profile
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need_tools wrk valgrind
if [ -z "${BIN:-}" ]; then cargo build --release -p keyhold -q; BIN=target/release/keyhold; fi
OUT=${OUT:-/tmp/keyhold-callgrind.out}
rm -f "$OUT" "$OUT".*
case ${STORAGE:-memory} in
  memory) FLAGS=(--in-memory) ;;
  file) FLAGS=() ;;
  *) echo "STORAGE is memory or file" >&2; exit 2 ;;
esac
WRAP="valgrind --tool=callgrind --callgrind-out-file=$OUT --instr-atstart=no" start_encrypt_server "$BIN" "${FLAGS[@]}"
wrk -t1 -c8 -d2s -s bench/encrypt.lua "$ENC" >/dev/null  # warm-up: caches, unsealed key
callgrind_control -i on $PID >/dev/null
if [ "${1:-encrypt}" = health ]; then
  out=$(wrk -t1 -c8 -d8s "$HEALTH")
else
  out=$(wrk -t1 -c8 -d8s -s bench/encrypt.lua "$ENC")
fi
callgrind_control -d $PID >/dev/null
callgrind_control -i off $PID >/dev/null
reqs=$(awk '/requests in/ {print $1}' <<<"$out")
ir=$(callgrind_annotate "$OUT.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "${1:-encrypt}: $reqs requests, $ir instructions, $((ir / reqs)) per request (profile: $OUT.1)"
