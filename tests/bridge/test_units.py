"""The pure parts: configuration contract, codec, backoff, schedule, logs (the relay: test_relay_rules)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import pytest
from resonance_bridge import codec
from resonance_bridge.backoff import Backoff
from resonance_bridge.codec import Message, Rejected
from resonance_bridge.config import ConfigError, load
from resonance_bridge.latency import BUCKETS
from resonance_bridge.logs import HoldRepeats
from resonance_bridge.schedule import every

BASE = {
    "RESONANCE_ENDPOINT": "ws://lexamoris-server:8766",
    "RESONANCE_TOPIC": "resonance.lexamoris",
    "RESONANCE_ANCHOR": "BOLZANO_71",
    "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
}


def test_config_defaults_follow_the_contract() -> None:
    config = load({**BASE, "RESONANCE_NODE": "lexamoris"})
    assert (config.inbound_topic, config.heartbeat_topic, config.deadletter_topic) == (
        "resonance.inbound",
        "resonance.heartbeats",
        "resonance.deadletter",
    )
    assert (config.frequency_hz, config.s_roi, config.ack_mode, config.max_in_flight) == (
        0.043,
        0.502,
        "ack",
        1000,
    )
    assert (config.group_id, config.http_port, config.enable_idempotence, config.fetch_max_wait_ms) == (
        "resonance-bridge-lexamoris",
        8080,
        True,
        500,
    )
    assert config.max_frame_bytes == 1024 * 1024
    assert round(config.heartbeat_interval_s, 2) == 23.26


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("RESONANCE_ENDPOINT", "ws://", "ws:// or wss://"),
        ("RESONANCE_TOPIC", "..", "legal Kafka topic"),
        ("RESONANCE_TOPIC", "x" * 250, "legal Kafka topic"),
        ("RESONANCE_FREQUENCY_HZ", "100.5", "> 0 and <= 100"),
        ("RESONANCE_FREQUENCY_HZ", "nan", "> 0 and <= 100"),
        ("RESONANCE_S_ROI", "inf", "finite number"),
        ("RESONANCE_HTTP_PORT", "70000", "0 to 65535"),
        ("KAFKA_HEARTBEAT_INTERVAL_MS", "20000", "lower than KAFKA_SESSION_TIMEOUT_MS"),
        ("KAFKA_REQUEST_TIMEOUT_MS", "1500", "exceed KAFKA_FETCH_MAX_WAIT_MS=500 by over 1000"),
    ],
)
def test_config_rejects_with_variable_value_and_fix(name: str, value: str, needle: str) -> None:
    with pytest.raises(ConfigError) as error:
        load({**BASE, name: value})
    [problem] = error.value.problems
    assert problem.variable == name and str(problem).startswith(name) and needle in str(problem)


def test_config_accepts_wss_and_overrides() -> None:
    config = load(
        {
            **BASE,
            "RESONANCE_ENDPOINT": "wss://node.example:443/ws",
            "RESONANCE_ACK_MODE": "send",
            "KAFKA_GROUP_ID": "custom",
            "KAFKA_ENABLE_IDEMPOTENCE": "false",
            "RESONANCE_SHUTDOWN_GRACE_S": "0",
        }
    )
    assert (config.ack_mode, config.group_id, config.enable_idempotence, config.shutdown_grace_s) == (
        "send",
        "custom",
        False,
        0.0,
    )


def test_codec_relays_raw_bytes_of_known_and_unknown_types() -> None:
    raw = '{"type": "state_update", "data": {"s_roi": 0.502}, "id": 7}'
    decoded = codec.decode_frame(raw.encode(), True, 1024)
    assert isinstance(decoded, Message)
    assert (decoded.type, decoded.id, decoded.raw, decoded.known) == ("state_update", "7", raw.encode(), True)
    unknown = codec.decode(b'{"type": "vibration"}', 1024)
    assert isinstance(unknown, Message) and not unknown.known


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "not_utf8"),
        (b"{", "not_json"),
        (b'"text"', "not_object"),
        (b"{}", "missing_type"),
        (b'{"type": null}', "missing_type"),
        (b'{"type": ["a"]}', "type_not_string"),
        (b'{"type": "frequency_sync", "frequency": true}', "missing_field"),
        (b'{"type": "repository_event", "data": {}}', "missing_field"),
        (b'{"type": "heartbeat"}', "missing_field"),
        (b'{"type": "x", "pad": "' + b"a" * 2000 + b'"}', "too_large"),
    ],
)
def test_codec_rejects_with_reason(payload: bytes, reason: str) -> None:
    decoded = codec.decode(payload, 1024)
    assert isinstance(decoded, Rejected)
    assert decoded.reason == reason and decoded.raw == payload and decoded.detail


def test_codec_builders_match_the_guide() -> None:
    beat = codec.heartbeat("BOLZANO_71", 0.043, 0.502, "2026-01-13T02:00:00+00:00")
    assert beat == {
        "type": "heartbeat",
        "timestamp": "2026-01-13T02:00:00+00:00",
        "anchor": "BOLZANO_71",
        "frequency": 0.043,
        "s_roi": 0.502,
    }
    assert json.loads(codec.encode(codec.ack("state_update"))) == {
        "type": "ack",
        "original_type": "state_update",
    }
    sync = codec.frequency_sync("BOLZANO_71", 0.043, 0.502)
    assert set(sync) == {"type", "timestamp", "frequency", "s_roi", "anchor"}


def test_backoff_grows_with_jitter_and_caps() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0)
    delays = [backoff.next_delay() for _ in range(8)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(0.5 <= d <= 1.0 for d in delays[4:])
    backoff.reset()
    assert backoff.next_delay() <= 0.1


class _Stop(Exception):
    pass


def test_schedule_keeps_phase_and_skips_slots_after_a_stall() -> None:
    """A fake clock: sleeps advance it, and the third tick stalls the process for 1.3 intervals'
    worth of slots. The schedule must tick once late, then return to its phase (no burst of the
    missed slots, no shift of later ticks), and report the drift of the last ten intervals."""
    now = 0.0
    ticks: list[float] = []
    drifts: list[float] = []

    async def sleep(delay: float) -> None:
        nonlocal now
        now += delay

    def tick() -> None:
        nonlocal now
        ticks.append(now)
        if len(ticks) == 3:
            now += 1.3  # a stall: slots 1.5 and 2.0 pass while this tick runs
        if len(ticks) == 15:
            raise _Stop

    with pytest.raises(_Stop):
        asyncio.run(every(0.5, tick, drifts.append, clock=lambda: now, sleep=sleep))
    assert [round(t, 6) for t in ticks] == [0.0, 0.5, 1.0, 2.3] + [2.5 + 0.5 * k for k in range(11)]
    assert drifts[1] == 0.0  # drift is reported from the second tick on
    assert round(drifts[2], 6) == round((2.3 - 0.0) / 3 - 0.5, 6)  # the late tick shows
    assert round(drifts[-1], 6) == 0.0  # ten intervals later it no longer does


def test_log_repeats_of_library_messages_are_held_back() -> None:
    hold = HoldRepeats(interval=60)

    def record(name: str, msg: str, at: float, *args: object) -> logging.LogRecord:
        rec = logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)
        rec.created = at
        return rec

    connect = "Unable connect to node with id %s: %s"
    shown = [
        rec.getMessage()
        for rec in (
            record("aiokafka", connect, 0.0, 111, "refused"),
            record("aiokafka", connect, 0.1, 112, "refused"),  # same template, other args: a repeat
            record("aiokafka.consumer.fetcher", "Failed fetch messages from %s", 0.2, 111),  # other story
            record("aiokafka", connect, 30.0, 111, "refused"),
            record("resonance.bridge", "kafka unreachable", 30.5),  # ours: never held
            record("resonance.bridge", "kafka unreachable", 30.6),
            record("aiokafka", connect, 60.0, 111, "refused"),
            record("aiokafka", connect, 61.0, 111, "refused"),
        )
        if hold.filter(rec)
    ]
    assert shown == [
        "Unable connect to node with id 111: refused",
        "Failed fetch messages from 111",
        "kafka unreachable",
        "kafka unreachable",
        "Unable connect to node with id 111: refused [repeated 2 more times in the last 60s]",
    ]


def test_the_readme_table_is_the_configuration() -> None:
    """Every variable the bridge reads is documented, with the default it really has."""
    from resonance_bridge.config import Config, declared

    from ..support.readme import literal, settings_table

    table = settings_table("RESONANCE_ENDPOINT")
    logging_vars = {"RESONANCE_LOG_LEVEL", "RESONANCE_LOG_FORMAT"}  # read before the configuration
    assert set(table) - logging_vars == {env for env, _ in declared(Config).values()}
    for variable, cell in table.items():
        value = literal(cell)
        if value is not None and variable not in logging_vars:
            value = value.replace("<node>", "resonance")  # KAFKA_GROUP_ID's default names the node
            assert load({**BASE, variable: value}) == load(BASE), f"{variable}: the README says {cell}"


ACKS = [
    b'{"type": "ack", "original_type": "state_update"}',
    b'{"type": "ack", "original_type": "state_update", "id": 7}',
    b'{"type": "ack", "original_type": "heartbeat", "id": "a-1"}',
    b'{"type": "ack", "id": true, "original_type": 5}',
    b'{"type": "ack"}',
    b'{"type":"ack","original_type":"ack"}',
    b'{"type": "state_update", "original_type": "x", "type": "ack"}',  # the last key wins
]
NOT_QUICK = [
    b'{"type": "ack", "original_type": "state_update", "n": NaN}',  # json's alone: decode() decides
    b'{"type": "ack", "original_type": "state_update", "pad": "' + b"x" * 100 + b'"}',  # over the limit
    b'{"type": "ack", "original_type": "\xff"}',
    b'["ack"]',
    b'{"type": "Ack"}',
    b'{"type": "ack", "original_type": "x", "type": "state_update", "data": {}}',
    b"not json",
    b"",
]


@pytest.mark.parametrize("frame", ACKS + NOT_QUICK)
def test_the_quick_ack_path_reads_what_decode_reads(frame: bytes) -> None:
    """codec.quick_ack() is a shortcut, never a second rule: where it answers, decode() gives the same
    ack; where it does not, decode() decides (as an ack, a message or a dead letter)."""
    quick, slow = codec.quick_ack(frame, True, 100), codec.decode_frame(frame, True, 100)
    if quick is not None:
        assert isinstance(slow, Message) and slow.type == "ack" and codec.ack_of(slow) == quick
    assert (quick is not None) == (frame in ACKS)
    assert codec.quick_ack(frame, False, 100) is None  # a binary frame: always decode()'s


def test_the_bridges_exposition_is_byte_for_byte_prometheus_clients() -> None:
    """promtext.py stands in for prometheus_client in the bridge: the same metrics with the same
    values are written exactly as the library writes them (escapes, floats, info, histograms)."""
    import prometheus_client
    from prometheus_client.metrics_core import HistogramMetricFamily
    from resonance_bridge import promtext
    from resonance_bridge.latency import Delivery, DeliveryCollector

    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    ours, theirs = promtext.Registry(), prometheus_client.CollectorRegistry()
    for lib, registry in ((promtext, ours), (prometheus_client, theirs)):
        lib.Info("resonance_bridge", "The node", registry=registry).info({"node": "a", "anchor": 'B"\\'})
        lib.Counter("x_relayed", "Relayed\nmsgs \\ ok", ["direction"], registry=registry).labels("out").inc(3)
        lib.Counter("x_plain", "plain", registry=registry)
        lib.Gauge("x_big", "g", registry=registry).set(1234567.0)
        lib.Gauge("x_small", "g", registry=registry).set(-0.000012)
        lib.Gauge("x_l", "l", ["b", "a"], registry=registry).labels('q"uote', "n\nl").set(0.5)  # sorted out
        lib.Gauge("x_f", "f", registry=registry).set_function(lambda: 7)
        lib.Gauge("x_none", "labelled, no series", ["a"], registry=registry)
    delivery = Delivery()
    for seconds in (0.0005, 0.02, 0.02, 3.0, 120.0):
        delivery.observe(seconds)
    ours.register(DeliveryCollector({"outbound": delivery, "inbound": Delivery()}))

    class Histogram:
        def collect(self) -> Iterator[HistogramMetricFamily]:
            family = HistogramMetricFamily(
                DeliveryCollector.NAME, DeliveryCollector.DOC, labels=["direction"]
            )
            for direction, d in (("outbound", delivery), ("inbound", Delivery())):
                running = [sum(d.counts[: i + 1]) for i in range(len(d.counts))]
                bounds = (*map(str, BUCKETS), "+Inf")
                family.add_metric([direction], list(zip(bounds, map(float, running), strict=True)), d.sum)
            yield family

    theirs.register(Histogram())
    assert ours.exposition().decode() == prometheus_client.generate_latest(theirs).decode()


def test_a_frame_longer_than_an_ack_is_not_parsed_twice() -> None:
    """An inbound record (a state_update of ~1 KB) goes to decode() alone; so does a long ack."""
    long_ack = b'{"type": "ack", "original_type": "x", "pad": "' + b"x" * codec.QUICK_ACK_BYTES + b'"}'
    assert codec.quick_ack(long_ack, True, 10_000) is None
    decoded = codec.decode_frame(long_ack, True, 10_000)
    assert isinstance(decoded, Message) and codec.ack_of(decoded) == ("x", None)


def test_delivery_latency_keeps_an_even_sample_in_bounded_memory_one_by_one_or_in_runs() -> None:
    from resonance_bridge.latency import KEEP, Delivery

    values = [i / 1000 for i in range(10_000)]  # 0 to 10 s, evenly
    one, runs = Delivery(), Delivery()
    for v in values:
        one.observe(v)
    for at in range(0, len(values), 37):
        runs.observe_all(values[at : at + 37])

    def state(d: Delivery) -> tuple[object, ...]:
        return d.counts, round(d.sum, 6), d.samples, d.stride

    assert state(one) == state(runs)
    assert sum(one.counts) == 10_000 and abs(one.sum - sum(values)) < 1e-6 and len(one.samples) < KEEP
    p50, p99 = one.period() or (0.0, 0.0)
    assert abs(p50 - 5.0) < 0.05 and abs(p99 - 9.9) < 0.05
    assert one.period() is None  # the period starts anew
