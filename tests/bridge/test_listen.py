"""Nodes that dial in (RESONANCE_LISTEN): what only a listening bridge has. The relay rules themselves
run in both directions in test_relay.py.

Real processes throughout: the bridge as `resonance bridge`, nodes as the reference node client
(`resonance node connect`), raw sockets for what no well-behaved client sends."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import struct
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from resonance_bridge.config import ConfigError, load
from resonance_local.embedded import EmbeddedBroker, free_port
from resonance_local.nodeclient import NodeClient

from ..support.harness import BridgeProcess, Topics, bridge_env, everything, produce, seqs, state_update
from ..support.pki import Authority
from ..support.poll import until

# Connections that never say a word, opened as fast as one process can for ARGV[2] seconds; at most
# 2,000 open at once (the oldest closed). Prints how many it opened.
FLOOD = """
import socket, sys, time
port, end, socks, opened = int(sys.argv[1]), time.monotonic() + float(sys.argv[2]), [], 0
while time.monotonic() < end:
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        pass
    socks.append(s)
    opened += 1
    if len(socks) > 2000:
        socks.pop(0).close()
print(opened)
"""


@pytest.fixture
async def clients() -> AsyncIterator[list[NodeClient]]:
    made: list[NodeClient] = []
    yield made
    for client in made:
        await client.close()


def client(made: list[NodeClient], url: str, **kwargs: object) -> NodeClient:
    node = NodeClient(f"client{len(made)}", url, printer=None, **kwargs)
    made.append(node)
    return node


async def raw(port: int, *data: bytes, timeout: float = 5) -> bytes:
    """What the bridge answers to these writes, each sent once the last got an answer, until it
    closes (or the timeout)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = b""
    try:
        async with asyncio.timeout(timeout):
            for chunk in data:
                writer.write(chunk)
                await writer.drain()
                answer += await reader.read(65536)
            while more := await reader.read(65536):
                answer += more
    except TimeoutError:
        pass
    finally:
        writer.close()
    return answer


def test_a_bridge_either_dials_or_listens_and_a_listener_names_who_may_connect() -> None:
    base = {"RESONANCE_TOPIC": "t", "RESONANCE_ANCHOR": "A", "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"}
    cases = {
        "neither": ({}, "RESONANCE_ENDPOINT", "is required: set one of them"),
        "both": (
            {
                "RESONANCE_ENDPOINT": "ws://n:1",
                "RESONANCE_LISTEN": ":8765",
                "RESONANCE_LISTEN_ANONYMOUS": "1",
            },
            "RESONANCE_LISTEN",
            "set one of them",
        ),
        "nobody": (
            {"RESONANCE_LISTEN": ":8765"},
            "RESONANCE_LISTEN_TOKEN_FILE",
            "RESONANCE_LISTEN_ANONYMOUS",
        ),
        "port": (
            {"RESONANCE_LISTEN": "8765x", "RESONANCE_LISTEN_ANONYMOUS": "1"},
            "RESONANCE_LISTEN",
            "host:port",
        ),
        "dial settings": (
            {"RESONANCE_LISTEN": ":8765", "RESONANCE_LISTEN_ANONYMOUS": "1", "RESONANCE_AUTH_TOKEN": "x"},
            "RESONANCE_AUTH_TOKEN",
            "RESONANCE_LISTEN_*",
        ),
    }
    for name, (env, variable, needle) in cases.items():
        with pytest.raises(ConfigError) as error:
            load({**base, **env})
        [problem] = error.value.problems
        assert problem.variable == variable and needle in str(problem), (name, str(problem))
    config = load({**base, "RESONANCE_LISTEN": ":8765", "RESONANCE_LISTEN_ANONYMOUS": "true"})
    assert config.peer == "nodes dialling ws://:8765/"


