"""Operator at scale: N ResonanceNodes created at once against kube-lite, then spec changes one by one.

Measures the time from the first create until every node has its one Deployment, the operator's RSS
and CPU, the latency of a spec change (patch -> its Deployment carries it, seen on a watch), and every
API call the operator made, from the API server's audit log (as tests/operator/test_rbac_audit.py reads
it). The operator runs as the operator tests run it (tests/support/kube.py): its own process, an
embedded broker for heartbeats, leader election on (the default), watching the bench's namespace.

    .venv/bin/python bench/operator_scale.py --kube-lite PATH/kube-lite          # or RESONANCE_KUBE_LITE
    .venv/bin/python bench/operator_scale.py --nodes 100 --changes 20 --json /tmp/scale.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiokafka import AIOKafkaProducer
from resonance_local.embedded import EmbeddedBroker, free_port
from resonance_operator.tracked import REFRESHES_PER_S
from scale_report import markdown, slope

ROOT = Path(__file__).resolve().parents[1]
NS = "scale"
FREQUENCY = 0.043  # a node's default heartbeat frequency (Hz)
NODES = f"/apis/resonance.io/v1alpha1/namespaces/{NS}/resonancenodes"
OPERATOR_AGENTS = ("kopf/", "OpenAPI-Generator/")  # kopf's own client, and kubernetes_asyncio's
# One audit event per request: RequestReceived omitted (a watch still has two stages: deduped by ID).
AUDIT_POLICY = (
    "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules: [{level: Metadata}]"
)


def node(i: int) -> dict[str, Any]:
    name = f"node-{i:04d}"
    spec = {"endpoint": f"ws://{name}:8766", "topic": f"resonance.{name}", "anchor": "BOLZANO_71"}
    meta = {"name": name, "namespace": NS}
    return {"apiVersion": "resonance.io/v1alpha1", "kind": "ResonanceNode", "metadata": meta, "spec": spec}


def endpoint_of(deployment: dict[str, Any]) -> str | None:
    env = (v for c in deployment["spec"]["template"]["spec"]["containers"] for v in c.get("env") or ())
    return next((v.get("value") for v in env if v["name"] == "RESONANCE_ENDPOINT"), None)


def proc_stats(pid: int) -> dict[str, float]:
    """CPU seconds (utime+stime, /proc/PID/stat); peak and current RSS in MB (VmHWM, VmRSS)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    rss = {key: int(status[key].split()[0]) / 1024 for key in ("VmHWM", "VmRSS")}
    return {"cpu_s": (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), **rss}


