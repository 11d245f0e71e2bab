#!/usr/bin/env bash
# The official MCP conformance suite (server mode), run against Tether's
# conformance fixture directly and through Tether: on /u/conf/mcp and on /mcp
# with that single upstream configured without prefixing; and, to exercise
# the era bridge, through Tether to a fixture that speaks only 2026-07-28
# (the suite's clients are legacy). Prints the failing checks, one summary
# line per target, and last "N passed, N failed" (scenarios, all targets).
# Exits non-zero when any scenario failed.
#
#   interop/conformance/run.sh [extra `conformance server` options, e.g. --suite all]
#
# Env: TETHER_BIN           binary under test (default target/debug/tether)
#      CONFORMANCE_VERSION  npm version of @modelcontextprotocol/conformance (default 0.1.16)
#      FIXTURE_ERA          era(s) the fixture answers: legacy | modern | dual (default dual)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache="$repo/interop/.cache"
version=${CONFORMANCE_VERSION:-0.1.16}
prefix="$cache/conformance-$version"
bin=${TETHER_BIN:-$repo/target/debug/tether}
era=${FIXTURE_ERA:-dual}
work=$(mktemp -d)
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cli="$prefix/node_modules/@modelcontextprotocol/conformance/dist/index.js"
if [[ ! -f "$cli" ]]; then
  echo "conformance: installing @modelcontextprotocol/conformance@$version" >&2
  mkdir -p "$prefix"
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
    "@modelcontextprotocol/conformance@$version" >&2
fi
node_args=()
if (( $(node -p 'process.versions.node.split(".")[0]') < 22 )); then
  node_args=(--import "$here/node20-register.mjs")
fi

# Starts a process whose first stdout line ends with its URL; sets $url.
# (Not a command substitution: the process must stay this shell's child so
# the exit trap can stop it.)
start() {
  local log="$work/$1.log"; shift
  "$@" >"$log" 2>"$log.err" &
  pids+=($!)
  for _ in $(seq 1 200); do
    if [[ -s "$log" ]]; then url=$(awk 'NR==1 {print $NF}' "$log"); return 0; fi
    sleep 0.1
  done
  echo "conformance: $* printed no URL" >&2
  cat "$log.err" >&2
  return 1
}

export TETHER_LOG=${TETHER_LOG:-warn}
# Sessions need not outlive these processes (and no store file is left behind).
export TETHER_STORE__URL=${TETHER_STORE__URL:-memory}
start fixture "$bin" demo-upstream --profile conformance --era "$era" --listen 127.0.0.1:0
fixture=$url
printf '[federation]\nnaming = "none"\n[[upstreams]]\nname = "conf"\nurl = "%s"\n' "$fixture" >"$work/tether.toml"
start gateway "$bin" serve --config "$work/tether.toml" --listen 127.0.0.1:0
base=${url%/mcp}
start modern-fixture "$bin" demo-upstream --profile conformance --era modern --listen 127.0.0.1:0
printf '[[upstreams]]\nname = "conf"\nurl = "%s"\n' "$url" >"$work/bridge.toml"
start bridge "$bin" serve --config "$work/bridge.toml" --listen 127.0.0.1:0
bridge=${url%/mcp}

total_passed=0
total_failed=0
run() {
  local label=$1 url=$2; shift 2
  local results="$work/results-$label"
  node "${node_args[@]}" "$cli" server --url "$url" -o "$results" "$@" >"$results.log" 2>&1 || true
  local summary
  summary=$(node "$here/summarize.mjs" "$results" "conformance ($label)")
  echo "$summary"
  local line passed failed
  line=$(tail -n 1 <<<"$summary")
  passed=$(sed -nE 's/.*: ([0-9]+) passed.*/\1/p' <<<"$line")
  failed=$(sed -nE 's/.* ([0-9]+) failed$/\1/p' <<<"$line")
  if [[ -z "$passed" || "$passed$failed" == "00" ]]; then
    echo "conformance ($label): the suite produced no results; its log:" >&2
    tail -n 20 "$results.log" >&2
    failed=1; passed=${passed:-0}
  fi
  total_passed=$((total_passed + passed)); total_failed=$((total_failed + failed))
}

run direct "$fixture" "$@"
run tether-single "$base/u/conf/mcp" "$@"
run tether-federated "$base/mcp" "$@"
run tether-bridged "$bridge/u/conf/mcp" "$@"
echo "$total_passed passed, $total_failed failed"
[[ $total_failed -eq 0 ]]
