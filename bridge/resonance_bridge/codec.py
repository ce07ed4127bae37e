"""The Resonance message protocol, sans I/O.

`decode` turns one payload (a Kafka record value or a WebSocket frame) into either a Message,
whose raw bytes are relayed unchanged, or a Rejected naming why it cannot be relayed. It never
raises, whatever the bytes: a payload that cannot be decoded is a Rejected to dead-letter, never
an exception that would end a session with records unaccounted for. The builders make the
messages the bridge itself originates, in the integration guide's shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

# Required fields per known type: what a consumer of that type cannot do without. Timestamps
# are not required: the guide's own test message ({"type": "heartbeat", "anchor": "TEST"}) has none.
_NUMBER = (int, float)
REQUIRED: dict[str, tuple[tuple[str, type | tuple[type, ...], str], ...]] = {
    "state_update": (("data", dict, "an object"),),
    "frequency_sync": (("frequency", _NUMBER, "a number"),),
    "repository_event": (("event_type", str, "a string"), ("data", dict, "an object")),
    "heartbeat": (("anchor", str, "a string"),),
    "ack": (),
    "error": (),
}
# JSON kinds by Python type, for messages that name what a field is without echoing it.
_KINDS: dict[type, str] = {int: "number", float: "number", list: "array", dict: "object"}
# Python's json parser gives up (RecursionError) near its recursion limit; this is what users are told.
_MAX_DEPTH = 900
# A type becomes a header, an ack's original_type and a log word: a sane length keeps all of them small.
MAX_TYPE_CHARS = 256
# Replies a node sends about our own replies; they must never be matched against records in flight.
REPLY_TYPES = frozenset({"ack", "error"})


# Not frozen: one is made for every record and every ack, and a frozen dataclass's __init__ sets each
# field through object.__setattr__ (0.6 us against 0.16 us).
@dataclass(slots=True)
class Message:
    type: str
    id: str | None
    body: dict[str, Any]
    raw: bytes
    known: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str  # stable, machine-readable: a metric label and a dead-letter header
    detail: str  # for a person: what is wrong and how to fix it
    raw: bytes
    original_type: str | None = None


def decode_frame(frame: bytes, text: bool, max_bytes: int) -> Message | Rejected:
    """Decode a WebSocket message, read undecoded so that invalid UTF-8 in a text frame is a
    dead letter and an error reply rather than a connection the WebSocket layer closes (1007)."""
    if not text:
        return Rejected("binary_frame", "binary frames are not supported: send JSON as a text frame", frame)
    return decode(frame, max_bytes)


def decode(raw: bytes, max_bytes: int) -> Message | Rejected:
    """Decode a Kafka record value (or a text frame's bytes)."""
    try:
        return _decode(raw, max_bytes)
    except Exception as exc:  # a bug here must cost one dead letter, not a stuck partition
        return Rejected("undecodable", f"payload could not be decoded ({type(exc).__name__})", raw)


def _decode(raw: bytes, max_bytes: int) -> Message | Rejected:
    if len(raw) > max_bytes:
        return Rejected("too_large", f"message of {len(raw)} bytes exceeds the {max_bytes}-byte limit", raw)
    try:
        # The fast path. orjson is stricter than json (no NaN, no integers past 64 bits, nesting
        # under 1024, UTF-8 without a BOM), never looser: what it refuses takes json's path below,
        # which decides, so both paths accept and reject exactly the same payloads.
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        return _check(body, raw)
    try:
        # Decode explicitly: json.loads(bytes) would also accept UTF-16/32, which is no WebSocket text.
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Rejected("not_utf8", "payload is not UTF-8 text: send JSON encoded as UTF-8", raw)
    return _parse(text, raw)


def _parse(text: str, raw: bytes) -> Message | Rejected:
    try:
        body = json.loads(text)
    except ValueError as exc:  # also integers over Python's 4,300-digit limit
        return Rejected("not_json", f"payload is not JSON ({exc}): send one JSON object per message", raw)
    except RecursionError:
        return Rejected(
            "too_deep",
            f"payload nests too deeply to parse (the limit is about {_MAX_DEPTH} levels): flatten it",
            raw,
        )
    return _check(body, raw)


def _check(body: Any, raw: bytes) -> Message | Rejected:
    if not isinstance(body, dict):
        kind = type(body).__name__
        return Rejected("not_object", f"payload is a JSON {kind}: send a JSON object with a 'type'", raw)
    mtype = body.get("type")
    if mtype is None:
        return Rejected("missing_type", 'field \'type\' is missing: add e.g. "type": "state_update"', raw)
    if not isinstance(mtype, str):
        # Named by its JSON kind, not echoed: the value may be huge or nested arbitrarily deep.
        kind = "a boolean" if isinstance(mtype, bool) else f"a JSON {_KINDS.get(type(mtype), 'value')}"
        return Rejected("type_not_string", f"field 'type' is {kind}: it must be a string", raw)
    if len(mtype) > MAX_TYPE_CHARS:
        return Rejected(
            "type_too_long", f"field 'type' has {len(mtype)} characters: use at most {MAX_TYPE_CHARS}", raw
        )
    if not mtype.isascii() and not _encodable(mtype):
        # Valid JSON ("\\ud800"), but not text: it could not become a header or a log line.
        return Rejected(
            "type_not_string",
            "field 'type' holds an unpaired surrogate escape: it must be valid Unicode",
            raw,
        )
    required = REQUIRED.get(mtype)
    for name, kinds, what in required or ():
        value = body.get(name)
        if not isinstance(value, kinds) or isinstance(value, bool):
            return Rejected(
                "missing_field", f"{mtype} needs field '{name}' as {what}: add it to the message", raw, mtype
            )
    return Message(mtype, _id(body.get("id")), body, raw, required is not None)


def _id(sent: Any) -> str | None:
    return str(sent) if isinstance(sent, (str, int)) and not isinstance(sent, bool) else None


QUICK_ACK_BYTES = 512  # an ack is ~60 bytes; a longer one takes decode()'s path, to the same answer
Ack = tuple[str | None, str | None]  # what an ack says: its original_type and id, each if a string


def ack_of(message: Message) -> Ack:
    return _ack(message.body, message.id)


def _ack(body: dict[str, Any], msg_id: str | None) -> Ack:
    original = body.get("original_type")
    return (original if isinstance(original, str) else None), msg_id


def quick_ack(frame: bytes, text: bool, max_bytes: int) -> Ack | None:
    """What an ack says, read the short way (a node sends one per record): a text frame within the
    limit holding a JSON object whose type is "ack", which decode() would accept as it is. None for
    anything else, which decode_frame() then reads as usual (orjson is never looser than json). A
    frame longer than an ack is not parsed here at all: an inbound record would be parsed twice."""
    if not text or len(frame) > min(max_bytes, QUICK_ACK_BYTES):
        return None
    try:
        body = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    if type(body) is not dict or body.get("type") != "ack":
        return None
    return _ack(body, _id(body.get("id")))


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def unread_frame(close_reason: str, max_bytes: int) -> Rejected:
    """A frame so large that the WebSocket layer closed the connection (1009) instead of reading it:
    its payload is gone, but the event is dead-lettered like any other oversized message."""
    return Rejected(
        "too_large",
        f"{close_reason}; the connection was closed with 1009 before the frame was read: "
        f"send messages of at most {max_bytes} bytes",
        b"",
    )


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(", ", ": ")).encode()


def heartbeat(anchor: str, frequency: float, s_roi: float, timestamp: str | None = None) -> dict[str, Any]:
    return {
        "type": "heartbeat",
        "timestamp": timestamp or now_iso(),
        "anchor": anchor,
        "frequency": frequency,
        "s_roi": s_roi,
    }


def frequency_sync(anchor: str, frequency: float, s_roi: float) -> dict[str, Any]:
    return {
        "type": "frequency_sync",
        "timestamp": now_iso(),
        "frequency": frequency,
        "s_roi": s_roi,
        "anchor": anchor,
    }


def echoed_id(message: Message) -> str | int | None:
    """The id to put in the ack, as the node sent it: an integer stays an integer (the node matches
    its acks by it)."""
    sent = message.body.get("id")
    if isinstance(sent, int) and not isinstance(sent, bool) and -(2**63) <= sent < 2**64:
        return sent
    return message.id


def ack(original_type: str, msg_id: str | int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "ack", "original_type": original_type}
    if msg_id is not None:
        body["id"] = msg_id
    return body


def error(rejected: Rejected) -> dict[str, Any]:
    return {
        "type": "error",
        "reason": rejected.reason,
        "detail": rejected.detail,
        "original_type": rejected.original_type,
    }
