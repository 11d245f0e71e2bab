#!/usr/bin/env python3
"""What a client's model reads of a big catalogue, with and without
progressive discovery (a benchmark, never a test).

    interop/.cache/venv/bin/python scripts/bench-catalogue.py [--tether BIN]

Starts the three catalogue upstreams of the interop suite
(interop/python/upstreams/catalogue_server.py, built with the Python MCP
SDK: over 200 tools together) and Tether in front of them on 127.0.0.1,
once as configured by default and once with `[federation]
progressive_discovery = true`, and measures, for a legacy client session on
/mcp: the `tools/list` result, and with progressive discovery the result
of `search_tools` for a few queries (limit 8, the default). Sizes are the
result JSON's bytes and its tokens by a simple count: runs of letters and
digits, and every other non-space character, each count as one. Latency:
the median of --rounds sequential `tools/list` calls (the full catalogue,
gathered from the three upstreams each time) and, with progressive
discovery, of as many `search_tools` calls (the same gathering plus the
ranking), in the same run.

Run it with the interop suite's Python (it has the SDK the upstreams need).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_support import processes, started

REPO = Path(__file__).resolve().parent.parent
CATALOGUE_SERVER = REPO / "interop/python/upstreams/catalogue_server.py"
CATALOGUES = {"dev": "devtools", "work": "workplace", "data": "data"}
QUERIES = [
    "create a github issue",
    "send an email to a colleague",
    "convert dollars to euros",
    "run a sql query on the warehouse",
    "book a meeting room for tomorrow",
]
TOKEN = re.compile(r"\w+|[^\w\s]")


def post(url: str, body: dict, session: str | None) -> tuple[dict, str | None]:
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    if session:
        headers.update({"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"})
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    with urllib.request.urlopen(request, timeout=30) as resp:
        text = resp.read().decode()
        return (json.loads(text) if text else {}), resp.headers.get("mcp-session-id")


def median_ms(url: str, session: str, body: dict, rounds: int) -> float:
    """The median wall time of `rounds` sequential posts of `body`, in ms."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        post(url, body, session)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def size(result: dict) -> tuple[int, int]:
    """The result's bytes (compact JSON) and tokens."""
    text = json.dumps(result, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode()), len(TOKEN.findall(text))


def measure(tether: str, python: str, progressive: bool, rounds: int) -> None:
    with processes() as procs:
        config = "[store]\nurl = \"memory\"\n"
        if progressive:
            config += "[federation]\nprogressive_discovery = true\n"
        for name, catalogue in CATALOGUES.items():
            argv = [python, str(CATALOGUE_SERVER), "--catalogue", catalogue]
            url = started(argv, procs)
            config += f"[[upstreams]]\nname = \"{name}\"\nurl = \"{url}\"\n"
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write(config)
        argv = [tether, "serve", "--config", f.name, "--listen", "127.0.0.1:0"]
        url = started(argv, procs)
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}
        _, session = post(url, init, None)
        listed, _ = post(url, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session)
        tools = listed["result"]["tools"]
        mode = "progressive discovery" if progressive else "full catalogue"
        b, t = size(listed["result"])
        print(f"{mode:<22} tools/list: {len(tools):>3} tools, {b:>7,} bytes, {t:>6,} tokens")
        # A search gathers the same catalogue the full list does, then ranks it.
        search = {"name": "search_tools", "arguments": {"query": QUERIES[0]}}
        what, timed = ("search_tools", {"method": "tools/call", "params": search}) if progressive \
            else ("tools/list", {"method": "tools/list"})
        ms = median_ms(url, session, {"jsonrpc": "2.0", "id": "t", **timed}, rounds)
        print(f"{'':<22} {what} median over {rounds}: {ms:.2f} ms")
        if progressive:
            for i, query in enumerate(QUERIES, 2):
                call = {"name": "search_tools", "arguments": {"query": query}}
                found, _ = post(url, {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": call}, session)
                b, t = size(found["result"])
                first = found["result"]["structuredContent"]["tools"][0]["name"]
                print(f"{'':<22} search_tools {query!r}: {b:>6,} bytes, {t:>5,} tokens (first: {first})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tether", default=str(REPO / "target/release/tether"))
    parser.add_argument("--python", default=sys.executable, help="the Python with the MCP SDK, for the upstreams")
    parser.add_argument("--rounds", type=int, default=200, help="calls timed per mode")
    args = parser.parse_args()
    for progressive in (False, True):
        measure(args.tether, args.python, progressive, args.rounds)


if __name__ == "__main__":
    main()
