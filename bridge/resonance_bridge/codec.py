"""The Resonance message protocol, sans I/O.

`decode` turns one payload (a Kafka record value or a WebSocket frame) into either a Message,
whose raw bytes are relayed unchanged, or a Rejected naming why it cannot be relayed. The
builders make the messages the bridge itself originates, in the integration guide's shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
# Replies a node sends about our own replies; they must never be matched against records in flight.
REPLY_TYPES = frozenset({"ack", "error"})


@dataclass(frozen=True, slots=True)
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


def decode_frame(frame: str | bytes, max_bytes: int) -> Message | Rejected:
    """Decode a WebSocket frame: websockets hands text frames as str and binary frames as bytes."""
    if isinstance(frame, bytes):
        return Rejected("binary_frame", "binary frames are not supported: send JSON as a text frame", frame)
    return _parse(frame, frame.encode(), max_bytes)


def decode(raw: bytes, max_bytes: int) -> Message | Rejected:
    """Decode a Kafka record value."""
    try:
        # Decode explicitly: json.loads(bytes) would also accept UTF-16/32, which is no WebSocket text.
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Rejected("not_utf8", "payload is not UTF-8 text: send JSON encoded as UTF-8", raw)
    return _parse(text, raw, max_bytes)


def _parse(text: str, raw: bytes, max_bytes: int) -> Message | Rejected:
    if len(raw) > max_bytes:
        return Rejected("too_large", f"message of {len(raw)} bytes exceeds the {max_bytes}-byte limit", raw)
    try:
        body = json.loads(text)
    except ValueError as exc:
        return Rejected("not_json", f"payload is not JSON ({exc}): send one JSON object per message", raw)
    if not isinstance(body, dict):
        kind = type(body).__name__
        return Rejected("not_object", f"payload is a JSON {kind}: send a JSON object with a 'type'", raw)
    mtype = body.get("type")
    if mtype is None:
        return Rejected("missing_type", 'field \'type\' is missing: add e.g. "type": "state_update"', raw)
    if not isinstance(mtype, str):
        return Rejected("type_not_string", f"field 'type' is {json.dumps(mtype)}: it must be a string", raw)
    required = REQUIRED.get(mtype)
    for name, kinds, what in required or ():
        value = body.get(name)
        if not isinstance(value, kinds) or isinstance(value, bool):
            return Rejected(
                "missing_field", f"{mtype} needs field '{name}' as {what}: add it to the message", raw, mtype
            )
    mid = body.get("id")
    msg_id = str(mid) if isinstance(mid, str | int) and not isinstance(mid, bool) else None
    return Message(mtype, msg_id, body, raw, required is not None)


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


def ack(original_type: str, msg_id: str | None = None) -> dict[str, Any]:
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
