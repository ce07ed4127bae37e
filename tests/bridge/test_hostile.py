"""Hostile inputs and peers (issue 8): records and frames the relay cannot parse, acks it cannot place,
peers that close at once, flood pings or go silent, and a broker that is slow or gone. For each: counts
of what was sent, delivered and dead-lettered, with nothing lost."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

from resonance_local.embedded import EmbeddedBroker
from resonance_local.node import NodeServer
from websockets.asyncio.server import ServerConnection, serve

from ..support.harness import (
    BridgeProcess,
    Committed,
    Topics,
    bridge_env,
    consume,
    produce,
    seqs,
    state_update,
)
from ..support.poll import until
from ..support.proxy import Proxied, Proxy

DEEP = b'{"type": "state_update", "data": ' + b"[" * 3000 + b"]" * 3000 + b"}"  # 6 KB, valid JSON
POISON = [DEEP, b"\xff\xfe not utf-8", b'{"type": "' + b"t" * 5000 + b'"}', b"[1, 2]", b"{broken"]


def endpoint(port: int) -> str:
    return f"ws://127.0.0.1:{port}"


def sources(records: list[object]) -> list[str]:
    return [dict(r.headers)["resonance-source"].decode() for r in records]  # type: ignore[attr-defined]


async def test_poison_records_mid_batch_are_dead_lettered_and_nothing_behind_them_is_lost(
    broker: EmbeddedBroker, topics: Topics, node: NodeServer, workdir: Path
) -> None:
    """Items 1 and 4: one fetch holds good records with poison between them; every good one reaches
    the node once, every poison one lands in the dead-letter topic, the offset commits past all."""
    values, bad = [], []
    for i in range(300):
        if i % 25 == 7:
            bad.append(i)
            values.append(POISON[len(bad) % len(POISON)])
        else:
            values.append(state_update(i))
    await produce(broker, topics.node, values)
    bridge = BridgeProcess(bridge_env(broker, topics, endpoint(node.port)), workdir / "bridge.log").start()
    try:
        good = [i for i in range(300) if i not in bad]
        await node.wait_for(lambda: seqs(node) == good, 30)
        async with Committed(broker, topics) as committed:
            await committed.settles_at(300)
        dead = await consume(broker, topics.deadletter, len(bad))
        assert sorted(sources(dead)) == sorted(f"{topics.node}/0/{i}" for i in bad)
        assert {dict(r.headers)["resonance-reason"] for r in dead} >= {b"too_deep", b"not_utf8"}
        assert bridge.metric("resonance_reconnects_total", side="websocket") == 0
        assert node.connections_seen == 1 and bridge.status("/readyz") == 200
    finally:
        bridge.stop()


async def test_sessions_cut_during_dead_letter_writes_lose_nothing(
    proxied: Proxied, node: NodeServer, workdir: Path
) -> None:
    """Item 2: a slow broker makes dead-letter writes take a while; the node drops the connection
    every 300 ms, so sessions end in the middle of them. Every record is delivered or dead-lettered."""
    broker, _, topics = await proxied(delay=0.02)
    values = [b"{bad %d" % i if i % 5 == 2 else state_update(i) for i in range(600)]
    bad = [i for i in range(600) if i % 5 == 2]
    await produce(broker, topics.node, values)
    bridge = BridgeProcess(bridge_env(broker, topics, endpoint(node.port)), workdir / "bridge.log")

    async def flap() -> None:
        while True:
            await asyncio.sleep(0.3)
            node.drop()

    flapping = asyncio.create_task(flap())
    try:
        bridge.start()
        good = {i for i in range(600) if i % 5 != 2}
        await node.wait_for(lambda: set(seqs(node)) >= good, 120)
        flapping.cancel()
        async with Committed(broker, topics) as committed:
            await committed.settles_at(600, 60)
        dead = await consume(broker, topics.deadletter, len(bad), timeout=60)
        assert set(sources(dead)) == {f"{topics.node}/0/{i}" for i in bad}
        logged = [line for line in bridge.output().splitlines() if "dead-lettered" in line]
        assert all(line.split("record ")[1].split(" ")[0] in set(sources(dead)) for line in logged)
        print(f"{node.connections_seen} sessions; {len(dead) - len(bad)} duplicate dead letters; 0 lost")
        assert node.connections_seen >= 3
    finally:
        flapping.cancel()
        bridge.stop()


async def test_acks_that_cannot_be_attributed_commit_nothing(
    broker: EmbeddedBroker, topics: Topics, node: NodeServer, workdir: Path
) -> None:
    """Item 3: acks with no or null original_type, an unknown id, a type not in flight, or an id and
    a type that disagree are counted by reason and commit nothing; the real acks then commit."""
    node.ack = False
    await produce(
        broker,
        topics.node,
        (json.dumps({"type": "state_update", "id": f"m{i}", "data": {}}).encode() for i in range(5)),
    )
    bridge = BridgeProcess(bridge_env(broker, topics, endpoint(node.port)), workdir / "bridge.log").start()
    garbage: dict[str, list[dict[str, object]]] = {
        "no_original_type": [
            {"type": "ack"},
            {"type": "ack", "original_type": None},
            {"type": "ack", "original_type": [1]},
        ],
        "unknown_id": [{"type": "ack", "id": "nope", "original_type": "state_update"}],
        "not_in_flight": [{"type": "ack", "original_type": "repository_event"}],
        "type_mismatch": [{"type": "ack", "id": "m0", "original_type": "repository_event"}],
    }
    try:
        await node.wait_for(lambda: len(seqs_of(node)) == 5, 20)
        for acks in garbage.values():
            for body in acks * 20:
                await node.send(json.dumps(body))
        expected = {reason: float(len(acks) * 20) for reason, acks in garbage.items()}

        def mismatches() -> dict[str, float]:
            return {r: bridge.metric("resonance_ack_mismatches_total", reason=r) for r in garbage}

        await until(lambda: mismatches() == expected, 10, lambda: f"{mismatches()}\n{bridge.output()}")
        async with Committed(broker, topics) as committed:
            await asyncio.sleep(0.5)  # several commit intervals
            assert await committed.offset() == 0
            for i in (4, 3, 2, 1, 0):
                await node.send(json.dumps({"type": "ack", "original_type": "state_update", "id": f"m{i}"}))
            await committed.settles_at(5)
        mismatch_lines = [line for line in bridge.output().splitlines() if "resonance.acks" in line]
        assert len(mismatch_lines) == len(garbage), mismatch_lines  # one line per kind, not 20
    finally:
        bridge.stop()


def seqs_of(node: NodeServer) -> list[object]:
    return [m for m in node.received if m["type"] == "state_update"]


async def test_a_node_that_accepts_and_closes_at_once_gets_backoff_not_a_storm(
    broker: EmbeddedBroker, topics: Topics, workdir: Path
) -> None:
    """Item 5: the backoff resets only after a healthy session, so a node that closes each connection
    at once (policy violation, 1008) sees a few connections in 10 s, not thousands."""
    accepted = 0

    async def slam(ws: ServerConnection) -> None:
        nonlocal accepted
        accepted += 1
        await ws.close(1008, "go away")

    async with serve(slam, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        bridge = BridgeProcess(bridge_env(broker, topics, endpoint(port)), workdir / "bridge.log").start()
        try:
            await until(lambda: accepted >= 1, 20, bridge.output)
            await asyncio.sleep(10)
            print(f"connections accepted and closed in 10 s: {accepted}")
            assert 3 <= accepted <= 15, accepted
        finally:
            bridge.stop()


async def test_frames_the_bridge_cannot_parse_are_answered_and_keep_the_session(
    broker: EmbeddedBroker, topics: Topics, node: NodeServer, workdir: Path
) -> None:
    """Item 5: a deeply nested frame and a text frame that is not UTF-8 are dead-lettered with an
    error reply on the same connection; a node that re-sends what was not answered stops re-sending."""
    bridge = BridgeProcess(bridge_env(broker, topics, endpoint(node.port)), workdir / "bridge.log").start()
    try:
        await bridge.wait_ready()
        await node.send(DEEP.decode())
        await node.send(b'{"type": "state_update", "data": {"x": "\xff"}}', text=True)
        await node.send(b'{"type": ' + b"[" * 900 + b"]" * 900 + b"}", text=True)
        await node.send('{"type": "\\ud800", "data": {}}')  # valid JSON; no text for a header
        await node.send('{"type": "state_update", "data": {"ok": true}}')
        await node.wait_for(lambda: len(node.replies) == 5, 20)
        reasons = ["too_deep", "not_utf8", "type_not_string", "type_not_string"]
        assert [r.get("reason") for r in node.replies] == [*reasons, None]
        dead = await consume(broker, topics.deadletter, 4)
        assert [dict(r.headers)["resonance-reason"].decode() for r in dead] == reasons
        assert dead[1].value == b'{"type": "state_update", "data": {"x": "\xff"}}'
        assert node.connections_seen == 1 and bridge.status("/readyz") == 200
    finally:
        bridge.stop()


async def test_sigterm_with_the_broker_unreachable_exits_within_the_grace(
    proxied: Proxied, node: NodeServer, workdir: Path
) -> None:
    """Item 6: nothing in shutdown waits on an unreachable broker beyond the grace period plus the
    close budget (5 s)."""
    broker, proxy, topics = await proxied()
    await produce(broker, topics.node, (state_update(i) for i in range(2000)))
    node.ack_delay = 0.005
    env = bridge_env(broker, topics, endpoint(node.port), RESONANCE_SHUTDOWN_GRACE_S="2")
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        await node.wait_for(lambda: len(seqs(node)) >= 200, 30)
        await node.send(state_update(0).decode())  # an inbound record that cannot be stored now
        await proxy.cut()
        await until(lambda: bridge.status("/readyz") == 503, 20, bridge.output)
        # A node restarting while the broker is away is reconnected at once, not after the outage.
        seen = node.connections_seen
        node.drop()
        await until(lambda: node.connections_seen > seen, 5, bridge.output)
        started = time.monotonic()
        bridge.signal(signal.SIGTERM)
        code = await asyncio.to_thread(bridge.wait, 15)
        took = time.monotonic() - started
        print(f"SIGTERM with the broker cut off: exit {code} after {took:.1f}s (grace 2 s + budget 5 s)")
        assert took < 2 + 5 + 1.5, bridge.output()
        assert code == 0, bridge.output()
    finally:
        bridge.stop()


async def test_a_slow_but_steady_node_is_not_declared_stuck(
    broker: EmbeddedBroker, topics: Topics, workdir: Path
) -> None:
    """Item 7: the ack timeout means "no ack at all for this long": a node that acks 20 times a
    second with 100 in flight (the oldest waits 5 s) is never cut off with a 1 s timeout."""
    node = NodeServer("steady", port=0, printer=None, ack_delay=0.05)
    await node.start()
    await produce(broker, topics.node, (state_update(i) for i in range(200)))
    env = bridge_env(
        broker, topics, endpoint(node.port), RESONANCE_ACK_TIMEOUT_S="1", RESONANCE_MAX_IN_FLIGHT="100"
    )
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        await node.wait_for(lambda: len(seqs(node)) >= 200, 60)
        async with Committed(broker, topics) as committed:
            await committed.settles_at(200, 20)
        assert seqs(node) == list(range(200))  # each once: no redelivery
        assert bridge.metric("resonance_ack_timeouts_total") == 0
        assert node.connections_seen == 1
    finally:
        bridge.stop()
        await node.close()


async def test_a_slow_broker_does_not_make_a_healthy_node_look_stuck(
    proxied: Proxied, node: NodeServer, workdir: Path
) -> None:
    """Item 7: while the bridge waits for a slow broker to take the node's messages it reads no acks;
    the watchdog's clock stops meanwhile, so records flowing out at the same time are not redelivered."""
    broker, _, topics = await proxied(delay=0.3)
    env = bridge_env(
        broker, topics, endpoint(node.port), RESONANCE_ACK_TIMEOUT_S="1", RESONANCE_MAX_IN_FLIGHT="50"
    )
    bridge = BridgeProcess(env, workdir / "bridge.log").start()

    async def talk() -> None:
        for i in range(600):  # a few seconds of storing at 0.3 s a round trip: many ack timeouts long
            await node.send(state_update(i).decode())

    try:
        await bridge.wait_ready(60)
        talking = asyncio.create_task(talk())
        for chunk in range(6):
            await produce(broker, topics.node, (state_update(chunk * 50 + i) for i in range(50)))
        await talking
        await node.wait_for(lambda: len(seqs(node)) >= 300 and len(node.replies) >= 600, 180)
        assert bridge.metric("resonance_ack_timeouts_total") == 0, bridge.output()
        assert node.connections_seen == 1 and seqs(node) == list(range(300))
    finally:
        bridge.stop()


