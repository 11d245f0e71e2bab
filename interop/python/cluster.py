"""A real Tether cluster for the cluster tests: a throwaway PostgreSQL server,
N `tether serve` nodes sharing it (with the cluster secret), and a real
HAProxy (the Debian package) balancing them round-robin without stickiness,
health-checking each node's `/readyz`. All on 127.0.0.1, all stopped at
teardown.

The PostgreSQL server binaries come from the `postgresql` package and HAProxy
from `haproxy` (.ci/run installs both).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx2
import pytest

from conftest import GATEWAY_LINE, Gateway, Launcher, _LIVE, _stop

SECRET = "interop-cluster-secret"
# Fast membership so a dead node is noticed within about a second.
HEARTBEAT_MS = 200
DEAD_AFTER_MS = 1000
DRAIN_SECS = 1


def raw_session(url: str) -> dict:
    """A legacy session opened with plain HTTP on `url` (initialize +
    notifications/initialized); the headers its requests carry."""
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
    }
    r = httpx2.post(url, json=init, headers={"accept": "application/json, text/event-stream"}, timeout=10)
    assert r.status_code == 200, f"initialize on {url}: {r.status_code} {r.text}"
    headers = {
        "mcp-session-id": r.headers["mcp-session-id"],
        "mcp-protocol-version": "2025-11-25",
        "accept": "application/json, text/event-stream",
    }
    httpx2.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers, timeout=10)
    return headers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _is_root() -> bool:
    return os.geteuid() == 0


def _postgres_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions:
        pytest.fail("PostgreSQL server binaries are needed (apt-get install postgresql; .ci/run does)")
    return versions[-1].parent


class Postgres:
    """A PostgreSQL server in a temporary folder, trusting local connections."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        # Under /tmp (traversable by everyone): as root, the server runs as `postgres`.
        self.dir = Path(tempfile.mkdtemp(prefix="tether-pg-"))
        self.port = free_port()
        self.url = f"postgres://tether@127.0.0.1:{self.port}/postgres"
        if _is_root():
            subprocess.run(["chown", "-R", "postgres:", str(self.dir)], check=True)
        data = self.dir / "data"
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", "tether", "--no-sync")
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        self._run("pg_ctl", "-D", str(data), "-l", str(self.dir / "server.log"), "-o", options, "-w", "start")

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bin / tool), *args]
        if _is_root():
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{tool} failed: {done.stderr}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class HAProxy:
    """HAProxy in front of `ports`: round-robin, no stickiness, `/readyz` checks
    every 200 ms (one failure takes a node out), connection failures retried
    on another node (nothing was sent: safe for any request)."""

    def __init__(self, tmp: Path, ports: list[int]) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            pytest.fail("HAProxy is needed (apt-get install haproxy; .ci/run does)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        servers = "".join(f"    server n{i} 127.0.0.1:{p} check\n" for i, p in enumerate(ports))
        config = tmp / "haproxy.cfg"
        config.write_text(
            haproxy_config(self.port, servers)
        )
        self.log = open(tmp / "haproxy.log", "wb")
        self.popen = subprocess.Popen(
            [binary, "-f", str(config), "-db"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _LIVE[self.popen.pid] = self.popen
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.popen.poll() is not None:
                    break
                time.sleep(0.05)
        pytest.fail(f"haproxy did not start: {(tmp / 'haproxy.log').read_text(errors='replace')}")

    def stop(self) -> None:
        _stop(self.popen)
        self.log.close()


def haproxy_config(port: int, servers: str) -> str:
    """The configuration README's "Running a cluster" shows, on loopback ports."""
    return f"""global
    maxconn 2000
    log stdout format raw local0

defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 120s
    timeout server 120s
    # A node that refuses the connection (dead, restarting) is retried on
    # another: nothing was sent, so any request is safe to retry.
    retries 3
    option redispatch 1
    option http-buffer-request
    # One request per connection. On a kept-alive client connection,
    # HAProxy answers a request cut short by a dying node by closing the
    # client's connection without a response (as if it had raced the
    # server's keep-alive close), and MCP clients take a connection closed
    # under a request for a dead transport: the whole session fails. With
    # one request per connection that call gets a 502 instead, a JSON-RPC
    # error for that one call, and the session goes on.
    option httpclose

frontend mcp
    bind 127.0.0.1:{port}
    default_backend tether

backend tether
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 200ms fall 1 rise 2
{servers}"""


class Cut:
    """A TCP relay to `port` that can be cut (every connection closed, new
    ones refused) and restored: a node losing its database, say."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = free_port()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.server: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self.server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            if self.server is not server:
                # Accepted as the relay was being cut: refused after all.
                client.close()
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone
            # would leave it accepting on the old socket.
            try:
                server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            server.close()
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass


class Cluster:
    """N Tether nodes on one PostgreSQL behind HAProxy (see the module
    documentation). `cut_store`: nodes that reach PostgreSQL through a
    [`Cut`] relay (`self.cuts[i]`)."""

    def __init__(
        self,
        launcher: Launcher,
        upstreams: dict[str, str],
        nodes: int = 3,
        extra_toml: str = "",
        cut_store: tuple[int, ...] = (),
    ) -> None:
        self.launcher = launcher
        self.tmp = launcher.tmp
        self.pg = Postgres()
        self.cuts = {i: Cut(self.pg.port) for i in cut_store}
        self.ports = [free_port() for _ in range(nodes)]
        self.upstreams = upstreams
        self.extra_toml = extra_toml
        self.nodes: list[Gateway | None] = [None] * nodes
        self.generation = 0
        try:
            for i in range(nodes):
                self.start(i)
            self.lb = HAProxy(self.tmp, self.ports)
            self.wait_until_balanced()
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        """The federated `/mcp` endpoint through HAProxy."""
        return f"{self.lb.url}/mcp"

    def node_url(self, i: int, path: str = "/mcp") -> str:
        return f"http://127.0.0.1:{self.ports[i]}{path}"

    def _config(self, i: int) -> Path:
        path = self.tmp / f"node{i}.toml"
        ups = "".join(f'[[upstreams]]\nname = "{n}"\nurl = "{u}"\n' for n, u in self.upstreams.items())
        path.write_text(
            f"""[server]
listen = "127.0.0.1:{self.ports[i]}"
shutdown_timeout_secs = 5
[cluster]
heartbeat_ms = {HEARTBEAT_MS}
dead_after_ms = {DEAD_AFTER_MS}
drain_secs = {DRAIN_SECS}
{self.extra_toml}
{ups}"""
        )
        return path

    def start(self, i: int) -> Gateway:
        """Starts node i (again) on its port."""
        self.generation += 1
        node = self.launcher.spawn(
            Gateway,
            f"node{i}-{self.generation}",
            [str(self.launcher_bin()), "serve", "--config", str(self._config(i))],
            GATEWAY_LINE,
            env_extra={
                "TETHER_STORE__URL": self.store_url(i),
                "TETHER_CLUSTER__SECRET": SECRET,
                "TETHER_LOG": os.environ.get("INTEROP_CLUSTER_LOG", "info"),
            },
        )
        self.nodes[i] = node
        return node

    def store_url(self, i: int) -> str:
        """The PostgreSQL URL node i uses (through its relay, if it has one)."""
        cut = self.cuts.get(i)
        return self.pg.url if cut is None else self.pg.url.replace(f":{self.pg.port}/", f":{cut.port}/")

    @staticmethod
    def launcher_bin() -> Path:
        from conftest import TETHER_BIN

        return TETHER_BIN

    def kill(self, i: int) -> None:
        """SIGKILL: the node dies mid-whatever, leaving everything as it was."""
        self._end(i, signal.SIGKILL, 5)

    def terminate(self, i: int) -> None:
        """SIGTERM, and wait for the node to finish leaving."""
        self._end(i, signal.SIGTERM, 30)

    def _end(self, i: int, sig: int, wait_s: float) -> None:
        node = self.nodes[i]
        assert node is not None, f"node {i} is not running"
        node.popen.send_signal(sig)
        node.popen.wait(timeout=wait_s)
        _LIVE.pop(node.popen.pid, None)
        self.nodes[i] = None

    def ready(self, i: int) -> bool:
        try:
            with urllib.request.urlopen(self.node_url(i, "/readyz"), timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_until_balanced(self, timeout: float = 10) -> None:
        """Until every running node is ready and HAProxy has had time to see it up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.ready(i) for i, n in enumerate(self.nodes) if n is not None):
                # `rise 2` at 200 ms: two checks.
                time.sleep(0.6)
                return
            time.sleep(0.05)
        pytest.fail("cluster nodes did not become ready")

    def metric(self, name: str) -> float:
        """The sum of a metric over the running nodes."""
        return sum(n.metrics().get(name, 0.0) for n in self.nodes if n is not None)

    def close(self) -> None:
        lb = getattr(self, "lb", None)
        if lb is not None:
            lb.stop()
        for node in self.nodes:
            if node is not None:
                node.stop()
        for cut in getattr(self, "cuts", {}).values():
            cut.cut()
        self.pg.stop()
