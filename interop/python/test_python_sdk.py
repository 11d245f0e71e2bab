"""Interop: the official Python MCP SDK (`mcp` 2.3.0 from PyPI) as a client of
the real `tether` binary, which federates real `tether demo-upstream` servers.

Peer: python-sdk. Every assertion message names the peer, the operation and
what came back.
"""

from __future__ import annotations

import functools
import json

import anyio
import pytest

from checks import (
    ADMIN_TOKEN,
    MODERN_VERSION,
    ProgressLog,
    Sampler,
    Wire,
    admin_api,
    bounded,
    demo_basic_ops,
    dump,
    expect_text,
    legacy_session,
    modern_client,
    progress_before_result,
    reporter,
    sampling_round_trip,
    session_hearing_tool_changes,
    text_of,
    tool_names,
    wait_for_stats,
)
from mcp import ClientSession
from mcp.client.subscriptions import ToolsListChanged

msg = reporter("python-sdk")

pytestmark = pytest.mark.anyio


# --------------------------------------------------------------------------
# Legacy-era ClientSession (initialize + Mcp-Session-Id) through Tether /mcp
# --------------------------------------------------------------------------


@pytest.mark.parametrize("era", ["legacy", "modern"])
@bounded
async def test_basic_operations_through_tether(era_upstream, era_gateway, era):
    """ClientSession (legacy handshake) through Tether /mcp to a demo upstream of each era."""
    wire = Wire()
    where = f"tether /mcp -> {era} upstream"
    async with legacy_session(era_gateway.url, wire) as session:
        await demo_basic_ops(session, where, msg)
    sids = wire.session_ids()
    assert sids, msg(f"initialize via {where}", "an mcp-session-id response header", wire.summary())

    stats = era_upstream.stats()
    if era == "modern":
        # Tether bridges eras: the modern upstream never sees a handshake.
        assert stats["initializes"] == 0 and stats["modern_requests"] >= 5, msg(
            f"era bridging via {where} (upstream /stats)", "0 initializes and >= 5 modern requests", stats
        )
    else:
        assert stats["initializes"] >= 1 and stats["modern_requests"] == 0, msg(
            f"upstream session via {where} (upstream /stats)", ">= 1 initialize and 0 modern requests", stats
        )


@pytest.mark.parametrize("era", ["legacy", "modern"])
@bounded
async def test_progress_notifications_arrive_before_result(era_gateway, era):
    where = f"tether /mcp -> {era} upstream"
    await progress_before_result(functools.partial(legacy_session, era_gateway.url), where, msg)


@bounded
async def test_session_isolation_two_concurrent_sessions(gateway_legacy, legacy_upstream):
    """Two concurrent SDK sessions get separate upstream sessions (and counters)."""
    where = "tether /mcp -> legacy upstream"
    async with legacy_session(gateway_legacy.url) as a, legacy_session(gateway_legacy.url) as b:

        async def bump(session: ClientSession, label: str, n: int) -> None:
            for _ in range(n):
                r = await session.call_tool("demo__counter_increment", {})
                assert not r.is_error, msg(f"tools/call demo__counter_increment (session {label}) via {where}", "a result", dump(r))

        async with anyio.create_task_group() as tg:
            tg.start_soon(bump, a, "A", 5)
            tg.start_soon(bump, b, "B", 3)

        for label, session, want in (("A", a, 5), ("B", b, 3)):
            r = await session.call_tool("demo__counter_get", {})
            op = f"tools/call demo__counter_get (session {label}) via {where}"
            assert text_of(r) == str(want), msg(op, f"text '{want}'", dump(r))
            assert r.structured_content == {"count": want}, msg(op, f"structuredContent {{'count': {want}}}", dump(r))

        stats = legacy_upstream.stats()
        assert stats["initializes"] == 2, msg(
            f"two concurrent sessions via {where} (upstream /stats)", "exactly 2 upstream initializes", stats
        )

    # Both SDK sessions closed: the SDK sent DELETE, Tether must close both upstream sessions.
    stats = await wait_for_stats(legacy_upstream, lambda s: s["deletes"] >= 2)
    assert stats["deletes"] == 2 and stats["live_sessions"] == 0, msg(
        f"closing both sessions (SDK DELETE) via {where} (upstream /stats)",
        "2 upstream deletes and 0 live sessions within 5s",
        stats,
    )


@bounded
async def test_sampling_through_tether(gateway_legacy):
    where = "tether /mcp -> legacy upstream"
    await sampling_round_trip(functools.partial(legacy_session, gateway_legacy.url), where, "a reply from the python sdk", msg)


@bounded
async def test_single_upstream_endpoint(gateway_legacy):
    url = gateway_legacy.single("demo")
    where = "tether /u/demo/mcp -> legacy upstream"
    async with legacy_session(url) as session:
        names = await tool_names(session)
        assert "echo" in names and not any("__" in n for n in names), msg(
            f"tools/list via {where}", "unprefixed names including 'echo'", names
        )
        await demo_basic_ops(session, where, msg, prefix="")


# --------------------------------------------------------------------------
# High-level Client, default mode="auto" -> 2026-07-28 stateless era
# --------------------------------------------------------------------------


