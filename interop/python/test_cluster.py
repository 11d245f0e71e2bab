"""A cluster as teams run it: three Tether nodes on one PostgreSQL behind a
real HAProxy, round-robin without stickiness (see cluster.py), and the
official Python SDK's clients through it. Every request may land on any
node; nodes are killed and rolled while clients work.
"""

from __future__ import annotations

import json
import threading
import time

import anyio
import httpx2
import pytest

from checks import MODERN_VERSION, Sampler, dump, legacy_session, modern_client, reporter, sse_session, text_of
from cluster import Cluster, raw_session

msg = reporter("cluster")

CLIENTS = 6
CALLS = 12
# A call on a node that dies is lost within this (never retried into a double).
CALL_TIMEOUT_S = 10


@pytest.fixture
def demo(launcher):
    return launcher.upstream("legacy", name="demo-upstream")


@pytest.fixture
def moderns(launcher):
    """Two modern-era upstreams: their counter is process-wide, so each
    modern client gets one of its own."""
    return [launcher.upstream("modern", name=f"modern-{i}") for i in range(2)]


@pytest.fixture
def cluster(launcher, demo, moderns):
    upstreams = {"demo": demo.url, **{f"m{i}": m.url for i, m in enumerate(moderns)}}
    c = Cluster(launcher, upstreams)
    try:
        yield c
    finally:
        c.close()


async def increment(session, tool: str = "demo__counter_increment") -> int:
    with anyio.fail_after(CALL_TIMEOUT_S):
        result = await session.call_tool(tool, {})
    assert not result.is_error, msg(f"tools/call {tool}", "a count", dump(result))
    return int(text_of(result))


def check_counts(who: str, seen: list[int | None], calls: int, may_lose: int) -> None:
    """`seen`: each call's count, None where the call failed. The counter
    never repeats or goes back (no call ran twice, no upstream state lost);
    a lost call may or may not have run; at most `may_lose` are lost."""
    lost = seen.count(None)
    assert lost <= may_lose, msg(f"{who}: lost calls", f"at most {may_lose}", seen)
    assert len(seen) == calls, msg(f"{who}: calls made", calls, seen)
    last = 0
    pending_loss = 0
    for value in seen:
        if value is None:
            pending_loss += 1
            continue
        allowed = range(last + 1, last + 2 + pending_loss)
        assert value in allowed, msg(f"{who}: count after {last}", f"one of {list(allowed)}", seen)
        last, pending_loss = value, 0


@pytest.mark.anyio
async def test_legacy_clients_count_without_gaps_across_nodes(cluster, demo):
    counts: dict[int, list[int]] = {}

    async def client(n: int) -> None:
        async with legacy_session(cluster.url) as session:
            counts[n] = [await increment(session) for _ in range(CALLS)]

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for n in range(CLIENTS):
                tg.start_soon(client, n)
    want = list(range(1, CALLS + 1))
    for n, seen in counts.items():
        assert seen == want, msg(f"client {n}'s counter through 3 nodes", want, seen)
    stats = demo.stats()
    assert stats["initializes"] == CLIENTS, msg("upstream sessions opened", f"one per client ({CLIENTS})", stats)
    passed_on = cluster.metric("tether_passed_on_total")
    assert passed_on > 0, msg("requests passed on to their session's node", "> 0", passed_on)


@pytest.mark.anyio
async def test_http_sse_clients_post_to_any_node(cluster):
    counts: dict[int, list[int]] = {}

    async def client(n: int) -> None:
        async with sse_session(f"{cluster.lb.url}/sse") as session:
            counts[n] = [await increment(session) for _ in range(CALLS)]

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(client, n)
    for n, seen in counts.items():
        assert seen == list(range(1, CALLS + 1)), msg(f"HTTP+SSE client {n}'s counter", "1..12", seen)
    passed_on = cluster.metric("tether_passed_on_total")
    assert passed_on > 0, msg("POSTs passed on to the node holding the stream", "> 0", passed_on)


