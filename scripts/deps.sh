#!/usr/bin/env bash
# Installs what building and testing agentwire needs, when it is missing.
#   scripts/deps.sh build   C toolchain and libraries (Debian packages)
#   scripts/deps.sh test    the above, plus node, npm packages (npm ci) and test tools
#                           (curl, chromium for the browser tests, clang with its
#                           libFuzzer runtime for scripts/fuzz.sh, and the benchmark's
#                           peer nchan and gnuplot for its smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."

need=(build-essential cmake pkg-config libuv1-dev libssl-dev libjansson-dev libhttp-parser-dev
      zlib1g-dev libcmocka-dev libhiredis-dev libsqlite3-dev libcurl4-openssl-dev)
if [ "${1:-build}" = test ]; then
  need+=(curl)
  # The fuzz step (scripts/fuzz.sh): clang and its libFuzzer runtime (compiler-rt).
  need+=(clang libclang-rt-14-dev)
  command -v node >/dev/null 2>&1 || need+=(nodejs npm)
  # The browser tests (tests/browser) drive Debian's Chromium with playwright-core.
  [ -x /usr/bin/chromium ] || need+=(chromium)
  # The benchmark (make bench, and its smoke run in the tests): nginx with nchan as
  # a peer, gnuplot for the plots.
  need+=(nginx libnginx-mod-nchan gnuplot-nox)
  # The cluster tests (tests/cluster) start their own redis-server processes.
  need+=(redis-server)
  # The Python SDK (clients/python) and its tests: Debian's python3 packages only.
  need+=(python3 python3-httpx python3-websockets python3-pytest python3-aiohttp)
  # The package test (scripts/test-package.sh) builds a .deb with cpack and
  # renders its man page.
  need+=(dpkg-dev man-db)
fi

missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ "${1:-build}" = test ]; then
  # npm ci only when the lockfile changed since the last install.
  stamp=node_modules/.agentwire-lock
  if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
    npm ci --no-audit --no-fund --loglevel=error
    cp package-lock.json "$stamp"
  fi
fi
