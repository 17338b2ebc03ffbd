#!/usr/bin/env bash
# Runs every fuzz target of crates/keyhold-fuzz for longer than `cargo test` does (issue 15).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   each target for about SECONDS (default 60), in the
#                                           debug build (overflow checks on), on its seed
#                                           corpus, mutations of the seeds, arbitrary bytes and
#                                           structured JSON (proptest)
#   scripts/fuzz.sh --afl TARGET [SECONDS]  coverage-guided: AFL++ (cargo-afl, installed from
#                                           crates.io if missing) on the same target function,
#                                           from its seed corpus, for SECONDS (default 600);
#                                           findings in target/afl/out/TARGET
#
# Targets (default: all): filter name route json_bodies wire_scalars page_token iam_member
# ciphertext sealed_key archive ekm_protocol ekm_blob ekm_config hsm_key_ref.
# A failure prints the shrunk input; fix the parser and keep the input as
# crates/keyhold-fuzz/corpus/<target>/regression-<what>. Prints inputs tried and run time per
# target, and their totals. The bounded run (256 cases per target) is part of every
# `cargo test` / `cargo nextest run --workspace`.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [ "${1:-}" = --afl ]; then
    name="${2:?usage: scripts/fuzz.sh --afl TARGET [SECONDS]}"
    seconds="${3:-600}"
    [ -d "crates/keyhold-fuzz/corpus/$name" ] || { echo "fuzz.sh: no target $name (crates/keyhold-fuzz/corpus/)" >&2; exit 2; }
    if ! cargo afl --version >/dev/null 2>&1; then
        cargo install --locked cargo-afl
    fi
    # Builds AFL++ and its LLVM runtime for this rustc once; "already built" is fine.
    cargo afl config --build >/dev/null 2>&1 || true
    # Its own target directory: instrumented artefacts must not replace the normal ones.
    export CARGO_TARGET_DIR="$ROOT/target/afl"
    cargo afl build -p keyhold-fuzz --features afl --example keyhold-fuzz-afl
    out="$CARGO_TARGET_DIR/out/$name"
    rm -rf "$out"
    mkdir -p "$CARGO_TARGET_DIR/out"
    AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 \
        cargo afl fuzz -V "$seconds" -i "crates/keyhold-fuzz/corpus/$name" -o "$out" \
        -- "$CARGO_TARGET_DIR/debug/examples/keyhold-fuzz-afl" "$name" >"$out.log" 2>&1 || { tail -30 "$out.log"; exit 1; }
    stats="$out/default/fuzzer_stats"
    echo "========== AFL++ on $name =========="
    grep -E '^(run_time|execs_done|execs_per_sec|corpus_count|edges_found|bitmap_cvg|saved_crashes|saved_hangs) ' "$stats"
    crashes="$(awk -F: '/^saved_crashes/ {gsub(/ /, "", $2); print $2}' "$stats")"
    if [ "${crashes:-0}" != 0 ]; then
        echo "FAILED: $crashes crashing inputs in $out/default/crashes/" >&2
        exit 1
    fi
    exit 0
fi

seconds="${1:-60}"
case "$seconds" in '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2 ;; esac
shift || true

log="$(mktemp "${TMPDIR:-/tmp}/keyhold-fuzz.XXXXXX")"
trap 'rm -f "$log"' EXIT
# The debug build: its overflow checks turn a silent wrap-around into a crash (the one the
# fuzzer found in archive.rs was one), and it needs no second build of the workspace.
status=0
KEYHOLD_FUZZ_SECONDS="$seconds" \
    cargo test -p keyhold-fuzz --test fuzz -- --nocapture --test-threads "$(nproc)" "$@" 2>&1 | tee "$log" || status=$?
echo
echo "========== fuzz summary (${seconds}s per target) =========="
[ "$status" -eq 0 ] || echo "FAILED: see the shrunk input above"
grep -a -E '^fuzz [a-z_]+: [0-9]+ inputs' "$log" | sort || true
grep -a -E '^fuzz [a-z_]+: [0-9]+ inputs' "$log" | awk '{n += $3; t += $6} END {printf "total: %d inputs, %.1f s of target time\n", n, t}'
exit "$status"
