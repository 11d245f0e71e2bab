"""Interop: the official Python MCP SDK (`mcp` 2.3.0 from PyPI) as a client of
the real `tether` binary, which federates real `tether demo-upstream` servers.

Peer: python-sdk. Every assertion message names the peer, the operation and
what came back.
"""

from __future__ import annotations

import functools
import json
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest

import mcp.types as types
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client

PEER = "python-sdk"
MODERN_VERSION = "2026-07-28"
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")

TEST_TIMEOUT_S = 30  # whole-test bound
REQUEST_TIMEOUT_S = 15  # per-request bound inside the SDK session

pytestmark = pytest.mark.anyio


def bounded(fn):
    """Fails the test if its body runs longer than TEST_TIMEOUT_S."""

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        with anyio.fail_after(TEST_TIMEOUT_S):
            return await fn(*args, **kwargs)

    return wrapper


def msg(op: str, expected: str, got: Any) -> str:
    return f"{PEER} {op}: expected {expected}, got {got!r}"


def dump(result: Any) -> Any:
    """A compact view of an SDK result for failure messages."""
    if hasattr(result, "model_dump"):
        return result.model_dump(mode="json", by_alias=True, exclude_none=True)
    return result


def text_of(result: types.CallToolResult) -> str | None:
    for block in result.content:
        if isinstance(block, types.TextContent):
            return block.text
    return None


@dataclass
class Wire:
    """What the SDK's HTTP client sent and received (via httpx2 event hooks)."""

    requests: list[tuple[str, str, dict[str, str], str]] = field(default_factory=list)
    responses: list[tuple[str, int, dict[str, str]]] = field(default_factory=list)

    async def on_request(self, req: httpx2.Request) -> None:
        body = req.content.decode(errors="replace") if req.method == "POST" else ""
        self.requests.append((req.method, req.url.path, dict(req.headers), body))

    async def on_response(self, resp: httpx2.Response) -> None:
        self.responses.append((resp.request.method, resp.status_code, dict(resp.headers)))

    def session_ids(self) -> list[str]:
        return [h["mcp-session-id"] for _, _, h in self.responses if "mcp-session-id" in h]

    def summary(self) -> list[str]:
        out = []
        for method, path, headers, body in self.requests:
            mcp_headers = {k: v for k, v in headers.items() if k.startswith("mcp-")}
            out.append(f">> {method} {path} {mcp_headers} {body[:120]}")
        for method, status, headers in self.responses:
            out.append(f"<< {method} {status} sid={headers.get('mcp-session-id')}")
        return out


def http_client(wire: Wire) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(REQUEST_TIMEOUT_S, read=60.0),
        event_hooks={"request": [wire.on_request], "response": [wire.on_response]},
    )


@asynccontextmanager
async def legacy_session(url: str, wire: Wire | None = None, **session_kwargs):
    """ClientSession over streamable_http_client, after the legacy initialize handshake."""
    wire = wire if wire is not None else Wire()
    async with http_client(wire) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(
                read,
                write,
                read_timeout_seconds=REQUEST_TIMEOUT_S,
                client_info=types.Implementation(name="tether-interop", version="1"),
                **session_kwargs,
            ) as session:
                init = await session.initialize()
                assert init.protocol_version in HANDSHAKE_VERSIONS, msg(
                    f"initialize via {url}", f"a handshake-era protocolVersion {HANDSHAKE_VERSIONS}", dump(init)
                )
                yield session


async def wait_for_stats(upstream, predicate, timeout_s: float = 5.0) -> dict:
    """Polls the demo upstream's /stats until predicate(stats) holds; returns the last stats."""
    stats = upstream.stats()
    with anyio.move_on_after(timeout_s):
        while not predicate(stats):
            await anyio.sleep(0.05)
            stats = upstream.stats()
    return stats


