"""Interop: progressive discovery (`[federation] progressive_discovery = true`,
or a virtual server's `progressive_discovery`) with the official Python SDK
client (legacy ClientSession and the 2026-07-28 Client), through the real
`tether` binary federating three catalogue upstreams built with the SDK
(upstreams/catalogue_server.py: "devtools", "workplace" and "data", over 200
tools together; every tool answers `{"tool": <its own name>, "arguments":
<what it received>}`).

- tools/list shows exactly the two meta-tools, `search_tools` and `call_tool`.
- For a table of natural-language queries, `search_tools` ranks the right
  tool first (or, for the few honestly ambiguous ones, in the top 3);
  `call_tool` with the name found runs that upstream tool with the arguments
  given, and a direct tools/call of the name works too.
- A virtual server with progressive discovery finds and calls only the tools
  of its selection.
- An upstream with `progressive_discovery` lists the meta-tools on
  `/u/<upstream>/mcp` only, and finds and calls its own tools by the names
  it shows there.
- A session holding its GET stream hears `notifications/tools/list_changed`
  when an upstream is added through the admin API, and `search_tools` then
  finds the new upstream's tools.

Peer: progressive-discovery (client: python-sdk, upstream: catalogue-server).
Every assertion message names the peer, the operation and what came back.
"""

from __future__ import annotations

import json

import anyio
import pytest

from checks import (
    ADMIN_TOKEN,
    UNKNOWN_TOOL,
    admin_api,
    bounded,
    dump,
    era_client,
    legacy_session,
    ran,
    refused,
    reporter,
    session_hearing_tool_changes,
    text_of,
    tool_names,
)
from conftest import Launcher, toml_table, toml_tables

msg = reporter("progressive-discovery", client="python-sdk")

pytestmark = pytest.mark.anyio

ERAS = ["legacy", "modern"]
META_TOOLS = ["call_tool", "search_tools"]
# Upstream name -> catalogue.
CATALOGUES = {"dev": "devtools", "work": "workplace", "data": "data"}
PROGRESSIVE = toml_table("federation", {"progressive_discovery": True})

# (query, the tool it should find, the rank it must have at worst, arguments to call it with).
# Ranked by a lexical BM25 over names, titles, descriptions and parameters: every query's
# words are in its tool's name or description and few others'. The two with a worst rank
# of 3 are honestly ambiguous: their siblings (approve/close a pull request; approve/cancel
# a time off request) share all their words.
QUERIES = [
    ("create a github issue", "dev__create_issue", 1, {"repository": "acme/web", "title": "Login page is broken"}),
    ("send an email to a colleague", "work__send_email", 1,
     {"to": ["ada@example.com"], "subject": "Lunch", "body": "Noon at the usual place?"}),
    ("convert dollars to euros", "data__convert_currency", 1, {"amount": 120.5, "from_currency": "USD", "to_currency": "EUR"}),
    ("weather forecast for Paris", "work__get_weather_forecast", 1, {"city": "Paris", "days": 3}),
    ("translate text into French", "work__translate_text", 1, {"text": "Good morning", "target_language": "fr"}),
    ("book a meeting room", "work__book_meeting_room", 1,
     {"room_id": "oak-2", "start": "2030-01-07T10:00:00Z", "end": "2030-01-07T11:00:00Z"}),
    ("run a SQL query on the data warehouse", "data__run_sql_query", 1, {"sql": "select count(*) from orders", "limit": 10}),
    ("merge a pull request", "dev__merge_pull_request", 1, {"repository": "acme/web", "number": 42, "method": "squash"}),
    ("rerun a failed CI workflow", "dev__rerun_workflow_run", 1, {"repository": "acme/web", "run_id": 7, "failed_only": True}),
    ("stock price for a ticker symbol", "data__get_stock_quote", 1, {"symbol": "ACME"}),
    ("decode a JWT token", "dev__decode_jwt_token", 1, {"token": "e30.e30."}),
    ("geocode a street address to latitude and longitude", "data__geocode_address", 1, {"address": "1 Main Street, Springfield"}),
    ("find a free time slot in everyone's calendars", "work__find_free_time_slot", 1,
     {"people": ["ada@example.com", "alan@example.com"], "duration_minutes": 30}),
    ("monthly mortgage payment", "data__calculate_mortgage_payment", 1, {"principal": 300000, "annual_rate": 3.5, "years": 25}),
    ("scan a container image for vulnerabilities", "dev__scan_container_image", 1, {"image": "web:1.4.0"}),
    ("roll back a deployment", "dev__rollback_deployment", 1, {"service": "checkout", "deployment_id": "d-118"}),
    ("list open pull requests", "dev__list_pull_requests", 3, {"repository": "acme/web", "limit": 20}),
    ("request time off", "work__create_leave_request", 3, {"first_day": "2030-08-01", "last_day": "2030-08-14"}),
]


@pytest.fixture(scope="module")
def catalogues(tmp_path_factory):
    """The three catalogue upstreams, shared by this module's tests (they keep no state)."""
    launcher = Launcher(tmp_path_factory.mktemp("catalogues"))
    try:
        yield {name: launcher.catalogue_upstream(cat, name=f"catalogue-{cat}") for name, cat in CATALOGUES.items()}
    finally:
        launcher.stop_all()