async def run_through_a_death(cluster, clients: int, calls: int, open_session, tool) -> dict[int, list[int | None]]:
    """`clients` clients make `calls` calls each through HAProxy; once every
    client made a third of its calls, node 1 is killed (SIGKILL)."""
    seen: dict[int, list[int | None]] = {n: [] for n in range(clients)}
    third = anyio.Event()

    async def client(n: int) -> None:
        async with open_session(n) as session:
            for _ in range(calls):
                try:
                    seen[n].append(await increment(session, tool(n)))
                except Exception:  # noqa: BLE001 - the outcome of a lost call is unknown
                    seen[n].append(None)
                if all(len(s) >= calls // 3 for s in seen.values()):
                    third.set()

    async def killer() -> None:
        await third.wait()
        cluster.kill(1)

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            tg.start_soon(killer)
            for n in range(clients):
                tg.start_soon(client, n)
    return seen


@pytest.mark.anyio
async def test_legacy_clients_survive_a_killed_node(cluster, demo):
    calls = 30
    seen = await run_through_a_death(
        cluster, CLIENTS, calls, lambda n: legacy_session(cluster.url), lambda n: "demo__counter_increment"
    )
    for n, values in seen.items():
        check_counts(f"legacy client {n} through a killed node", values, calls, may_lose=1)
    assert demo.stats()["initializes"] == CLIENTS, msg(
        "upstream sessions after the failover", "the same ones, re-attached", demo.stats()
    )
    adopted = cluster.metric("tether_sessions_adopted_total")
    assert adopted > 0, msg("sessions of the dead node adopted", "> 0", adopted)


@pytest.mark.anyio
async def test_modern_clients_survive_a_killed_node(cluster, moderns):
    calls = 30
    seen = await run_through_a_death(
        cluster,
        len(moderns),
        calls,
        lambda n: modern_client(cluster.url, "cluster", msg),
        lambda n: f"m{n}__counter_increment",
    )
    for n, values in seen.items():
        check_counts(f"modern client {n} through a killed node", values, calls, may_lose=1)


@pytest.mark.anyio
async def test_input_required_retry_on_another_node(cluster):
    """A 2026-07-28 client calls a tool whose legacy upstream asks for
    sampling: Tether parks the call on one node and answers input_required;
    the client's retry goes wherever HAProxy sends it."""
    sampler = Sampler("clustered reply")
    before = cluster.metric("tether_passed_on_total")
    with anyio.fail_after(60):
        for round_ in range(3):
            async with modern_client(cluster.url, "cluster", msg, sampling_callback=sampler) as client:
                result = await client.call_tool("demo__sample", {"prompt": f"round {round_}"})
            assert text_of(result) == "sampled: clustered reply", msg("sample via input_required", "the reply", dump(result))
    assert len(sampler.seen) == 3
    passed_on = cluster.metric("tether_passed_on_total") - before
    assert passed_on >= 1, msg("retries passed on to the node holding the call", ">= 1", passed_on)


def call(url: str, headers: dict, tool: str, arguments: dict | None = None, id_: int = 1) -> httpx2.Response:
    body = {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": tool, "arguments": arguments or {}}}
    return httpx2.post(url, json=body, headers={**headers, "accept": "application/json"}, timeout=10)


def call_text(url: str, headers: dict, tool: str, arguments: dict | None = None) -> str:
    r = call(url, headers, tool, arguments)
    assert r.status_code == 200, msg(f"tools/call {tool} via {url}", 200, (r.status_code, r.text))
    return r.json()["result"]["content"][0]["text"]


def test_delete_on_one_node_is_404_on_the_others_at_once(cluster):
    headers = raw_session(cluster.node_url(0))
    assert call(cluster.node_url(1), headers, "demo__counter_increment").status_code == 200
    deleted = httpx2.delete(cluster.node_url(2), headers=headers, timeout=10)
    assert deleted.status_code == 200, msg("DELETE on node 2", 200, deleted.status_code)
    for i in range(3):
        r = call(cluster.node_url(i), headers, "demo__counter_get")
        assert r.status_code == 404, msg(f"the deleted session on node {i}, at once", 404, (r.status_code, r.text))


class StreamReader(threading.Thread):
    """Reads a session's GET stream on `url` in the background, keeping
    (event id, message) of each event, until `want` events came."""

    def __init__(self, url: str, headers: dict, want: int) -> None:
        super().__init__(daemon=True)
        self.url, self.headers, self.want = url, {**headers, "accept": "text/event-stream"}, want
        self.events: list[tuple[str | None, dict]] = []
        self.status: int | None = None
        self.start()

    def run(self) -> None:
        event_id = None
        with httpx2.stream("GET", self.url, headers=self.headers, timeout=15) as r:
            self.status = r.status_code
            for line in r.iter_lines():
                if line.startswith("id:"):
                    event_id = line[3:].strip()
                elif line.startswith("data:") and line[5:].strip():
                    self.events.append((event_id, json.loads(line[5:])))
                    if len(self.events) >= self.want:
                        return


def test_get_stream_resumes_on_another_node(cluster):
    """The session lives on node 0; its GET stream is read through node 1,
    dropped, and resumed with Last-Event-ID through node 2: the events sent
    meanwhile arrive once each, in order, and nothing before them again."""
    headers = raw_session(cluster.node_url(0))
    call_text(cluster.node_url(2), headers, "demo__echo", {"text": "open the upstream session"})
    first = StreamReader(cluster.node_url(1), headers, want=1)
    # The upstream's own stream is relayed once Tether has it open.
    for _ in range(100):
        if call_text(cluster.node_url(2), headers, "demo__announce", {"message": "m0"}) == "delivered to 1 listeners":
            break
        time.sleep(0.05)
    first.join(timeout=10)
    assert first.status == 200 and [m["params"]["data"] for _, m in first.events] == ["m0"], msg(
        "the GET stream read through node 1", "one announcement, m0", (first.status, first.events)
    )
    last_id = first.events[0][0]
    for n, text in enumerate(["m1", "m2", "m3"]):
        got = call_text(cluster.node_url(n), headers, "demo__announce", {"message": text})
        assert got == "delivered to 1 listeners", msg(f"announce {text} via node {n}", "delivered", got)
    resumed = StreamReader(cluster.node_url(2), {**headers, "last-event-id": last_id}, want=3)
    resumed.join(timeout=10)
    stream, seq = last_id.rsplit("-", 1)
    want = [(f"{stream}-{int(seq) + k}", f"m{k}") for k in (1, 2, 3)]
    got = [(i, m["params"]["data"]) for i, m in resumed.events]
    assert got == want, msg("events replayed after Last-Event-ID through node 2", want, got)


@pytest.mark.anyio
async def test_rolling_restart_under_load_fails_no_call(cluster, demo):
    stop = anyio.Event()
    seen: dict[int, list[int | None]] = {n: [] for n in range(4)}
    failures: dict[int, list[str]] = {n: [] for n in range(4)}

    async def client(n: int) -> None:
        async with legacy_session(cluster.url) as session:
            while not stop.is_set():
                try:
                    seen[n].append(await increment(session))
                except Exception as e:  # noqa: BLE001
                    seen[n].append(None)
                    failures[n].append(f"{time.monotonic():.3f} {e!r}")

    async def roll() -> None:
        await anyio.sleep(0.5)
        for i in range(3):
            await anyio.to_thread.run_sync(cluster.terminate, i)
            await anyio.to_thread.run_sync(cluster.start, i)
            await anyio.to_thread.run_sync(cluster.wait_until_balanced)
        await anyio.sleep(0.5)
        stop.set()

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            tg.start_soon(roll)
            for n in range(4):
                tg.start_soon(client, n)
    for n, values in seen.items():
        check_counts(f"client {n} through a rolling restart (failures: {failures[n]})", values, len(values), may_lose=0)
        assert len(values) > 10, msg(f"client {n}'s calls during the roll", "> 10", len(values))


def test_a_node_cut_off_from_the_store_stops_serving_its_sessions(launcher, demo):
    """Node 1 loses PostgreSQL (its connections cut, new ones refused)
    while a session lives on it: node 0 adopts the session (upstream state
    intact); node 1 reports not ready and does not serve its stale copy;
    once the store is back, node 1 serves again and passes the session's
    requests on to its new home."""
    c = Cluster(launcher, {"demo": demo.url}, nodes=2, cut_store=(1,))
    try:
        headers = raw_session(c.node_url(1))
        for want in ("1", "2"):
            assert call_text(c.node_url(1), headers, "demo__counter_increment") == want
        c.cuts[1].cut()
        # After dead_after (1 s) node 0 takes node 1 for dead; node 1 lets go.
        deadline = time.monotonic() + 10
        while c.ready(1) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not c.ready(1), msg("/readyz of the node cut off from the store", 503, "still ready")
        got = call_text(c.node_url(0), headers, "demo__counter_increment")
        assert got == "3", msg("the session on node 0 after node 1 lost the store", "3 (upstream state kept)", got)
        stale = call(c.node_url(1), headers, "demo__counter_increment")
        assert stale.status_code == 503, msg("the session on the cut-off node", 503, (stale.status_code, stale.text))
        c.cuts[1].restore()
        deadline = time.monotonic() + 10
        while not c.ready(1) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.ready(1), msg("/readyz once the store is back", 200, "not ready")
        got = call_text(c.node_url(1), headers, "demo__counter_increment")
        assert got == "4", msg("the session through node 1 again", "4", got)
        assert demo.stats()["initializes"] == 1, msg("upstream sessions", "the same one throughout", demo.stats())
    finally:
        c.close()
