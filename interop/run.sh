#!/usr/bin/env bash
# Interop tests: peers nobody here wrote, against the real `tether` binary, on
# loopback only.
#
#   Python (interop/python, pytest): the official Python MCP SDK client
#     (python-sdk), its HTTP+SSE client on Tether's /sse (python-sdk-sse),
#     server-everything as an upstream over Streamable HTTP (server-everything)
#     and over stdio (server-everything-stdio), an MCPServer upstream built
#     with the Python SDK over Streamable HTTP (python-upstream), HTTP+SSE
#     (python-upstream-sse) and stdio (python-upstream-stdio); the SDK's
#     clients through a three-node cluster on PostgreSQL behind HAProxy
#     (cluster); OpenTelemetry traces from the SDK client through Tether to
#     the SDK upstream, into a real OTLP/HTTP receiver (telemetry); the admin
#     console in headless Chromium driven by Selenium (admin-console); the
#     SDK's clients on virtual servers, /v/<name>/mcp and /v/<name>/sse, with
#     their admin API (virtual-servers), on renamed, hidden and fixed-argument
#     tools under policies (tool-shaping), refused by per-principal rate
#     limits and concurrency caps (tool-limits), and finding tools among three
#     catalogue upstreams built with the SDK through search_tools/call_tool
#     (progressive-discovery).
#   Node (interop/node, node --test): the TypeScript SDK v1 client (ts-sdk-v1),
#     the v2 client on the 2026-07-28 era (ts-sdk-v2), the MCP Inspector CLI
#     (inspector-cli), and the TS clients against server-everything.
#   The official conformance suite (interop/conformance/run.sh --suite all,
#     and 0.2.0-alpha.12 --requirements 2026-07-28) against the conformance
#     fixture directly and through Tether
#     (INTEROP_SKIP_CONFORMANCE=1 skips it).
#
#   interop/run.sh [extra pytest args]
#
# Pinned peers are installed here, cached between runs: pip into
# interop/.cache/venv (from python/requirements.txt), npm into
# interop/.cache/node (from node/package.json + package-lock.json, `npm ci`);
# each reinstalls only when its pins (or the interpreter version) change.
#
# Env: TETHER_BIN  binary to test (default: target/debug/tether, built with
#                  `cargo build --locked` when missing)
#      PYTHON      interpreter for the venv (default: python3)
#      NODE        node binary (default: node; needs Node >= 20 and npm)
#
# Prints one summary line per peer and, last, exactly "N passed, N failed".
# Exits non-zero if anything failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cache="$here/.cache"
venv="$cache/venv"
req="$here/python/requirements.txt"
stamp="$venv/.requirements.stamp"
nodedir="$cache/node"
nodestamp="$nodedir/.install.stamp"
junit_py="$cache/junit-python.xml"
junit_node="$cache/junit-node.xml"
python=${PYTHON:-python3}
node=${NODE:-node}
# Sessions need not outlive the test processes (and no store file is left behind).
export TETHER_STORE__URL=${TETHER_STORE__URL:-memory}
start=$(date +%s)

mkdir -p "$cache"
setup_failed=()

# Safety net: every process the suite starts inherits INTEROP_RUN_ID; whatever is
# still alive when this script ends (a runner killed by its timeout, a crashed
# harness) is killed here. Only processes carrying this run's id are touched.
export INTEROP_RUN_ID="interop-$$-$(date +%s%N)"
sweep() {
  local f pid entries cmd
  for f in /proc/[0-9]*/environ; do
    pid=${f#/proc/}
    pid=${pid%/environ}
    [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
    mapfile -d "" -t entries 2>/dev/null <"$f" || continue
    for e in "${entries[@]}"; do
      if [[ $e == "INTEROP_RUN_ID=$INTEROP_RUN_ID" ]]; then
        cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
        kill -9 "$pid" 2>/dev/null && echo "interop: killed leftover process $pid: $cmd" >&2
        break
      fi
    done
  done
}
trap sweep EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- venv: create (or recreate when broken), install only when requirements changed
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
  echo "interop: creating venv at ${venv#"$repo"/}" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi
want="$(sha256sum "$req" | cut -d' ' -f1) $("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])')"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "interop: installing ${req#"$repo"/}" >&2
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$req" >&2
  echo "$want" >"$stamp"
