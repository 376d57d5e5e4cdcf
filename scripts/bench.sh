#!/usr/bin/env bash
# The benchmark (make bench): installs what it needs when missing (scripts/deps.sh
# test: node packages, nginx with nchan, gnuplot), builds the release binaries
# (agentwire and bench/aw-loadgen), then runs bench/run.mjs.
#   scripts/bench.sh [--smoke] [--only agentwire,nchan,ws,socketio] [--scenarios a,...] [--repeat N] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
scripts/build.sh release
exec node bench/run.mjs "$@"
