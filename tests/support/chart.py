"""helm, found the way `make tools` installs it, and the chart rendered to objects."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "resonance"
ALL_ON = [
    "--set",
    "kafka.dev.enabled=true",
    "--set",
    "demo.enabled=true",
    "--set",
    "networkPolicy.enabled=true",
]


def helm_binary() -> str:
    local = ROOT / ".tools" / "bin" / "helm"
    found = str(local) if local.exists() else shutil.which("helm")
    if found is None:
        reason = "helm is not installed: run `make tools`"
        if os.environ.get("RESONANCE_REQUIRE_KUBE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {result.stderr}")
    return result


def render(*values: str, namespace: str = "resonance") -> list[dict[str, Any]]:
    out = helm("template", "resonance", str(CHART), "--namespace", namespace, *values).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def notes(*values: str, namespace: str = "resonance") -> str:
    """What `helm install` would print: the chart's NOTES (the named template resonance.notes),
    rendered offline through a throwaway template in a copy of the chart."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "resonance"
        shutil.copytree(CHART, copy)
        (copy / "templates" / "zz-notes.yaml").write_text(
            'notes: {{ include "resonance.notes" . | toJson }}\n'
        )
        out = helm(
            "template",
            "resonance",
            str(copy),
            "--namespace",
            namespace,
            "--show-only",
            "templates/zz-notes.yaml",
            *values,
        ).stdout
    return str(yaml.safe_load(out)["notes"])
