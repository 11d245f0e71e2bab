"""An upstream MCP server built with the official Python SDK (`mcp` 2.x, `MCPServer`),
used by test_python_upstream.py and test_stdio_upstreams.py as a peer nobody here wrote.

    python counter_server.py [--transport streamable-http|sse|stdio]

`streamable-http` (default) and `sse` bind 127.0.0.1 on a free port (the OS
picks it) and print exactly one line on stdout:
`python upstream listening on http://127.0.0.1:PORT/mcp` (Streamable HTTP,
stateful: legacy era, initialize + Mcp-Session-Id), or
`python upstream listening on http://127.0.0.1:PORT/sse` (the 2024-11-05
HTTP+SSE transport: `GET /sse` opens a session's stream, whose `endpoint`
event names `/messages/?session_id=...`). `stdio` serves one client over
stdin/stdout (one JSON-RPC message per line) and prints nothing else there.

Tools:
- `counter_increment` / `counter_get`: a counter per MCP session (keyed by the
  `Mcp-Session-Id` request header, the HTTP+SSE `session_id`, or the process
  on stdio, which serves one session); text is the count, structuredContent `{"count": n}`.
- `echo {text}`, `slow_count {steps}` (progress notifications).
- `trace_context`: the W3C trace context the call arrived with, as JSON text
  `{"header": <traceparent header>, "meta": <params._meta.traceparent>}`.

With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the SDK's server spans are exported
there (OTLP/HTTP, service `python-upstream`).
A resource `py://hello`, a prompt `greet {name}`.

`GET /stats` (plain HTTP, not MCP; not on stdio) returns what the server saw:
`{"initializes": n, "sessions": [ids that called a tool], "deletes": n,
"sse_opened": n, "sse_closed": n}`; initializes are counted by an SDK
`ServerMiddleware` (every `initialize` request the runner handled), deletes by
an ASGI wrapper (HTTP DELETE answered 2xx), and HTTP+SSE streams by another
(`sse_opened`: GET /sse answered 200; `sse_closed`: such a stream ended).

DNS-rebinding protection stays on, with the loopback Host/Origin values allowed
explicitly (`transport_security`), so requests forwarded by a gateway on
loopback are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer

import loopback

STATS: dict[str, Any] = {"initializes": 0, "deletes": 0, "sse_opened": 0, "sse_closed": 0}
COUNTERS: dict[str, int] = {}  # session key -> count
TRANSPORT = "streamable-http"  # set by main()


async def count_initializations(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    if ctx.method == "initialize":
        STATS["initializes"] += 1
    return await call_next(ctx)


mcp = MCPServer("tether-interop-python-upstream", version="1.0.0", middleware=[count_initializations])


def _session_key(ctx: Context) -> str:
    if TRANSPORT == "stdio":
        # One client per process: the process is the session.
        return f"stdio-{os.getpid()}"
    req = ctx.request_context.request
    if TRANSPORT == "sse":
        # The message POST carries the HTTP+SSE session in its query string.
        sid = req.query_params.get("session_id") if req is not None else None
        if not sid:
            raise ValueError("no session_id on this HTTP+SSE message")
        return sid
    sid = req.headers.get("mcp-session-id") if req is not None else None
    if not sid:
        # A stateless (modern-era or sessionless) request: no per-session state is possible.
        raise ValueError("no Mcp-Session-Id on this request: per-session state needs a legacy-era session")
    return sid


@mcp.tool()
def counter_increment(ctx: Context) -> dict:
    """Increment this session's counter and return it."""
    key = _session_key(ctx)
    COUNTERS[key] = COUNTERS.get(key, 0) + 1
    return {"count": COUNTERS[key]}


@mcp.tool()
def counter_get(ctx: Context) -> dict:
    """Return this session's counter."""
    return {"count": COUNTERS.get(_session_key(ctx), 0)}


@mcp.tool()
def echo(text: str) -> str:
    """Echo the input text."""
    return text


@mcp.tool()
def trace_context(ctx: Context) -> str:
    """The W3C trace context this call arrived with: its `traceparent` header
    (HTTP transports) and `params._meta.traceparent`."""
    req = ctx.request_context.request
    header = req.headers.get("traceparent") if req is not None else None
    meta = ctx.request_context.meta
    in_meta = meta.get("traceparent") if meta else None
    return json.dumps({"header": header, "meta": in_meta})


@mcp.tool()
async def slow_count(steps: int, ctx: Context) -> str:
    """Report progress `steps` times, then return."""
    for i in range(1, steps + 1):
        await ctx.report_progress(i, steps, f"step {i}/{steps}")
        await asyncio.sleep(0.02)
    return f"counted {steps}"


@mcp.resource("py://hello")
def hello() -> str:
    return "hello from the python sdk"


@mcp.prompt()
def greet(name: str) -> str:
    return f"Please greet {name}"


@mcp.custom_route("/stats", methods=["GET"])
async def stats(request: Request) -> JSONResponse:
    return JSONResponse({**STATS, "sessions": sorted(COUNTERS)})


def count_deletes(app):
    async def wrapped(scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "DELETE":
            return await app(scope, receive, send)

        async def send_and_count(message):
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                STATS["deletes"] += 1
            await send(message)

        return await app(scope, receive, send_and_count)

    return wrapped


def count_sse_streams(app):
    async def wrapped(scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != "/sse":
            return await app(scope, receive, send)
        opened = False

        async def send_and_count(message):
            nonlocal opened
            # Only the first response start counts: after the stream ends the SDK's
            # endpoint returns a (discarded) second response for the same request.
            if message["type"] == "http.response.start" and message["status"] == 200 and not opened:
                opened = True
                STATS["sse_opened"] += 1
            await send(message)

        try:
            return await app(scope, receive, send_and_count)
        finally:
            if opened:
                STATS["sse_closed"] += 1

    return wrapped


def export_spans_when_asked() -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, the SDK's own server spans (its
    OpenTelemetry middleware, on by default) are exported there over OTLP/HTTP,
    each as soon as it ends, as service `python-upstream`."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "python-upstream"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def main() -> None:
    global TRANSPORT
    export_spans_when_asked()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["streamable-http", "sse", "stdio"], default="streamable-http")
    TRANSPORT = parser.parse_args().transport
    if TRANSPORT == "stdio":
        mcp.run("stdio")
        return

    security = loopback.SECURITY
    if TRANSPORT == "sse":
        app, path = count_sse_streams(mcp.sse_app(transport_security=security, host="127.0.0.1")), "/sse"
    else:
        app, path = count_deletes(mcp.streamable_http_app(transport_security=security, host="127.0.0.1")), "/mcp"
    loopback.serve(app, path)


if __name__ == "__main__":
    sys.exit(main())
