"""The bridge's configuration contract: environment variables in, one frozen Config out.

Pure: `load()` reads a mapping, so the operator (which sets these variables) and the tests
can reason about it without touching the process environment. Every problem is collected,
so a user fixes all of them in one go rather than one per restart.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

# The operator's contract is this module: what it needs of envvars is re-exported here.
from . import security
from .envvars import ConfigError, EnvReader, Problem, declared, var

__all__ = [
    "CLOSE_BUDGET_S",
    "Config",
    "ConfigError",
    "EnvReader",
    "KafkaSecurity",
    "Problem",
    "declared",
    "kafka_security",
    "load",
    "var",
]

NEITHER = (
    "set one of them: RESONANCE_ENDPOINT (the node's URL, which the bridge dials) "
    "or RESONANCE_LISTEN (host:port where nodes dial the bridge, e.g. 0.0.0.0:8765)"
)
# After the shutdown grace (waiting for acks), closing takes at most this long: the WebSocket
# closing handshake, the final offset commit and the Kafka clients' close share it.
CLOSE_BUDGET_S = 5.0


def termination_grace_seconds(shutdown_grace_s: float) -> int:
    """The pod's terminationGracePeriodSeconds for a bridge with this shutdown grace: the bridge's
    whole shutdown fits in it, so the kubelet never SIGKILLs a bridge that is still committing."""
    return math.ceil(shutdown_grace_s + CLOSE_BUDGET_S) + 2


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaSecurity:
    """TLS and SASL to Kafka: the bridge's, and the operator's for its own heartbeat consumer."""

    kafka_security_protocol: str = var("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")  # or SSL, SASL_*
    kafka_ssl_ca_file: str = var("KAFKA_SSL_CA_FILE", "")
    kafka_ssl_cert_file: str = var("KAFKA_SSL_CERT_FILE", "")
    kafka_ssl_key_file: str = var("KAFKA_SSL_KEY_FILE", "")
    kafka_sasl_mechanism: str = var("KAFKA_SASL_MECHANISM", "")
    kafka_sasl_username: str = var("KAFKA_SASL_USERNAME", "")
    kafka_sasl_password_file: str = var("KAFKA_SASL_PASSWORD_FILE", "")


def kafka_security(r: EnvReader) -> dict[str, str]:
    """KafkaSecurity's fields read from the environment (checked later, by security.py)."""
    d = declared(KafkaSecurity)
    return {
        "kafka_security_protocol": r.choice(
            *d["kafka_security_protocol"], ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
        ),
        "kafka_ssl_ca_file": r.text(*d["kafka_ssl_ca_file"]),
        "kafka_ssl_cert_file": r.text(*d["kafka_ssl_cert_file"]),
        "kafka_ssl_key_file": r.text(*d["kafka_ssl_key_file"]),
        "kafka_sasl_mechanism": r.choice(
            *d["kafka_sasl_mechanism"], ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
        ),
        "kafka_sasl_username": r.text(*d["kafka_sasl_username"]),
        "kafka_sasl_password_file": r.text(*d["kafka_sasl_password_file"]),
    }


