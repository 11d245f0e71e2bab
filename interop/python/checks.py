"""What the interop test files share.

Plain HTTP for tests that speak JSON-RPC themselves (`http`, `post_jsonrpc`,
`plain_session`). The Python SDK client's plumbing: a session over Streamable HTTP
(`legacy_session`) or over the 2024-11-05 HTTP+SSE transport (`sse_session`),
the 2026-07-28 `Client` (`modern_client`), and a record of every HTTP exchange
(`Wire`, `SseWire`). Then the checks more than one peer runs: the same calls
and the same assertions, worded for the peer by the `report` each takes (a
`reporter(peer, client)`). Last, for the policy, limit and catalogue tests:
principals (`bearer`, `jwt_auth_toml`), refusals (`refused`, `limit_error`),
the admin API (`admin_api`) and what a catalogue upstream tool received (`ran`).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import urllib.error
import urllib.request

import anyio
import httpx2
import jwt

import mcp.types as types
from mcp import Client, ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

MODERN_VERSION = "2026-07-28"
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")

TEST_TIMEOUT_S = 30  # whole-test bound
REQUEST_TIMEOUT_S = 15  # per-request bound inside the SDK session

Report = Callable[[str, str, Any], str]


def reporter(peer: str, client: str | None = None) -> Report:
    """The assertion messages of one peer: `<peer> [(client <client>)] <op>: expected <what>, got <got>`."""
    who = peer if client is None else f"{peer} (client {client})"

    def report(op: str, expected: str, got: Any) -> str:
        return f"{who} {op}: expected {expected}, got {got!r}"

    return report


# The session openers word their own checks (the handshake) for the client they are.
sdk_msg = reporter("python-sdk")
sdk_sse_msg = reporter("python-sdk-sse")


def bounded(fn):
    """Fails the test if its body runs longer than TEST_TIMEOUT_S."""

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        with anyio.fail_after(TEST_TIMEOUT_S):
            return await fn(*args, **kwargs)

    return wrapper


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


def texts(items: Iterable[Any]) -> list[str | None]:
    """The `text` of each resource content (or None where it has none)."""
    return [getattr(c, "text", None) for c in items]


def message_texts(messages: Iterable[Any]) -> list[str | None]:
    """The text of each prompt (or sampling) message."""
    return texts(m.content for m in messages)


async def tool_names(session) -> list[str]:
    return sorted(t.name for t in (await session.list_tools()).tools)


def expect_text(result: types.CallToolResult, want: str, op: str, report: Report) -> None:
    """A successful tool result whose text is exactly `want`."""
    assert not result.is_error and text_of(result) == want, report(op, f"text {want!r}", dump(result))


# --------------------------------------------------------------------------
# Client plumbing
# --------------------------------------------------------------------------


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

    def hooks(self) -> dict[str, list]:
        return {"request": [self.on_request], "response": [self.on_response]}

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


@dataclass
class SseWire(Wire):
    """`Wire`, plus the full URL (with its query string) of every request."""

    urls: list[tuple[str, str]] = field(default_factory=list)

    async def on_request(self, req: httpx2.Request) -> None:
        self.urls.append((req.method, str(req.url)))
        await super().on_request(req)

    def message_session_ids(self) -> set[str | None]:
        """The `session_id` query values of the message POSTs."""
        return {parse_qs(urlsplit(url).query).get("session_id", [None])[0] for m, url in self.urls if m == "POST"}


def http_client(wire: Wire, headers: dict[str, str] | None = None) -> httpx2.AsyncClient:
    """The SDK transport's HTTP client: recorded in `wire`, sending `headers` with every request."""
    return httpx2.AsyncClient(
        headers=headers, timeout=httpx2.Timeout(REQUEST_TIMEOUT_S, read=60.0), event_hooks=wire.hooks()
    )


@asynccontextmanager
async def _initialized(read, write, url: str, name: str, report: Report, **session_kwargs):
    """ClientSession on (read, write), after an initialize handshake that must pick a handshake-era version."""
    async with ClientSession(
        read,
        write,
        read_timeout_seconds=REQUEST_TIMEOUT_S,
        client_info=types.Implementation(name=name, version="1"),
        **session_kwargs,
    ) as session:
        init = await session.initialize()
        assert init.protocol_version in HANDSHAKE_VERSIONS, report(
            f"initialize via {url}", f"a handshake-era protocolVersion {HANDSHAKE_VERSIONS}", dump(init)
        )
        yield session


