#!/usr/bin/env bash
# Builds agentwire, warnings as errors.
#   scripts/build.sh [release|asan|tsan|plain] -> build/, build-asan/, build-tsan/ or build-plain/
# plain is CMake's own Release type (-O3), as a packager would build it.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-release}
if [ "$kind" = asan ]; then
  dir=build-asan
  flags=(-DCMAKE_BUILD_TYPE=Debug -DAW_SANITIZE=ON)
elif [ "$kind" = tsan ]; then
  # ThreadSanitizer, for the event loops' threads (--threads)
  dir=build-tsan
  flags=(-DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS=-fsanitize=thread -O1"
         "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread")
elif [ "$kind" = plain ]; then
  dir=${BUILD_DIR:-build-plain}
  flags=(-DCMAKE_BUILD_TYPE=Release)
else
  dir=build
  flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
fi
cmake -S . -B "$dir" -DAW_WERROR=ON "${flags[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)" -- --no-print-directory >/dev/null
echo "built $dir/agentwire"
