#!/usr/bin/env bash
# What a normal client sees (p50/p99 of GET /healthz and :encrypt) while 2,000 idle connections
# and 200 slow clients (a header byte a second) are held, next to the same client on an idle
# server in the same run (issue 15, finding 3). Loopback only; stops by itself (at most 10 min).
#
#   bench/slow-clients.sh                         # defaults: --idle 2000 --slow 200
#   bench/slow-clients.sh --idle 4000 -- --max-connections 1000   # beyond the cap: eviction
#
# Extra `keyhold serve` flags go after `--`. Results: docs/operations.md, "Limits on a public
# listener".
set -euo pipefail
cd "$(dirname "$0")/.."
# The held clients and the server each need a descriptor per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 16384 2>/dev/null || true
[ -n "${KEYHOLD_BIN:-}" ] || { cargo build --release -p keyhold -q; KEYHOLD_BIN=target/release/keyhold; }
exec timeout 600 python3 bench/slow_clients.py --bin "$KEYHOLD_BIN" "$@"
