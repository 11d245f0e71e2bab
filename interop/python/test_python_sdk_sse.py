"""Interop: the official Python MCP SDK's HTTP+SSE client (`mcp.client.sse.sse_client`,
the 2024-11-05 transport) against the real `tether` binary's `/sse` and
`/u/<upstream>/sse`, which federate real `tether demo-upstream` servers.

The SDK opens `GET /sse`, reads the `endpoint` event, POSTs every message
there (202) and reads every answer from the stream. Checked: the catalogue
(prefixed on `/sse`, unchanged on `/u/demo/sse`), a per-session counter kept
per client session (one upstream session each, closed when the client's
stream ends), a modern-era (2026-07-28) upstream reached across the era
bridge, progress notifications through `call_tool(progress_callback=...)`,
and a server->client request (sampling) answered by a POST.

Peer: python-sdk-sse (the python-sdk's SSE client). Every assertion message
names the peer, the operation and what came back.
"""

from __future__ import annotations

import functools

import pytest

from checks import (
    SseWire,
    bounded,
    dump,
    expect_text,
    progress_before_result,
    reporter,
    sampling_round_trip,
    sse_session,
    text_of,
    texts,
    tool_names,
    wait_for_stats,
)
from mcp import ClientSession

msg = reporter("python-sdk-sse")

pytestmark = pytest.mark.anyio


def check_wire(wire: SseWire, stream_path: str, message_path: str, where: str) -> str:
    """One GET on the stream path (200, text/event-stream); every message POSTed to the
    announced endpoint (`message_path?session_id=ID`, one ID) and answered 202. Returns the ID."""
    gets = [path for method, path, _, _ in wire.requests if method == "GET"]
    assert gets == [stream_path], msg(f"HTTP requests via {where}", f"exactly one GET {stream_path}", wire.summary())
    get_responses = [(s, h.get("content-type", "")) for m, s, h in wire.responses if m == "GET"]
    assert len(get_responses) == 1 and get_responses[0][0] == 200 and get_responses[0][1].startswith(
        "text/event-stream"
    ), msg(f"GET {stream_path} via {where}", "200 text/event-stream", get_responses)
    posts = [path for method, path, _, _ in wire.requests if method == "POST"]
    assert posts and all(p == message_path for p in posts), msg(
        f"message POSTs via {where}", f"every POST to the announced {message_path}", wire.summary()
    )
    ids = wire.message_session_ids()
    assert len(ids) == 1 and None not in ids, msg(
        f"message POSTs via {where}", "one session_id query parameter on every POST", [u for _, u in wire.urls]
    )
    statuses = [s for m, s, _ in wire.responses if m == "POST"]
    assert statuses and all(s == 202 for s in statuses), msg(
        f"message POSTs via {where}", "202 Accepted for every POST (answers travel on the stream)", statuses
    )
    return ids.pop()


async def increment(session: ClientSession, tool: str, want: int, op: str) -> None:
    r = await session.call_tool(tool, {})
    assert not r.is_error and text_of(r) == str(want) and r.structured_content == {"count": want}, msg(
        op, f"text '{want}' and structuredContent {{'count': {want}}}", dump(r)
    )


