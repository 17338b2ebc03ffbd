# Sourced by the bench/*.sh scripts: the tools they need and, for the :encrypt load scripts
# (load.sh, cpu.sh, callgrind.sh), a server on a free loopback port with a SOFTWARE key.
#
#   need_tools wrk softhsm2-util:softhsm2   # command[:Debian package]; installs what is missing
#   start_encrypt_server BIN [serve flags...]
#       WRAP="valgrind ..." prefixes the server's command line. TLS=1 serves HTTPS with a
#       development certificate (`keyhold tls dev-certs`); HEALTH and ENC are then https URLs.
#       Sets PORT, PID, DATA, KEYHOLD_TOKEN (exported), HEALTH (URL) and ENC (the :encrypt URL
#       of key projects/bench/locations/global/keyRings/r/cryptoKeys/k); stops the server and
#       deletes DATA on exit, with every other server it started and whatever the script put
#       in BENCH_PIDS (processes) and BENCH_DIRS (directories): a script running several
#       servers leaks none of them when one fails to start.

need_tools() {
  local missing=() tool
  # /usr/sbin too: nginx lives there, outside a normal user's PATH.
  for tool in "$@"; do PATH="$PATH:/usr/sbin:/sbin" command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "== installing ${missing[*]} (Debian packages)" >&2
  local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  # No package may start its system service (nginx would take port 80; the suite runs its own):
  # a policy-rc.d refuses every start while apt-get runs, unless the machine has one already.
  local rcd=/usr/sbin/policy-rc.d ours="" rc=0
  if [ ! -e $rcd ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee $rcd >/dev/null && $sudo chmod 755 $rcd && ours=1
  fi
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null || rc=$?
  [ -z "$ours" ] || $sudo rm -f $rcd
  return $rc
}

# A free port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

BENCH_PIDS=()
BENCH_DIRS=()
bench_cleanup() {
  [ ${#BENCH_PIDS[@]} -eq 0 ] || kill "${BENCH_PIDS[@]}" 2>/dev/null || true
  [ ${#BENCH_DIRS[@]} -eq 0 ] || rm -rf "${BENCH_DIRS[@]}"
}

start_encrypt_server() {
  local bin=$1; shift
  trap bench_cleanup EXIT
  PORT=$(free_port)
  DATA=$(mktemp -d ${BENCH_TMP:+-p $BENCH_TMP})
  BENCH_DIRS+=("$DATA")
  local scheme=http tls_flags=() curl_tls=()
  if [ "${TLS:-0}" = 1 ]; then
    "$bin" tls dev-certs --out "$DATA/tls" >/dev/null
    scheme=https
    tls_flags=(--tls-cert-file "$DATA/tls/server.pem" --tls-key-file "$DATA/tls/server.key")
    curl_tls=(--cacert "$DATA/tls/ca.pem")
  fi
  # shellcheck disable=SC2086  # WRAP is a command line
  KEYHOLD_LOG=warn ${WRAP:-} "$bin" serve "$@" "${tls_flags[@]}" --data-dir "$DATA/data" --listen 127.0.0.1:$PORT 2>/dev/null &
  PID=$!
  BENCH_PIDS+=("$PID")
  HEALTH=$scheme://127.0.0.1:$PORT/healthz
  # Under valgrind the server takes seconds to answer.
  for _ in $(seq 300); do curl -sf "${curl_tls[@]}" "$HEALTH" >/dev/null && break; sleep 0.1; done
  export KEYHOLD_TOKEN; KEYHOLD_TOKEN=$(cat "$DATA/data/owner.token")
  local rings=$scheme://127.0.0.1:$PORT/v1/projects/bench/locations/global/keyRings
  local auth="Authorization: Bearer $KEYHOLD_TOKEN"
  curl -sf "${curl_tls[@]}" -H "$auth" -X POST "$rings?keyRingId=r" -d '' >/dev/null
  curl -sf "${curl_tls[@]}" -H "$auth" -X POST "$rings/r/cryptoKeys?cryptoKeyId=k" -d '{"purpose":"ENCRYPT_DECRYPT"}' >/dev/null
  ENC="$rings/r/cryptoKeys/k:encrypt"
}
