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

from typing import Any

import anyio
import pytest

from conftest import EVERYTHING_JS, EVERYTHING_STDIO_COMMAND, listening_sockets
from test_python_sdk import bounded, dump, legacy_session, text_of
from test_server_everything import exercise_everything

PEER = "server-everything-stdio"
CLIENT = "python-sdk"
SESSIONS_CREATED = 'tether_upstream_sessions_created_total{upstream="everything"}'

pytestmark = pytest.mark.anyio


def msg(op: str, expected: str, got: Any) -> str:
    return f"{PEER} (client {CLIENT}) {op}: expected {expected}, got {got!r}"


@pytest.fixture(autouse=True)
def _installed():
    if not EVERYTHING_JS.is_file():
        pytest.fail(f"server-everything not installed at {EVERYTHING_JS} (run interop/run.sh, or set INTEROP_NODE_DIR)")


def everything_children(gateway) -> list[tuple[int, list[str]]]:
    """Tether's child processes running server-everything."""
    return [(pid, argv) for pid, argv in gateway.children() if str(EVERYTHING_JS) in argv]


async def wait_for_children(gateway, predicate, timeout_s: float = 5.0) -> list[tuple[int, list[str]]]:
    kids = everything_children(gateway)
    with anyio.move_on_after(timeout_s):
        while not predicate(kids):
            await anyio.sleep(0.05)
            kids = everything_children(gateway)
    return kids


@bounded
async def test_basic_operations_through_tether(launcher):
    gateway = launcher.gateway({"everything": {"command": EVERYTHING_STDIO_COMMAND}})
    where = "tether /mcp -> server-everything over stdio"
    async with legacy_session(gateway.url) as session:
        await exercise_everything(session, where, prefix="everything__")
        kids = everything_children(gateway)
        assert len(kids) == 1, msg(f"child processes of tether during one session via {where}", "one server-everything", kids)
        for pid, argv in kids:
            socks = listening_sockets(pid=pid)
            assert socks == [], msg(f"listening sockets of the stdio child {pid} {argv}", "none", socks)


@bounded
async def test_single_upstream_endpoint(launcher):
    gateway = launcher.gateway({"everything": {"command": EVERYTHING_STDIO_COMMAND}})
    where = "tether /u/everything/mcp -> server-everything over stdio"
    async with legacy_session(gateway.single("everything")) as session:
        await exercise_everything(session, where, prefix="")


@bounded
async def test_one_process_per_client_session(launcher):
    gateway = launcher.gateway({"everything": {"command": EVERYTHING_STDIO_COMMAND}})
    where = "tether /mcp -> server-everything over stdio (one process per session)"
    async with legacy_session(gateway.url) as a, legacy_session(gateway.url) as b:
        for label, session in (("A", a), ("B", b)):
            r = await session.call_tool("everything__echo", {"message": f"from {label}"})
            assert not r.is_error and text_of(r) == f"Echo: from {label}", msg(
                f"tools/call everything__echo (session {label}) via {where}", f"text 'Echo: from {label}'", dump(r)
            )
        created = gateway.metrics().get(SESSIONS_CREATED)
        assert created == 2, msg(f"two client sessions via {where} (tether /metrics)", f"{SESSIONS_CREATED} 2", created)
        kids = everything_children(gateway)
        assert len(kids) == 2, msg(f"child processes of tether during two sessions via {where}", "two server-everything", kids)
        for pid, argv in kids:
            socks = listening_sockets(pid=pid)
            assert socks == [], msg(f"listening sockets of the stdio child {pid} {argv}", "none", socks)

    # Both SDK sessions ended (DELETE): their processes end with them.
    kids = await wait_for_children(gateway, lambda k: not k)
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
        kids = everything_children(gateway)
        assert len(kids) == 1, msg(f"child processes of tether during two sessions via {where}", "one server-everything", kids)
