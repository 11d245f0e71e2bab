#!/usr/bin/env python3
"""The first call of a client session that holds its GET stream, against the
second, direct to the demo upstream and through Tether (a benchmark, never a
test).

    python3 scripts/bench-first-call.py [--tether BIN] [--sessions N]

Starts `tether demo-upstream` (legacy era) and `tether serve` in front of it
on 127.0.0.1. For each of N sessions (default 100), on the upstream's /mcp
directly and on Tether's /mcp: initialize, notifications/initialized, open
the GET stream and wait for its headers, then time the first `tools/call`
of echo and a second one (each a fresh connection, the answer read whole).
Through Tether the first call also opens the session's upstream session
(its handshake, and its GET stream before the call goes on); directly, the
session already exists. Prints the medians and Tether's ratio to direct.
Only the standard library.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import time
import urllib.parse
from pathlib import Path

from bench_support import processes, started

REPO = Path(__file__).resolve().parent.parent
ACCEPT = "application/json, text/event-stream"
VERSION = "2025-11-25"


def post(url: str, body: dict, session: str | None) -> tuple[int, str | None]:
    """POSTs one message on a new connection and reads the answer whole: (status, session id)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"content-type": "application/json", "accept": ACCEPT}
    if session:
        headers.update({"mcp-session-id": session, "mcp-protocol-version": VERSION})
    conn.request("POST", parts.path, json.dumps(body), headers)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status, resp.getheader("mcp-session-id")


def one_session(url: str, tool: str) -> tuple[float, float]:
    """One session holding its GET stream: the first and second call's times, in ms."""
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}
    _, session = post(url, init, None)
    post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    parts = urllib.parse.urlsplit(url)
    stream = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    stream.request("GET", parts.path, headers={"accept": "text/event-stream", "mcp-session-id": session,
                                               "mcp-protocol-version": VERSION})
    if stream.getresponse().status != 200:
        raise SystemExit(f"GET stream on {url} refused")
    times = []
    for i in (1, 2):
        call = {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": tool, "arguments": {"text": "hi"}}}
        start = time.perf_counter()
        status, _ = post(url, call, session)
        times.append((time.perf_counter() - start) * 1000)
        if status != 200:
            raise SystemExit(f"tools/call {tool} on {url}: HTTP {status}")
    stream.close()
    parts_conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    parts_conn.request("DELETE", parts.path, headers={"mcp-session-id": session, "mcp-protocol-version": VERSION})
    parts_conn.getresponse().read()
    parts_conn.close()
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tether", default=str(REPO / "target/release/tether"))
    parser.add_argument("--sessions", type=int, default=100)
    args = parser.parse_args()
    with processes() as procs:
        upstream = started([args.tether, "demo-upstream", "--listen", "127.0.0.1:0", "--era", "legacy"], procs)
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write(f'[store]\nurl = "memory"\n[[upstreams]]\nname = "demo"\nurl = "{upstream}"\n')
        gateway = started([args.tether, "serve", "--config", f.name, "--listen", "127.0.0.1:0"], procs)
        medians = {}
        for label, url, tool in (("direct", upstream, "echo"), ("tether", gateway, "demo__echo")):
            runs = [one_session(url, tool) for _ in range(args.sessions)]
            medians[label] = [statistics.median(r[i] for r in runs) for i in (0, 1)]
            first, second = medians[label]
            print(f"{label:<7} first call {first:6.2f} ms, second call {second:6.2f} ms (medians of {args.sessions})")
        ratios = [t / d for t, d in zip(medians["tether"], medians["direct"])]
        print(f"tether/direct: first call {ratios[0]:.2f}x, second call {ratios[1]:.2f}x")


if __name__ == "__main__":
    main()
