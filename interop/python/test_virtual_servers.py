"""Interop: virtual servers (`[[virtual_servers]]`, served at `/v/<name>/mcp` in
both eras and `/v/<name>/sse` over HTTP+SSE) with the official Python SDK's
clients, through the real `tether` binary federating the Python SDK upstream
(upstreams/counter_server.py), a catalogue upstream built with the SDK
(upstreams/catalogue_server.py) and a `tether demo-upstream`.

- Exactly the selected tools (patterns over the names /mcp shows) and
  prompts are listed, from a legacy ClientSession, the 2026-07-28 Client and
  the HTTP+SSE client; a tool outside the selection is refused like an
  unknown tool (-32602); a virtual server's own alias renames a tool there.
- Its identity: serverInfo name and title, and instructions, from
  `initialize` and from `server/discover`.
- A session on it outlives a gateway restart on a SQLite store, with its
  upstream session re-attached (the per-session counter goes on).
- Two concurrent sessions on it keep separate upstream sessions.
- The admin API creates, lists, replaces and deletes virtual servers; the
  config file's ones cannot be changed there (409).

Peer: virtual-servers (client: python-sdk). Every assertion message names the
peer, the operation and what came back.
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase

import pytest

from checks import (
    ADMIN_TOKEN,
    UNKNOWN_TOOL,
    admin_api,
    bounded,
    bump_and_read_back,
    call_message,
    count_of,
    dump,
    http,
    legacy_session,
    message_texts,
    modern_client,
    plain_session,
    post_jsonrpc,
    ran,
    refused,
    reporter,
    session_headers,
    sse_session,
    tool_names,
)
from conftest import toml_tables

msg = reporter("virtual-servers", client="python-sdk")

pytestmark = pytest.mark.anyio

TITLE = "Support desk"
INSTRUCTIONS = "Use these tools to answer customer tickets."
TOOL_PATTERNS = ["py__counter_*", "cat__list_*", "cat__create_issue"]
PROMPT_PATTERNS = ["py__greet"]
# The virtual server's own shape, keyed by the /mcp name.
VS_ALIASES = {"py__counter_get": "current_count", "cat__create_issue": "report_bug"}

SUPPORT = {
    "name": "support",
    "title": TITLE,
    "description": "Tools for the support team",
    "instructions": INSTRUCTIONS,
    "tools": TOOL_PATTERNS,
    "prompts": PROMPT_PATTERNS,
    "shape": {name: {"alias": alias} for name, alias in VS_ALIASES.items()},
}


def selected(names: list[str], patterns: list[str], aliases: dict[str, str] | None = None) -> list[str]:
    """The names of `names` (as /mcp shows them) that match a pattern, renamed by `aliases`."""
    aliases = aliases or {}
    return sorted(aliases.get(n, n) for n in names if any(fnmatchcase(n, p) for p in patterns))


def support_gateway(launcher, **gateway_kwargs):
    """The counter upstream (py), the devtools catalogue (cat) and a demo upstream (demo)
    behind a gateway with the virtual server SUPPORT."""
    py = launcher.python_upstream()
    cat = launcher.catalogue_upstream("devtools")
    demo = launcher.upstream("legacy")
    upstreams = {"py": py.url, "cat": cat.url, "demo": demo.url}
    return launcher.gateway(upstreams, extra=toml_tables("virtual_servers", SUPPORT), **gateway_kwargs)


def open_client(kind: str, gateway, where: str):
    """A client of the virtual server `support`: legacy ClientSession, 2026-07-28 Client, or the
    HTTP+SSE client on /v/support/sse."""
    if kind == "legacy":
        return legacy_session(gateway.virtual("support"))
    if kind == "sse":
        return sse_session(gateway.virtual("support", "sse"))
    return modern_client(gateway.virtual("support"), where, msg)


@pytest.mark.parametrize("kind", ["legacy", "modern", "sse"])
@bounded
async def test_selection_identity_and_refusals(launcher, kind):
    gateway = support_gateway(launcher)
    async with legacy_session(gateway.url) as federated:
        all_tools = await tool_names(federated)
        all_prompts = sorted(p.name for p in (await federated.list_prompts()).prompts)
    want_tools = selected(all_tools, TOOL_PATTERNS, VS_ALIASES)
    want_prompts = selected(all_prompts, PROMPT_PATTERNS)
    assert "py__echo" in all_tools and len(want_tools) > 10 and "current_count" in want_tools, msg(
        "tools/list via tether /mcp", "py__echo, the counter and the catalogue's tools", all_tools
    )
    assert "demo__greeting" in all_prompts and want_prompts == ["py__greet"], msg(
        "prompts/list via tether /mcp", "demo__greeting and py__greet", all_prompts
    )

    path = "/v/support/sse" if kind == "sse" else "/v/support/mcp"
    where = f"tether {path} ({kind} client)"
    async with open_client(kind, gateway, where) as client:
        # Identity: initialize (legacy, HTTP+SSE) or server/discover (2026-07-28).
        info = client.server_info
        got = (info.name, info.title, client.instructions) if info else (None, None, client.instructions)
        assert got == ("support", TITLE, INSTRUCTIONS), msg(
            f"{'server/discover' if kind == 'modern' else 'initialize'} via {where}",
            f"serverInfo name 'support', title {TITLE!r}, instructions {INSTRUCTIONS!r}",
            got,
        )

        names = await tool_names(client)
        assert names == want_tools, msg(
            f"tools/list via {where}", f"exactly /mcp's tools matching {TOOL_PATTERNS}, aliased {VS_ALIASES}", names
        )
        prompts = sorted(p.name for p in (await client.list_prompts()).prompts)
        assert prompts == want_prompts, msg(f"prompts/list via {where}", f"exactly {want_prompts}", prompts)
        prompt = await client.get_prompt("py__greet", {"name": "Ada"})
        assert message_texts(prompt.messages) == ["Please greet Ada"], msg(
            f"prompts/get py__greet via {where}", "'Please greet Ada'", dump(prompt)
        )

        # In the selection: a catalogue tool, and the alias the virtual server gives one.
        listing = {"repository": "acme/web", "limit": 3}
        got = ran(await client.call_tool("cat__list_issues", listing))
        assert got == {"tool": "list_issues", "arguments": listing}, msg(
            f"tools/call cat__list_issues via {where}", "the upstream's list_issues", got
        )
        issue = {"repository": "acme/web", "title": "Refund page is blank"}
        got = ran(await client.call_tool("report_bug", issue))
        assert got == {"tool": "create_issue", "arguments": issue}, msg(
            f"tools/call report_bug (the virtual server's alias of cat__create_issue) via {where}",
            "the upstream's create_issue",
            got,
        )
        if kind != "modern":  # the counter needs an upstream session (legacy era)
            r = await client.call_tool("current_count", {})
            assert not r.is_error and count_of(r) == 0, msg(
                f"tools/call current_count (alias of py__counter_get) via {where}", "count 0", dump(r)
            )

        # Outside the selection (or renamed away): refused like an unknown tool.
        for name, why in (
            ("py__echo", "a tool /mcp lists, not selected"),
            ("cat__delete_repository", "a catalogue tool not selected"),
            ("py__counter_get", "the /mcp name of a tool the virtual server renamed"),
            ("demo__echo", "another upstream's tool"),
        ):
            await refused(
                client.call_tool(name, {"text": "x"}),
                UNKNOWN_TOOL,
                f"tools/call {name} ({why}) via {where}",
                msg,
                starts="Unknown tool",
            )


def plain_count(url: str, sid: str, tool: str, request_id: int, op: str) -> int | None:
    """The count a counter tool answers in the plain session `sid`."""
    status, _, answer = post_jsonrpc(url, call_message(tool, {}, request_id), session_headers(sid))
    assert status == 200 and answer and "result" in answer, msg(op, "200 with a result", (status, answer))
    try:
        return json.loads(answer["result"]["content"][0]["text"])["count"]
    except (KeyError, IndexError, TypeError, ValueError):
        return None


@bounded
async def test_restart_keeps_the_session_and_its_upstream_session(launcher):
    py = launcher.python_upstream()
    store = {"TETHER_STORE__URL": f"sqlite://{launcher.tmp}/s.db"}
    extra = toml_tables("virtual_servers", {"name": "support", "tools": ["py__counter_*"]})

    first = launcher.gateway({"py": py.url}, name="tether-first", env=store, extra=extra)
    url = first.virtual("support")
    sid = plain_session(url, msg)
    for want in (1, 2):
        got = plain_count(url, sid, "py__counter_increment", want, f"tools/call py__counter_increment #{want} via {url}")
        assert got == want, msg(f"tools/call py__counter_increment #{want} via {url}", f"count {want}", got)
    first.stop()

    second = launcher.gateway({"py": py.url}, name="tether-second", env=store, extra=extra)
    url = second.virtual("support")
    op = f"tools/call py__counter_increment in session {sid} (made before the restart) via {url}"
    got = plain_count(url, sid, "py__counter_increment", 3, op)
    assert got == 3, msg(op, "count 3: the same upstream session, re-attached", got)
    stats = py.stats()
    assert stats["initializes"] == 1 and stats["deletes"] == 0, msg(
        "upstream sessions across the restart (upstream /stats)", "1 initialize, 0 deletes", stats
    )
    # Still the virtual server's session: its selection holds after the restart.
    status, _, answer = post_jsonrpc(url, call_message("py__echo", {"text": "x"}, 4), session_headers(sid))
    assert answer and answer.get("error", {}).get("code") == UNKNOWN_TOOL, msg(
        f"tools/call py__echo (not selected) in the restored session via {url}", f"error {UNKNOWN_TOOL}", (status, answer)
    )


@bounded
async def test_two_sessions_keep_separate_upstream_sessions(launcher):
    py = launcher.python_upstream()
    extra = toml_tables("virtual_servers", {"name": "support", "tools": ["py__counter_*"]})
    gateway = launcher.gateway({"py": py.url}, extra=extra)
    url = gateway.virtual("support")
    where = "tether /v/support/mcp -> python upstream"
    async with legacy_session(url) as a, legacy_session(url) as b:
        await bump_and_read_back((("A", a, 5), ("B", b, 3)), "py__", where, msg)
        stats = py.stats()
        assert stats["initializes"] == 2 and len(stats["sessions"]) == 2, msg(
            f"two concurrent client sessions via {where} (upstream /stats)",
            "exactly 2 upstream initializes and 2 upstream sessions using the counter",
            stats,
        )


def sources(answer) -> dict[str, str | None]:
    """name -> source of each virtual server in a `GET /admin/virtual-servers` answer
    (`{"virtual_servers": [{"definition": {...}, "source": ...}]}`, or entries with the
    definition's keys at their top level)."""
    items = answer
    if isinstance(answer, dict):
        items = answer.get("virtual_servers", answer.get("virtual-servers", []))
    out = {}
    for item in items or []:
        definition = item.get("definition", item)
        out[definition.get("name")] = item.get("source")
    return out


@bounded
async def test_admin_api_manages_virtual_servers(launcher):
    gateway = support_gateway(launcher, env={"TETHER_ADMIN__TOKEN": ADMIN_TOKEN})
    triage = {"name": "triage", "title": "Triage", "tools": ["cat__list_issues", "cat__get_issue"]}

    status, answer = admin_api(gateway, "POST", "virtual-servers", triage)
    assert status in (200, 201), msg("POST /admin/virtual-servers (triage)", "201 Created", (status, answer))
    url = gateway.virtual("triage")
    async with legacy_session(url) as session:
        names = await tool_names(session)
    assert names == ["cat__get_issue", "cat__list_issues"], msg(
        f"tools/list via {url} right after POST", "exactly cat__get_issue and cat__list_issues", names
    )

    status, answer = admin_api(gateway, "GET", "virtual-servers")
    got = sources(answer)
    assert status == 200 and got.get("support") == "config" and got.get("triage") == "api", msg(
        "GET /admin/virtual-servers", "support (source config) and triage (source api)", (status, answer)
    )

    status, answer = admin_api(gateway, "PUT", "virtual-servers/triage", {**triage, "tools": ["cat__create_issue"]})
    assert status == 200, msg("PUT /admin/virtual-servers/triage", "200", (status, answer))
    async with legacy_session(url) as session:
        names = await tool_names(session)
    assert names == ["cat__create_issue"], msg(f"tools/list via {url} after PUT", "exactly cat__create_issue", names)

    for method, body in (("PUT", {**SUPPORT, "title": "Changed"}), ("DELETE", None)):
        status, answer = admin_api(gateway, method, "virtual-servers/support", body)
        assert status == 409, msg(f"{method} /admin/virtual-servers/support (a config-file one)", "409", (status, answer))
    async with legacy_session(gateway.virtual("support")) as session:
        assert session.server_info and session.server_info.title == TITLE, msg(
            "initialize via /v/support/mcp after the refused changes", f"title {TITLE!r} kept", dump(session.server_info)
        )

    status, answer = admin_api(gateway, "DELETE", "virtual-servers/triage")
    assert status == 200, msg("DELETE /admin/virtual-servers/triage", "200", (status, answer))
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "plain", "version": "1"}},
    }
    status, _, raw = http("POST", url, init, {"Content-Type": "application/json", "Accept": "application/json"})
    assert status == 404, msg(f"initialize via {url} after DELETE", "404", (status, raw[:300]))
    status, answer = admin_api(gateway, "GET", "virtual-servers")
    assert "triage" not in sources(answer), msg("GET /admin/virtual-servers after DELETE", "no triage", answer)
