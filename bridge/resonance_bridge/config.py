"""The bridge's configuration contract: environment variables in, one frozen Config out.

Pure: `load()` reads a mapping, so the operator (which sets these variables) and the tests
can reason about it without touching the process environment. Every problem is collected,
so a user fixes all of them in one go rather than one per restart.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

TOPIC_RE = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
# After the shutdown grace (waiting for acks), closing takes at most this long: the WebSocket
# closing handshake, the final offset commit and the Kafka clients' close share it.
CLOSE_BUDGET_S = 5.0


def termination_grace_seconds(shutdown_grace_s: float) -> int:
    """The pod's terminationGracePeriodSeconds for a bridge with this shutdown grace: the bridge's
    whole shutdown fits in it, so the kubelet never SIGKILLs a bridge that is still committing."""
    return math.ceil(shutdown_grace_s + CLOSE_BUDGET_S) + 2


@dataclass(frozen=True, slots=True)
class Problem:
    """One bad variable: what was given, what is wrong, and the fix."""

    variable: str
    value: str | None  # as given; None when missing
    what: str  # e.g. "is invalid", "is required"
    fix: str

    def __str__(self) -> str:
        given = self.variable if self.value is None else f"{self.variable}={self.value!r}"
        return f"{given} {self.what}: {self.fix}"


class ConfigError(Exception):
    """Invalid configuration; `problems` holds one Problem per bad variable."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


def var(name: str, default: Any = dataclasses.MISSING) -> Any:
    """A setting read from the environment variable `name`: its name and default are declared here
    once, and load(), the operator and the README table check (tests) read them from the field."""
    return dataclasses.field(default=default, metadata={"env": name})


def declared(cls: type) -> dict[str, tuple[str, Any]]:
    """Per field of a settings dataclass: (its environment variable, its default)."""
    return {f.name: (f.metadata["env"], f.default) for f in dataclasses.fields(cls) if "env" in f.metadata}


@dataclass(frozen=True, slots=True)
class Config:
    endpoint: str = var("RESONANCE_ENDPOINT")
    topic: str = var("RESONANCE_TOPIC")
    anchor: str = var("RESONANCE_ANCHOR")
    bootstrap_servers: str = var("KAFKA_BOOTSTRAP_SERVERS")
    node: str = var("RESONANCE_NODE", "resonance")
    namespace: str = var("RESONANCE_NAMESPACE", "")  # the node's, set by the operator (downward API)
    inbound_topic: str = var("RESONANCE_INBOUND_TOPIC", "resonance.inbound")
    heartbeat_topic: str = var("RESONANCE_HEARTBEAT_TOPIC", "resonance.heartbeats")
    deadletter_topic: str = var("RESONANCE_DEADLETTER_TOPIC", "resonance.deadletter")
    frequency_hz: float = var("RESONANCE_FREQUENCY_HZ", 0.043)
    s_roi: float = var("RESONANCE_S_ROI", 0.502)
    ack_mode: Literal["ack", "send"] = var("RESONANCE_ACK_MODE", "ack")
    max_in_flight: int = var("RESONANCE_MAX_IN_FLIGHT", 1000)
    ack_timeout_s: float = var("RESONANCE_ACK_TIMEOUT_S", 30.0)
    max_frame_bytes: int = var("RESONANCE_MAX_FRAME_BYTES", 1024 * 1024)
    shutdown_grace_s: float = var("RESONANCE_SHUTDOWN_GRACE_S", 10.0)
    ws_ping_interval_s: float = var("RESONANCE_WS_PING_INTERVAL_S", 5.0)
    ws_ping_timeout_s: float = var("RESONANCE_WS_PING_TIMEOUT_S", 10.0)
    refused_retry_s: float = var("RESONANCE_REFUSED_RETRY_S", 60.0)
    http_port: int = var("RESONANCE_HTTP_PORT", 8080)
    http_host: str = var("RESONANCE_HTTP_HOST", "0.0.0.0")  # a pod's probes come from outside it
    group_id: str = var("KAFKA_GROUP_ID", "")  # empty: resonance-bridge-<node>
    enable_idempotence: bool = var("KAFKA_ENABLE_IDEMPOTENCE", True)
    fetch_max_wait_ms: int = var("KAFKA_FETCH_MAX_WAIT_MS", 100)
    session_timeout_ms: int = var("KAFKA_SESSION_TIMEOUT_MS", 10000)
    heartbeat_interval_ms: int = var("KAFKA_HEARTBEAT_INTERVAL_MS", 3000)
    commit_interval_ms: int = var("KAFKA_COMMIT_INTERVAL_MS", 1000)
    linger_ms: int = var("KAFKA_LINGER_MS", 5)
    batch_size: int = var("KAFKA_BATCH_SIZE", 256 * 1024)
    auto_offset_reset: Literal["earliest", "latest"] = var("KAFKA_AUTO_OFFSET_RESET", "earliest")
    # Sent as "Authorization: Bearer <token>" when connecting to the node.
    auth_token: str = var("RESONANCE_AUTH_TOKEN", "")

    def __repr__(self) -> str:  # never print the token
        return (
            super().__repr__().replace(repr(self.auth_token), "'***'")
            if self.auth_token
            else super().__repr__()
        )

    @property
    def heartbeat_interval_s(self) -> float:
        return 1.0 / self.frequency_hz


