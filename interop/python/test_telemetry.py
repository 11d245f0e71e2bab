"""Interop: OpenTelemetry traces through Tether, received by a real OTLP/HTTP
receiver (otlp_receiver.py, decoding with `opentelemetry-proto`).

- The official Python SDK client, inside a trace of its own (clients/
  traced_client.py, exporting with the OpenTelemetry SDK), calls a tool of the
  Python SDK upstream (upstreams/counter_server.py, whose SDK exports its own
  server spans) through Tether: one trace holds the client's span, Tether's
  server span (its child, from the request's `_meta`), Tether's client span
  to the upstream (the server span's child) and the upstream's server span
  (the client span's child: the context reached it).
- A legacy client sending only a `traceparent` header, and a 2026-07-28
  client sending it only in `_meta`: Tether's spans are in that trace, and
  the upstream receives Tether's client span as the parent, in its header
  and in `_meta`.
- The collector down, or hanging: calls are answered, and the spans that
  could not be exported are counted as dropped in /metrics.
- JSON log lines.

Peers: python-sdk (client), python-upstream, OpenTelemetry SDK exporters.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from checks import MODERN_VERSION, plain_session, post_jsonrpc, reporter, session_headers
from otlp_receiver import OtlpReceiver, Span

msg = reporter("opentelemetry", client="python-sdk")

TRACED_CLIENT = Path(__file__).resolve().parent / "clients" / "traced_client.py"
FEDERATED_ECHO = "demo__echo"


def telemetry_env(endpoint: str, **extra: str) -> dict[str, str]:
    env = {"TETHER_TELEMETRY__OTLP_ENDPOINT": endpoint, "TETHER_TELEMETRY__FLUSH_INTERVAL_MS": "100"}
    env.update({f"TETHER_TELEMETRY__{k.upper()}": v for k, v in extra.items()})
    return env


def new_parent() -> tuple[str, str, str]:
    """A fresh trace id, parent span id and the `traceparent` naming them (sampled)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def call_in_session(url: str, sid: str, tool: str, args: dict, extra: dict[str, str] | None = None) -> dict:
    body = {"jsonrpc": "2.0", "id": secrets.randbelow(10**6), "method": "tools/call", "params": {"name": tool, "arguments": args}}
    status, _, answer = post_jsonrpc(url, body, session_headers(sid, **(extra or {})))
    assert status == 200 and answer and "result" in answer, msg(f"tools/call {tool}", "200 with a result", (status, answer))
    return answer["result"]


def find(spans: list[Span], **want) -> Span | None:
    """The first span whose fields have the values `want` names."""
    return next((s for s in spans if all(getattr(s, k) == v for k, v in want.items())), None)


def in_trace(spans: list[Span], trace_id: str) -> list[Span]:
    return [s for s in spans if s.trace_id == trace_id]


def tether_pair(spans: list[Span], trace_id: str, parent: str, upstream: str) -> tuple[Span, Span] | None:
    """Tether's server span (child of `parent`) and its client span to `upstream` (child of it)."""
    mine = in_trace(spans, trace_id)
    server = next((s for s in mine if s.service == "tether" and s.kind == "server" and s.parent_span_id == parent
                   and s.attributes.get("mcp.method.name") == "tools/call"), None)
    if server is None:
        return None
    client = next((s for s in mine if s.service == "tether" and s.kind == "client" and s.parent_span_id == server.span_id
                   and s.attributes.get("tether.upstream") == upstream), None)
    return (server, client) if client else None


def expect_pair(receiver: OtlpReceiver, trace_id: str, parent: str, upstream: str, how: str) -> tuple[Span, Span]:
    """Tether's server and client spans in `trace_id` under `parent`, waited for."""
    pair = receiver.wait_for(lambda spans: tether_pair(spans, trace_id, parent, upstream))
    assert pair, msg(
        how,
        f"tether server span in trace {trace_id} under {parent}, and its client span to {upstream}",
        [str(s) for s in receiver.snapshot()],
    )
    return pair


def traceparent_of(span: Span) -> str:
    return f"00-{span.trace_id}-{span.span_id}-01"


