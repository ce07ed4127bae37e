"""ResonanceNode manifests read from files, for running bridges on a laptop (`resonance up`).

The same model and the same builder as in the cluster: a manifest that works here works there.
Errors name the file, the field and the fix, and never stop the other nodes from starting.
"""

from __future__ import annotations

import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError
from resonance_bridge.config import ConfigError
from resonance_bridge.config import load as load_bridge_config
from resonance_operator import GROUP, KIND, links, podpolicy
from resonance_operator.builders import SPEC_ENV, bridge_env
from resonance_operator.model import NodeSpec
from resonance_operator.settings import Settings

from .embedded import EMBEDDED_CLIENT_ENV

# What a local run changes in the environment the operator computes, and why.
LOCAL_OVERRIDES = {
    "RESONANCE_ENDPOINT": "the local reference node, when `up` starts the nodes",
    "RESONANCE_HTTP_PORT": "one port per bridge on the one machine",
    "RESONANCE_HTTP_HOST": "a laptop's listeners answer on 127.0.0.1 alone",
    "RESONANCE_LISTEN": "a listening node's bridge, likewise (the guide's ws://127.0.0.1:8765)",
    "RESONANCE_NAMESPACE": "no pod to read it from: the bridges say `local`",
    "RESONANCE_REPLAY_FILE": "no ConfigMap on a laptop: `resonance replay` writes the request there",
    "KAFKA_ENABLE_IDEMPOTENCE": "the embedded broker has no idempotent producer",
    "KAFKA_FETCH_MAX_WAIT_MS": "the embedded broker answers a fetch only when the wait expires",
    "KAFKA_SESSION_TIMEOUT_MS": "a consumer group join takes half of it on the embedded broker",
    "KAFKA_HEARTBEAT_INTERVAL_MS": "must stay below the session timeout",
}


def local_uid(name: str) -> str:
    """A local node's metadata.uid: no API server assigns one, so one derived from its name, the same
    at every run (a bridge's heartbeats name it as they would in a cluster)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{GROUP}/local/{name}"))


@dataclass(frozen=True)
class LocalNode:
    name: str
    spec: NodeSpec
    source: Path

    @property
    def uid(self) -> str:
        return local_uid(self.name)

    @property
    def listen_path(self) -> str:
        return self.spec.listen.path if self.spec.listen is not None else ""

    @property
    def port(self) -> int:
        """The local node server's port, or where a listening node's bridge listens."""
        if self.spec.listen is not None:
            return self.spec.listen.port
        parts = urlsplit((links.dialled(self.spec) or [""])[0])  # the primary, with standbys
        return parts.port or (443 if parts.scheme == "wss" else 80)


def _manifest_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"}))
        else:
            files.append(path)
    return files


# What the API server accepts as the name of a custom resource (a DNS-1123 subdomain), and the CRD's
# own limit: the name becomes a label value of the bridge.
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _check(doc: Any, source: Path, settings: Settings) -> LocalNode | list[str]:
    """The node, or every problem with it at once (as the API server reports them), each naming the
    field and the fix."""
    name = (doc.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        return [f"{source}: metadata.name is missing: give the node a name"]
    where = f"{source} ({name})"
    problems = []
    if not NAME.match(name) or len(name) > 63:
        problems.append(
            f"{where}: metadata.name {name!r}: use at most 63 lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return [*problems, f"{where}: spec is missing: add endpoint, topic and anchor"]
    known = {f.alias or n for n, f in NodeSpec.model_fields.items()}
    fields = ", ".join(sorted(known))
    problems += [
        f"{where}: spec.{k} is not a field: remove it or use one of {fields}"
        for k in sorted(set(spec) - known)
    ]
    try:
        model = NodeSpec.model_validate({k: v for k, v in spec.items() if k in known})
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            problems.append(f"{where}: spec.{field}: {error['msg']}: fix it as the CRD describes")
        return problems
    # The CRD's rules on spec.template (the API server's answer); its allow-lists are a cluster's
    # policy for pods, and a laptop runs none.
    problems += [f"{where}: {problem}" for problem in podpolicy.reserved(model)]
    try:
        load_bridge_config(bridge_env(name, "local", model, settings, local_uid(name)))
    except ConfigError as exc:
        for problem in exc.problems:  # the bridge's checks, worded in the manifest's terms
            problems.append(
                f"{where}: spec.{SPEC_ENV.get(problem.variable, problem.variable)}: {problem.fix}"
            )
    return problems or LocalNode(name, model, source)


def _read(source: Path) -> list[Any] | str:
    try:
        text = source.read_text()
    except OSError as exc:
        return f"{source}: cannot be read ({exc.strerror}): check the path"
    try:
        return [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as exc:
        return f"{source}: not valid YAML ({str(exc).splitlines()[0]}): fix the syntax"


def load_nodes(
    paths: list[Path], settings: Settings, local_ports: bool = False
) -> tuple[list[LocalNode], list[str]]:
    """Every valid ResonanceNode in the files (or folders of .yaml files) given, and every problem with
    the others. As in a cluster, two nodes of one name cannot both exist; with local_ports (the nodes
    run here, on their endpoints' ports), two nodes on one port cannot either."""
    nodes: list[LocalNode] = []
    errors: list[str] = []
    for source in _manifest_files(paths):
        docs = _read(source)
        if isinstance(docs, str):
            errors.append(docs)
            continue
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") != KIND:
                continue  # other kinds may share the folder
            if not str(doc.get("apiVersion", "")).startswith(f"{GROUP}/"):
                errors.append(f"{source}: apiVersion {doc.get('apiVersion')!r}: use resonance.io/v1alpha1")
                continue
            checked = _check(doc, source, settings)
            (errors.extend(checked) if isinstance(checked, list) else nodes.append(checked))
    unique: list[LocalNode] = []
    for node in nodes:
        clash = next(
            (n for n in unique if n.name == node.name or (local_ports and n.port == node.port)), None
        )
        if clash is None:
            unique.append(node)
        elif clash.name == node.name:
            errors.append(
                f"{node.source} ({node.name}): another node has this name ({clash.source}): rename one"
            )
        else:
            errors.append(
                f"{node.source} ({node.name}): port {node.port} is node {clash.name}'s too ({clash.source}): "
                "give each node its own port"
            )
    return unique, errors


def replay_file(node: str) -> Path:
    """Where `resonance up` has a node's bridge read replay requests, and `resonance replay` writes them."""
    return Path(tempfile.gettempdir()) / "resonance" / "replay" / node


def local_env(
    node: LocalNode, settings: Settings, http_port: int, endpoint: str | None, embedded_broker: bool
) -> dict[str, str]:
    """The operator's environment for this node, with the LOCAL_OVERRIDES and nothing else changed."""
    env = bridge_env(node.name, "local", node.spec, settings, node.uid)
    env["RESONANCE_HTTP_PORT"] = str(http_port)
    env["RESONANCE_HTTP_HOST"] = "127.0.0.1"
    env["RESONANCE_NAMESPACE"] = "local"
    env["RESONANCE_REPLAY_FILE"] = str(replay_file(node.name))
    if endpoint is not None:
        env["RESONANCE_ENDPOINT"] = endpoint
    if node.spec.listen is not None:
        env["RESONANCE_LISTEN"] = f"127.0.0.1:{node.spec.listen.port}"
    if embedded_broker:
        env.update(EMBEDDED_CLIENT_ENV)
    return env
