"""The cluster benchmark: three Tether nodes on one PostgreSQL behind HAProxy
(the test suite's cluster, interop/python/cluster.py), all on loopback.

1. Throughput through HAProxy: one node behind it versus three (`tether-bench
   --url`, 64 sessions of legacy tools/call echo), alternating rounds.
2. A request passed on versus a local one: sessions opened on node 0, calls
   sent to node 0 (local) or node 1 (passed on to node 0), alternating.
3. Failover: a client calls every 5 ms in a session whose home is node 1;
   node 1 is killed (SIGKILL) or frozen (SIGSTOP, so it stops heartbeating
   but never refuses a connection); the time from then to the first answered
   call, through node 0 and through HAProxy.

    interop/.cache/venv/bin/python interop/bench/cluster_bench.py [--seconds 5] [--rounds 3]

Needs a release build (`cargo build --release --workspace`), the interop
venv (`interop/run.sh` creates it), and the postgresql and haproxy packages.
A benchmark, not a test: it prints numbers and never fails on them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("TETHER_BIN", str(REPO / "target" / "release" / "tether"))
os.environ.setdefault("INTEROP_CLUSTER_LOG", "warn")
sys.path.insert(0, str(REPO / "interop" / "python"))

import httpx2  # noqa: E402

from cluster import Cluster, HAProxy, raw_session  # noqa: E402
from conftest import Launcher  # noqa: E402

BENCH = REPO / "target" / "release" / "tether-bench"


def bench(url: str, concurrency: int, seconds: int, call_url: str | None = None) -> dict:
    argv = [str(BENCH), "--url", url, "--concurrency", str(concurrency), "--seconds", str(seconds)]
    if call_url:
        argv += ["--call-url", call_url]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def throughput(cluster: Cluster, one: HAProxy, seconds: int, rounds: int) -> None:
    print("\n1. Throughput through HAProxy, 64 sessions (calls/s)")
    print(f"{'round':>5} {'1 node':>9} {'3 nodes':>9} {'3 / 1':>7}")
    ratios = []
    for r in range(rounds):
        single = bench(f"{one.url}/mcp", 64, seconds)["rps"]
        three = bench(cluster.url, 64, seconds)["rps"]
        ratios.append(three / single)
        print(f"{r + 1:>5} {single:>9.0f} {three:>9.0f} {three / single:>7.2f}")
    print(f"{'median':>5} {'':>9} {'':>9} {statistics.median(ratios):>7.2f}")


def passed_on(cluster: Cluster, seconds: int, rounds: int) -> None:
    print("\n2. A call passed on to the session's node versus a local one (µs)")
    print(f"{'conc':>5} {'round':>5} {'local p50':>10} {'p99':>7} {'passed p50':>11} {'p99':>7} {'+p50':>6} {'+p99':>6}")
    for conc in (1, 16):
        added = []
        for r in range(rounds):
            local = bench(cluster.node_url(0), conc, seconds)
            moved = bench(cluster.node_url(0), conc, seconds, call_url=cluster.node_url(1))
            added.append((moved["p50_us"] - local["p50_us"], moved["p99_us"] - local["p99_us"]))
            print(
                f"{conc:>5} {r + 1:>5} {local['p50_us']:>10.0f} {local['p99_us']:>7.0f} "
                f"{moved['p50_us']:>11.0f} {moved['p99_us']:>7.0f} {added[-1][0]:>6.0f} {added[-1][1]:>6.0f}"
            )
        print(
            f"{conc:>5} {'median':>5} {'':>10} {'':>7} {'':>11} {'':>7} "
            f"{statistics.median(a for a, _ in added):>6.0f} {statistics.median(b for _, b in added):>6.0f}"
        )


def answered(url: str, headers: dict) -> bool:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "demo__counter_increment"}}
    try:
        r = httpx2.post(url, json=body, headers=headers, timeout=10)
        return r.status_code == 200 and "result" in r.json()
    except httpx2.HTTPError:
        return False


def failover_once(cluster: Cluster, how: str, via: str) -> float:
    """Seconds from node 1's death (or freeze) to the first answered call in
    a session whose home was node 1, calling through `via`."""
    headers = {**raw_session(cluster.node_url(1)), "accept": "application/json"}
    url = cluster.node_url(0) if via == "node 0" else cluster.url
    for _ in range(20):
        assert answered(url, headers), "the session answers before the failure"
        time.sleep(0.005)
    node = cluster.nodes[1]
    t0 = time.monotonic()
    if how == "SIGKILL":
        cluster.kill(1)
    else:
        node.popen.send_signal(signal.SIGSTOP)
    while not answered(url, headers):
        time.sleep(0.005)
    elapsed = time.monotonic() - t0
    if how == "SIGSTOP":
        node.popen.send_signal(signal.SIGKILL)
        node.popen.wait(timeout=5)
        cluster.nodes[1] = None
    cluster.start(1)
    cluster.wait_until_balanced()
    return elapsed


def failover(cluster: Cluster, rounds: int) -> None:
    print("\n3. Failover: from node 1's end to its session answering again (ms)")
    print(f"{'node 1':>8} {'via':>8} {'runs':>30} {'median':>7}")
    for how in ("SIGKILL", "SIGSTOP"):
        for via in ("node 0", "HAProxy"):
            runs = [failover_once(cluster, how, via) * 1000 for _ in range(rounds)]
            shown = " ".join(f"{r:.0f}" for r in runs)
            print(f"{how:>8} {via:>8} {shown:>30} {statistics.median(runs):>7.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tether-cluster-bench-") as tmp:
        launcher = Launcher(Path(tmp))
        demo = launcher.upstream("legacy", name="demo")
        cluster = Cluster(launcher, {"demo": demo.url})
        one_dir = Path(tmp) / "one"
        one_dir.mkdir()
        one = HAProxy(one_dir, cluster.ports[:1])
        try:
            print(
                "Three nodes (heartbeat 200 ms, dead after 1000 ms) on one PostgreSQL, "
                "HAProxy round-robin, legacy tools/call echo"
            )
            throughput(cluster, one, args.seconds, args.rounds)
            passed_on(cluster, args.seconds, args.rounds)
            failover(cluster, args.rounds)
        finally:
            one.stop()
            cluster.close()
            launcher.stop_all()


if __name__ == "__main__":
    main()