@pytest.mark.parametrize("era", ["legacy", "modern"])
@bounded
async def test_auto_client_speaks_modern_era(era_upstream, era_gateway, era):
    where = f"tether /mcp -> {era} upstream (Client mode=auto)"
    wire = Wire()
    async with modern_client(era_gateway.url, where, msg, wire) as client:
        names = await tool_names(client)
        assert "demo__echo" in names, msg(f"tools/list via {where}", "a tool named demo__echo", names)
        echo = await client.call_tool("demo__echo", {"text": "modern hello"})
        expect_text(echo, "modern hello", f"tools/call demo__echo via {where}", msg)
        log = ProgressLog()
        result = await client.call_tool("demo__progress", {"steps": 3, "delay_ms": 20}, progress_callback=log)
        op = f"tools/call demo__progress(steps=3) with progress_callback via {where}"
        assert text_of(result) == "completed 3 steps", msg(op, "text 'completed 3 steps'", dump(result))
        assert log.progress() == [1, 2, 3], msg(op, "progress callbacks 1, 2, 3 before the result", log.events)

    # The wire really was the stateless 2026-07-28 era.
    methods = [json.loads(body).get("method") if body else None for _, _, _, body in wire.requests]
    assert methods and methods[0] == "server/discover", msg(f"first request via {where}", "server/discover", wire.summary())
    assert "initialize" not in methods, msg(f"connect via {where}", "no initialize request", wire.summary())
    assert {m for m, _, _, _ in wire.requests} == {"POST"}, msg(
        f"HTTP methods via {where}", "only POST (no GET stream, no DELETE)", wire.summary()
    )
    versions = {h.get("mcp-protocol-version") for _, _, h, _ in wire.requests}
    assert versions == {MODERN_VERSION}, msg(
        f"MCP-Protocol-Version headers via {where}", f"only {MODERN_VERSION}", wire.summary()
    )
    assert not wire.session_ids(), msg(
        f"responses via {where}", "no mcp-session-id header (Tether must not mint a session)", wire.summary()
    )
    assert all(status == 200 for _, status, _ in wire.responses), msg(
        f"responses via {where}", "HTTP 200 for every request", wire.summary()
    )

    if era == "legacy":
        # Tether's per-call upstream sessions: opened for a call, closed after it.
        stats = await wait_for_stats(
            era_upstream, lambda s: s["live_sessions"] == 0 and s["initializes"] == s["deletes"]
        )
        assert (
            stats["modern_requests"] == 0
            and stats["initializes"] >= 1
            and stats["initializes"] == stats["deletes"]
            and stats["live_sessions"] == 0
            and stats["tool_calls"] == 2
        ), msg(
            f"per-call upstream sessions via {where} (upstream /stats)",
            ">= 1 initialize, each deleted again, 0 live sessions, 2 tool calls, 0 modern requests",
            stats,
        )
    else:
        stats = era_upstream.stats()
        assert stats["initializes"] == 0 and stats["modern_requests"] >= 3 and stats["tool_calls"] == 2, msg(
            f"modern passthrough via {where} (upstream /stats)", "0 initializes, >= 3 modern requests, 2 tool calls", stats
        )


@bounded
async def test_auto_client_sampling_via_input_required(gateway_modern):
    """2026-07-28 sampling is an input_required round trip (no server->client request):
    the modern upstream's inputRequests must reach the SDK Client through Tether, and the
    retried call with inputResponses must reach the upstream."""
    where = "tether /mcp -> modern upstream (Client mode=auto)"
    sampler = Sampler("modern reply", stop_reason=None)
    async with modern_client(gateway_modern.url, where, msg, sampling_callback=sampler) as client:
        result = await client.call_tool("demo__sample", {"prompt": "say something"})

    op = f"tools/call demo__sample with sampling_callback via {where}"
    seen = sampler.seen
    assert len(seen) == 1, msg(op, "exactly one sampling request (input_required round)", [dump(p) for p in seen])
    expect_text(result, "sampled: modern reply", op, msg)


# --------------------------------------------------------------------------
# Mcp-Param-* headers (x-mcp-header) across eras
# --------------------------------------------------------------------------

HEADER_TOOL = "test_custom_headers"
HEADER_ARGS = {"region": "Zürich", "priority": 5, "verbose": False}


@bounded
async def test_legacy_session_calls_a_modern_tool_that_wants_its_arguments_in_headers(launcher):
    """A modern upstream refuses a tools/call without the Mcp-Param-* headers its tool
    declares; a legacy session sends none, so Tether renders them from the tool's schema."""
    upstream = launcher.upstream("modern", profile="conformance")
    gateway = launcher.gateway({"conf": upstream.url})
    for url, tool in [(gateway.single("conf"), HEADER_TOOL), (gateway.url, f"conf__{HEADER_TOOL}")]:
        where = f"legacy ClientSession via {url} -> modern upstream"
        async with legacy_session(url) as session:
            result = await session.call_tool(tool, HEADER_ARGS)
        op = f"tools/call {tool} {HEADER_ARGS} via {where}"
        assert not result.is_error and (text_of(result) or "").startswith("Custom headers tool called with"), msg(
            op, "the tool's answer (the upstream accepted the headers)", dump(result)
        )


