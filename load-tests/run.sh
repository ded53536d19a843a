#!/usr/bin/env bash
# The standard load-test set (the origin's test_runner.sh): builds, then runs the fan-out sweep,
# broadcast, ingest, compression on/off, idle memory, churn and (when the cluster roles exist) the
# cluster sweep, each against Switchboard and the baseline server (compression: uncompressed
# Switchboard) in the same run, and prints one table. With --peers, also the peers sweep:
# Switchboard standalone (binary and text clients) and cluster beside nats-server (one node and
# two routed) and Centrifugo (one node, and two with Redis), built first by peers/tools.sh.
#
#   load-tests/run.sh [extra options for `cli.js suite`]    e.g. --workers 2 --mode text, --peers
#
# Result: load-tests/results/suite-<time>.json (compare two with `npm run bench:compare`).
set -euo pipefail
cd "$(dirname "$0")/.."
npx tsc -p tsconfig.json >/dev/null || true   # type errors elsewhere in the tree must not stop a benchmark
test -f dist/load-tests/cli.js || { echo "build failed: dist/load-tests/cli.js missing" >&2; exit 1; }
case " $* " in *" --peers "*) bash load-tests/peers/tools.sh ;; esac
# 10,000 idle connections need 10,000 descriptors in the generator and 10,000 in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec node dist/load-tests/cli.js suite "$@"
