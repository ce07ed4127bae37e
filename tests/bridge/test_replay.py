"""Replay from a point in time (RESONANCE_REPLAY_FILE), against the broker: what is before the time is
not delivered again, everything since is, once; a bridge killed mid-replay finishes it after its
restart instead of starting over; the same value again does nothing; a request that cannot be served
changes nothing."""

from __future__ import annotations

import asyncio
import collections
import datetime
import json
import signal
from pathlib import Path
from typing import Any

import pytest
from resonance_bridge import replaypoint as replay
from resonance_local.embedded import EmbeddedBroker, free_port
from resonance_local.node import NodeServer

from ..support.harness import BridgeProcess, Topics, an_hour_apart, bridge_env, create_topic, everything, seqs
from ..support.poll import until

NOW = datetime.datetime(2026, 12, 8, 12, 0, tzinfo=datetime.UTC).timestamp()


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("2026-12-08T11:00:00Z", replay.Request("2026-12-08T11:00:00Z", at_ms=int((NOW - 3600) * 1000))),
        (
            "2026-12-08T12:00:00+01:00",
            replay.Request("2026-12-08T12:00:00+01:00", at_ms=int((NOW - 3600) * 1000)),
        ),
        ("earliest", replay.Request("earliest", earliest=True)),
        ("0:1200,1:900", replay.Request("0:1200,1:900", offsets=((0, 1200), (1, 900)))),
    ],
)
def test_a_replay_point_is_a_time_earliest_or_offsets(value: str, said: replay.Request) -> None:
    assert replay.parse(value, NOW) == said


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("2026-12-08T13:00:00Z", "2026-12-08T13:00:00Z is in the future (it is 2026-12-08T12:00:00Z)"),
        ("2026-12-08T11:00:00", "has no time zone: add one, e.g. 2026-12-08T11:00:00Z"),
        ("yesterday", "'yesterday' is not a point to replay from: use an RFC 3339 time"),
        ("0:12,x:9", "is not a point to replay from"),
    ],
)
def test_a_replay_point_that_cannot_be_served_says_why(value: str, why: str) -> None:
    with pytest.raises(ValueError) as said:
        replay.parse(value, NOW)
    assert why in str(said.value)


def _replaying(
    broker: EmbeddedBroker, topics: Topics, node: NodeServer, workdir: Path, **more: str
) -> tuple[dict[str, str], Path]:
    """A bridge reading the test's file for replay requests, keeping its replays in the test's topic."""
    control = workdir / "replay-from"
    env = bridge_env(
        broker,
        topics,
        f"ws://127.0.0.1:{node.port}",
        KAFKA_AUTO_OFFSET_RESET="earliest",
        RESONANCE_REPLAY_FILE=str(control),
        RESONANCE_REPLAY_TOPIC=f"replays.{topics.group}",
        **more,
    )
    return env, control


async def _replays(broker: EmbeddedBroker, topic: str) -> list[dict[str, Any]]:
    """What the bridges' heartbeats said of the replay, in order."""
    beats = [json.loads(value) for value in await everything(broker, topic)]
    return [b["replay"] for b in beats if b.get("replay")]