async def test_a_taken_listen_port_is_one_line_and_exit_2(
    broker: EmbeddedBroker, topics: Topics, workdir: Path, clients: list[NodeClient]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = client(clients, f"ws://127.0.0.1:{port}/")
        bridge = BridgeProcess(bridge_env(broker, topics, node), workdir / "bridge.log").start()
        code = await asyncio.to_thread(bridge.wait, 60)
    assert code == 2, bridge.output()
    said = f"resonance bridge: RESONANCE_LISTEN=127.0.0.1:{port} cannot be used (Address already in use)"
    assert said in bridge.output() and "Traceback" not in bridge.output(), bridge.output()


async def test_a_node_that_dials_in_gets_everything_both_ways_while_it_flaps(
    broker: EmbeddedBroker, topics: Topics, workdir: Path, clients: list[NodeClient]
) -> None:
    """Killed and dialling again 20 times mid-stream, and then replaced by a second client: every record
    reaches a node, every frame sent and acked is in Kafka; what was in flight is delivered again."""
    total, port = 20_000 if os.environ.get("RESONANCE_SOAK") == "long" else 2000, free_port()
    first = client(clients, f"ws://127.0.0.1:{port}/")
    first.ack_delay = 0.001
    bridge = BridgeProcess(bridge_env(broker, topics, first), workdir / "bridge.log").start()
    try:
        await first.start()
        await produce(broker, topics.node, (state_update(i) for i in range(total)))
        delivered: set[int] = set()
        sent = 0
        for flap in range(20):
            enough = total // 50 * (flap + 1)
            await first.wait_for(lambda: first.connected.is_set() and len(seqs(first)) > enough, 30)  # noqa: B023
            sent += await first.send(json.dumps({"type": "state_update", "id": f"in-{sent}", "data": {}}))
            await first.wait_for(lambda: len(first.replies) >= sent, 30)  # noqa: B023
            first.drop()  # the client redials by itself
        second = client(clients, f"ws://127.0.0.1:{port}/")
        await second.start()
        await until(lambda: bridge.metric("resonance_listen_replacements_total") >= 1, 30, "a replacement")
        await second.wait_for(lambda: set(seqs(first)) | set(seqs(second)) >= set(range(total)), 60)
        delivered = set(seqs(first)) | set(seqs(second))
        assert delivered == set(range(total))
        acked = [r["id"] for r in first.replies + second.replies if r["type"] == "ack" and r.get("id")]
        stored = await everything(broker, topics.inbound)
        assert {json.loads(v).get("id") for v in stored} >= set(acked), "an acked frame is not in Kafka"
        dupes = len(seqs(first)) + len(seqs(second)) - total
        print(f"listen flapping: {total} delivered, 0 lost, {dupes} again; {len(acked)}/{sent} acked inbound")
        assert bridge.metric("resonance_listen_handshakes_total", result="accepted") >= 21
        assert len(acked) == sent == 20
    finally:
        bridge.stop()


async def test_who_may_connect_and_what_others_are_answered(
    broker: EmbeddedBroker, topics: Topics, workdir: Path, clients: list[NodeClient]
) -> None:
    port = free_port()
    token = workdir / "token"
    token.write_text("s3cret\n")
    env = bridge_env(broker, topics, "ws://unused:1", RESONANCE_LISTEN=f"127.0.0.1:{port}")
    del env["RESONANCE_ENDPOINT"]
    env.update(RESONANCE_LISTEN_TOKEN_FILE=str(token), RESONANCE_LISTEN_PATH="/resonance")
    env["RESONANCE_LISTEN_ALLOWED_ORIGINS"] = "https://app.example.com"
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        await bridge.wait_ready()
        assert "no node connected" in bridge.readyz()
        wrong = client(clients, f"ws://127.0.0.1:{port}/resonance", token="guess")
        await wrong.start()
        await until(lambda: wrong.refused >= 1, 10, "a 401")
        assert "HTTP 401" in (wrong.last_error or "")
        assert bridge.metric("resonance_listen_handshakes_total", result="unauthorized") >= 1
        # The guide's curl line, a wrong path and garbage: prompt HTTP answers that say why.
        curl = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        assert (await raw(port, curl)).startswith(b"HTTP/1.1 404")
        guide = curl.replace(b"GET / ", b"GET /resonance ")
        answer = await raw(port, guide)
        assert answer.startswith(b"HTTP/1.1 401"), answer  # the token first, saying how to present it
        assert b"Authorization: Bearer" in answer, answer
        answer = await raw(port, guide.replace(b"\r\n\r\n", b"\r\nAuthorization: Bearer s3cret\r\n\r\n"))
        assert answer.startswith(b"HTTP/1.1 400") and b"Sec-WebSocket-Key" in answer, answer
        assert (await raw(port, b"\x16\x03\x01garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
        right = client(clients, f"ws://127.0.0.1:{port}/resonance", token="s3cret")
        await right.start()
        await asyncio.wait_for(right.connected.wait(), 10)
        await until(lambda: "node connected from 127.0.0.1" in bridge.readyz(), 10, "readyz naming the node")
        by_query = client(clients, f"ws://127.0.0.1:{port}/resonance?token=s3cret")
        await by_query.start()  # a browser cannot set headers: the token in the query also serves
        await asyncio.wait_for(by_query.connected.wait(), 10)
        assert "s3cret" not in bridge.output()
        # Browsers: an Origin not allowed is refused (403); an allowed one, or none (not a browser), serves.
        key = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        upgrade = guide.replace(b"\r\n\r\n", b"\r\nAuthorization: Bearer s3cret\r\n" + key)
        for origin, status in ((b"https://evil.example", b"403"), (b"https://app.example.com", b"101")):
            answer = await raw(port, upgrade + b"Origin: " + origin + b"\r\n\r\n", timeout=2)
            assert answer.startswith(b"HTTP/1.1 " + status), answer
    finally:
        bridge.stop()


async def test_hostile_clients_get_bounded_answers_and_the_node_keeps_flowing(
    broker: EmbeddedBroker, topics: Topics, workdir: Path, clients: list[NodeClient]
) -> None:
    """A compressed frame (no compression was negotiated: no inflation bomb), a frame past the limit,
    a flood of 2,000 connections that never finish their handshake: the node's flow goes on."""
    port = free_port()
    node = client(clients, f"ws://127.0.0.1:{port}/")
    env = bridge_env(broker, topics, node, RESONANCE_LISTEN_MAX_PENDING="32")
    env["RESONANCE_LISTEN_HANDSHAKE_TIMEOUT_S"] = "2"
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        await node.start()
        await asyncio.wait_for(node.connected.wait(), 30)
        hello = (
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        deflated = bytes((0xC1, 0x80 | 5)) + b"\x00\x00\x00\x00" + b"\xf3H\xcd\xc9\xc9"  # RSV1: compressed
        answer = await raw(port, hello, deflated)
        assert b"101 Switching Protocols" in answer and b"\x88" in answer, answer  # upgraded, then closed
        assert struct.unpack("!H", answer[answer.index(b"\x88") + 2 : answer.index(b"\x88") + 4])[0] == 1002
        # The flood: another process opening connections that say nothing, as fast as it can, far past
        # the cap of pending handshakes. The node's throughput with and without it, in one run.
        total = 60_000  # more than both measuring windows take
        await produce(broker, topics.node, (state_update(i) for i in range(total)))
        await asyncio.wait_for(node.connected.wait(), 30)  # again: the raw client above replaced it
        seen = node.connections_seen

        async def rate(seconds: float) -> float:
            before, started = len(seqs(node)), time.monotonic()
            await asyncio.sleep(seconds)
            return (len(seqs(node)) - before) / (time.monotonic() - started)

        await node.wait_for(lambda: len(seqs(node)) > 1000, 30)  # flowing at full speed
        calm = await rate(0.5)
        flood = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FLOOD, str(port), "3", stdout=asyncio.subprocess.PIPE
        )
        await asyncio.sleep(0.3)  # the flood under way
        flooded = await rate(1.0)
        opened = int((await flood.communicate())[0] or 0)
        await node.wait_for(lambda: len(set(seqs(node))) >= total, 120)
        print(f"node throughput {calm:.0f} records/s, {flooded:.0f} during a flood of {opened} connections")
        await until(lambda: bridge.metric("resonance_listen_handshakes_total", result="busy") > 0, 10, "busy")
        assert node.connections_seen == seen, "the flood cost the node its connection"

        # A connection that went half-open (it reads nothing, answers no close) never locks the node
        # out: the node dials again, and is served once the closing handshake's timeout has passed.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(hello)
        await reader.readuntil(b"\r\n\r\n")  # upgraded: it replaced the node's session; now silent
        await produce(broker, topics.node, (state_update(i) for i in range(total, total + 100)))
        await node.wait_for(lambda: set(range(total, total + 100)) <= set(seqs(node)), 30)
        writer.transport.abort()
    finally:
        bridge.stop()


async def test_wss_with_a_private_ca_and_mutual_tls(
    broker: EmbeddedBroker, topics: Topics, workdir: Path, clients: list[NodeClient]
) -> None:
    pki = Authority.make(workdir / "pki")
    server, node_cert = pki.issue("bridge"), pki.issue("node", client=True)
    port = free_port()
    env = bridge_env(broker, topics, "ws://unused:1", RESONANCE_LISTEN=f"127.0.0.1:{port}")
    del env["RESONANCE_ENDPOINT"]
    env.update(
        RESONANCE_LISTEN_ANONYMOUS="true",
        RESONANCE_LISTEN_TLS_CERT_FILE=str(server.cert),
        RESONANCE_LISTEN_TLS_KEY_FILE=str(server.key),
        RESONANCE_LISTEN_CLIENT_CA_FILE=str(pki.cert),
    )
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        await bridge.wait_ready()
        trusting = ssl.create_default_context(cafile=pki.cert)
        anonymous = client(clients, f"wss://127.0.0.1:{port}/", tls=trusting)
        await anonymous.start()
        await until(lambda: anonymous.failed >= 1, 10, "a TLS refusal without a client certificate")
        assert not anonymous.connected.is_set()
        mutual = ssl.create_default_context(cafile=pki.cert)
        mutual.load_cert_chain(node_cert.cert, node_cert.key)
        node = client(clients, f"wss://127.0.0.1:{port}/", tls=mutual)
        await node.start()
        await produce(broker, topics.node, (state_update(i) for i in range(100)))
        await node.wait_for(lambda: set(seqs(node)) == set(range(100)), 30)

        # The Secret rotates: the kubelet rewrites the files; new handshakes get the new certificate.
        rotated = pki.issue("bridge-rotated")
        server.key.write_bytes(rotated.key.read_bytes())
        server.cert.write_bytes(rotated.cert.read_bytes())
        expected = ssl.PEM_cert_to_DER_cert(rotated.cert.read_text())

        async def presented() -> bytes:
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=mutual)
            try:
                return bytes(writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
            finally:
                writer.close()

        for _ in range(40):  # the bridge looks every 10 s
            if await presented() == expected:
                break
            await asyncio.sleep(0.5)
        assert await presented() == expected, "the rotated certificate was not taken up"
        assert "server certificate reloaded" in bridge.output()
    finally:
        bridge.stop()