async def test_a_black_holed_node_connection_is_noticed_and_replaced(
    broker: EmbeddedBroker, topics: Topics, node: NodeServer, workdir: Path
) -> None:
    """Item 8: the connection stops forwarding without closing. /readyz turns 503 once nothing was
    heard for a ping interval and half the timeout; the connection is replaced after the timeout."""
    proxy = Proxy(node.port)
    await proxy.start()
    env = bridge_env(
        broker,
        topics,
        endpoint(proxy.port),
        RESONANCE_WS_PING_INTERVAL_S="1",
        RESONANCE_WS_PING_TIMEOUT_S="2",
    )
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        await bridge.wait_ready()
        proxy.black_hole()
        holed = time.monotonic()
        await until(lambda: bridge.status("/readyz") == 503, 10, bridge.output)
        noticed = time.monotonic() - holed
        assert "websocket unresponsive" in bridge.get("/readyz")[1]
        await until(lambda: node.connections_seen >= 2, 10, bridge.output)
        replaced = time.monotonic() - holed
        print(f"black hole: /readyz 503 after {noticed:.1f}s, new connection after {replaced:.1f}s")
        assert noticed < 1 + 2 / 2 + 1.5 and replaced < 1 + 2 + 2.5
        await produce(broker, topics.node, (state_update(i) for i in range(20)))
        await node.wait_for(lambda: seqs(node) == list(range(20)), 20)
        await bridge.wait_ready()
    finally:
        bridge.stop()
        await proxy.cut()


