#!/usr/bin/env bash
# Coverage-guided fuzzing of the pure codecs (tests/fuzz, libFuzzer + ASan +
# UBSan).   scripts/fuzz.sh [seconds-per-target]   (default 30)
#
# Installs clang and compiler-rt when missing, builds the fuzz targets in
# build-fuzz/ (CC=clang, -DAW_FUZZ=ON; the gcc builds are not touched), runs
# each target once on its saved regressions (tests/fuzz/regressions/<target>/),
# then fuzzes it for the given time on a copy of its seed corpus
# (tests/fuzz/corpus/<target>/, which is never written to). Fails on any crash,
# leak, timeout, out-of-memory or sanitizer report; the input that caused it is
# kept in build-fuzz/fuzz-artifacts/<target>/ (copy it to the regressions).
# Prints the executions and time of each target and a summary line.
#
# Environment: FUZZ_TARGETS="http ws" to run some targets only.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-30}
case "$secs" in '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [seconds-per-target]" >&2; exit 2 ;; esac
targets=(${FUZZ_TARGETS:-http ws utf8 jwt client_message publish_body})

# The largest input each target is given, bytes: room for a few pipelined
# requests, several frames (incl. 16-bit lengths), tokens and batches.
max_len_of() {
  case "$1" in
    http) echo 4096 ;; ws) echo 4096 ;; utf8) echo 1024 ;; jwt) echo 4096 ;;
    client_message) echo 4096 ;; publish_body) echo 8192 ;; *) echo 4096 ;;
  esac
}

# ---- toolchain: clang and libFuzzer (compiler-rt) ----
fuzzer_works() {
  command -v clang >/dev/null 2>&1 || return 1
  local tmp
  tmp=$(mktemp -d)
  printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$tmp/t.c"
  clang -fsanitize=fuzzer,address,undefined "$tmp/t.c" -o "$tmp/t" >/dev/null 2>&1
  local rc=$?
  rm -rf "$tmp"
  return $rc
}
if ! fuzzer_works; then
  echo "fuzz: installing clang and compiler-rt (libFuzzer)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang libclang-rt-14-dev >/dev/null
  fuzzer_works || { echo "fuzz: clang cannot build a -fsanitize=fuzzer program" >&2; exit 1; }
fi

# ---- build ----
dir=build-fuzz
echo "== fuzz: build ($dir, clang, AW_FUZZ=ON)"
CC=clang cmake -S . -B "$dir" -DAW_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$dir" --target fuzz -j"$(nproc)" -- --no-print-directory >/dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# A log shows a problem when libFuzzer or a sanitizer reported one, even if
# the exit status somehow did not.
log_has_problem() {
  grep -qE '^==[0-9]+==ERROR|runtime error:|ERROR: libFuzzer|SUMMARY: (Address|Leak|Undefined)Sanitizer|invariant failed|^(==[0-9]+== )?ERROR: LeakSanitizer|Test unit written to' "$1"
}

work="$dir/fuzz-work"
artifacts="$dir/fuzz-artifacts"
failed=()
total_runs=0
total_secs=0
for t in "${targets[@]}"; do
  bin="$dir/fuzz_$t"
  [ -x "$bin" ] || { echo "fuzz: no target $bin" >&2; exit 1; }
  mkdir -p "$artifacts/$t"
  log="$work/$t.log"
  mkdir -p "$work"

  # Saved crash inputs: each must run clean once.
  reg=tests/fuzz/regressions/$t
  if [ -d "$reg" ] && [ -n "$(find "$reg" -type f ! -name '.*' ! -name '*.md' -print -quit)" ]; then
    mapfile -t files < <(find "$reg" -type f ! -name '.*' ! -name '*.md' | sort)
    if "$bin" -timeout=10 -rss_limit_mb=2048 "${files[@]}" >"$work/$t.regressions.log" 2>&1 &&
      ! log_has_problem "$work/$t.regressions.log"; then
      echo "fuzz_$t: ${#files[@]} regression input(s) ok"
    else
      echo "fuzz_$t: REGRESSION FAILED (log: $work/$t.regressions.log)"
      tail -n 30 "$work/$t.regressions.log"
      failed+=("$t(regressions)")
    fi
  fi

  # Fuzz on a copy of the seeds: new inputs go to the copy.
  rm -rf "$work/$t.corpus"
  mkdir -p "$work/$t.corpus"
  cp -r tests/fuzz/corpus/$t/. "$work/$t.corpus/"
  dict=()
  [ -f tests/fuzz/dict/$t.dict ] && dict=(-dict=tests/fuzz/dict/$t.dict)
  set +e
  "$bin" "$work/$t.corpus" "${dict[@]}" -max_len="$(max_len_of "$t")" -timeout=10 \
    -rss_limit_mb=2048 -max_total_time="$secs" -print_final_stats=1 \
    -artifact_prefix="$artifacts/$t/" >"$log" 2>&1
  rc=$?
  set -e
  done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 || true)
  runs=$(sed -E 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\1/' <<<"$done_line")
  took=$(sed -E 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\2/' <<<"$done_line")
  corpus_n=$(find "$work/$t.corpus" -type f | wc -l)
  if [ "$rc" -ne 0 ] || [ -z "$done_line" ] || log_has_problem "$log"; then
    echo "fuzz_$t: FAILED (exit $rc; log: $log; inputs: $artifacts/$t/)"
    grep -E 'ERROR|runtime error|invariant failed|SUMMARY|Test unit written' "$log" | head -n 10 || true
    tail -n 40 "$log"
    failed+=("$t")
    continue
  fi
  total_runs=$((total_runs + runs))
  total_secs=$((total_secs + took))
  printf 'fuzz_%-15s %10s runs in %4s s (%s/s), corpus %d -> %d inputs\n' "$t" "$runs" "$took" \
    "$((took > 0 ? runs / took : runs))" "$(find tests/fuzz/corpus/$t -type f | wc -l)" "$corpus_n"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "== fuzz: FAILED: ${failed[*]} (${#targets[@]} targets, $secs s each)"
  exit 1
fi
echo "== fuzz: ${#targets[@]} targets clean: $total_runs runs in $total_secs s ($secs s per target)"
