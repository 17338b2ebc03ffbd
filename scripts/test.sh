#!/usr/bin/env bash
# Keyhold's one command for "run all the tests". Runnable from any directory; CI runs it
# through .ci/run in a fresh clone.
#
#   scripts/test.sh                      everything: lint gates, Rust (SQLite + PostgreSQL), Python,
#                                        Node.js
#   scripts/test.sh lint                 only the lint gates (rustfmt, clippy, cargo deny)
#   scripts/test.sh rust                 only the Rust workspace tests (with PostgreSQL)
#   scripts/test.sh python               only the official-client tests in tests/python
#   scripts/test.sh node                 only the official-client tests in tests/node
#   scripts/test.sh with-postgres CMD..  run CMD with a throwaway PostgreSQL and
#                                        KEYHOLD_TEST_POSTGRES_URL set, e.g.
#                                        scripts/test.sh with-postgres cargo test -p keyhold-sql
#
# What it does:
#   0. the lint gates, each on its own (docs/development.md), after the packages of step 1:
#        scripts/check-layers.py                     (the crate layers of docs/architecture.md)
#        cargo fmt --all --check
#        cargo clippy --workspace --all-targets -- -D warnings
#        cargo deny check licenses bans sources      (deny.toml; cargo-deny is installed if missing)
#      `cargo deny check advisories` needs the RustSec database from the network and is not run;
#   1. installs missing Debian packages (PostgreSQL server, SoftHSM2, OpenSC, Python venv
#      support, Node.js and npm, wrk, h2load, openssl, nginx), starting none of their system services
#      (a policy-rc.d refuses them during the install; the tests run their own PostgreSQL and
#      the benchmark suite its own nginx);
#   2. starts a throwaway PostgreSQL cluster on a free loopback port in a temp dir and exports
#      KEYHOLD_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:PORT/keyhold_test (tests create
#      their own fresh databases from it); it is stopped and deleted on exit. If
#      KEYHOLD_TEST_POSTGRES_URL is already set, that server is used instead;
#   3. runs the Rust tests: cargo nextest (plus doc tests) when installed, else cargo test;
#   3b. runs the crash test briefly (scripts/crash-test.sh: kill -9 under load, SQLite and
#      PostgreSQL; nothing acknowledged may be lost);
#   4. runs the benchmark scripts' unit tests (bench/test_*.py), then the suite in smoke mode
#      (bench/suite.py --smoke: every scenario for about a second on the debug build, checking
#      that each yields numbers; never a speed);
#   5. builds target/debug/keyhold, prepares .venv with google-cloud-kms and pytest, and runs
#      tests/python against a real `keyhold serve` process: Google's Python client over REST,
#      gRPC in clear and gRPC over TLS (its default transport, trusting a dev CA);
#   6. installs tests/node's locked packages (`npm ci`: @google-cloud/kms 6.x and
#      google-auth-library, into tests/node/node_modules) and runs tests/node (`node --test`)
#      against a real `keyhold serve` process, the same workflow through Google's Node.js client
#      over REST and over gRPC (in clear and over TLS). @google-cloud/kms 6.x declares Node.js >= 22; npm only warns on an older one,
#      and the tests pass on Node.js 20.
# Every section runs even when an earlier one failed; the exit code is non-zero if any failed.
# Steps 3b to 6 run the binary step 3 compiled (one debug build of the workspace, not two).
# With CI=true, incremental compilation is off and debug info is line tables only.

set -euo pipefail

# CI builds once, in a fresh clone: incremental caches (half of target/) and full debug info
# would only fill its disk. Line tables keep file:line in panics and backtraces.
if [ "${CI:-}" = true ]; then
    export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=line-tables-only
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

