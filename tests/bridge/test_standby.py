"""A node with a standby endpoint (RESONANCE_STANDBY_ENDPOINTS): the rules of endpoints.py, then two
real node servers while messages flow both ways. The primary is killed, comes back, is black-holed,
comes back again: the bridge fails over to the standby and back each time, and nothing is lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from resonance_bridge.endpoints import Endpoints
from resonance_local.embedded import EmbeddedBroker
from resonance_local.node import NodeServer

from ..support.harness import BridgeProcess, Topics, bridge_env, seqs
from ..support.proxy import Proxy
from ..support.soak import inbound, no_loss, outbound, settle, size, two_way

PRIMARY, STANDBY = "ws://primary:1", "ws://standby:2"


def test_an_endpoint_is_left_when_refused_unreachable_often_enough_or_silent() -> None:
    endpoints = Endpoints([PRIMARY, STANDBY], attempts=3, failback_after_s=30)
    assert [endpoints.failed(refused=False) for _ in range(3)] == [None, None, "unreachable"]
    assert endpoints.current == STANDBY and endpoints.on_standby
    assert endpoints.failed(refused=True) == "refused"  # round again: the primary
    assert endpoints.current == PRIMARY
    endpoints.failed(refused=False)
    endpoints.connected()  # a success starts the count over
    assert [endpoints.failed(refused=False) for _ in range(2)] == [None, None]
    assert endpoints.silent() == "silent" and endpoints.current == STANDBY
    alone = Endpoints([PRIMARY], attempts=1, failback_after_s=30)
    assert alone.failed(refused=True) is None and alone.silent() is None and alone.current == PRIMARY


def test_fail_back_needs_the_primary_answering_every_probe_for_the_whole_period() -> None:
    endpoints = Endpoints([PRIMARY, STANDBY], attempts=1, failback_after_s=30)
    endpoints.failed(refused=True)
    assert not endpoints.probed(True, 100.0) and not endpoints.probed(True, 120.0)
    assert not endpoints.probed(False, 125.0)  # one probe unanswered: the period starts again
    assert not endpoints.probed(True, 130.0) and not endpoints.probed(True, 159.0)
    assert endpoints.probed(True, 160.0)
    endpoints.fail_back()
    assert endpoints.current == PRIMARY and not endpoints.on_standby
    assert 1.0 <= endpoints.probe_interval_s <= 10.0


async def test_endpoints_that_all_refuse_are_tried_a_round_at_a_time_not_hammered(
    broker: EmbeddedBroker, topics: Topics, workdir: Path
) -> None:
    """Every endpoint answers 401: the bridge moves on at once after each refusal, but a whole round
    refused waits RESONANCE_REFUSED_RETRY_S before the next, as one endpoint would."""
    servers = [NodeServer(name, port=0, printer=None, token="not-the-bridges") for name in ("a", "b")]
    for server in servers:
        await server.start()
    standby = f"ws://127.0.0.1:{servers[1].port}"
    env = bridge_env(broker, topics, f"ws://127.0.0.1:{servers[0].port}", RESONANCE_STANDBY_ENDPOINTS=standby)
    bridge = BridgeProcess({**env, "RESONANCE_REFUSED_RETRY_S": "1"}, workdir / "bridge.log").start()
    try:
        await asyncio.sleep(4)
        refused = bridge.metric("resonance_connect_failures_total", reason="http_401", side="websocket")
        switches = bridge.metric("resonance_endpoint_switches_total", reason="refused")
    finally:
        bridge.stop()
        for server in servers:
            await server.close()
    assert 2 <= refused <= 12 and switches >= 2, (refused, switches)  # 2 a round, a round a second


class Either:
    """The node wherever the bridge is connected (the primary or the standby), as a Talker sees it."""

    def __init__(self, *nodes: NodeServer) -> None:
        self.nodes = nodes

    @property
    def connections(self) -> set[Any]:
        return set().union(*(n.connections for n in self.nodes))

    @property
    def connections_seen(self) -> int:
        return sum(n.connections_seen for n in self.nodes)

    @property
    def received(self) -> list[dict[str, Any]]:
        return [m for n in self.nodes for m in n.received]

    @property
    def replies(self) -> list[dict[str, Any]]:
        taken = [r for n in self.nodes for r in n.replies]
        for n in self.nodes:
            n.replies.clear()
        return taken

    async def send(self, frame: str) -> int:
        return sum([await n.send(frame) for n in self.nodes])


async def test_a_node_fails_over_to_its_standby_and_back_and_loses_nothing_either_way(
    broker: EmbeddedBroker, topics: Topics, workdir: Path
) -> None:
    sent, window = size(2000, 20000), 200
    pace = sent / size(15, 40)  # both ways, spanning the four faults
    primary = NodeServer("primary", port=0, printer=None, ack_delay=1 / pace)
    standby = NodeServer("standby", port=0, printer=None, ack_delay=1 / pace)
    for server in (primary, standby):
        await server.start()
    proxy = Proxy(primary.port)  # the primary's network: cut, black-holed, healed
    await proxy.start()
    env = {
        "RESONANCE_STANDBY_ENDPOINTS": f"ws://127.0.0.1:{standby.port}",
        "RESONANCE_FAILOVER_ATTEMPTS": "2",
        "RESONANCE_FAILBACK_AFTER_S": "2",
        "RESONANCE_WS_PING_INTERVAL_S": "1",
        "RESONANCE_WS_PING_TIMEOUT_S": "2",
    }
    node = Either(primary, standby)
    took: dict[str, float] = {}

    async def moved(fault: str, to: NodeServer) -> None:
        """From the fault until records arrive at `to` again: the time the node went without."""
        before, started = len(seqs(to)), time.monotonic()
        await to.wait_for(lambda: len(seqs(to)) > before, 60)
        took[fault] = time.monotonic() - started

    try:
        log = workdir / "bridge.log"
        flowing = two_way(broker, topics, node, log, sent, window, pace, proxy.port, **env)  # type: ignore[arg-type]
        async with flowing as flow:
            await primary.wait_for(lambda: len(seqs(primary)) > 50, 30)
            await proxy.cut()  # the primary crashes: reset, then refused
            await moved("primary killed", standby)
            await proxy.start()  # back: answers probes for 2 s, then the bridge returns
            await moved("primary restored", primary)
            proxy.black_hole(new=True)  # its connection and new ones forward nothing
            await moved("primary black-holed", standby)
            proxy.heal()
            await moved("primary restored again", primary)
            await settle(node, flow.talker, 120)  # type: ignore[arg-type]
            switches = {
                why: flow.bridge.metric("resonance_endpoint_switches_total", reason=why)
                for why in ("unreachable", "silent", "failback")
            }
            in_use = flow.bridge.metric("resonance_endpoint_in_use", endpoint=f"ws://127.0.0.1:{proxy.port}")
    finally:
        await proxy.cut()
        for server in (primary, standby):
            await server.close()
    assert switches == {"unreachable": 1, "silent": 1, "failback": 2} and in_use == 1, switches
    note = ", ".join(f"{fault}: {seconds:.1f}s" for fault, seconds in took.items())
    out = outbound("node failover to a standby", node, sent, recover_s=max(took.values()), note=note)  # type: ignore[arg-type]
    into = await inbound("node failover to a standby", broker, topics.inbound, sent, note=note)
    no_loss(out, into)
    # Killed: two refused attempts with backoff; black-holed: the keepalive (1 s + 2 s, twice over
    # if data arrived just after a ping); restored: the 2 s of probes, each 1 s apart.
    assert took["primary killed"] < 5 and took["primary black-holed"] < 2 * (1 + 2) + 3, took
    assert 2 <= took["primary restored"] < 2 + 5 and 2 <= took["primary restored again"] < 2 + 15, took