async def _ping_flood(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flooded: asyncio.Event
) -> None:
    """A node that completes the handshake, then floods pings (125-byte payloads) and never reads."""
    import base64
    import hashlib

    request = await reader.readuntil(b"\r\n\r\n")
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key")
    )
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    ping = b"\x89\x7d" + b"p" * 125
    try:
        for _ in range(1000):  # up to 1,000,000 pings: ~130 MB of pongs the bridge would have to hold
            writer.write(ping * 1000)
            await writer.drain()
        await asyncio.sleep(5)  # for the bridge to read what is still buffered
    except ConnectionError:
        pass  # the bridge dropped us
    flooded.set()
    writer.transport.abort()


async def test_a_node_flooding_pings_without_reading_cannot_grow_the_bridge(
    broker: EmbeddedBroker, topics: Topics, workdir: Path
) -> None:
    """Item 9: the bytes waiting to be written are bounded; past the bound the node is dropped."""
    flooded = asyncio.Event()
    server = await asyncio.start_server(lambda r, w: _ping_flood(r, w, flooded), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = bridge_env(broker, topics, endpoint(port), RESONANCE_MAX_FRAME_BYTES="65536")
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        await until(lambda: bridge.status("/healthz") == 200, 20, bridge.output)
        assert bridge.process is not None
        before = rss_mb(bridge.process.pid)
        await asyncio.wait_for(flooded.wait(), 120)
        after = rss_mb(bridge.process.pid)
        print(f"ping flood: bridge RSS {before:.0f} MB -> {after:.0f} MB")
        assert after - before < 20, (before, after)
        await until(lambda: "stopped reading" in bridge.output(), 10, bridge.output)
    finally:
        bridge.stop()
        server.close()


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024


async def test_shutdown_with_a_silent_node_stays_within_grace_and_budget(
    broker: EmbeddedBroker, topics: Topics, node: NodeServer, workdir: Path
) -> None:
    """Item 10: a node that stops answering (its connection black-holed) holds the drain for the whole
    grace and never answers the closing handshake; closing still takes at most the close budget, so
    the pod's terminationGracePeriodSeconds (grace + 7 s) is never reached."""
    proxy = Proxy(node.port)
    await proxy.start()
    node.ack = False
    await produce(broker, topics.node, (state_update(i) for i in range(10)))
    env = bridge_env(broker, topics, endpoint(proxy.port), RESONANCE_SHUTDOWN_GRACE_S="2")
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        await node.wait_for(lambda: len(seqs(node)) == 10, 20)
        proxy.black_hole()
        started = time.monotonic()
        bridge.signal(signal.SIGTERM)
        code = await asyncio.to_thread(bridge.wait, 20)
        took = time.monotonic() - started
        print(f"SIGTERM with a black-holed node: exit {code} after {took:.1f}s (grace 2 s + budget 5 s)")
        assert code == 0 and 2 <= took < 2 + 5, (code, took, bridge.output())
        assert "stopped cleanly" in bridge.output()
    finally:
        bridge.stop()
        await proxy.cut()
