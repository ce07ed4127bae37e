"""Every record fetched from the node's topic, from the fetch until it is done, and what may be committed.

Sans I/O. A record is *tracked* the moment a fetch hands it over and *done* once the node acked it,
Kafka stored it as a dead letter, or (ack mode `send`) its frame was written. A partition's
committable offset only moves past a contiguous run of done records, and a rewind resumes each
partition at its first record that is not done: whatever happens between fetch and done (an
exception, a cancelled session, a revoked partition), the fetch position never runs ahead of what
is accounted for, and a commit never passes a record that was neither acked nor dead-lettered.

Acks are attributed by the documented rules (README, "Delivery, in detail"):
  - an ack with an `id` settles the oldest message in flight that had that id (and, if the ack
    names an `original_type`, that type), with every other copy of the same record in flight (one
    fetched again after a rebalance: the node has the record); no such message: `unknown_id` /
    `type_mismatch`;
  - an ack without an id settles the oldest message in flight of its `original_type` (nodes ack in
    order, as the guide's sample node does); no original_type: `no_original_type`; no message of
    that type in flight: `not_in_flight`.
Anything else settles nothing: an ack that cannot be attributed never commits a record.

Messages the bridge originates (heartbeat, frequency_sync) are tracked too, so that the node's acks
for them are not taken for a record's; they carry no offset and never hold back a commit.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import islice

Partition = tuple[str, int]


@dataclass(slots=True, eq=False)
class Entry:
    partition: Partition | None  # None: a message the bridge originated, or its partition was revoked
    offset: int = -1
    last: int = -1  # an undecodable batch's last offset: done, commits move past the whole batch
    source: tuple[Partition, int] | None = None  # the record, whichever copy of it this is
    type: str = ""
    id: str | None = None
    sent_at: float = 0.0
    timestamp: float = 0.0  # the record's Kafka timestamp (Unix seconds; 0: none), for latency
    control: bool = False  # a message the bridge originated
    awaits_ack: bool = False
    done: bool = False
    live: bool = True  # False once a rewind or revoke forgot it: finishing it then changes nothing


@dataclass(slots=True)
class Match:
    entry: Entry | None
    mismatch: str | None = None  # why no entry was settled: a metric label
    copies: tuple[Entry, ...] = ()  # other copies of the record, settled with it


@dataclass
class Window:
    fifo: deque[Entry] = field(default_factory=deque)  # messages awaiting an ack, in send order
    by_id: dict[str, deque[Entry]] = field(default_factory=dict)
    partitions: dict[Partition, deque[Entry]] = field(default_factory=dict)  # tracked, offset order
    committable: dict[Partition, int] = field(default_factory=dict)  # next offset to commit
    committed: dict[Partition, int] = field(default_factory=dict)  # last offsets Kafka confirmed
    pending: int = 0  # tracked records not done: the backpressure measure

    def track(self, partition: Partition, offset: int, last: int = -1) -> Entry:
        """A record a fetch just handed over (or a batch, up to `last`): from now on it holds back
        commits until done."""
        entry = Entry(partition, offset, last, (partition, offset))
        self.partitions.setdefault(partition, deque()).append(entry)
        self.pending += 1
        return entry

    def expect_ack(self, entry: Entry, mtype: str, msg_id: str | None, now: float) -> None:
        """The entry's frame is (about to be) sent and the node will ack it."""
        entry.type, entry.id, entry.sent_at, entry.awaits_ack = mtype, msg_id, now, True
        self.fifo.append(entry)
        if msg_id is not None:
            self.by_id.setdefault(msg_id, deque()).append(entry)

    def control(self, mtype: str, msg_id: str | None, now: float) -> Entry:
        """A message the bridge originated: its ack must not be taken for a record's."""
        entry = Entry(None, control=True)
        self.expect_ack(entry, mtype, msg_id, now)
        return entry

    def finish(self, entry: Entry) -> None:
        """The entry is done; commits move past it once every record before it is done too."""
        if entry.done or not entry.live:
            return
        entry.done = True
        if entry.id is not None:
            self._forget_id(entry)
        if entry.partition is not None:
            self.pending -= 1
            queue = self.partitions[entry.partition]
            while queue and queue[0].done:
                head = queue.popleft()
                self.committable[entry.partition] = max(head.offset, head.last) + 1
        self._drop_done_head()

    def match(self, original_type: str | None, msg_id: str | None) -> Match:
        """The message an ack settles under the rules above; the caller finishes it."""
        if msg_id is not None:
            candidates = self.by_id.get(msg_id)
            if not candidates:
                return Match(None, "unknown_id")
            # A copy on a partition still ours first: settling it is what lets commits move.
            entry = next((e for e in candidates if e.partition is not None), candidates[0])
            if original_type is not None and original_type != entry.type:
                return Match(None, "type_mismatch")
            copies = tuple(e for e in candidates if e is not entry and e.source == entry.source and e.source)
            return Match(entry, copies=copies)
        if not original_type:
            return Match(None, "no_original_type")
        self._drop_done_head()
        for position, entry in enumerate(self.fifo):
            if not entry.done and entry.type == original_type:
                # Control messages sent before this one were evidently not acked by this node.
                skipped = [e for e in islice(self.fifo, position) if e.control and not e.done]
                for older in skipped:
                    self.finish(older)
                return Match(entry)
        return Match(None, "not_in_flight")

    def _forget_id(self, entry: Entry) -> None:
        assert entry.id is not None
        same = self.by_id.get(entry.id)
        if same is not None:
            if entry in same:
                same.remove(entry)
            if not same:
                del self.by_id[entry.id]

    def _drop_done_head(self) -> None:
        while self.fifo and (self.fifo[0].done or not self.fifo[0].live):
            self.fifo.popleft()

    def oldest_unacked_record(self) -> Entry | None:
        """The earliest-sent record (not control message) still awaiting its ack."""
        self._drop_done_head()
        return next((e for e in self.fifo if e.partition is not None and not e.done), None)

    def expire_control(self, older_than: float) -> None:
        """Forget control messages the node never acked, so they do not pile up."""
        expired = []
        for entry in self.fifo:
            if entry.sent_at >= older_than:
                break
            if entry.control and not entry.done:
                expired.append(entry)
        for entry in expired:
            self.finish(entry)
        self._drop_done_head()

    def due_commits(self) -> dict[Partition, int]:
        """Offsets that moved past what Kafka last confirmed: what to commit now."""
        return {p: o for p, o in self.committable.items() if self.committed.get(p) != o}

    def confirmed(self, offsets: dict[Partition, int]) -> None:
        """Kafka stored these commits (marked only then: a commit that failed or was cancelled is retried)."""
        for partition, offset in offsets.items():
            if partition in self.committable:
                self.committed[partition] = offset

    def revoke(self, partitions: set[Partition]) -> None:
        """Partitions moved to another consumer: their records are its business now. Their messages
        stay in the ack order (so the node's acks for them are not taken for others') but commit nothing."""
        for partition in partitions:
            for entry in self.partitions.pop(partition, deque()):
                if not entry.done:
                    self.pending -= 1
                    entry.partition = None
                    entry.live = entry.awaits_ack  # tracked but never sent: nothing to ack
            self.committable.pop(partition, None)
            self.committed.pop(partition, None)

    def restart(self, partition: Partition, offset: int) -> None:
        """The partition is delivered again from `offset` (a replay, with nothing of it in flight):
        the next commit moves back there, and commits go on from there."""
        self.partitions.pop(partition, None)
        self.committable[partition] = offset
        self.committed.pop(partition, None)

    def rewind(self) -> dict[Partition, int]:
        """The connection is gone: forget everything in flight and return, per partition, the offset
        to resume from: the first record not done, or the next after the last done one."""
        resume = dict(self.committable)
        for partition, queue in self.partitions.items():
            if queue:
                resume[partition] = queue[0].offset
        for queue in self.partitions.values():
            for entry in queue:
                entry.live = False
            queue.clear()
        for entry in self.fifo:
            entry.live = False
        self.fifo.clear()
        self.by_id.clear()
        self.pending = 0
        return resume
