"""An upstream MCP server with a large tool catalogue, built with the official
Python SDK (`mcp` 2.x, the lowlevel `Server`: its tools are declared with
explicit JSON input schemas, which `MCPServer` only derives from functions).
Used by the tool-search and tool-shaping interop tests as a peer nobody here
wrote, big enough for progressive discovery to matter.

    python catalogue_server.py --catalogue devtools|workplace|data

Serves Streamable HTTP on 127.0.0.1, a free port (the OS picks it), and
prints exactly one line on stdout:
`python upstream listening on http://127.0.0.1:PORT/mcp`.
`--list` prints the catalogue's tools as JSON (name, description,
inputSchema) instead, and exits.

Each catalogue has 70-80 tools: most are generated from a table of the
domain's objects and the verbs that apply to them (`create_issue`,
`list_pull_requests`, `book_meeting_room`, ...), each with a one-sentence
description and 1-4 described parameters; a few are written by hand and
stand out (`convert_currency`, `translate_text`, `get_weather_forecast`, ...),
so that a search has a clear right answer. Names are unique within a
catalogue (some recur across catalogues; a gateway prefixes them).

Every tool answers with one text content, the JSON
`{"tool": <its name>, "arguments": <the arguments it received>}`, so a test
sees which tool ran and exactly what arguments reached it.

DNS-rebinding protection stays on, with the loopback Host/Origin values allowed
explicitly, so requests forwarded by a gateway on loopback are accepted.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import mcp.types as types
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError

import loopback

INVALID_PARAMS = -32602

# --------------------------------------------------------------------------
# Parameters: (name, JSON type, description); a trailing "?" on the name
# marks it optional.
# --------------------------------------------------------------------------

LIMIT = ("limit?", "integer", "Maximum number of results to return.")


def object_table(
    thing: str,
    things: str,
    where: str,
    key: tuple[str, str, str],
    scope: tuple[str, str, str] | None,
    fields: list[tuple[str, str, str]],
    verbs: dict[str, str | None],
    extra: dict[str, list[tuple[str, str, str]]] | None = None,
    creating: tuple[str, ...] = ("create",),
) -> dict[str, Any]:
    """One object of a domain: `thing` is its snake_case name (singular),
    `things` its plural, `where` completes the sentences (`in a GitHub
    repository`), `key` the parameter naming one, `scope` the parameter
    naming its container (or None), `fields` what creating one takes, and
    `verbs` verb -> description (None: the generic sentence for that verb).
    `extra`: more parameters for a verb. `creating`: the verbs that make a
    new one (they take `fields`; the others take `key`)."""
    return {
        "thing": thing,
        "things": things,
        "where": where,
        "key": key,
        "scope": scope,
        "fields": fields,
        "verbs": verbs,
        "extra": extra or {},
        "creating": creating,
    }


GENERIC = {
    "create": "Create a new {words} {where}.",
    "list": "List the {plural_words} {where}, most recent first.",
    "get": "Get the details of one {words} by its identifier.",
    "update": "Update the fields of an existing {words}.",
    "delete": "Delete {a} {words} permanently.",
}


def generated_tools(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tools of a table of objects: one per (object, verb)."""
    tools = []
    for obj in objects:
        words = obj["thing"].replace("_", " ")
        plural_words = obj["things"].replace("_", " ")
        scope = [obj["scope"]] if obj["scope"] else []
        for verb, description in obj["verbs"].items():
            if verb == "list":
                name = f"list_{obj['things']}"
                params = scope + [LIMIT]
            elif verb in obj["creating"]:
                name = f"{verb}_{obj['thing']}"
                params = scope + obj["fields"]
            elif verb == "update":
                name = f"update_{obj['thing']}"
                optional = [(f"{n.rstrip('?')}?", t, d) for n, t, d in obj["fields"][:2]]
                params = scope + [obj["key"]] + optional
            else:
                name = f"{verb}_{obj['thing']}"
                params = scope + [obj["key"]]
            params = params + obj["extra"].get(verb, [])
            if description is None:
                a = "an" if words[0] in "aeiou" else "a"
                description = GENERIC[verb].format(a=a, words=words, plural_words=plural_words, where=obj["where"])
            tools.append(tool(name, description, params[:4]))
    return tools