async def test_a_replay_from_a_time_redelivers_what_is_since_once_and_survives_a_kill(
    broker: EmbeddedBroker, topics: Topics, workdir: Path
) -> None:
    """100 records, the last 50 an hour later; the node has them all. Replay from the hour: records
    50-99 come again, 0-49 do not. The bridge is SIGKILLed halfway: its restart goes on from where
    the replay stood (record 50 is not delivered a third time). The same value again, and a restart
    after the replay, deliver nothing more; a time in the future is refused and delivers nothing."""
    await create_topic(broker, f"replays.{topics.group}")
    hour = await an_hour_apart(broker, topics.node, 50, 50)
    node = NodeServer("testnode", port=0, printer=None, ack_delay=0.02)
    await node.start()
    env, control = _replaying(
        broker, topics, node, workdir, RESONANCE_FREQUENCY_HZ="1", KAFKA_ASSIGNMENT="direct"
    )
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        await node.wait_for(lambda: len(seqs(node)) >= 100, 60)
        await asyncio.sleep(1.5)  # every ack committed
        before = len(node.received)
        when = datetime.datetime.fromtimestamp(hour / 1000, datetime.UTC).isoformat()
        control.write_text(when)
        await node.wait_for(lambda: len(seqs(node)) >= 100 + 25, 60)
        bridge.signal(signal.SIGKILL)
        bridge.wait(10)
        bridge = BridgeProcess(env, workdir / "bridge-again.log").start()
        await node.wait_for(lambda: 99 in seqs(node)[100:], 60)
        await asyncio.sleep(3)  # a moment for anything more to come, if it would
        again = collections.Counter(seqs(node)[100:])
        assert set(again) == set(range(50, 100)), sorted(set(range(50, 100)) ^ set(again))
        assert again[50] == 1, "the restart started the replay over"
        assert max(again.values()) <= 2, again.most_common(3)  # what was in flight at the kill

        seen = len(node.received)
        control.write_text(when + "\n")  # the same value
        bridge.signal(signal.SIGTERM)
        bridge.wait(15)
        bridge = BridgeProcess(env, workdir / "bridge-third.log").start()
        await bridge.wait_ready()
        control.write_text("2999-01-01T00:00:00Z")  # the future: refused
        await asyncio.sleep(4)
        assert len(node.received) == seen or all(m["type"] != "state_update" for m in node.received[seen:])
        said = await _replays(broker, topics.heartbeats)
        assert any(
            (r.get("error") or "").startswith("2999-01-01T00:00:00Z is in the future") for r in said
        ), said
    finally:
        bridge.stop()
        await node.close()
    assert before >= 100
    completed = await _replays(broker, topics.heartbeats)
    done = [r for r in completed if r.get("completed_at")]
    assert done and done[-1]["replayed"] == 50 and done[-1]["partitions"]["0"]["from"] == 50, completed[-3:]


async def test_two_replicas_in_a_group_replay_every_partition_exactly_once(
    broker: EmbeddedBroker, workdir: Path
) -> None:
    """Two bridges share a two-partition topic as a group. Each replays the partition it has; then one
    stops and the other takes its partition over: it finds that partition's replay stored and does
    not carry it out again. Every record since the time comes again exactly once, none before it."""
    topics = Topics.fresh()
    await topics.create(broker, 2)
    await create_topic(broker, f"replays.{topics.group}")
    hour = await an_hour_apart(broker, topics.node, 20, 20, partitions=2)  # 20-39 and 60-79 recent
    node = NodeServer("testnode", port=0, printer=None)
    await node.start()
    env, control = _replaying(broker, topics, node, workdir, KAFKA_ASSIGNMENT="group")
    first = BridgeProcess(env, workdir / "first.log").start()
    second = BridgeProcess({**env, "RESONANCE_HTTP_PORT": str(free_port())}, workdir / "second.log").start()
    try:
        await node.wait_for(lambda: len(set(seqs(node))) == 80, 60)
        await until(
            lambda: first.metric("resonance_consumer_lag") + second.metric("resonance_consumer_lag") == 0,
            30,
            "committed",
        )
        await asyncio.sleep(1.5)
        control.write_text(datetime.datetime.fromtimestamp(hour / 1000, datetime.UTC).isoformat())
        since = {*range(20, 40), *range(60, 80)}
        await node.wait_for(lambda: since <= set(seqs(node)[80:]), 60)
        first.signal(signal.SIGTERM)  # drains, commits; the second takes its partition over
        assert await asyncio.to_thread(first.wait, 15) == 0
        await asyncio.sleep(6)  # the group's rebalance, and a replay again if it would come
        again = collections.Counter(seqs(node)[80:])
        assert set(again) == since and set(again.values()) == {1}, again
    finally:
        first.stop()
        second.stop()
        await node.close()
