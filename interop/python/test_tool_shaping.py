"""Interop: tool shaping (`[upstreams.shape.<tool>]`) seen by the official Python
SDK client (legacy ClientSession and the 2026-07-28 Client) through the real
`tether` binary, on a catalogue upstream built with the Python SDK
(upstreams/catalogue_server.py, the "devtools" tools), whose every tool
answers `{"tool": <its own name>, "arguments": <what it received>}`.

- Rename: the alias is listed and callable (the upstream's own tool runs),
  the upstream's name is neither listed nor callable.
- Title, description and annotations overridden as the client sees them.
- Hide: not listed, and a call is refused like an unknown tool (-32602).
- Fixed arguments: left out of the listed input schema, and the upstream
  receives them on every call, whatever the client sent for them.
- Policies match the real tool (`cat__create_issue`), never the alias: a
  principal whose policy allows only `cat__list_*` is refused (-32001) the
  denied tool under an alias that matches the allowed pattern
  (`cat__list_tickets`), on /mcp, through a virtual server, and through
  `call_tool` with progressive discovery, while the allowed tool answers
  under an alias that does not (`cat__show_issues`).

Peer: tool-shaping (client: python-sdk, upstream: catalogue-server). Every
assertion message names the peer, the operation and what came back.
"""

from __future__ import annotations

import pytest

from checks import (
    FORBIDDEN,
    UNKNOWN_TOOL,
    bearer,
    bounded,
    dump,
    era_client,
    jwt_auth_toml,
    ran,
    refused,
    reporter,
    tool_names,
)
from conftest import toml_tables

msg = reporter("tool-shaping", client="python-sdk")

pytestmark = pytest.mark.anyio

ERAS = ["legacy", "modern"]

ISSUES_ANNOTATIONS = {"readOnlyHint": True, "openWorldHint": False}

SHAPE = {
    "create_issue": {"alias": "open_ticket"},
    "list_issues": {
        "title": "Tracker issues",
        "description": "Lists the issues of the acme tracker.",
        "annotations": ISSUES_ANNOTATIONS,
    },
    "delete_repository": {"hide": True},
    "create_release": {"arguments": {"repository": "acme/web"}},
}


def tool_by_name(listed, name: str):
    return next((t for t in listed.tools if t.name == name), None)


@pytest.mark.parametrize("era", ERAS)
@bounded
async def test_shaped_tools_as_listed_and_called(launcher, era):
    upstream = launcher.catalogue_upstream("devtools")
    gateway = launcher.gateway({"cat": {"url": upstream.url, "shape": SHAPE}})
    where = f"tether /mcp ({era} client) -> catalogue upstream with shaped tools"

    async with era_client(era, gateway.url, where, msg) as client:
        listed = await client.list_tools()
        names = sorted(t.name for t in listed.tools)
        op = f"tools/list via {where}"
        assert "cat__open_ticket" in names and "cat__create_issue" not in names, msg(
            op, "the alias cat__open_ticket listed instead of cat__create_issue", names
        )
        assert "cat__delete_repository" not in names and "cat__get_repository" in names, msg(
            op, "cat__delete_repository hidden, cat__get_repository still listed", names
        )

        # Rename: the alias calls the upstream's own tool.
        args = {"repository": "acme/web", "title": "Login page is broken"}
        got = ran(await client.call_tool("cat__open_ticket", args))
        assert got == {"tool": "create_issue", "arguments": args}, msg(
            f"tools/call cat__open_ticket via {where}", "the upstream's create_issue with the arguments sent", got
        )
        for name, why in (
            ("cat__create_issue", "the upstream's name of a renamed tool"),
            ("cat__delete_repository", "a hidden tool"),
            ("cat__no_such_tool", "a name nobody has"),
        ):
            await refused(
                client.call_tool(name, {"repository": "acme/web"}),
                UNKNOWN_TOOL,
                f"tools/call {name} ({why}) via {where}",
                msg,
                starts="Unknown tool",
            )

        # Title, description and annotations as configured.
        issues = tool_by_name(listed, "cat__list_issues")
        shown = issues.model_dump(mode="json", by_alias=True, exclude_none=True) if issues else None
        annotations = (shown or {}).get("annotations", {})
        assert (
            shown
            and shown.get("title") == "Tracker issues"
            and shown.get("description") == "Lists the issues of the acme tracker."
            and all(annotations.get(k) == v for k, v in ISSUES_ANNOTATIONS.items())
        ), msg(
            f"cat__list_issues in tools/list via {where}",
            f"title 'Tracker issues', the configured description and annotations {ISSUES_ANNOTATIONS}",
            shown,
        )

        # Fixed arguments: not in the schema, always what the upstream receives.
        release = tool_by_name(listed, "cat__create_release")
        schema = release.input_schema if release else {}
        assert (
            release
            and "repository" not in schema.get("properties", {})
            and "repository" not in schema.get("required", [])
            and "tag" in schema.get("properties", {})
        ), msg(
            f"cat__create_release's inputSchema in tools/list via {where}",
            "no 'repository' (fixed) in properties or required; 'tag' still there",
            dump(release),
        )
        for sent in ({"tag": "v1.0.0"}, {"tag": "v1.0.1", "repository": "mallory/fork"}):
            got = ran(await client.call_tool("cat__create_release", sent))
            want = {"tool": "create_release", "arguments": {**sent, "repository": "acme/web"}}
            assert got == want, msg(
                f"tools/call cat__create_release {sent} via {where}",
                "the upstream receiving repository 'acme/web' (fixed), the rest as sent",
                got,
            )


