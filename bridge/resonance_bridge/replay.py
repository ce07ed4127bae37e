"""Replaying a node's topic from a point in time (README, "Replay").

Asked for in a control file (RESONANCE_REPLAY_FILE: the operator mounts a ConfigMap there holding the
node's resonance.io/replay-from annotation; `resonance replay` writes it on a laptop): an RFC 3339 time,
`earliest`, or `partition:offset` pairs. The bridge reads it every few seconds, so a replay rolls
nothing. A new request ends the node's session first: the switch happens with nothing in flight (an
ack without an id settles the oldest message of its type in flight, so a late ack of a record from
before the switch would otherwise settle a replayed one).

Per partition, before its first fetch with nothing of it in flight:
  1. `until`: where it was, the first offset not done; `from`: the first offset at or after the time
     (the broker's offsets_for_times, checked against the records' timestamps, else searched by
     them), never past `until`, so nothing is skipped;
  2. the consumer seeks to `from` and the commit moves back to it: a crash from here on resumes there;
  3. the plan (value, from, until) goes to the replay topic (RESONANCE_REPLAY_TOPIC, compacted), keyed
     by node and partition: a restarted bridge, or another replica taking the partition over, finds
     it and goes on instead of starting again. A value carried out is never carried out again.
Completed once every planned partition is done up to `until`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from . import security
from .config import Config
from .replaypoint import Request, iso, parse

if TYPE_CHECKING:
    from .reader import KafkaReader
    from .writer import KafkaWriter

log = logging.getLogger("resonance.replay")

POLL_S = 2.0  # how often the control file is read
REPLAYING = "replaying: the session starts over"  # the close reason of the session a request ends


class Refused(Exception):
    """The request cannot be carried out as asked: nothing of it was done."""


@dataclass(frozen=True, slots=True)
class Plan:
    value: str
    start: int  # `from`
    until: int
    started_at: str


class Replayer:
    def __init__(self, config: Config, writer: KafkaWriter) -> None:
        self.config, self.writer = config, writer
        self.topic = config.replay_topic
        # The replay topic's key, but for the partition: a node object (a namesake's uid differs).
        self.ident = f"{config.namespace}/{config.node}/{config.node_uid}"
        self.value = ""  # the control file's, as last read
        self.requested: Request | None = None
        self.error: str | None = None  # why the request is refused
        self.plans: dict[int, Plan] = {}  # of this bridge's partitions, for the request
        self.reached: dict[int, int] = {}  # where a plan found stored stood when taken up
        self.completed_at: str | None = None
        self.on_request: Callable[[], None] = lambda: None  # ends the session (bridge.py)

    # --- the request ----------------------------------------------------------------------------

    async def watch(self) -> None:
        while True:
            self.read()
            await asyncio.sleep(POLL_S)

    def read(self) -> None:
        try:
            with open(self.config.replay_file) as control:
                value = control.read().strip()
        except FileNotFoundError:
            value = ""
        except OSError as exc:
            log.warning("%s cannot be read (%s)", self.config.replay_file, exc.strerror)
            return
        if value == self.value:
            return
        self.value, self.requested, self.error = value, None, None
        self.plans, self.reached, self.completed_at = {}, {}, None
        if not value:
            return
        try:
            self.requested = parse(value)
        except ValueError as exc:
            self.error = str(exc)
            log.warning("replay refused: %s", exc)
            return
        log.info("replay from %s asked for", value)
        self.on_request()

    # --- carrying it out ------------------------------------------------------------------------

    async def before_fetch(self, reader: KafkaReader) -> None:
        """Carry the request out on the partitions not covered yet that have nothing in flight."""
        request = self.requested
        if request is None:
            return
        window = reader.window
        todo = [
            tp
            for tp in reader.consumer.assignment()
            if tp.partition not in self.plans and not window.partitions.get((tp.topic, tp.partition))
        ]
        if not todo:
            return
        stored_plans = await self._load()  # read again: another replica may have stored one since
        fresh = []
        for tp in todo:
            stored = stored_plans.get(tp.partition)
            if stored is not None and stored.value == request.value:
                self.plans[tp.partition] = stored  # carried out, or under way: not again
                self.reached[tp.partition] = await reader.consumer.position(tp)
            else:
                fresh.append(tp)
        if fresh:
            try:
                await self._start(reader, request, fresh)
            except Refused as exc:
                self.requested, self.error = None, str(exc)
                log.warning("replay from %s refused: %s", request.value, exc)

    async def _start(self, reader: KafkaReader, request: Request, partitions: list[TopicPartition]) -> None:
        consumer = reader.consumer
        begins = await consumer.beginning_offsets(partitions)
        plans = {}
        async with self._plain() as probe:
            probe.assign(partitions)
            for tp in partitions:
                until = await consumer.position(tp)  # nothing of it in flight: the first not done
                start = await self._resolve(probe, tp, request, begins[tp], until)
                plans[tp] = Plan(request.value, start, until, iso(time.time()))
        for tp, plan in plans.items():  # every partition resolved: now, and only now, the switch
            reader.window.restart((tp.topic, tp.partition), plan.start)
            consumer.seek(tp, plan.start)
            self.plans[tp.partition] = plan
        await reader.commit()  # from here a restart resumes from `from` (or the next commit does it)
        for tp, plan in plans.items():
            log.info("replaying %s from offset %d up to %d (%s)", tp, plan.start, plan.until, plan.value)
            record = {"partition": tp.partition, "value": plan.value, "from": plan.start}
            record |= {"until": plan.until, "started_at": plan.started_at}
            key = f"{self.ident}#{tp.partition}".encode()
            stored = await self.writer.producer.send(self.topic, json.dumps(record).encode(), key=key)
            stored.add_done_callback(self._stored)

    def _stored(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            what = "replay plan not stored in %s (%s): a restart would replay again; create the topic"
            log.warning(what, self.topic, future.exception())

    async def _resolve(
        self, probe: AIOKafkaConsumer, tp: TopicPartition, request: Request, begin: int, until: int
    ) -> int:
        if request.earliest:
            return min(begin, until)
        if request.offsets:
            wanted = dict(request.offsets).get(tp.partition)
            if wanted is None:
                return until  # not asked for: nothing to replay there
            if wanted < begin:
                said = f"offset {wanted} is before the oldest it holds ({begin})"
                raise Refused(f"partition {tp.partition}: {said}")
            return min(wanted, until)
        assert request.at_ms is not None
        start = await self._first_at(probe, tp, request.at_ms, begin, until)
        oldest = await self._timestamp(probe, tp, begin) if begin > 0 and start == begin < until else None
        if oldest is not None and oldest > request.at_ms:  # records from after the time were deleted
            raise Refused(
                f"partition {tp.partition} no longer holds records from {request.value} (retention): its "
                f"oldest is from {iso(oldest / 1000)}; replay from then or later, or from earliest"
            )
        return start

    async def _first_at(
        self, probe: AIOKafkaConsumer, tp: TopicPartition, at_ms: int, lo: int, hi: int
    ) -> int:
        """The first offset in [lo, hi) of a record at or after the time; hi if none."""
        if lo >= hi:
            return hi
        found = (await probe.offsets_for_times({tp: at_ms})).get(tp)
        guess = min(found.offset, hi) if found is not None else hi
        # The broker's answer, checked against the records (tansu 0.6 ignores the time).
        after = guess == hi or (await self._timestamp(probe, tp, guess) or 0) >= at_ms
        before = guess == lo or (await self._timestamp(probe, tp, guess - 1) or 0) < at_ms
        if lo <= guess <= hi and after and before:
            return guess
        while lo < hi:  # searched by the records' timestamps, taken to be in order
            mid = (lo + hi) // 2
            stamp = await self._timestamp(probe, tp, mid)
            if stamp is None or stamp >= at_ms:
                hi = mid
            else:
                lo = mid + 1
        return lo

    async def _timestamp(self, probe: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> int | None:
        """The timestamp (ms) of the record at `offset`, or of the next one there is."""
        probe.seek(tp, offset)
        got = await probe.getmany(tp, timeout_ms=max(1000, 4 * self.config.fetch_max_wait_ms), max_records=1)
        records = got.get(tp) or []
        return int(records[0].timestamp) if records else None

    async def _load(self) -> dict[int, Plan]:
        """This node's plans in the replay topic, the last of each partition's."""
        found: dict[int, Plan] = {}
        prefix = f"{self.ident}#".encode()
        async with self._plain() as reading:
            await reading.topics()
            parts = [TopicPartition(self.topic, p) for p in reading.partitions_for_topic(self.topic) or ()]
            if not parts:
                return found
            reading.assign(parts)
            await reading.seek_to_beginning(*parts)
            ends, idle = await reading.end_offsets(parts), 0
            while idle < 2:  # to the end offsets, then one empty fetch (a broker may under-report them)
                got = await reading.getmany(timeout_ms=max(200, 4 * self.config.fetch_max_wait_ms))
                for record in (r for records in got.values() for r in records):
                    if record.key is not None and record.key.startswith(prefix) and record.value:
                        body = json.loads(record.value)
                        plan = Plan(body["value"], body["from"], body["until"], body["started_at"])
                        found[int(body["partition"])] = plan
                caught_up = all([await reading.position(tp) >= ends[tp] for tp in parts])
                idle = idle + 1 if caught_up and not got else 0
        return found

    @contextlib.asynccontextmanager
    async def _plain(self) -> AsyncIterator[AIOKafkaConsumer]:
        """A consumer of no group: the bridge's own positions and commits stay as they are."""
        consumer = AIOKafkaConsumer(
            **security.kafka(self.config),
            bootstrap_servers=self.config.bootstrap_servers,
            client_id=f"resonance-bridge-{self.config.node}-replay",
            enable_auto_commit=False,
            fetch_max_wait_ms=self.config.fetch_max_wait_ms,
            request_timeout_ms=self.config.request_timeout_ms,
        )
        await consumer.start()
        try:
            yield consumer
        finally:
            await consumer.stop()

    # --- what the heartbeat says ----------------------------------------------------------------

    def report(self, reader: KafkaReader | None) -> dict[str, Any] | None:
        if not self.value:
            return None
        said: dict[str, Any] = {"value": self.value, "error": self.error}
        if not self.plans or reader is None:
            return said
        partitions, replayed, done = {}, 0, True
        for p, plan in sorted(self.plans.items()):
            done_up_to = reader.window.committable.get((self.config.topic, p), plan.start)
            at = max(done_up_to, self.reached.get(p, 0))
            partitions[str(p)] = {"from": plan.start, "until": plan.until, "at": at}
            replayed += max(0, min(at, plan.until) - plan.start)
            done = done and at >= plan.until
        if done and self.completed_at is None:
            self.completed_at = iso(time.time())
        said |= {"partitions": partitions, "replayed": replayed, "completed_at": self.completed_at}
        said["started_at"] = min(plan.started_at for plan in self.plans.values())
        return said
