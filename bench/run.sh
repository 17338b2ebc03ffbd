#!/usr/bin/env bash
# The benchmark suite (issue 7): every scenario next to its same-run baseline, written to
# docs/benchmarks.md (between the suite markers) and docs/benchmarks/*.svg.
#
#   bash bench/run.sh                    # everything, release build (about 20 minutes on 2 cores)
#   bash bench/run.sh --only kms,iam     # some scenarios: kms durability iam aead store rewrap enforcement startup stream fairness scale
#   SCALE_KEYS=100000 bash bench/run.sh --only scale   # the scale scenario over more keys (default 20,000; 200 in --smoke)
#   bash bench/run.sh --smoke            # seconds per scenario on the debug build; checks that every
#                                        # scenario runs and yields numbers (CI runs this); writes nothing
#
# It installs wrk, h2load (nghttp2-client: one connection's latencies), openssl and nginx
# (Debian packages; nginx is the kms and durability scenarios' fixed-answer baseline, which the
# suite starts itself on a free loopback port, never the system service) when missing, and runs
# bench/suite.py under `scripts/test.sh with-postgres` for the two-node PostgreSQL scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need_tools wrk h2load:nghttp2-client openssl nginx
if [[ " $* " == *" --smoke "* ]]; then
  cargo build -q -p keyhold
else
  cargo build -q --release -p keyhold
fi
if [ -n "${KEYHOLD_TEST_POSTGRES_URL:-}" ]; then
  exec python3 bench/suite.py "$@"
fi
exec bash scripts/test.sh with-postgres python3 bench/suite.py "$@"
