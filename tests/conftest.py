"""Real servers for the tests: one embedded Kafka broker (tansu) per session, real WebSocket nodes,
and bridges run as real processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from resonance_bridge.embedded import EmbeddedBroker
from resonance_bridge.node import NodeServer

from .harness import Topics


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
