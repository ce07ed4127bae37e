"""TLS and credentials against real servers: a wss:// node with a private CA, mutual TLS, a token from
a file rotated without a restart, Kafka over TLS (through a TLS-terminating proxy: the embedded broker
speaks no TLS to aiokafka), and the configuration errors of bad combinations."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from resonance_bridge import security
from resonance_bridge.config import ConfigError, load
from resonance_local.embedded import EmbeddedBroker
from resonance_local.node import NodeServer

from ..support.harness import BridgeProcess, Topics, bridge_env, consume, produce, seqs, state_update
from ..support.pki import Authority
from ..support.poll import until
from ..support.proxy import Proxied

BASE = {
    "RESONANCE_ENDPOINT": "wss://127.0.0.1:1",
    "RESONANCE_TOPIC": "t",
    "RESONANCE_ANCHOR": "A",
    "KAFKA_BOOTSTRAP_SERVERS": "k:1",
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority.make(tmp_path_factory.mktemp("pki"))


async def wss_node(pki: Authority, name: str = "server", **kwargs: object) -> NodeServer:
    pair = pki.issue(name, hosts=kwargs.pop("hosts", ("127.0.0.1", "localhost")))  # type: ignore[arg-type]
    tls = pki.server_context(pair, require_client=bool(kwargs.pop("require_client", False)))
    node = NodeServer("secure", port=0, printer=None, tls=tls, **kwargs)  # type: ignore[arg-type]
    await node.start()
    return node


async def test_a_wss_node_with_a_private_ca(
    broker: EmbeddedBroker, topics: Topics, pki: Authority, workdir: Path
) -> None:
    """Verified with RESONANCE_TLS_CA_FILE; without it, refused and the cause shown; a certificate for
    another host, refused as such."""
    node = await wss_node(pki)
    other = await wss_node(pki, "elsewhere", hosts=("elsewhere.example",))
    endpoint, wrong_host = f"wss://127.0.0.1:{node.port}", f"wss://127.0.0.1:{other.port}"
    # Groups of their own: a member that never connects to its node would hold the partition.
    untrusted = BridgeProcess(
        bridge_env(broker, topics, endpoint, KAFKA_GROUP_ID=f"{topics.group}-u"), workdir / "untrusted.log"
    ).start()
    mismatch_env = {"RESONANCE_TLS_CA_FILE": str(pki.cert), "KAFKA_GROUP_ID": f"{topics.group}-m"}
    mismatch = BridgeProcess(
        bridge_env(broker, topics, wrong_host, **mismatch_env), workdir / "mismatch.log"
    ).start()
    trusted = BridgeProcess(
        bridge_env(broker, topics, endpoint, RESONANCE_TLS_CA_FILE=str(pki.cert)), workdir / "trusted.log"
    ).start()
    try:
        await trusted.wait_ready()
        await produce(broker, topics.node, [state_update(0)])
        await node.wait_for(lambda: seqs(node) == [0], 20)
        await until(lambda: "refused" in untrusted.readyz(), 20, untrusted.output)
        said = untrusted.readyz()
        assert "certificate verify failed: unable to get local issuer certificate" in said, said
        assert f"for {endpoint}: set RESONANCE_TLS_CA_FILE" in said
        await until(lambda: "refused" in mismatch.readyz(), 20, mismatch.output)
        assert "the certificate is for another host" in mismatch.readyz()
        assert untrusted.metric("resonance_connect_failures_total", side="websocket", reason="tls") >= 1
    finally:
        for bridge in (untrusted, mismatch, trusted):
            bridge.stop()
        await node.close()
        await other.close()


async def test_mutual_tls(broker: EmbeddedBroker, topics: Topics, pki: Authority, workdir: Path) -> None:
    node = await wss_node(pki, require_client=True)
    endpoint = f"wss://127.0.0.1:{node.port}"
    client = pki.issue("bridge", client=True)
    alone = {"RESONANCE_TLS_CA_FILE": str(pki.cert), "KAFKA_GROUP_ID": f"{topics.group}-w"}
    without = BridgeProcess(bridge_env(broker, topics, endpoint, **alone), workdir / "without.log").start()
    env = bridge_env(
        broker,
        topics,
        endpoint,
        RESONANCE_TLS_CA_FILE=str(pki.cert),
        RESONANCE_TLS_CERT_FILE=str(client.cert),
        RESONANCE_TLS_KEY_FILE=str(client.key),
    )
    bridge = BridgeProcess(env, workdir / "with.log").start()
    try:
        await bridge.wait_ready()
        assert node.connections_seen >= 1 and bridge.metric("resonance_websocket_connected") == 1
        await until(lambda: without.status("/readyz") == 503 and "websocket" in without.readyz(), 20)
        assert without.metric("resonance_websocket_connected") == 0
    finally:
        bridge.stop()
        without.stop()
        await node.close()


async def test_a_token_file_is_read_at_every_connect(
    broker: EmbeddedBroker, topics: Topics, workdir: Path
) -> None:
    """A wrong token: 401 on /readyz, retried slowly; the Secret's file rewritten: connected at the next
    try, by the same process. The token never reaches the log."""
    node = NodeServer("guarded", port=0, printer=None, token="the-right-token", token_header="X-API-Key")
    await node.start()
    token = workdir / "token"
    token.write_text("a-wrong-token\n")
    env = bridge_env(
        broker,
        topics,
        f"ws://127.0.0.1:{node.port}",
        RESONANCE_AUTH_TOKEN_FILE=str(token),
        RESONANCE_REFUSED_RETRY_S="2",
        RESONANCE_AUTH_HEADER="X-API-Key",
    )
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        await until(lambda: "HTTP 401" in bridge.readyz(), 20, bridge.output)
        assert "check RESONANCE_AUTH_TOKEN_FILE" in bridge.readyz()
        assert node.last_authorization is None  # a custom header: the token goes as X-API-Key
        assert node.refused >= 1
        pid = bridge.process.pid if bridge.process else 0
        token.write_text("the-right-token\n")  # as the kubelet updates a mounted Secret
        await bridge.wait_ready(10)
        assert bridge.process is not None and bridge.process.pid == pid
        output = bridge.output()
        assert "the-right-token" not in output and "a-wrong-token" not in output
    finally:
        bridge.stop()
        await node.close()


async def test_kafka_over_tls(proxied: Proxied, pki: Authority, workdir: Path) -> None:
    """The broker behind a TLS-terminating proxy (a real handshake, CA verification, client
    certificates): records flow both ways with KAFKA_SSL_*; without the CA, refused with the cause."""
    server = pki.issue("kafka")
    client = pki.issue("kafka-client", client=True)
    tls_client = ssl.create_default_context(cafile=pki.cert)
    tls_client.load_cert_chain(client.cert, client.key)
    broker, _, topics = await proxied(tls=pki.server_context(server, require_client=True), client=tls_client)
    node = NodeServer("tls-kafka", port=0, printer=None)
    await node.start()
    kafka_tls = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_FILE": str(pki.cert)}
    client_files = {"KAFKA_SSL_CERT_FILE": str(client.cert), "KAFKA_SSL_KEY_FILE": str(client.key)}
    env = bridge_env(broker, topics, f"ws://127.0.0.1:{node.port}", **kafka_tls, **client_files)
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    no_ca = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_GROUP_ID": f"{topics.group}-b", **client_files}
    blind = BridgeProcess(
        bridge_env(broker, topics, f"ws://127.0.0.1:{node.port}", **no_ca), workdir / "blind.log"
    )
    try:
        await bridge.wait_ready(60)
        await produce(broker, topics.node, [state_update(1)])
        await node.wait_for(lambda: seqs(node) == [1], 30)
        await node.send(state_update(2).decode())
        [stored] = await consume(broker, topics.inbound, 1)
        assert stored.value == state_update(2)
        blind.start()
        await until(lambda: "kafka refused" in blind.readyz(), 30, blind.output)
        assert "certificate verify failed" in blind.readyz()
        assert "set KAFKA_SSL_CA_FILE" in blind.readyz()
    finally:
        bridge.stop()
        blind.stop()
        await node.close()


async def test_a_broker_refusing_sasl_is_refused_not_unreachable(
    broker: EmbeddedBroker, topics: Topics, workdir: Path
) -> None:
    """The embedded broker knows no SASL: its refusal reaches /readyz as one (with the broker's cause,
    not "unable to bootstrap"), retried slowly; the password never reaches the log."""
    password = workdir / "password"
    password.write_text("the-sasl-password\n")
    sasl = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "resonance",
        "KAFKA_SASL_PASSWORD_FILE": str(password),
    }
    bridge = BridgeProcess(bridge_env(broker, topics, "ws://127.0.0.1:1", **sasl), workdir / "bridge.log")
    bridge.start()
    try:
        await until(lambda: "kafka refused" in bridge.readyz(), 30, bridge.output)
        assert "UnsupportedSaslMechanism" in bridge.readyz()
        assert "the-sasl-password" not in bridge.output()
    finally:
        bridge.stop()


def test_bad_combinations_are_configuration_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    (tmp_path / "password").write_text("s3cret\n")
    cases = {
        "KAFKA_SASL_MECHANISM": {"KAFKA_SASL_MECHANISM": "PLAIN"},  # with PLAINTEXT
        "RESONANCE_TLS_CA_FILE": {"RESONANCE_TLS_CA_FILE": str(tmp_path / "missing.pem")},
        "KAFKA_SSL_CA_FILE": {
            "KAFKA_SECURITY_PROTOCOL": "SSL",
            "KAFKA_SSL_CA_FILE": str(tmp_path / "empty.pem"),
        },
        "RESONANCE_TLS_CERT_FILE": {"RESONANCE_TLS_KEY_FILE": str(tmp_path / "password")},  # a key, no cert
        "KAFKA_SASL_PASSWORD_FILE": {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": "u",
        },
        "RESONANCE_ENDPOINT": {
            "RESONANCE_ENDPOINT": "ws://plain:1",
            "RESONANCE_TLS_INSECURE_SKIP_VERIFY": "true",
        },
    }
    for variable, env in cases.items():
        with pytest.raises(ConfigError) as error:
            load({**BASE, **env})
        assert [p.variable for p in error.value.problems] == [variable], (variable, error.value.problems)
        assert all(str(p).count("\n") == 0 for p in error.value.problems)
    sasl = load(
        {
            **BASE,
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "relay",
            "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "password"),
        }
    )
    assert security.kafka(sasl) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "relay",
        "sasl_plain_password": "s3cret",
    }
    assert "s3cret" not in repr(sasl)
