#!/usr/bin/env bash
# The crash test (issue 15): rounds of `kill -9` of a real `keyhold serve` under 32-way mixed
# load (keys, versions, encrypts, IAM policies, object uploads), checking after every restart
# that each acknowledged operation is there and intact, no object is torn, and
# `keyhold audit verify` is clean (tests/crash/crash_run.py does the work).
#
#   scripts/crash-test.sh [--rounds N] [--backend sqlite|postgres|both] [--release]
#                         [--max-load SECONDS] [--audit-sync strict|INTERVAL]
#
# Defaults: 10 rounds on both backends, the debug binary, a kill 1 to 4 s into each round's
# load. KEYHOLD_BIN names a binary to use instead of building one (then --release does not
# choose the build: that binary is run). PostgreSQL: uses
# KEYHOLD_TEST_POSTGRES_URL when set (a fresh database is created from it), else starts a
# throwaway cluster through `scripts/test.sh with-postgres`.
# Exits non-zero if anything acknowledged was lost or torn, or the audit chain is broken.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

rounds=10
backend=both
profile=debug
extra=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --backend) backend="$2"; shift 2 ;;
        --release) profile=release; shift ;;
        --max-load) extra+=(--max-load "$2"); shift 2 ;;
        --audit-sync) extra+=(--audit-sync "$2"); shift 2 ;;
        -h | --help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "crash-test.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$backend" in sqlite | postgres | both) ;; *) echo "crash-test.sh: --backend sqlite|postgres|both" >&2; exit 2 ;; esac

if [ -n "${KEYHOLD_BIN:-}" ]; then
    # A binary already built (scripts/test.sh passes the one its Rust tests compiled).
    bin="$KEYHOLD_BIN"
else
    if [ "$profile" = release ]; then cargo build -q --release -p keyhold; else cargo build -q -p keyhold; fi
    bin="${CARGO_TARGET_DIR:-$ROOT/target}/$profile/keyhold"
    case "$bin" in /*) ;; *) bin="$ROOT/$bin" ;; esac
fi

run_postgres() {
    if [ -z "${KEYHOLD_TEST_POSTGRES_URL:-}" ]; then
        # Start a throwaway cluster and come back here with KEYHOLD_TEST_POSTGRES_URL set.
        local args=(--rounds "$rounds" --backend postgres)
        [ "$profile" = release ] && args+=(--release)
        scripts/test.sh with-postgres bash "$ROOT/scripts/crash-test.sh" "${args[@]}" "${extra[@]}"
        return
    fi
    # A fresh database per run, on the server KEYHOLD_TEST_POSTGRES_URL names.
    local db="keyhold_crash_$$_$RANDOM"
    psql "$KEYHOLD_TEST_POSTGRES_URL" -v ON_ERROR_STOP=1 -qAt -c "CREATE DATABASE $db" >/dev/null
    local url="${KEYHOLD_TEST_POSTGRES_URL%/*}/$db"
    local rc=0
    python3 tests/crash/crash_run.py --binary "$bin" --rounds "$rounds" --database "$url" "${extra[@]}" || rc=$?
    psql "$KEYHOLD_TEST_POSTGRES_URL" -qAt -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    return "$rc"
}

rc=0
if [ "$backend" != postgres ]; then
    python3 tests/crash/crash_run.py --binary "$bin" --rounds "$rounds" "${extra[@]}" || rc=1
fi
if [ "$backend" != sqlite ]; then
    run_postgres || rc=1
fi
exit "$rc"
