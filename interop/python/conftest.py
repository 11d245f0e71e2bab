"""Fixtures for the interop tests: real `tether` processes on loopback.

Every process is started with `--listen 127.0.0.1:0` (the OS picks a free
port), its URL is parsed from the one line it prints on stdout, and it is
killed on teardown -- also when the test failed, and (through an atexit and a
SIGTERM handler) when pytest itself is stopped.

The binary is `$TETHER_BIN`, or `<repo>/target/debug/tether` by default.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TETHER_BIN = Path(os.environ.get("TETHER_BIN") or REPO / "target" / "debug" / "tether")

STARTUP_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0

NODE_DIR = Path(os.environ.get("INTEROP_NODE_DIR") or REPO / "interop" / ".cache" / "node")
EVERYTHING_JS = NODE_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
LOOPBACK_PRELOAD = REPO / "interop" / "node" / "lib" / "loopback-only.cjs"
PY_UPSTREAM = Path(__file__).resolve().parent / "upstreams" / "counter_server.py"
CATALOGUE_UPSTREAM = Path(__file__).resolve().parent / "upstreams" / "catalogue_server.py"

EVERYTHING_LINE = re.compile(r"loopback-only: listening on (http://127\.0\.0\.1:\d+)")
PY_UPSTREAM_LINE = re.compile(r"python upstream listening on (http://127\.0\.0\.1:\d+/(?:mcp|sse))")
UPSTREAM_LINE = re.compile(r"demo upstream listening on (http://127\.0\.0\.1:\d+/mcp)")
GATEWAY_LINE = re.compile(r"tether listening on (http://127\.0\.0\.1:\d+/mcp)")

# Every process started here that has not been stopped yet (pid -> Popen).
_LIVE: dict[int, subprocess.Popen] = {}


def _stop(proc: subprocess.Popen) -> None:
    """Stops one process we started: SIGTERM, then SIGKILL after a grace period."""
    _LIVE.pop(proc.pid, None)
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)
    except ProcessLookupError:
        pass


def _stop_all() -> None:
    for proc in list(_LIVE.values()):
        _stop(proc)


atexit.register(_stop_all)


def _on_sigterm(signum, frame):  # pragma: no cover - only when the run is killed
    _stop_all()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_sigterm)


@dataclass
class Proc:
    """A running tether process (demo upstream or gateway)."""

    name: str
    args: list[str]
    popen: subprocess.Popen
    url: str  # the printed .../mcp URL
    stderr_path: Path

    @property
    def base(self) -> str:
        """The URL without its endpoint path (`/mcp`, or `/sse` for an HTTP+SSE server)."""
        return re.sub(r"/(?:mcp|sse)$", "", self.url)

    def stderr_tail(self, n: int = 4000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        _stop(self.popen)


@dataclass
class Upstream(Proc):
    era: str = ""

    def stats(self) -> dict:
        """The demo upstream's counters: initializes, deletes, live_sessions, modern_requests, tool_calls."""
        with urllib.request.urlopen(self.base + "/stats", timeout=5) as resp:
            return json.loads(resp.read())


@dataclass
class PyUpstream(Proc):
    def stats(self) -> dict:
        """The Python upstream's counters: initializes, deletes, sessions (ids that used the counter),
        sse_opened / sse_closed (HTTP+SSE streams)."""
        with urllib.request.urlopen(self.base + "/stats", timeout=5) as resp:
            return json.loads(resp.read())


