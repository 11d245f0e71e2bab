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

import pytest

from checks import (
    bounded,
    bump_and_read_back,
    legacy_session,
    python_upstream_basics,
    reporter,
    sse_session,
    wait_for_stats,
)

msg = reporter("python-upstream-sse", client="python-sdk")

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("transport", ["sse", "auto"])
@bounded
async def test_session_isolation_through_tether(launcher, transport):
    upstream = launcher.python_upstream(transport="sse")
    gateway = launcher.gateway({"py": {"url": upstream.url, "transport": transport}})
    where = f"tether /mcp -> python upstream over HTTP+SSE (transport = {transport!r})"

    async with legacy_session(gateway.url) as a, legacy_session(gateway.url) as b:
        await bump_and_read_back((("A", a, 5), ("B", b, 3)), "py__", where, msg)
        stats = upstream.stats()
        op = f"two concurrent client sessions via {where} (upstream /stats)"
        assert stats["initializes"] == 2 and len(stats["sessions"]) == 2, msg(
            op, "exactly 2 upstream initializes and 2 upstream HTTP+SSE sessions using the counter", stats
        )
        assert stats["sse_opened"] - stats["sse_closed"] == 2, msg(
            op, "exactly 2 upstream SSE streams open (one per client session)", stats
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
    async with legacy_session(gateway.url) as session:
        await python_upstream_basics(session, "tether /mcp -> python upstream over HTTP+SSE", "héllo sse upstream", msg)


@bounded
async def test_sse_client_to_sse_upstream(launcher):
    """HTTP+SSE on both sides: the SDK's sse_client on Tether's /sse, the SDK's sse_app upstream."""
    upstream = launcher.python_upstream(transport="sse")
    gateway = launcher.gateway({"py": {"url": upstream.url, "transport": "sse"}})
    where = "tether /sse -> python upstream over HTTP+SSE (client: python-sdk sse_client)"
    async with sse_session(gateway.sse()) as a, sse_session(gateway.sse()) as b:
        await bump_and_read_back((("A", a, 4), ("B", b, 2)), "py__", where, msg)
    # The client streams closed: their sessions end, and so must the upstream streams.
    stats = await wait_for_stats(upstream, lambda s: s["sse_opened"] >= 2 and s["sse_closed"] >= s["sse_opened"])
    assert len(stats["sessions"]) == 2 and stats["sse_opened"] >= 2 and stats["sse_closed"] == stats["sse_opened"], msg(
        f"two SSE client sessions via {where} (upstream /stats)",
        "2 upstream sessions using the counter, every upstream SSE stream closed within 5s",
        stats,
    )