def tool(name: str, description: str, params: list[tuple[str, str, str]]) -> dict[str, Any]:
    """A tool definition: its name, description and JSON input schema."""
    properties: dict[str, Any] = {}
    required = []
    for pname, ptype, pdesc in params:
        optional = pname.endswith("?")
        pname = pname.rstrip("?")
        if ptype == "array":
            properties[pname] = {"type": "array", "items": {"type": "string"}, "description": pdesc}
        else:
            properties[pname] = {"type": ptype, "description": pdesc}
        if not optional:
            required.append(pname)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"name": name, "description": description, "inputSchema": schema}


# --------------------------------------------------------------------------
# devtools: software development (repositories, CI, releases)
# --------------------------------------------------------------------------

REPO = ("repository", "string", "The repository, as owner/name (e.g. acme/web).")

DEVTOOLS_OBJECTS = [
    object_table(
        "issue", "issues", "in a GitHub repository's issue tracker",
        ("number", "integer", "The issue number."), REPO,
        [("title", "string", "A one-line summary of the issue."), ("body?", "string", "The issue's text, in Markdown."),
         ("labels?", "array", "Labels to put on the issue.")],
        {"create": None, "list": None, "get": None, "update": None,
         "close": "Close an open issue, optionally with a closing comment.",
         "assign": "Assign an issue to one or more people."},
        {"assign": [("assignees", "array", "User names to assign.")]},
    ),
    object_table(
        "pull_request", "pull_requests", "in a GitHub repository",
        ("number", "integer", "The pull request number."), REPO,
        [("title", "string", "The pull request's title."), ("head", "string", "The branch with the changes."),
         ("base", "string", "The branch to merge into.")],
        {"create": None, "list": None, "get": None, "update": None,
         "merge": "Merge an approved pull request into its base branch.",
         "close": "Close a pull request without merging it.",
         "approve": "Approve a pull request as a reviewer."},
        {"merge": [("method?", "string", "merge, squash or rebase.")]},
    ),
    object_table(
        "repository", "repositories", "on the code hosting service",
        ("repository", "string", "The repository, as owner/name."), None,
        [("name", "string", "The new repository's name."), ("private?", "boolean", "Whether only members can see it.")],
        {"create": None, "list": "List the repositories an organization owns.", "get": None, "delete": None,
         "archive": "Archive a repository, making it read-only.",
         "fork": "Fork a repository into another organization or account."},
        {"list": [("organization?", "string", "The organization whose repositories to list.")]},
    ),
    object_table(
        "branch", "branches", "in a Git repository",
        ("branch", "string", "The branch name."), REPO,
        [("branch", "string", "The new branch's name."), ("from_ref?", "string", "Commit or branch to start from.")],
        {"create": None, "list": None, "delete": None,
         "protect": "Protect a branch: require reviews and passing checks before merging."},
    ),
    object_table(
        "commit", "commits", "on a branch of a Git repository",
        ("sha", "string", "The commit SHA."), REPO, [],
        {"list": None, "get": "Get one commit by its SHA, with its diff statistics.",
         "revert": "Revert a commit by creating a new commit that undoes it."},
    ),
    object_table(
        "release", "releases", "of a GitHub repository",
        ("tag", "string", "The release's tag (e.g. v1.4.0)."), REPO,
        [("tag", "string", "The tag to release (e.g. v1.4.0)."), ("notes?", "string", "Release notes, in Markdown.")],
        {"create": None, "list": None, "get": None, "delete": None,
         "publish": "Publish a draft release so that everyone can download it."},
    ),
    object_table(
        "workflow_run", "workflow_runs", "of a repository's CI workflows",
        ("run_id", "integer", "The workflow run's id."), REPO, [],
        {"list": None, "get": None,
         "cancel": "Cancel a CI workflow run that is still in progress.",
         "rerun": "Rerun a failed CI workflow run, all jobs or only the failed ones."},
        {"rerun": [("failed_only?", "boolean", "Rerun only the failed jobs.")]},
    ),
    object_table(
        "deployment", "deployments", "of a service to an environment",
        ("deployment_id", "string", "The deployment's id."), ("service", "string", "The service being deployed."),
        [("environment", "string", "Target environment: staging or production."), ("version", "string", "The version to deploy.")],
        {"create": "Deploy a version of a service to an environment such as staging or production.",
         "list": None, "get": None,
         "rollback": "Roll back a deployment to the previous version of the service."},
    ),
    object_table(
        "container_image", "container_images", "in the container registry",
        ("image", "string", "The image reference, as name:tag."), None, [],
        {"list": None, "get": None, "delete": None,
         "scan": "Scan a container image for known security vulnerabilities."},
    ),
    object_table(
        "secret", "secrets", "stored for CI pipelines",
        ("secret_name", "string", "The secret's name."), REPO,
        [("secret_name", "string", "The secret's name."), ("value", "string", "The secret value (stored encrypted).")],
        {"create": None, "list": None, "delete": None,
         "rotate": "Rotate a CI secret: store a new value and revoke the old one."},
    ),
    object_table(
        "webhook", "webhooks", "that a repository calls on events",
        ("hook_id", "integer", "The webhook's id."), REPO,
        [("target_url", "string", "The URL that receives the event payloads."), ("events?", "array", "Events that trigger it.")],
        {"create": None, "list": None, "delete": None,
         "ping": "Send a ping delivery to a webhook to check that it is reachable."},
    ),
    object_table(
        "package", "packages", "in the package registry",
        ("package", "string", "The package name."), None, [],
        {"list": None, "get": "Get a package's metadata and its published versions.", "delete": None,
         "publish": "Publish a new version of a package to the registry."},
        {"publish": [("version", "string", "The version to publish.")]},
    ),
    object_table(
        "review_comment", "review_comments", "on a pull request's diff",
        ("comment_id", "integer", "The comment's id."), REPO,
        [("pull_number", "integer", "The pull request number."), ("path", "string", "File the comment is on."),
         ("body", "string", "The comment text.")],
        {"create": None, "list": None, "delete": None,
         "resolve": "Mark a review comment thread as resolved."},
    ),
    object_table(
        "milestone", "milestones", "for planning a repository's work",
        ("milestone_id", "integer", "The milestone's number."), REPO,
        [("title", "string", "The milestone's title."), ("due_on?", "string", "Due date, as YYYY-MM-DD.")],
        {"create": None, "list": None, "update": None,
         "close": "Close a milestone once its work is done."},
    ),
    object_table(
        "label", "labels", "available in a repository",
        ("label", "string", "The label's name."), REPO,
        [("label", "string", "The label's name."), ("color?", "string", "Hex color, e.g. d73a4a.")],
        {"create": None, "list": None, "delete": None},
    ),
]

