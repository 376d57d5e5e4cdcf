#!/usr/bin/env bash
# The benchmark (make bench): installs what it needs when missing (scripts/deps.sh
# test: node packages, nginx with nchan, gnuplot), builds the release binaries
# (agentwire and bench/aw-loadgen), then runs bench/run.mjs; a full run (no
# option given) then runs the durable scenario, bench/durable.mjs (--data-dir
# against memory mode for each --fsync, and start-up with 1,000,000 events).
#   scripts/bench.sh [--smoke] [--only agentwire,nchan,ws,socketio] [--scenarios a,...] [--repeat N] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
scripts/build.sh release
node bench/run.mjs "$@"
if [ $# -eq 0 ]; then
  echo
  node bench/durable.mjs
fi
