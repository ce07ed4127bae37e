"""The pure builders: golden manifests, strict schema validation, the status rules."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from resonance_operator import builders, health, listening, podpolicy, status, tracked
from resonance_operator.model import Node, Toleration
from resonance_operator.settings import Settings, load

from ..support.kube import ROOT

GOLDEN = ROOT / "tests" / "golden"
SETTINGS = Settings(bridge_image="ghcr.io/resonance-io/resonance:0.1.0", kafka_bootstrap_servers="kafka:9092")


UID = "0f6b4a52-6c1d-4f0e-9b7a-2d3c4e5f6a7b"


def example(name: str, **spec: Any) -> Node:
    body = yaml.safe_load((ROOT / "examples" / f"{name}-node.yaml").read_text())
    body["metadata"].update(namespace="resonance", uid=UID, generation=3)
    body["spec"].update(spec)
    return Node.from_body(body)


# Every security field of a node: its Secrets become read-only files and *_FILE variables.
SECURED = {
    "endpoint": "wss://lexamoris.example:8766",
    "tls": {
        "caSecretRef": {"name": "node-ca", "key": "ca.crt"},
        "clientCertSecretRef": {"name": "bridge-client"},
    },
    "auth": {"tokenSecretRef": {"name": "lexamoris-token", "key": "token"}, "header": "X-API-Key"},
    "kafka": {
        "bootstrapServers": "kafka-secure:9093",
        "tls": {
            "caSecretRef": {"name": "kafka-ca", "key": "ca.crt"},
            "clientCertSecretRef": {"name": "kafka-client"},
        },
        "sasl": {
            "mechanism": "SCRAM-SHA-512",
            "usernameSecretRef": {"name": "kafka-user", "key": "username"},
            "passwordSecretRef": {"name": "kafka-user", "key": "password"},
        },
    },
}
# A node that dials in (spec.listen), with every field: a token, wss with mutual TLS, browsers' origins.
LISTENING = {
    "listen": {
        "port": 8765,
        "path": "/resonance",
        "auth": {"tokenSecretRef": {"name": "server-token", "key": "token"}},
        "tls": {
            "certSecretRef": {"name": "bridge-server-cert"},
            "clientCaSecretRef": {"name": "nodes-ca", "key": "ca.crt"},
        },
        "allowedOrigins": ["https://app.example.com"],
        "service": {"type": "LoadBalancer", "annotations": {"example.com/lb": "internal"}},
    }
}
# A node with a standby endpoint (spec.endpoints), and its failover settings.
STANDBY = {
    "endpoint": None,
    "endpoints": ["wss://lexamoris.example:8766", "wss://lexamoris-standby.example:8766"],
    "failover": {"attempts": 2, "failbackAfterSeconds": 60},
    "tls": {"caSecretRef": {"name": "node-ca", "key": "ca.crt"}},
}
NODES: dict[str, dict[str, Any]] = {
    "lexamoris": {},
    "nexus": {},
    "secured": SECURED,
    "listening": LISTENING,
    "standby": STANDBY,
}
EXAMPLES = {"nexus": "nexus", "listening": "resonance-server"}


def node_of(name: str) -> Node:
    return example(EXAMPLES.get(name, "lexamoris"), **NODES[name])


def built(name: str) -> dict[str, Any]:
    return builders.deployment(node_of(name), SETTINGS)


def golden(path: Path, made: dict[str, Any]) -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(yaml.safe_dump(made, sort_keys=False))
    assert made == yaml.safe_load(path.read_text()), "run with UPDATE_GOLDEN=1 to accept a deliberate change"


@pytest.mark.parametrize("name", NODES)
def test_deployment_matches_golden_yaml(name: str) -> None:
    golden(GOLDEN / f"{name}-deployment.yaml", built(name))


def test_a_listening_nodes_service_matches_golden_yaml_and_a_dialling_node_has_none() -> None:
    service = listening.service(node_of("listening"))
    assert service is not None
    golden(GOLDEN / "listening-service.yaml", service)
    for version in ("1.30", "1.37"):
        kubernetes_validate.validate(service, version, strict=True)
    assert listening.service(node_of("lexamoris")) is None


@pytest.mark.parametrize(
    ("where", "exposure"),
    [
        ("ingress", {"host": "lexamoris.nodes.example.com", "className": "nginx", "tlsSecretName": "tls"}),
        (
            "httpRoute",
            {
                "host": "lexamoris.nodes.example.com",
                "parentRefs": [{"name": "edge", "namespace": "gateways", "sectionName": "https"}],
            },
        ),
    ],
)
def test_a_listening_nodes_ingress_or_route_matches_golden_yaml(where: str, exposure: dict[str, Any]) -> None:
    node = example("resonance-server", listen={**LISTENING["listen"], where: exposure})
    settings = dataclasses.replace(SETTINGS, ingress_annotations=(("example.com/read-timeout", "3600"),))
    made = listening.exposure(node, settings)
    assert made is not None
    golden(GOLDEN / f"listening-{made['kind'].lower()}.yaml", made)
    if made["kind"] == "Ingress":  # the strict schemas know no Gateway API
        for version in ("1.30", "1.37"):
            kubernetes_validate.validate(made, version, strict=True)
    assert listening.exposure(node_of("listening"), settings) is None
    assert listening.exposure(node_of("lexamoris"), settings) is None


@pytest.mark.parametrize("version", ["1.30", "1.37"])
@pytest.mark.parametrize("name", NODES)
def test_deployment_passes_strict_kubernetes_schemas(version: str, name: str) -> None:
    kubernetes_validate.validate(built(name), version, strict=True)
    node = example("lexamoris", resources={"requests": {"cpu": "100m"}, "limits": {"memory": "96Mi"}})
    kubernetes_validate.validate(builders.deployment(node, SETTINGS), version, strict=True)
    kubernetes_validate.validate(builders.service_account(node), version, strict=True)


def test_pod_template_defaults_and_node_overrides() -> None:
    """The operator's defaults (chart values bridge.*) apply to every bridge pod; a node's
    spec.template merges labels and annotations and replaces each scheduling field."""
    defaults = load(
        {
            "RESONANCE_BRIDGE_POD_TEMPLATE": json.dumps(
                {
                    "metadata": {"labels": {"team": "a", "tier": "relay"}, "annotations": {"owner": "ops"}},
                    "spec": {
                        "imagePullSecrets": [{"name": "regcred"}],
                        "nodeSelector": {"pool": "general"},
                        "priorityClassName": "low",
                    },
                }
            )
        }
    )
    plain = builders.deployment(example("lexamoris"), defaults)["spec"]["template"]
    assert plain["metadata"]["labels"]["team"] == "a" and plain["metadata"]["annotations"]["owner"] == "ops"
    assert plain["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert (plain["spec"]["nodeSelector"], plain["spec"]["priorityClassName"]) == ({"pool": "general"}, "low")

    toleration = {"key": "dedicated", "operator": "Equal", "value": "bridges", "effect": "NoSchedule"}
    own = example(
        "lexamoris",
        template={
            "metadata": {"labels": {"example.com/team": "b"}, "annotations": {"example.com/owner": "b"}},
            "spec": {"nodeSelector": {"pool": "edge"}, "tolerations": [toleration]},
        },
    )
    # What the operator allows (podpolicy) is copied as is.
    allowed = dataclasses.replace(
        defaults,
        allowed_labels=("example.com/*",),
        allowed_annotations=("example.com/owner",),
        allowed_node_selectors=(("pool", "edge"),),
        allowed_tolerations=(Toleration(key="dedicated", operator="Exists"),),
    )
    assert podpolicy.problems(own.spec, allowed) == []
    built = builders.deployment(own, allowed)
    pod = built["spec"]["template"]
    assert pod["metadata"]["labels"] | builders.labels("lexamoris") == pod["metadata"]["labels"]
    assert (pod["metadata"]["labels"]["example.com/team"], pod["metadata"]["labels"]["tier"]) == (
        "b",
        "relay",
    )
    assert pod["metadata"]["annotations"]["example.com/owner"] == "b"
    assert pod["spec"]["nodeSelector"] == {"pool": "edge"} and pod["spec"]["tolerations"] == [toleration]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]  # the default, not overridden
    assert (
        built["metadata"]["annotations"]
        != builders.deployment(example("lexamoris"), defaults)["metadata"]["annotations"]
    ), "a template change rolls the pods"
    kubernetes_validate.validate(built, "1.37", strict=True)


def test_a_bad_pod_template_default_is_a_config_error() -> None:
    from resonance_bridge.config import ConfigError

    with pytest.raises(ConfigError) as error:
        load({"RESONANCE_BRIDGE_POD_TEMPLATE": '{"spec": {"nodeSelector": "pool"}}'})
    assert error.value.problems[0].variable == "RESONANCE_BRIDGE_POD_TEMPLATE"


def test_pod_grace_covers_the_bridges_whole_shutdown() -> None:
    """The bridge waits shutdownGraceSeconds for acks, then closes within CLOSE_BUDGET_S (and a
    backstop cancels it a second later): the kubelet's SIGKILL must come after all of that."""
    from resonance_bridge.config import CLOSE_BUDGET_S

    for grace in (0, 10, 45):
        pod = builders.deployment(example("lexamoris", shutdownGraceSeconds=grace), SETTINGS)["spec"][
            "template"
        ]
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["RESONANCE_SHUTDOWN_GRACE_S"] == str(grace)
        assert pod["spec"]["terminationGracePeriodSeconds"] >= grace + CLOSE_BUDGET_S + 1