def test_one_trace_from_sdk_client_through_tether_to_sdk_upstream(launcher):
    with OtlpReceiver() as receiver:
        upstream = launcher.python_upstream(env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})
        gateway = launcher.gateway({"py": {"url": upstream.url}}, env=telemetry_env(receiver.endpoint))
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        env.pop("TETHER_BIN", None)
        run = subprocess.run(
            [sys.executable, str(TRACED_CLIENT), gateway.url, "py__trace_context"],
            capture_output=True, text=True, timeout=60, env=env,
        )
        assert run.returncode == 0, msg("traced SDK client -> tether -> python upstream", "exit 0", run.stderr[-3000:])
        out = json.loads(run.stdout.strip().splitlines()[-1])
        trace_id = out["trace_id"]

        def chain(spans):
            mine = in_trace(spans, trace_id)
            sdk_call = next((s for s in mine if s.service == "interop-client" and s.kind == "client"
                             and "tools/call" in s.name), None)
            if sdk_call is None:
                return None
            pair = tether_pair(spans, trace_id, sdk_call.span_id, "py")
            if pair is None:
                return None
            up = next((s for s in mine if s.service == "python-upstream" and s.kind == "server"
                       and s.parent_span_id == pair[1].span_id), None)
            return (sdk_call, *pair, up) if up else None

        got = receiver.wait_for(chain)
        assert got, msg(
            "one trace: SDK client span -> tether server span -> tether client span -> upstream server span",
            f"all four in trace {trace_id}, each the parent of the next",
            [str(s) for s in in_trace(receiver.snapshot(), trace_id)],
        )
        _, server, client, up = got
        assert server.name == "tools/call py__trace_context", msg("tether server span name", "tools/call py__trace_context", server.name)
        for key, want in [
            ("mcp.method.name", "tools/call"),
            ("gen_ai.tool.name", "py__trace_context"),
            ("gen_ai.operation.name", "execute_tool"),
            ("network.transport", "tcp"),
        ]:
            assert server.attributes.get(key) == want, msg(f"tether server span {key}", want, server.attributes)
        assert server.attributes.get("mcp.session.id") and server.attributes.get("jsonrpc.request.id") is not None, msg(
            "tether server span session and request ids", "both set", server.attributes
        )
        assert client.name == "tools/call trace_context" and client.attributes.get("gen_ai.tool.name") == "trace_context", msg(
            "tether client span (the upstream's own tool name)", "tools/call trace_context", (client.name, client.attributes)
        )
        assert client.attributes.get("mcp.session.id") and client.attributes.get("mcp.protocol.version"), msg(
            "tether client span: the upstream session's id and version", "set", client.attributes
        )
        # What the upstream itself saw: Tether's client span as the parent, in both carriers.
        seen = json.loads(out["text"])
        assert seen == {"header": traceparent_of(client), "meta": traceparent_of(client)}, msg(
            "trace context the upstream received", traceparent_of(client), seen
        )
        # Opening the upstream session happened inside the request, in its trace.
        mine = in_trace(receiver.snapshot(), trace_id)
        opened = [s for s in mine if s.service == "tether" and s.name == "open upstream session"]
        assert opened, msg("span for opening the upstream session", "in the request's trace", [str(s) for s in mine])
        # Its handshake is a client span of its own, which the upstream's initialize span is under.
        handshake = [s for s in mine if s.service == "tether" and s.kind == "client" and s.name == "initialize"
                     and s.parent_span_id == opened[0].span_id]
        answered = handshake and receiver.wait_for(lambda spans: any(
            s.service == "python-upstream" and s.name == "initialize" and s.parent_span_id == handshake[0].span_id
            for s in spans))
        assert answered, msg("the upstream session's initialize", "tether's client span, parent of the upstream's span",
                             [str(s) for s in in_trace(receiver.snapshot(), trace_id)])
        # The era probe, when the request made it, carried the trace too.
        detect = [s for s in mine if s.service == "tether" and s.name == "detect upstream era"]
        probed = not detect or receiver.wait_for(lambda spans: any(
            s.service == "python-upstream" and s.name == "server/discover" and s.parent_span_id == detect[0].span_id
            for s in spans))
        assert probed, msg("the era probe's server/discover", "the upstream's span under tether's 'detect upstream era'",
                           [str(s) for s in in_trace(receiver.snapshot(), trace_id)])


