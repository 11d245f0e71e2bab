"""Load driver for tether-bench: the official Python MCP SDK as a realistic client.

Opens legacy Streamable HTTP sessions with `mcp.ClientSession` and calls one
tool. Phase 1 opens `--new-sessions` sessions one after another and times each
session's `initialize`, its first `tools/call` (which, through Tether, also
opens the upstream session) and a few later calls. Phase 2 keeps
`--concurrency` sessions calling back-to-back for `--seconds`. Prints one JSON
object with the timings (microseconds) on stdout.
"""

import argparse
import asyncio
import json
import time

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


def summary(values):
    values = sorted(values)
    if not values:
        return {"n": 0}
    pick = lambda p: values[min(len(values) - 1, round((len(values) - 1) * p))]
    return {"n": len(values), "p50": pick(0.50), "p99": pick(0.99)}


def micros(seconds):
    return int(seconds * 1_000_000)


async def one_session(url, tool, later_calls, timings):
    args = {"text": "hello"}
    t0 = time.perf_counter()
    async with streamable_http_client(url) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            t1 = time.perf_counter()
            await session.call_tool(tool, args)
            t2 = time.perf_counter()
            timings["initialize"].append(micros(t1 - t0))
            timings["first_call"].append(micros(t2 - t1))
            for _ in range(later_calls):
                a = time.perf_counter()
                await session.call_tool(tool, args)
                timings["later_call"].append(micros(time.perf_counter() - a))


async def load_session(url, tool, start, end, latencies, counter):
    args = {"text": "hello"}
    async with streamable_http_client(url) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            await session.call_tool(tool, args)
            while True:
                a = time.perf_counter()
                await session.call_tool(tool, args)
                b = time.perf_counter()
                if b >= end:
                    return
                if a >= start:
                    latencies.append(micros(b - a))
                    counter[0] += 1


async def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--tool", required=True)
    parser.add_argument("--new-sessions", type=int, default=20)
    parser.add_argument("--later-calls", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    opts = parser.parse_args()

    timings = {"initialize": [], "first_call": [], "later_call": []}
    for _ in range(opts.new_sessions):
        await one_session(opts.url, opts.tool, opts.later_calls, timings)

    latencies, counter = [], [0]
    start = time.perf_counter() + 1.0
    end = start + opts.seconds
    await asyncio.gather(
        *(load_session(opts.url, opts.tool, start, end, latencies, counter) for _ in range(opts.concurrency))
    )
    result = {name: summary(values) for name, values in timings.items()}
    result["load"] = summary(latencies)
    result["load"]["calls_per_second"] = counter[0] / opts.seconds
    result["load"]["concurrency"] = opts.concurrency
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
