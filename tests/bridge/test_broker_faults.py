"""Broker faults with exact counts both ways (support/soak.py): a broker restarted with its data (tansu
on S3 storage), and a broker that black-holes the bridge's connections without closing them."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from resonance_local.node import NodeServer

from ..support.harness import BridgeProcess, Topics, bridge_env, seqs
from ..support.poll import until
from ..support.proxy import Proxied
from ..support.s3 import S3Server
from ..support.soak import (
    LONG,
    Recovery,
    Talker,
    inbound,
    no_loss,
    outbound,
    rss_kib,
    seconds,
    settle,
    size,
    two_way,
)


@pytest.fixture
def s3(workdir: Path) -> Iterator[S3Server]:
    server = S3Server(workdir / "moto.log")
    server.start()
    yield server
    server.stop()


async def test_a_restarted_broker_keeps_its_data_and_nothing_is_lost(s3: S3Server, workdir: Path) -> None:
    """The broker stops (SIGTERM) and starts again on the same port and storage, again and again, while
    messages flow both ways: topics and committed offsets survive, so the bridge resumes where its
    node's acks left it. Duplicates are bounded by what was in flight at each restart."""
    broker = s3.broker(workdir / "broker.log")
    broker.start()
    topics = Topics.fresh()
    await topics.create(broker)
    sent, window, lasting = size(2000, 20000), 200, seconds(12)
    pace = sent / (lasting * 0.8)
    node = NodeServer("steady", port=0, printer=None, ack_delay=1 / pace)
    await node.start()
    restarts = 0
    try:
        async with two_way(
            broker,
            topics,
            node,
            workdir / "bridge.log",
            sent,
            window,
            pace,
            KAFKA_FETCH_MAX_WAIT_MS=str(broker.fetch_max_wait_ms),
        ) as flow:
            bridge, talker = flow.bridge, flow.talker
            await bridge.wait_ready()
            await node.wait_for(lambda: len(seqs(node)) > 0, 30)
            out_stall = Recovery(lambda: len(seqs(node))).start()
            in_stall = Recovery(lambda: len(talker.acked)).start()  # acked: stored by Kafka
            end = time.monotonic() + lasting
            while time.monotonic() < end:
                await asyncio.sleep(random.uniform(2.0, 4.0))
                broker.stop()
                await asyncio.sleep(2)
                broker.start()
                restarts += 1
            await settle(node, talker, 120)
    finally:
        await node.close()
    out_stall.stop()
    in_stall.stop()
    try:
        note = f"{restarts} restarts, S3 storage"
        out = outbound("broker restart", node, sent, recover_s=out_stall.longest, note=note)
        took = in_stall.longest
        into = await inbound("broker restart", broker, topics.inbound, sent, recover_s=took, note=note)
    finally:
        broker.stop(grace=0.5)  # counted: its data is not needed any more
    no_loss(out, into)
    # Outbound, a record is sent again only if it was in flight; inbound, Kafka holds what the node
    # sent again (its patience ran out while the broker was away) plus what a retried produce stored.
    assert out.duplicated <= restarts * window, out
    assert into.duplicated <= talker.resent + restarts * window, (into, talker.resent)


