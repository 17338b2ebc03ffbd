#!/usr/bin/env bash
# Load benchmark of the KMS over gRPC: Encrypt (32-byte plaintext) and Decrypt of its ciphertext
# next to the cheapest gRPC call (grpc.health.v1.Health/Check), at 1 and 64 connections (one call in flight on each, as
# wrk's keep-alive connections in load.sh), in one run, on the same port and server as REST.
# h2load (Debian's nghttp2-client) sends the framed protobuf requests: h2c in clear, h2 by ALPN
# over TLS. Figures are ratios against that run's health check: shared machines drift.
#
#   bash bench/grpc-load.sh            # 10 s per scenario
#   DURATION=5 bash bench/grpc-load.sh # seconds
#   TLS=1 bash bench/grpc-load.sh      # over TLS (a development certificate; h2load does not verify it)
#   SERVE_FLAGS="--audit-sync strict" bash bench/grpc-load.sh  # extra `keyhold serve` flags
# The p99 comes from h2load's per-request log (--log-file).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}; DURATION=${DURATION%s}
source bench/lib.sh
need_tools h2load:nghttp2-client curl
cargo build --release -p keyhold -q
# shellcheck disable=SC2086 # SERVE_FLAGS is a list of flags
start_encrypt_server target/release/keyhold ${SERVE_FLAGS:-}
BASE=${HEALTH%/healthz}
KEY=projects/bench/locations/global/keyRings/r/cryptoKeys/k
BODIES=$(mktemp -d); BENCH_DIRS+=("$BODIES")  # removed on exit with the server's data
CIPHERTEXT=$(curl -sfk -H "authorization: Bearer $KEYHOLD_TOKEN" -H 'content-type: application/json' \
  -d '{"plaintext": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}' "$BASE/v1/$KEY:encrypt" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["ciphertext"])')
# gRPC frames: a 0 flag byte, the message length (4 bytes, big-endian), the protobuf message.
python3 - "$BODIES" "$KEY" "$CIPHERTEXT" <<'PY'
import base64, struct, sys
out, key, ct = sys.argv[1], sys.argv[2].encode(), base64.b64decode(sys.argv[3])
def frame(msg): return b"\0" + struct.pack(">I", len(msg)) + msg
def varint(n):
    b = bytearray()
    while True:
        b.append(n & 0x7F | (0x80 if n > 0x7F else 0)); n >>= 7
        if not n: return bytes(b)
def field(tag, data): return bytes([tag << 3 | 2]) + varint(len(data)) + data
open(f"{out}/health.bin", "wb").write(frame(b""))
open(f"{out}/encrypt.bin", "wb").write(frame(field(1, key) + field(2, b"0123456789abcdef0123456789abcdef")))
open(f"{out}/decrypt.bin", "wb").write(frame(field(1, key) + field(2, ct)))
PY
HDRS=(-H 'content-type: application/grpc' -H 'te: trailers' -H "authorization: Bearer $KEYHOLD_TOKEN")
# One call of each first: both must answer grpc-status 0 (h2load counts HTTP statuses only).
for call in "grpc.health.v1.Health/Check health" "google.cloud.kms.v1.KeyManagementService/Encrypt encrypt" \
    "google.cloud.kms.v1.KeyManagementService/Decrypt decrypt"; do
  set -- $call
  status=$(curl -s --http2-prior-knowledge -k "${HDRS[@]}" --data-binary @"$BODIES/$2.bin" -o /dev/null -v "$BASE/$1" 2>&1 \
    | awk 'tolower($0) ~ /^< grpc-status:/ {print $3}' | tr -d '\r')
  [ "$status" = 0 ] || { echo "$1 answered grpc-status '$status', not 0" >&2; exit 1; }
done
run() { # name conns path body
  local out
  out=$(h2load -D "$DURATION" -c "$2" -t "$(( $2 > 1 ? 2 : 1 ))" -m 1 "${HDRS[@]}" -d "$BODIES/$4.bin" \
    --log-file "$BODIES/$1.log" "$BASE/$3")
  grep -q ' 0 failed, 0 errored' <<<"$out" || { echo "$out" >&2; exit 1; }
  local rps mean p99
  rps=$(awk '/^finished in/ {print $4}' <<<"$out")
  mean=$(awk '/^time for request:/ {print $6}' <<<"$out")
  # The log: one line per request, its start, HTTP status and duration in µs.
  p99=$(awk '{print $3}' "$BODIES/$1.log" | sort -n | awk '{v[NR]=$1} END {i=int(NR*0.99); if (i<NR*0.99) i++; if (i<1) i=1; printf "%.0fus", v[i]}')
  printf '%s %s %s %s\n' "$1" "$rps" "$mean" "$p99"
}
echo "== machine: $(nproc) cores, $(uname -r); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $DURATION s per scenario; transport gRPC $([ "${TLS:-0}" = 1 ] && echo 'over TLS (h2)' || echo 'in clear (h2c)')"
RESULTS=$(
  run health-c1 1 grpc.health.v1.Health/Check health
  run encrypt-c1 1 google.cloud.kms.v1.KeyManagementService/Encrypt encrypt
  run decrypt-c1 1 google.cloud.kms.v1.KeyManagementService/Decrypt decrypt
  run health-c64 64 grpc.health.v1.Health/Check health
  run encrypt-c64 64 google.cloud.kms.v1.KeyManagementService/Encrypt encrypt
  run decrypt-c64 64 google.cloud.kms.v1.KeyManagementService/Decrypt decrypt
)
echo
printf '| scenario | calls/s | mean latency | p99 | ratio to health check |\n|---|---|---|---|---|\n'
awk '{rps[$1]=$2; mean[$1]=$3; p99[$1]=$4; order[NR]=$1}
     END {for (i=1;i<=NR;i++) {n=order[i]; split(n,a,"-"); b=rps["health-" a[2]];
          printf "| %s | %.0f | %s | %s | %.2f |\n", n, rps[n], mean[n], p99[n], rps[n]/b}}' <<<"$RESULTS"