class Audit:
    """The operator's requests ("verb resource[/subresource]"), read incrementally from the audit log."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.seen, self.calls = path, 0, set[str](), Counter[str]()

    def read(self) -> Counter[str]:
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        chunk = chunk[: chunk.rfind(b"\n") + 1]  # a line half written waits for the next read
        self.offset += len(chunk)
        for event in map(json.loads, chunk.splitlines()):
            ref, agent = event.get("objectRef"), event.get("userAgent", "")
            if not ref or not agent.startswith(OPERATOR_AGENTS) or event["auditID"] in self.seen:
                continue  # the bench's requests, or a non-resource URL (/version, discovery)
            self.seen.add(event["auditID"])
            sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
            self.calls[f"{event['verb']} {ref['resource']}{sub}"] += 1
        return Counter(self.calls)

    async def settle(self, quiet: float = 3.0, limit: float = 120.0) -> Counter[str]:
        """The counts once the operator has made no call (but Lease renewals) for `quiet` seconds: done
        with the phase, its status patches and Events included."""
        last, since = Counter[str](), time.monotonic()
        for _ in range(int(limit / 0.5)):
            now = await asyncio.to_thread(self.read)
            busy = Counter({k: v for k, v in now.items() if "leases" not in k})
            if busy != last:
                last, since = busy, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
            await asyncio.sleep(0.5)
        return Counter(self.calls)


class Kube:
    """Raw JSON over aiohttp with the kubeconfig's client certificate: the least client overhead."""

    def __init__(self, kubeconfig: Path, connections: int) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        user, self.base = config["users"][0]["user"], config["clusters"][0]["cluster"]["server"]
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # kube-lite's self-signed server
        tls.load_cert_chain(user["client-certificate"], user["client-key"])
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls, limit=connections + 4))
        self.slots = asyncio.Semaphore(connections)
        self.uids: dict[str, set[str]] = {}  # node -> its Deployment's uids: one, or it was recreated
        self.waiters: dict[str, tuple[str, asyncio.Event]] = {}  # node -> (endpoint awaited, set when seen)
        self.complete, self.watching, self.expected = asyncio.Event(), asyncio.Event(), 0
        self.watcher = asyncio.create_task(self.watch())

    async def call(self, method: str, path: str, body: Any = None, content: str = "application/json") -> Any:
        headers = {"Content-Type": content}
        async with self.slots, self.http.request(method, self.base + path, json=body, headers=headers) as r:
            if r.status >= 300:
                raise RuntimeError(f"{method} {path}: {r.status} {await r.text()}")
            return await r.json()

    async def watch(self) -> None:
        """The namespace's Deployment events: convergence and spec-change latency from one stream."""
        version = ""
        while True:  # resumed where it stopped when the server ends it
            url = f"{self.base}/apis/apps/v1/namespaces/{NS}/deployments?watch=1&resourceVersion={version}"
            async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=None)) as response:
                if response.status != 200:  # 429 while the server's watch cache starts
                    await asyncio.sleep(0.5)
                    continue
                self.watching.set()
                async for line in response.content:
                    event = json.loads(line)
                    obj = event["object"]
                    if event["type"] == "ERROR":  # 410 Gone: from the start again (ADDED for each)
                        version = ""
                        break
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        name = obj["metadata"]["name"].removeprefix("resonance-bridge-")
                        self.uids.setdefault(name, set()).add(obj["metadata"]["uid"])
                        if len(self.uids) >= self.expected > 0:
                            self.complete.set()
                        if (awaited := self.waiters.get(name)) and endpoint_of(obj) == awaited[0]:
                            awaited[1].set()

    async def until(self, event: asyncio.Event, timeout: float) -> None:
        """The event, unless the watch that sets it failed first (its error is raised)."""
        waiting = asyncio.ensure_future(event.wait())
        done, _ = await asyncio.wait({waiting, self.watcher}, timeout=timeout, return_when="FIRST_COMPLETED")
        waiting.cancel()
        if self.watcher in done:
            self.watcher.result()
        if waiting not in done:
            raise TimeoutError(f"waited {timeout:g} s for the watch to see it")

    async def counters(self, port: int) -> Counter[str]:
        """The operator's own metrics: reconciles by handler, status patches by trigger."""
        async with self.http.get(f"http://127.0.0.1:{port}/metrics") as response:
            pairs = [line.rpartition(" ") for line in (await response.text()).splitlines()]
        wanted = ("resonance_operator_reconciles_total", "resonance_operator_status_patches_total")
        return Counter({k[19:].replace("_total", ""): float(v) for k, _, v in pairs if k.startswith(wanted)})


def per(after: Counter[str], before: Counter[str], count: int) -> dict[str, float]:
    """Per node or change; Lease renewals (every 2 s, whatever the load) are counted apart."""
    return {
        k: round((after[k] - before[k]) / count, 3)
        for k in sorted(after)
        if after[k] != before[k] and "leases" not in k
    }