@dataclass
class Gateway(Proc):
    def single(self, upstream: str) -> str:
        """URL of the single-upstream endpoint `/u/<upstream>/mcp`."""
        return f"{self.base}/u/{upstream}/mcp"

    def sse(self, upstream: str | None = None) -> str:
        """URL of the HTTP+SSE (2024-11-05) stream endpoint: federated `/sse`, or `/u/<upstream>/sse`."""
        return f"{self.base}/sse" if upstream is None else f"{self.base}/u/{upstream}/sse"

    def virtual(self, name: str, transport: str = "mcp") -> str:
        """URL of the virtual server `name`: `/v/<name>/mcp` (Streamable HTTP, both eras) or,
        with transport "sse", its HTTP+SSE stream endpoint `/v/<name>/sse`."""
        return f"{self.base}/v/{name}/{transport}"

    def metrics(self) -> dict[str, float]:
        """`GET /metrics` parsed: `name{labels}` (as printed) -> value."""
        with urllib.request.urlopen(self.base + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def endpoint(self, upstream: str, kind: str) -> tuple[str, str, str]:
        """(URL, tool-name prefix, path) of the federated `/mcp` (kind "federated", names
        `<upstream>__...`) or of the single-upstream `/u/<upstream>/mcp` (kind "single")."""
        if kind == "federated":
            return self.url, f"{upstream}__", "/mcp"
        if kind == "single":
            return self.single(upstream), "", f"/u/{upstream}/mcp"
        raise ValueError(f"unknown endpoint kind {kind!r}")

    def children(self, running: str | Path | None = None) -> list[tuple[int, list[str]]]:
        """The processes this gateway started (stdio upstreams): (pid, argv) each; with
        `running`, only those with that program (a path) among their arguments."""
        kids = child_processes(self.popen.pid)
        return kids if running is None else [(pid, argv) for pid, argv in kids if str(running) in argv]


class Launcher:
    """Starts tether processes for one test and stops them all at teardown."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.procs: list[Proc] = []

    def _start(self, kind, name: str, args: list[str], line: re.Pattern, **extra) -> Proc:
        if not (TETHER_BIN.is_file() and os.access(TETHER_BIN, os.X_OK)):
            pytest.fail(f"tether binary not found or not executable: {TETHER_BIN} (build it or set TETHER_BIN)")
        return self.spawn(kind, name, [str(TETHER_BIN), *args], line, **extra)

    def spawn(
        self,
        kind,
        name: str,
        argv: list[str],
        line: re.Pattern,
        env_extra: dict[str, str] | None = None,
        **extra,
    ) -> Proc:
        """Starts argv, waits for `line` (group 1 = URL) on its stdout, registers it for teardown."""
        args = argv[1:]
        out_path = self.tmp / f"{name}.stdout"
        err_path = self.tmp / f"{name}.stderr"
        env = dict(os.environ)
        env.setdefault("TETHER_LOG", "warn")
        # TETHER_* variables are tether's own config overlay (TETHER_SERVER__LISTEN=...), and it
        # rejects unknown keys: our harness variable TETHER_BIN must not reach it.
        env.pop("TETHER_BIN", None)
        env.pop("TETHER_CONFIG", None)
        env.update(env_extra or {})
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=self.tmp,
                start_new_session=True,
            )
        _LIVE[popen.pid] = popen
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        url = None
        while time.monotonic() < deadline:
            m = line.search(out_path.read_text(errors="replace"))
            if m:
                url = m.group(1)
                break
            if popen.poll() is not None:
                break
            time.sleep(0.02)
        if url is None:
            _stop(popen)
            pytest.fail(
                f"{name}: `{' '.join(argv)}` did not print its listening URL within "
                f"{STARTUP_TIMEOUT_S}s (exit code {popen.returncode}); stdout: "
                f"{out_path.read_text(errors='replace')[-2000:]!r}; stderr: {err_path.read_text(errors='replace')[-2000:]!r}"
            )
        proc = kind(name=name, args=args, popen=popen, url=url, stderr_path=err_path, **extra)
        self.procs.append(proc)
        return proc

    def upstream(self, era: str, name: str | None = None, profile: str = "demo") -> Upstream:
        """A `tether demo-upstream` of the given era (legacy, modern or dual), serving the
        demo tools or (`profile="conformance"`) the conformance suite's fixture."""
        name = name or f"upstream-{era}-{len(self.procs)}"
        argv = ["demo-upstream", "--listen", "127.0.0.1:0", "--era", era, "--profile", profile]
        return self._start(Upstream, name, argv, UPSTREAM_LINE, era=era)

    def gateway(
        self,
        upstreams: dict[str, str | dict],
        name: str | None = None,
        env: dict[str, str] | None = None,
        extra: str = "",
    ) -> Gateway:
        """`tether serve` with a temp config federating `upstreams`: name -> URL, or
        name -> a dict of upstream keys (`url` or `command` (a list), `transport`, `era`, `shared`,
        `shape`, ...; nested dicts are written as inline tables).
        `env`: extra environment variables for it (e.g. `TETHER_ADMIN__TOKEN`).
        `extra`: TOML appended to the config after the upstreams (`[federation]`,
        `[[virtual_servers]]`, `[auth]`, ...; see `toml_table` / `toml_tables`)."""
        name = name or f"tether-{len(self.procs)}"
        config = self.tmp / f"{name}.toml"
        config.write_text("".join(_upstream_toml(n, u) for n, u in upstreams.items()) + extra)
        return self._start(
            Gateway, name, ["serve", "--config", str(config), "--listen", "127.0.0.1:0"], GATEWAY_LINE, env_extra=env
        )

    def everything(self, name: str = "everything") -> Proc:
        """`@modelcontextprotocol/server-everything` over Streamable HTTP on 127.0.0.1, a free port.

        It has no host option (Express `listen(PORT)` binds every interface), so it runs
        under interop/node/lib/loopback-only.cjs, which binds 127.0.0.1 and prints the port.
        `Proc.url` is its `.../mcp` endpoint."""
        if not EVERYTHING_JS.is_file():
            pytest.fail(f"server-everything not installed at {EVERYTHING_JS} (run interop/run.sh, or set INTEROP_NODE_DIR)")
        proc = self.spawn(
            Proc,
            name,
            ["node", "--require", str(LOOPBACK_PRELOAD), str(EVERYTHING_JS), "streamableHttp"],
            EVERYTHING_LINE,
            env_extra={"PORT": "0"},
        )
        proc.url = proc.url + "/mcp"
        return proc

    def python_upstream(
        self, name: str = "python-upstream", transport: str = "streamable-http", env: dict[str, str] | None = None
    ) -> "PyUpstream":
        """interop/python/upstreams/counter_server.py (official SDK `MCPServer`) on 127.0.0.1, a free port.

        `transport`: "streamable-http" (`Proc.url` is its `.../mcp`) or "sse" (the 2024-11-05
        HTTP+SSE transport; `Proc.url` is its `.../sse` stream endpoint). `env`: extra environment
        variables (e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`, to export its spans)."""
        return self.spawn(
            PyUpstream,
            name,
            [sys.executable, str(PY_UPSTREAM), "--transport", transport],
            PY_UPSTREAM_LINE,
            env_extra=env,
        )

    def catalogue_upstream(self, catalogue: str, name: str | None = None) -> Proc:
        """interop/python/upstreams/catalogue_server.py (the SDK's lowlevel `Server`) serving the tool
        catalogue `catalogue` ("devtools", "workplace" or "data", 70-80 tools each) over
        Streamable HTTP on 127.0.0.1, a free port; `Proc.url` is its `.../mcp`. Every tool
        answers the JSON text `{"tool": <its name>, "arguments": <what it received>}`."""
        return self.spawn(
            Proc,
            name or f"catalogue-{catalogue}-{len(self.procs)}",
            [sys.executable, str(CATALOGUE_UPSTREAM), "--catalogue", catalogue],
            PY_UPSTREAM_LINE,
        )

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v))


