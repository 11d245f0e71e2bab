"""A traced MCP client: the official Python SDK (`mcp` 2.x) client inside an
OpenTelemetry trace of its own, exporting its spans over OTLP/HTTP.

    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:PORT python traced_client.py URL TOOL [ARGS_JSON]

Starts a root span `interop call`, opens a legacy (initialize + session)
Streamable HTTP session on URL, calls TOOL with ARGS_JSON (default `{}`) and
prints one JSON line: `{"trace_id", "root_span_id", "text"}`
(hex ids). The SDK client makes a client span per request and puts its W3C
trace context in the request's `params._meta` (SEP-414), so whatever serves
the call can join the trace. Spans are exported as each ends (service
`interop-client`), all before the process exits.
"""

from __future__ import annotations

import asyncio
import json
import sys

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


async def call(url: str, tool: str, args: dict) -> dict:
    tracer = trace.get_tracer("interop-client")
    with tracer.start_as_current_span("interop call") as root:
        async with streamable_http_client(url) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                result = await session.call_tool(tool, args)
        ids = root.get_span_context()
        text = next((c.text for c in result.content if getattr(c, "type", "") == "text"), None)
        return {
            "trace_id": format(ids.trace_id, "032x"),
            "root_span_id": format(ids.span_id, "016x"),
            "text": text,
        }


def main() -> int:
    url, tool = sys.argv[1], sys.argv[2]
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    provider = TracerProvider(resource=Resource.create({"service.name": "interop-client"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    out = asyncio.run(call(url, tool, args))
    provider.shutdown()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
