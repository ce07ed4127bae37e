"""`resonance operator`: run the kopf operator with the settings from the environment."""

from __future__ import annotations

import os
import sys

import kopf
from resonance_bridge.config import ConfigError

from . import handlers  # noqa: F401  (registers the handlers)
from .settings import load


def run() -> int:
    try:
        settings = load(os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"resonance operator: {problem}", file=sys.stderr)
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
