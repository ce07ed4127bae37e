"""The outbound in-flight window: which sent records the node has acknowledged, and what may be committed.

Sans I/O. The node acks in the order it received messages (the guide's sample node does exactly
that, with no id), so an ack is matched to the oldest unacknowledged message of its
`original_type`, or by `id` when the ack carries one the message had. A partition's committable
offset only moves past a contiguous run of acknowledged records: committing never passes an
unacknowledged record, so a restart redelivers it (at-least-once).

Messages the bridge originates (heartbeat, frequency_sync) are tracked too, so that the node's
acks for them are not mistaken for acks of records; they carry no offset and never hold back a commit.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import islice

Partition = tuple[str, int]


@dataclass(slots=True, eq=False)
class Entry:
    type: str
    id: str | None
    sent_at: float
    partition: Partition | None  # None: a message the bridge originated, or its partition was revoked
    offset: int = -1
    acked: bool = False


@dataclass(slots=True)
class AckResult:
    entry: Entry | None
    mismatched: bool = False  # no pending message had the ack's original_type; the oldest was taken


@dataclass
class Window:
    fifo: deque[Entry] = field(default_factory=deque)  # send order, for matching acks
    by_id: dict[str, Entry] = field(default_factory=dict)
    partitions: dict[Partition, deque[Entry]] = field(default_factory=dict)  # offset order
    committable: dict[Partition, int] = field(default_factory=dict)  # next offset to commit
    committed: dict[Partition, int] = field(default_factory=dict)  # last handed out by take_commits
    pending: int = 0  # unacknowledged records (not control messages): the backpressure measure

    def sent(
        self, mtype: str, msg_id: str | None, now: float, partition: Partition | None = None, offset: int = -1
    ) -> Entry:
        entry = Entry(mtype, msg_id, now, partition, offset)
        self.fifo.append(entry)
        if msg_id is not None:
            self.by_id[msg_id] = entry
        if partition is not None:
            self.partitions.setdefault(partition, deque()).append(entry)
            self.pending += 1
        return entry

    def done(self, partition: Partition, offset: int) -> None:
        """A record that needs no ack (dead-lettered, or ack mode `send`) at the partition's head."""
        queue = self.partitions.get(partition)
        if not queue:
            self.committable[partition] = offset + 1
        else:  # rare: behind records still in flight; commit it with them
            entry = Entry("", None, 0.0, partition, offset, acked=True)
            queue.append(entry)

    def ack(self, original_type: str | None, msg_id: str | None) -> AckResult:
        entry = self.by_id.pop(msg_id, None) if msg_id is not None else None
        mismatched = False
        if entry is None or entry.acked:
            entry, mismatched = self._match_in_order(original_type)
            if entry is None:
                return AckResult(None)
        self._settle(entry)
        return AckResult(entry, mismatched)

    def _match_in_order(self, original_type: str | None) -> tuple[Entry | None, bool]:
        self._drop_acked_head()
        for position, entry in enumerate(self.fifo):
            if not entry.acked and (original_type is None or entry.type == original_type):
                # Control messages sent before this one were evidently not acked by this node.
                for older in islice(self.fifo, position):
                    if older.partition is None and not older.acked:
                        older.acked = True
                return entry, False
        oldest = next((e for e in self.fifo if not e.acked), None)
        return oldest, oldest is not None

    def _settle(self, entry: Entry) -> None:
        entry.acked = True
        if entry.id is not None:
            self.by_id.pop(entry.id, None)
        if entry.partition is not None:
            self.pending -= 1
            queue = self.partitions[entry.partition]
            while queue and queue[0].acked:
                self.committable[entry.partition] = queue.popleft().offset + 1
        self._drop_acked_head()

    def _drop_acked_head(self) -> None:
        while self.fifo and self.fifo[0].acked:
            self.fifo.popleft()

    def oldest_unacked(self) -> Entry | None:
        self._drop_acked_head()
        return self.fifo[0] if self.fifo else None

    def expire_control(self, older_than: float) -> None:
        """Forget control messages the node never acked, so they do not pile up."""
        for entry in self.fifo:
            if entry.partition is None and not entry.acked and entry.sent_at < older_than:
                entry.acked = True
        self._drop_acked_head()

    def take_commits(self) -> dict[Partition, int]:
        """Offsets that moved since the last call: what to commit now."""
        moved = {p: o for p, o in self.committable.items() if self.committed.get(p) != o}
        self.committed.update(moved)
        return moved

    def revoke(self, partitions: set[Partition]) -> None:
        """Partitions moved to another consumer: their acks no longer commit anything here."""
        for partition in partitions:
            for entry in self.partitions.pop(partition, deque()):
                if not entry.acked:
                    entry.partition = None
                    self.pending -= 1
            self.committable.pop(partition, None)
            self.committed.pop(partition, None)

    def rewind(self) -> dict[Partition, int]:
        """The connection is gone: forget everything in flight and return, per partition, the
        offset to resume from (the first unacknowledged record)."""
        resume = {p: q[0].offset for p, q in self.partitions.items() if q}
        for queue in self.partitions.values():
            queue.clear()
        self.fifo.clear()
        self.by_id.clear()
        self.pending = 0
        return resume