async def bench(kube: Kube, audit: Audit, pids: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    for _ in range(600):  # kopf serves /healthz once leading (the Lease taken) and its probes pass
        with contextlib.suppress(aiohttp.ClientError):
            async with kube.http.get(f"http://127.0.0.1:{args.ports['liveness']}/healthz") as response:
                if response.status == 200:
                    break
        await asyncio.sleep(0.1)
    else:
        raise RuntimeError("the operator did not come up in 60 s")
    await kube.until(kube.watching, 60)
    calls0, counters0 = await audit.settle(quiet=1.0), await kube.counters(args.ports["metrics"])
    n, idle = args.nodes, {k: proc_stats(pid) for k, pid in pids.items()}
    kube.expected, start = n, time.monotonic()
    await asyncio.gather(*(kube.call("POST", NODES, node(i)) for i in range(n)))
    sent = time.monotonic() - start
    await kube.until(kube.complete, args.timeout)
    took = time.monotonic() - start
    converged = {k: proc_stats(pid) for k, pid in pids.items()}
    listed = await kube.call("GET", f"/apis/apps/v1/namespaces/{NS}/deployments")  # the watch, checked
    names = sorted(d["metadata"]["name"].removeprefix("resonance-bridge-") for d in listed["items"])
    twice = [name for name, uids in kube.uids.items() if len(uids) > 1]
    if names != [node(i)["metadata"]["name"] for i in range(n)] or twice:
        raise RuntimeError(f"{len(names)} Deployments for {n} nodes; created twice: {twice}")
    calls1, counters1 = await audit.settle(), await kube.counters(args.ports["metrics"])
    settled = proc_stats(pids["operator"])

    latencies: list[float] = []
    for i in range(0, n, max(1, n // args.changes))[: args.changes]:
        name = node(i)["metadata"]["name"]
        target = f"ws://{name}-v2:8766"  # RESONANCE_ENDPOINT: a new config hash, a new pod template
        kube.waiters[name] = (target, asyncio.Event())
        begun = time.monotonic()
        await kube.call(
            "PATCH", f"{NODES}/{name}", {"spec": {"endpoint": target}}, "application/merge-patch+json"
        )
        await kube.until(kube.waiters[name][1], 30)
        latencies.append((time.monotonic() - begun) * 1000)
    calls2, counters2 = await audit.settle(), await kube.counters(args.ports["metrics"])
    end, changes = proc_stats(pids["operator"]), len(latencies)
    q = statistics.quantiles(latencies, n=100, method="inclusive") if changes > 1 else latencies * 99
    cpu = {k: round(converged[k]["cpu_s"] - idle[k]["cpu_s"], 2) for k in pids}
    cpu["until_idle"] = round(settled["cpu_s"] - idle["operator"]["cpu_s"], 2)
    rss = {"before": idle["operator"], "converged": converged["operator"], "end": end}
    return {
        "nodes": n,
        "seconds_to_all_deployments": round(took, 2),
        "creates_per_s": round(n / took, 1),
        "seconds_to_send_creates": round(sent, 2),
        "operator_peak_rss_mb": round(end["VmHWM"], 1),
        "operator_rss_mb": {k: round(v["VmRSS"], 1) for k, v in rss.items()},
        "cpu_s": cpu,  # operator and API server to converge; the operator until idle
        "changes": changes,
        "change_ms": {"p50": round(q[49], 1), "p99": round(q[98], 1), "max": round(max(latencies), 1)},
        "api_calls_per_create": per(calls1, calls0, n),
        "api_calls_per_change": per(calls2, calls1, changes),
        "lease_calls": sum(v for k, v in calls2.items() if "leases" in k),
        "operator_counters_per_create": per(counters1, counters0, n),
        "operator_counters_per_change": per(counters2, counters1, changes),
    }


def beat(uid: str, name: str) -> bytes:
    """A bridge's heartbeat record for a node (README, "Heartbeat records"): connected, nothing moving."""
    record: dict[str, Any] = {"type": "heartbeat", "anchor": "BOLZANO_71", "node": name, "namespace": NS}
    record["uid"] = uid
    record |= {"websocket_connected": True, "kafka_connected": True, "in_flight": 0, "lag": 0}
    record |= {"relayed_out": 0, "relayed_in": 0, "dead_letters": 0, "measured_frequency_hz": FREQUENCY}
    return json.dumps(record).encode()


async def heartbeating(kube: Kube, audit: Audit, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every node's bridge beating at the default frequency, spread evenly over the period, for
    --beat-periods periods. The first beats are transitions (HeartbeatFresh, patched at once, as fast
    as the API server takes them); the last two periods are the steady state measured: refreshes."""
    listed = await kube.call("GET", NODES)
    nodes = sorted((n["metadata"]["name"], n["metadata"]["uid"]) for n in listed["items"])
    period, n = 1 / FREQUENCY, len(nodes)
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, enable_idempotence=False, linger_ms=20)
    await producer.start()
    marks: dict[str, tuple[float, float, Counter[str], Counter[str]]] = {}
    try:
        start, sent, total = time.monotonic(), 0, n * args.beat_periods
        while sent < total:
            elapsed = time.monotonic() - start
            if elapsed >= period * (args.beat_periods - 2) and "steady" not in marks:
                marks["steady"] = (
                    time.monotonic(),
                    proc_stats(pid)["cpu_s"],
                    await asyncio.to_thread(audit.read),
                    await kube.counters(args.ports["metrics"]),
                )
            due = min(total, int(elapsed / period * n) + 1)
            for i in range(sent, due):
                name, uid = nodes[i % n]
                await producer.send(args.heartbeat_topic, beat(uid, name), key=name.encode())  # queued
            sent = due
            await asyncio.sleep(0.05)
        await producer.flush()
        marks["end"] = (
            time.monotonic(),
            proc_stats(pid)["cpu_s"],
            await asyncio.to_thread(audit.read),
            await kube.counters(args.ports["metrics"]),
        )
    finally:
        await producer.stop()
    (t0, cpu0, calls0, counters0), (t1, cpu1, calls1, counters1) = marks["steady"], marks["end"]
    took = t1 - t0
    patches = calls1["patch resonancenodes/status"] - calls0["patch resonancenodes/status"]
    triggers = {
        k: round((counters1[k] - counters0[k]) / took, 1)
        for k in counters1
        if "status_patches" in k and counters1[k] != counters0[k]
    }
    return {
        "beats_per_s": round(n * FREQUENCY, 1),
        "seconds_measured": round(took, 1),
        "operator_cpu_percent": round((cpu1 - cpu0) / took * 100, 1),
        "status_patches_per_s": round(patches / took, 1),
        # As documented: one per node per period, and REFRESHES_PER_S across all nodes.
        "status_patches_bound_per_s": round(min(n / max(period, 5.0), REFRESHES_PER_S), 1),
        "status_patches_by_trigger_per_s": triggers,
        "operator_rss_mb": round(proc_stats(pid)["VmRSS"], 1),
    }


async def restarted(kube: Kube, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """A new operator under all the nodes, as after an upgrade or an eviction: its peak RSS (the chart's
    limit must hold it) and how long until it has settled (under 10% of a core for 3 s: its timers
    keep ticking over every node)."""
    start = time.monotonic()
    for _ in range(1200):
        with contextlib.suppress(aiohttp.ClientError):
            async with kube.http.get(f"http://127.0.0.1:{args.ports['liveness']}/healthz") as response:
                if response.status == 200:
                    break
        await asyncio.sleep(0.1)
    still, last = 0, proc_stats(pid)["cpu_s"]
    while still < 3 and time.monotonic() - start < 600:
        await asyncio.sleep(1)
        now = proc_stats(pid)["cpu_s"]
        still, last = (still + 1 if now - last < 0.1 else 0), now
    stats = proc_stats(pid)
    return {
        "peak_rss_mb": round(stats["VmHWM"], 1),
        "seconds_to_idle": round(time.monotonic() - start - 3, 1),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One run against a kube-lite of its own, torn down after (kept with --keep, or on failure)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds like Ctrl-C, through the cleanups
    run, keep = Path(tempfile.mkdtemp(prefix="operator-scale-")), [args.keep]  # kept on failure too
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(lambda: None if keep[0] else shutil.rmtree(run, ignore_errors=True))
        (run / "audit-policy.yaml").write_text(AUDIT_POLICY)
        audit = f"--audit-log-path={run / 'audit.log'} --audit-policy-file={run / 'audit-policy.yaml'}"
        cleanup.callback(subprocess.run, [args.kube_lite, "down", str(run)], capture_output=True)
        # Sessions of their own: Ctrl-C reaches only this script, which then stops them in order.
        up, up_env = [args.kube_lite, "up", str(run)], {**os.environ, "KUBE_LITE_APISERVER_ARGS": audit}
        subprocess.run(up, env=up_env, check=True, capture_output=True, timeout=120, start_new_session=True)
        kubectl = ["kubectl", "--kubeconfig", str(run / "kubeconfig")]
        namespace = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        for command, stdin in (
            (["apply", "-f", str(ROOT / "crds")], None),
            (["wait", "--for=condition=Established", "crd/resonancenodes.resonance.io"], None),
            (["apply", "-f", "-"], namespace),
        ):
            subprocess.run([*kubectl, *command], input=stdin, text=True, check=True, capture_output=True)
        broker = EmbeddedBroker(log_path=run / "tansu.log")
        broker.start(preexec_fn=os.setsid)
        cleanup.callback(broker.stop)
        args.ports = {"liveness": free_port(), "metrics": free_port()}
        args.bootstrap, args.heartbeat_topic = broker.bootstrap, "resonance.heartbeats"
        env = {
            **os.environ,
            "KUBECONFIG": str(run / "kubeconfig"),
            "RESONANCE_BRIDGE_IMAGE": "resonance:test",
            "RESONANCE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "RESONANCE_KAFKA_ENABLE_IDEMPOTENCE": "false",  # the embedded broker's
            "RESONANCE_OPERATOR_LIVENESS_PORT": str(args.ports["liveness"]),
            "RESONANCE_OPERATOR_METRICS_PORT": str(args.ports["metrics"]),
            "RESONANCE_WATCH_NAMESPACES": NS,
        }
        with open(run / "operator.log", "wb") as log:
            command = [sys.executable, "-m", "resonance_local", "operator"]
            operator = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)

        @cleanup.callback
        def stop() -> None:  # SIGTERM, as a rollout stops it: it releases its Lease
            operator.terminate()
            try:
                operator.wait(30)
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait()

        def relaunch() -> int:
            with open(run / "operator-restarted.log", "wb") as log:
                again = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
            cleanup.callback(again.kill)
            return again.pid

        async def session() -> dict[str, Any]:
            kube = Kube(run / "kubeconfig", args.connections)
            pids = {"operator": operator.pid, "apiserver": int((run / "apiserver.pid").read_text())}
            try:
                audit = Audit(run / "audit.log")
                result = await bench(kube, audit, pids, args)
                if args.beat_periods:
                    result["heartbeating"] = await heartbeating(kube, audit, operator.pid, args)
                if args.restart:
                    stop()  # SIGTERM: it releases its Lease, the new one leads at once
                    result["restart"] = await restarted(kube, relaunch(), args)
                return result
            finally:
                kube.watcher.cancel()
                await kube.http.close()

        try:
            result = asyncio.run(session())
        except BaseException:
            keep[0] = True
            print(f"failed; logs kept in {run}", file=sys.stderr)
            raise
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kube-lite", default=os.environ.get("RESONANCE_KUBE_LITE"), help="kube-lite script")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=100, help="spec changes, one at a time")
    parser.add_argument("--connections", type=int, default=8, help="concurrent create requests")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for all Deployments")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument(
        "--results",
        type=Path,
        help="write the table as this markdown file's "
        "'## Operator at scale' section (make bench: bench/RESULTS.md)",
    )
    parser.add_argument(
        "--beat-periods",
        type=int,
        default=6,
        help="then every node's bridge beating at the default frequency for this many periods, the last "
        "two measured (0: none)",
    )
    parser.add_argument("--compare", type=Path, help="with --results: also this run's --json (another size)")
    parser.add_argument("--render", type=Path, help="no run: write this run's --json (with --results)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, audit log)")
    parser.add_argument(
        "--restart", action="store_true", help="then restart the operator under all the nodes"
    )
    args = parser.parse_args()
    if args.render:  # a run's --json again, with no run
        result = json.loads(args.render.read_text())
    elif not args.kube_lite:
        parser.error("name the kube-lite script: --kube-lite PATH or RESONANCE_KUBE_LITE")
    else:
        result = measure(args)
    print(markdown(result))
    if args.results:
        import report  # bench/report.py, beside this script

        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        invoked = " ".join(["python", "bench/operator_scale.py", *sys.argv[1:]])
        intro = (
            f"Run {when}, written by the tool: `{invoked}` (kube-lite: a real API server, built-in "
            "kinds without controllers; the operator as `resonance operator`; API calls from the "
            "server's audit log; the API server, etcd, the broker and the operator share the machine's "
            "cores). Targets: 10,000 nodes' Deployments within 120 s, peak RSS <= 300 MB, operator CPU "
            "<= 50% of a core while they beat, status patches as documented, spec change p99 <= 1 s, no "
            "LIST per event."
        )
        text = intro + "\n\n" + markdown(result)
        if args.compare:  # another size's run: both, and how the figures grow between them
            other = json.loads(args.compare.read_text())
            small, big = sorted((other, result), key=lambda r: int(r["nodes"]))
            text += f"\n### The run at {other['nodes']:,} nodes\n\n{markdown(other)}"
            text += f"\n### From {small['nodes']:,} to {big['nodes']:,} nodes\n\n{slope(small, big)}"
        report.put_section(args.results, "## Operator at scale", text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
