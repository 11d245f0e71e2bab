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

from typing import Any

import anyio
import pytest

from conftest import PY_STDIO_COMMAND, PY_UPSTREAM
from mcp import Client
from test_python_sdk import MODERN_VERSION, REQUEST_TIMEOUT_S, bounded, dump, legacy_session, text_of
from test_python_upstream import bump, count_of

PEER = "python-upstream-stdio"
CLIENT = "python-sdk"

pytestmark = pytest.mark.anyio


def msg(op: str, expected: str, got: Any) -> str:
    return f"{PEER} (client {CLIENT}) {op}: expected {expected}, got {got!r}"


def counter_children(gateway) -> list[tuple[int, list[str]]]:
    """Tether's child processes running counter_server.py."""
    return [(pid, argv) for pid, argv in gateway.children() if str(PY_UPSTREAM) in argv]


async def counter_get(session, tool: str, want: int, op: str) -> None:
    r = await session.call_tool(tool, {})
    assert not r.is_error and count_of(r) == want, msg(op, f"count {want}", dump(r))


@pytest.mark.parametrize("endpoint", ["federated", "single"])
@bounded
async def test_session_isolation_through_tether(launcher, endpoint):
    gateway = launcher.gateway({"py": {"command": PY_STDIO_COMMAND}})
    if endpoint == "federated":
        url, prefix, where = gateway.url, "py__", "tether /mcp -> python upstream over stdio"
    else:
        url, prefix, where = gateway.single("py"), "", "tether /u/py/mcp -> python upstream over stdio"

    async with legacy_session(url) as a, legacy_session(url) as b:
        async with anyio.create_task_group() as tg:
            tg.start_soon(bump, a, f"{prefix}counter_increment", 5, where, "A", msg)
            tg.start_soon(bump, b, f"{prefix}counter_increment", 3, where, "B", msg)
        for label, session, want in (("A", a, 5), ("B", b, 3)):
            op = f"tools/call {prefix}counter_get (session {label}) via {where}"
            await counter_get(session, f"{prefix}counter_get", want, op)

        kids = counter_children(gateway)
        assert len(kids) == 2, msg(f"child processes of tether during two sessions via {where}", "two counter servers", kids)

    # Both SDK sessions ended (DELETE): each session's process ends with it.
    with anyio.move_on_after(5):
        while counter_children(gateway):
            await anyio.sleep(0.05)
    kids = counter_children(gateway)
    assert kids == [], msg(f"child processes after both sessions ended via {where}", "none within 5s", kids)


@bounded
async def test_basic_operations_through_tether(launcher):
    gateway = launcher.gateway({"py": {"command": PY_STDIO_COMMAND}})
    where = "tether /mcp -> python upstream over stdio"
    async with legacy_session(gateway.url) as session:
        names = sorted(t.name for t in (await session.list_tools()).tools)
        for want in ("py__echo", "py__counter_increment", "py__counter_get", "py__slow_count"):
            assert want in names, msg(f"tools/list via {where}", f"a tool named {want}", names)
        echo = await session.call_tool("py__echo", {"text": "héllo stdio"})
        assert not echo.is_error and text_of(echo) == "héllo stdio", msg(
            f"tools/call py__echo via {where}", "text 'héllo stdio'", dump(echo)
        )
        res = await session.read_resource("py://hello")
        got = [getattr(c, "text", None) for c in res.contents]
        assert got == ["hello from the python sdk"], msg(
            f"resources/read py://hello via {where}", "text 'hello from the python sdk'", dump(res)
        )
        prompt = await session.get_prompt("py__greet", {"name": "Ada"})
        got = [getattr(m.content, "text", None) for m in prompt.messages]
        assert got == ["Please greet Ada"], msg(f"prompts/get py__greet via {where}", "'Please greet Ada'", dump(prompt))

        events: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            events.append(progress)

        r = await session.call_tool("py__slow_count", {"steps": 3}, progress_callback=on_progress)
        op = f"tools/call py__slow_count(steps=3) with progress_callback via {where}"
        assert not r.is_error and text_of(r) == "counted 3", msg(op, "text 'counted 3'", dump(r))
        assert events == [1, 2, 3], msg(op, "progress 1, 2, 3 before the result", events)


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
        await counter_get(a, "py__counter_get", 3, f"tools/call py__counter_get (session A) via {where}")
        kids = counter_children(gateway)
        assert len(kids) == 1, msg(f"child processes of tether during two sessions via {where}", "one counter server", kids)


@bounded
async def test_modern_client_through_tether(launcher):
    """Client(mode=auto) speaks 2026-07-28 (sessionless) to Tether; Tether reaches the stdio
    server through a per-call upstream session, whose process ends with the call."""
    gateway = launcher.gateway({"py": {"command": PY_STDIO_COMMAND}})
    where = "tether /mcp -> python upstream over stdio (Client mode=auto, 2026-07-28)"
    async with Client(gateway.url, read_timeout_seconds=REQUEST_TIMEOUT_S, cache=None) as client:
        assert client.protocol_version == MODERN_VERSION, msg(
            f"server/discover via {where}", f"negotiated {MODERN_VERSION}", client.protocol_version
        )
        echo = await client.call_tool("py__echo", {"text": "modern to stdio"})
        assert not echo.is_error and text_of(echo) == "modern to stdio", msg(
            f"tools/call py__echo via {where}", "text 'modern to stdio'", dump(echo)
        )
        events: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            events.append(progress)

        r = await client.call_tool("py__slow_count", {"steps": 2}, progress_callback=on_progress)
        op = f"tools/call py__slow_count(steps=2) with progress_callback via {where}"
        assert text_of(r) == "counted 2" and events == [1, 2], msg(op, "'counted 2' after progress 1, 2", [dump(r), events])
    with anyio.move_on_after(5):
        while counter_children(gateway):
            await anyio.sleep(0.05)
    kids = counter_children(gateway)
    assert kids == [], msg(f"child processes after the calls via {where}", "none within 5s (per-call processes)", kids)