def test_bridge_env_is_the_bridge_contract() -> None:
    from resonance_bridge.config import load as load_bridge

    node = example("lexamoris")
    env = builders.bridge_env(node.name, node.namespace, node.spec, SETTINGS, node.uid)
    config = load_bridge(env)  # the bridge accepts exactly what the operator sets
    assert (config.namespace, config.node_uid) == ("", node.uid)  # the namespace: the downward API's
    assert (config.node, config.endpoint, config.topic, config.anchor) == (
        "lexamoris",
        "ws://lexamoris-server:8766",
        "resonance.lexamoris",
        "BOLZANO_71",
    )
    assert (config.frequency_hz, config.group_id, config.bootstrap_servers) == (
        0.043,
        "resonance-bridge.resonance.lexamoris",
        "kafka:9092",
    )


def test_config_hash_follows_the_spec_only() -> None:
    base = builders.deployment(example("lexamoris"), SETTINGS)
    same = builders.deployment(example("lexamoris"), SETTINGS)
    changed = builders.deployment(example("lexamoris", frequencyHz=1.0), SETTINGS)
    key = builders.HASH_ANNOTATION
    assert base["metadata"]["annotations"][key] == same["metadata"]["annotations"][key]
    assert base["metadata"]["annotations"][key] != changed["metadata"]["annotations"][key]