@dataclass(frozen=True, slots=True)
class Config(KafkaSecurity):
    topic: str = var("RESONANCE_TOPIC")
    anchor: str = var("RESONANCE_ANCHOR")
    bootstrap_servers: str = var("KAFKA_BOOTSTRAP_SERVERS")
    endpoint: str = var("RESONANCE_ENDPOINT", "")  # the node's URL, which the bridge dials; or:
    # Comma-separated URLs dialled, in order, while the endpoint does not answer (endpoints.py).
    standby_endpoints: tuple[str, ...] = var("RESONANCE_STANDBY_ENDPOINTS", ())
    failover_attempts: int = var("RESONANCE_FAILOVER_ATTEMPTS", 3)  # unreachable this often: next one
    failback_after_s: float = var("RESONANCE_FAILBACK_AFTER_S", 30.0)  # the primary answering probes
    # host:port to listen on, for nodes that dial in (listener.py; README, "Nodes that dial in").
    listen: str = var("RESONANCE_LISTEN", "")
    listen_path: str = var("RESONANCE_LISTEN_PATH", "/")
    listen_token_file: str = var("RESONANCE_LISTEN_TOKEN_FILE", "")  # read at every handshake
    listen_anonymous: bool = var("RESONANCE_LISTEN_ANONYMOUS", False)
    listen_tls_cert_file: str = var("RESONANCE_LISTEN_TLS_CERT_FILE", "")  # reloaded when it changes
    listen_tls_key_file: str = var("RESONANCE_LISTEN_TLS_KEY_FILE", "")
    listen_client_ca_file: str = var("RESONANCE_LISTEN_CLIENT_CA_FILE", "")  # mutual TLS
    listen_allowed_origins: str = var("RESONANCE_LISTEN_ALLOWED_ORIGINS", "")  # comma-separated
    listen_handshake_timeout_s: float = var("RESONANCE_LISTEN_HANDSHAKE_TIMEOUT_S", 10.0)
    listen_max_pending: int = var("RESONANCE_LISTEN_MAX_PENDING", 64)  # handshakes under way
    node: str = var("RESONANCE_NODE", "resonance")
    namespace: str = var("RESONANCE_NAMESPACE", "")  # the node's, set by the operator (downward API)
    # The node's metadata.uid: the operator counts a heartbeat only for the node object it names.
    node_uid: str = var("RESONANCE_NODE_UID", "")
    inbound_topic: str = var("RESONANCE_INBOUND_TOPIC", "resonance.inbound")
    heartbeat_topic: str = var("RESONANCE_HEARTBEAT_TOPIC", "resonance.heartbeats")
    deadletter_topic: str = var("RESONANCE_DEADLETTER_TOPIC", "resonance.deadletter")
    replay_file: str = var("RESONANCE_REPLAY_FILE", "")  # a replay request, read every few seconds
    replay_topic: str = var("RESONANCE_REPLAY_TOPIC", "resonance.replays")  # replays under way and done
    frequency_hz: float = var("RESONANCE_FREQUENCY_HZ", 0.043)
    s_roi: float = var("RESONANCE_S_ROI", 0.502)
    ack_mode: Literal["ack", "send"] = var("RESONANCE_ACK_MODE", "ack")
    # A record batch that cannot be decoded: dead-letter it and go on, or stop its partition there.
    on_undecodable: Literal["deadLetter", "stop"] = var("RESONANCE_ON_UNDECODABLE", "deadLetter")
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
    # Kafka's own default: a broker answers as soon as a record arrives; an idle bridge asks twice a
    # second, not ten times (bench/RESULTS.md, idle CPU).
    fetch_max_wait_ms: int = var("KAFKA_FETCH_MAX_WAIT_MS", 500)
    session_timeout_ms: int = var("KAFKA_SESSION_TIMEOUT_MS", 10000)
    # A connection whose request goes unanswered this long is dropped and made again: the bound on
    # a broker that black-holes the bridge (aiokafka's 40 s default left a node unserved ~80 s).
    request_timeout_ms: int = var("KAFKA_REQUEST_TIMEOUT_MS", 15000)
    heartbeat_interval_ms: int = var("KAFKA_HEARTBEAT_INTERVAL_MS", 3000)
    commit_interval_ms: int = var("KAFKA_COMMIT_INTERVAL_MS", 1000)
    linger_ms: int = var("KAFKA_LINGER_MS", 5)
    batch_size: int = var("KAFKA_BATCH_SIZE", 1024 * 1024)
    auto_offset_reset: Literal["earliest", "latest"] = var("KAFKA_AUTO_OFFSET_RESET", "earliest")
    # group: replicas share the partitions (a join, seconds on Kafka); direct: one replica takes them
    # all at once, committing to the group as well (reader.py).
    assignment: Literal["group", "direct"] = var("KAFKA_ASSIGNMENT", "group")
    # Sent as "Authorization: Bearer <token>" when connecting to the node.
    auth_token: str = var("RESONANCE_AUTH_TOKEN", "")
    # Security (security.py checks the files and the combinations; README, "Security").
    auth_token_file: str = var("RESONANCE_AUTH_TOKEN_FILE", "")  # read again at every connect
    auth_header: str = var("RESONANCE_AUTH_HEADER", "Authorization")
    tls_ca_file: str = var("RESONANCE_TLS_CA_FILE", "")
    tls_cert_file: str = var("RESONANCE_TLS_CERT_FILE", "")
    tls_key_file: str = var("RESONANCE_TLS_KEY_FILE", "")
    tls_insecure_skip_verify: bool = var("RESONANCE_TLS_INSECURE_SKIP_VERIFY", False)

    def __repr__(self) -> str:  # never print the token (a slots dataclass has no usable super().__repr__)
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if shown["auth_token"]:
            shown["auth_token"] = "***"
        return "Config(" + ", ".join(f"{name}={value!r}" for name, value in shown.items()) + ")"

    @property
    def heartbeat_interval_s(self) -> float:
        return 1.0 / self.frequency_hz

    @property
    def peer(self) -> str:
        """Who the bridge relays with, as logs and metrics name it."""
        if not self.listen:
            return self.endpoint
        scheme = "wss" if self.listen_tls_cert_file else "ws"
        return f"nodes dialling {scheme}://{self.listen}{self.listen_path}"


