"""Interop: an upstream built with the official Python SDK (`mcp` 2.x `MCPServer`,
interop/python/upstreams/counter_server.py --transport sse) served over the
2024-11-05 HTTP+SSE transport (its `sse_app`: `GET /sse` + `POST /messages/`),
behind the real `tether` binary, called through Tether's Streamable HTTP `/mcp`
by the Python SDK client.

The upstream is configured with `transport = "sse"`, and with
`transport = "auto"` pointed at the same SSE URL (Tether must notice that the
URL answers POST with 405 and GET with an event stream announcing its
endpoint). Two client sessions bump the per-session counter (keyed by the
upstream's own HTTP+SSE `session_id`): A 5x, B 3x, concurrently, and must
read 5 and 3, through exactly two upstream sessions; when the clients end
their sessions (DELETE), Tether must close both upstream streams. Last,
HTTP+SSE on both sides: the SDK's `sse_client` on Tether's `/sse`.

Peer: python-upstream-sse (client: python-sdk). Every assertion message names
the peer, the operation and what came back.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from test_python_sdk import bounded, dump, legacy_session, text_of, wait_for_stats
from test_python_sdk_sse import sse_session
from test_python_upstream import bump, count_of

PEER = "python-upstream-sse"
CLIENT = "python-sdk"

pytestmark = pytest.mark.anyio


def msg(op: str, expected: str, got: Any) -> str:
    return f"{PEER} (client {CLIENT}) {op}: expected {expected}, got {got!r}"


@pytest.mark.parametrize("transport", ["sse", "auto"])
@bounded
async def test_session_isolation_through_tether(launcher, transport):
    upstream = launcher.python_upstream(transport="sse")
    gateway = launcher.gateway({"py": {"url": upstream.url, "transport": transport}})
    where = f"tether /mcp -> python upstream over HTTP+SSE (transport = {transport!r})"

    async with legacy_session(gateway.url) as a, legacy_session(gateway.url) as b:
        async with anyio.create_task_group() as tg:
            tg.start_soon(bump, a, "py__counter_increment", 5, where, "A", msg)
            tg.start_soon(bump, b, "py__counter_increment", 3, where, "B", msg)

        for label, session, want in (("A", a, 5), ("B", b, 3)):
            r = await session.call_tool("py__counter_get", {})
            assert not r.is_error and count_of(r) == want, msg(
                f"tools/call py__counter_get (session {label}) via {where}", f"count {want}", dump(r)
            )

        stats = upstream.stats()
        assert stats["initializes"] == 2 and len(stats["sessions"]) == 2, msg(
            f"two concurrent client sessions via {where} (upstream /stats)",
            "exactly 2 upstream initializes and 2 upstream HTTP+SSE sessions using the counter",
            stats,
        )
        assert stats["sse_opened"] - stats["sse_closed"] == 2, msg(
            f"two concurrent client sessions via {where} (upstream /stats)",
            "exactly 2 upstream SSE streams open (one per client session)",
            stats,
        )

    # Both SDK sessions closed (DELETE): Tether must end both upstream sessions, and for
    # HTTP+SSE that means closing their streams.
    stats = await wait_for_stats(upstream, lambda s: s["sse_closed"] >= s["sse_opened"])
    assert stats["sse_closed"] == stats["sse_opened"] and stats["initializes"] == 2, msg(
        f"closing both client sessions via {where} (upstream /stats)", "every upstream SSE stream closed within 5s", stats
    )


@bounded
async def test_basic_operations_through_tether(launcher):
    upstream = launcher.python_upstream(transport="sse")
    gateway = launcher.gateway({"py": {"url": upstream.url, "transport": "sse"}})
    where = "tether /mcp -> python upstream over HTTP+SSE"
    async with legacy_session(gateway.url) as session:
        names = sorted(t.name for t in (await session.list_tools()).tools)
        for want in ("py__echo", "py__counter_increment", "py__counter_get", "py__slow_count"):
            assert want in names, msg(f"tools/list via {where}", f"a tool named {want}", names)
        echo = await session.call_tool("py__echo", {"text": "héllo sse upstream"})
        assert not echo.is_error and text_of(echo) == "héllo sse upstream", msg(
            f"tools/call py__echo via {where}", "text 'héllo sse upstream'", dump(echo)
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
async def test_sse_client_to_sse_upstream(launcher):
    """HTTP+SSE on both sides: the SDK's sse_client on Tether's /sse, the SDK's sse_app upstream."""
    upstream = launcher.python_upstream(transport="sse")
    gateway = launcher.gateway({"py": {"url": upstream.url, "transport": "sse"}})
    where = "tether /sse -> python upstream over HTTP+SSE (client: python-sdk sse_client)"
    async with sse_session(gateway.sse()) as a, sse_session(gateway.sse()) as b:
        async with anyio.create_task_group() as tg:
            tg.start_soon(bump, a, "py__counter_increment", 4, where, "A", msg)
            tg.start_soon(bump, b, "py__counter_increment", 2, where, "B", msg)
        for label, session, want in (("A", a, 4), ("B", b, 2)):
            r = await session.call_tool("py__counter_get", {})
            assert not r.is_error and count_of(r) == want, msg(
                f"tools/call py__counter_get (session {label}) via {where}", f"count {want}", dump(r)
            )
    # The client streams closed: their sessions end, and so must the upstream streams.
    stats = await wait_for_stats(upstream, lambda s: s["sse_opened"] >= 2 and s["sse_closed"] >= s["sse_opened"])
    assert len(stats["sessions"]) == 2 and stats["sse_opened"] >= 2 and stats["sse_closed"] == stats["sse_opened"], msg(
        f"two SSE client sessions via {where} (upstream /stats)",
        "2 upstream sessions using the counter, every upstream SSE stream closed within 5s",
        stats,
    )
