"""Interop: limits on tool calls, with the official Python SDK client (legacy
ClientSession and the 2026-07-28 Client) calling the Python SDK upstream
(upstreams/counter_server.py) through the real `tether` binary.

- A per-tool rate limit (`[upstreams.shape.echo] rate_limit`) counts per
  principal (HS256 JWTs, told apart by iss|sub): alice's third call is
  refused with -32029 and `data.retryAfterMs`, bob's calls of the same tool
  go through, and alice's calls of the upstream's other tools are not limited.
  Over plain Streamable HTTP the refusal is a 429 with `Retry-After`.
- An upstream-wide `rate_limit` counts the calls of all its tools together.
- `max_concurrent_calls = 1`: while one slow call is in flight, another call
  to that upstream is refused with -32029; once it ended, calls go through.

Peer: tool-limits (client: python-sdk, upstream: python-upstream). Every
assertion message names the peer, the operation and what came back.
"""

from __future__ import annotations

import anyio
import pytest

from checks import (
    LIMIT_EXCEEDED,
    bearer,
    bounded,
    call_message,
    dump,
    era_client,
    expect_text,
    jwt_auth_toml,
    limit_error,
    plain_session,
    post_jsonrpc,
    refused,
    reporter,
    session_headers,
    text_of,
)

msg = reporter("tool-limits", client="python-sdk")

pytestmark = pytest.mark.anyio

ERAS = ["legacy", "modern"]

# Two calls, then one every 30 s: a third call right away is always refused.
TWO_A_MINUTE = {"per_minute": 2, "burst": 2}


def limited_gateway(launcher, upstream, **keys):
    """Tether with JWT authentication (no policies: everyone reaches everything)
    federating `upstream` as `py`, with the upstream keys `keys`."""
    return launcher.gateway({"py": {"url": upstream.url, **keys}}, extra=jwt_auth_toml())


async def echo_ok(client, text: str, op: str) -> None:
    expect_text(await client.call_tool("py__echo", {"text": text}), text, op, msg)


async def count_ok(client, steps: int, op: str) -> None:
    expect_text(await client.call_tool("py__slow_count", {"steps": steps}), f"counted {steps}", op, msg)


@pytest.mark.parametrize("era", ERAS)
@bounded
async def test_per_tool_rate_limit_counts_per_principal(launcher, era):
    upstream = launcher.python_upstream()
    gateway = limited_gateway(launcher, upstream, shape={"echo": {"rate_limit": TWO_A_MINUTE}})
    where = f"tether /mcp ({era} client, py__echo limited to 2 a minute per principal)"
    alice, bob = bearer("alice"), bearer("bob")

    async with era_client(era, gateway.url, where, msg, headers=alice) as client:
        for i in (1, 2):
            await echo_ok(client, f"alice {i}", f"tools/call py__echo #{i} as alice via {where}")
        op = f"tools/call py__echo #3 as alice via {where}"
        error = await refused(client.call_tool("py__echo", {"text": "alice 3"}), LIMIT_EXCEEDED, op, msg)
        retry = limit_error(error, op, msg)
        assert retry <= 60_000, msg(op, "retryAfterMs at most a minute (the bucket refills 2 a minute)", retry)

        # The limit is on echo only: the upstream's other tools still answer alice.
        for i in (1, 2, 3):
            await count_ok(client, 1, f"tools/call py__slow_count #{i} as alice, echo exhausted, via {where}")

    async with era_client(era, gateway.url, where, msg, headers=bob) as client:
        for i in (1, 2):
            await echo_ok(client, f"bob {i}", f"tools/call py__echo #{i} as bob (alice exhausted hers) via {where}")