def test_legacy_client_header_context(launcher):
    with OtlpReceiver() as receiver:
        upstream = launcher.python_upstream()
        gateway = launcher.gateway({"py": {"url": upstream.url}}, env=telemetry_env(receiver.endpoint))
        sid = plain_session(gateway.url, msg)
        trace_id, parent, traceparent = new_parent()
        result = call_in_session(gateway.url, sid, "py__trace_context", {}, {"traceparent": traceparent, "tracestate": "k=v"})
        server, client = expect_pair(receiver, trace_id, parent, "py", "legacy client, traceparent header only")
        assert server.attributes.get("mcp.session.id") == sid, msg("server span mcp.session.id", sid, server.attributes)
        seen = json.loads(result["content"][0]["text"])
        assert seen == {"header": traceparent_of(client), "meta": traceparent_of(client)}, msg(
            "trace context the python upstream received (header and _meta)", traceparent_of(client), seen
        )


def modern_call(url: str, tool: str, args: dict, meta_extra: dict) -> tuple[int, dict | None]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
        "io.modelcontextprotocol/clientInfo": {"name": "raw-modern", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
        **meta_extra,
    }
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": args, "_meta": meta}}
    headers = {"MCP-Protocol-Version": MODERN_VERSION, "Mcp-Method": "tools/call", "Mcp-Name": tool}
    status, _, answer = post_jsonrpc(url, body, headers)
    return status, answer


def test_modern_client_meta_context(launcher):
    with OtlpReceiver() as receiver:
        upstream = launcher.upstream("modern", name="demo-modern")
        gateway = launcher.gateway({"demo": upstream.url}, env=telemetry_env(receiver.endpoint))
        trace_id, parent, traceparent = new_parent()
        status, answer = modern_call(gateway.url, FEDERATED_ECHO, {"text": "traced"}, {"traceparent": traceparent})
        assert status == 200 and answer and "result" in answer, msg("modern tools/call with _meta.traceparent", "200 + result", answer)
        server, client = expect_pair(receiver, trace_id, parent, "demo", "2026-07-28 client, traceparent in _meta only")
        assert server.attributes.get("mcp.protocol.version") == MODERN_VERSION, msg("server span version", MODERN_VERSION, server.attributes)
        seen = upstream.stats()["last_call_trace"]
        assert seen == {"header": traceparent_of(client), "meta": traceparent_of(client)}, msg(
            "trace context the modern upstream received (header and _meta)", traceparent_of(client), seen
        )


def test_untraced_requests_start_traces_and_errors_are_marked(launcher):
    with OtlpReceiver() as receiver:
        upstream = launcher.upstream("modern", name="demo-modern")
        gateway = launcher.gateway({"demo": upstream.url}, env=telemetry_env(receiver.endpoint))
        status, answer = modern_call(gateway.url, "demo__no_such_tool", {}, {})
        assert status == 200 and answer and "error" in answer, msg("unknown tool", "a JSON-RPC error", answer)
        root = receiver.wait_for(lambda spans: find(spans, service="tether", kind="server", parent_span_id=""))
        assert root and root.error and root.attributes.get("error.type") == str(answer["error"]["code"]), msg(
            "a request without trace context", "a root server span marked with the JSON-RPC error code",
            [str(s) for s in receiver.snapshot()] + [root.attributes if root else None],
        )


def metric(gateway, name: str) -> float:
    return gateway.metrics().get(name, 0.0)


def test_collector_down_calls_succeed_and_drops_are_counted(launcher):
    # A port nothing listens on.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    upstream = launcher.upstream("legacy")
    gateway = launcher.gateway({"demo": upstream.url}, env=telemetry_env(dead, export_timeout_ms="1000"))
    sid = plain_session(gateway.url, msg)
    for i in range(20):
        result = call_in_session(gateway.url, sid, FEDERATED_ECHO, {"text": f"n{i}"})
        assert result["content"][0]["text"] == f"n{i}", msg("tools/call with the collector down", f"n{i}", result)
    key = 'tether_trace_spans_dropped_total{reason="export_failed"}'
    deadline = time.monotonic() + 10
    while metric(gateway, key) < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(gateway, key) >= 20, msg("spans dropped with the collector down", f"{key} >= 20", gateway.metrics())
    assert metric(gateway, "tether_trace_spans_exported_total") == 0, msg("exported spans", 0, gateway.metrics())


