"""ResonanceNode manifests read from files, for running bridges on a laptop (`resonance up`).

The same model and the same builder as in the cluster: a manifest that works here works there.
Errors name the file, the field and the fix, and never stop the other nodes from starting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError
from resonance_bridge.config import ConfigError
from resonance_bridge.config import load as load_bridge_config
from resonance_operator import GROUP, KIND
from resonance_operator.builders import SPEC_ENV, bridge_env
from resonance_operator.model import NodeSpec
from resonance_operator.settings import Settings

from .embedded import EMBEDDED_CLIENT_ENV

# What a local run changes in the environment the operator computes, and why.
LOCAL_OVERRIDES = {
    "RESONANCE_ENDPOINT": "the local reference node, when `up` starts the nodes",
    "RESONANCE_HTTP_PORT": "one port per bridge on the one machine",
    "KAFKA_ENABLE_IDEMPOTENCE": "the embedded broker has no idempotent producer",
    "KAFKA_FETCH_MAX_WAIT_MS": "the embedded broker answers a fetch only when the wait expires",
    "KAFKA_SESSION_TIMEOUT_MS": "a consumer group join takes half of it on the embedded broker",
    "KAFKA_HEARTBEAT_INTERVAL_MS": "must stay below the session timeout",
}


@dataclass(frozen=True)
class LocalNode:
    name: str
    spec: NodeSpec
    source: Path

    @property
    def port(self) -> int:
        parts = urlsplit(self.spec.endpoint)
        return parts.port or (443 if parts.scheme == "wss" else 80)


def _manifest_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"}))
        else:
            files.append(path)
    return files


def _check(doc: Any, source: Path, settings: Settings) -> LocalNode | str:
    name = (doc.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        return f"{source}: metadata.name is missing: give the node a name"
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return f"{source} ({name}): spec is missing: add endpoint, topic and anchor"
    known = {f.alias or n for n, f in NodeSpec.model_fields.items()}
    unknown = sorted(set(spec) - known)
    if unknown:
        fields = ", ".join(sorted(known))
        return f"{source} ({name}): spec.{unknown[0]} is not a field: remove it or use one of {fields}"
    try:
        model = NodeSpec.model_validate(spec)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        return f"{source} ({name}): spec.{field}: {error['msg']}: fix it as the CRD describes"
    try:
        load_bridge_config(bridge_env(name, "local", model, settings))
    except ConfigError as exc:
        problem = exc.problems[0]  # the bridge's check, worded in the manifest's terms
        field = SPEC_ENV.get(problem.variable, problem.variable)
        return f"{source} ({name}): spec.{field}: {problem.fix}"
    return LocalNode(name, model, source)


def load_nodes(paths: list[Path], settings: Settings) -> tuple[list[LocalNode], list[str]]:
    """Every valid ResonanceNode in the files (or folders of .yaml files) given, and one error per bad one."""
    nodes: list[LocalNode] = []
    errors: list[str] = []
    for source in _manifest_files(paths):
        try:
            docs = [d for d in yaml.safe_load_all(source.read_text()) if d]
        except (OSError, yaml.YAMLError) as exc:
            errors.append(f"{source}: not readable YAML ({exc}): fix the syntax")
            continue
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") != KIND:
                continue  # other kinds may share the folder
            if not str(doc.get("apiVersion", "")).startswith(f"{GROUP}/"):
                errors.append(f"{source}: apiVersion {doc.get('apiVersion')!r}: use resonance.io/v1alpha1")
                continue
            checked = _check(doc, source, settings)
            (errors.append(checked) if isinstance(checked, str) else nodes.append(checked))
    return nodes, errors


def local_env(
    node: LocalNode, settings: Settings, http_port: int, endpoint: str | None, embedded_broker: bool
) -> dict[str, str]:
    """The operator's environment for this node, with the LOCAL_OVERRIDES and nothing else changed."""
    env = bridge_env(node.name, "local", node.spec, settings)
    env["RESONANCE_HTTP_PORT"] = str(http_port)
    if endpoint is not None:
        env["RESONANCE_ENDPOINT"] = endpoint
    if embedded_broker:
        env.update(EMBEDDED_CLIENT_ENV)
    return env
