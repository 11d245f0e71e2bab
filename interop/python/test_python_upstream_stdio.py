"""Interop: an upstream built with the official Python SDK (`mcp` 2.x `MCPServer`,
interop/python/upstreams/counter_server.py --transport stdio) as a stdio
upstream of the real `tether` binary (`command = [python, counter_server.py,
"--transport", "stdio"]`), called through Tether's Streamable HTTP endpoints
by the Python SDK client.

A stdio server serves one client, so its counter is per process: Tether must
run one process per client session (A 5x, B 3x, concurrently -> 5 and 3, two
processes, both gone when the sessions end), and with `shared = true` one
process for every session (the counter is then shared).

Peer: python-upstream-stdio (client: python-sdk). Every assertion message
names the peer, the operation and what came back.
"""

from __future__ import annotations

import pytest

from checks import (
    bounded,
    bump,
    bump_and_read_back,
    count_of,
    counter_get,
    dump,
    legacy_session,
    modern_client,
    poll,
    python_upstream_basics,
    python_upstream_modern_calls,
    reporter,
)
from conftest import PY_STDIO_COMMAND, PY_UPSTREAM

msg = reporter("python-upstream-stdio", client="python-sdk")

pytestmark = pytest.mark.anyio


async def no_counter_children(gateway, what: str, expected: str = "none within 5s") -> None:
    """Every counter_server.py child of the gateway is gone within 5 s."""
    kids = await poll(lambda: gateway.children(PY_UPSTREAM), lambda k: not k)
    assert kids == [], msg(f"child processes {what}", expected, kids)


@pytest.mark.parametrize("endpoint", ["federated", "single"])
@bounded
async def test_session_isolation_through_tether(launcher, endpoint):
    gateway = launcher.gateway({"py": {"command": PY_STDIO_COMMAND}})
    url, prefix, path = gateway.endpoint("py", endpoint)
    where = f"tether {path} -> python upstream over stdio"

    async with legacy_session(url) as a, legacy_session(url) as b:
        await bump_and_read_back((("A", a, 5), ("B", b, 3)), prefix, where, msg)
        kids = gateway.children(PY_UPSTREAM)
        assert len(kids) == 2, msg(f"child processes of tether during two sessions via {where}", "two counter servers", kids)

    # Both SDK sessions ended (DELETE): each session's process ends with it.
    await no_counter_children(gateway, f"after both sessions ended via {where}")


@bounded
async def test_basic_operations_through_tether(launcher):
    gateway = launcher.gateway({"py": {"command": PY_STDIO_COMMAND}})
    async with legacy_session(gateway.url) as session:
        await python_upstream_basics(session, "tether /mcp -> python upstream over stdio", "héllo stdio", msg)


@bounded
async def test_shared_process_shares_the_counter(launcher):
    gateway = launcher.gateway({"py": {"command": PY_STDIO_COMMAND, "shared": True}})
    where = "tether /mcp -> python upstream over stdio (shared = true)"
    async with legacy_session(gateway.url) as a, legacy_session(gateway.url) as b:
        await bump(a, "py__counter_increment", 2, where, "A", msg)
        r = await b.call_tool("py__counter_increment", {})
        assert not r.is_error and count_of(r) == 3, msg(
            f"tools/call py__counter_increment (session B, after A's 2) via {where}", "count 3 (one shared process)", dump(r)
        )
        await counter_get(a, "py__counter_get", 3, f"tools/call py__counter_get (session A) via {where}", msg)
        kids = gateway.children(PY_UPSTREAM)
        assert len(kids) == 1, msg(f"child processes of tether during two sessions via {where}", "one counter server", kids)


@bounded
async def test_modern_client_through_tether(launcher):
    """Client(mode=auto) speaks 2026-07-28 (sessionless) to Tether; Tether reaches the stdio
    server through a per-call upstream session, whose process ends with the call."""
    gateway = launcher.gateway({"py": {"command": PY_STDIO_COMMAND}})
    where = "tether /mcp -> python upstream over stdio (Client mode=auto, 2026-07-28)"
    async with modern_client(gateway.url, where, msg) as client:
        await python_upstream_modern_calls(client, where, "modern to stdio", msg)
    await no_counter_children(gateway, f"after the calls via {where}", "none within 5s (per-call processes)")
