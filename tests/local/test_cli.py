"""The `resonance` command as a user runs it: node serve, send, tail."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from resonance_local.embedded import EmbeddedBroker, free_port
from websockets.asyncio.client import ClientConnection, connect

from ..support.harness import Topics, consume
from ..support.kafkafault import INVALID_RECORD, NOT_LEADER_OR_FOLLOWER, PRODUCE, KafkaFaults
from ..support.proxy import Proxied

RESONANCE = [sys.executable, "-m", "resonance_local"]
PIPE = asyncio.subprocess.PIPE


async def run(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(*RESONANCE, *args, stdout=PIPE, stderr=PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return int(process.returncode or 0), out.decode(), err.decode()


async def connect_when_up(url: str) -> ClientConnection:
    for _ in range(100):
        try:
            return await connect(url)
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"nothing listens on {url}")


async def test_node_serve_acks_prints_and_sends_file_lines(workdir: Path) -> None:
    port = free_port()
    lines = workdir / "messages.jsonl"
    lines.write_text('{"type": "state_update", "data": {"status": "from file"}}\n')
    node = await asyncio.create_subprocess_exec(
        *RESONANCE,
        "node",
        "serve",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--name",
        "lexamoris",
        "--send-file",
        str(lines),
        "--no-stdin",
        stdout=PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with await connect_when_up(f"ws://127.0.0.1:{port}") as ws:
            assert json.loads(await ws.recv()) == {"type": "state_update", "data": {"status": "from file"}}
            await ws.send('{"type": "heartbeat", "anchor": "BOLZANO_71", "id": "h1"}')
            assert json.loads(await ws.recv()) == {"type": "ack", "original_type": "heartbeat", "id": "h1"}
            await ws.send('{"type": "ack", "original_type": "state_update"}')  # never acked back
            await ws.send("not json")  # survived, not acked
            await ws.send('{"type": "repository_event", "event_type": "commit", "data": {}}')
            assert json.loads(await ws.recv()) == {"type": "ack", "original_type": "repository_event"}
    finally:
        node.terminate()
        out = (await asyncio.wait_for(node.communicate(), 10))[0].decode()
    assert "[lexamoris] <- heartbeat" in out
    assert "[lexamoris] -> sent" in out
    assert "ignored a frame that is not a Resonance message" in out


async def test_send_and_tail(broker: EmbeddedBroker, topics: Topics) -> None:
    code, out, err = await run(
        "send",
        "--topic",
        topics.node,
        "--type",
        "repo",
        "--message",
        "Test",
        "--bootstrap-servers",
        broker.bootstrap,
    )
    assert code == 0, err
    assert out.strip() == f"sent 1 repository_event message(s) to {topics.node}"
    code, _, err = await run(
        "send", "--topic", topics.node, "--count", "20", "--bootstrap-servers", broker.bootstrap
    )
    assert code == 0, err  # a backlog behind the first: --count 1 must print the first alone
    code, out, err = await run(
        "tail",
        topics.node,
        "--from-beginning",
        "--count",
        "1",
        "--timeout",
        "30",
        "--bootstrap-servers",
        broker.bootstrap,
    )
    assert code == 0, err
    [line] = out.splitlines()
    record = json.loads(line)
    assert (record["topic"], record["offset"], record["key"]) == (topics.node, 0, "BOLZANO_71")
    body = record["value"]
    assert (body["type"], body["event_type"], body["data"]["message"], body["source"]) == (
        "repository_event",
        "commit",
        "Test",
        "resonance",
    )


async def test_a_send_that_meets_a_partition_without_a_leader_delivers_every_message(
    proxied: Proxied,
) -> None:
    """A topic the broker has just created has no leader for a moment (NotLeaderForPartition): the
    messages that meet that are sent again, as a producer should, not lost behind a traceback."""
    broker, proxy, topics = await proxied()
    proxy.kafka = faults = KafkaFaults()
    for _ in range(3):
        faults.next_response(PRODUCE, NOT_LEADER_OR_FOLLOWER)
    sending = ("send", "--topic", topics.node, "--count", "50", "--bootstrap-servers", broker.bootstrap)
    code, out, err = await run(*sending)
    assert (code, out.strip()) == (0, f"sent 50 state_update message(s) to {topics.node}"), err
    assert "Traceback" not in err and len(faults.injected) == 3
    records = await consume(broker, topics.node, 50, key=lambda r: json.loads(r.value)["seq"])
    assert {json.loads(r.value)["seq"] for r in records} == set(range(50))

    faults.next_response(PRODUCE, INVALID_RECORD)  # refused for good: said per message, in one line
    code, out, err = await run(*sending)
    assert code == 1 and "Traceback" not in err, err
    [said] = err.strip().splitlines()
    assert said.startswith("resonance send: sent ") and " of 50; not sent: message 1 to " in said, said


async def test_topics_lists_counts_and_a_groups_lag(broker: EmbeddedBroker, topics: Topics) -> None:
    """The guide's `kafka-topics --list` and its Kafka UI's message counts and consumer lag."""
    await run("send", "--topic", topics.node, "--count", "5", "--bootstrap-servers", broker.bootstrap)
    committer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=topics.group)
    await committer.start()
    try:
        tp = TopicPartition(topics.node, 0)
        committer.assign([tp])
        await committer.commit({tp: OffsetAndMetadata(3, "")})
    finally:
        await committer.stop()
    args = ("topics", "--group", topics.group, "--bootstrap-servers", broker.bootstrap)
    code, out, err = await run(*args, "--json")
    assert code == 0, err
    listed = {t["name"]: t for t in json.loads(out)}
    assert listed[topics.node] == {
        "name": topics.node,
        "partitions": 1,
        "records": 5,
        "lag": {topics.group: 2},
    }
    assert listed[topics.inbound]["lag"] == {}  # the group never read it
    code, out, err = await run(*args)
    row = next(line.split() for line in out.splitlines() if line.startswith(topics.node))
    assert code == 0 and row == [topics.node, "1", "5", topics.group, "2"], out


async def run_with(env: dict[str, str], *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *RESONANCE, *args, stdout=PIPE, stderr=PIPE, stdin=PIPE, env={**os.environ, **env}
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    return int(process.returncode or 0), out.decode(), err.decode()


@pytest.mark.parametrize(
    ("args", "env", "code", "needle"),
    [
        (["send", "--topic", "t", "--bootstrap-servers", "127.0.0.1:{free}"], {}, 1, "no Kafka answers at"),
        (
            ["tail", "t", "--bootstrap-servers", "127.0.0.1:{free}"],
            {},
            1,
            "start one with `resonance broker`",
        ),
        (
            ["topics", "--bootstrap-servers", "127.0.0.1:{free}"],
            {},
            1,
            "resonance topics: no Kafka answers at",
        ),
        (["config"], {"RESONANCE_LOG_LEVEL": "LOUD"}, 2, "RESONANCE_LOG_LEVEL='LOUD' is invalid"),
        (["up", "--broker-port", "70000"], {}, 2, "'70000' is not a port"),
        (["node", "serve", "--port", "-1"], {}, 2, "'-1' is not a port"),
        (["send", "--count", "0", "--topic", "t"], {}, 2, "'0' is not a count"),
        (["send", "--type", "sync", "--message", "hi", "--topic", "t"], {}, 2, "--message does not apply"),
        (["up", "no/such/nodes.yaml", "--json"], {}, 2, "no/such/nodes.yaml: cannot be read"),
        (
            ["replay", "lexamoris", "--from", "yesterday"],
            {},
            2,
            "--from 'yesterday' is not a point to replay",
        ),
        (["replay", "lexamoris", "--from", "2999-01-01T00:00:00Z"], {}, 2, "is in the future"),
        (
            ["operator"],
            {"KUBECONFIG": "/no/such/kubeconfig", "HOME": "/nonexistent"},
            2,
            "no Kubernetes credentials",
        ),
    ],
)
async def test_every_user_error_is_one_line(
    args: list[str], env: dict[str, str], code: int, needle: str
) -> None:
    args = [a.replace("{free}", str(free_port())) for a in args]
    got, _, err = await run_with(env, *args)
    lines = err.strip().splitlines()
    assert got == code and needle in err, (got, err)
    assert len(lines) == 1 or all(line.startswith("resonance") for line in lines), err
    assert "Traceback" not in err


async def test_the_operator_on_a_taken_port_says_which_in_one_line(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {"KUBECONFIG": str(kubeconfig), "RESONANCE_OPERATOR_LIVENESS_PORT": str(port)}
        code, _, err = await run_with(env, "operator")
    assert code == 2 and err.strip() == (
        f"resonance operator: RESONANCE_OPERATOR_LIVENESS_PORT={port} cannot be used (Address already in "
        "use): choose a free port"
    ), err


async def test_replay_writes_the_request_where_up_has_the_nodes_bridge_read_it(tmp_path: Path) -> None:
    env = {"TMPDIR": str(tmp_path)}  # replay_file() is under the temporary folder
    code, out, err = await run_with(env, "replay", "lexamoris", "--from", "2026-12-01T10:00:00Z")
    assert code == 0 and "replay from 2026-12-01T10:00:00Z asked for" in out, err
    assert (tmp_path / "resonance" / "replay" / "lexamoris").read_text() == "2026-12-01T10:00:00Z\n"


async def test_version_and_the_bridges_required_variables() -> None:
    code, out, _ = await run("--version")
    assert code == 0 and out.strip() == f"resonance {version('resonance')}"
    code, out, _ = await run("bridge", "--help")
    flat = " ".join(out.split())
    required = "RESONANCE_TOPIC, RESONANCE_ANCHOR, KAFKA_BOOTSTRAP_SERVERS"
    assert f"Required: RESONANCE_ENDPOINT (or RESONANCE_LISTEN: nodes dial in), {required}" in flat


async def test_send_a_file_or_stdin_exactly_as_given(
    broker: EmbeddedBroker, topics: Topics, workdir: Path
) -> None:
    payload = b'{"type": "state_update", "data": {"blob": "' + b"x" * 200_000 + b'"}}'
    (workdir / "big.json").write_bytes(payload)
    to = ["--topic", topics.node, "--bootstrap-servers", broker.bootstrap]
    code, _, err = await run("send", "--file", str(workdir / "big.json"), *to)
    assert code == 0, err
    code, _, err = await run_with({}, "send", "--file", "-", "--count", "2", *to, stdin=b"not even json")
    assert code == 0, err
    records = await consume(broker, topics.node, 3)
    assert [r.value for r in records] == [payload, b"not even json", b"not even json"]


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a terminal with job control")
async def test_node_serve_in_the_background_keeps_serving(workdir: Path) -> None:
    """`resonance node serve &` in an interactive shell: reading the terminal would stop it (SIGTTIN)."""
    port = free_port()
    command = f"{sys.executable} -m resonance_local node serve --port {port} & sleep 4; jobs -l; kill %1"
    shell = await asyncio.create_subprocess_exec(
        "script",
        "-qec",
        f"bash --norc -ic '{command}'",
        "/dev/null",
        stdout=PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out = (await asyncio.wait_for(shell.communicate(), 30))[0].decode()
    assert "in the background: not reading lines" in out and "Running" in out and "Stopped" not in out, out