class EnvReader:
    """Reads typed variables from a mapping, recording a problem instead of raising."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[Problem] = []

    def _get(self, name: str, default: T, parse: Callable[[str], T], fix: str) -> T:
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except ValueError:
            self.problems.append(Problem(name, raw, "is invalid", fix))
            return default

    def required(self, name: str, fix: str) -> str:
        raw = self.env.get(name, "").strip()
        if not raw:
            self.problems.append(Problem(name, None, "is required", fix))
        return raw

    def parsed(self, name: str, default: T, parse: Callable[[str], T], fix: str) -> T:
        """A variable of a type of the caller's: parse() raises ValueError for what it rejects."""
        return self._get(name, default, parse, fix)

    def text(self, name: str, default: str) -> str:
        return self._get(name, default, str, "")

    def topic(self, name: str, default: str = "", required: bool = False) -> str:
        fix = "use 1-249 characters of [a-zA-Z0-9._-], not '.' or '..'"
        value = (
            self.required(name, f"set a Kafka topic name ({fix})") if required else self.text(name, default)
        )
        if value and (not TOPIC_RE.match(value) or value in {".", ".."}):
            self.problems.append(Problem(name, value, "is not a legal Kafka topic name", fix))
        return value

    def number(
        self, name: str, default: float, low: float, high: float, fix: str, *, zero_ok: bool = False
    ) -> float:
        def parse(raw: str) -> float:
            value = float(raw)
            if not (low < value <= high or (zero_ok and value == low)):
                raise ValueError(raw)
            return value

        return self._get(name, default, parse, fix)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        def parse(raw: str) -> int:
            value = int(raw)
            if not low <= value <= high:
                raise ValueError(raw)
            return value

        return self._get(name, default, parse, f"use a whole number from {low} to {high}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        def parse(raw: str) -> str:
            if raw not in choices:
                raise ValueError(raw)
            return raw

        return self._get(name, default, parse, f"use one of: {', '.join(choices)}")

    def boolean(self, name: str, default: bool) -> bool:
        def parse(raw: str) -> bool:
            lowered = raw.lower()
            if lowered in {"true", "1", "yes", "on"}:
                return True
            if lowered in {"false", "0", "no", "off"}:
                return False
            raise ValueError(raw)

        return self._get(name, default, parse, "use true or false")


def _check_endpoint(reader: EnvReader, endpoint: str) -> None:
    if not endpoint:
        return
    parts = urlsplit(endpoint)
    if parts.scheme not in {"ws", "wss"} or not parts.hostname:
        fix = "use a ws:// or wss:// URL, e.g. ws://lexamoris-server:8766"
        reader.problems.append(Problem("RESONANCE_ENDPOINT", endpoint, "is invalid", fix))


def load(env: Mapping[str, str]) -> Config:
    """Build a Config from environment variables or raise ConfigError listing every problem."""
    r, d = EnvReader(env), declared(Config)
    seconds = "use seconds > 0, e.g. {:g}".format
    node = r.text(*d["node"])
    namespace = r.text(*d["namespace"])
    endpoint = r.required(d["endpoint"][0], "set the node's WebSocket URL, e.g. ws://lexamoris-server:8766")
    _check_endpoint(r, endpoint)
    config = Config(
        node=node,
        namespace=namespace,
        endpoint=endpoint,
        topic=r.topic(d["topic"][0], required=True),
        anchor=r.required(d["anchor"][0], "set the node's anchor, e.g. BOLZANO_71"),
        bootstrap_servers=r.required(d["bootstrap_servers"][0], "set host:port[,host:port], e.g. kafka:9092"),
        inbound_topic=r.topic(*d["inbound_topic"]),
        heartbeat_topic=r.topic(*d["heartbeat_topic"]),
        deadletter_topic=r.topic(*d["deadletter_topic"]),
        frequency_hz=r.number(*d["frequency_hz"], 0.0, 100.0, "use a number > 0 and <= 100 (Hz)"),
        s_roi=r.number(*d["s_roi"], -1e9, 1e9, "use a finite number, e.g. 0.5020"),
        ack_mode="send" if r.choice(*d["ack_mode"], ("ack", "send")) == "send" else "ack",
        max_in_flight=r.integer(*d["max_in_flight"], 1, 1_000_000),
        ack_timeout_s=r.number(*d["ack_timeout_s"], 0.0, 86400.0, seconds(30)),
        max_frame_bytes=r.integer(*d["max_frame_bytes"], 1024, 64 * 1024 * 1024),
        shutdown_grace_s=r.number(*d["shutdown_grace_s"], 0.0, 3600.0, "use seconds >= 0", zero_ok=True),
        ws_ping_interval_s=r.number(*d["ws_ping_interval_s"], 0.0, 3600.0, seconds(5)),
        ws_ping_timeout_s=r.number(*d["ws_ping_timeout_s"], 0.0, 3600.0, seconds(10)),
        refused_retry_s=r.number(*d["refused_retry_s"], 0.0, 3600.0, seconds(60)),
        http_port=r.integer(*d["http_port"], 0, 65535),
        http_host=r.text(*d["http_host"]),
        group_id=r.text(d["group_id"][0], f"resonance-bridge-{node}"),
        enable_idempotence=r.boolean(*d["enable_idempotence"]),
        fetch_max_wait_ms=r.integer(*d["fetch_max_wait_ms"], 0, 60_000),
        session_timeout_ms=r.integer(*d["session_timeout_ms"], 1000, 600_000),
        heartbeat_interval_ms=r.integer(*d["heartbeat_interval_ms"], 100, 600_000),
        commit_interval_ms=r.integer(*d["commit_interval_ms"], 10, 600_000),
        linger_ms=r.integer(*d["linger_ms"], 0, 60_000),
        batch_size=r.integer(*d["batch_size"], 1024, 64 * 1024 * 1024),
        auto_offset_reset=(
            "latest" if r.choice(*d["auto_offset_reset"], ("earliest", "latest")) == "latest" else "earliest"
        ),
        auth_token=env.get(d["auth_token"][0], "").strip(),  # free text: a token is never "invalid"
    )
    if config.heartbeat_interval_ms >= config.session_timeout_ms:
        r.problems.append(
            Problem(
                d["heartbeat_interval_ms"][0],
                str(config.heartbeat_interval_ms),
                f"must be lower than KAFKA_SESSION_TIMEOUT_MS={config.session_timeout_ms}",
                "lower the first or raise the second",
            )
        )
    if r.problems:
        raise ConfigError(r.problems)
    return config
