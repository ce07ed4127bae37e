"""`resonance operator`: run the kopf operator with the settings from the environment."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import kopf
from resonance_bridge.config import ConfigError

from . import handlers  # noqa: F401  (registers the handlers)
from .settings import load

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def missing_credentials(env: Mapping[str, str]) -> str | None:
    """Why there is no API server to talk to, or None. Checked first: kopf would retry forever."""
    if env.get("KUBERNETES_SERVICE_HOST") and SERVICE_ACCOUNT.exists():
        return None  # in a pod, with its service account
    configs = [Path(p) for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if any(p.is_file() for p in configs or [Path.home() / ".kube" / "config"]):
        return None
    named = f"KUBECONFIG={env['KUBECONFIG']!r} names no file" if configs else "no ~/.kube/config"
    return f"no Kubernetes credentials ({named}): point KUBECONFIG at a kubeconfig, or run it in a cluster"


def run() -> int:
    try:
        settings = load(os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"resonance operator: {problem}", file=sys.stderr)
        return 2
    missing = missing_credentials(os.environ)
    if missing:
        print(f"resonance operator: {missing}", file=sys.stderr)
        return 2
    namespaces = list(settings.watch_namespaces)
    # One operator at a time, by design: the chart runs a single replica with the Recreate
    # strategy, so kopf's peering (and its extra CRDs and RBAC) is not needed.
    kopf.run(
        memo=kopf.Memo(settings=settings),  # the handlers' state (handlers.py)
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz",
    )
    return 0
