"""Interop: `@modelcontextprotocol/server-everything` (npm, the MCP reference
server, run over Streamable HTTP on 127.0.0.1) as an upstream of the real
`tether` binary, called through Tether by the official Python SDK client.

Peer: server-everything (client: python-sdk). The TypeScript clients call it
too, in interop/node/server-everything.test.mjs. Every assertion message names
the peer, the operation and what came back.
"""

from __future__ import annotations

import anyio
import pytest

from checks import (
    REQUEST_TIMEOUT_S,
    Wire,
    bounded,
    dump,
    everything_basics,
    legacy_session,
    modern_client,
    reporter,
    text_of,
    texts,
    tool_names,
)
from conftest import listening_sockets

msg = reporter("server-everything", client="python-sdk")

pytestmark = pytest.mark.anyio

def test_bound_to_loopback_only(everything_server):
    port = int(everything_server.base.rsplit(":", 1)[1])
    socks = listening_sockets(port)
    assert socks == [f"127.0.0.1:{port}"], msg(
        f"listen (started with PORT=0 under loopback-only.cjs, printed {everything_server.base})",
        f"exactly one listening socket, 127.0.0.1:{port}",
        socks,
    )


@bounded
async def test_basic_operations_through_tether(launcher, everything_server):
    gateway = launcher.gateway({"everything": everything_server.url})
    where = "tether /mcp -> server-everything"
    wire = Wire()
    async with legacy_session(gateway.url, wire) as session:
        await everything_basics(session, where, "everything__", msg)
    assert wire.session_ids(), msg(f"initialize via {where}", "an mcp-session-id response header", wire.summary())


@bounded
async def test_single_upstream_endpoint(launcher, everything_server):
    gateway = launcher.gateway({"everything": everything_server.url})
    url = gateway.single("everything")
    where = "tether /u/everything/mcp -> server-everything"
    async with legacy_session(url) as session:
        await everything_basics(session, where, "", msg)
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
    async with modern_client(gateway.url, where, msg, wire) as client:
        await everything_basics(client, where, "everything__", msg)
    assert not wire.session_ids(), msg(f"responses via {where}", "no mcp-session-id header", wire.summary())


@bounded
async def test_federated_next_to_demo_upstream(launcher, everything_server):
    """Both upstreams use the demo:// scheme: reads must be routed by URI/template prefix."""
    demo = launcher.upstream("legacy")
    gateway = launcher.gateway({"demo": demo.url, "everything": everything_server.url})
    where = "tether /mcp -> demo upstream + server-everything"
    async with legacy_session(gateway.url) as session:
        tools = await tool_names(session)
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
        got = (texts(ev.contents), texts(de.contents))
        assert got[0] and (got[0][0] or "").startswith("Resource 3:") and got[1] == ["item 3"], msg(
            f"resources/read demo://resource/dynamic/text/3 and demo://items/3 via {where}",
            "'Resource 3: ...' from server-everything and 'item 3' from the demo upstream",
            got,
        )
        with anyio.fail_after(REQUEST_TIMEOUT_S):
            templates = await session.list_resource_templates()
        uris = sorted(t.uri_template for t in templates.resource_templates)
        for want in ("demo://items/{id}", "demo://resource/dynamic/text/{resourceId}"):
            assert want in uris, msg(f"resources/templates/list via {where}", f"template {want}", uris)