def test_paused_scales_to_zero_and_kafka_override_wins() -> None:
    node = example("lexamoris", paused=True, kafka={"bootstrapServers": "other:9093"})
    built = builders.deployment(node, SETTINGS)
    assert built["spec"]["replicas"] == 0
    env = {e["name"]: e.get("value") for e in built["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "other:9093"


def test_is_subset_ignores_server_additions_but_not_edits() -> None:
    desired = {"spec": {"replicas": 1, "template": {"containers": [{"name": "b", "env": [{"name": "A"}]}]}}}
    actual = {
        "spec": {
            "replicas": 1,
            "paused": False,
            "template": {
                "containers": [
                    {"name": "b", "env": [{"name": "A"}], "terminationMessagePath": "/dev/termination-log"}
                ]
            },
        }
    }
    assert builders.is_subset(desired, actual)
    actual["spec"]["replicas"] = 3
    assert not builders.is_subset(desired, actual)


def _deployment(ready: int, observed: int = 1, generation: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "status": {"observedGeneration": observed, "readyReplicas": ready, "updatedReplicas": 1},
    }


def test_status_conditions_and_transition_times() -> None:
    node = example("lexamoris")
    first = status.node_status(node, _deployment(0), {}, "2026-01-01T00:00:00Z")
    ready = {c["type"]: c for c in first["conditions"]}
    assert (ready["Ready"]["status"], ready["Ready"]["reason"]) == ("False", "BridgeNotReady")
    assert first["observedGeneration"] == 3 and ready["Ready"]["observedGeneration"] == 3
    beat = _beat(received=100.0)
    second = status.node_status(node, _deployment(1), first, "2026-01-01T00:01:00Z", beat=beat, clock=101.0)
    conds = {c["type"]: c for c in second["conditions"]}
    assert (conds["Ready"]["status"], conds["Ready"]["lastTransitionTime"]) == (
        "True",
        "2026-01-01T00:01:00Z",
    )
    assert (
        conds["Degraded"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    )  # unchanged status keeps its time
    stale = status.node_status(
        node, _deployment(1, observed=1, generation=2), second, "2026-01-01T00:02:00Z", beat=beat, clock=101.0
    )
    assert {c["type"]: c for c in stale["conditions"]}["Ready"]["status"] == "False"
    failed = status.node_status(node, None, second, "2026-01-01T00:03:00Z", error="HTTP 403: forbidden")
    degraded = {c["type"]: c for c in failed["conditions"]}["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "ReconcileFailed")


def _beat(received: float, websocket: bool = True, error: str | None = None, **more: Any) -> health.Beat:
    record = {"node": "lexamoris", "namespace": "resonance", "uid": UID, "websocket_connected": websocket}
    record |= {"websocket_error": error, "kafka_connected": True, "in_flight": 3, "lag": 123456}
    record |= {"relayed_out": 98765, "relayed_in": 7, "dead_letters": 0}
    record |= {"measured_frequency_hz": 0.04312345, "drift_seconds": 0.01234, **more}
    parsed = health.parse(json.dumps(record).encode(), received, "2026-01-01T00:00:30Z")
    assert parsed is not None and parsed[0] == ("resonance", "lexamoris", UID)
    return parsed[1]


def test_ready_needs_the_data_plane_and_names_the_missing_part() -> None:
    """Ready = Deployment ready AND WebSocketConnected AND HeartbeatFresh; the reason says which failed."""
    node = example("lexamoris")  # 0.043 Hz: a beat is due every 23.3 s, missing after 69.8 s

    def ready(beat: health.Beat | None, clock: float) -> dict[str, dict[str, str]]:
        built = status.node_status(node, _deployment(1), {}, "2026-01-01T00:00:00Z", beat=beat, clock=clock)
        return {c["type"]: c for c in built["conditions"]}

    never = ready(None, 0.0)
    assert (never["Ready"]["reason"], never["HeartbeatFresh"]["status"]) == ("NoHeartbeatYet", "False")
    assert never["WebSocketConnected"]["status"] == "Unknown"
    down = ready(_beat(100.0, websocket=False, error="unreachable: [Errno 111] Connect call failed"), 110.0)
    assert (down["Ready"]["status"], down["Ready"]["reason"]) == ("False", "WebSocketDisconnected")
    assert down["Ready"]["message"] == (
        "the bridge cannot reach ws://lexamoris-server:8766: unreachable: [Errno 111] Connect call failed"
    )
    assert down["KafkaConnected"]["status"] == "True" and down["HeartbeatFresh"]["status"] == "True"
    silent = ready(_beat(100.0), 100.0 + 3 / 0.043 + 1)
    assert (silent["Ready"]["reason"], silent["HeartbeatFresh"]["reason"]) == (
        "HeartbeatMissing",
        "HeartbeatMissing",
    )
    assert ready(_beat(100.0), 100.0 + 3 / 0.043 - 1)["Ready"]["status"] == "True"


def test_an_undecodable_batch_shows_and_a_stopped_partition_is_not_ready() -> None:
    """Dead-lettered: BatchesDecodable says so, Ready stays True. Stopped (spec.onUndecodable: stop):
    Ready is False with the bridge's words, even while the Deployment still counts the pod ready."""
    node = example("lexamoris")

    def conditions(beat: health.Beat) -> dict[str, dict[str, str]]:
        built = status.node_status(node, _deployment(1), {}, "2026-01-01T00:00:00Z", beat=beat, clock=100.0)
        assert built["bridge"]["undecodableBatches"] == beat.bridge["undecodableBatches"]
        return {c["type"]: c for c in built["conditions"]}

    fine = conditions(_beat(100.0))
    assert (fine["BatchesDecodable"]["status"], fine["Ready"]["status"]) == ("True", "True")
    where = "partition node.x/0 offsets 10-12: CorruptRecordException: Invalid CRC"
    dead = conditions(_beat(100.0, undecodable_batches=1, undecodable=f"dead-lettered {where}"))
    assert (dead["BatchesDecodable"]["reason"], dead["Ready"]["status"]) == (
        "UndecodableDeadLettered",
        "True",
    )
    assert where in dead["BatchesDecodable"]["message"]
    stopped = ["node.x/0/10-12: CorruptRecordException: Invalid CRC"]
    stop = conditions(_beat(100.0, undecodable_batches=1, stopped_partitions=stopped))
    assert (stop["Ready"]["status"], stop["Ready"]["reason"]) == ("False", "PartitionStopped")
    assert stopped[0] in stop["Ready"]["message"] and "spec.onUndecodable" in stop["Ready"]["message"]


def test_heartbeat_records_become_a_status_that_does_not_churn() -> None:
    bridge = _beat(0.0).bridge
    assert bridge["lag"] == 123000 and bridge["relayedOut"] == 98800 and bridge["inFlight"] == 3
    assert (bridge["frequencyHz"], bridge["driftSeconds"]) == (0.0431, 0.01)
    for junk in (b"", b"[]", b'{"node": "x"}', b'{"node": "x", "namespace": 5}', b"[" * 5000):
        assert health.parse(junk, 0.0, "2026-01-01T00:00:00Z") is None
    for uidless in (b'{"node": "x", "namespace": "y"}', b'{"node": "x", "namespace": "y", "uid": 7}'):
        parsed = health.parse(uidless, 0.0, "2026-01-01T00:00:00Z")  # an older bridge's: no uid
        assert parsed is not None and parsed[0] == ("y", "x", "")  # which matches no node


def test_operator_settings_from_environment() -> None:
    settings = load({"RESONANCE_WATCH_NAMESPACES": "a, b", "RESONANCE_BRIDGE_IMAGE": "img:1"})
    assert settings.watch_namespaces == ("a", "b") and settings.bridge_image == "img:1"


def test_the_readme_table_is_the_operators_settings() -> None:
    """Every variable the operator reads is documented, with the default it really has."""
    from resonance_bridge.config import declared

    from ..support.readme import literal, settings_table

    table = settings_table("RESONANCE_BRIDGE_IMAGE")
    assert set(table) == {env for env, _ in declared(Settings).values()}
    for variable, cell in table.items():
        value = literal(cell)
        if value is not None:
            assert load({variable: value}) == load({}), f"{variable}: the README says {cell}"


def test_status_refreshes_share_a_budget_across_nodes() -> None:
    """REFRESHES_PER_S at most, in bursts of as many: 10,000 beating nodes are not 430 patches a second."""
    budget = tracked.Budget(50.0)
    assert sum(budget.take(100.0) for _ in range(200)) == 50  # the burst, then nothing at that instant
    taken = sum(budget.take(100.0 + i / 1000) for i in range(1, 10_001))  # 10 s, a try every ms
    assert 495 <= taken <= 505


def test_a_beat_is_looked_at_again_when_it_goes_stale_and_never_after() -> None:
    beat = _beat(received=100.0)
    assert health.stale_at(beat, 101.0, 0.5) == 106.0  # three periods of 2 s
    assert health.stale_at(beat, 107.0, 0.5) == health.NEVER and health.stale_at(None, 0, 1) == health.NEVER
