#!/usr/bin/env bash
# Store benchmark: what customer-managed encryption (CMEK) costs next to service-managed
# encryption (GOOGLE_DEFAULT_ENCRYPTION), measured in one run against one `keyhold serve`
# (release build, default SQLite file). Shared machines drift, so the figure that matters is
# the ratio CMEK / service-managed of the same scenario, run back to back.
#
#   bash bench/store.sh                 # everything, 10 s per wrk scenario, 5 GiB streaming
#   DURATION=3s BIG=1G ROUNDS=1 bash bench/store.sh
#   PARTS=load bash bench/store.sh      # only the PUT/GET table (also: rewrap, stream)
#
# Parts:
#   load    PUT and GET of 4 KiB objects (1 and 16 connections) and 16 MiB objects (1 and 4),
#           wrk with bench/store-put.lua / bench/store-get.lua, on two instances: one without
#           a key, one under a Keyhold KMS key. Every request is authenticated, authorized and
#           audited the same way on both. Each scenario runs ROUNDS times (default 2) per
#           instance, alternating which goes first; the table shows the mean.
#   rewrap  time of :rewrap after a key rotation for an instance holding 10 MB and one holding
#           1 GB (one KEK per instance: both should take the same time), and of :reencrypt
#           (which rewrites every chunk, so grows with the data) for comparison.
#   stream  a fresh server; one object of $BIG (default 5G) PUT and GET through curl, streamed;
#           the server's peak resident memory (VmHWM) before and after.
#   copies  a CMEK instance holding $COPY_SIZE (default 1G, in 16 objects of random bytes):
#           backup, restore, clone, export and import times and MB/s, next to a plain copy of
#           the same bytes in a file with `dd conv=fsync`, measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
BIG=${BIG:-5G}
PARTS=${PARTS:-load rewrap stream copies}
COPY_SIZE=${COPY_SIZE:-1G}
ROUNDS=${ROUNDS:-2}
source bench/lib.sh
need_tools wrk
cargo build --release -p keyhold -q

PID=""; DATA=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; [ -n "$DATA" ] && rm -rf "$DATA"; rm -f "${COPY_SRC:-}" "${COPY_DST:-}"; true; }
trap cleanup EXIT

start_server() {
  cleanup
  PORT=$(free_port)
  DATA=$(mktemp -d)
  KEYHOLD_LOG=warn target/release/keyhold serve --data-dir "$DATA" --listen 127.0.0.1:$PORT 2>/tmp/keyhold-store-bench.log &
  PID=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
  export KEYHOLD_TOKEN; KEYHOLD_TOKEN=$(cat "$DATA/owner.token")
  AUTH="Authorization: Bearer $KEYHOLD_TOKEN"
  V1=http://127.0.0.1:$PORT/v1
  LOC=projects/bench/locations/global
  KEY=$LOC/keyRings/r/cryptoKeys/k
  api POST "$LOC/keyRings?keyRingId=r" '{}'
  api POST "$LOC/keyRings/r/cryptoKeys?cryptoKeyId=k" '{"purpose":"ENCRYPT_DECRYPT"}'
  local agent
  agent=$(curl -sf -H "$AUTH" -X POST "http://127.0.0.1:$PORT/v1beta1/projects/bench/services/store.keyhold.dev:generateServiceIdentity" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["response"]["email"])')
  api POST "$KEY:setIamPolicy" "{\"policy\":{\"bindings\":[{\"role\":\"roles/cloudkms.cryptoKeyEncrypterDecrypter\",\"members\":[\"serviceAccount:$agent\"]}]}}"
}

api() { # method path [json body]
  curl -sf -H "$AUTH" -H 'Content-Type: application/json' -X "$1" "$V1/$2" ${3:+-d "$3"} >/dev/null ||
    { echo "bench/store.sh: $1 $2 failed" >&2; exit 1; }
}

instance() { # id [kms key]
  if [ -n "${2:-}" ]; then api POST "$LOC/instances?instanceId=$1" "{\"kmsKey\":\"$2\"}"; else api POST "$LOC/instances?instanceId=$1" '{}'; fi
}