async def exercise_basic_ops(session: ClientSession, where: str, prefix: str = "demo__") -> None:
    """list_tools, call_tool echo, read_resource, get_prompt, list_resource_templates."""
    tools = await session.list_tools()
    names = sorted(t.name for t in tools.tools)
    assert f"{prefix}echo" in names, msg(f"tools/list via {where}", f"a tool named {prefix}echo", names)

    echo = await session.call_tool(f"{prefix}echo", {"text": "héllo interop"})
    assert not echo.is_error and text_of(echo) == "héllo interop", msg(
        f"tools/call {prefix}echo via {where}", "text 'héllo interop'", dump(echo)
    )

    readme = await session.read_resource("demo://readme")
    got = [getattr(c, "text", None) for c in readme.contents]
    assert got == ["Tether demo upstream"], msg(
        f"resources/read demo://readme via {where}", "one text content 'Tether demo upstream'", dump(readme)
    )

    item = await session.read_resource("demo://items/42")
    got = [getattr(c, "text", None) for c in item.contents]
    assert got == ["item 42"], msg(f"resources/read demo://items/42 via {where}", "text 'item 42'", dump(item))

    prompt = await session.get_prompt(f"{prefix}greeting", {"name": "Ada"})
    got = [getattr(m.content, "text", None) for m in prompt.messages]
    assert got == ["Hello, Ada!"], msg(
        f"prompts/get {prefix}greeting via {where}", "one message 'Hello, Ada!'", dump(prompt)
    )

    templates = await session.list_resource_templates()
    uris = [t.uri_template for t in templates.resource_templates]
    assert "demo://items/{id}" in uris, msg(
        f"resources/templates/list via {where}", "template demo://items/{id}", dump(templates)
    )


# --------------------------------------------------------------------------
# Legacy-era ClientSession (initialize + Mcp-Session-Id) through Tether /mcp
# --------------------------------------------------------------------------


@pytest.mark.parametrize("era", ["legacy", "modern"])
@bounded
async def test_basic_operations_through_tether(launcher, era):
    """ClientSession (legacy handshake) through Tether /mcp to a demo upstream of each era."""
    upstream = launcher.upstream(era)
    gateway = launcher.gateway({"demo": upstream.url})
    wire = Wire()
    where = f"tether /mcp -> {era} upstream"
    async with legacy_session(gateway.url, wire) as session:
        await exercise_basic_ops(session, where)
    sids = wire.session_ids()
    assert sids, msg(f"initialize via {where}", "an mcp-session-id response header", wire.summary())

    stats = upstream.stats()
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
async def test_progress_notifications_arrive_before_result(launcher, era):
    upstream = launcher.upstream(era)
    gateway = launcher.gateway({"demo": upstream.url})
    where = f"tether /mcp -> {era} upstream"
    steps = 4
    events: list[tuple[float, float | None, str | None, bool]] = []
    returned = False

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        events.append((progress, total, message, returned))

    async with legacy_session(gateway.url) as session:
        result = await session.call_tool(
            "demo__progress", {"steps": steps, "delay_ms": 50}, progress_callback=on_progress
        )
        returned = True
        # Give any late (out-of-order) notification a chance to show up.
        await anyio.sleep(0.2)

    op = f"tools/call demo__progress(steps={steps}) with progress_callback via {where}"
    assert not result.is_error and text_of(result) == f"completed {steps} steps", msg(
        op, f"text 'completed {steps} steps'", dump(result)
    )
    assert len(events) == steps, msg(op, f"{steps} progress callbacks", events)
    assert all(not late for *_, late in events), msg(op, "every progress callback before call_tool returned", events)
    progress = [e[0] for e in events]
    assert all(a < b for a, b in zip(progress, progress[1:])), msg(op, "strictly increasing progress", events)


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
    seen: list[types.CreateMessageRequestParams] = []

    async def sampling_callback(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        seen.append(params)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="a reply from the python sdk"),
            model="interop-test-model",
            stop_reason="endTurn",
        )

    async with legacy_session(gateway_legacy.url, sampling_callback=sampling_callback) as session:
        result = await session.call_tool("demo__sample", {"prompt": "say something"})

    op = f"tools/call demo__sample with sampling_callback via {where}"
    assert len(seen) == 1, msg(op, "exactly one sampling/createMessage request to the client", [dump(p) for p in seen])
    prompt_texts = [getattr(m.content, "text", None) for m in seen[0].messages]
    assert any(t and "say something" in t for t in prompt_texts), msg(
        op, "the prompt 'say something' in the sampling request", dump(seen[0])
    )
    assert not result.is_error and text_of(result) == "sampled: a reply from the python sdk", msg(
        op, "text 'sampled: a reply from the python sdk'", dump(result)
    )