# Stdio upstreams (`command = [...]`): the programs Tether runs as its children.
# server-everything runs under loopback-only.cjs too: over stdio it should not listen at
# all, and if it ever did, the preload keeps it on 127.0.0.1.
EVERYTHING_STDIO_COMMAND = ["node", "--require", str(LOOPBACK_PRELOAD), str(EVERYTHING_JS), "stdio"]
PY_STDIO_COMMAND = [sys.executable, str(PY_UPSTREAM), "--transport", "stdio"]


def child_processes(parent: int) -> list[tuple[int, list[str]]]:
    """Live (not zombie) processes whose parent is `parent`: (pid, argv) each, from /proc."""
    found = []
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_path.read_text()
            argv = (stat_path.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # The command name (field 2) may contain spaces and parentheses: split after its last ")".
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and state != "Z":
            found.append((int(stat_path.parent.name), [a.decode(errors="replace") for a in argv if a]))
    return sorted(found)


def listening_sockets(port: int | None = None, pid: int | None = None) -> list[str]:
    """Local addresses (`127.0.0.1:PORT`, `[hex]:PORT`) of the TCP sockets in LISTEN state, from
    /proc/net/tcp{,6}; only those on `port`, and/or only those open in process `pid`."""
    inodes = None
    if pid is not None:
        inodes = set()
        # os.listdir raises when the process's fds cannot be read: never a silent "no sockets".
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = []
    for table, family in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or (port is not None and int(port_hex, 16) != port):
                continue
            if inodes is not None and inode not in inodes:
                continue
            if family == 4:
                raw = bytes.fromhex(addr_hex)[::-1]
                found.append(".".join(str(b) for b in raw) + f":{int(port_hex, 16)}")
            else:
                raw = b"".join(bytes.fromhex(addr_hex[i : i + 8])[::-1] for i in range(0, 32, 8))
                found.append(f"[{raw.hex()}]:{int(port_hex, 16)}")
    return found


def _toml_keys(keys: dict) -> str:
    """`key = value` lines (bare keys where TOML allows them; nested dicts inline)."""
    bare = re.compile(r"[A-Za-z0-9_-]+")
    return "".join(f"{k if bare.fullmatch(k) else json.dumps(k)} = {_toml_value(v)}\n" for k, v in keys.items())


def toml_table(header: str, keys: dict) -> str:
    """A `[header]` table (e.g. "federation", "auth.jwt") with `keys` (nested dicts inline)."""
    return f"[{header}]\n{_toml_keys(keys)}\n"


def toml_tables(header: str, *entries: dict) -> str:
    """`[[header]]` array-of-tables entries (e.g. "virtual_servers", "auth.policies"), one per
    dict (nested dicts inline, so `shape = {"tool": {"alias": ...}}` works)."""
    return "".join(f"[[{header}]]\n{_toml_keys(e)}\n" for e in entries)


def _upstream_toml(name: str, spec: str | dict) -> str:
    spec = {"url": spec} if isinstance(spec, str) else spec
    return f'[[upstreams]]\nname = "{name}"\n' + "".join(f"{k} = {_toml_value(v)}\n" for k, v in spec.items()) + "\n"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def launcher(tmp_path):
    launcher = Launcher(tmp_path)
    try:
        yield launcher
    finally:
        launcher.stop_all()


@pytest.fixture
def legacy_upstream(launcher) -> Upstream:
    return launcher.upstream("legacy")


@pytest.fixture
def modern_upstream(launcher) -> Upstream:
    return launcher.upstream("modern")


@pytest.fixture
def gateway_legacy(launcher, legacy_upstream) -> Gateway:
    """Tether federating one legacy-era demo upstream named `demo`."""
    return launcher.gateway({"demo": legacy_upstream.url})


@pytest.fixture
def gateway_modern(launcher, modern_upstream) -> Gateway:
    """Tether federating one modern-era (2026-07-28) demo upstream named `demo`."""
    return launcher.gateway({"demo": modern_upstream.url})


@pytest.fixture
def era_upstream(launcher, era) -> Upstream:
    """A demo upstream of the era the test is parametrized with (`era`: legacy, modern or dual)."""
    return launcher.upstream(era)


@pytest.fixture
def era_gateway(launcher, era_upstream) -> Gateway:
    """Tether federating `era_upstream` as `demo`."""
    return launcher.gateway({"demo": era_upstream.url})


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the tail of every process's stderr to the report."""
    report = yield
    if report.failed:
        launcher = item.funcargs.get("launcher") if hasattr(item, "funcargs") else None
        if launcher is not None:
            for proc in launcher.procs:
                tail = proc.stderr_tail()
                if tail:
                    report.sections.append((f"stderr of {proc.name} ({' '.join(proc.args)})", tail))
    return report


@pytest.fixture(scope="module")
def everything_server(tmp_path_factory) -> Proc:
    """One server-everything per test module (it starts in ~1 s); tests put their own Tether in front."""
    launcher = Launcher(tmp_path_factory.mktemp("everything"))
    try:
        yield launcher.everything()
    finally:
        launcher.stop_all()
