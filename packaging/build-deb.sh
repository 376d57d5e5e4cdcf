#!/usr/bin/env bash
# Builds the agentwire .deb: a Release build for the prefix /usr with Debian's
# hardening flags (dpkg-buildflags), then cpack -G DEB (cmake/install.cmake).
#   packaging/build-deb.sh [BUILD_DIR]      (default build-pkg)
# Prints the path of the .deb on its last line. Needs dpkg-dev (dpkg-shlibdeps
# computes the Depends) and python3 (the man page).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-pkg}

cflags="" ldflags=""
if command -v dpkg-buildflags >/dev/null 2>&1; then
  export DEB_BUILD_MAINT_OPTIONS=${DEB_BUILD_MAINT_OPTIONS:-hardening=+all}
  cflags="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
  ldflags="$(dpkg-buildflags --get LDFLAGS)"
fi
# The man page's date: the newest source file's, so a rebuild makes the same page.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(find src scripts/gen-man.py packaging cmake CMakeLists.txt -type f \
    -printf '%T@\n' | sort -n | tail -1 | cut -d. -f1)
  export SOURCE_DATE_EPOCH
fi

# Only the server and its man page are built: cpack's install step does not
# build the tests and the benchmark (CMAKE_SKIP_INSTALL_ALL_DEPENDENCY).
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
  -DCMAKE_C_FLAGS="$cflags" -DCMAKE_EXE_LINKER_FLAGS="$ldflags" \
  -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON >/dev/null
cmake --build "$dir" -j"$(nproc)" --target agentwire manpage -- --no-print-directory >/dev/null
rm -f "$dir"/agentwire_*.deb
(cd "$dir" && cpack -G DEB >/dev/null)
deb=$(ls "$dir"/agentwire_*.deb)
echo "$deb"
