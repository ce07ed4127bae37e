"""The bridge process: configuration errors, readiness, clean shutdown, ack mode `send`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from resonance_local.embedded import EmbeddedBroker, free_port
from resonance_local.node import NodeServer

from ..support.harness import BridgeProcess, Committed, Topics, bridge_env, produce, state_update
from ..support.poll import until


def test_bad_configuration_exits_2_naming_each_variable() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESONANCE_", "KAFKA_"))}
    env.update(
        {
            "RESONANCE_ENDPOINT": "http://lexamoris-server:8766",
            "RESONANCE_TOPIC": "bad topic!",
            "RESONANCE_FREQUENCY_HZ": "0",
            "RESONANCE_ACK_MODE": "maybe",
            "RESONANCE_MAX_IN_FLIGHT": "-1",
            "KAFKA_ENABLE_IDEMPOTENCE": "sometimes",
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "resonance_bridge"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    expected = [
        "RESONANCE_ENDPOINT='http://lexamoris-server:8766'",
        "RESONANCE_TOPIC='bad topic!'",
        "RESONANCE_ANCHOR is required",
        "KAFKA_BOOTSTRAP_SERVERS is required",
        "RESONANCE_FREQUENCY_HZ='0'",
        "RESONANCE_ACK_MODE='maybe'",
        "RESONANCE_MAX_IN_FLIGHT='-1'",
        "KAFKA_ENABLE_IDEMPOTENCE='sometimes'",
    ]
    assert len(lines) == len(expected), result.stderr
    for needle in expected:
        assert sum(needle in line for line in lines) == 1, f"{needle} not named once in:\n{result.stderr}"
    assert all(line.startswith("resonance bridge: ") for line in lines)
    assert "ws:// or wss://" in result.stderr and "> 0 and <= 100" in result.stderr


async def test_sigterm_drains_commits_up_to_last_ack_and_exits_0(
    broker: EmbeddedBroker, topics: Topics, workdir: Path
) -> None:
    node = NodeServer("slow", port=0, printer=None, ack_delay=0.002)
    await node.start()
    await produce(broker, topics.node, (state_update(i) for i in range(1000)))
    env = bridge_env(
        broker,
        topics,
        f"ws://127.0.0.1:{node.port}",
        RESONANCE_SHUTDOWN_GRACE_S="10",
        RESONANCE_MAX_IN_FLIGHT="100",
    )
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        await node.wait_for(lambda: len(node.received) >= 200, 30)
        started = time.monotonic()
        bridge.signal(signal.SIGTERM)
        code = await asyncio.to_thread(bridge.wait, 15)
        assert code == 0, bridge.output()
        assert time.monotonic() - started < 10
        acked = sum(1 for m in node.received[: node.acks_sent] if m["type"] == "state_update")
        assert 200 <= acked < 1000
        async with Committed(broker, topics) as committed:
            assert await committed.offset() == acked
        assert "stopped cleanly" in bridge.output()
    finally:
        bridge.stop()
        await node.close()


async def test_readyz_follows_both_connections_and_metrics_count(
    broker: EmbeddedBroker, topics: Topics, workdir: Path
) -> None:
    port = free_port()
    bridge = BridgeProcess(
        bridge_env(broker, topics, f"ws://127.0.0.1:{port}"), workdir / "bridge.log"
    ).start()
    node = NodeServer("late", port=port, printer=None)
    try:
        await until(lambda: bridge.status("/healthz") == 200, 20, bridge.output)
        assert bridge.status("/readyz") == 503
        # Kafka connects first; the node is down, so the bridge keeps retrying it.
        await until(
            lambda: bridge.metric("resonance_reconnects_total", side="websocket") >= 1, 20, bridge.output
        )
        status, body = bridge.get("/readyz")
        assert status == 503 and body.startswith("kafka connected, websocket unreachable: "), body
        await node.start()
        await bridge.wait_ready()
        await produce(broker, topics.node, (state_update(i) for i in range(5)))
        for _ in range(3):
            await node.send('{"type": "repository_event", "event_type": "commit", "data": {}}')
        await node.wait_for(lambda: len(node.replies) == 3 and len(node.received) >= 6, 20)
        await until(lambda: bridge.metric("resonance_acks_total", direction="from_node") >= 6, 10)
        assert bridge.metric("resonance_messages_relayed_total", direction="outbound") == 5
        assert bridge.metric("resonance_messages_relayed_total", direction="inbound") == 3
        assert bridge.metric("resonance_websocket_connected") == 1
        assert bridge.metric("resonance_in_flight") == 0
        await until(lambda: bridge.metric("resonance_consumer_lag") == 0, 10)
        await node.kill()
        await until(lambda: bridge.status("/readyz") == 503, 10, "readyz stayed 200 with the node gone")
        assert bridge.metric("resonance_websocket_connected") == 0
    finally:
        bridge.stop()
        await node.close()


async def test_ack_mode_send_commits_without_acks(
    broker: EmbeddedBroker, topics: Topics, workdir: Path
) -> None:
    node = NodeServer("mute", port=0, printer=None, ack=False)
    await node.start()
    await produce(broker, topics.node, (state_update(i) for i in range(50)))
    env = bridge_env(broker, topics, f"ws://127.0.0.1:{node.port}", RESONANCE_ACK_MODE="send")
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        async with Committed(broker, topics) as committed:
            await until(lambda: sum(m["type"] == "state_update" for m in node.received) == 50, 20)
            await committed.settles_at(50, 10)
        assert node.acks_sent == 0
    finally:
        bridge.stop()
        await node.close()


async def test_auth_token_is_sent_as_bearer(
    broker: EmbeddedBroker, topics: Topics, node: NodeServer, workdir: Path
) -> None:
    env = bridge_env(broker, topics, f"ws://127.0.0.1:{node.port}", RESONANCE_AUTH_TOKEN="s3cret")
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        await bridge.wait_ready()
        assert node.last_authorization == "Bearer s3cret"
        assert "s3cret" not in bridge.output()
    finally:
        bridge.stop()


async def test_json_logs_are_one_object_a_line_with_node_anchor_and_direction(
    broker: EmbeddedBroker, topics: Topics, workdir: Path
) -> None:
    node = NodeServer("json", port=0, printer=None)
    await node.start()
    await produce(broker, topics.node, [b"{not json"])  # a dead letter: a line about the outbound direction
    env = bridge_env(broker, topics, f"ws://127.0.0.1:{node.port}", RESONANCE_LOG_FORMAT="json")
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        await until(lambda: "dead-lettered" in bridge.output(), 30, bridge.output)
        lines = [json.loads(line) for line in bridge.output().splitlines()]
        assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
        ours = [line for line in lines if line["logger"].startswith("resonance")]
        assert all((line["node"], line["anchor"]) == ("testnode", "BOLZANO_71") for line in ours[1:]), ours
        [dead] = [line for line in lines if "dead-lettered" in line["message"]]
        assert dead["direction"] == "outbound" and dead["level"] == "WARNING"
    finally:
        bridge.stop()
        await node.close()