def own_name(name: str) -> str:
    """The upstream's own name of a prefixed tool name."""
    return name.split("__", 1)[1]


async def search(client, query: str, where: str, limit: int | None = None) -> list[dict]:
    """`search_tools` results: name, description, inputSchema (and title, annotations) each,
    in structuredContent and, the same JSON, in the one text content."""
    args = {"query": query} if limit is None else {"query": query, "limit": limit}
    r = await client.call_tool("search_tools", args)
    op = f"tools/call search_tools {args} via {where}"
    found = (r.structured_content or {}).get("tools")
    assert not r.is_error and isinstance(found, list), msg(op, 'structuredContent {"tools": [...]}', dump(r))
    try:
        text = json.loads(text_of(r) or "")
    except ValueError:
        text = text_of(r)
    assert text == r.structured_content, msg(op, "the text content: the structuredContent's JSON", dump(r))
    for tool in found:
        assert {"name", "description", "inputSchema"} <= tool.keys(), msg(
            op, "name, description and inputSchema for every tool found", tool
        )
    return found


@bounded
async def test_catalogues_hold_over_200_tools(catalogues):
    total = 0
    for name, proc in catalogues.items():
        where = f"catalogue upstream {CATALOGUES[name]} directly (no tether)"
        async with legacy_session(proc.url) as session:
            names = [t.name for t in (await session.list_tools()).tools]
        assert 70 <= len(names) <= 80 and len(set(names)) == len(names), msg(
            f"tools/list via {where}", "70-80 tools, no name twice", names
        )
        total += len(names)
    assert total >= 200, msg("tools/list of the three catalogue upstreams", ">= 200 tools together", total)


@pytest.mark.parametrize("era", ERAS)
@bounded
async def test_only_the_meta_tools_are_listed(launcher, catalogues, era):
    gateway = launcher.gateway({n: p.url for n, p in catalogues.items()}, extra=PROGRESSIVE)
    where = f"tether /mcp with progressive discovery ({era} client)"
    async with era_client(era, gateway.url, where, msg) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
    assert sorted(listed) == META_TOOLS, msg(f"tools/list via {where}", f"exactly {META_TOOLS}", sorted(listed))

    search_schema = listed["search_tools"].input_schema
    props = search_schema.get("properties", {})
    assert (
        props.get("query", {}).get("type") == "string"
        and props.get("limit", {}).get("type") == "integer"
        and search_schema.get("required") == ["query"]
    ), msg(f"search_tools' inputSchema via {where}", "query: string (required), limit: integer", search_schema)
    call_schema = listed["call_tool"].input_schema
    props = call_schema.get("properties", {})
    assert (
        props.get("name", {}).get("type") == "string"
        and props.get("arguments", {}).get("type") == "object"
        and call_schema.get("required") == ["name"]
    ), msg(f"call_tool's inputSchema via {where}", "name: string (required), arguments: object", call_schema)


@pytest.mark.parametrize("era", ERAS)
@bounded
async def test_search_finds_and_calls_the_right_tool(launcher, catalogues, era):
    gateway = launcher.gateway({n: p.url for n, p in catalogues.items()}, extra=PROGRESSIVE)
    where = f"tether /mcp with progressive discovery over 3 catalogue upstreams ({era} client)"
    async with era_client(era, gateway.url, where, msg) as client:
        for query, want, worst, args in QUERIES:
            names = [t["name"] for t in await search(client, query, where)]
            assert want in names[:worst], msg(
                f"search_tools {query!r} via {where}",
                f"{want} {'first' if worst == 1 else f'in the top {worst}'}",
                names,
            )
            expected = {"tool": own_name(want), "arguments": args}
            got = ran(await client.call_tool("call_tool", {"name": want, "arguments": args}))
            assert got == expected, msg(f"tools/call call_tool({want}, {args}) via {where}", expected, got)
            got = ran(await client.call_tool(want, args))
            assert got == expected, msg(f"tools/call {want} (directly) via {where}", expected, got)

        # Many tools match "list": the default limit is 8, and `limit` is honoured.
        counts = [len(await search(client, "list", where, limit)) for limit in (None, 3, 20)]
        assert counts == [8, 3, 20], msg(
            f"search_tools 'list' with limit unset, 3, 20 via {where}", "8, 3 and 20 tools", counts
        )
        found = await search(client, "create a github issue", where, 1)
        assert found and found[0]["inputSchema"].get("required") == ["repository", "title"], msg(
            f"search_tools 'create a github issue' via {where}", "dev__create_issue's inputSchema", found
        )