@asynccontextmanager
async def legacy_session(url: str, wire: Wire | None = None, *, headers: dict[str, str] | None = None, **session_kwargs):
    """ClientSession over streamable_http_client, after the legacy initialize handshake.
    `headers` (e.g. `bearer(...)`) go with every HTTP request."""
    wire = wire if wire is not None else Wire()
    async with http_client(wire, headers) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with _initialized(read, write, url, "tether-interop", sdk_msg, **session_kwargs) as session:
                yield session


class ToolChanges:
    """The notifications/tools/list_changed a session has heard."""

    def __init__(self) -> None:
        self.count = 0
        self._heard = anyio.Event()

    def heard(self) -> None:
        self.count += 1
        self._heard.set()

    async def wait(self, timeout_s: float = 10) -> bool:
        """Whether one arrived (since the last `wait` that saw one) within timeout_s."""
        with anyio.move_on_after(timeout_s):
            await self._heard.wait()
        seen = self._heard.is_set()
        self._heard = anyio.Event()
        return seen


@asynccontextmanager
async def session_hearing_tool_changes(url: str, where: str, report: Report):
    """A legacy ClientSession on `url` whose GET stream is open (checked): yields the
    session, the ToolChanges it hears, and the Wire."""
    changes = ToolChanges()

    async def on_message(message) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changes.heard()

    wire = Wire()
    async with legacy_session(url, wire, message_handler=on_message) as session:
        streams = await poll(lambda: [s for m, s, _ in wire.responses if m == "GET"], bool)
        assert streams == [200], report(f"the SDK's GET stream via {where}", "one GET answered 200", wire.summary())
        yield session, changes, wire


@asynccontextmanager
async def sse_session(url: str, wire: SseWire | None = None, *, headers: dict[str, str] | None = None, **session_kwargs):
    """ClientSession over the SDK's `sse_client(url)` (HTTP+SSE), after the initialize handshake.

    Every HTTP request and response of the transport is recorded in `wire`; `headers`
    (e.g. `bearer(...)`) go with every request."""
    wire = wire if wire is not None else SseWire()

    def client_factory(headers=None, timeout=None, auth=None) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, event_hooks=wire.hooks())

    async with sse_client(
        url, headers=headers, timeout=REQUEST_TIMEOUT_S, sse_read_timeout=60, httpx_client_factory=client_factory
    ) as (read, write):
        async with _initialized(read, write, url, "tether-interop-sse", sdk_sse_msg, **session_kwargs) as session:
            yield session


@asynccontextmanager
async def modern_client(
    url: str,
    where: str,
    report: Report,
    wire: Wire | None = None,
    *,
    headers: dict[str, str] | None = None,
    **client_kwargs,
):
    """The high-level `Client` (mode="auto") on `url`, which must negotiate MODERN_VERSION.

    With `wire` (or `headers`, e.g. `bearer(...)`, sent with every request), its HTTP
    exchange is recorded there (the transport is then built here); without, the Client
    is handed the URL itself."""
    async with AsyncExitStack() as stack:
        target: Any = url
        if wire is None and headers:
            wire = Wire()
        if wire is not None:
            http = await stack.enter_async_context(http_client(wire, headers))
            target = streamable_http_client(url, http_client=http)
        client = await stack.enter_async_context(
            Client(target, read_timeout_seconds=REQUEST_TIMEOUT_S, cache=None, **client_kwargs)
        )
        got = client.protocol_version if wire is None else [client.protocol_version, *wire.summary()]
        assert client.protocol_version == MODERN_VERSION, report(
            f"server/discover via {where}", f"negotiated {MODERN_VERSION}", got
        )
        yield client


def era_client(era: str, url: str, where: str, report: Report, headers: dict[str, str] | None = None, **kwargs):
    """A client of `url` in `era`: "legacy" (`legacy_session`, initialize + Mcp-Session-Id) or
    "modern" (`modern_client`, 2026-07-28); both have the same request methods (`call_tool`,
    `list_tools`, ...). Use as `async with era_client(...) as client`."""
    if era == "legacy":
        return legacy_session(url, headers=headers, **kwargs)
    if era == "modern":
        return modern_client(url, where, report, headers=headers, **kwargs)
    raise ValueError(f"unknown era {era!r}")


