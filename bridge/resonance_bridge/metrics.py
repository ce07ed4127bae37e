"""Prometheus metrics of one bridge, in a registry of its own (no process-global state; promtext.py)."""

from __future__ import annotations

import contextlib

from .config import Config
from .latency import Delivery, DeliveryCollector
from .promtext import Counter, Gauge, Info, Registry


class Metrics:
    def __init__(self) -> None:
        self.registry = r = Registry()
        self.info = Info("resonance_bridge", "The node this bridge serves", registry=r)
        self.relayed = Counter(
            "resonance_messages_relayed",
            "Messages relayed, by direction (outbound: Kafka to node; inbound: node to Kafka)",
            ["direction"],
            registry=r,
        )
        self.unknown_types = Counter(
            "resonance_unknown_type_messages",
            "Well-formed messages of a type the bridge does not know, relayed anyway",
            ["direction"],
            registry=r,
        )
        self.acks = Counter(
            "resonance_acks",
            "Acks: from_node for outbound messages, to_node after Kafka stored an inbound message",
            ["direction"],
            registry=r,
        )
        self.control_acks = Counter(
            "resonance_control_acks",
            "Acks from the node of the bridge's own heartbeat and frequency_sync messages (included in "
            'resonance_acks_total{direction="from_node"})',
            registry=r,
        )
        self.ack_mismatches = Counter(
            "resonance_ack_mismatches",
            "Acks the bridge could not attribute to a message in flight (nothing committed), by reason",
            ["reason"],
            registry=r,
        )
        self.ack_timeouts = Counter(
            "resonance_ack_timeouts", "Reconnects because the node did not ack within the timeout", registry=r
        )
        self.dead_letters = Counter(
            "resonance_dead_letters",
            "Messages sent to the dead-letter topic",
            ["direction", "reason"],
            registry=r,
        )
        self.undecodable = Counter(
            "resonance_undecodable_batches",
            "Record batches of the node's topic that could not be decoded, by what was done "
            "(dead_lettered, or stopped: the partition stopped there, RESONANCE_ON_UNDECODABLE=stop)",
            ["action"],
            registry=r,
        )
        self.reconnects = Counter(
            "resonance_reconnects", "Connection attempts after the first, by side", ["side"], registry=r
        )
        self.connect_failures = Counter(
            "resonance_connect_failures",
            "Failed attempts to reach the node or Kafka, by side and reason (e.g. http_401, dns, auth)",
            ["side", "reason"],
            registry=r,
        )
        self.tls_insecure = Gauge(
            "resonance_tls_insecure_skip_verify",
            "1 while the node's certificate is not verified (RESONANCE_TLS_INSECURE_SKIP_VERIFY)",
            registry=r,
        )
        self.websocket_connected = Gauge(
            "resonance_websocket_connected", "1 while the node's WebSocket is connected", registry=r
        )
        self.kafka_connected = Gauge(
            "resonance_kafka_connected", "1 while the Kafka cluster answers", registry=r
        )
        self.in_flight = Gauge(
            "resonance_in_flight", "Outbound records sent to the node and not yet acked", registry=r
        )
        self.consumer_lag = Gauge(
            "resonance_consumer_lag", "Records in the node topic not yet acked by the node", registry=r
        )
        self.handshakes = Counter(
            "resonance_listen_handshakes",
            "Nodes dialling a listening bridge, by result: accepted, unauthorized, not_found, busy (past "
            "RESONANCE_LISTEN_MAX_PENDING handshakes), error",
            ["result"],
            registry=r,
        )
        self.replacements = Counter(
            "resonance_listen_replacements", "Sessions replaced by a newer connection of the node", registry=r
        )
        self.client = Gauge(
            "resonance_listen_client_connected_since_seconds",
            "Unix time the node dialled in, labelled with its address (one series while connected)",
            ["client"],
            registry=r,
        )
        self.anonymous = Gauge(
            "resonance_listen_anonymous", "1 while any node may connect without a token", registry=r
        )
        self.delivery_out, self.delivery_in = Delivery(), Delivery()
        r.register(DeliveryCollector({"outbound": self.delivery_out, "inbound": self.delivery_in}))
        self.delivery_recent = Gauge(
            "resonance_delivery_recent_seconds",
            "p50 and p99 of resonance_delivery_seconds over the last heartbeat period (absent: nothing "
            "delivered in it), as the heartbeat record and the node's status say",
            ["direction", "quantile"],
            registry=r,
        )
        self.endpoint_in_use = Gauge(
            "resonance_endpoint_in_use",
            "1 for the endpoint the bridge dials (RESONANCE_ENDPOINT or a standby), 0 for the others tried",
            ["endpoint"],
            registry=r,
        )
        self.endpoint_switches = Counter(
            "resonance_endpoint_switches",
            "Moves to another endpoint, by reason: refused, unreachable, silent (a black hole), failback",
            ["reason"],
            registry=r,
        )
        self.heartbeats = Counter("resonance_heartbeats", "Heartbeats emitted", registry=r)
        self.last_heartbeat = Gauge(
            "resonance_last_heartbeat_timestamp_seconds", "Unix time of the last heartbeat", registry=r
        )
        self.heartbeat_drift = Gauge(
            "resonance_heartbeat_drift_seconds",
            "Mean heartbeat interval of the last ten minus the configured interval",
            registry=r,
        )
        # Children bound once: a labels() lookup per message is measurable on the hot path.
        self.relayed_out, self.relayed_in = self.relayed.labels("outbound"), self.relayed.labels("inbound")
        self.unknown_out = self.unknown_types.labels("outbound")
        self.unknown_in = self.unknown_types.labels("inbound")
        self.acks_from_node, self.acks_to_node = self.acks.labels("from_node"), self.acks.labels("to_node")
        self.ws_reconnects = self.reconnects.labels("websocket")
        self.kafka_reconnects = self.reconnects.labels("kafka")

    def delivery_period(self) -> dict[str, float | None]:
        """p50 and p99 (ms) of each direction since the last call, for the heartbeat record; the
        resonance_delivery_recent_seconds gauges say the same (absent for a direction with none)."""
        fields: dict[str, float | None] = {}
        for direction, delivery, name in (
            ("outbound", self.delivery_out, "latency"),
            ("inbound", self.delivery_in, "inbound_latency"),
        ):
            period = delivery.period() or (None, None)
            for (quantile, suffix), value in zip((("0.5", "p50"), ("0.99", "p99")), period, strict=True):
                fields[f"{name}_{suffix}_ms"] = None if value is None else round(value * 1000, 1)
                if value is not None:
                    self.delivery_recent.labels(direction, quantile).set(value)
                else:
                    with contextlib.suppress(KeyError):  # none delivered: no series, not a stale one
                        self.delivery_recent.remove(direction, quantile)
        return fields

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def total(self, name: str) -> float:
        """A counter's sum over all its labels (e.g. dead letters of every direction and reason)."""
        return self.registry.total(name)

    def describe(self, config: Config) -> None:
        self.info.info(
            {
                "node": config.node,
                "anchor": config.anchor,
                "topic": config.topic,
                "endpoint": config.peer,
                "ack_mode": config.ack_mode,
            }
        )
