#!/usr/bin/env bash
# The benchmark (make bench): installs what it needs when missing (scripts/deps.sh
# test: node packages, nginx with nchan, gnuplot), builds the release binaries
# (agentwire, bench/aw-loadgen, aw-agentload, aw-agentexec), then runs the
# benchmarks and writes docs/benchmarks.md.
#
# With no option (the full run, about an hour on two cores): the agent-shaped
# load (bench/agents.mjs), the cluster on Redis against Socket.IO's and nchan's
# (bench/cluster.mjs) and durable history against memory mode
# (bench/durable.mjs) each write their section to bench/results/*.md, then
# bench/run.mjs runs scenarios l and a-f and writes the page with all of them.
# Any benchmark that fails (a lost, duplicated or misrouted event, a setup that
# does not start) makes the exit status 1; the others still run.
#
# With options, only bench/run.mjs runs, with them:
#   scripts/bench.sh [--smoke] [--only agentwire,nchan,ws,socketio] [--scenarios l,a,...] [--repeat N] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
scripts/build.sh release
if [ $# -gt 0 ]; then
  exec node bench/run.mjs "$@"
fi
mkdir -p bench/results
status=0
for b in agents cluster durable; do
  echo "== node bench/$b.mjs --md bench/results/$b.md"
  rm -f "bench/results/$b.md"
  node "bench/$b.mjs" --md "bench/results/$b.md" || { echo "bench/$b.mjs failed" >&2; status=1; }
  echo
done
echo "== node bench/run.mjs"
node bench/run.mjs || status=1
exit $status
