#!/usr/bin/env bash
# Builds agentwire. scripts/build.sh [release|asan] -> build/ or build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-release}
if [ "$kind" = asan ]; then
  dir=build-asan
  flags=(-DCMAKE_BUILD_TYPE=Debug -DAW_SANITIZE=ON)
else
  dir=build
  flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
fi
cmake -S . -B "$dir" "${flags[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)" -- --no-print-directory >/dev/null
echo "built $dir/agentwire"