def _check_endpoint(reader: EnvReader, endpoint: str, name: str = "RESONANCE_ENDPOINT") -> None:
    if not endpoint:
        return
    parts = urlsplit(endpoint)
    if parts.scheme not in {"ws", "wss"} or not parts.hostname:
        fix = "use a ws:// or wss:// URL, e.g. ws://lexamoris-server:8766"
        reader.problems.append(Problem(name, endpoint, "is invalid", fix))


def load(env: Mapping[str, str]) -> Config:
    """Build a Config from environment variables or raise ConfigError listing every problem."""
    r, d = EnvReader(env), declared(Config)
    seconds = "use seconds > 0, e.g. {:g}".format
    node = r.text(*d["node"])
    namespace = r.text(*d["namespace"])
    node_uid = r.text(*d["node_uid"])
    endpoint, listen = r.text(*d["endpoint"]), r.text(*d["listen"])
    if not endpoint and not listen:
        r.problems.append(Problem("RESONANCE_ENDPOINT", None, "is required", NEITHER))
    elif endpoint and listen:
        r.problems.append(Problem("RESONANCE_LISTEN", listen, "is set with RESONANCE_ENDPOINT", NEITHER))
    standbys = tuple(u.strip() for u in r.text(d["standby_endpoints"][0], "").split(",") if u.strip())
    _check_endpoint(r, endpoint)
    for url in standbys:
        _check_endpoint(r, url, "RESONANCE_STANDBY_ENDPOINTS")
    if standbys and (listen or any(u.split(":")[0] != endpoint.split(":")[0] for u in standbys)):
        fix = "use URLs of RESONANCE_ENDPOINT's scheme (they share its TLS), and RESONANCE_ENDPOINT"
        r.problems.append(Problem("RESONANCE_STANDBY_ENDPOINTS", ",".join(standbys), "cannot be used", fix))
    config = Config(
        node=node,
        namespace=namespace,
        node_uid=node_uid,
        endpoint=endpoint,
        standby_endpoints=standbys,
        failover_attempts=r.integer(*d["failover_attempts"], 1, 1000),
        failback_after_s=r.number(*d["failback_after_s"], 0.0, 86400.0, seconds(30)),
        listen=listen,
        listen_path=r.text(*d["listen_path"]),
        listen_token_file=r.text(*d["listen_token_file"]),
        listen_anonymous=r.boolean(*d["listen_anonymous"]),
        listen_tls_cert_file=r.text(*d["listen_tls_cert_file"]),
        listen_tls_key_file=r.text(*d["listen_tls_key_file"]),
        listen_client_ca_file=r.text(*d["listen_client_ca_file"]),
        listen_allowed_origins=r.text(*d["listen_allowed_origins"]),
        listen_handshake_timeout_s=r.number(*d["listen_handshake_timeout_s"], 0.0, 600.0, seconds(10)),
        listen_max_pending=r.integer(*d["listen_max_pending"], 1, 100_000),
        topic=r.topic(d["topic"][0], required=True),
        anchor=r.required(d["anchor"][0], "set the node's anchor, e.g. BOLZANO_71"),
        bootstrap_servers=r.required(d["bootstrap_servers"][0], "set host:port[,host:port], e.g. kafka:9092"),
        inbound_topic=r.topic(*d["inbound_topic"]),
        heartbeat_topic=r.topic(*d["heartbeat_topic"]),
        deadletter_topic=r.topic(*d["deadletter_topic"]),
        replay_file=r.text(*d["replay_file"]),
        replay_topic=r.topic(*d["replay_topic"]),
        frequency_hz=r.number(*d["frequency_hz"], 0.0, 100.0, "use a number > 0 and <= 100 (Hz)"),
        s_roi=r.number(*d["s_roi"], -1e9, 1e9, "use a finite number, e.g. 0.5020"),
        ack_mode="send" if r.choice(*d["ack_mode"], ("ack", "send")) == "send" else "ack",
        on_undecodable=(
            "stop" if r.choice(*d["on_undecodable"], ("deadLetter", "stop")) == "stop" else "deadLetter"
        ),
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
        request_timeout_ms=r.integer(*d["request_timeout_ms"], 1000, 600_000),
        heartbeat_interval_ms=r.integer(*d["heartbeat_interval_ms"], 100, 600_000),
        commit_interval_ms=r.integer(*d["commit_interval_ms"], 10, 600_000),
        linger_ms=r.integer(*d["linger_ms"], 0, 60_000),
        batch_size=r.integer(*d["batch_size"], 1024, 64 * 1024 * 1024),
        auto_offset_reset=(
            "latest" if r.choice(*d["auto_offset_reset"], ("earliest", "latest")) == "latest" else "earliest"
        ),
        assignment="direct" if r.choice(*d["assignment"], ("group", "direct")) == "direct" else "group",
        auth_token=env.get(d["auth_token"][0], "").strip(),  # free text: a token is never "invalid"
        auth_token_file=r.text(*d["auth_token_file"]),
        auth_header=r.text(*d["auth_header"]),
        tls_ca_file=r.text(*d["tls_ca_file"]),
        tls_cert_file=r.text(*d["tls_cert_file"]),
        tls_key_file=r.text(*d["tls_key_file"]),
        tls_insecure_skip_verify=r.boolean(*d["tls_insecure_skip_verify"]),
        **kafka_security(r),
    )
    r.problems += security.listen_problems(config) if listen else security.problems(config)
    if config.heartbeat_interval_ms >= config.session_timeout_ms:
        r.problems.append(
            Problem(
                d["heartbeat_interval_ms"][0],
                str(config.heartbeat_interval_ms),
                f"must be lower than KAFKA_SESSION_TIMEOUT_MS={config.session_timeout_ms}",
                "lower the first or raise the second",
            )
        )
    if config.request_timeout_ms <= config.fetch_max_wait_ms + 1000:
        r.problems.append(
            Problem(
                d["request_timeout_ms"][0],
                str(config.request_timeout_ms),
                f"must exceed KAFKA_FETCH_MAX_WAIT_MS={config.fetch_max_wait_ms} by over 1000 (fetches wait)",
                "raise the first or lower the second",
            )
        )
    if r.problems:
        raise ConfigError(r.problems)
    return config
