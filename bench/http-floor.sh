#!/usr/bin/env bash
# Where Keyhold's throughput stands against the HTTP floor, in one run: nginx's fixed answer
# (the suite's baseline), the same answer from hyper alone and from an axum router
# (bench/http-floor, the crate versions and runtime Keyhold uses), Keyhold's GET /healthz, a bare
# :encrypt of 32 B on the same crates (JSON in, AES-256-GCM, JSON out; no token, IAM, key lookup
# or audit entry), and Keyhold's :encrypt of 32 B on the default server (SQLite file, audit
# journal) and with --in-memory.
# wrk, 64 keep-alive connections; the order of the scenarios rotates each round, and each
# figure is also given as a ratio to nginx's in the same round.
#
#   bash bench/http-floor.sh                 # 3 rounds of 5 s per scenario
#   ROUNDS=5 DURATION=10s bash bench/http-floor.sh
#   BIN=/path/to/keyhold bash bench/http-floor.sh   # another build of Keyhold
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
source bench/lib.sh
need_tools wrk nginx curl python3
if [ -z "${BIN:-}" ]; then cargo build --release -p keyhold -q; BIN=target/release/keyhold; fi
cargo build --release -q --manifest-path bench/http-floor/Cargo.toml --target-dir target/http-floor
FLOOR=target/http-floor/release/http-floor

# Every process started here and every directory made here is in lib.sh's BENCH_PIDS and
# BENCH_DIRS, which its bench_cleanup stops and removes on exit, whatever fails first.
WORK=$(mktemp -d)
BENCH_DIRS+=("$WORK")
trap bench_cleanup EXIT

# nginx as the suite runs its baseline (bench/suite.py: the same nginx.conf and the same
# answer, a Keyhold :encrypt answer in shape and size); the floor servers give that answer too.
NGINX_PORT=$(free_port)
python3 - "$WORK" "$NGINX_PORT" <<'PY'
import os, sys
from pathlib import Path
sys.path.insert(0, "bench")
import suite
work, port = Path(sys.argv[1]), int(sys.argv[2])
(work / "nginx" / "tmp").mkdir(parents=True)
without, _ = suite.nginx_missing_modules(suite.nginx_binary())
workers = len(os.sched_getaffinity(0))
(work / "nginx" / "nginx.conf").write_text(suite.nginx_conf(work / "nginx", port, workers, suite.NGINX_ANSWER, without))
(work / "answer.json").write_text(suite.NGINX_ANSWER)
PY
PATH="$PATH:/usr/sbin:/sbin" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" \
  -g 'daemon off;' 2>"$WORK/nginx/stderr" &
BENCH_PIDS+=($!)
HYPER_PORT=$(free_port); "$FLOOR" hyper "$HYPER_PORT" "$WORK/answer.json" & BENCH_PIDS+=($!)
AXUM_PORT=$(free_port); "$FLOOR" axum "$AXUM_PORT" "$WORK/answer.json" & BENCH_PIDS+=($!)
BARE_PORT=$(free_port); "$FLOOR" encrypt "$BARE_PORT" & BENCH_PIDS+=($!)
BARE_ENC=http://127.0.0.1:$BARE_PORT/v1/projects/bench/locations/global/keyRings/r/cryptoKeys/k:encrypt

start_encrypt_server "$BIN" --in-memory
MEM_ENC=$ENC MEM_TOKEN=$KEYHOLD_TOKEN
start_encrypt_server "$BIN"
for url in "http://127.0.0.1:$NGINX_PORT/" "http://127.0.0.1:$HYPER_PORT/" "http://127.0.0.1:$AXUM_PORT/"; do
  for _ in $(seq 50); do curl -sf "$url" >/dev/null && break; sleep 0.1; done
  curl -sf "$url" | grep -q '"protectionLevel"' || { echo "no fixed answer from $url" >&2; exit 1; }
done
for _ in $(seq 50); do curl -sf -d '{"plaintext":"AA=="}' "$BARE_ENC" >/dev/null && break; sleep 0.1; done
curl -sf -d '{"plaintext":"AA=="}' "$BARE_ENC" | grep -q '"ciphertext"' || { echo "no ciphertext from $BARE_ENC" >&2; exit 1; }

rps() { # url [wrk script] [token]
  local out
  if [ -n "${2:-}" ]; then
    out=$(KEYHOLD_TOKEN=$3 wrk -t2 -c"$CONNS" -d"$DURATION" -s "$2" "$1")
  else
    out=$(wrk -t2 -c"$CONNS" -d"$DURATION" "$1")
  fi
  grep -q "Non-2xx" <<<"$out" && { echo "non-2xx answers from $1" >&2; exit 1; }
  awk '/Requests\/sec/ {print $2}' <<<"$out"
}
NAMES=(nginx hyper axum health bare-encrypt encrypt encrypt-in-memory)
one() { # name
  case $1 in
    nginx) rps "http://127.0.0.1:$NGINX_PORT/v1/x" ;;
    hyper) rps "http://127.0.0.1:$HYPER_PORT/v1/x" ;;
    axum) rps "http://127.0.0.1:$AXUM_PORT/v1/x" ;;
    health) rps "$HEALTH" ;;
    bare-encrypt) rps "$BARE_ENC" bench/encrypt.lua "$KEYHOLD_TOKEN" ;;  # the same request (but the Host port)
    encrypt) rps "$ENC" bench/encrypt.lua "$KEYHOLD_TOKEN" ;;
    encrypt-in-memory) rps "$MEM_ENC" bench/encrypt.lua "$MEM_TOKEN" ;;
  esac
}
rps "$ENC" bench/encrypt.lua "$KEYHOLD_TOKEN" >/dev/null  # warm-up
rps "$BARE_ENC" bench/encrypt.lua "$KEYHOLD_TOKEN" >/dev/null
rps "$MEM_ENC" bench/encrypt.lua "$MEM_TOKEN" >/dev/null
echo "== $(nproc) cores; $("$BIN" --version); $ROUNDS rounds, $DURATION per scenario, $CONNS connections"
RESULTS=$WORK/results
for r in $(seq "$ROUNDS"); do
  n=${#NAMES[@]}
  for i in $(seq 0 $((n - 1))); do
    name=${NAMES[$(((i + r - 1) % n))]}
    # An assignment, so that a failed run (rps exits) stops the script.
    value=$(one "$name")
    echo "$r $name $value" >>"$RESULTS"
  done
done
echo "| scenario | requests/s, each round | ratio to nginx, each round | median ratio |"
echo "|---|---|---|---|"
for name in "${NAMES[@]}"; do
  awk -v want="$name" '
    { v[$1, $2] = $3; if ($1 > rounds) rounds = $1 }
    END {
      for (r = 1; r <= rounds; r++) {
        ratio[r] = v[r, want] / v[r, "nginx"]
        all = all (r > 1 ? ", " : "") sprintf("%.0f", v[r, want])
        rat = rat (r > 1 ? ", " : "") sprintf("%.2f", ratio[r])
      }
      # median of the ratios (insertion sort: a handful of rounds)
      for (i = 2; i <= rounds; i++) { x = ratio[i]; j = i - 1; while (j >= 1 && ratio[j] > x) { ratio[j + 1] = ratio[j]; j-- } ratio[j + 1] = x }
      med = rounds % 2 ? ratio[(rounds + 1) / 2] : (ratio[rounds / 2] + ratio[rounds / 2 + 1]) / 2
      printf "| %s | %s | %s | %.2f |\n", want, all, rat, med
    }' "$RESULTS"
done