fi

# --- npm peers: `npm ci` into interop/.cache/node only when the pins or node changed
node_ok=1
if ! command -v "$node" >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "interop: node/npm not found: the Node peers cannot run" >&2
  node_ok=0
elif ! "$node" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "interop: node >= 20 required (found $("$node" --version)): the Node peers cannot run" >&2
  node_ok=0
else
  nwant="$(cat "$here/node/package.json" "$here/node/package-lock.json" | sha256sum | cut -d' ' -f1) $("$node" --version)"
  if [[ ! -f "$nodestamp" || "$(cat "$nodestamp")" != "$nwant" || ! -d "$nodedir/node_modules" ]]; then
    echo "interop: installing node/package.json (npm ci) into ${nodedir#"$repo"/}" >&2
    rm -rf "$nodedir"
    mkdir -p "$nodedir"
    cp "$here/node/package.json" "$here/node/package-lock.json" "$nodedir/"
    if (cd "$nodedir" && timeout 600 npm ci --no-audit --no-fund --loglevel=error --cache "$cache/npm-cache" >&2); then
      echo "$nwant" >"$nodestamp"
    else
      echo "interop: npm ci failed" >&2
      node_ok=0
    fi
  fi
  # The tests import the peers by package name: resolve them from the cache.
  ln -sfn ../.cache/node/node_modules "$here/node/node_modules"
fi
export INTEROP_NODE_DIR="$nodedir"

# --- the binary under test
if [[ -z "${TETHER_BIN:-}" ]]; then
  export TETHER_BIN="$repo/target/debug/tether"
  if [[ ! -x "$TETHER_BIN" ]]; then
    echo "interop: building tether (cargo build --locked)" >&2
    (cd "$repo" && cargo build --locked >&2)
  fi
fi
# The runners work in interop/python and interop/node: make a relative path absolute.
[[ -e "$TETHER_BIN" ]] && TETHER_BIN=$(realpath "$TETHER_BIN")
if [[ ! -x "$TETHER_BIN" ]]; then
  echo "interop: tether binary not found: $TETHER_BIN" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
export TETHER_BIN

# --- run: Python (pytest), then Node (node --test; spec to the terminal, JUnit to a file)
rm -f "$junit_py" "$junit_node"
rc_py=0
echo "==> interop: python (pytest)"
(cd "$here/python" && PYTHONDONTWRITEBYTECODE=1 timeout --kill-after=10 900 \
  "$venv/bin/python" -m pytest . -p no:cacheprovider --junitxml="$junit_py" -o junit_family=xunit2 "$@") || rc_py=$?

