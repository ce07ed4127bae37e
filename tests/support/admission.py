"""A second API server on kube-lite's etcd with what kube-lite leaves off: the ValidatingAdmissionPolicy
plugin, and authorization of users who are not cluster admins.

kube-lite's server authorizes everyone as an admin and runs no admission plugins. This one is the same
binary on the same data, with ValidatingAdmissionPolicy on, and its authorizer delegated (by the
SubjectAccessReview webhook protocol, as an aggregated API server delegates to kube-apiserver) to a
small server of the test's own that answers from the test's rules: who may do what is the test's
choice; evaluating the chart's policy and asking the authorizer is the real API server's code.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .kube import Cluster

Review = dict[str, Any]  # a SubjectAccessReview's spec
Rule = Callable[[Review], bool]


@dataclass
class Guarded:
    """The guarded server: kubeconfigs for its users, and every review its authorizer was asked."""

    run: Path
    port: int
    reviews: list[Review] = field(default_factory=list)

    def user(self, name: str) -> Cluster:
        """kubectl as `name` (one of those it was started for, or admin: a cluster admin)."""
        return Cluster(self.run / f"{name}.kubeconfig")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _user(run: Path, pki: Path, user: str, port: int, groups: tuple[str, ...] = ()) -> None:
    """A client certificate for `user` from kube-lite's CA (which its servers trust), and a kubeconfig."""
    key, csr, crt = (run / f"{user}.{ext}" for ext in ("key", "csr", "crt"))
    subject = "".join(f"/O={g}" for g in groups) + f"/CN={user}"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", subject)
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
             "-CAcreateserial", "-out", str(crt), "-days", "2")  # fmt: skip
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "guarded", "cluster": {"server": f"https://127.0.0.1:{port}",
                                                     "insecure-skip-tls-verify": True}}],
        "users": [{"name": user, "user": {"client-certificate": str(crt), "client-key": str(key)}}],
        "contexts": [{"name": "guarded", "context": {"cluster": "guarded", "user": user}}],
        "current-context": "guarded",
    }  # fmt: skip
    (run / f"{user}.kubeconfig").write_text(json.dumps(config))


def _authorizer(rule: Rule, reviews: list[Review]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            spec = body.get("spec") or {}
            reviews.append(spec)
            allowed = "nonResourceAttributes" in spec or rule(spec)  # discovery is for everyone
            body["status"] = {"allowed": allowed, **({} if allowed else {"reason": "the test's rules"})}
            answer = json.dumps(body).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _etcd(run: Path) -> str:
    """kube-lite's etcd, read from its API server's command line."""
    pid = (run / "apiserver.pid").read_text().strip()
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return args[args.index(b"--etcd-servers") + 1].decode()


@contextlib.contextmanager
def guarded(cluster: Cluster, run: Path, rule: Rule, users: tuple[str, ...]) -> Iterator[Guarded]:
    """Start the guarded server beside kube-lite (whose run folder holds cluster.kubeconfig)."""
    from resonance_local.embedded import free_port

    lite = cluster.kubeconfig.parent
    run.mkdir(parents=True, exist_ok=True)
    port = free_port()
    reviews: list[Review] = []
    authorizer = _authorizer(rule, reviews)
    webhook = run / "authorizer.kubeconfig"
    webhook.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "a", "cluster": {"server": f"http://127.0.0.1:{authorizer.server_port}"}}],
        "users": [{"name": "a", "user": {}}],
        "contexts": [{"name": "a", "context": {"cluster": "a", "user": "a"}}], "current-context": "a",
    }))  # fmt: skip
    for user in users:
        _user(run, lite / "pki", user, port)
    _user(run, lite / "pki", "admin", port, ("system:masters",))
    log = open(run / "apiserver.log", "wb")  # noqa: SIM115 (closed below, after the process)
    process = subprocess.Popen(
        [str(lite / "bin" / "kube-lite-apiserver"), "--etcd-servers", _etcd(lite),
         "--bind-address", "127.0.0.1", "--secure-port", str(port), "--cert-dir", str(run / "certs"),
         "--client-ca-file", str(lite / "pki" / "ca.crt"), "--authentication-skip-lookup",
         "--authentication-kubeconfig", str(cluster.kubeconfig), "--kubeconfig", str(cluster.kubeconfig),
         "--authorization-kubeconfig", str(webhook),
         "--authorization-webhook-cache-authorized-ttl", "1ms",
         "--authorization-webhook-cache-unauthorized-ttl", "1ms",
         "--enable-priority-and-fairness=false",
         "--disable-admission-plugins",
         "NamespaceLifecycle,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,MutatingAdmissionPolicy"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        admin = Cluster(run / "admin.kubeconfig")
        deadline = time.monotonic() + 60
        while admin.kubectl("get", "crd", "resonancenodes.resonance.io", check=False).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the guarded API server did not come up: see {run / 'apiserver.log'}")
            time.sleep(0.2)
        yield Guarded(run, port, reviews)
    finally:
        process.terminate()
        process.wait(30)
        log.close()
        authorizer.shutdown()
