#!/usr/bin/env bash
# The README's second command: install what is missing, then run every test
# twice: on the release build, and on an AddressSanitizer +
# UndefinedBehaviorSanitizer build; then the cross-loop suites under
# ThreadSanitizer, the benchmark's smoke run and the fuzzers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# CMake's own Release type (-O3), as packagers build it: warning-free with gcc
# and clang (built with -Werror here; the project's default leaves it off).
echo "== plain Release builds (gcc, clang), warnings as errors"
scripts/build.sh plain
CC=clang BUILD_DIR=build-plain-clang scripts/build.sh plain

for kind in release asan; do
  dir=build; [ "$kind" = asan ] && dir=build-asan
  echo "== $kind: build"
  scripts/build.sh "$kind"
  echo "== $kind: unit tests (ctest)"
  (cd "$dir" && ctest --output-on-failure --timeout 300)
  echo "== $kind: end-to-end tests (node --test)"
  AGENTWIRE_BIN="$PWD/$dir/agentwire" node --test --test-concurrency=1 tests/e2e/
  echo "== $kind: cluster tests (tests/cluster: nodes on redis-server shards started by the tests)"
  AGENTWIRE_BIN="$PWD/$dir/agentwire" node --test --test-concurrency=1 tests/cluster/
  echo "== $kind: RFC 6455 conformance tests (tests/conformance)"
  AGENTWIRE_BIN="$PWD/$dir/agentwire" node --test --test-concurrency=1 tests/conformance/
  echo "== $kind: browser tests (tests/browser, headless Chromium)"
  AGENTWIRE_BIN="$PWD/$dir/agentwire" node --test --test-concurrency=1 tests/browser/
done
# The loops' threads under ThreadSanitizer: the suites that publish, deliver,
# resume, run agents, read WebSocket input and close across loops (a data race
# stops the server, so the tests fail).
echo "== tsan: end-to-end tests across event loops (ThreadSanitizer)"
scripts/build.sh tsan
TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:exitcode=66:suppressions=$PWD/tests/tsan.supp} AGENTWIRE_THREADS=2 AGENTWIRE_TSAN=1 \
  AGENTWIRE_BIN="$PWD/build-tsan/agentwire" node --test --test-concurrency=1 \
  tests/e2e/delivery.test.mjs tests/e2e/resume.test.mjs tests/e2e/runs.test.mjs \
  tests/e2e/api.test.mjs tests/e2e/lifecycle.test.mjs tests/e2e/client.test.mjs \
  tests/e2e/durable.test.mjs tests/e2e/jwks.test.mjs tests/e2e/handshake.test.mjs \
  tests/e2e/messages.test.mjs tests/e2e/large-messages.test.mjs tests/e2e/deflate.test.mjs
# The benchmark's smoke run: every scenario against agentwire and the three
# peers, tiny and untimed; it fails on any lost, reordered or misdirected event.
echo "== benchmark smoke (node bench/run.mjs --smoke)"
node bench/run.mjs --smoke
# The cluster benchmark's smoke run: one node, two nodes on redis-server, tiny and
# untimed; it fails on any lost or misdelivered event.
echo "== cluster benchmark smoke (node bench/cluster.mjs --quick)"
node bench/cluster.mjs --quick
# The durable benchmark's smoke run: memory mode and --data-dir with each
# --fsync, one round of one second, start-up with 20,000 stored events; it
# fails on any acknowledged event that was not delivered.
echo "== durable benchmark smoke (node bench/durable.mjs --seconds 1 --rounds 1 --startup-events 20000)"
node bench/durable.mjs --seconds 1 --rounds 1 --startup-events 20000
# The agent-shaped benchmark's smoke run: 200 concurrent runs through the batch
# API, an exec agent and the three peers, 3 s each; it fails on any lost,
# duplicated or misrouted event.
echo "== agent-shaped benchmark smoke (node bench/agents.mjs --quick)"
node bench/agents.mjs --quick
# The package: cmake --install layout, cpack -G DEB, installed into a scratch
# root and run (scripts/test-package.sh); the JavaScript client's TypeScript
# declarations, compiled against a use of every member and a list of misuses.
echo "== Python SDK against the release binary (clients/python/run-tests.sh)"
AGENTWIRE_BIN="$PWD/build/agentwire" clients/python/run-tests.sh
echo "== package: .deb built, installed into a scratch root and run (scripts/test-package.sh)"
scripts/test-package.sh
echo "== TypeScript declarations of the JavaScript client (tests/types)"
node --test --test-concurrency=1 tests/types/
# Coverage-guided fuzzing of the codecs (clang, libFuzzer, ASan+UBSan): 6 targets x 20 s.
echo "== fuzz: libFuzzer targets (tests/fuzz, scripts/fuzz.sh 20)"
scripts/fuzz.sh 20
echo "== all tests passed (release, asan, tsan, benchmark smokes, fuzz)"
