"""A real Kubernetes API server (kube-lite) and the operator as a real process, for the operator tests."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


class Cluster:
    """kubectl against one API server; every call names the kubeconfig explicitly."""

    def __init__(self, kubeconfig: Path, audit_log: Path | None = None, controllers: bool = False) -> None:
        self.kubeconfig = kubeconfig
        self.audit_log = audit_log  # None: the server keeps none we can read
        self.controllers = controllers  # True: a real cluster's controllers own Deployment status
        self.created: list[str] = []  # namespaces the tests made

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def apply(self, manifest: dict[str, Any] | str, check: bool = True) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.kubectl("apply", "-f", "-", stdin=text, check=check)

    def patch(
        self, kind: str, name: str, namespace: str, body: dict[str, Any], subresource: str | None = None
    ) -> None:
        """A merge patch, of the object or of one of its subresources (status, scale)."""
        where = [f"--subresource={subresource}"] if subresource else []
        self.kubectl("patch", kind, name, "-n", namespace, *where, "--type=merge", "-p", json.dumps(body))

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        result = self.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr or "not found" in result.stderr:
                return None
            raise AssertionError(result.stderr)
        body: dict[str, Any] = json.loads(result.stdout)
        return body

    def items(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(
            self.kubectl("get", kind, "-n", namespace, "-o", "json").stdout
        )["items"]
        return items

    def namespace(self, name: str) -> str:
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        self.created.append(name)
        return name

    def needs_fake_status(self) -> None:
        """Skip where controllers run: the test writes a Deployment's status itself."""
        if self.controllers:
            pytest.skip(
                "writes a Deployment's status, which a real cluster's controllers own: kube-lite or envtest"
            )


class Operator:
    """`resonance operator` as a child process, as the chart's Deployment runs it."""

    def __init__(self, kubeconfig: Path, log: Path, bootstrap: str) -> None:
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "RESONANCE_BRIDGE_IMAGE": "resonance:test",
            "RESONANCE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,  # where the bridges' heartbeats are read
            "RESONANCE_KAFKA_ENABLE_IDEMPOTENCE": "false",  # the embedded broker's
            "RESONANCE_OPERATOR_LIVENESS_PORT": str(_free_port()),
            "RESONANCE_OPERATOR_METRICS_PORT": str(_free_port()),
            # The tests' namespaces (t-...): a test may run an operator of its own elsewhere.
            "RESONANCE_WATCH_NAMESPACES": "t-*",
            # A Lease of its own: another test's operators (or a cluster's) elect on theirs.
            "RESONANCE_LEASE_NAME": f"resonance-operator-{uuid.uuid4().hex[:8]}",
            # A listening node's Ingress or HTTPRoute: hosts of its own namespace only.
            "RESONANCE_ALLOWED_INGRESS_HOSTS": "*.{namespace}.nodes.example.com",
            "RESONANCE_INGRESS_ANNOTATIONS": '{"example.com/read-timeout": "3600"}',
        }
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "resonance_local", "operator"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM, as a rollout stops a pod: kopf stops, the Lease is handed over."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, series: str) -> float:
        """One series of the operator's /metrics, e.g. 'name{label="x"}' (0 if absent)."""
        port = self.env["RESONANCE_OPERATOR_METRICS_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
        return float(found[1]) if found else 0.0


def _free_port() -> int:
    from resonance_local.embedded import free_port

    return free_port()


def condition(node: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((node or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return None


NODE: dict[str, Any] = {
    "apiVersion": "resonance.io/v1alpha1",
    "kind": "ResonanceNode",
    "metadata": {"name": "lexamoris"},
    "spec": {
        "endpoint": "ws://lexamoris-server:8766",
        "topic": "resonance.lexamoris",
        "anchor": "BOLZANO_71",
    },
}


def uid_of(cluster: Cluster, namespace: str, name: str = "lexamoris") -> str:
    """A node's metadata.uid, as its bridge is told it (RESONANCE_NODE_UID)."""
    body = cluster.get("rn", name, namespace)
    assert body is not None, f"no node {namespace}/{name}"
    return str(body["metadata"]["uid"])


def node(namespace: str, name: str = "lexamoris", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(NODE)
    body["metadata"] = {"name": name, "namespace": namespace}
    body["spec"].update(spec)
    for key in [k for k, v in body["spec"].items() if v is None]:
        del body["spec"][key]
    return body


def heartbeat(namespace: str, node: str, uid: str, websocket: bool = True, **fields: Any) -> bytes:
    """A bridge's heartbeat record (README, "Heartbeat records"), as a test plays the bridge: `uid`
    is the node's metadata.uid (uid_of), which the operator matches."""
    record: dict[str, Any] = {
        "type": "heartbeat",
        "anchor": "BOLZANO_71",
        "node": node,
        "namespace": namespace,
        "uid": uid,
    }
    record |= {"websocket_connected": websocket, "kafka_connected": True, "in_flight": 0, "lag": 0}
    record |= {"relayed_out": 0, "relayed_in": 0, "dead_letters": 0, "measured_frequency_hz": 0.043}
    return json.dumps(record | fields).encode()
