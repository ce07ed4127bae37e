"""A real Kubernetes API server for the operator's tests, from whichever the user has:

- RESONANCE_KUBE_LITE: a kube-lite script (apiextensions-apiserver + etcd; built-in kinds as stand-ins);
- KUBEBUILDER_ASSETS: the envtest binaries (etcd and kube-apiserver, as `setup-envtest use` installs
  them), the operator ecosystem's standard;
- RESONANCE_TEST_KUBECONFIG: an existing cluster (kind, say). It runs controllers, so the tests that
  write a Deployment's status by hand skip there, and so does the RBAC test, which reads the API
  server's audit log. Namespaces the tests create are deleted afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOW = (
    "the operator tests need a Kubernetes API server: set RESONANCE_KUBE_LITE (a kube-lite script), "
    "KUBEBUILDER_ASSETS (envtest's etcd and kube-apiserver: `setup-envtest use -p path`) or "
    "RESONANCE_TEST_KUBECONFIG (an existing cluster, e.g. `kind get kubeconfig > kind.yaml`)"
)
AUDIT_POLICY = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Metadata}]\n"


@dataclass(frozen=True)
class Server:
    kubeconfig: Path
    audit_log: Path | None  # every request the server answered, where the server writes one
    controllers: bool  # whether controllers run (a Deployment's status is theirs, not the tests')
    what: str


@contextlib.contextmanager
def started(run: Path) -> Iterator[Server | None]:
    """The API server the environment names, up for the duration; None when it names none."""
    if script := os.environ.get("RESONANCE_KUBE_LITE"):
        with _kube_lite(Path(script), run) as server:
            yield server
    elif assets := os.environ.get("KUBEBUILDER_ASSETS"):
        with _envtest(Path(assets), run) as server:
            yield server
    elif kubeconfig := os.environ.get("RESONANCE_TEST_KUBECONFIG"):
        yield Server(Path(kubeconfig), None, True, f"the cluster of {kubeconfig}")
    else:
        yield None


@contextlib.contextmanager
def _kube_lite(script: Path, run: Path) -> Iterator[Server]:
    (run / "audit-policy.yaml").write_text(AUDIT_POLICY)
    audit = f"--audit-log-path={run / 'audit.log'} --audit-policy-file={run / 'audit-policy.yaml'}"
    env = {**os.environ, "KUBE_LITE_APISERVER_ARGS": audit}
    subprocess.run([str(script), "up", str(run)], check=True, capture_output=True, timeout=120, env=env)
    try:
        yield Server(run / "kubeconfig", run / "audit.log", False, "kube-lite")
    finally:
        subprocess.run([str(script), "down", str(run)], check=False, capture_output=True, timeout=60)


def _ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [int(sock.getsockname()[1]) for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _kubeconfig(path: Path, port: int, pki: Path) -> None:
    cluster = {"server": f"https://127.0.0.1:{port}", "insecure-skip-tls-verify": True}
    user = {"client-certificate": str(pki / "admin.crt"), "client-key": str(pki / "admin.key")}
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "envtest", "cluster": cluster}],
                "users": [{"name": "admin", "user": user}],
                "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": "admin"}}],
                "current-context": "envtest",
            }
        )
    )


def _certificates(pki: Path) -> None:
    """A CA, an admin client certificate (system:masters) and the service-account key pair."""
    pki.mkdir()
    ca, admin = f"{pki}/ca", f"{pki}/admin"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
             "-days", "30", "-subj", "/CN=envtest-ca")  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{admin}.key", "-out", f"{admin}.csr",
             "-subj", "/O=system:masters/CN=admin")  # fmt: skip
    _openssl("x509", "-req", "-in", f"{admin}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{admin}.crt", "-days", "30")  # fmt: skip
    _openssl("genrsa", "-out", f"{pki}/sa.key", "2048")
    _openssl("rsa", "-in", f"{pki}/sa.key", "-pubout", "-out", f"{pki}/sa.pub")


@contextlib.contextmanager
def _envtest(assets: Path, run: Path) -> Iterator[Server]:
    """etcd and kube-apiserver as envtest starts them: an admin client certificate, service-account
    keys, RBAC, an audit log; no controllers."""
    port, client, peer = _ports(3)
    pki = run / "pki"
    _certificates(pki)
    (run / "audit-policy.yaml").write_text(AUDIT_POLICY)
    kubeconfig = run / "kubeconfig"
    _kubeconfig(kubeconfig, port, pki)
    etcd_urls = {
        "--listen-client-urls": f"http://127.0.0.1:{client}",
        "--advertise-client-urls": f"http://127.0.0.1:{client}",
        "--listen-peer-urls": f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls": f"http://127.0.0.1:{peer}",
        "--initial-cluster": f"default=http://127.0.0.1:{peer}",
    }
    apiserver_flags = {
        "--etcd-servers": f"http://127.0.0.1:{client}",
        "--bind-address": "127.0.0.1",
        "--secure-port": str(port),
        "--cert-dir": str(run / "certs"),
        "--client-ca-file": str(pki / "ca.crt"),
        "--authorization-mode": "RBAC",
        "--service-cluster-ip-range": "10.0.0.0/24",
        "--service-account-key-file": str(pki / "sa.pub"),
        "--service-account-signing-key-file": str(pki / "sa.key"),
        "--service-account-issuer": "https://kubernetes.default.svc",
        "--disable-admission-plugins": "ServiceAccount",
        "--audit-log-path": str(run / "audit.log"),
        "--audit-policy-file": str(run / "audit-policy.yaml"),
    }
    etcd = _spawn(
        [str(assets / "etcd"), "--data-dir", str(run / "etcd"), "--unsafe-no-fsync"], etcd_urls, run
    )
    apiserver = _spawn([str(assets / "kube-apiserver")], apiserver_flags, run)
    try:
        deadline = time.monotonic() + 60
        ready = ["kubectl", "--kubeconfig", str(kubeconfig), "get", "--raw", "/readyz"]
        while subprocess.run(ready, capture_output=True).returncode:
            if apiserver.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"envtest's kube-apiserver did not come up: see {run}/kube-apiserver.log")
            time.sleep(0.2)
        yield Server(kubeconfig, run / "audit.log", False, f"envtest ({assets})")
    finally:
        for process in (apiserver, etcd):
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            if process.poll() is None:
                process.kill()


def _spawn(command: list[str], flags: dict[str, str], run: Path) -> subprocess.Popen[bytes]:
    log = run / f"{Path(command[0]).name}.log"
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*command, *(f"{k}={v}" for k, v in flags.items())], stdout=out, stderr=subprocess.STDOUT
        )