DEVTOOLS_EXTRAS = [
    tool("search_code", "Search source code across repositories for a text or regular expression.",
         [("pattern", "string", "Text or regular expression to find."), ("language?", "string", "Only files of this language."), LIMIT]),
    tool("lint_python_file", "Lint a Python file and report style problems and likely bugs.",
         [("path", "string", "Path of the Python file."), ("fix?", "boolean", "Apply safe fixes.")]),
    tool("format_source_code", "Format source code with the standard formatter of its language.",
         [("code", "string", "The code to format."), ("language", "string", "Its language, e.g. rust or go.")]),
    tool("generate_uuid", "Generate one or more random UUIDs (version 4).",
         [("count?", "integer", "How many to generate.")]),
    tool("decode_jwt_token", "Decode a JWT token and show its header and claims, without verifying the signature.",
         [("token", "string", "The encoded JWT.")]),
    tool("lookup_dns_record", "Look up the DNS records of a domain name: A, AAAA, MX, TXT or CNAME.",
         [("domain", "string", "The domain name."), ("record_type?", "string", "A, AAAA, MX, TXT or CNAME.")]),
    tool("check_ssl_certificate", "Check a website's TLS/SSL certificate: issuer, expiry date and chain.",
         [("hostname", "string", "The host to connect to."), ("port?", "integer", "TCP port, 443 by default.")]),
    tool("explain_cron_expression", "Explain a cron expression in plain words and show its next run times.",
         [("expression", "string", "The cron expression, e.g. '0 9 * * 1'."), ("count?", "integer", "How many next runs to show.")]),
]

# --------------------------------------------------------------------------
# workplace: office collaboration (mail, calendar, chat, HR, helpdesk)
# --------------------------------------------------------------------------

