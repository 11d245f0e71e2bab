#!/usr/bin/env bash
# Interop tests: real SDK clients (the official Python MCP SDK from PyPI)
# against the real `tether` binary and its demo upstreams, on loopback.
#
#   interop/run.sh [extra pytest args]
#
# Env: TETHER_BIN  binary to test (default: target/debug/tether, built with
#                  `cargo build --locked` when missing)
#      PYTHON      interpreter for the venv (default: python3)
#
# Prints one summary line per test file (naming the peer) and, last,
# exactly "N passed, N failed". Exits non-zero if anything failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cache="$here/.cache"
venv="$cache/venv"
req="$here/python/requirements.txt"
stamp="$venv/.requirements.stamp"
junit="$cache/junit-python.xml"
python=${PYTHON:-python3}

mkdir -p "$cache"

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

# --- the binary under test
if [[ -z "${TETHER_BIN:-}" ]]; then
  export TETHER_BIN="$repo/target/debug/tether"
  if [[ ! -x "$TETHER_BIN" ]]; then
    echo "interop: building tether (cargo build --locked)" >&2
    (cd "$repo" && cargo build --locked >&2)
  fi
fi
if [[ ! -x "$TETHER_BIN" ]]; then
  echo "interop: tether binary not found: $TETHER_BIN" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

# --- run
rm -f "$junit"
rc=0
(cd "$here/python" && PYTHONDONTWRITEBYTECODE=1 timeout --kill-after=10 900 \
  "$venv/bin/python" -m pytest . -p no:cacheprovider --junitxml="$junit" -o junit_family=xunit2 "$@") || rc=$?

# --- summary from the JUnit XML: one line per test file, then the totals
summary=$("$venv/bin/python" - "$junit" <<'PY' || true
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict

try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError) as e:
    print(f"interop: no JUnit XML ({e})", file=sys.stderr)
    sys.exit(1)

counts = defaultdict(lambda: {"passed": 0, "failed": 0, "skipped": 0})
for case in root.iter("testcase"):
    module = (case.get("classname") or case.get("name") or "?").split(".")[0]
    peer = module.removeprefix("test_").replace("_", "-")
    if case.find("failure") is not None or case.find("error") is not None:
        counts[peer]["failed"] += 1
    elif case.find("skipped") is not None:
        counts[peer]["skipped"] += 1
    else:
        counts[peer]["passed"] += 1

total_p = total_f = 0
for peer, c in sorted(counts.items()):
    line = f"{peer}: {c['passed']} passed, {c['failed']} failed"
    if c["skipped"]:
        line += f", {c['skipped']} skipped"
    print(line)
    total_p += c["passed"]
    total_f += c["failed"]
print(f"TOTAL {total_p} {total_f}")
PY
)

echo
per_file=$(grep -v '^TOTAL ' <<<"$summary" || true)
read -r _ passed failed < <(grep '^TOTAL ' <<<"$summary" || echo "TOTAL 0 0")
[[ -n "$per_file" ]] && echo "$per_file"
if [[ $rc -ne 0 && $failed -eq 0 ]]; then
  # pytest failed in a way the report does not count (collection error, no tests, timeout, crash)
  echo "interop: pytest exited $rc" >&2
  failed=1
fi
if [[ $passed -eq 0 && $failed -eq 0 ]]; then
  echo "interop: no test ran" >&2
  failed=1
fi
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
