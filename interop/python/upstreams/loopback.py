"""Serving a test upstream's ASGI app on 127.0.0.1: the transport security
both upstreams use (loopback hosts and origins only), and a free port whose
URL is printed in the line the test harness waits for."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from mcp.server.transport_security import TransportSecuritySettings

SECURITY = TransportSecuritySettings(
    enable_dns_rebinding_protection=True,
    allowed_hosts=["127.0.0.1:*", "localhost:*"],
    allowed_origins=["http://127.0.0.1:*", "http://localhost:*"],
)


def serve(app, path: str) -> None:
    """Serves `app` on 127.0.0.1, a free port, after printing
    "python upstream listening on http://127.0.0.1:<port><path>"."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    print(f"python upstream listening on http://127.0.0.1:{port}{path}", flush=True)
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
