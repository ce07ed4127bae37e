"""Pure: the data plane's health from the bridges' heartbeat records (README, "Heartbeat records").

A bridge's heartbeat record says whether its WebSocket and Kafka are connected and what it relayed.
The operator keeps each node's latest one; from it come the conditions KafkaConnected and
WebSocketConnected, BatchesDecodable, status.bridge and status.lastHeartbeatTime; HeartbeatFresh
comes from its age (False after 3 heartbeat periods without one: a dead bridge sends nothing, so a
timer checks).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

Condition = dict[str, Any]
Identity = tuple[str, str, str]  # (namespace, name, uid) of the node a heartbeat record names
MISSED_PERIODS = 3  # heartbeats missed before HeartbeatFresh turns False


@dataclass(frozen=True, slots=True)
class Beat:
    """A node's latest heartbeat record, as the operator received it."""

    received: float  # the operator's monotonic clock
    time: str  # RFC 3339, the operator's wall clock: status.lastHeartbeatTime
    websocket_connected: bool
    websocket_error: str | None
    kafka_connected: bool
    bridge: dict[str, Any]  # status.bridge
    undecodable: str | None = None  # the last batch of the topic that could not be decoded
    stopped: str | None = None  # partitions stopped at such a batch (spec.onUndecodable: stop)
    listening: bool = False  # the node dials the bridge (spec.listen)
    client: str | None = None  # and is connected from this address
    replay: dict[str, Any] | None = None  # the bridge's replay, as status.replay words it


def _significant(value: Any, digits: int = 3) -> float | int:
    """Rounded to a few significant digits, so that a status patch is not a new status every beat:
    exact values are in the bridge's /metrics."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return 0
    if value == 0:
        return 0
    places = digits - 1 - math.floor(math.log10(abs(value)))
    rounded = round(value, places)
    return int(rounded) if isinstance(value, int) or float(rounded).is_integer() else rounded


def parse(value: bytes | None, received: float, now: str) -> tuple[Identity, Beat] | None:
    """The node a heartbeat record names, and the Beat; None for a record that is not a bridge's
    heartbeat record (another writer, an older bridge without a namespace). The uid is "" where the
    record has none: it matches no node."""
    try:
        record = json.loads(value or b"")
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    namespace, node = record.get("namespace"), record.get("node")
    if not isinstance(namespace, str) or not isinstance(node, str) or not namespace or not node:
        return None
    uid = record.get("uid")
    error = record.get("websocket_error")
    websocket, kafka = record.get("websocket_connected") is True, record.get("kafka_connected") is True
    bridge: dict[str, Any] = {
        "websocketConnected": websocket,
        "kafkaConnected": kafka,
        "inFlight": _significant(record.get("in_flight")),
        "lag": _significant(record.get("lag")),
        "relayedOut": _significant(record.get("relayed_out")),
        "relayedIn": _significant(record.get("relayed_in")),
        "deadLetters": _significant(record.get("dead_letters")),
        "undecodableBatches": _significant(record.get("undecodable_batches")),
        "frequencyHz": _significant(record.get("measured_frequency_hz")),
        "driftSeconds": round(float(_significant(record.get("drift_seconds"), 2)), 2),
    }
    bridge |= _latency(record)
    if isinstance(dialled := record.get("endpoint"), str) and dialled:
        bridge["endpoint"], bridge["standby"] = dialled[:2048], record.get("standby") is True
    listening, client = record.get("mode") == "listen", record.get("client")
    client = client[:100] if isinstance(client, str) and websocket else None
    if listening:
        bridge["mode"] = "listen"
        if client:
            bridge["client"] = client
            since = record.get("connected_since")
            if isinstance(since, str):
                bridge["connectedSince"] = since[:40]
    replay = _replay(record.get("replay"))
    stopped = record.get("stopped_partitions")
    stopped = "; ".join(str(p) for p in stopped)[:300] if isinstance(stopped, list) and stopped else None
    undecodable = record.get("undecodable")
    beat = Beat(
        received,
        now,
        websocket,
        error[:300] if isinstance(error, str) else None,
        kafka,
        bridge,
        undecodable[:300] if isinstance(undecodable, str) else None,
        stopped,
        listening,
        client,
        replay,
    )
    return (namespace, node, uid if isinstance(uid, str) else ""), beat


def _replay(said: Any) -> dict[str, Any] | None:
    """A heartbeat's `replay`, bounded, in the status's words."""
    if not isinstance(said, dict) or not isinstance(said.get("value"), str):
        return None
    replay: dict[str, Any] = {"value": said["value"][:256]}
    for key, field in (("error", "error"), ("started_at", "startedAt"), ("completed_at", "completedAt")):
        if isinstance(said.get(key), str):
            replay[field] = said[key][:300]
    if isinstance(said.get("replayed"), int):
        replay["replayed"] = said["replayed"]
    parts = said.get("partitions")
    if isinstance(parts, dict):
        replay["partitions"] = {
            str(p)[:10]: {k: v for k, v in o.items() if k in ("from", "until", "at") and isinstance(v, int)}
            for p, o in list(parts.items())[:256]
            if isinstance(o, dict)
        }
    return replay


def _latency(record: dict[str, Any]) -> dict[str, Any]:
    """The delivery latency of the bridge's last heartbeat period, to 2 significant digits: fields
    absent where nothing was delivered in it."""
    found: dict[str, Any] = {}
    for field, key in (
        ("latencyP50Ms", "latency_p50_ms"),
        ("latencyP99Ms", "latency_p99_ms"),
        ("inboundLatencyP50Ms", "inbound_latency_p50_ms"),
        ("inboundLatencyP99Ms", "inbound_latency_p99_ms"),
    ):
        value = record.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            found[field] = _significant(max(value, 0), 2)
    if "latencyP50Ms" in found and "latencyP99Ms" in found:
        found["latency"] = f"{found['latencyP50Ms']:g}ms/{found['latencyP99Ms']:g}ms"
    return found


def late(beat: Beat | None, objective_ms: int) -> Condition:
    """DeliveryLate (spec.latencyObjectiveMs; not part of Ready): True while the outbound p99 of the
    bridge's last heartbeat period passes the objective."""
    if beat is None:
        return _condition("DeliveryLate", "Unknown", "NoHeartbeatYet", "no heartbeat from the bridge yet")
    p99, objective = beat.bridge.get("latencyP99Ms"), f"spec.latencyObjectiveMs ({objective_ms} ms)"
    if p99 is None:
        message = f"nothing delivered in the bridge's last heartbeat period; the objective is {objective}"
        return _condition("DeliveryLate", "False", "NothingDelivered", message)
    if p99 > objective_ms:
        message = f"p99 {p99:g} ms over the bridge's last heartbeat period is above {objective}"
        return _condition("DeliveryLate", "True", "AboveObjective", message)
    return _condition("DeliveryLate", "False", "WithinObjective", f"p99 {p99:g} ms is within {objective}")


