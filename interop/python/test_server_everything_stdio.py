"""Interop: `@modelcontextprotocol/server-everything` (npm, the MCP reference
server) as a stdio upstream of the real `tether` binary
(`command = ["node", ..., "dist/index.js", "stdio"]`: Tether runs it as a child
process and speaks newline-delimited JSON-RPC on its stdin/stdout), called
through Tether's Streamable HTTP `/mcp` by the official Python SDK client.

By default Tether runs one process per client session (`shared = true`: one
for all), and a session's process ends with the session. Over stdio the
server must not listen on any socket; it runs under
interop/node/lib/loopback-only.cjs anyway, so if it ever did, it would be on
127.0.0.1 only (and the test would fail).

Peer: server-everything-stdio (client: python-sdk). Every assertion message
names the peer, the operation and what came back.
"""

from __future__ import annotations

import pytest

from checks import bounded, dump, everything_basics, expect_text, legacy_session, poll, reporter, text_of
from conftest import EVERYTHING_JS, EVERYTHING_STDIO_COMMAND, listening_sockets

SESSIONS_CREATED = 'tether_upstream_sessions_created_total{upstream="everything"}'
msg = reporter("server-everything-stdio", client="python-sdk")

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _installed():
    if not EVERYTHING_JS.is_file():
        pytest.fail(f"server-everything not installed at {EVERYTHING_JS} (run interop/run.sh, or set INTEROP_NODE_DIR)")


def check_children(gateway, n: int, during: str, what: str) -> None:
    """Tether runs exactly n server-everything processes (during ...), none of them listening on a socket."""
    kids = gateway.children(EVERYTHING_JS)
    assert len(kids) == n, msg(f"child processes of tether during {during}", what, kids)
    for pid, argv in kids:
        socks = listening_sockets(pid=pid)
        assert socks == [], msg(f"listening sockets of the stdio child {pid} {argv}", "none", socks)


@bounded
async def test_basic_operations_through_tether(launcher):
    gateway = launcher.gateway({"everything": {"command": EVERYTHING_STDIO_COMMAND}})
    where = "tether /mcp -> server-everything over stdio"
    async with legacy_session(gateway.url) as session:
        await everything_basics(session, where, "everything__", msg)
        check_children(gateway, 1, f"one session via {where}", "one server-everything")


@bounded
async def test_single_upstream_endpoint(launcher):
    gateway = launcher.gateway({"everything": {"command": EVERYTHING_STDIO_COMMAND}})
    where = "tether /u/everything/mcp -> server-everything over stdio"
    async with legacy_session(gateway.single("everything")) as session:
        await everything_basics(session, where, "", msg)


@bounded
async def test_one_process_per_client_session(launcher):
    gateway = launcher.gateway({"everything": {"command": EVERYTHING_STDIO_COMMAND}})
    where = "tether /mcp -> server-everything over stdio (one process per session)"
    async with legacy_session(gateway.url) as a, legacy_session(gateway.url) as b:
        for label, session in (("A", a), ("B", b)):
            r = await session.call_tool("everything__echo", {"message": f"from {label}"})
            expect_text(r, f"Echo: from {label}", f"tools/call everything__echo (session {label}) via {where}", msg)
        created = gateway.metrics().get(SESSIONS_CREATED)
        assert created == 2, msg(f"two client sessions via {where} (tether /metrics)", f"{SESSIONS_CREATED} 2", created)
        check_children(gateway, 2, f"two sessions via {where}", "two server-everything")

    # Both SDK sessions ended (DELETE): their processes end with them.
    kids = await poll(lambda: gateway.children(EVERYTHING_JS), lambda k: not k)
    assert kids == [], msg(f"child processes after both sessions ended via {where}", "none within 5s", kids)


@bounded
async def test_shared_process_serves_every_session(launcher):
    gateway = launcher.gateway({"everything": {"command": EVERYTHING_STDIO_COMMAND, "shared": True}})
    where = "tether /mcp -> server-everything over stdio (shared = true)"
    async with legacy_session(gateway.url) as a, legacy_session(gateway.url) as b:
        for label, session in (("A", a), ("B", b)):
            r = await session.call_tool("everything__get-sum", {"a": 40, "b": 2})
            assert not r.is_error and "42" in (text_of(r) or ""), msg(
                f"tools/call everything__get-sum(40, 2) (session {label}) via {where}", "a text containing 42", dump(r)
            )
        check_children(gateway, 1, f"two sessions via {where}", "one server-everything")