put_stream() { # instance object size -> seconds
  head -c "$3" /dev/zero | curl -sf -o /dev/null -w '%{time_total}' -H "$AUTH" -T - "$V1/$LOC/instances/$1/objects/$2"
}

peak_rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$PID/status"; }

# wrk prints "Requests/sec: N"; a run's MB/s is that times the object size.
wrk_rps() { # threads conns script url
  wrk -t"$1" -c"$2" -d"$DURATION" -s "$3" "$4" | awk '/Requests\/sec/ {print $2}'
}

echo "== machine: $(nproc) cores, $(uname -r); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $DURATION per wrk scenario"

if [[ " $PARTS " == *" load "* ]]; then
  start_server
  instance plain
  instance cmek "$KEY"
  echo
  echo "### PUT / GET throughput"
  echo
  echo "| scenario | service-managed req/s | MB/s | CMEK req/s | MB/s | CMEK / service-managed |"
  echo "|---|---|---|---|---|---|"
  for scenario in put-4k-c1 put-4k-c16 get-4k-c1 get-4k-c16 put-16m-c1 put-16m-c4 get-16m-c1 get-16m-c4; do
    IFS=- read -r op size conns <<<"$scenario"
    bytes=$([ "$size" = 4k ] && echo 4096 || echo 16777216)
    conns=${conns#c}; threads=$([ "$conns" = 1 ] && echo 1 || echo 2)
    declare -A rps=([plain]=0 [cmek]=0)
    # Rounds alternate the order (plain, cmek, cmek, plain, ...) so drift cancels out.
    for round in $(seq "$ROUNDS"); do
      order=$([ $((round % 2)) = 1 ] && echo "plain cmek" || echo "cmek plain")
      for enc in $order; do
        base="$V1/$LOC/instances/$enc/objects/"
        if [ "$op" = put ]; then
          naming=$([ "$size" = 4k ] && echo unique || echo overwrite)
          r=$(OBJECT_SIZE=$bytes OBJECT_BASE="$base" OBJECT_NAMING=$naming wrk_rps "$threads" "$conns" bench/store-put.lua "$base")
        else
          [ "$round" = 1 ] && head -c "$bytes" /dev/urandom | curl -sf -o /dev/null -H "$AUTH" -T - "${base}read-$size"
          r=$(wrk_rps "$threads" "$conns" bench/store-get.lua "${base}read-$size?alt=media")
        fi
        rps[$enc]=$(awk -v a="${rps[$enc]}" -v b="$r" -v n="$ROUNDS" 'BEGIN {print a + b / n}')
      done
    done
    awk -v s="$scenario" -v b="$bytes" -v p="${rps[plain]}" -v c="${rps[cmek]}" \
      'BEGIN {printf "| %s | %.1f | %.1f | %.1f | %.1f | %.3f |\n", s, p, p*b/1e6, c, c*b/1e6, c/p}'
  done
fi

if [[ " $PARTS " == *" rewrap "* ]]; then
  start_server
  echo
  echo "### :rewrap and :reencrypt after a rotation"
  echo
  echo "| data in the instance | upload s | :rewrap s | :reencrypt s |"
  echo "|---|---|---|---|"
  version=1
  for size in 10MB 1GB; do
    id=rw-${size,,}
    instance "$id" "$KEY"
    bytes=$([ "$size" = 10MB ] && echo 10000000 || echo 1000000000)
    up=$(put_stream "$id" data "$bytes")
    version=$((version + 1))
    api POST "$KEY/cryptoKeyVersions" '{}'
    api POST "$KEY:updatePrimaryVersion" "{\"cryptoKeyVersionId\":\"$version\"}"
    rewrap=$(curl -sf -o /dev/null -w '%{time_total}' -H "$AUTH" -X POST "$V1/$LOC/instances/$id:rewrap" -d '')
    reencrypt=$(curl -sf -o /dev/null -w '%{time_total}' -H "$AUTH" -X POST "$V1/$LOC/instances/$id:reencrypt" -d '')
    echo "| $size | $up | $rewrap | $reencrypt |"
  done
fi

if [[ " $PARTS " == *" stream "* ]]; then
  start_server
  instance big "$KEY"
  before=$(peak_rss_kib)
  up=$(put_stream big huge "$BIG")
  after_put=$(peak_rss_kib)
  down=$(curl -sf -o /dev/null -w '%{time_total}' -H "$AUTH" "$V1/$LOC/instances/big/objects/huge?alt=media")
  after_get=$(peak_rss_kib)
  bytes=$(numfmt --from=iec "$BIG")
  echo
  echo "### One $BIG object, streamed (CMEK instance)"
  echo
  echo "| | seconds | MB/s | server peak RSS (VmHWM) |"
  echo "|---|---|---|---|"
  echo "| after start-up | | | $((before / 1024)) MiB |"
  awk -v t="$up" -v b="$bytes" -v r="$after_put" 'BEGIN {printf "| PUT | %.1f | %.0f | %d MiB |\n", t, b/t/1e6, r/1024}'
  awk -v t="$down" -v b="$bytes" -v r="$after_get" 'BEGIN {printf "| GET | %.1f | %.0f | %d MiB |\n", t, b/t/1e6, r/1024}'
fi

if [[ " $PARTS " == *" copies "* ]]; then
  start_server
  instance src "$KEY"
  bytes=$(numfmt --from=iec "$COPY_SIZE")
  part=$((bytes / 16))
  COPY_SRC=$(mktemp); COPY_DST=$(mktemp)
  head -c "$bytes" /dev/urandom >"$COPY_SRC"
  for i in $(seq 0 15); do
    dd if="$COPY_SRC" bs=1M iflag=skip_bytes,count_bytes skip=$((i * part)) count="$part" status=none |
      curl -sf -o /dev/null -H "$AUTH" -T - "$V1/$LOC/instances/src/objects/part-$i"
  done
  timed() { # method path body -> seconds
    curl -sf -o /dev/null -w '%{time_total}' -H "$AUTH" -H 'Content-Type: application/json' -X "$1" "$V1/$2" -d "$3" ||
      { echo "bench/store.sh: $1 $2 failed" >&2; exit 1; }
  }
  copy_s() { # a plain copy of the same bytes, synced to disk like the database's commits
    local t0 t1
    t0=$(date +%s.%N)
    dd if="$COPY_SRC" of="$COPY_DST" bs=1M conv=fsync status=none
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}'
  }
  file1=$(copy_s)
  backup=$(timed POST "$LOC/instances/src/backups?backupId=b1" '{}')
  restore=$(timed POST "$LOC/instances:restore" "{\"instanceId\":\"restored\",\"backup\":\"$LOC/instances/src/backups/b1\"}")
  clone=$(timed POST "$LOC/instances/src:clone" '{"destinationInstanceId":"cloned"}')
  export_s=$(timed POST "$LOC/instances/src:export" '{"destination":"bench.archive"}')
  import_s=$(timed POST "$LOC/instances:import" '{"instanceId":"imported","source":"bench.archive","kmsKey":"'"$KEY"'"}')
  file2=$(copy_s)
  file=$(awk -v a="$file1" -v b="$file2" 'BEGIN {print (a + b) / 2}')
  echo
  echo "### Copies of a $COPY_SIZE CMEK instance (16 objects), next to a file copy of the same bytes"
  echo
  echo "| operation | seconds | MB/s | MB/s relative to the file copy |"
  echo "|---|---|---|---|"
  row() { awk -v n="$1" -v t="$2" -v b="$bytes" -v f="$file" 'BEGIN {printf "| %s | %.2f | %.0f | %.2f |\n", n, t, b/t/1e6, f/t}'; }
  row "file copy (dd conv=fsync; mean of one before, one after)" "$file"
  row "backup" "$backup"
  row "restore (into a new instance)" "$restore"
  row "clone" "$clone"
  row "export (archive file)" "$export_s"
  row "import (into a new instance)" "$import_s"
fi