def _condition(type_: str, status: str, reason: str, message: str) -> Condition:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def fresh(beat: Beat | None, now: float, frequency_hz: float) -> bool:
    return beat is not None and now - beat.received <= MISSED_PERIODS / frequency_hz


NEVER = float("inf")


def stale_at(beat: Beat | None, now: float, frequency_hz: float) -> float:
    """When a fresh beat stops being fresh (the monotonic clock); NEVER for one that is not fresh."""
    return (
        beat.received + MISSED_PERIODS / frequency_hz
        if beat is not None and fresh(beat, now, frequency_hz)
        else NEVER
    )


def decodable(beat: Beat) -> Condition:
    """Whether every batch of the node's topic decoded. One that did not is dead-lettered and reading
    goes on (Ready stays True), unless spec.onUndecodable is stop: then its partition stops there."""
    if beat.stopped:
        fix = "delete or skip the batch, or set spec.onUndecodable: deadLetter, then restart the bridge"
        message = f"a partition stopped at a batch that cannot be decoded: {beat.stopped}; {fix}"
        return _condition("BatchesDecodable", "False", "PartitionStopped", message)
    if beat.undecodable:
        message = f"a batch that could not be decoded was {beat.undecodable} (the dead-letter topic holds it)"
        return _condition("BatchesDecodable", "False", "UndecodableDeadLettered", message)
    return _condition("BatchesDecodable", "True", "Decoded", "every batch of the topic decoded")


def conditions(beat: Beat | None, now: float, frequency_hz: float, endpoint: str) -> list[Condition]:
    """KafkaConnected, WebSocketConnected, BatchesDecodable (from the latest beat) and HeartbeatFresh
    (from its age). `endpoint`: the node's URL, or for a listening node where the bridge listens."""
    window = MISSED_PERIODS / frequency_hz
    if beat is None:
        waiting = f"no heartbeat from the bridge yet (one is due every {1 / frequency_hz:.3g}s)"
        return [
            _condition("KafkaConnected", "Unknown", "NoHeartbeatYet", waiting),
            _condition("WebSocketConnected", "Unknown", "NoHeartbeatYet", waiting),
            _condition("BatchesDecodable", "Unknown", "NoHeartbeatYet", waiting),
            _condition("HeartbeatFresh", "False", "NoHeartbeatYet", waiting),
        ]
    if fresh(beat, now, frequency_hz):
        heartbeat = _condition(
            "HeartbeatFresh", "True", "HeartbeatReceived", "the bridge's heartbeats arrive"
        )
    else:  # no age in the message: a status that changes every second would be patched every second
        heartbeat = _condition(
            "HeartbeatFresh",
            "False",
            "HeartbeatMissing",
            f"no heartbeat for over {window:.3g}s ({MISSED_PERIODS} periods): is the bridge running?",
        )
    kafka = (
        _condition("KafkaConnected", "True", "Connected", "the bridge reaches Kafka")
        if beat.kafka_connected
        else _condition("KafkaConnected", "False", "KafkaDisconnected", "the bridge cannot reach Kafka")
    )
    if beat.listening:  # a node not connected yet is a state of a listening bridge, not a failure
        websocket = (
            _condition("WebSocketConnected", "True", "Connected", f"a node is connected from {beat.client}")
            if beat.websocket_connected
            else _condition("WebSocketConnected", "False", "WaitingForNode", f"no node connected: {endpoint}")
        )
    elif beat.websocket_connected:
        dialled = beat.bridge.get("endpoint") or endpoint  # with standbys: the one in use
        websocket = _condition(
            "WebSocketConnected", "True", "Connected", f"the bridge is connected to {dialled}"
        )
    else:
        why = f": {beat.websocket_error}" if beat.websocket_error else ""
        websocket = _condition(
            "WebSocketConnected", "False", "WebSocketDisconnected", f"the bridge cannot reach {endpoint}{why}"
        )
    return [kafka, websocket, decodable(beat), heartbeat]