@pytest.mark.parametrize("new", [False, True], ids=["open connections", "new connections too"])
async def test_a_black_holed_broker_is_noticed_and_nothing_is_lost(
    proxied: Proxied, workdir: Path, new: bool
) -> None:
    """The broker's connections stop forwarding without closing (open ones only: a dead NAT entry;
    new ones too: a partition, healed after a while). /readyz turns 503 within the probe's bound, the
    bridge drops its dead connections and resumes once the broker is reachable; nothing lost."""
    broker, proxy, topics = await proxied()
    sent, window = size(2000, 20000), 200
    pace = sent / seconds(10)  # spans the fault, paused while it lasts
    timeout = 15 if LONG else 5  # KAFKA_REQUEST_TIMEOUT_MS: the default, or shorter in CI
    node = NodeServer("steady", port=0, printer=None, ack_delay=1 / pace)
    await node.start()
    try:
        async with two_way(
            broker,
            topics,
            node,
            workdir / "bridge.log",
            sent,
            window,
            pace,
            KAFKA_REQUEST_TIMEOUT_MS=str(timeout * 1000),
        ) as flow:
            bridge, talker = flow.bridge, flow.talker
            await bridge.wait_ready()
            await asyncio.sleep(3)
            proxy.black_hole(new=new)
            holed = over = time.monotonic()
            await until(lambda: bridge.status("/readyz") == 503, 60, bridge.output)
            noticed = time.monotonic() - holed
            assert bridge.get("/readyz")[1].startswith("kafka disconnected")
            if new:
                await asyncio.sleep(5)
                proxy.heal()
                over = time.monotonic()
            await bridge.wait_ready(120)
            ready = time.monotonic() - holed
            await settle(node, talker, 120)
    finally:
        await node.close()
    recovered = ready - (over - holed)  # from the fault's end: the hole (it never heals) or the heal
    note = f"/readyz 503 after {noticed:.1f}s, 200 after {ready:.1f}s; request timeout {timeout}s"
    fault = "broker black hole" + (" (new connections too)" if new else "")
    out = outbound(fault, node, sent, recover_s=recovered, note=note)
    into = await inbound(fault, broker, topics.inbound, sent, recover_s=recovered, note=note)
    no_loss(out, into)
    assert out.duplicated <= window and into.duplicated <= talker.resent + window, (out, into, talker.resent)
    # The README's bounds: /readyz within the probe (every 5 s, 5 s to answer); the dead connections
    # dropped after the request timeout, twice over when a new one is black-holed as well.
    assert noticed < 10 + 2, noticed
    assert ready < (5 if new else 0) + 2 * timeout + 10 + 5, ready


async def test_a_node_sending_faster_than_kafka_takes_is_throttled_not_dropped(
    proxied: Proxied, node: NodeServer, workdir: Path
) -> None:
    """A slow broker (~1 MiB/s) and a node that sends 4 KiB frames as fast as it can, more than the
    kernel's socket buffers hold: the bridge stops reading (TCP pushes back on the node) instead of
    buffering them, and its keepalive, deaf meanwhile to the node's pongs queued behind seconds of
    unread frames, does not take the busy node for a dead one."""
    broker, _, topics = await proxied(delay=0.05)
    env = bridge_env(
        broker,
        topics,
        f"ws://127.0.0.1:{node.port}",
        RESONANCE_WS_PING_INTERVAL_S="1",
        RESONANCE_WS_PING_TIMEOUT_S="2",
        RESONANCE_MAX_IN_FLIGHT="100",  # inbound, 2x: frames read and not yet stored
        KAFKA_BATCH_SIZE=str(256 * 1024),  # the batches' own buffers (two) apart: what is read is measured
    )
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    count, pad = size(3000, 10000), "x" * 4096  # 12 MiB: several times what socket buffers hold
    try:
        await bridge.wait_ready(60)
        assert bridge.process is not None
        before = rss_kib(bridge.process.pid)
        started, peak = time.monotonic(), 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_kib(bridge.process.pid) if bridge.process else 0)
                await asyncio.sleep(0.1)

        watching = asyncio.create_task(watch())
        for i in range(count):
            frame = Talker.frame(i)
            sent = await node.send(frame[:-1] + f', "pad": "{pad}"}}')
            assert sent == 1 and node.connections_seen == 1, f"the bridge dropped a busy node at {i}"
        took = time.monotonic() - started
        await until(lambda: len({r.get("id") for r in node.replies}) >= count, 120, bridge.output)
        watching.cancel()
    finally:
        bridge.stop()
    grew, mib = (peak - before) / 1024, count * len(pad) / 2**20
    note = f"{mib:.0f} MiB pushed in {took:.0f}s over one connection; bridge RSS +{grew:.1f} MiB"
    into = await inbound("node faster than Kafka", broker, topics.inbound, count, note=note)
    no_loss(into)
    assert into.duplicated == 0, into
    assert node.connections_seen == 1, "the bridge dropped a busy node"
    assert took > 1 + 2, "the node was never held back long enough for the keepalive to be tested"
    assert grew < 0.5 * count * len(pad) / 2**20, f"the bridge buffered {grew:.1f} MiB, not reading less"
