#!/usr/bin/env bash
# Runs the Python SDK's tests (clients/python/tests) against the real server:
# build/agentwire, or $AGENTWIRE_BIN. Uses Debian's /usr/bin/python3 with its
# packages (httpx, websockets, aiohttp, pytest); nothing is installed.
#   clients/python/run-tests.sh [pytest arguments...]
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONDONTWRITEBYTECODE=1   # leave no __pycache__ in the checkout
bin=${AGENTWIRE_BIN:-$PWD/build/agentwire}
if [ ! -x "$bin" ]; then
  echo "agentwire binary not found at $bin (scripts/build.sh release, or set AGENTWIRE_BIN)" >&2
  exit 1
fi
export AGENTWIRE_BIN="$bin"
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider clients/python/tests "$@"
