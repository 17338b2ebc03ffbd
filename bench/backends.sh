#!/usr/bin/env bash
# :encrypt requests/s for SOFTWARE, HSM (SoftHSM2) and EXTERNAL (`keyhold ekm serve` on the same
# machine) keys at 1 and 64 connections, with GET /healthz as the baseline, in one run against
# one `keyhold serve` (release build, default SQLite file). Figures are ratios to the health
# check of the same connection count, because shared machines drift.
#
#   bash bench/backends.sh            # 10 s per scenario
#   DURATION=3s bash bench/backends.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
source bench/lib.sh
need_tools wrk softhsm2-util:softhsm2
cargo build --release -p keyhold -q
BIN=target/release/keyhold
MODULE=$(ls /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so 2>/dev/null | head -n 1)

WORK=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT

# A throwaway SoftHSM2 token.
mkdir -p "$WORK/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$WORK/tokens" > "$WORK/softhsm2.conf"
export SOFTHSM2_CONF="$WORK/softhsm2.conf"
softhsm2-util --init-token --free --label bench --so-pin 5678 --pin 1234 >/dev/null
printf '1234\n' > "$WORK/pin"

# The external key manager, on loopback.
EKM_PORT=$(free_port)
EKM=http://127.0.0.1:$EKM_PORT
URI=$($BIN ekm keys create bench --data-dir "$WORK/ekm" --base-url "$EKM")
echo '{"keys": {"bench": {"allowedCallers": ["*"], "allowedReasons": ["CUSTOMER_INITIATED_ACCESS"]}}}' > "$WORK/ekm/policy.json"
KEYHOLD_LOG=warn $BIN ekm serve --listen 127.0.0.1:$EKM_PORT --data-dir "$WORK/ekm" 2>"$WORK/ekm.log" &
PIDS+=($!)
for _ in $(seq 100); do curl -sf "$EKM/healthz" >/dev/null && break; sleep 0.1; done
echo "$EKM $(awk '$1 == "keyhold-kms" {print $2}' "$WORK/ekm/tokens")" > "$WORK/ekm-credentials"

# The KMS with all three backends.
PORT=$(free_port)
KEYHOLD_LOG=warn $BIN serve --data-dir "$WORK/data" --listen 127.0.0.1:$PORT \
  --pkcs11-module "$MODULE" --pkcs11-token-label bench --pkcs11-pin-file "$WORK/pin" \
  --ekm-credentials-file "$WORK/ekm-credentials" 2>"$WORK/serve.log" &
PIDS+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
export KEYHOLD_TOKEN; KEYHOLD_TOKEN=$(cat "$WORK/data/owner.token")
AUTH="Authorization: Bearer $KEYHOLD_TOKEN"
RING=http://127.0.0.1:$PORT/v1/projects/bench/locations/global/keyRings
api() { curl -sf -H "$AUTH" -X POST "$1" -d "$2" >/dev/null || { echo "bench/backends.sh: POST $1 failed" >&2; exit 1; }; }
api "$RING?keyRingId=r" ''
api "$RING/r/cryptoKeys?cryptoKeyId=software" '{"purpose":"ENCRYPT_DECRYPT"}'
api "$RING/r/cryptoKeys?cryptoKeyId=hsm" '{"purpose":"ENCRYPT_DECRYPT","versionTemplate":{"protectionLevel":"HSM"}}'
api "$RING/r/cryptoKeys?cryptoKeyId=external&skipInitialVersionCreation=true" \
  '{"purpose":"ENCRYPT_DECRYPT","versionTemplate":{"protectionLevel":"EXTERNAL","algorithm":"EXTERNAL_SYMMETRIC_ENCRYPTION"}}'
api "$RING/r/cryptoKeys/external/cryptoKeyVersions" "{\"externalProtectionLevelOptions\":{\"externalKeyUri\":\"$URI\"}}"
api "$RING/r/cryptoKeys/external:updatePrimaryVersion" '{"cryptoKeyVersionId":"1"}'

run() { # name conns url [script]
  local threads out
  threads=$([ "$2" = 1 ] && echo 1 || echo 2)
  if [ -n "${4:-}" ]; then out=$(wrk -t"$threads" -c"$2" -d"$DURATION" --latency -s "$4" "$3"); else out=$(wrk -t"$threads" -c"$2" -d"$DURATION" --latency "$3"); fi
  printf '%s %s %s %s\n' "$1" "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
    "$(awk '$1=="50%" {print $2}' <<<"$out")" "$(awk '$1=="99%" {print $2}' <<<"$out")"
}
echo "== machine: $(nproc) cores, $(uname -r); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $DURATION per scenario"
RESULTS=$(
  for c in 1 64; do
    run "health-c$c" "$c" "http://127.0.0.1:$PORT/healthz"
    for k in software hsm external; do run "$k-c$c" "$c" "$RING/r/cryptoKeys/$k:encrypt" bench/encrypt.lua; done
  done
)
echo
printf '| scenario | requests/s | p50 | p99 | ratio to health check | ratio to SOFTWARE |\n|---|---|---|---|---|---|\n'
awk '{rps[$1]=$2; p50[$1]=$3; p99[$1]=$4; order[NR]=$1}
     END {for (i=1;i<=NR;i++) {n=order[i]; split(n,a,"-"); h=rps["health-" a[2]]; s=rps["software-" a[2]];
          printf "| %s | %.0f | %s | %s | %.2f | %.2f |\n", n, rps[n], p50[n], p99[n], rps[n]/h, rps[n]/s}}' <<<"$RESULTS"
