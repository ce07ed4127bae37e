"""A node server that answers the opening handshake with anything but a WebSocket upgrade: nothing it
sends ends the bridge. Each answer is a failed attempt, retried with backoff and logged once, naming
the endpoint and the cause; once a good server answers on the same address, delivery starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from resonance_local.embedded import EmbeddedBroker
from resonance_local.node import NodeServer

from ..support.harness import BridgeProcess, Topics, bridge_env, produce, seqs, state_update
from ..support.pki import Authority
from ..support.poll import until
from ..support.proxy import Proxy

SWITCHING = "HTTP/1.1 101 Switching Protocols\r\n"


def redirect(location: str) -> str:
    return f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"


# (case, the answer ({self} is the hostile server's own address, {other} another one), the failure's
# metric reason, what the log line says of the cause)
ANSWERS = [
    ("redirect to http", redirect("http://127.0.0.1:{self}/"), "handshake", "InvalidURI"),
    ("redirect to ftp", redirect("ftp://127.0.0.1/file"), "handshake", "InvalidURI"),
    ("redirect loop", redirect("ws://127.0.0.1:{self}/again"), "handshake", "redirects"),
    ("bad IPv6 Location", redirect("ws://[::1/x"), "handshake", "bad handshake"),
    ("redirect elsewhere", redirect("ws://127.0.0.1:{other}/"), "redirect", "another origin"),
    ("redirect without Location", "HTTP/1.1 301 Moved\r\nContent-Length: 0\r\n\r\n", "handshake", "Location"),
    ("malformed status line", "HTP/1.1 abc\r\n\r\n", "handshake", "InvalidMessage"),
    ("101 without Upgrade", SWITCHING + "Connection: Upgrade\r\n\r\n", "handshake", "Upgrade"),
    ("huge header", SWITCHING + "X-Big: " + "a" * 200_000 + "\r\n\r\n", "handshake", "bad handshake"),
    ("body, no upgrade", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "handshake", "HTTP 200"),
]  # fmt: skip


async def hostile_then_good(
    broker: EmbeddedBroker,
    topics: Topics,
    workdir: Path,
    node: NodeServer,
    answer: str,
    scheme: str,
    **env: str,
) -> tuple[BridgeProcess, Proxy]:
    proxy = Proxy(node.port)
    await proxy.start()
    proxy.answer = answer.format(self=proxy.port, other=node.port).encode()
    settings = bridge_env(broker, topics, f"{scheme}://127.0.0.1:{proxy.port}", RESONANCE_REFUSED_RETRY_S="1")
    settings["KAFKA_AUTO_OFFSET_RESET"] = "earliest"  # the record is written once the node is good
    return BridgeProcess(settings | env, workdir / "bridge.log").start(), proxy


async def survives_then_delivers(
    bridge: BridgeProcess,
    proxy: Proxy,
    broker: EmbeddedBroker,
    topics: Topics,
    node: NodeServer,
    reason: str,
    cause: str,
) -> None:
    try:
        failures = ("resonance_connect_failures_total", {"side": "websocket", "reason": reason})
        await until(lambda: bridge.metric(failures[0], **failures[1]) >= 3, 30, bridge.output)  # retried
        assert bridge.process is not None and bridge.process.poll() is None
        [line] = [
            line
            for line in bridge.output().splitlines()
            if f"node {bridge.env['RESONANCE_ENDPOINT']}" in line
        ]
        assert cause in line, line  # once, naming the endpoint and the cause
        assert "Traceback" not in bridge.output()
        proxy.answer = None  # a good server on the same address
        await produce(broker, topics.node, [state_update(1)])
        await until(lambda: seqs(node) == [1], 30, lambda: f"{node.received} {bridge.output()}")
    finally:
        bridge.stop()
        await proxy.cut()


@pytest.mark.parametrize(("case", "answer", "reason", "cause"), ANSWERS, ids=[a[0] for a in ANSWERS])
async def test_a_server_that_does_not_upgrade_is_a_failed_attempt(
    broker: EmbeddedBroker,
    topics: Topics,
    node: NodeServer,
    workdir: Path,
    case: str,
    answer: str,
    reason: str,
    cause: str,
) -> None:
    bridge, proxy = await hostile_then_good(broker, topics, workdir, node, answer, "ws")
    await survives_then_delivers(bridge, proxy, broker, topics, node, reason, cause)


async def test_a_tls_endpoint_that_speaks_plain_http_is_a_failed_attempt(
    broker: EmbeddedBroker, topics: Topics, workdir: Path, tmp_path: Path
) -> None:
    pki = Authority.make(tmp_path / "pki")
    tls = pki.server_context(pki.issue("server", hosts=("127.0.0.1",)))
    node = NodeServer("secure", port=0, printer=None, tls=tls)
    await node.start()
    try:
        plain = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
        bridge, proxy = await hostile_then_good(
            broker, topics, workdir, node, plain, "wss", RESONANCE_TLS_CA_FILE=str(pki.cert)
        )
        await survives_then_delivers(bridge, proxy, broker, topics, node, "tls", "TLS handshake failed")
    finally:
        await node.close()
