#!/usr/bin/env bash
# Runs every Tether test: formatting and lints, unit and end-to-end tests
# (real tether processes on loopback), the architecture checks, the interop
# tests with real peers, and a bounded fuzzing run. Prints a final
# "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
step() {
  local name=$1; shift
  echo "==> $name"
  if "$@"; then
    echo "<== $name: ok"
  else
    echo "<== $name: FAILED"
    failed=$((failed + 1))
    return 1
  fi
}

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings

# Rust unit + end-to-end tests. Count individual tests from nextest's summary.
echo "==> cargo nextest"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast 2>&1 | tee "$log"
  out=$(cat "$log")
  summary=$(grep -E "Summary .* tests run:" <<<"$out" | tail -1)
  p=$(sed -nE 's/.* ([0-9]+) passed.*/\1/p' <<<"$summary"); f=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$summary")
else
  cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
  out=$(cat "$log")
  p=$(grep -E "^test result:" <<<"$out" | sed -nE 's/.* ([0-9]+) passed.*/\1/p' | awk '{s+=$1} END {print s+0}')
  f=$(grep -E "^test result:" <<<"$out" | sed -nE 's/.* ([0-9]+) failed.*/\1/p' | awk '{s+=$1} END {print s+0}')
fi
passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
if [[ -z "${p:-}" ]]; then echo "<== cargo tests: no summary (build failure?)"; failed=$((failed + 1)); fi

# Runs a suite that ends with its own "N passed, N failed" line and adds it up.
tally() {
  local name=$1; shift
  echo "==> $name"
  "$@" 2>&1 | tee "$log"
  local line p f
  line=$(grep -E "^[0-9]+ passed, [0-9]+ failed" "$log" | tail -1)
  p=$(sed -nE 's/^([0-9]+) passed.*/\1/p' <<<"$line")
  f=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$line")
  if [[ -z "$p" ]]; then echo "<== $name: no summary"; failed=$((failed + 1)); else
    passed=$((passed + p)); failed=$((failed + f)); fi
}

# The module layering and citations docs/architecture.md describes.
tally architecture python3 scripts/check-architecture.py
# Interop with real SDK clients and servers against the built binary.
[[ -x interop/run.sh ]] && tally interop interop/run.sh
# Fuzzing the input parsers for a bounded time (FUZZ_SECONDS per target).
tally fuzz scripts/fuzz.sh

echo
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