async def poll(fetch: Callable[[], Any], predicate: Callable[[Any], bool], timeout_s: float = 5.0) -> Any:
    """Calls fetch() until predicate holds for what it returned, or timeout_s passed; returns the last value."""
    value = fetch()
    with anyio.move_on_after(timeout_s):
        while not predicate(value):
            await anyio.sleep(0.05)
            value = fetch()
    return value


async def wait_for_stats(upstream, predicate, timeout_s: float = 5.0) -> dict:
    """Polls an upstream's /stats until predicate(stats) holds; returns the last stats."""
    return await poll(upstream.stats, predicate, timeout_s)


@dataclass
class ProgressLog:
    """A `progress_callback` that records every notification as (progress, total, message, late);
    `late` is whether `returned` was already set (the test sets it once the call returned)."""

    events: list[tuple[float, float | None, str | None, bool]] = field(default_factory=list)
    returned: bool = False

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append((progress, total, message, self.returned))

    def progress(self) -> list[float]:
        return [e[0] for e in self.events]

    def with_totals(self) -> list[tuple[float, float | None]]:
        return [(e[0], e[1]) for e in self.events]


@dataclass
class Sampler:
    """A `sampling_callback` that records every request and answers with `reply`."""

    reply: str
    stop_reason: str | None = "endTurn"
    seen: list[types.CreateMessageRequestParams] = field(default_factory=list)

    async def __call__(self, context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.seen.append(params)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=self.reply),
            model="interop-test-model",
            stop_reason=self.stop_reason,
        )


# --------------------------------------------------------------------------
# The demo upstream (`tether demo-upstream`) through Tether
# --------------------------------------------------------------------------


async def demo_basic_ops(session: ClientSession, where: str, report: Report, prefix: str = "demo__") -> None:
    """list_tools, call_tool echo, read_resource, get_prompt, list_resource_templates."""
    names = await tool_names(session)
    assert f"{prefix}echo" in names, report(f"tools/list via {where}", f"a tool named {prefix}echo", names)

    echo = await session.call_tool(f"{prefix}echo", {"text": "héllo interop"})
    expect_text(echo, "héllo interop", f"tools/call {prefix}echo via {where}", report)

    readme = await session.read_resource("demo://readme")
    assert texts(readme.contents) == ["Tether demo upstream"], report(
        f"resources/read demo://readme via {where}", "one text content 'Tether demo upstream'", dump(readme)
    )

    item = await session.read_resource("demo://items/42")
    assert texts(item.contents) == ["item 42"], report(
        f"resources/read demo://items/42 via {where}", "text 'item 42'", dump(item)
    )

    prompt = await session.get_prompt(f"{prefix}greeting", {"name": "Ada"})
    assert message_texts(prompt.messages) == ["Hello, Ada!"], report(
        f"prompts/get {prefix}greeting via {where}", "one message 'Hello, Ada!'", dump(prompt)
    )

    templates = await session.list_resource_templates()
    uris = [t.uri_template for t in templates.resource_templates]
    assert "demo://items/{id}" in uris, report(
        f"resources/templates/list via {where}", "template demo://items/{id}", dump(templates)
    )


async def progress_before_result(open_session, where: str, report: Report, steps: int = 4) -> None:
    """`demo__progress` with a progress_callback on a session from `open_session()`: every
    notification arrives, in order, before the call returns (and none after it, checked
    once the session is closed)."""
    log = ProgressLog()
    async with open_session() as session:
        result = await session.call_tool("demo__progress", {"steps": steps, "delay_ms": 50}, progress_callback=log)
        log.returned = True
        # Give any late (out-of-order) notification a chance to show up.
        await anyio.sleep(0.2)

    op = f"tools/call demo__progress(steps={steps}) with progress_callback via {where}"
    expect_text(result, f"completed {steps} steps", op, report)
    assert len(log.events) == steps, report(op, f"{steps} progress callbacks", log.events)
    assert not any(late for *_, late in log.events), report(
        op, "every progress callback before call_tool returned", log.events
    )
    progress = log.progress()
    assert all(a < b for a, b in zip(progress, progress[1:])), report(op, "strictly increasing progress", log.events)


