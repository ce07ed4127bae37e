"""The operator peaks when it restarts under every node at once: that peak stays within the chart's
memory limit. bench/operator_scale.py runs it against a kube-lite of its own: 300 nodes here, 3,000
with `make soak` (the chart's values say how far the default limit holds: about 3,500)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..support.kube import ROOT
from ..support.soak import size


def limit_mb() -> float:
    values = yaml.safe_load((ROOT / "charts" / "resonance" / "values.yaml").read_text())
    limit = str(values["operator"]["resources"]["limits"]["memory"])
    assert limit.endswith("Mi"), limit
    return float(limit.removesuffix("Mi")) * 1.048576  # MiB -> MB, as the benchmark reports


def test_a_restarted_operator_stays_within_the_charts_memory_limit(tmp_path: Path) -> None:
    kube_lite = os.environ.get("RESONANCE_KUBE_LITE")
    if not kube_lite:
        if os.environ.get("RESONANCE_REQUIRE_KUBE") == "1":
            pytest.fail("set RESONANCE_KUBE_LITE to the kube-lite script")
        pytest.skip("runs kube-lite: set RESONANCE_KUBE_LITE to its script")
    nodes, out = size(300, 3000), tmp_path / "scale.json"
    bench = [sys.executable, str(ROOT / "bench" / "operator_scale.py"), "--kube-lite", kube_lite]
    bench += ["--nodes", str(nodes), "--changes", "2", "--beat-periods", "0", "--restart", "--json", str(out)]
    done = subprocess.run(bench, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    peak = json.loads(out.read_text())["restart"]["peak_rss_mb"]
    print(f"operator restarted under {nodes} nodes: peak RSS {peak} MB (limit {limit_mb():.0f} MB)")
    assert peak < limit_mb(), f"{peak} MB at {nodes} nodes, past the chart's limit"