WORKPLACE_OBJECTS = [
    object_table(
        "email", "emails", "in the mailbox",
        ("message_id", "string", "The email's message id."), None,
        [("to", "array", "Recipient addresses."), ("subject", "string", "The subject line."), ("body", "string", "The message text.")],
        {"send": "Send an email to one or more recipients, such as a colleague or a customer.",
         "list": "List the emails in a mailbox folder, newest first.", "get": None, "delete": None,
         "archive": "Archive an email, moving it out of the inbox.",
         "reply_to": "Reply to an email, keeping the conversation thread."},
        {"reply_to": [("body", "string", "The reply text.")], "list": [("folder?", "string", "Mailbox folder, e.g. inbox.")]},
        creating=("send",),
    ),
    object_table(
        "calendar_event", "calendar_events", "in a calendar",
        ("event_id", "string", "The event's id."), None,
        [("title", "string", "The event's title."), ("start", "string", "Start time, ISO 8601."),
         ("end", "string", "End time, ISO 8601."), ("attendees?", "array", "Attendee addresses.")],
        {"create": "Create a calendar event and invite its attendees.", "list": None, "get": None, "update": None,
         "cancel": "Cancel a calendar event and notify its attendees."},
    ),
    object_table(
        "meeting_room", "meeting_rooms", "in the office buildings",
        ("room_id", "string", "The room's id."), None, [],
        {"list": "List the meeting rooms of an office building with their capacity.",
         "get": None,
         "book": "Book a meeting room for a time slot so the team can meet there.",
         "release": "Release a meeting room booking that is no longer needed."},
        {"book": [("start", "string", "Start time, ISO 8601."), ("end", "string", "End time, ISO 8601.")],
         "list": [("building?", "string", "The building.")]},
    ),
    object_table(
        "chat_message", "chat_messages", "in a team chat channel",
        ("message_id", "string", "The chat message's id."), ("channel", "string", "The chat channel."),
        [("text", "string", "The message text.")],
        {"send": "Post a message to a team chat channel.", "list": None, "delete": None,
         "pin": "Pin a chat message to the top of its channel."},
        creating=("send",),
    ),
    object_table(
        "chat_channel", "chat_channels", "in the team chat",
        ("channel", "string", "The chat channel."), None,
        [("name", "string", "The channel's name."), ("private?", "boolean", "Whether it is invite-only.")],
        {"create": None, "list": None,
         "archive": "Archive a chat channel nobody uses any more."},
    ),
    object_table(
        "document", "documents", "in the shared document library",
        ("document_id", "string", "The document's id."), None,
        [("title", "string", "The document's title."), ("content?", "string", "Initial text.")],
        {"create": None, "list": None, "get": None, "delete": None,
         "share": "Share a document with people, as viewers or editors."},
        {"share": [("people", "array", "Addresses to share with."), ("role?", "string", "viewer or editor.")]},
    ),
    object_table(
        "task", "tasks", "on a to-do list",
        ("task_id", "string", "The task's id."), None,
        [("title", "string", "What needs doing."), ("due?", "string", "Due date, as YYYY-MM-DD.")],
        {"create": None, "list": None, "update": None, "delete": None,
         "complete": "Mark a task on a to-do list as done."},
    ),
    object_table(
        "contact", "contacts", "in the address book",
        ("contact_id", "string", "The contact's id."), None,
        [("name", "string", "Full name."), ("phone?", "string", "Phone number."), ("company?", "string", "Company.")],
        {"create": None, "list": None, "get": None, "update": None, "delete": None},
    ),
    object_table(
        "expense_report", "expense_reports", "for reimbursement",
        ("report_id", "string", "The expense report's id."), None,
        [("purpose", "string", "What the expenses were for."), ("total", "number", "Total amount claimed.")],
        {"create": None, "list": None,
         "submit": "Submit an expense report to a manager for reimbursement.",
         "approve": "Approve an expense report as the manager."},
    ),
    object_table(
        "leave_request", "leave_requests", "for vacation or sick days",
        ("request_id", "string", "The leave request's id."), None,
        [("first_day", "string", "First day off, YYYY-MM-DD."), ("last_day", "string", "Last day off, YYYY-MM-DD.")],
        {"create": "Request vacation or other time off for a range of days.", "list": None,
         "approve": "Approve an employee's time off request.",
         "cancel": "Cancel a time off request."},
    ),
    object_table(
        "employee", "employees", "in the staff directory",
        ("employee_id", "string", "The employee's id."), None, [],
        {"list": "List the employees of a department from the staff directory.",
         "get": "Get an employee's profile: title, manager, office and phone.",
         "update": None},
        {"list": [("department?", "string", "The department.")]},
    ),
    object_table(
        "ticket", "tickets", "at the IT helpdesk",
        ("ticket_id", "string", "The helpdesk ticket's id."), None,
        [("summary", "string", "What is wrong."), ("priority?", "string", "low, normal or urgent.")],
        {"create": "Open an IT helpdesk ticket for a broken laptop, access problem or other request.",
         "list": None, "get": None, "update": None,
         "close": "Close a resolved helpdesk ticket.",
         "assign": "Assign a helpdesk ticket to a support agent."},
        {"assign": [("agent", "string", "The agent's user name.")]},
    ),
    object_table(
        "folder", "folders", "on the shared drive",
        ("folder_id", "string", "The folder's id."), None,
        [("name", "string", "The folder's name."), ("parent?", "string", "Parent folder id.")],
        {"create": None, "list": None, "delete": None,
         "share": "Share a shared-drive folder with a team or with people."},
    ),
    object_table(
        "survey", "surveys", "for collecting feedback from staff",
        ("survey_id", "string", "The survey's id."), None,
        [("title", "string", "The survey's title."), ("questions", "array", "The questions.")],
        {"create": None, "list": None,
         "close": "Close a survey to further responses and show its results."},
    ),
    object_table(
        "announcement", "announcements", "on the company intranet",
        ("announcement_id", "string", "The announcement's id."), None,
        [("headline", "string", "The headline."), ("text", "string", "The announcement text.")],
        {"create": "Publish an announcement on the company intranet.", "list": None, "delete": None},
    ),
]