@bounded
async def test_single_upstream_endpoint(gateway_legacy):
    url = gateway_legacy.single("demo")
    where = "tether /u/demo/mcp -> legacy upstream"
    async with legacy_session(url) as session:
        tools = await session.list_tools()
        names = sorted(t.name for t in tools.tools)
        assert "echo" in names and not any("__" in n for n in names), msg(
            f"tools/list via {where}", "unprefixed names including 'echo'", names
        )
        await exercise_basic_ops(session, where, prefix="")


# --------------------------------------------------------------------------
# High-level Client, default mode="auto" -> 2026-07-28 stateless era
# --------------------------------------------------------------------------


@pytest.mark.parametrize("era", ["legacy", "modern"])
@bounded
async def test_auto_client_speaks_modern_era(launcher, era):
    upstream = launcher.upstream(era)
    gateway = launcher.gateway({"demo": upstream.url})
    where = f"tether /mcp -> {era} upstream (Client mode=auto)"
    wire = Wire()
    async with http_client(wire) as http:
        async with Client(
            streamable_http_client(gateway.url, http_client=http),
            read_timeout_seconds=REQUEST_TIMEOUT_S,
            cache=None,
        ) as client:
            assert client.protocol_version == MODERN_VERSION, msg(
                f"server/discover via {where}", f"negotiated {MODERN_VERSION}", [client.protocol_version, *wire.summary()]
            )
            tools = await client.list_tools()
            names = sorted(t.name for t in tools.tools)
            assert "demo__echo" in names, msg(f"tools/list via {where}", "a tool named demo__echo", names)
            echo = await client.call_tool("demo__echo", {"text": "modern hello"})
            assert not echo.is_error and text_of(echo) == "modern hello", msg(
                f"tools/call demo__echo via {where}", "text 'modern hello'", dump(echo)
            )
            events: list[float] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                events.append(progress)

            result = await client.call_tool(
                "demo__progress", {"steps": 3, "delay_ms": 20}, progress_callback=on_progress
            )
            op = f"tools/call demo__progress(steps=3) with progress_callback via {where}"
            assert text_of(result) == "completed 3 steps", msg(op, "text 'completed 3 steps'", dump(result))
            assert events == [1, 2, 3], msg(op, "progress callbacks 1, 2, 3 before the result", events)

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
            upstream, lambda s: s["live_sessions"] == 0 and s["initializes"] == s["deletes"]
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
        stats = upstream.stats()
        assert stats["initializes"] == 0 and stats["modern_requests"] >= 3 and stats["tool_calls"] == 2, msg(
            f"modern passthrough via {where} (upstream /stats)", "0 initializes, >= 3 modern requests, 2 tool calls", stats
        )


@bounded
async def test_auto_client_sampling_via_input_required(gateway_modern):
    """2026-07-28 sampling is an input_required round trip (no server->client request):
    the modern upstream's inputRequests must reach the SDK Client through Tether, and the
    retried call with inputResponses must reach the upstream."""
    where = "tether /mcp -> modern upstream (Client mode=auto)"
    seen: list[types.CreateMessageRequestParams] = []

    async def sampling_callback(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        seen.append(params)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="modern reply"), model="interop-test-model"
        )

    async with Client(
        gateway_modern.url, read_timeout_seconds=REQUEST_TIMEOUT_S, cache=None, sampling_callback=sampling_callback
    ) as client:
        assert client.protocol_version == MODERN_VERSION, msg(
            f"server/discover via {where}", f"negotiated {MODERN_VERSION}", client.protocol_version
        )
        result = await client.call_tool("demo__sample", {"prompt": "say something"})

    op = f"tools/call demo__sample with sampling_callback via {where}"
    assert len(seen) == 1, msg(op, "exactly one sampling request (input_required round)", [dump(p) for p in seen])
    assert not result.is_error and text_of(result) == "sampled: modern reply", msg(
        op, "text 'sampled: modern reply'", dump(result)
    )
