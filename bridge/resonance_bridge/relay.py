"""The relay's rules, sans I/O: what to do with a fetched batch, with an ack, and when the node is stuck.

In the shape of the websockets sans-I/O protocol: the Session feeds events in (a batch fetched, a
frame written, a dead letter stored, an ack read, the time) and does what the answers say; the
Relay owns the in-flight Window across sessions and never awaits, so every rule is tested without
sockets (tests/test_relay_rules.py) and no cancellation can fall between two of its steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import codec
from .batches import Undecodable
from .codec import Message, Rejected
from .window import Entry, Partition, Window

# What the log says of an ack that settles nothing, by reason (resonance_ack_mismatches_total).
MISMATCH_LOG = {
    "no_original_type": "an ack without original_type or id cannot be attributed; nothing committed",
    "unknown_id": "an ack's id matches no message in flight; nothing committed",
    "type_mismatch": "an ack's id and original_type name different messages; nothing committed",
    "not_in_flight": "an ack's original_type matches no message in flight; nothing committed",
}
# A fetched batch goes to the node in writes of about this many bytes: one system call each, and
# the socket's flow control between them.
WRITE_BYTES = 256 * 1024


class Record(Protocol):
    """What the relay reads of a Kafka record (aiokafka's ConsumerRecord has these); its topic and
    partition are the batch's key."""

    offset: int
    timestamp: int  # ms; -1: none
    value: bytes | None


@dataclass(slots=True)
class Outbound:
    """What to do with one fetched batch: send the frames in order, store the dead letters."""

    frames: list[tuple[bytes, Entry]] = field(default_factory=list)
    # (why, entry, headers naming the source): records that are not messages, batches that do not decode
    dead_letters: list[tuple[Rejected, Entry, dict[str, str]]] = field(default_factory=list)
    unknown: int = 0  # well-formed messages of a type the bridge does not know


@dataclass(slots=True)  # one per ack: not frozen, like codec.Message
class AckOutcome:
    counted: bool  # an ack of a message, not of one of our own replies
    settled: Entry | None = None
    mismatch: str | None = None  # why it settled nothing: resonance_ack_mismatches_total{reason}


class Relay:
    def __init__(self, ack_mode: str, max_in_flight: int, max_frame_bytes: int, ack_timeout_s: float):
        self.acks = ack_mode == "ack"
        self.max_in_flight = max_in_flight
        self.max_frame_bytes = max_frame_bytes
        self.ack_timeout_s = ack_timeout_s
        self.window = Window()
        self.last_progress = 0.0  # listening time of the last ack that settled a record
        # The ack watchdog runs on a clock that stops while the bridge is not reading the node's
        # frames (waiting for Kafka to take an inbound record): acks unread are not acks missing.
        self._deaf_total = 0.0
        self._deaf_since: float | None = None

    # --- time ---------------------------------------------------------------------------------

    def listening(self, now: float) -> float:
        """`now` (monotonic) on the listening clock."""
        deaf = self._deaf_total + (now - self._deaf_since if self._deaf_since is not None else 0.0)
        return now - deaf

    def deaf(self, now: float) -> None:
        if self._deaf_since is None:
            self._deaf_since = now

    def hearing(self, now: float) -> None:
        if self._deaf_since is not None:
            self._deaf_total += now - self._deaf_since
            self._deaf_since = None

    @property
    def is_deaf(self) -> bool:
        return self._deaf_since is not None

    # --- outbound -----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return self.window.pending

    @property
    def room(self) -> int:
        return self.max_in_flight - self.window.pending

    def admit(
        self,
        batch: Mapping[tuple[str, int], Iterable[Record]],
        now: float,
        undecodable: Iterable[Undecodable] = (),
    ) -> Outbound:
        """Track every record of a fetched batch, then say what to do with each. Called right after
        the fetch returns, with no await between: no record is ever fetched and unaccounted for. A
        batch that cannot be decoded is tracked as one entry up to its last offset, and dead-lettered."""
        out = Outbound()
        sent_at = self.listening(now)
        track, expect, frames = self.window.track, self.window.expect_ack, out.frames
        for (topic, partition), records in batch.items():
            key = (topic, partition)
            for record in records:
                entry = track(key, record.offset)
                if record.timestamp > 0:
                    entry.timestamp = record.timestamp / 1000
                decoded = codec.decode(record.value or b"", self.max_frame_bytes)
                if isinstance(decoded, Rejected):
                    source = {"resonance-source": f"{topic}/{partition}/{record.offset}"}
                    out.dead_letters.append((decoded, entry, source))
                    continue
                if not decoded.known:
                    out.unknown += 1
                if self.acks:
                    expect(entry, decoded.type, decoded.id, sent_at)
                frames.append((decoded.raw, entry))
        for bad in undecodable:  # after its partition's records: they all precede it
            entry = self.window.track((bad.topic, bad.partition), bad.offset, bad.last)
            detail = f"the batch at offsets {bad.first}-{bad.last} cannot be decoded: {bad.error}"
            out.dead_letters.append((Rejected("undecodable_batch", detail, b""), entry, bad.headers()))
        return out

    def written(self, entry: Entry) -> None:
        """A frame went out; in ack mode `send` that is all the record needed."""
        if not self.acks:
            self.window.finish(entry)

    def dead_lettered(self, entry: Entry) -> None:
        """Kafka stored the record in the dead-letter topic: commits may pass it."""
        self.window.finish(entry)

    def control(self, body: dict[str, Any], now: float) -> bytes:
        """A message the bridge originates (heartbeat, frequency_sync), tracked so that its ack is
        not taken for a record's."""
        if self.acks:
            self.window.control(body["type"], None, self.listening(now))
        return codec.encode(body)

    # --- acks ---------------------------------------------------------------------------------

    def on_ack(self, message: Message, now: float) -> AckOutcome:
        return self.acked(codec.ack_of(message), now)

    def acked(self, ack: codec.Ack, now: float) -> AckOutcome:
        original, msg_id = ack
        if original in codec.REPLY_TYPES:
            return AckOutcome(False)  # the node acking our own ack or error (the guide's sample node)
        if not self.acks:
            return AckOutcome(True)  # ack mode `send`: nothing waits for acks
        match = self.window.match(original, msg_id)
        if match.entry is None:
            return AckOutcome(True, None, match.mismatch)
        if match.entry.partition is not None:
            self.last_progress = self.listening(now)
        self.window.finish(match.entry)
        for entry in match.copies:
            self.window.finish(entry)
        return AckOutcome(True, match.entry)

    def stuck(self, now: float) -> bool:
        """True when records await acks and the node acked none for the ack timeout (of listening
        time): a slow but steady node acks often enough, a silent one does not."""
        clock = self.listening(now)
        self.window.expire_control(clock - self.ack_timeout_s)
        oldest = self.window.oldest_unacked_record()
        if oldest is None:
            return False
        return clock - max(self.last_progress, oldest.sent_at) > self.ack_timeout_s

    # --- across connections and rebalances -----------------------------------------------------

    def rewind(self, now: float) -> dict[Partition, int]:
        """The session ended: what it had in flight is forgotten and fetched again from these offsets."""
        self.hearing(now)
        return self.window.rewind()

    def revoke(self, partitions: set[Partition]) -> None:
        self.window.revoke(partitions)


def chunks(
    frames: list[tuple[bytes, Entry]], limit: int = WRITE_BYTES
) -> Iterator[list[tuple[bytes, Entry]]]:
    """The frames in order, in runs of about `limit` bytes (at least one frame each)."""
    run: list[tuple[bytes, Entry]] = []
    size = 0
    for item in frames:
        run.append(item)
        size += len(item[0])
        if size >= limit:
            yield run
            run, size = [], 0
    if run:
        yield run