rc_node=0
if [[ $node_ok -eq 1 ]]; then
  echo "==> interop: node (node --test)"
  mapfile -t node_tests < <(cd "$here/node" && ls -1 ./*.test.mjs)
  (cd "$here/node" && timeout --kill-after=10 600 "$node" --test \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=junit --test-reporter-destination="$junit_node" \
    "${node_tests[@]}") || rc_node=$?
else
  setup_failed+=("node")
fi

# --- summary from the JUnit XML files: one line per peer, then the totals
summary=$("$venv/bin/python" - "$junit_py" "$junit_node" <<'PY' || true
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict

ORDER = [
    "python-sdk", "python-sdk-sse", "ts-sdk-v1", "ts-sdk-v2", "inspector-cli",
    "server-everything", "server-everything-stdio",
    "python-upstream", "python-upstream-sse", "python-upstream-stdio", "cluster",
    "telemetry", "admin-console",
    "virtual-servers", "tool-shaping", "tool-limits", "progressive-discovery",
]
counts = defaultdict(lambda: {"passed": 0, "failed": 0, "skipped": 0})


source_failed = {"py": 0, "node": 0}


def tally(peer, case, source):
    if case.find("failure") is not None or case.find("error") is not None:
        counts[peer]["failed"] += 1
        source_failed[source] += 1
    elif case.find("skipped") is not None:
        counts[peer]["skipped"] += 1
    else:
        counts[peer]["passed"] += 1


def load(path, label):
    try:
        return ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"interop: no {label} JUnit XML ({e})", file=sys.stderr)
        return None


# pytest: one peer per test file (test_python_sdk.py -> python-sdk)
root = load(sys.argv[1], "pytest")
if root is not None:
    for case in root.iter("testcase"):
        module = (case.get("classname") or case.get("name") or "?").split(".")[0]
        tally(module.removeprefix("test_").replace("_", "-"), case, "py")

# node --test: one peer per top-level describe() (named after the peer)
root = load(sys.argv[2], "node")
if root is not None:
    for child in root:
        if child.tag == "testsuite":
            for case in child.iter("testcase"):
                tally(child.get("name") or "node", case, "node")
        elif child.tag == "testcase":  # a file that failed outside any describe()
            tally("node", child, "node")

total_p = total_f = 0
for peer in ORDER + sorted(p for p in counts if p not in ORDER):
    if peer not in counts:
        continue
    c = counts[peer]
    line = f"{peer}: {c['passed']} passed, {c['failed']} failed"
    if c["skipped"]:
        line += f", {c['skipped']} skipped"
    print(line)
    total_p += c["passed"]
    total_f += c["failed"]
print(f"TOTAL {total_p} {total_f}")
print(f"SOURCES {source_failed['py']} {source_failed['node']}")
PY
)

echo
per_peer=$(grep -vE '^(TOTAL|SOURCES) ' <<<"$summary" || true)
read -r _ passed failed < <(grep '^TOTAL ' <<<"$summary" || echo "TOTAL 0 0")
read -r _ py_failed node_failed < <(grep '^SOURCES ' <<<"$summary" || echo "SOURCES 0 0")
[[ -n "$per_peer" ]] && echo "$per_peer"
for what in "${setup_failed[@]}"; do
  echo "interop: the $what peers did not run (see above)" >&2
  failed=$((failed + 1))
done
# A runner that failed without a failed test in its report (collection error, no
# tests, timeout, crash) counts as one failure.
if [[ $rc_py -ne 0 && $py_failed -eq 0 ]]; then
  echo "interop: pytest exited $rc_py" >&2
  failed=$((failed + 1))
fi
if [[ $node_ok -eq 1 && $rc_node -ne 0 && $node_failed -eq 0 ]]; then
  echo "interop: node --test exited $rc_node" >&2
  failed=$((failed + 1))
fi
if [[ $passed -eq 0 && $failed -eq 0 ]]; then
  echo "interop: no test ran" >&2
  failed=1
fi
# The official conformance suite, direct and through Tether (scenarios count
# as tests): the released suite in full, and the 2026-07-28 requirements
# (tasks, subscriptions, custom headers, caching) of the pre-release one.
conformance() {
  local out c_passed c_failed
  out=$(env "$@" 2>&1) || true
  grep -E '^(  |conformance )' <<<"$out" | grep -vE '^  PASS ' || true
  read -r c_passed c_failed < <(tail -n 1 <<<"$out" | sed -nE 's/^([0-9]+) passed, ([0-9]+) failed$/\1 \2/p')
  if [[ -z "${c_passed:-}" ]]; then
    echo "interop: the conformance suite did not run:" >&2
    tail -n 20 <<<"$out" >&2
    c_passed=0 c_failed=1
  fi
  passed=$((passed + c_passed)); failed=$((failed + c_failed))
}
if [[ -z "${INTEROP_SKIP_CONFORMANCE:-}" ]]; then
  conformance "$here/conformance/run.sh" --suite all
  conformance CONFORMANCE_VERSION=0.2.0-alpha.12 "$here/conformance/run.sh" --requirements 2026-07-28
fi
echo "interop: $(($(date +%s) - start)) s"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