@pytest.mark.parametrize("era", ["legacy", "modern"])
@bounded
async def test_modern_client_headers_reach_or_are_checked_for_any_upstream(launcher, era):
    """The SDK's Client mirrors x-mcp-header arguments from the federated tools/list: a
    modern upstream checks them itself, and Tether checks them for a legacy one."""
    upstream = launcher.upstream(era, profile="conformance")
    gateway = launcher.gateway({"conf": upstream.url})
    where = f"tether /mcp -> {era} upstream (Client mode=auto)"
    wire = Wire()
    tool = f"conf__{HEADER_TOOL}"
    async with modern_client(gateway.url, where, msg, wire) as client:
        assert tool in await tool_names(client), msg(f"tools/list via {where}", f"a tool named {tool}", "missing")
        result = await client.call_tool(tool, HEADER_ARGS)
    op = f"tools/call {tool} {HEADER_ARGS} via {where}"
    assert not result.is_error and (text_of(result) or "").startswith("Custom headers tool called with"), msg(
        op, "the tool's answer", dump(result)
    )
    sent = [h for _, _, h, body in wire.requests if body and json.loads(body).get("method") == "tools/call"]
    assert sent and sent[-1].get("mcp-param-priority") == "5", msg(
        f"{op}: request headers", "Mcp-Param-Priority: 5 (rendered by the SDK)", wire.summary()
    )


# --------------------------------------------------------------------------
# subscriptions/listen over upstreams of both eras
# --------------------------------------------------------------------------


@pytest.mark.parametrize("upstream_era", ["legacy", "modern"])
@bounded
async def test_a_list_change_caused_by_the_first_call_reaches_a_legacy_client(launcher, upstream_era):
    """A legacy ClientSession holding its GET stream makes its first call to an upstream
    (the call that opens its upstream session), and the call changes that upstream's
    tool list. A legacy upstream says so on its own GET stream, not in the call's
    answer, so that stream must be open before the call reaches the upstream; a modern
    one has no GET stream and says so on a `subscriptions/listen` stream, which Tether
    opens for the client and tells it of as a plain list change. After the upstream's
    sessions are closed (admin API) the next call opens new ones, and a change is
    heard once: what relayed the closed session's stream is gone."""
    up = launcher.upstream(upstream_era, profile="conformance")
    gateway = launcher.gateway({"up": up.url}, env={"TETHER_ADMIN__TOKEN": ADMIN_TOKEN})
    where = f"tether /mcp -> {upstream_era} upstream (ClientSession holding its GET stream)"
    async with session_hearing_tool_changes(gateway.url, where, msg) as (session, changes, wire):
        for round, before in (("first call", "nothing"), ("after the upstream sessions were closed", "evict")):
            if before == "evict":
                status, answer = admin_api(gateway, "DELETE", "upstreams/up/sessions")
                assert status == 200 and answer["closed_sessions"] == 1, msg(
                    "DELETE /admin/upstreams/up/sessions", "200, one session closed", (status, answer)
                )
            result = await session.call_tool("up__test_trigger_tool_change", {})
            assert "changed" in (text_of(result) or ""), msg(
                f"tools/call up__test_trigger_tool_change via {where}, {round}", "the tool's answer", dump(result)
            )
            assert await changes.wait(), msg(
                f"notifications after up__test_trigger_tool_change via {where}, {round}",
                "notifications/tools/list_changed within 10 s",
                wire.summary(),
            )
        await anyio.sleep(1)
    assert changes.count == 2, msg(
        f"notifications/tools/list_changed heard via {where}", "one per change (2)", changes.count
    )


@bounded
async def test_listen_on_the_federated_endpoint_hears_both_eras(launcher):
    """One `Client.listen()` stream on /mcp: tool-list changes of a legacy upstream (its GET
    stream, bridged) and of a modern one (its own listen stream) both arrive; prompt
    changes, not asked for, do not."""
    old = launcher.upstream("legacy", profile="conformance")
    new = launcher.upstream("modern", profile="conformance")
    gateway = launcher.gateway({"old": old.url, "new": new.url})
    where = "tether /mcp -> legacy + modern upstreams (Client.listen)"
    async with modern_client(gateway.url, where, msg) as client:
        async with client.listen(tools_list_changed=True) as sub:
            honored = sub.honored.model_dump(by_alias=True, exclude_none=True)
            assert honored.get("toolsListChanged") is True and not honored.get("promptsListChanged"), msg(
                f"acknowledgement via {where}", "toolsListChanged honoured, nothing else", honored
            )
            events = aiter(sub)
            for upstream in ("old", "new"):
                await client.call_tool(f"{upstream}__test_trigger_prompt_change", {})
                await client.call_tool(f"{upstream}__test_trigger_tool_change", {})
                with anyio.fail_after(10):
                    event = await anext(events)
                assert isinstance(event, ToolsListChanged), msg(
                    f"first event after {upstream}'s prompt then tool change via {where}", "ToolsListChanged", event
                )
