"""Interop: `@modelcontextprotocol/server-everything` (npm, the MCP reference
server, run over Streamable HTTP on 127.0.0.1) as an upstream of the real
`tether` binary, called through Tether by the official Python SDK client.

Peer: server-everything (client: python-sdk). The TypeScript clients call it
too, in interop/node/server-everything.test.mjs. Every assertion message names
the peer, the operation and what came back.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from conftest import listening_sockets
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from test_python_sdk import (
    MODERN_VERSION,
    REQUEST_TIMEOUT_S,
    Wire,
    bounded,
    dump,
    http_client,
    legacy_session,
    text_of,
)

PEER = "server-everything"
CLIENT = "python-sdk"

pytestmark = pytest.mark.anyio


def msg(op: str, expected: str, got: Any) -> str:
    return f"{PEER} (client {CLIENT}) {op}: expected {expected}, got {got!r}"


def test_bound_to_loopback_only(everything_server):
    port = int(everything_server.base.rsplit(":", 1)[1])
    socks = listening_sockets(port)
    assert socks == [f"127.0.0.1:{port}"], msg(
        f"listen (started with PORT=0 under loopback-only.cjs, printed {everything_server.base})",
        f"exactly one listening socket, 127.0.0.1:{port}",
        socks,
    )


async def exercise_everything(call, where: str, prefix: str) -> None:
    """list_tools, call_tool echo, read_resource (template), get_prompt, progress.

    `call` is a ClientSession or an mcp.Client (same method names)."""
    tools = await call.list_tools()
    names = sorted(t.name for t in tools.tools)
    for want in ("echo", "get-sum", "trigger-long-running-operation"):
        assert f"{prefix}{want}" in names, msg(f"tools/list via {where}", f"a tool named {prefix}{want}", names)

    echo = await call.call_tool(f"{prefix}echo", {"message": "héllo everything"})
    assert not echo.is_error and text_of(echo) == "Echo: héllo everything", msg(
        f"tools/call {prefix}echo via {where}", "text 'Echo: héllo everything'", dump(echo)
    )

    total = await call.call_tool(f"{prefix}get-sum", {"a": 2, "b": 40})
    assert not total.is_error and "42" in (text_of(total) or ""), msg(
        f"tools/call {prefix}get-sum(2, 40) via {where}", "a text containing 42", dump(total)
    )

    res = await call.read_resource("demo://resource/dynamic/text/7")
    got = [getattr(c, "text", None) for c in res.contents]
    assert len(got) == 1 and (got[0] or "").startswith("Resource 7: This is a plaintext resource"), msg(
        f"resources/read demo://resource/dynamic/text/7 via {where}",
        "one text content starting 'Resource 7: This is a plaintext resource'",
        dump(res),
    )

    prompt = await call.get_prompt(f"{prefix}args-prompt", {"city": "Paris", "state": "Texas"})
    got = [getattr(m.content, "text", None) for m in prompt.messages]
    assert got == ["What's weather in Paris, Texas?"], msg(
        f"prompts/get {prefix}args-prompt via {where}", "one message \"What's weather in Paris, Texas?\"", dump(prompt)
    )

    events: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        events.append((progress, total))

    op = f"tools/call {prefix}trigger-long-running-operation(duration=0.3, steps=3) with progress_callback via {where}"
    result = await call.call_tool(
        f"{prefix}trigger-long-running-operation", {"duration": 0.3, "steps": 3}, progress_callback=on_progress
    )
    assert not result.is_error and "Long running operation completed" in (text_of(result) or ""), msg(
        op, "text 'Long running operation completed...'", dump(result)
    )
    assert events == [(1, 3), (2, 3), (3, 3)], msg(op, "progress (1,3), (2,3), (3,3) before the result", events)


@bounded
async def test_basic_operations_through_tether(launcher, everything_server):
    gateway = launcher.gateway({"everything": everything_server.url})
    where = "tether /mcp -> server-everything"
    wire = Wire()
    async with legacy_session(gateway.url, wire) as session:
        await exercise_everything(session, where, prefix="everything__")
    assert wire.session_ids(), msg(f"initialize via {where}", "an mcp-session-id response header", wire.summary())


@bounded
async def test_single_upstream_endpoint(launcher, everything_server):
    gateway = launcher.gateway({"everything": everything_server.url})
    url = gateway.single("everything")
    where = "tether /u/everything/mcp -> server-everything"
    async with legacy_session(url) as session:
        await exercise_everything(session, where, prefix="")
        prompts = await session.list_prompts()
        names = sorted(p.name for p in prompts.prompts)
        assert "simple-prompt" in names and "args-prompt" in names, msg(
            f"prompts/list via {where}", "unprefixed prompts simple-prompt and args-prompt", names
        )


@bounded
async def test_modern_client_through_tether(launcher, everything_server):
    """Client(mode=auto) speaks 2026-07-28 to Tether; Tether speaks legacy to server-everything."""
    gateway = launcher.gateway({"everything": everything_server.url})
    where = "tether /mcp -> server-everything (Client mode=auto, 2026-07-28)"
    wire = Wire()
    async with http_client(wire) as http:
        async with Client(
            streamable_http_client(gateway.url, http_client=http), read_timeout_seconds=REQUEST_TIMEOUT_S, cache=None
        ) as client:
            assert client.protocol_version == MODERN_VERSION, msg(
                f"server/discover via {where}", f"negotiated {MODERN_VERSION}", [client.protocol_version, *wire.summary()]
            )
            await exercise_everything(client, where, prefix="everything__")
    assert not wire.session_ids(), msg(f"responses via {where}", "no mcp-session-id header", wire.summary())


@bounded
async def test_federated_next_to_demo_upstream(launcher, everything_server):
    """Both upstreams use the demo:// scheme: reads must be routed by URI/template prefix."""
    demo = launcher.upstream("legacy")
    gateway = launcher.gateway({"demo": demo.url, "everything": everything_server.url})
    where = "tether /mcp -> demo upstream + server-everything"
    async with legacy_session(gateway.url) as session:
        tools = sorted(t.name for t in (await session.list_tools()).tools)
        assert "demo__echo" in tools and "everything__echo" in tools, msg(
            f"tools/list via {where}", "demo__echo and everything__echo", tools
        )
        a = await session.call_tool("everything__echo", {"message": "to everything"})
        b = await session.call_tool("demo__echo", {"text": "to demo"})
        assert (text_of(a), text_of(b)) == ("Echo: to everything", "to demo"), msg(
            f"tools/call everything__echo + demo__echo via {where}", "'Echo: to everything' and 'to demo'", [dump(a), dump(b)]
        )
        ev = await session.read_resource("demo://resource/dynamic/text/3")
        de = await session.read_resource("demo://items/3")
        got = ([getattr(c, "text", "") for c in ev.contents], [getattr(c, "text", "") for c in de.contents])
        assert got[0] and got[0][0].startswith("Resource 3:") and got[1] == ["item 3"], msg(
            f"resources/read demo://resource/dynamic/text/3 and demo://items/3 via {where}",
            "'Resource 3: ...' from server-everything and 'item 3' from the demo upstream",
            got,
        )
        with anyio.fail_after(REQUEST_TIMEOUT_S):
            templates = await session.list_resource_templates()
        uris = sorted(t.uri_template for t in templates.resource_templates)
        for want in ("demo://items/{id}", "demo://resource/dynamic/text/{resourceId}"):
            assert want in uris, msg(f"resources/templates/list via {where}", f"template {want}", uris)

