"""Kafka clients configured from the bridge's Config, and the record shapes the bridge writes.

Every record the bridge produces is keyed by the node's name (so one node's records stay in order on
one partition, apart from other nodes' even when they share an anchor, as the guide's two do) and
carries `resonance-*` headers naming where it came from, the anchor among them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from . import fetching, security
from .backoff import Retry
from .codec import Rejected, now_iso
from .config import Config

log = logging.getLogger("resonance.kafka")

Headers = list[tuple[str, bytes]]
C = TypeVar("C", AIOKafkaProducer, AIOKafkaConsumer)
# Slack above the frame limit for the record's key, headers and batch framing.
_RECORD_OVERHEAD = 64 * 1024


def producer(config: Config) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **security.kafka(config),
        bootstrap_servers=config.bootstrap_servers,
        client_id=f"resonance-bridge-{config.node}",
        acks="all",
        request_timeout_ms=config.request_timeout_ms,
        enable_idempotence=config.enable_idempotence,
        linger_ms=config.linger_ms,
        # aiokafka keeps one request in flight per broker; its 16 KiB default batch caps inbound
        # throughput at ~15 records per round trip (bench/RESULTS.md).
        max_batch_size=config.batch_size,
        max_request_size=max(config.batch_size, config.max_frame_bytes + _RECORD_OVERHEAD),
    )


def consumer(config: Config) -> AIOKafkaConsumer:
    """The node's consumer: its records take the lean path (fetching.py), offset, timestamp and value."""
    fetching.install()
    return AIOKafkaConsumer(
        value_deserializer=fetching.LEAN,
        **security.kafka(config),
        bootstrap_servers=config.bootstrap_servers,
        client_id=f"resonance-bridge-{config.node}",
        group_id=config.group_id,
        enable_auto_commit=False,  # the bridge commits only what the node acknowledged
        auto_offset_reset=config.auto_offset_reset,
        fetch_max_wait_ms=config.fetch_max_wait_ms,
        session_timeout_ms=config.session_timeout_ms,
        heartbeat_interval_ms=config.heartbeat_interval_ms,
        request_timeout_ms=config.request_timeout_ms,
        # aiokafka sends JoinGroup with the request timeout, and the coordinator may hold it for the
        # rebalance timeout: keep the second inside the first (members rejoin within seconds).
        rebalance_timeout_ms=max(1000, config.request_timeout_ms - 3000),
        max_partition_fetch_bytes=max(1024 * 1024, config.max_frame_bytes + _RECORD_OVERHEAD),
    )


async def start_with_retry(
    factory: Callable[[], C],
    retry: Retry,
    diagnose: Callable[[], Awaitable[BaseException | None]] | None = None,
) -> C | None:
    """Start a new aiokafka client, retrying forever (a stopped client cannot be restarted, so each
    attempt gets a fresh one); None if stopping came first, even mid-attempt (a black-holed broker
    makes one attempt last the whole request timeout)."""
    while not retry.stopping.is_set():
        client = factory()
        try:
            if await unless_stopping(client.start(), retry.stopping):
                retry.succeeded()
                return client
        except (KafkaError, OSError) as exc:
            await bounded(client.stop(), f"{retry.what} close", 1.0)
            await retry.failed((diagnose and await diagnose()) or exc)
            continue
        await bounded(client.stop(), f"{retry.what} close", 1.0)
    return None


async def unless_stopping(step: Awaitable[None], stopping: asyncio.Event) -> bool:
    """Run step to its end (True), or cancel it when stopping is set first (False)."""
    task = asyncio.ensure_future(step)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return False
    task.result()  # raises what the step raised
    return True


@contextlib.asynccontextmanager
async def started(
    factory: Callable[[], C],
    retry: Retry,
    time_left: Callable[[], float],
    diagnose: Callable[[], Awaitable[BaseException | None]] | None = None,
) -> AsyncIterator[C | None]:
    """A started client (None if stopping came first), closed on exit within time_left(): the
    consumer's close leaves the group so a successor starts at once, the producer's flushes what
    is still batched."""
    client = await start_with_retry(factory, retry, diagnose)
    try:
        yield client
    finally:
        if client is not None:
            await bounded(client.stop(), f"{retry.what} close", time_left())


async def bounded(step: Awaitable[None], what: str, timeout: float = 5.0) -> None:
    """Bounded because with the broker gone a commit or a leave-group would wait forever; what is
    not committed is redelivered, which at-least-once allows."""
    try:
        await asyncio.wait_for(step, max(0.0, timeout))
    except (TimeoutError, KafkaError) as exc:
        log.warning("%s did not finish (%r); going on", what, exc)
    except asyncio.CancelledError:
        # aiokafka's close can end in a CancelledError of its own (a retry sleep it cancelled);
        # only a cancellation of this very task is ours to pass on.
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        log.warning("%s was cut short inside the Kafka client; going on", what)


def headers(config: Config, **extra: str) -> Headers:
    base = {"resonance-node": config.node, "resonance-anchor": config.anchor, **extra}
    # backslashreplace: a header must never be the reason a record cannot be written.
    return [(name, value.encode("utf-8", "backslashreplace")) for name, value in base.items()]


def dead_letter(
    config: Config, rejected: Rejected, direction: str, limit: int | None = None, **extra: str
) -> tuple[bytes, Headers]:
    """The dead-letter record: the raw payload (cut to `limit`, by default the frame limit) and
    headers giving node, reason, detail and time, so it can be inspected and replayed."""
    raw = rejected.raw
    limit = config.max_frame_bytes if limit is None else limit
    info = {
        "resonance-reason": rejected.reason,
        "resonance-detail": rejected.detail,
        "resonance-direction": direction,
        "resonance-time": now_iso(),
        "resonance-original-size": str(len(raw)),
        **extra,
    }
    if len(raw) > limit:
        raw = raw[:limit]
        info["resonance-truncated"] = "true"
    if rejected.original_type:
        info["resonance-type"] = rejected.original_type
    return raw, headers(config, **info)
