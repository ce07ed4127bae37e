"""Real servers for the tests: one embedded Kafka broker (tansu) per session, real WebSocket nodes,
and bridges run as real processes."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from resonance_local.embedded import EmbeddedBroker, free_port
from resonance_local.node import NodeServer

from .support.harness import SecureBroker, Topics
from .support.proxy import Proxied, Proxy


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    embedded = EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log")
    embedded.start()
    yield embedded
    embedded.stop()


@pytest.fixture
async def topics(broker: EmbeddedBroker) -> Topics:
    """Fresh single-partition topics per test on the session's broker."""
    names = Topics.fresh()
    await names.create(broker)
    return names


@pytest.fixture
async def node() -> AsyncIterator[NodeServer]:
    server = NodeServer("testnode", port=0, printer=None)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
async def proxied(workdir: Path) -> AsyncIterator[Proxied]:
    """Makes brokers of the test's own that clients reach only through a Proxy (their metadata points
    there), with fresh topics; stopped with the test."""
    made: list[tuple[EmbeddedBroker, Proxy]] = []

    async def make(
        delay: float = 0.0, tls: ssl.SSLContext | None = None, client: ssl.SSLContext | None = None
    ) -> tuple[EmbeddedBroker, Proxy, Topics]:
        """tls: the proxy's server side (clients then speak TLS to the broker); client: the context
        the tests' own clients use with it."""
        port = free_port()
        proxy = Proxy(port, delay, tls)
        broker = SecureBroker(port=port, log_path=workdir / f"broker-{port}.log", advertised_port=proxy.port)
        if client is not None:
            broker.security = {"security_protocol": "SSL", "ssl_context": client}
        broker.start()
        made.append((broker, proxy))
        await proxy.start()
        topics = Topics.fresh()
        await topics.create(broker)
        return broker, proxy, topics

    yield make
    for broker, proxy in made:
        await proxy.cut()
        broker.stop(grace=0.5)  # the test is over: its clients' goodbyes are not worth 5 s each