@pytest.mark.parametrize("era", ERAS)
@bounded
async def test_virtual_server_search_stays_in_its_selection(launcher, catalogues, era):
    extra = toml_tables("virtual_servers", {"name": "devs", "tools": ["dev__*"], "progressive_discovery": True})
    gateway = launcher.gateway({n: p.url for n, p in catalogues.items()}, extra=extra)
    url = gateway.virtual("devs")
    where = f"tether /v/devs/mcp (dev__* with progressive discovery, {era} client)"
    async with era_client(era, url, where, msg) as client:
        names = await tool_names(client)
        assert names == META_TOOLS, msg(f"tools/list via {where}", f"exactly {META_TOOLS}", names)
        for query in ("convert dollars to euros", "send an email to a colleague", "create a github issue"):
            found = [t["name"] for t in await search(client, query, where, 50)]
            assert all(n.startswith("dev__") for n in found), msg(
                f"search_tools {query!r} via {where}", "only dev__ tools", found
            )
        assert found[:1] == ["dev__create_issue"], msg(
            f"search_tools 'create a github issue' via {where}", "dev__create_issue first", found
        )
        args = {"repository": "acme/web", "title": "Search is slow"}
        for how, tool, arguments in (
            ("call_tool(dev__create_issue)", "call_tool", {"name": "dev__create_issue", "arguments": args}),
            ("dev__create_issue (directly)", "dev__create_issue", args),
        ):
            got = ran(await client.call_tool(tool, arguments))
            assert got == {"tool": "create_issue", "arguments": args}, msg(
                f"tools/call {how} via {where}", "the upstream's create_issue", got
            )
        money = {"amount": 1, "from_currency": "USD", "to_currency": "EUR"}
        await refused(
            client.call_tool("call_tool", {"name": "data__convert_currency", "arguments": money}),
            UNKNOWN_TOOL,
            f"tools/call call_tool(data__convert_currency) (outside the selection) via {where}",
            msg,
            starts="Unknown tool",
        )


@pytest.mark.parametrize("era", ERAS)
@bounded
async def test_an_upstream_endpoint_opts_in(launcher, catalogues, era):
    upstreams = {n: p.url for n, p in catalogues.items()}
    upstreams["data"] = {"url": catalogues["data"].url, "progressive_discovery": True}
    gateway = launcher.gateway(upstreams)
    where = f"tether /u/data/mcp (the upstream's progressive discovery, {era} client)"
    async with era_client(era, gateway.single("data"), where, msg) as client:
        names = await tool_names(client)
        assert names == META_TOOLS, msg(f"tools/list via {where}", f"exactly {META_TOOLS}", names)
        for query, want, worst, args in QUERIES:
            if not want.startswith("data__"):
                continue
            found = [t["name"] for t in await search(client, query, where, 50)]
            assert want in [f"data__{n}" for n in found[:worst]] and all("__" not in n for n in found), msg(
                f"search_tools {query!r} via {where}", f"{own_name(want)} first, only data's own names", found
            )
            expected = {"tool": own_name(want), "arguments": args}
            got = ran(await client.call_tool("call_tool", {"name": own_name(want), "arguments": args}))
            assert got == expected, msg(f"tools/call call_tool({own_name(want)}) via {where}", expected, got)
        await refused(
            client.call_tool("call_tool", {"name": "create_issue", "arguments": {}}),
            UNKNOWN_TOOL,
            f"tools/call call_tool(create_issue) (a dev tool) via {where}",
            msg,
            starts="Unknown tool",
        )
    # Only that endpoint: /mcp and another upstream's list every tool.
    for url, label, sample in ((gateway.url, "/mcp", "data__convert_currency"), (gateway.single("dev"), "/u/dev/mcp", "create_issue")):
        where = f"tether {label} ({era} client)"
        async with era_client(era, url, where, msg) as client:
            names = await tool_names(client)
        assert sample in names and len(names) > 50, msg(f"tools/list via {where}", f"every tool, {sample} among them", names)


@bounded
async def test_tools_list_changed_when_an_upstream_is_added(launcher, catalogues):
    upstreams = {n: catalogues[n].url for n in ("dev", "work")}
    gateway = launcher.gateway(upstreams, env={"TETHER_ADMIN__TOKEN": ADMIN_TOKEN}, extra=PROGRESSIVE)
    where = "tether /mcp with progressive discovery (legacy ClientSession holding its GET stream)"
    async with session_hearing_tool_changes(gateway.url, where, msg) as (session, changes, wire):
        found = [t["name"] for t in await search(session, "convert dollars to euros", where)]
        assert not any(n.startswith("data__") for n in found), msg(
            f"search_tools 'convert dollars to euros' via {where} before data is added", "no data__ tool", found
        )

        status, answer = admin_api(gateway, "POST", "upstreams", {"name": "data", "url": catalogues["data"].url})
        assert status in (200, 201), msg("POST /admin/upstreams (data)", "201 Created", (status, answer))
        assert await changes.wait(), msg(
            f"notifications after adding upstream data via {where}",
            "notifications/tools/list_changed within 10 s",
            wire.summary(),
        )

        async def first_found() -> str | None:
            found = await search(session, "convert dollars to euros", where)
            return found[0]["name"] if found else None

        first = await first_found()
        with anyio.move_on_after(5):
            while first != "data__convert_currency":
                await anyio.sleep(0.1)
                first = await first_found()
        assert first == "data__convert_currency", msg(
            f"search_tools 'convert dollars to euros' via {where} after data was added",
            "data__convert_currency first",
            first,
        )