section() { printf '\n========== %s ==========\n' "$*"; }
note() { printf -- '--- %s\n' "$*"; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi

# slh-dsa (imported as slhdsa): an independent FIPS 205 verifier for Keyhold's SLH-DSA signatures
# (pyca/cryptography has none yet)
PYTHON_PACKAGES=(google-cloud-kms google-crc32c pytest cryptography slh-dsa)

# ------------------------------------------------------------------------------------------
# 1. System packages
# ------------------------------------------------------------------------------------------

# The newest PostgreSQL server's bin directory (/usr/lib/postgresql/<major>/bin), or nothing.
pg_bindir() {
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
        printf '%s\n' "$dir"
    fi
}

# Debian's packages start their system service when installed (nginx on port 80, PostgreSQL
# on 5432). None is wanted: the tests start their own PostgreSQL, the suite its own nginx. While
# apt-get runs, a /usr/sbin/policy-rc.d refuses every start (invoke-rc.d and deb-systemd-invoke
# ask it), unless the machine already has one (containers usually do), which is left alone.
# On a machine booted with systemd the new services stay enabled for the next boot
# (`sudo systemctl disable nginx` if that is unwanted).
POLICY_RC_D=/usr/sbin/policy-rc.d
POLICY_RC_D_OURS=""

no_service_starts() {
    [ -e "$POLICY_RC_D" ] && return 0
    printf '#!/bin/sh\n# scripts/test.sh: no service starts while it installs packages\nexit 101\n' |
        "${SUDO[@]}" tee "$POLICY_RC_D" >/dev/null && "${SUDO[@]}" chmod 755 "$POLICY_RC_D" && POLICY_RC_D_OURS=1
}

allow_service_starts() {
    if [ -n "$POLICY_RC_D_OURS" ]; then
        "${SUDO[@]}" rm -f "$POLICY_RC_D"
        POLICY_RC_D_OURS=""
    fi
}

install_packages() {
    local missing=()
    [ -n "$(pg_bindir)" ] || missing+=(postgresql)
    if ! command -v softhsm2-util >/dev/null 2>&1; then missing+=(softhsm2); fi
    # pkcs11-tool: the HSM tests look into the token with it, as an operator would.
    if ! command -v pkcs11-tool >/dev/null 2>&1; then missing+=(opensc); fi
    # The benchmark suite's smoke run: wrk for HTTP load, h2load (nghttp2-client) for one
    # connection's latencies, openssl for the AES-GCM baseline.
    if ! command -v wrk >/dev/null 2>&1; then missing+=(wrk); fi
    if ! command -v h2load >/dev/null 2>&1; then missing+=(nghttp2-client); fi
    if ! command -v openssl >/dev/null 2>&1; then missing+=(openssl); fi
    # nginx: the suite's fixed-answer baseline, run as its own process on a free port.
    if ! PATH="$PATH:/usr/sbin:/sbin" command -v nginx >/dev/null 2>&1; then missing+=(nginx); fi
    if ! command -v python3 >/dev/null 2>&1; then
        missing+=(python3 python3-venv)
    elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        missing+=(python3-venv)
    fi
    # The Node.js official-client tests (tests/node): node and npm.
    if ! command -v node >/dev/null 2>&1; then
        missing+=(nodejs)
        command -v npm >/dev/null 2>&1 || missing+=(npm)
    elif ! command -v npm >/dev/null 2>&1; then
        missing+=(npm)
    fi
    if [ "${#missing[@]}" -eq 0 ]; then
        note "system packages present (PostgreSQL in $(pg_bindir), softhsm2, opensc, python3, node $(node --version), wrk, h2load, openssl, nginx)"
        return
    fi
    note "installing: ${missing[*]}"
    local log
    log="$(mktemp "${TMPDIR:-/tmp}/keyhold-apt.XXXXXX")"
    no_service_starts
    if ! { "${SUDO[@]}" apt-get update -qq &&
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >"$log" 2>&1; then
        allow_service_starts
        cat "$log" >&2
        rm -f "$log"
        die "apt-get install ${missing[*]} failed"
    fi
    allow_service_starts
    rm -f "$log"
    [ -n "$(pg_bindir)" ] || die "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin after install"
}

# ------------------------------------------------------------------------------------------
# 2. Throwaway PostgreSQL
# ------------------------------------------------------------------------------------------

PG_TMP=""
PG_DATA=""
PG_BIN=""

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Runs a PostgreSQL program as the cluster's owner: user postgres when we are root
# (PostgreSQL refuses to run as root), else ourselves.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

stop_postgres() {
    if [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [ -n "$PG_TMP" ]; then
        rm -rf "$PG_TMP"
    fi
    PG_TMP=""
    PG_DATA=""
}

start_postgres() {
    if [ -n "${KEYHOLD_TEST_POSTGRES_URL:-}" ]; then
        note "using the PostgreSQL already given in KEYHOLD_TEST_POSTGRES_URL"
        return
    fi
    PG_BIN="$(pg_bindir)"
    [ -n "$PG_BIN" ] || die "no PostgreSQL server under /usr/lib/postgresql/*/bin"
    if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
        die "user postgres does not exist (the postgresql package creates it)"
    fi

    PG_TMP="$(mktemp -d "${TMPDIR:-/tmp}/keyhold-pg.XXXXXX")"
    PG_DATA="$PG_TMP/data"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$PG_TMP"; fi
    chmod 700 "$PG_TMP"

    note "initdb ($PG_BIN) in $PG_DATA"
    if ! as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C --no-sync \
        >"$PG_TMP/initdb.log" 2>&1; then
        cat "$PG_TMP/initdb.log" >&2
        die "initdb failed"
    fi

    local attempt port=""
    for attempt in 1 2 3; do
        port="$(free_port)"
        if as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_TMP/postgres.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$PG_DATA -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
            start >/dev/null; then
            break
        fi
        note "PostgreSQL did not start on port $port (attempt $attempt)"
        port=""
    done
    if [ -z "$port" ]; then
        cat "$PG_TMP/postgres.log" >&2 || true
        die "could not start PostgreSQL"
    fi

    as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt \
        -c 'CREATE DATABASE keyhold_test' >/dev/null
    export KEYHOLD_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/keyhold_test"
    note "PostgreSQL $("$PG_BIN/postgres" --version | sed -n 's/.*(PostgreSQL) \([^ ]*\).*/\1/p') on 127.0.0.1:$port; KEYHOLD_TEST_POSTGRES_URL=$KEYHOLD_TEST_POSTGRES_URL"
}

on_exit() {
    local rc=$?
    allow_service_starts
    stop_postgres
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------------------------------
# 0. Lint gates
# ------------------------------------------------------------------------------------------

# The cargo-deny release `cargo install` builds when none is installed (deny.toml is written
# for it).
CARGO_DENY_VERSION=0.20.2

lint_fmt() {
    note "cargo fmt --all --check"
    cargo fmt --all --check || {
        note "run 'cargo fmt --all' to fix"
        return 1
    }
}

lint_clippy() {
    note "cargo clippy --workspace --all-targets -- -D warnings"
    cargo clippy --workspace --all-targets -- -D warnings
}

lint_deny() {
    if ! cargo deny --version >/dev/null 2>&1; then
        note "cargo install --locked cargo-deny@$CARGO_DENY_VERSION (not installed; a few minutes, once)"
        cargo install --locked --quiet "cargo-deny@$CARGO_DENY_VERSION" || return 1
    fi
    note "cargo deny check licenses bans sources ($(cargo deny --version))"
    cargo deny --log-level warn check licenses bans sources
}

run_lint() {
    local failed_gates=()
    note "scripts/check-layers.py (the crate layers of docs/architecture.md)"
    python3 "$ROOT/scripts/check-layers.py" || failed_gates+=(layers)
    lint_fmt || failed_gates+=(rustfmt)
    lint_clippy || failed_gates+=(clippy)
    lint_deny || failed_gates+=("cargo deny")
    if [ "${#failed_gates[@]}" -gt 0 ]; then
        note "failed: ${failed_gates[*]}"
        return 1
    fi
}

# ------------------------------------------------------------------------------------------
# 3. Rust
# ------------------------------------------------------------------------------------------

# Builds target/debug/keyhold for the sections that run a real server and prints its absolute
# path. In a full run it comes out of the Rust tests' own build: `cargo test --no-run` is what
# nextest compiles, so it is a no-op there. `cargo build -p keyhold` would resolve features
# without the dev-dependencies (tokio's test-util, ...) and compile some 65 crates a second
# time, with the whole workspace, doubling target/ (a CI run ran out of disk that way).
debug_binary() {
    if [ "$mode" = all ] || [ "$mode" = rust ]; then
        note "cargo test --workspace --no-run (the Rust tests' build, with target/debug/keyhold)" >&2
        # A test target that does not compile (the Rust tests fail for it) must not keep the
        # later sections from the binary: then it is built on its own.
        if ! cargo test -q --workspace --no-run >&2; then
            note "cargo build -p keyhold (the tests' build failed)" >&2
            cargo build -q -p keyhold >&2 || return 1
        fi
    else
        note "cargo build -p keyhold" >&2
        cargo build -q -p keyhold >&2 || return 1
    fi
    local bin="${CARGO_TARGET_DIR:-$ROOT/target}/debug/keyhold"
    case "$bin" in /*) ;; *) bin="$ROOT/$bin" ;; esac
    printf '%s\n' "$bin"
}

run_rust_tests() {
    if cargo nextest --version >/dev/null 2>&1; then
        note "cargo nextest run --workspace --no-fail-fast"
        local rc=0
        cargo nextest run --workspace --no-fail-fast || rc=$?
        # nextest does not run doc tests.
        note "cargo test --workspace --doc"
        cargo test --workspace --doc || rc=$?
        return "$rc"
    else
        note "cargo test --workspace --no-fail-fast (cargo-nextest not installed)"
        cargo test --workspace --no-fail-fast
    fi
}

# ------------------------------------------------------------------------------------------
# 4. Python: the official client against a real server
# ------------------------------------------------------------------------------------------

VENV="$ROOT/.venv"

prepare_venv() {
    if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        # Missing, or left broken by a Python that is gone: (re)create it.
        note "creating $VENV"
        python3 -m venv --clear "$VENV"
    fi
    if "$VENV/bin/python" -c 'import google.cloud.kms_v1, google_crc32c, pytest, cryptography, slhdsa' >/dev/null 2>&1; then
        note "python packages already installed in .venv"
    else
        note "pip install ${PYTHON_PACKAGES[*]}"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PYTHON_PACKAGES[@]}"
    fi
}

run_python_tests() {
    local bin
    bin="$(debug_binary)" || return 1
    # The README's first command is `cargo run --release -- serve` at the workspace root: it
    # must find exactly one binary to run (a second one in any crate breaks it). Read from the
    # workspace's metadata: `cargo run` itself would compile the binary's dependencies once more
    # (see debug_binary).
    note "the workspace has exactly one binary, keyhold (the README's cargo run finds it)"
    cargo metadata -q --no-deps --format-version 1 | python3 -c '
import json, sys
bins = [t["name"] for p in json.load(sys.stdin)["packages"] for t in p["targets"] if "bin" in t["kind"]]
sys.exit(0 if bins == ["keyhold"] else f"binaries in the workspace: {bins}; `cargo run` needs exactly one")
' || return 1
    prepare_venv || return 1
    note "pytest tests/python (KEYHOLD_BIN=$bin)"
    KEYHOLD_BIN="$bin" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/python
}

# ------------------------------------------------------------------------------------------
# 6. Node.js: the official client against a real server
# ------------------------------------------------------------------------------------------

NODE_DIR="$ROOT/tests/node"

run_node_tests() {
    local bin
    bin="$(debug_binary)" || return 1
    # Exactly the locked versions (tests/node/package-lock.json), into tests/node/node_modules.
    note "npm ci (tests/node, node $(node --version), npm $(npm --version))"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error) || return 1
    note "node --test tests/node (KEYHOLD_BIN=$bin)"
    (cd "$NODE_DIR" && KEYHOLD_BIN="$bin" node --test --test-reporter=spec)
}

# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------

mode="${1:-all}"
case "$mode" in
    all | rust | python | node) ;;
    lint)
        # The layer check is a Python script; a fresh machine may have no Python yet.
        if ! command -v python3 >/dev/null 2>&1; then
            section "Setup: system packages"
            install_packages
        fi
        section "Lint: crate layers, rustfmt, clippy, cargo deny"
        start=$SECONDS
        rc=0
        run_lint || rc=$?
        note "lint took $((SECONDS - start)) s"
        exit "$rc"
        ;;
    with-postgres)
        shift
        [ "$#" -gt 0 ] || die "usage: scripts/test.sh with-postgres COMMAND [ARGS...]"
        section "Setup: system packages"
        install_packages
        section "Setup: PostgreSQL"
        start_postgres
        section "Running: $*"
        rc=0
        "$@" || rc=$?
        exit "$rc"
        ;;
    -h | --help)
        sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown mode '$mode' (expected: all, lint, rust, python, node, with-postgres CMD...)" ;;
esac

failed=()

section "Setup: system packages"
install_packages

if [ "$mode" = all ]; then
    section "Lint: crate layers, rustfmt, clippy, cargo deny"
    lint_start=$SECONDS
    if run_lint; then note "lint gates passed"; else failed+=("Lint"); fi
    note "lint took $((SECONDS - lint_start)) s"
fi

if [ "$mode" = all ] || [ "$mode" = rust ]; then
    section "Setup: PostgreSQL"
    start_postgres

    section "Rust tests"
    if run_rust_tests; then note "Rust tests passed"; else failed+=("Rust tests"); fi

    section "Crash test: kill -9 under 32-way mixed load, 3 rounds on SQLite, 2 on PostgreSQL, 2 with the audit journal"
    # scripts/crash-test.sh (docs/operations.md, "Fuzzing and the crash test"): every
    # acknowledged key, version, ciphertext, policy and object must survive each kill, no
    # object may be torn, and the audit chain must verify. The fuzz targets' bounded run is
    # part of the Rust tests above (crates/keyhold-fuzz).
    crash_ok=true
    if KEYHOLD_BIN="$(debug_binary)"; then
        export KEYHOLD_BIN
        scripts/crash-test.sh --rounds 3 --backend sqlite || crash_ok=false
        scripts/crash-test.sh --rounds 2 --backend postgres || crash_ok=false
        # The same with the audit journal (--audit-sync): acknowledged entries survive the kill.
        scripts/crash-test.sh --rounds 2 --backend both --audit-sync 100ms || crash_ok=false
    else
        crash_ok=false
    fi
    if "$crash_ok"; then note "crash test passed: nothing acknowledged was lost"; else failed+=("Crash test"); fi

    section "Benchmark suite, smoke mode (every scenario runs and yields numbers; no speed is asserted)"
    # The suite's own arithmetic (plots, ratio statistics) is unit-tested first.
    if python3 -m unittest discover -s bench -p 'test_*.py' && bench_bin="$(debug_binary)" \
        && python3 bench/suite.py --smoke --binary "$bench_bin"; then
        note "benchmark smoke run passed"
    else
        failed+=("Benchmark smoke run")
    fi

    section "Teardown: PostgreSQL"
    stop_postgres
    note "stopped"
fi

if [ "$mode" = all ] || [ "$mode" = python ]; then
    section "Python tests: official google-cloud-kms client"
    if run_python_tests; then note "Python tests passed"; else failed+=("Python tests"); fi
fi

if [ "$mode" = all ] || [ "$mode" = node ]; then
    section "Node.js tests: official @google-cloud/kms client"
    node_start=$SECONDS
    if run_node_tests; then note "Node.js tests passed"; else failed+=("Node.js tests"); fi
    note "Node.js tests took $((SECONDS - node_start)) s"
fi

section "Summary"
if [ "${#failed[@]}" -gt 0 ]; then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "All test suites passed."
