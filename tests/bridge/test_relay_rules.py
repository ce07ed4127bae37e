"""The relay's rules without sockets: the codec never raises, acks are attributed only as the README
documents, and for any interleaving of fetch, send, dead letter, ack (well-formed or not), commit,
rewind (a session cancelled at any await) and revoke, the committed offset never passes a record
that was neither acked nor dead-lettered, and the fetch position never runs ahead of what is tracked."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from resonance_bridge import codec, kafka
from resonance_bridge.batches import Undecodable
from resonance_bridge.codec import Message, Rejected
from resonance_bridge.config import load
from resonance_bridge.relay import Relay
from resonance_bridge.window import Entry

TOPIC = "node"
P = (TOPIC, 0)


@dataclass
class Rec:
    """A Kafka record as aiokafka hands it over (the fields the relay reads)."""

    offset: int
    value: bytes | None
    topic: str = TOPIC
    partition: int = 0
    timestamp: int = -1


def message(mtype: str, seq: int, msg_id: str | None = None) -> bytes:
    body: dict[str, Any] = {"type": mtype, "data": {"seq": seq}, "event_type": "push"}
    if msg_id is not None:
        body["id"] = msg_id
    return json.dumps(body).encode()


def ack(**fields: Any) -> Message:
    raw = json.dumps({"type": "ack", **fields}).encode()
    decoded = codec.decode(raw, 1 << 20)
    assert isinstance(decoded, Message)
    return decoded


def relay(max_in_flight: int = 100, ack_mode: str = "ack", timeout: float = 30.0) -> Relay:
    return Relay(ack_mode, max_in_flight, 1 << 20, timeout)


def admit(r: Relay, *values: bytes | None, start: int = 0, now: float = 0.0) -> list[Entry]:
    out = r.admit({P: [Rec(start + i, v) for i, v in enumerate(values)]}, now)
    return [entry for _, entry in out.frames]


# --- the codec ------------------------------------------------------------------------------------

NASTY = [
    b"[" * 100_000,
    b'{"type": "state_update", "data": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"type": ' + b"[" * 800 + b"]" * 800 + b"}",
    b'{"type": "state_update", "data": {}, "id": ' + b"9" * 5000 + b"}",
    b'{"type": "' + b"x" * 5000 + b'"}',
    b"\xed\xa0\x80",  # a UTF-8-encoded surrogate: not UTF-8
    b'{"type": "\\ud800"}',  # a lone surrogate escape: valid JSON, not encodable text
    b'{"type": "state_update", "data": {}, "id": "\\udc00"}',  # an id that is no text either
    b"",
    b"\x00",
    b"NaN",
    b'{"type": "state_update", "data": {"x": NaN}}',
]


@pytest.mark.parametrize("payload", NASTY)
def test_codec_never_raises_on_hostile_payloads(payload: bytes) -> None:
    for decoded in (codec.decode(payload, 1 << 20), codec.decode_frame(payload, True, 1 << 20)):
        assert isinstance(decoded, Message | Rejected)
        if isinstance(decoded, Rejected):
            assert decoded.raw == payload and len(decoded.detail) < 300


def test_codec_names_deep_nesting_and_long_types() -> None:
    deep = codec.decode(b"[" * 100_000, 1 << 20)
    assert isinstance(deep, Rejected) and deep.reason == "too_deep"
    long = codec.decode(b'{"type": "' + b"x" * 5000 + b'"}', 1 << 20)
    assert isinstance(long, Rejected) and long.reason == "type_too_long"
    nested = codec.decode(b'{"type": ' + b"[" * 800 + b"]" * 800 + b"}", 1 << 20)
    assert isinstance(nested, Rejected) and nested.reason == "type_not_string"
    assert nested.detail == "field 'type' is a JSON array: it must be a string"


def test_invalid_utf8_text_frame_is_rejected_not_raised() -> None:
    decoded = codec.decode_frame(b'{"type": "state_update", "data": {"x": "\xff"}}', True, 1 << 20)
    assert isinstance(decoded, Rejected) and decoded.reason == "not_utf8"


any_text = st.text(st.characters(exclude_categories=()), max_size=20)  # lone surrogates included
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=30,
)


def by_json_only(raw: bytes) -> Message | Rejected:
    """The codec's reference path: json alone, orjson's fast path refused."""

    def refuse(_: bytes) -> None:
        raise orjson.JSONDecodeError("refused", "", 0)

    with mock.patch.object(orjson, "loads", refuse):  # the module codec calls
        return codec.decode(raw, 1 << 20)


@pytest.mark.parametrize(
    "payload", [*NASTY, b'{"type": "state_update", "data": {"x": 1e400}}', b"\xef\xbb\xbf{}"]
)
def test_the_fast_path_decides_as_json_does_on_hostile_payloads(payload: bytes) -> None:
    assert codec.decode(payload, 1 << 20) == by_json_only(payload)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["type", "id", "data", "original_type", "x"]), json_values) | st.binary()
)
def test_the_fast_path_decides_as_json_does(body: dict[str, Any] | bytes) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    fast, reference = codec.decode(raw, 1 << 20), by_json_only(raw)
    if isinstance(reference, Message) and reference.body != reference.body:  # NaN inside: never equal
        assert isinstance(fast, Message) and (fast.type, fast.id) == (reference.type, reference.id)
    else:
        assert fast == reference


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_codec_never_raises_on_any_bytes(payload: bytes) -> None:
    assert isinstance(codec.decode(payload, 256), Message | Rejected)
    assert isinstance(codec.decode_frame(payload, True, 256), Message | Rejected)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["type", "id", "data", "original_type", "x"]), json_values))
def test_codec_never_raises_on_any_json_object(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    decoded = codec.decode(raw, 1 << 20)
    assert isinstance(decoded, Message | Rejected)
    # What the bridge derives from a message must not raise either: its headers, its ack, its error.
    config = load(
        {
            "RESONANCE_ENDPOINT": "ws://n:1",
            "RESONANCE_TOPIC": "t",
            "RESONANCE_ANCHOR": "A",
            "KAFKA_BOOTSTRAP_SERVERS": "k:1",
        }
    )
    if isinstance(decoded, Message):
        kafka.headers(config, **{"resonance-type": decoded.type})
        codec.encode(codec.ack(decoded.type, decoded.id))
        if decoded.type == "ack":
            relay().on_ack(decoded, 0.0)  # nor does attributing whatever it says
    else:
        kafka.dead_letter(config, decoded, "inbound")
        codec.encode(codec.error(decoded))


# --- ack attribution --------------------------------------------------------------------------------


def test_acks_in_order_commit_contiguous_runs_only() -> None:
    r = relay()
    admit(r, message("state_update", 0), message("state_update", 1), message("state_update", 2))
    assert r.pending == 3 and r.window.due_commits() == {}
    assert r.on_ack(ack(original_type="state_update"), 0).settled is not None
    assert r.window.due_commits() == {P: 1}
    r.on_ack(ack(original_type="state_update"), 0)
    r.on_ack(ack(original_type="state_update"), 0)
    assert r.window.due_commits() == {P: 3} and r.pending == 0


def test_acks_by_id_out_of_order() -> None:
    r = relay()
    admit(r, message("state_update", 0, "a"), message("state_update", 1, "b"))
    assert r.on_ack(ack(original_type="state_update", id="b"), 0).settled is not None
    assert r.window.due_commits() == {}  # offset 0 still unacked: commit may not pass it
    r.on_ack(ack(id="a"), 0)  # an id alone identifies the message
    assert r.window.due_commits() == {P: 2}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, "no_original_type"),
        ({"original_type": None}, "no_original_type"),
        ({"original_type": ["state_update"]}, "no_original_type"),
        ({"original_type": {"a": 1}}, "no_original_type"),
        ({"original_type": 7}, "no_original_type"),
        ({"original_type": "state_update", "id": "nope"}, "unknown_id"),
        ({"original_type": "repository_event", "id": "a"}, "type_mismatch"),
        ({"original_type": "repository_event"}, "not_in_flight"),
        ({"id": "nope"}, "unknown_id"),
    ],
)
def test_an_ack_that_cannot_be_attributed_settles_nothing(fields: dict[str, Any], reason: str) -> None:
    r = relay()
    admit(r, message("state_update", 0, "a"))
    outcome = r.on_ack(ack(**fields), 0)
    assert (outcome.counted, outcome.settled, outcome.mismatch) == (True, None, reason)
    assert r.pending == 1 and r.window.due_commits() == {}


def test_acks_of_our_own_replies_are_not_counted() -> None:
    r = relay()
    admit(r, message("state_update", 0))
    assert not r.on_ack(ack(original_type="ack"), 0).counted
    assert not r.on_ack(ack(original_type="error"), 0).counted
    assert r.pending == 1


def test_control_messages_never_block_commits_nor_take_a_records_ack() -> None:
    r = relay()
    r.control(codec.frequency_sync("A", 0.043, 0.5), 0)
    admit(r, message("state_update", 0))
    r.control(codec.heartbeat("A", 0.043, 0.5), 0)
    admit(r, message("state_update", 1), start=1)
    r.control(codec.heartbeat("A", 0.043, 0.5), 0)
    # A node that acks records but never control messages: those before an acked record are
    # evidently skipped; the trailing heartbeat expires after the ack timeout.
    r.on_ack(ack(original_type="state_update"), 0)
    r.on_ack(ack(original_type="state_update"), 0)
    assert r.window.due_commits() == {P: 2}
    assert len(r.window.fifo) == 1
    assert not r.stuck(100.0)
    assert not r.window.fifo


# --- dead letters, rewinds, revokes -----------------------------------------------------------------


def test_a_poison_record_mid_batch_holds_commits_until_stored() -> None:
    r = relay()
    out = r.admit({P: [Rec(0, message("state_update", 0)), Rec(1, b"[" * 5000), Rec(2, message("x", 2))]}, 0)
    assert [e.offset for _, e in out.frames] == [0, 2] and out.unknown == 1
    [(rejected, poison, source)] = out.dead_letters
    assert (rejected.reason, source) == ("too_deep", {"resonance-source": f"{TOPIC}/0/1"})
    r.on_ack(ack(original_type="state_update"), 0)
    r.on_ack(ack(original_type="x"), 0)
    assert r.window.due_commits() == {P: 1}  # not past the poison record until Kafka stored it
    r.dead_lettered(poison)
    assert r.window.due_commits() == {P: 3} and r.pending == 0


def test_rewind_resumes_at_the_first_record_not_done() -> None:
    r = relay()
    out = r.admit(
        {P: [Rec(0, message("state_update", 0)), Rec(1, b"{bad"), Rec(2, message("state_update", 2))]}, 0
    )
    r.on_ack(ack(original_type="state_update"), 0)
    # The session is cancelled while the dead letter is being stored, before the third is sent.
    assert r.rewind(0) == {P: 1} and r.pending == 0
    r.dead_lettered(out.dead_letters[0][1])  # a store finishing after the rewind changes nothing
    assert r.window.due_commits() == {P: 1}


def test_rewind_with_nothing_in_flight_resumes_after_the_last_done() -> None:
    r = relay()
    admit(r, message("state_update", 0))
    r.on_ack(ack(original_type="state_update"), 0)
    assert r.rewind(0) == {P: 1}


def test_revoked_partitions_acks_are_matched_but_commit_nothing() -> None:
    r = relay()
    admit(r, message("state_update", 0))
    r.revoke({P})
    assert r.pending == 0
    assert r.on_ack(ack(original_type="state_update"), 0).settled is not None  # order kept
    assert r.window.due_commits() == {}


def test_ack_mode_send_is_done_once_written() -> None:
    r = relay(ack_mode="send")
    [entry] = admit(r, message("state_update", 0))
    assert r.window.due_commits() == {}
    r.written(entry)
    assert r.window.due_commits() == {P: 1}
    outcome = r.on_ack(ack(original_type="state_update"), 0)  # counted; nothing waits for it
    assert (outcome.counted, outcome.settled, outcome.mismatch) == (True, None, None)


# --- when the node is stuck ---------------------------------------------------------------------------


def test_a_slow_but_steady_node_is_not_stuck() -> None:
    r = relay(timeout=2.0)
    admit(r, *(message("state_update", i) for i in range(100)), now=0.0)
    for step in range(100):  # one ack every 0.5 s: the oldest waits 50 s, acks never stop
        now = step * 0.5
        assert not r.stuck(now)
        r.on_ack(ack(original_type="state_update"), now)
    assert r.pending == 0


def test_a_silent_node_is_stuck_after_the_timeout_of_listening_time() -> None:
    r = relay(timeout=2.0)
    admit(r, message("state_update", 0), now=10.0)
    assert not r.stuck(11.9)
    r.deaf(11.0)  # waiting for Kafka to take an inbound record: acks are not being read
    assert not r.stuck(100.0)
    r.hearing(100.0)
    assert not r.stuck(100.5)  # 1.5 s of listening so far
    assert r.stuck(101.1)


def test_nothing_in_flight_is_never_stuck() -> None:
    r = relay(timeout=1.0)
    r.control(codec.heartbeat("A", 0.043, 0.5), 0)
    assert not r.stuck(1000.0)


# --- any interleaving ----------------------------------------------------------------------------------

TYPES = ("state_update", "repository_event")


class Interleavings(RuleBasedStateMachine):
    """A partition of records (some undecodable, some with ids), a consumer position and committed
    offset as Kafka keeps them, a node that acks what it received by the contract, and a session
    that may end between any two steps. `truth` is what the node really acked or Kafka really
    stored as a dead letter; the relay may commit nothing beyond it."""

    def __init__(self) -> None:
        super().__init__()
        self.relay = relay(max_in_flight=6)
        self.log: list[bytes] = []
        self.position = 0
        self.committed = 0
        self.truth: set[int] = set()
        self.unsent: list[Entry] = []  # admitted, frame not yet written
        self.received: list[Entry] = []  # what the node got on this connection, in order
        self.node_acked: set[int] = set()  # ids of entries the node acked on this connection
        self.dead: list[Entry] = []  # dead letters being stored
        self.batches: dict[int, int] = {}  # undecodable batches: first offset -> last
        self.held: Entry | None = None  # the reader pauses at an undecodable batch until stored

    @rule(
        kinds=st.lists(
            st.sampled_from(["a", "b", "ida", "idb", "bad", "deep", "batch"]), min_size=1, max_size=8
        )
    )
    def produce(self, kinds: list[str]) -> None:
        for kind in kinds:
            seq = len(self.log)
            if kind == "batch":  # three records in a batch that does not decode
                self.batches[seq] = seq + 2
                self.log += [b"", b"", b""]
                continue
            self.log.append(
                {
                    "a": message(TYPES[0], seq),
                    "b": message(TYPES[1], seq),
                    "ida": message(TYPES[0], seq, f"m{seq}"),
                    "idb": message(TYPES[1], seq, f"m{seq}"),
                    "bad": b"{not json",
                    "deep": b"[" * 3000,
                }[kind]
            )

    @precondition(lambda self: self.relay.room > 0 and self.position < len(self.log))
    @rule(n=st.integers(1, 6))
    def fetch(self, n: int) -> None:
        self._fetch(n)

    def _fetch(self, n: int) -> bool:
        if self.held is not None:  # reader.py: paused until the batch and all before it are done
            if self.relay.window.committable.get(P, -1) <= self.held.last:
                return False
            self.position, self.held = self.held.last + 1, None
        take = min(n, self.relay.room, len(self.log) - self.position)
        ends = [first for first in self.batches if self.position <= first < self.position + take]
        take = min(ends) - self.position if ends else take  # records before a bad batch come first
        records = [Rec(o, self.log[o]) for o in range(self.position, self.position + take)]
        self.position += take  # the consumer moved on: from here the relay must account for them
        bad = []
        if self.position in self.batches:
            last = self.batches[self.position]
            bad = [Undecodable(TOPIC, 0, self.position, self.position, last, "UnsupportedCodecError")]
        out = self.relay.admit({P: records}, 0.0, bad)
        if bad:
            self.held = out.dead_letters[-1][1]
        self.unsent += [entry for _, entry in out.frames]
        self.dead += [entry for _, entry, _ in out.dead_letters]
        return True

    @precondition(lambda self: self.unsent)
    @rule(n=st.integers(1, 6))
    def send(self, n: int) -> None:
        for entry in self.unsent[:n]:
            self.received.append(entry)
            self.relay.written(entry)
        del self.unsent[:n]

    @precondition(lambda self: self.dead)
    @rule(i=st.integers(0, 5))
    def dead_letter_stored(self, i: int) -> None:
        entry = self.dead.pop(i % len(self.dead))
        self.truth.update(range(entry.offset, max(entry.offset, entry.last) + 1))
        self.relay.dead_lettered(entry)

    def _unacked(self) -> list[Entry]:
        return [e for e in self.received if id(e) not in self.node_acked]

    @precondition(lambda self: any(id(e) not in self.node_acked for e in self.received))
    @rule(mtype=st.sampled_from(TYPES))
    def node_acks_in_order(self, mtype: str) -> None:
        """The guide's node: acks the oldest message of a type it received, without an id."""
        entry = next((e for e in self._unacked() if e.type == mtype), None)
        if entry is not None:
            self._check(self.relay.on_ack(ack(original_type=mtype), 0.0).settled, entry)

    @precondition(lambda self: any(e.id is not None for e in self._unacked()))
    @rule(i=st.integers(0, 10), with_type=st.booleans())
    def node_acks_by_id(self, i: int, with_type: bool) -> None:
        candidates = [e for e in self._unacked() if e.id is not None]
        entry = candidates[i % len(candidates)]
        fields: dict[str, Any] = {"id": entry.id}
        if with_type:
            fields["original_type"] = entry.type
        self._check(self.relay.on_ack(ack(**fields), 0.0).settled, entry)

    def _check(self, settled: Entry | None, entry: Entry) -> None:
        """The node acked `entry`: the relay must settle that record. A record fetched again after a
        rebalance is in flight twice; an ack by id settles every copy (the node has the record), an
        ack in order the oldest, which is the node's."""
        assert settled is not None and settled.offset == entry.offset
        self.truth.add(entry.offset)
        for copy in self.received + self.unsent:  # what the relay now counts as acked
            if copy.offset == entry.offset and copy.done:
                self.node_acked.add(id(copy))
        assert id(entry) in self.node_acked

    @rule(
        fields=st.sampled_from(
            [
                {},
                {"original_type": None},
                {"original_type": 3},
                {"original_type": ["state_update"]},
                {"original_type": "vibration"},
                {"id": "m-unknown"},
                {"original_type": "state_update", "id": "m-unknown"},
                {"original_type": "ack"},
            ]
        )
    )
    def garbage_ack(self, fields: dict[str, Any]) -> None:
        pending = self.relay.pending
        assert self.relay.on_ack(ack(**fields), 0.0).settled is None
        assert self.relay.pending == pending

    @precondition(lambda self: any(id(e) in self.node_acked and e.id for e in self.received))
    @rule()
    def ack_again_by_id(self) -> None:
        """A duplicate ack for a message already settled settles nothing else."""
        entry = next(e for e in self.received if id(e) in self.node_acked and e.id)
        settled = self.relay.on_ack(ack(id=entry.id), 0.0).settled
        if settled is not None:
            self._check(settled, entry)

    @rule(fails=st.booleans())
    def commit(self, fails: bool) -> None:
        due = self.relay.window.due_commits()
        if P in due and not fails:
            self.committed = due[P]
            self.relay.window.confirmed(due)

    @rule()
    def session_ends(self) -> None:
        """Cancelled between any two steps: what was unsent, unacked or being stored is forgotten."""
        resume = self.relay.rewind(0.0)
        if P in resume:
            self.position = resume[P]
        self.unsent, self.received, self.node_acked, self.dead = [], [], set(), []
        self.held = None  # reader.seek() resumes a held partition: the batch is met again

    @rule()
    def partition_revoked_and_reassigned(self) -> None:
        self.commit(fails=False)
        self.relay.revoke({P})
        self.position = self.committed  # a new assignment starts at the committed offset
        self.held = None
        # Frames already computed are still sent (duplicates); dead letters of it change nothing.

    @invariant()
    def commits_never_pass_a_record_not_acked_nor_dead_lettered(self) -> None:
        assert all(offset in self.truth for offset in range(self.committed))
        assert all(offset in self.truth for offset in range(self.relay.window.committable.get(P, 0)))

    @invariant()
    def every_record_fetched_is_accounted_for(self) -> None:
        tracked = {e.offset for e in self.relay.window.partitions.get(P, ())}
        done_up_to = self.relay.window.committable.get(P, self.committed)
        assert all(o in tracked or o < done_up_to for o in range(self.committed, self.position))
        assert self.relay.pending == sum(not e.done for e in self.relay.window.partitions.get(P, ()))

    def teardown(self) -> None:
        """And with a node that behaves, everything is eventually committed."""
        self.session_ends()
        for _ in range(len(self.log) + 2):
            while self.relay.room > 0 and self.position < len(self.log) and self._fetch(6):
                pass
            self.send(len(self.unsent))
            while self.dead:
                self.dead_letter_stored(0)
            for entry in self._unacked():
                self._check(self.relay.on_ack(ack(original_type=entry.type), 0.0).settled, entry)
            self.commit(fails=False)
        assert self.committed == len(self.log)


Interleavings.TestCase.settings = settings(
    max_examples=int(os.environ.get("RESONANCE_HYPOTHESIS_EXAMPLES", "300")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_any_interleaving_commits_nothing_unaccounted = Interleavings.TestCase