WORKPLACE_EXTRAS = [
    tool("translate_text", "Translate text from one language into another, for example from English into French.",
         [("text", "string", "The text to translate."), ("target_language", "string", "Language to translate into, e.g. fr."),
          ("source_language?", "string", "Language of the text (detected when omitted).")]),
    tool("get_weather_forecast", "Get the weather forecast for a city for the next days: temperature, rain and wind.",
         [("city", "string", "The city, e.g. Paris."), ("days?", "integer", "How many days ahead (1-10).")]),
    tool("convert_timezone", "Convert a time of day from one time zone to another.",
         [("time", "string", "The time, e.g. 14:30."), ("from_zone", "string", "IANA zone of the time."),
          ("to_zone", "string", "IANA zone to convert into.")]),
    tool("find_free_time_slot", "Find a free time slot when all the given people are available, from their calendars.",
         [("people", "array", "Addresses of the people."), ("duration_minutes", "integer", "Length of the slot."),
          ("within_days?", "integer", "Search this many days ahead.")]),
    tool("summarize_document", "Summarize a long document in a few sentences.",
         [("document_id", "string", "The document's id."), ("sentences?", "integer", "Length of the summary.")]),
    tool("set_out_of_office_reply", "Turn on an automatic out-of-office reply for the mailbox while away.",
         [("message", "string", "The automatic reply."), ("until", "string", "Last day away, YYYY-MM-DD.")]),
    tool("order_office_supplies", "Order office supplies such as paper, pens or printer toner.",
         [("items", "array", "What to order."), ("deliver_to", "string", "Desk or room to deliver to.")]),
    tool("lookup_public_holidays", "Look up the public holidays of a country for a year.",
         [("country", "string", "ISO country code, e.g. DE."), ("year", "integer", "The year.")]),
]

# --------------------------------------------------------------------------
# data: analytics, warehouse, machine learning, finance
# --------------------------------------------------------------------------