def test_hanging_collector_overflows_the_bounded_queue(launcher):
    # A collector that accepts connections and never answers.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        upstream = launcher.upstream("legacy")
        env = telemetry_env(f"http://127.0.0.1:{listener.getsockname()[1]}", queue_size="8", batch_size="4", export_timeout_ms="30000")
        gateway = launcher.gateway({"demo": upstream.url}, env=env)
        sid = plain_session(gateway.url, msg)
        for i in range(40):
            call_in_session(gateway.url, sid, FEDERATED_ECHO, {"text": f"n{i}"})
        full = metric(gateway, 'tether_trace_spans_dropped_total{reason="queue_full"}')
        assert full > 0, msg("spans beyond the queue while the collector hangs", "counted as queue_full drops", gateway.metrics())
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def test_json_logs_carry_trace_ids(launcher):
    with OtlpReceiver() as receiver:
        upstream = launcher.upstream("legacy")
        env = {**telemetry_env(receiver.endpoint), "TETHER_LOG_FORMAT": "json", "TETHER_LOG": "tether_gateway=debug,info"}
        gateway = launcher.gateway({"demo": upstream.url}, env=env)
        sid = plain_session(gateway.url, msg)
        trace_id, _, traceparent = new_parent()
        # A call that fails upstream logs inside the request (the upstream is stopped first).
        upstream.stop()
        body = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": FEDERATED_ECHO, "arguments": {"text": "x"}}}
        post_jsonrpc(gateway.url, body, session_headers(sid, traceparent=traceparent))
        lines = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            lines = [json.loads(l) for l in gateway.stderr_path.read_text().splitlines() if l.strip()]
            if any(l.get("trace_id") == trace_id for l in lines):
                break
            time.sleep(0.1)
        assert lines and all({"timestamp", "level", "target"} <= l.keys() for l in lines), msg(
            "TETHER_LOG_FORMAT=json", "every stderr line a JSON object with timestamp, level, target", lines[:5]
        )
        traced = [l for l in lines if l.get("trace_id") == trace_id]
        assert traced and all(len(l.get("span_id", "")) == 16 for l in traced), msg(
            "log lines written while the traced request was served", f"trace_id {trace_id} and a span_id", lines[-10:]
        )


def test_sampling_follows_the_ratio_and_the_callers_sampled_flag(launcher):
    with OtlpReceiver() as receiver:
        upstream = launcher.upstream("modern", name="demo-modern")
        gateway = launcher.gateway({"demo": upstream.url}, env=telemetry_env(receiver.endpoint, sample_ratio="0.0"))
        # A new trace at ratio 0: nothing recorded; the context still goes on, unsampled, in the headers only.
        status, answer = modern_call(gateway.url, FEDERATED_ECHO, {"text": "quiet"}, {})
        assert status == 200 and answer and "result" in answer, msg("modern tools/call at sample_ratio 0", "a result", answer)
        seen = upstream.stats()["last_call_trace"]
        assert seen["header"] and seen["header"].endswith("-00") and seen["meta"] is None, msg(
            "trace context of an unsampled request at the upstream", "an unsampled traceparent header, no _meta", seen
        )
        # A caller's sampled trace is followed whatever the ratio.
        trace_id, parent, traceparent = new_parent()
        modern_call(gateway.url, FEDERATED_ECHO, {"text": "loud"}, {"traceparent": traceparent})
        server, client = expect_pair(receiver, trace_id, parent, "demo", "a sampled caller at sample_ratio 0")
        assert upstream.stats()["last_call_trace"]["meta"] == traceparent_of(client), msg(
            "a sampled request's context at the upstream", traceparent_of(client), upstream.stats()["last_call_trace"]
        )
        assert all(s.trace_id == trace_id for s in receiver.snapshot()), msg(
            "spans exported at sample_ratio 0", f"only those of the caller's trace {trace_id}", [str(s) for s in receiver.snapshot()]
        )