async def sampling_round_trip(open_session, where: str, reply: str, report: Report) -> None:
    """`demo__sample` on a session from `open_session(sampling_callback=...)`: the upstream's
    sampling/createMessage reaches the client once, with the prompt, and its answer goes back."""
    sampler = Sampler(reply)
    async with open_session(sampling_callback=sampler) as session:
        result = await session.call_tool("demo__sample", {"prompt": "say something"})

    op = f"tools/call demo__sample with sampling_callback via {where}"
    seen = sampler.seen
    assert len(seen) == 1, report(op, "exactly one sampling/createMessage request to the client", [dump(p) for p in seen])
    assert any(t and "say something" in t for t in message_texts(seen[0].messages)), report(
        op, "the prompt 'say something' in the sampling request", dump(seen[0])
    )
    expect_text(result, f"sampled: {reply}", op, report)


# --------------------------------------------------------------------------
# The Python SDK upstream (upstreams/counter_server.py) through Tether
# --------------------------------------------------------------------------

PY_TOOLS = ("py__echo", "py__counter_increment", "py__counter_get", "py__slow_count")


def count_of(result) -> int | None:
    """The `count` of the counter server's JSON text result."""
    try:
        return json.loads(text_of(result) or "")["count"]
    except (ValueError, KeyError, TypeError):
        return None


async def bump(session: ClientSession, tool: str, n: int, where: str, label: str, report: Report) -> None:
    """Calls the counter tool n times; the k-th call must return count k."""
    for i in range(n):
        r = await session.call_tool(tool, {})
        assert not r.is_error and count_of(r) == i + 1, report(
            f"tools/call {tool} #{i + 1} (session {label}) via {where}", f"count {i + 1}", dump(r)
        )


async def counter_get(session, tool: str, want: int, op: str, report: Report) -> None:
    r = await session.call_tool(tool, {})
    assert not r.is_error and count_of(r) == want, report(op, f"count {want}", dump(r))


async def bump_and_read_back(sessions, prefix: str, where: str, report: Report) -> None:
    """`sessions`: (label, session, n) each. Bumps every session's counter n times, all
    sessions at once (each must count 1..n on its own), then reads each count back (n)."""
    async with anyio.create_task_group() as tg:
        for label, session, n in sessions:
            tg.start_soon(bump, session, f"{prefix}counter_increment", n, where, label, report)
    for label, session, want in sessions:
        op = f"tools/call {prefix}counter_get (session {label}) via {where}"
        await counter_get(session, f"{prefix}counter_get", want, op, report)


async def python_upstream_basics(session: ClientSession, where: str, echo: str, report: Report) -> None:
    """tools/list, echo, a resource, a prompt, and progress (slow_count) on the federated endpoint."""
    names = await tool_names(session)
    for want in PY_TOOLS:
        assert want in names, report(f"tools/list via {where}", f"a tool named {want}", names)
    r = await session.call_tool("py__echo", {"text": echo})
    expect_text(r, echo, f"tools/call py__echo via {where}", report)
    res = await session.read_resource("py://hello")
    assert texts(res.contents) == ["hello from the python sdk"], report(
        f"resources/read py://hello via {where}", "text 'hello from the python sdk'", dump(res)
    )
    prompt = await session.get_prompt("py__greet", {"name": "Ada"})
    assert message_texts(prompt.messages) == ["Please greet Ada"], report(
        f"prompts/get py__greet via {where}", "'Please greet Ada'", dump(prompt)
    )
    log = ProgressLog()
    r = await session.call_tool("py__slow_count", {"steps": 3}, progress_callback=log)
    op = f"tools/call py__slow_count(steps=3) with progress_callback via {where}"
    expect_text(r, "counted 3", op, report)
    assert log.progress() == [1, 2, 3], report(op, "progress 1, 2, 3 before the result", log.events)


async def python_upstream_modern_calls(client: Client, where: str, echo: str, report: Report) -> None:
    """echo and slow_count (with progress) from a 2026-07-28 Client."""
    r = await client.call_tool("py__echo", {"text": echo})
    expect_text(r, echo, f"tools/call py__echo via {where}", report)
    log = ProgressLog()
    r = await client.call_tool("py__slow_count", {"steps": 2}, progress_callback=log)
    op = f"tools/call py__slow_count(steps=2) with progress_callback via {where}"
    assert text_of(r) == "counted 2" and log.progress() == [1, 2], report(
        op, "'counted 2' after progress 1, 2", [dump(r), log.events]
    )


