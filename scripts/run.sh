#!/usr/bin/env bash
# The README's first command: install what is missing, build, and start
# agentwire on its embedded default (development mode unless configured).
# Extra arguments go to agentwire, e.g. scripts/run.sh --listen 0.0.0.0:8080
# Users' streams are kept in var/data under the checkout (--data-dir), so the
# demo's history survives a restart, unless --data-dir or --redis is given
# (or AGENTWIRE_DATA_DIR, AGENTWIRE_REDIS).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
scripts/build.sh release
store=(--data-dir var/data)
for a in "$@"; do
  case "$a" in --data-dir | --data-dir=* | --redis | --redis=*) store=() ;; esac
done
if [ -n "${AGENTWIRE_DATA_DIR:-}${AGENTWIRE_REDIS:-}" ]; then store=(); fi
if [ ${#store[@]} -gt 0 ]; then mkdir -p var/data; fi
exec build/agentwire "${store[@]}" "$@"
