#!/usr/bin/env bash
# Runs every fuzz target of crates/keyhold-fuzz for longer than `cargo test` does (issue 15).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   each target for about SECONDS (default 60), in a
#                                           release build, on its seed corpus, mutations of the
#                                           seeds, arbitrary bytes and structured JSON
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
