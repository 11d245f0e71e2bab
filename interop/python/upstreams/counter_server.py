"""An upstream MCP server built with the official Python SDK (`mcp` 2.x, `MCPServer`),
used by test_python_upstream.py as a peer nobody here wrote.

    python counter_server.py

Binds 127.0.0.1 on a free port (the OS picks it) and prints exactly one line
`python upstream listening on http://127.0.0.1:PORT/mcp` on stdout.

Streamable HTTP, stateful (legacy era: initialize + Mcp-Session-Id). Tools:
- `counter_increment` / `counter_get`: a counter per MCP session (keyed by the
  `Mcp-Session-Id` request header); text is the count, structuredContent `{"count": n}`.
- `echo {text}`, `slow_count {steps}` (progress notifications).
A resource `py://hello`, a prompt `greet {name}`.

`GET /stats` (plain HTTP, not MCP) returns what the server saw:
`{"initializes": n, "sessions": [ids that called a tool], "deletes": n}`;
initializes are counted by an SDK `ServerMiddleware` (every `initialize`
request the runner handled), deletes by an ASGI wrapper (HTTP DELETE answered 2xx).

DNS-rebinding protection stays on, with the loopback Host/Origin values allowed
explicitly (`transport_security`), so requests forwarded by a gateway on
loopback are accepted.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings

STATS: dict[str, Any] = {"initializes": 0, "deletes": 0}
COUNTERS: dict[str, int] = {}  # Mcp-Session-Id -> count


async def count_initializations(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    if ctx.method == "initialize":
        STATS["initializes"] += 1
    return await call_next(ctx)


mcp = MCPServer("tether-interop-python-upstream", version="1.0.0", middleware=[count_initializations])


def _session_key(ctx: Context) -> str:
    req = ctx.request_context.request
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


def main() -> None:
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*"],
    )
    app = mcp.streamable_http_app(transport_security=security, host="127.0.0.1")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(count_deletes(app), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    print(f"python upstream listening on http://127.0.0.1:{port}/mcp", flush=True)
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    sys.exit(main())
