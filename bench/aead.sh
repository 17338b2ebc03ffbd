#!/usr/bin/env bash
# Chunk sealing and opening (keyhold-cmek's seal_chunk / open_chunk, 1 MiB chunks, one core)
# next to the AES-256-GCM baseline of the same machine, `openssl speed -evp aes-256-gcm` on
# 16 KiB blocks (also one core), run back to back. The goal is at least 80 % of openssl for
# both: the envelope (identity, fresh DEK, wrapped DEK, allocation) should cost little next to
# the cipher. Figures are MB/s (10^6 bytes/s); the last column is the ratio to openssl (goal ≥ 0.80).
#
#   bash bench/aead.sh                                        # 3 s openssl, 3 s per benchmark
#   KEYHOLD_BENCH_SECONDS=0.2 SECONDS_PER=1 bash bench/aead.sh   # smoke run
#   RESULTS_JSON=/tmp/aead.json bash bench/aead.sh            # also {"openssl_mbps", "seal_mbps", "open_mbps"}
#
# SECONDS_PER: openssl's -seconds (whole seconds). KEYHOLD_BENCH_SECONDS: criterion's
# measurement time per benchmark (see crates/keyhold-cmek/benches/envelope.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER=${SECONDS_PER:-3}
if ! [[ $SECONDS_PER =~ ^[1-9][0-9]*$ ]]; then
  echo "SECONDS_PER must be a whole number of seconds (openssl speed -seconds), got '$SECONDS_PER'" >&2
  exit 2
fi
source bench/lib.sh
need_tools openssl
# Build first, so that the two measurements below run back to back.
cargo bench -p keyhold-cmek --bench envelope --no-run -q

LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
echo "== machine: $(nproc) cores, $(uname -r); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $(openssl version | awk '{print $1, $2}'), ${SECONDS_PER} s; criterion, ${KEYHOLD_BENCH_SECONDS:-3} s per benchmark"

# openssl prints its table on stdout, in 1000s of bytes per second ("1909877.92k"):
#   type          16384 bytes
#   AES-256-GCM    1909877.92k
if ! OSSL=$(openssl speed -evp aes-256-gcm -bytes 16384 -seconds "$SECONDS_PER" 2>"$LOG"); then
  cat "$LOG" >&2; exit 1
fi
OPENSSL_MBPS=$(awk 'toupper($1) == "AES-256-GCM" && NF >= 2 {
    v = $NF; k = sub(/k$/, "", v); found = v * (k ? 1000 : 1) / 1e6 }
  END { if (found == "") exit 1; printf "%.1f\n", found }' <<<"$OSSL") || {
  echo "could not read the AES-256-GCM figure from openssl speed:" >&2; echo "$OSSL" >&2; exit 1; }

# criterion prints, per benchmark (the id and "time:" may share a line), on stdout:
#   envelope/seal_1MiB      time:   [230.00 µs 265.68 µs 318.73 µs]
#                           thrpt:  [3.0639 GiB/s 3.6758 GiB/s 4.2459 GiB/s]
# and, from the second run on, a "change:" block whose thrpt line is in %: take the first
# thrpt line after each id, its middle value.
if ! CRIT=$(cargo bench -p keyhold-cmek --bench envelope -q 2>"$LOG"); then
  cat "$LOG" >&2; exit 1
fi
thrpt() { # bench id -> MB/s
  awk -v id="$1" '
    $1 == id { want = 1; next }
    want && $1 == "thrpt:" {
      v = $4; u = $5
      m = (u == "B/s") ? 1 : (u == "KiB/s") ? 1024 : (u == "MiB/s") ? 1048576 : (u == "GiB/s") ? 1073741824 : (u == "TiB/s") ? 1099511627776 : 0
      if (m) { printf "%.1f\n", v * m / 1e6; found = 1 }
      want = 0 }
    END { if (!found) exit 1 }' <<<"$CRIT"
}
SEAL_MBPS=$(thrpt envelope/seal_1MiB) && OPEN_MBPS=$(thrpt envelope/open_1MiB) || {
  echo "could not read the throughput of envelope/seal_1MiB and envelope/open_1MiB from criterion:" >&2
  echo "$CRIT" >&2; exit 1; }

echo
printf '| operation | MB/s | relative to openssl AES-256-GCM 16 KiB |\n|---|---|---|\n'
awk -v o="$OPENSSL_MBPS" -v s="$SEAL_MBPS" -v p="$OPEN_MBPS" 'BEGIN {
  printf "| openssl speed -evp aes-256-gcm (16 KiB blocks) | %.0f | 1.00 |\n", o
  printf "| seal_chunk (1 MiB) | %.0f | %.2f |\n", s, s / o
  printf "| open_chunk (1 MiB) | %.0f | %.2f |\n", p, p / o }'

if [ -n "${RESULTS_JSON:-}" ]; then
  printf '{"openssl_mbps": %s, "seal_mbps": %s, "open_mbps": %s}\n' "$OPENSSL_MBPS" "$SEAL_MBPS" "$OPEN_MBPS" >"$RESULTS_JSON"
fi
