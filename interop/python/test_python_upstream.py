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

import pytest

from checks import (
    Wire,
    bounded,
    bump,
    bump_and_read_back,
    legacy_session,
    modern_client,
    python_upstream_basics,
    python_upstream_modern_calls,
    reporter,
    wait_for_stats,
)

msg = reporter("python-upstream", client="python-sdk")

pytestmark = pytest.mark.anyio


@bounded
async def test_direct_without_tether(launcher):
    """Baseline: the SDK server keeps one counter per session when called directly."""
    upstream = launcher.python_upstream()
    where = "direct (no tether)"
    async with legacy_session(upstream.url) as a, legacy_session(upstream.url) as b:
        await bump(a, "counter_increment", 2, where, "A", msg)
        await bump(b, "counter_increment", 1, where, "B", msg)
    stats = upstream.stats()
    assert stats["initializes"] == 2 and len(stats["sessions"]) == 2, msg(
        f"two sessions {where} (upstream /stats)", "2 initializes and 2 sessions", stats
    )


@pytest.mark.parametrize("endpoint", ["federated", "single"])
@bounded
async def test_session_isolation_through_tether(launcher, endpoint):
    upstream = launcher.python_upstream()
    gateway = launcher.gateway({"py": {"url": upstream.url}})
    url, prefix, path = gateway.endpoint("py", endpoint)
    where = f"tether {path} -> python upstream"

    async with legacy_session(url) as a, legacy_session(url) as b:
        await bump_and_read_back((("A", a, 5), ("B", b, 3)), prefix, where, msg)
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
    async with legacy_session(gateway.url) as session:
        await python_upstream_basics(session, "tether /mcp -> python upstream", "héllo python", msg)


@bounded
async def test_modern_client_through_tether(launcher):
    """Client(mode=auto) speaks 2026-07-28 to Tether; Tether uses per-call legacy sessions upstream."""
    upstream = launcher.python_upstream()
    gateway = launcher.gateway({"py": {"url": upstream.url}})
    where = "tether /mcp -> python upstream (Client mode=auto, 2026-07-28)"
    wire = Wire()
    async with modern_client(gateway.url, where, msg, wire) as client:
        await python_upstream_modern_calls(client, where, "modern to python", msg)
    assert not wire.session_ids(), msg(f"responses via {where}", "no mcp-session-id header", wire.summary())
    # The upstream speaks 2026-07-28 too, so a sessionless client reaches it
    # statelessly: no upstream session is opened for it at all.
    stats = upstream.stats()
    assert stats["initializes"] == 0 and stats["deletes"] == 0, msg(
        f"upstream sessions for a 2026-07-28 client via {where} (upstream /stats)", "none (modern end to end)", stats
    )
