"""What the Python benchmarks in this folder share: starting Tether
processes, waiting for the line that names their URL, and stopping them."""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
import time


def started(argv: list[str], procs: list, line: str = r"listening on (\S+)") -> str:
    """Starts argv (added to procs, for the caller to stop), waits up to 30 s
    for `line` in its output, and returns the line's first group (a URL)."""
    out = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    procs.append(proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out.seek(0)
        match = re.search(line, out.read())
        if match:
            return match.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit(f"{' '.join(argv[:2])} did not start")


@contextlib.contextmanager
def processes():
    """A list for `started` to add processes to; they are stopped on leaving."""
    procs: list[subprocess.Popen] = []
    try:
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