# --------------------------------------------------------------------------
# @modelcontextprotocol/server-everything through Tether
# --------------------------------------------------------------------------


async def everything_basics(call, where: str, prefix: str, report: Report) -> None:
    """list_tools, call_tool echo and get-sum, read_resource (template), get_prompt, progress.

    `call` is a ClientSession or an mcp.Client (same method names)."""
    names = await tool_names(call)
    for want in ("echo", "get-sum", "trigger-long-running-operation"):
        assert f"{prefix}{want}" in names, report(f"tools/list via {where}", f"a tool named {prefix}{want}", names)

    echo = await call.call_tool(f"{prefix}echo", {"message": "héllo everything"})
    expect_text(echo, "Echo: héllo everything", f"tools/call {prefix}echo via {where}", report)

    total = await call.call_tool(f"{prefix}get-sum", {"a": 2, "b": 40})
    assert not total.is_error and "42" in (text_of(total) or ""), report(
        f"tools/call {prefix}get-sum(2, 40) via {where}", "a text containing 42", dump(total)
    )

    res = await call.read_resource("demo://resource/dynamic/text/7")
    got = texts(res.contents)
    assert len(got) == 1 and (got[0] or "").startswith("Resource 7: This is a plaintext resource"), report(
        f"resources/read demo://resource/dynamic/text/7 via {where}",
        "one text content starting 'Resource 7: This is a plaintext resource'",
        dump(res),
    )

    prompt = await call.get_prompt(f"{prefix}args-prompt", {"city": "Paris", "state": "Texas"})
    assert message_texts(prompt.messages) == ["What's weather in Paris, Texas?"], report(
        f"prompts/get {prefix}args-prompt via {where}", "one message \"What's weather in Paris, Texas?\"", dump(prompt)
    )

    log = ProgressLog()
    op = f"tools/call {prefix}trigger-long-running-operation(duration=0.3, steps=3) with progress_callback via {where}"
    result = await call.call_tool(
        f"{prefix}trigger-long-running-operation", {"duration": 0.3, "steps": 3}, progress_callback=log
    )
    assert not result.is_error and "Long running operation completed" in (text_of(result) or ""), report(
        op, "text 'Long running operation completed...'", dump(result)
    )
    assert log.with_totals() == [(1, 3), (2, 3), (3, 3)], report(
        op, "progress (1,3), (2,3), (3,3) before the result", log.events
    )


# Plain HTTP: JSON-RPC written by hand, for clients the SDK does not model
# (trace context in a header only, a browser-opened session).

PLAIN_VERSION = "2025-11-25"


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None):
    """(status, headers, body bytes) of one request with a JSON `body`; HTTP errors are answers too."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def post_jsonrpc(url: str, message: dict, headers: dict[str, str] | None = None):
    """POSTs one JSON-RPC message, accepting JSON only (so the answer is one body):
    (status, headers, the JSON answer or None)."""
    sent = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
    status, got, raw = http("POST", url, message, sent)
    return status, got, (json.loads(raw) if raw.strip() else None)


def session_headers(sid: str, **extra: str) -> dict[str, str]:
    """The headers of a request in the plain legacy session `sid`, plus `extra`."""
    return {"Mcp-Session-Id": sid, "MCP-Protocol-Version": PLAIN_VERSION, **extra}


def plain_session(url: str, report: Report, headers: dict[str, str] | None = None) -> str:
    """A legacy session opened with plain JSON-RPC (initialize, then
    notifications/initialized): its Mcp-Session-Id. `headers` (e.g. `bearer(...)`)
    go with both requests (and must go with the session's later ones)."""
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": PLAIN_VERSION, "capabilities": {}, "clientInfo": {"name": "plain", "version": "1"}},
    }
    status, got, answer = post_jsonrpc(url, init, headers)
    sid = got.get("Mcp-Session-Id")
    assert status == 200 and sid and answer and "result" in answer, report(
        f"initialize via {url}", "200 with an Mcp-Session-Id and a result", (status, dict(got), answer)
    )
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    status, _, _ = post_jsonrpc(url, initialized, session_headers(sid, **(headers or {})))
    assert status == 202, report(f"notifications/initialized via {url}", "202", status)
    return sid