@bounded
async def test_rate_limit_refusal_over_plain_http_is_a_429_with_retry_after(launcher):
    upstream = launcher.python_upstream()
    gateway = limited_gateway(launcher, upstream, shape={"echo": {"rate_limit": TWO_A_MINUTE}})
    where = "tether /mcp (plain HTTP, py__echo limited to 2 a minute per principal)"
    alice = bearer("alice")
    sid = plain_session(gateway.url, msg, alice)
    headers = session_headers(sid, **alice)

    for i in (1, 2):
        status, _, answer = post_jsonrpc(gateway.url, call_message("py__echo", {"text": f"n{i}"}, i), headers)
        assert status == 200 and answer and "result" in answer, msg(
            f"tools/call py__echo #{i} as alice via {where}", "200 with a result", (status, answer)
        )

    op = f"tools/call py__echo #3 as alice via {where}"
    status, got, answer = post_jsonrpc(gateway.url, call_message("py__echo", {"text": "n3"}, 3), headers)
    retry_after = got.get("Retry-After")
    assert status == 429 and retry_after and retry_after.strip().isdigit() and int(retry_after) >= 1, msg(
        op, "HTTP 429 with a Retry-After header of whole seconds >= 1", (status, dict(got), answer)
    )
    assert answer and answer.get("id") == 3 and "error" in answer, msg(op, "a JSON-RPC error for request 3", answer)
    retry_ms = limit_error(answer["error"], op, msg)
    assert int(retry_after) * 1000 >= retry_ms - 1000, msg(
        op, "Retry-After (seconds) covering data.retryAfterMs", (retry_after, retry_ms)
    )


@pytest.mark.parametrize("era", ERAS)
@bounded
async def test_upstream_rate_limit_counts_all_its_tools(launcher, era):
    upstream = launcher.python_upstream()
    gateway = limited_gateway(launcher, upstream, rate_limit={"per_minute": 3, "burst": 3})
    where = f"tether /mcp ({era} client, upstream py limited to 3 calls a minute per principal)"

    async with era_client(era, gateway.url, where, msg, headers=bearer("alice")) as client:
        await echo_ok(client, "one", f"tools/call py__echo (1st call of py) as alice via {where}")
        await count_ok(client, 1, f"tools/call py__slow_count (2nd call of py) as alice via {where}")
        r = await client.call_tool("py__trace_context", {})
        assert not r.is_error, msg(f"tools/call py__trace_context (3rd call of py) as alice via {where}", "a result", dump(r))
        for tool, args in (("py__echo", {"text": "four"}), ("py__slow_count", {"steps": 1})):
            op = f"tools/call {tool} (after 3 calls of py's tools) as alice via {where}"
            limit_error(await refused(client.call_tool(tool, args), LIMIT_EXCEEDED, op, msg), op, msg)

    async with era_client(era, gateway.url, where, msg, headers=bearer("bob")) as client:
        await echo_ok(client, "bob", f"tools/call py__echo as bob (alice exhausted the upstream's limit) via {where}")


@pytest.mark.parametrize("era", ERAS)
@bounded
async def test_max_concurrent_calls_refuses_a_second_call_in_flight(launcher, era):
    upstream = launcher.python_upstream()
    gateway = launcher.gateway({"py": {"url": upstream.url, "max_concurrent_calls": 1}})
    where = f"tether /mcp ({era} client, upstream py with max_concurrent_calls = 1)"
    steps = 50  # 20 ms a step: about a second in flight after its first progress
    started = anyio.Event()
    first: dict = {}

    async def on_progress(progress, total, message) -> None:
        started.set()

    async with era_client(era, gateway.url, where, msg) as a, era_client(era, gateway.url, where, msg) as b:

        async def slow() -> None:
            first["result"] = await a.call_tool("py__slow_count", {"steps": steps}, progress_callback=on_progress)

        async with anyio.create_task_group() as tg:
            tg.start_soon(slow)
            with anyio.fail_after(10):
                await started.wait()
            op = f"tools/call py__echo (client B) while py__slow_count (client A) is in flight via {where}"
            error = await refused(b.call_tool("py__echo", {"text": "too soon"}), LIMIT_EXCEEDED, op, msg)
            limit_error(error, op, msg)
            assert "result" not in first, msg(
                op, "the refusal while the slow call was still running", [text_of(first["result"])]
            )

        expect_text(first["result"], f"counted {steps}", f"tools/call py__slow_count(steps={steps}) via {where}", msg)
        await echo_ok(b, "now", f"tools/call py__echo (client B) after the slow call ended via {where}")