@pytest.mark.parametrize("era", ERAS)
@bounded
async def test_policy_applies_to_the_real_tool_behind_an_alias(launcher, era):
    upstream = launcher.catalogue_upstream("devtools")
    extra = toml_tables(
        "virtual_servers",
        {"name": "desk", "tools": ["cat__*"]},
        {"name": "desk-search", "tools": ["cat__*"], "progressive_discovery": True},
    ) + jwt_auth_toml({"claim": "groups", "value": "staff", "upstreams": ["*"], "tools": ["cat__list_*"]})
    # Each alias reads as the other side of the policy: the denied create_issue
    # looks like an allowed cat__list_* tool, the allowed list_issues does not.
    shape = {"create_issue": {"alias": "list_tickets"}, "list_issues": {"alias": "show_issues"}}
    # The upstream's own endpoint, /u/cat/mcp, lists the meta-tools.
    cat = {"url": upstream.url, "shape": shape, "progressive_discovery": True}
    gateway = launcher.gateway({"cat": cat}, extra=extra)
    alice = bearer("alice", ["staff"])
    issue = {"repository": "acme/web", "title": "Login page is broken"}
    listing = {"repository": "acme/web", "limit": 5}

    for url, label in ((gateway.url, "/mcp"), (gateway.virtual("desk"), "/v/desk/mcp")):
        where = f"tether {label} ({era} client, alice: policy allows cat__list_* only)"
        async with era_client(era, url, where, msg, headers=alice) as client:
            names = await tool_names(client)
            assert "cat__show_issues" in names and "cat__list_tickets" not in names, msg(
                f"tools/list via {where}", "cat__show_issues listed, cat__list_tickets (create_issue) not", names
            )
            await refused(
                client.call_tool("cat__list_tickets", issue),
                FORBIDDEN,
                f"tools/call cat__list_tickets (alias of the denied cat__create_issue) via {where}",
                msg,
                starts="Forbidden",
            )
            got = ran(await client.call_tool("cat__show_issues", listing))
            assert got == {"tool": "list_issues", "arguments": listing}, msg(
                f"tools/call cat__show_issues (alias of the allowed cat__list_issues) via {where}", "the upstream's list_issues", got
            )

    where = f"tether /v/desk-search/mcp ({era} client, progressive discovery, alice: cat__list_* only)"
    async with era_client(era, gateway.virtual("desk-search"), where, msg, headers=alice) as client:
        names = await tool_names(client)
        assert names == ["call_tool", "search_tools"], msg(f"tools/list via {where}", "only the two meta-tools", names)
        await refused(
            client.call_tool("call_tool", {"name": "cat__list_tickets", "arguments": issue}),
            FORBIDDEN,
            f"tools/call call_tool(cat__list_tickets) via {where}",
            msg,
            starts="Forbidden",
        )
        got = ran(await client.call_tool("call_tool", {"name": "cat__show_issues", "arguments": listing}))
        assert got == {"tool": "list_issues", "arguments": listing}, msg(
            f"tools/call call_tool(cat__show_issues) via {where}", "the upstream's list_issues", got
        )

    where = f"tether /u/cat/mcp ({era} client, the upstream's progressive discovery, alice: cat__list_* only)"
    async with era_client(era, gateway.single("cat"), where, msg, headers=alice) as client:
        names = await tool_names(client)
        assert names == ["call_tool", "search_tools"], msg(f"tools/list via {where}", "only the two meta-tools", names)
        found = (await client.call_tool("search_tools", {"query": "create an issue", "limit": 50})).structured_content
        found = [t["name"] for t in (found or {}).get("tools", [])]
        assert "show_issues" in found and "list_tickets" not in found, msg(
            f"tools/call search_tools 'create an issue' via {where}", "show_issues found, never list_tickets (denied)", found
        )
        await refused(
            client.call_tool("call_tool", {"name": "list_tickets", "arguments": issue}),
            FORBIDDEN,
            f"tools/call call_tool(list_tickets) via {where}",
            msg,
            starts="Forbidden",
        )
        got = ran(await client.call_tool("call_tool", {"name": "show_issues", "arguments": listing}))
        assert got == {"tool": "list_issues", "arguments": listing}, msg(
            f"tools/call call_tool(show_issues) via {where}", "the upstream's list_issues", got
        )
