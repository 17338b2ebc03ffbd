#!/usr/bin/env bash
# Two builds side by side: both servers run at once, and wrk loads each in turn (GET /healthz,
# then :encrypt of 32 B), so that the machine's drift falls on both alike. Prints each round's
# requests/s and the new build's over the old.
#
#   bash bench/ab.sh OLD_BINARY NEW_BINARY [serve flags...]     # e.g. --in-memory
#   ROUNDS=5 DURATION=5s bash bench/ab.sh old/keyhold target/release/keyhold
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,7p' "$0" >&2; exit 2; }
OLD=$(realpath "$1") NEW=$(realpath "$2"); shift 2
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-4s}
source bench/lib.sh
need_tools wrk
start_encrypt_server "$OLD" "$@"
O_HEALTH=$HEALTH O_ENC=$ENC O_TOKEN=$KEYHOLD_TOKEN
start_encrypt_server "$NEW" "$@"
N_HEALTH=$HEALTH N_ENC=$ENC N_TOKEN=$KEYHOLD_TOKEN
rps() { # url [token: then :encrypt]
  local out
  if [ -n "${2:-}" ]; then
    out=$(KEYHOLD_TOKEN=$2 wrk -t2 -c64 -d"$DURATION" -s bench/encrypt.lua "$1")
  else
    out=$(wrk -t2 -c64 -d"$DURATION" "$1")
  fi
  grep -q "Non-2xx" <<<"$out" && { echo "non-2xx answers from $1" >&2; exit 1; }
  awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
rps "$O_ENC" "$O_TOKEN" >/dev/null  # warm-up
rps "$N_ENC" "$N_TOKEN" >/dev/null
echo "== $(nproc) cores; serve flags: ${*:-none}; $ROUNDS rounds of $DURATION, 64 connections"
for r in $(seq "$ROUNDS"); do
  # The order alternates each round.
  if [ $((r % 2)) = 1 ]; then
    ho=$(rps "$O_HEALTH"); hn=$(rps "$N_HEALTH"); en=$(rps "$N_ENC" "$N_TOKEN"); eo=$(rps "$O_ENC" "$O_TOKEN")
  else
    hn=$(rps "$N_HEALTH"); ho=$(rps "$O_HEALTH"); eo=$(rps "$O_ENC" "$O_TOKEN"); en=$(rps "$N_ENC" "$N_TOKEN")
  fi
  echo "round $r: health old $ho new $hn ($(ratio "$hn" "$ho")); encrypt old $eo new $en ($(ratio "$en" "$eo"))"
done
