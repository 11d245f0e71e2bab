"""Interop: an upstream built with the official Python SDK (`mcp` 2.x
`MCPServer`, interop/python/upstreams/counter_server.py) behind the real
`tether` binary, called through Tether by the Python SDK client.

The core isolation reproducer, repeated with this upstream: two client
sessions bump a per-session counter (A 5x, B 3x, concurrently) and must read
5 and 3, through exactly two upstream sessions (counted by the upstream
itself: every `initialize` its runner handled).

The upstream is left on `era = "auto"`: `MCPServer` answers both eras, and
Tether uses the legacy era (with its sessions) for client sessions, so the
per-session counter works; sessionless clients get the modern era.

Peer: python-upstream (client: python-sdk). Every assertion message names the
peer, the operation and what came back.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from test_python_sdk import MODERN_VERSION, REQUEST_TIMEOUT_S, Wire, bounded, dump, http_client, legacy_session, text_of, wait_for_stats

PEER = "python-upstream"
CLIENT = "python-sdk"

pytestmark = pytest.mark.anyio


def msg(op: str, expected: str, got: Any) -> str:
    return f"{PEER} (client {CLIENT}) {op}: expected {expected}, got {got!r}"


def count_of(result) -> int | None:
    try:
        return json.loads(text_of(result) or "")["count"]
    except (ValueError, KeyError, TypeError):
        return None


async def bump(session: ClientSession, tool: str, n: int, where: str, label: str, report=msg) -> None:
    """Calls the counter tool n times; the k-th call must return count k. `report` words failures."""
    for i in range(n):
        r = await session.call_tool(tool, {})
        assert not r.is_error and count_of(r) == i + 1, report(
            f"tools/call {tool} #{i + 1} (session {label}) via {where}", f"count {i + 1}", dump(r)
        )


@bounded
async def test_direct_without_tether(launcher):
    """Baseline: the SDK server keeps one counter per session when called directly."""
    upstream = launcher.python_upstream()
    where = "direct (no tether)"
    async with legacy_session(upstream.url) as a, legacy_session(upstream.url) as b:
        await bump(a, "counter_increment", 2, where, "A")
        await bump(b, "counter_increment", 1, where, "B")
    stats = upstream.stats()
    assert stats["initializes"] == 2 and len(stats["sessions"]) == 2, msg(
        f"two sessions {where} (upstream /stats)", "2 initializes and 2 sessions", stats
    )


@pytest.mark.parametrize("endpoint", ["federated", "single"])
@bounded
async def test_session_isolation_through_tether(launcher, endpoint):
    upstream = launcher.python_upstream()
    gateway = launcher.gateway({"py": {"url": upstream.url}})
    if endpoint == "federated":
        url, prefix, where = gateway.url, "py__", "tether /mcp -> python upstream"
    else:
        url, prefix, where = gateway.single("py"), "", "tether /u/py/mcp -> python upstream"

    async with legacy_session(url) as a, legacy_session(url) as b:
        async with anyio.create_task_group() as tg:
            tg.start_soon(bump, a, f"{prefix}counter_increment", 5, where, "A")
            tg.start_soon(bump, b, f"{prefix}counter_increment", 3, where, "B")

        for label, session, want in (("A", a, 5), ("B", b, 3)):
            r = await session.call_tool(f"{prefix}counter_get", {})
            assert not r.is_error and count_of(r) == want, msg(
                f"tools/call {prefix}counter_get (session {label}) via {where}", f"count {want}", dump(r)
            )

        stats = upstream.stats()
        assert stats["initializes"] == 2 and len(stats["sessions"]) == 2, msg(
            f"two concurrent client sessions via {where} (upstream /stats)",
            "exactly 2 upstream initializes and 2 upstream sessions using the counter",
            stats,
        )

    # Both SDK sessions closed (DELETE): Tether must end both upstream sessions.
    stats = await wait_for_stats(upstream, lambda s: s["deletes"] >= 2)
    assert stats["deletes"] == 2 and stats["initializes"] == 2, msg(
        f"closing both client sessions via {where} (upstream /stats)", "2 upstream DELETEs within 5s", stats
    )


@bounded
async def test_basic_operations_through_tether(launcher):
    upstream = launcher.python_upstream()
    gateway = launcher.gateway({"py": {"url": upstream.url}})
    where = "tether /mcp -> python upstream"
    async with legacy_session(gateway.url) as session:
        names = sorted(t.name for t in (await session.list_tools()).tools)
        for want in ("py__echo", "py__counter_increment", "py__counter_get", "py__slow_count"):
            assert want in names, msg(f"tools/list via {where}", f"a tool named {want}", names)
        echo = await session.call_tool("py__echo", {"text": "héllo python"})
        assert not echo.is_error and text_of(echo) == "héllo python", msg(
            f"tools/call py__echo via {where}", "text 'héllo python'", dump(echo)
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
async def test_modern_client_through_tether(launcher):
    """Client(mode=auto) speaks 2026-07-28 to Tether; Tether uses per-call legacy sessions upstream."""
    upstream = launcher.python_upstream()
    gateway = launcher.gateway({"py": {"url": upstream.url}})
    where = "tether /mcp -> python upstream (Client mode=auto, 2026-07-28)"
    wire = Wire()
    async with http_client(wire) as http:
        async with Client(
            streamable_http_client(gateway.url, http_client=http), read_timeout_seconds=REQUEST_TIMEOUT_S, cache=None
        ) as client:
            assert client.protocol_version == MODERN_VERSION, msg(
                f"server/discover via {where}", f"negotiated {MODERN_VERSION}", client.protocol_version
            )
            echo = await client.call_tool("py__echo", {"text": "modern to python"})
            assert not echo.is_error and text_of(echo) == "modern to python", msg(
                f"tools/call py__echo via {where}", "text 'modern to python'", dump(echo)
            )
            events: list[float] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                events.append(progress)

            r = await client.call_tool("py__slow_count", {"steps": 2}, progress_callback=on_progress)
            op = f"tools/call py__slow_count(steps=2) with progress_callback via {where}"
            assert text_of(r) == "counted 2" and events == [1, 2], msg(op, "'counted 2' after progress 1, 2", [dump(r), events])
    assert not wire.session_ids(), msg(f"responses via {where}", "no mcp-session-id header", wire.summary())
    # The upstream speaks 2026-07-28 too, so a sessionless client reaches it
    # statelessly: no upstream session is opened for it at all.
    stats = upstream.stats()
    assert stats["initializes"] == 0 and stats["deletes"] == 0, msg(
        f"upstream sessions for a 2026-07-28 client via {where} (upstream /stats)", "none (modern end to end)", stats
    )
