#!/usr/bin/env bash
# Fuzzes Tether's input parsers with cargo-fuzz (libFuzzer, coverage-guided,
# no sanitizer, so a stable toolchain works): the JSON-RPC envelope parser,
# the header decoders (Base64 sentinel included) and the SSE decoder.
#
#   scripts/fuzz.sh [seconds per target]     (default 30; FUZZ_SECONDS too)
#
# Prints one line per target with its executions and whether it crashed, and
# last "N passed, N failed" (a target passes when it ran without a crash).
# Crash inputs are kept under fuzz/artifacts/<target>/.
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-${FUZZ_SECONDS:-30}}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
cargo fuzz build -s none -O >/dev/null 2>&1 || cargo fuzz build -s none -O || {
  echo "fuzz: build failed"; echo "0 passed, 1 failed"; exit 1; }
passed=0
failed=0
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  out=$(cargo fuzz run -s none -O "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=1024 -max_len=65536 2>&1)
  status=$?
  runs=$(grep -oE 'Done [0-9]+ runs' <<<"$out" | grep -oE '[0-9]+' | tail -1)
  if [[ $status -eq 0 && -n "$runs" ]]; then
    echo "fuzz $target: ${runs} executions in ${seconds}s, 0 crashes"
    passed=$((passed + 1))
  else
    echo "fuzz $target: CRASHED after ${runs:-?} executions"
    grep -E 'panicked|ERROR|Test unit written' <<<"$out" | head -5
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