DATA_OBJECTS = [
    object_table(
        "dataset", "datasets", "in the analytics catalog",
        ("dataset_id", "string", "The dataset's id."), None,
        [("name", "string", "The dataset's name."), ("source", "string", "Where its rows come from.")],
        {"create": None, "list": None, "get": None, "delete": None,
         "refresh": "Refresh a dataset by loading its rows again from the source."},
    ),
    object_table(
        "table", "tables", "in the data warehouse",
        ("table", "string", "The table, as schema.name."), None,
        [("table", "string", "The new table, as schema.name."), ("columns", "array", "Column definitions, as name:type.")],
        {"create": None, "list": None,
         "describe": "Describe a warehouse table: its columns, types and row count.",
         "drop": "Drop a warehouse table and all its rows."},
    ),
    object_table(
        "dashboard", "dashboards", "in the business intelligence tool",
        ("dashboard_id", "string", "The dashboard's id."), None,
        [("title", "string", "The dashboard's title."), ("charts?", "array", "Chart ids to place on it.")],
        {"create": None, "list": None, "get": None, "delete": None,
         "share": "Share a dashboard with people or a team."},
    ),
    object_table(
        "report", "reports", "built from saved analyses",
        ("report_id", "string", "The report's id."), None,
        [("title", "string", "The report's title."), ("dataset_id", "string", "The dataset it is built on.")],
        {"create": None, "list": None, "get": None,
         "schedule": "Schedule a report to be generated and delivered regularly.",
         "export": "Export a report as a PDF or spreadsheet file."},
        {"schedule": [("cron", "string", "When, as a cron expression.")], "export": [("format", "string", "pdf, csv or xlsx.")]},
    ),
    object_table(
        "pipeline", "pipelines", "for loading and transforming data (ETL)",
        ("pipeline_id", "string", "The pipeline's id."), None,
        [("name", "string", "The pipeline's name."), ("steps", "array", "Its steps, in order.")],
        {"create": None, "list": None, "get": None,
         "run": "Run a data pipeline now instead of waiting for its schedule.",
         "pause": "Pause a data pipeline's schedule."},
    ),
    object_table(
        "connection", "connections", "to external databases and services",
        ("connection_id", "string", "The connection's id."), None,
        [("kind", "string", "postgres, mysql, s3, ..."), ("dsn", "string", "Connection string.")],
        {"create": None, "list": None, "delete": None,
         "test": "Test a data connection by connecting to it once."},
    ),
    object_table(
        "model", "models", "in the machine learning registry",
        ("model_id", "string", "The model's id."), None, [],
        {"list": None, "get": None,
         "train": "Train a machine learning model on a dataset.",
         "deploy": "Deploy a trained machine learning model behind a prediction endpoint.",
         "evaluate": "Evaluate a machine learning model on a test dataset: accuracy, precision and recall."},
        {"train": [("dataset_id", "string", "Training dataset.")], "evaluate": [("dataset_id", "string", "Test dataset.")]},
    ),
    object_table(
        "experiment", "experiments", "for comparing model training runs",
        ("experiment_id", "string", "The experiment's id."), None,
        [("name", "string", "The experiment's name."), ("hypothesis?", "string", "What it tests.")],
        {"create": None, "list": None, "get": None},
    ),
    object_table(
        "alert", "alerts", "on business metrics",
        ("alert_id", "string", "The alert's id."), None,
        [("metric", "string", "The metric watched."), ("threshold", "number", "Value that triggers the alert.")],
        {"create": None, "list": None, "update": None, "delete": None,
         "mute": "Mute a metric alert for a while."},
        {"mute": [("minutes", "integer", "For how long.")]},
    ),
    object_table(
        "metric", "metrics", "defined for business analytics",
        ("metric", "string", "The metric's name."), None,
        [("metric", "string", "The metric's name."), ("formula", "string", "How it is computed.")],
        {"create": None, "list": None, "get": None},
    ),
    object_table(
        "saved_query", "saved_queries", "in the shared query library",
        ("query_id", "string", "The saved query's id."), None,
        [("title", "string", "The query's title."), ("text", "string", "The query text.")],
        {"create": None, "list": None, "delete": None},
    ),
    object_table(
        "invoice", "invoices", "in the billing system",
        ("invoice_id", "string", "The invoice's id."), None,
        [("customer_id", "string", "Who is billed."), ("amount", "number", "Amount due."), ("due_date?", "string", "YYYY-MM-DD.")],
        {"create": None, "list": None, "get": None,
         "void": "Void an invoice that was issued by mistake.",
         "send": "Send an invoice to the customer by mail."},
    ),
    object_table(
        "customer", "customers", "in the CRM",
        ("customer_id", "string", "The customer's id."), None,
        [("name", "string", "The customer's name."), ("segment?", "string", "Market segment.")],
        {"create": None, "list": None, "get": None, "update": None, "delete": None},
    ),
    object_table(
        "budget", "budgets", "for departments and projects",
        ("budget_id", "string", "The budget's id."), None,
        [("owner", "string", "Department or project."), ("amount", "number", "Amount for the period.")],
        {"create": None, "list": None, "update": None},
    ),
    object_table(
        "notebook", "notebooks", "in the shared analysis workspace",
        ("notebook_id", "string", "The notebook's id."), None,
        [("title", "string", "The notebook's title."), ("kernel?", "string", "python or r.")],
        {"create": None, "list": None, "delete": None,
         "run": "Run every cell of an analysis notebook."},
    ),
]

