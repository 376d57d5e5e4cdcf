#!/usr/bin/env bash
# The README's first command: install what is missing, build, and start
# agentwire on its embedded default (development mode unless configured).
# Extra arguments go to agentwire, e.g. scripts/run.sh --listen 0.0.0.0:8080
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
scripts/build.sh release
exec build/agentwire "$@"