def call_message(tool: str, arguments: dict, request_id: int = 1) -> dict:
    """A `tools/call` JSON-RPC request, for `post_jsonrpc`."""
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}


# --------------------------------------------------------------------------
# Principals (HS256 JWTs), refusals, the admin API, the catalogue upstream
# --------------------------------------------------------------------------

JWT_SECRET = "interop-secret-interop-secret-32b"
ADMIN_TOKEN = "interop-admin-token-3f9a"

# JSON-RPC error codes Tether answers: an unknown tool (also one hidden, or outside a
# virtual server's selection), a policy denial, a rate or concurrency limit.
UNKNOWN_TOOL = -32602
FORBIDDEN = -32001
LIMIT_EXCEEDED = -32029


def jwt_auth_toml(*policies: dict) -> str:
    """The `[auth]` sections of a gateway that takes HS256 JWTs signed with JWT_SECRET, with
    `policies` (each a `[[auth.policies]]` table: claim, value, upstreams, tools, ...;
    none: everyone reaches everything)."""
    out = f'[auth]\nmode = "jwt"\n\n[auth.jwt]\nhs256_secret = "{JWT_SECRET}"\n\n'
    for policy in policies:
        out += "[[auth.policies]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in policy.items()) + "\n"
    return out


def bearer(sub: str, groups: Iterable[str] = ()) -> dict[str, str]:
    """The `Authorization` header of principal `sub` (issuer "interop"), member of `groups`:
    an HS256 JWT signed with JWT_SECRET, valid for an hour."""
    claims = {"sub": sub, "iss": "interop", "groups": list(groups), "exp": int(time.time()) + 3600}
    return {"Authorization": f"Bearer {jwt.encode(claims, JWT_SECRET, algorithm='HS256')}"}


async def refused(call: Awaitable[Any], code: int, op: str, report: Report, starts: str | None = None) -> types.ErrorData:
    """Awaits `call` (an SDK request), which must fail with the JSON-RPC error `code` (and a
    message starting with `starts`): the SDK raises it as `MCPError`. Returns the error."""
    want = f"JSON-RPC error {code}" + (f" with a message starting {starts!r}" if starts else "")
    try:
        got = await call
    except MCPError as e:
        assert e.error.code == code and (starts is None or e.error.message.startswith(starts)), report(
            op, want, dump(e.error)
        )
        return e.error
    raise AssertionError(report(op, want, dump(got)))


def limit_error(error: types.ErrorData | dict, op: str, report: Report) -> int:
    """Checks a limit refusal (an SDK `ErrorData` or a plain JSON-RPC `error` object): code
    -32029, a message mentioning the limit, and `data.retryAfterMs` > 0, which it returns."""
    error = error if isinstance(error, dict) else error.model_dump(mode="json", exclude_none=True)
    data = error.get("data") if isinstance(error.get("data"), dict) else {}
    retry = data.get("retryAfterMs")
    ok = error.get("code") == LIMIT_EXCEEDED and "limit" in str(error.get("message", "")).lower()
    assert ok and isinstance(retry, int) and not isinstance(retry, bool) and retry > 0, report(
        op, f"error {LIMIT_EXCEEDED}, a message about the limit, data.retryAfterMs an integer > 0", error
    )
    return retry


def admin_api(gateway, method: str, path: str, body: Any = None, token: str = ADMIN_TOKEN):
    """(status, JSON answer or None) of `<method> /admin/<path>` with the admin bearer token."""
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    status, _, raw = http(method, f"{gateway.base}/admin/{path}", body, headers)
    try:
        return status, json.loads(raw) if raw.strip() else None
    except ValueError:
        return status, raw.decode(errors="replace")


def ran(result) -> dict | None:
    """What a catalogue upstream tool answered: `{"tool": <its own name>, "arguments": {...}}`
    (from an SDK result, or a plain JSON-RPC `result` object); None if it is not that."""
    if isinstance(result, dict):
        text = next((c.get("text") for c in result.get("content", []) if c.get("type") == "text"), None)
    else:
        text = text_of(result)
    try:
        got = json.loads(text or "")
    except ValueError:
        return None
    return got if isinstance(got, dict) and "tool" in got else None