DATA_EXTRAS = [
    tool("convert_currency", "Convert an amount of money from one currency to another, for example US dollars to euros.",
         [("amount", "number", "The amount to convert."), ("from_currency", "string", "ISO code of the currency it is in, e.g. USD."),
          ("to_currency", "string", "ISO code to convert into, e.g. EUR.")]),
    tool("run_sql_query", "Run a read-only SQL query against the data warehouse and return the rows.",
         [("sql", "string", "The SQL statement."), LIMIT]),
    tool("get_stock_quote", "Get the latest stock price quote for a ticker symbol.",
         [("symbol", "string", "The ticker symbol, e.g. ACME.")]),
    tool("calculate_mortgage_payment", "Calculate the monthly payment of a mortgage loan from its principal, interest rate and term.",
         [("principal", "number", "Loan amount."), ("annual_rate", "number", "Interest rate per year, in percent."),
          ("years", "integer", "Term of the loan.")]),
    tool("geocode_address", "Geocode a street address into latitude and longitude coordinates.",
         [("address", "string", "The street address.")]),
    tool("compute_summary_statistics", "Compute summary statistics of a column: mean, median, standard deviation and quartiles.",
         [("dataset_id", "string", "The dataset."), ("column", "string", "The column.")]),
    tool("detect_anomalies", "Detect anomalies and outliers in a time series.",
         [("metric", "string", "The time series' metric."), ("sensitivity?", "number", "0 to 1.")]),
    tool("generate_chart", "Generate a bar, line or pie chart image from rows of data.",
         [("kind", "string", "bar, line or pie."), ("rows", "array", "The data rows, as label:value.")]),
]

CATALOGUES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "devtools": (
        "Software development tools: repositories, issues, pull requests, CI and releases.",
        generated_tools(DEVTOOLS_OBJECTS) + DEVTOOLS_EXTRAS,
    ),
    "workplace": (
        "Workplace tools: mail, calendar, meeting rooms, chat, documents, HR and the helpdesk.",
        generated_tools(WORKPLACE_OBJECTS) + WORKPLACE_EXTRAS,
    ),
    "data": (
        "Data tools: the warehouse, dashboards, pipelines, machine learning, billing and finance.",
        generated_tools(DATA_OBJECTS) + DATA_EXTRAS,
    ),
}


def catalogue(name: str) -> list[dict[str, Any]]:
    """The tools of one catalogue (name, description, inputSchema each)."""
    return CATALOGUES[name][1]


def build_server(name: str) -> Server:
    instructions, tools = CATALOGUES[name]
    by_name = {t["name"]: t for t in tools}
    if len(by_name) != len(tools):
        raise SystemExit(f"catalogue {name}: duplicate tool names")
    listed = [
        types.Tool(name=t["name"], description=t["description"], input_schema=t["inputSchema"]) for t in tools
    ]

    async def list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listed)

    async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        if params.name not in by_name:
            raise MCPError(INVALID_PARAMS, f"Unknown tool: {params.name}")
        text = json.dumps({"tool": params.name, "arguments": params.arguments or {}}, sort_keys=True)
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    return Server(
        f"tether-interop-catalogue-{name}",
        version="1.0.0",
        instructions=instructions,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", choices=sorted(CATALOGUES), required=True)
    parser.add_argument("--list", action="store_true", help="print the catalogue's tools as JSON and exit")
    args = parser.parse_args()
    if args.list:
        print(json.dumps(catalogue(args.catalogue), indent=1))
        return

    server = build_server(args.catalogue)
    loopback.serve(server.streamable_http_app(transport_security=loopback.SECURITY, host="127.0.0.1"), "/mcp")


if __name__ == "__main__":
    sys.exit(main())