async def counter_and_isolation(gateway, upstream, endpoint: str, where: str) -> None:
    """Session A: tools/list, echo, 3 increments (1, 2, 3); session B opened next to it
    starts at 1; both read back their own count; two upstream sessions, closed with the streams."""
    if endpoint == "federated":
        url, prefix, stream_path, message_path = gateway.sse(), "demo__", "/sse", "/message"
    else:
        url, prefix, stream_path, message_path = gateway.sse("demo"), "", "/u/demo/sse", "/u/demo/message"
    wire_a, wire_b = SseWire(), SseWire()

    async with sse_session(url, wire_a) as a:
        names = await tool_names(a)
        for tool in ("echo", "counter_increment", "counter_get", "progress"):
            assert f"{prefix}{tool}" in names, msg(f"tools/list via {where}", f"a tool named {prefix}{tool}", names)
        if not prefix:
            assert not any("__" in n for n in names), msg(f"tools/list via {where}", "unprefixed names only", names)
        echo = await a.call_tool(f"{prefix}echo", {"text": "héllo over sse"})
        expect_text(echo, "héllo over sse", f"tools/call {prefix}echo via {where}", msg)
        inc = f"{prefix}counter_increment"
        for i in range(1, 4):
            await increment(a, inc, i, f"tools/call {inc} #{i} (session A) via {where}")

        async with sse_session(url, wire_b) as b:
            await increment(b, inc, 1, f"tools/call {inc} #1 (session B) via {where}")
            for label, session, want in (("A", a, 3), ("B", b, 1)):
                r = await session.call_tool(f"{prefix}counter_get", {})
                assert text_of(r) == str(want) and r.structured_content == {"count": want}, msg(
                    f"tools/call {prefix}counter_get (session {label}) via {where}", f"count {want}", dump(r)
                )
            stats = upstream.stats()
            assert stats["initializes"] == 2 and stats["live_sessions"] == 2, msg(
                f"two SSE client sessions via {where} (upstream /stats)",
                "exactly 2 upstream initializes and 2 live upstream sessions",
                stats,
            )

    ids = [
        check_wire(w, stream_path, message_path, f"{where} (session {label})")
        for label, w in (("A", wire_a), ("B", wire_b))
    ]
    assert ids[0] != ids[1], msg(f"endpoint events via {where}", "a distinct session_id for each stream", ids)

    # Both SDK clients closed their streams: their HTTP+SSE sessions end with them, and
    # Tether must end their upstream sessions.
    stats = await wait_for_stats(upstream, lambda s: s["live_sessions"] == 0 and s["deletes"] >= 2)
    assert stats["live_sessions"] == 0 and stats["deletes"] == 2, msg(
        f"closing both SSE streams via {where} (upstream /stats)", "2 upstream deletes and 0 live sessions within 5s", stats
    )


@pytest.mark.parametrize("era", ["legacy", "dual"])
@bounded
async def test_counter_and_isolation_on_federated_sse(era_upstream, era_gateway, era):
    await counter_and_isolation(era_gateway, era_upstream, "federated", f"tether /sse -> {era} upstream")


@bounded
async def test_counter_and_isolation_on_single_upstream_sse(gateway_legacy, legacy_upstream):
    await counter_and_isolation(gateway_legacy, legacy_upstream, "single", "tether /u/demo/sse -> legacy upstream")


@bounded
async def test_legacy_sse_client_reaches_modern_upstream(gateway_modern, modern_upstream):
    """An HTTP+SSE (2024-11-05) client crosses the era bridge to a 2026-07-28-only upstream."""
    where = "tether /sse -> modern upstream"
    wire = SseWire()
    async with sse_session(gateway_modern.sse(), wire) as session:
        names = await tool_names(session)
        assert "demo__echo" in names, msg(f"tools/list via {where}", "a tool named demo__echo", names)
        echo = await session.call_tool("demo__echo", {"text": "old transport, new era"})
        expect_text(echo, "old transport, new era", f"tools/call demo__echo via {where}", msg)
        readme = await session.read_resource("demo://readme")
        assert texts(readme.contents) == ["Tether demo upstream"], msg(
            f"resources/read demo://readme via {where}", "one text content 'Tether demo upstream'", dump(readme)
        )
    check_wire(wire, "/sse", "/message", where)
    stats = modern_upstream.stats()
    assert stats["initializes"] == 0 and stats["modern_requests"] >= 2 and stats["tool_calls"] == 1, msg(
        f"era bridging via {where} (upstream /stats)", "0 initializes, >= 2 modern requests, 1 tool call", stats
    )


@pytest.mark.parametrize("era", ["legacy", "modern"])
@bounded
async def test_progress_notifications_over_sse(era_gateway, era):
    where = f"tether /sse -> {era} upstream"
    await progress_before_result(functools.partial(sse_session, era_gateway.sse()), where, msg)


@bounded
async def test_sampling_over_sse(gateway_legacy):
    """A server->client request (sampling/createMessage) travels on the stream; the SDK
    POSTs its answer to the message endpoint, and Tether hands it to the upstream."""
    where = "tether /sse -> legacy upstream"
    await sampling_round_trip(functools.partial(sse_session, gateway_legacy.sse()), where, "a reply over sse", msg)
